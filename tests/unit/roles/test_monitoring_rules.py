"""The monitoring role's alert rules, rendered with its defaults, under promtool (Debian's, from setup);
its Alertmanager routes and the input checks that keep alerts from going nowhere."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "monitoring"
PROMTOOL = ROOT / ".cache" / "tools" / "promtool"


DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def run_role_tasks(playbook: pathlib.Path, tasks: list[dict], extra_vars: dict | None = None) -> subprocess.CompletedProcess:
    """Tasks on localhost after the role's defaults and vars (extra vars override both)."""
    playbook.write_text(json.dumps([{
        "name": "The monitoring role's files and checks, with its defaults",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"ansible.builtin.include_vars": {"file": str(ROLE / "defaults" / "main.yml")}},
            {"ansible.builtin.include_vars": {"file": str(ROLE / "vars" / "main.yml")}},
            *tasks,
        ],
    }]))
    command = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
               "-e", f"ansible_python_interpreter={sys.executable}"]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    # From the checkout: its ansible.cfg resolves botstack.deploy (the filters validate.yml uses).
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))


def render(template: str, dest: pathlib.Path, extra_vars: dict | None = None) -> subprocess.CompletedProcess:
    return run_role_tasks(dest.parent / f"render-{dest.name}.yml", [
        {"ansible.builtin.template": {"src": str(ROLE / "templates" / template), "dest": str(dest), "mode": "0644"}},
    ], extra_vars)


def render_rules(dest: pathlib.Path, extra_vars: dict | None = None) -> subprocess.CompletedProcess:
    return render("etc/prometheus/botstack.rules.yml.j2", dest, extra_vars)


def test_promtool_is_installed_by_setup():
    assert PROMTOOL.is_file(), "run make setup: it unpacks promtool from Debian's prometheus package"


def test_default_rules_pass_check_and_unit_tests(tmp_path):
    rendered = render_rules(tmp_path / "botstack.rules.yml")
    assert rendered.returncode == 0, rendered.stdout[-2000:]
    checked = subprocess.run([str(PROMTOOL), "check", "rules", str(tmp_path / "botstack.rules.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "SUCCESS: 27 rules found" in checked.stdout, checked.stdout + checked.stderr
    shutil.copy(pathlib.Path(__file__).parent / "monitoring" / "botstack.rules.test.yml", tmp_path)
    tested = subprocess.run([str(PROMTOOL), "test", "rules", "botstack.rules.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_thresholds_and_durations_reach_the_rules(tmp_path):
    rendered = render_rules(tmp_path / "botstack.rules.yml", {
        "monitoring_thresholds": {"error_ratio": 0.2, "p95_latency_seconds": 0.5, "memory_used_ratio": 0.8,
                                  "disk_free_ratio": 0.05, "cert_expiry_days": 30, "backup_max_age_hours": 26,
                                  "redis_backup_max_age_hours": 26, "pitr_full_max_age_hours": 400,
                                  "pitr_diff_max_age_hours": 30, "drill_max_age_days": 40, "queue_length": 50,
                                  "disk_fill_hours": 12, "disk_fill_free_ratio": 0.3, "inodes_free_ratio": 0.02,
                                  "textfile_max_age_minutes": 90},
        "monitoring_alert_for": {**DEFAULTS["monitoring_alert_for"], "datastore_down": "7m", "self_monitoring": "33m"},
        "monitoring_app_requests_metric": "botapp_http_requests_total",
        "monitoring_textfile_stale_exclude": r".*/mine_\d+\.prom",
        "monitoring_postgresql_port": 5433,
    })
    assert rendered.returncode == 0, rendered.stdout[-2000:]
    text = (tmp_path / "botstack.rules.yml").read_text()
    assert "> 0.2" in text and "botapp_http_requests_total{status=~\"5..\"}" in text
    assert "< 30 * 86400" in text and "> 26 * 3600" in text
    assert '{kind=~"pitr-.*", kind!="pitr-diff"} > 400 * 3600' in text and '{kind="pitr-diff"} > 30 * 3600' in text
    assert "botstack_backup_drill_last_timestamp_seconds > 40 * 86400" in text
    assert "< 0.3" in text and "12 * 3600" in text and "< 0.02" in text and "> 90 * 60" in text
    # A backquoted PromQL string: the regex's backslashes reach Prometheus as written.
    assert r"file!~`.*/mine_\d+\.prom`" in text and "port 5433" in text
    rules = {rule["alert"]: rule for rule in yaml.safe_load(text)["groups"][0]["rules"]}
    assert rules["PostgreSQLDown"]["for"] == "7m" and rules["AlertmanagerFailedToSendAlerts"]["for"] == "33m"
    checked = subprocess.run([str(PROMTOOL), "check", "rules", str(tmp_path / "botstack.rules.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_rule_promtool_rejects_is_caught(tmp_path):
    rendered = render_rules(tmp_path / "botstack.rules.yml",
                            {"monitoring_alert_rules_extra": [{"alert": "Broken", "expr": "rate(up[5m]"}]})
    assert rendered.returncode == 0, rendered.stdout[-2000:]
    checked = subprocess.run([str(PROMTOOL), "check", "rules", str(tmp_path / "botstack.rules.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode != 0 and "Broken" in checked.stdout + checked.stderr


def alertmanager_config(tmp_path, extra_vars: dict) -> dict:
    rendered = render("etc/prometheus/alertmanager.yml.j2", tmp_path / "alertmanager.yml", extra_vars)
    assert rendered.returncode == 0, rendered.stdout[-2000:]
    return yaml.safe_load((tmp_path / "alertmanager.yml").read_text())


OPS = {"name": "ops", "slack_url": "https://hooks.example.com/T0", "channel": "#alerts"}


def test_the_watchdog_goes_to_its_dead_mans_switch_and_nowhere_else(tmp_path):
    config = alertmanager_config(tmp_path, {"monitoring_receivers": [OPS],
                                            "monitoring_watchdog_url": "https://hc-ping.com/0f1e-uuid",
                                            "monitoring_watchdog_repeat_interval": "2m"})
    first, *others = config["route"]["routes"]
    # First and without continue: the Watchdog never reaches the receivers people read.
    assert first == {"receiver": "botstack-watchdog", "matchers": ['alertname="Watchdog"'], "group_wait": "0s",
                     "group_interval": "1m", "repeat_interval": "2m"}
    assert [route["receiver"] for route in others] == ["ops"] and config["route"]["receiver"] == "ops"
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert receivers["botstack-watchdog"]["webhook_configs"] == [{"url": "https://hc-ping.com/0f1e-uuid",
                                                                  "send_resolved": False}]


def test_without_a_dead_mans_switch_the_watchdog_notifies_no_one(tmp_path):
    config = alertmanager_config(tmp_path, {"monitoring_receivers": [], "monitoring_notifications_disabled": True})
    assert config["route"]["receiver"] == "nowhere"
    assert [route["receiver"] for route in config["route"]["routes"]] == ["botstack-watchdog"]
    assert sorted(receiver["name"] for receiver in config["receivers"]) == ["botstack-watchdog", "nowhere"]
    assert all(list(receiver) == ["name"] for receiver in config["receivers"]), config["receivers"]


@pytest.mark.parametrize("role_vars, fragment", [
    ({}, "monitoring_receivers is empty"),
    ({"monitoring_notifications_disabled": True, "monitoring_receivers": [OPS]},
     "monitoring_notifications_disabled is true but monitoring_receivers lists ops"),
    ({"monitoring_receivers": [{**OPS, "name": "botstack-watchdog"}]}, 'entry "botstack-watchdog" needs'),
    ({"monitoring_notifications_disabled": True, "monitoring_alert_for": {"bot_down": "10s"}},
     "missing: monitoring_alert_for.high_error_rate, monitoring_alert_for.slow_response"),
    ({"monitoring_notifications_disabled": True, "monitoring_thresholds": {"error_ratio": 0.1}},
     "missing: monitoring_thresholds.p95_latency_seconds"),
    ({"monitoring_notifications_disabled": True, "monitoring_watchdog_url": "hc-ping.com/0f1e-uuid"},
     "monitoring_watchdog_url must be an http(s):// URL"),
    ({"monitoring_notifications_disabled": True}, None),
    ({"monitoring_receivers": [OPS], "monitoring_watchdog_url": "https://hc-ping.com/0f1e-uuid"}, None),
])
def test_alerts_that_would_go_nowhere_are_refused(tmp_path, role_vars, fragment):
    # localhost is no monitoring host: the checks run, promtool's does not.
    result = run_role_tasks(tmp_path / "validate.yml",
                            [{"ansible.builtin.import_tasks": str(ROLE / "tasks" / "validate.yml")}],
                            {"monitoring_tls_ca_host": "localhost", **role_vars})
    if fragment is None:
        assert result.returncode == 0, result.stdout[-3000:]
    else:
        assert result.returncode != 0 and fragment in result.stdout, result.stdout[-3000:]
        assert "0f1e-uuid" not in result.stdout
