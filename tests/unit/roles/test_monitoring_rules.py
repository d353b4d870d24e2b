"""The monitoring role's alert rules, rendered with its defaults, under promtool (Debian's, from setup)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "monitoring"
PROMTOOL = ROOT / ".cache" / "tools" / "promtool"


def render_rules(dest: pathlib.Path, extra_vars: dict | None = None) -> subprocess.CompletedProcess:
    playbook = dest.parent / "render.yml"
    playbook.write_text(json.dumps([{
        "name": "Render the alert rules with the role's defaults",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"ansible.builtin.include_vars": {"file": str(ROLE / "defaults" / "main.yml")}},
            {"ansible.builtin.include_vars": {"file": str(ROLE / "vars" / "main.yml")}},
            {"ansible.builtin.template": {"src": str(ROLE / "templates/etc/prometheus/botstack.rules.yml.j2"),
                                          "dest": str(dest), "mode": "0644"}},
        ],
    }]))
    command = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
               "-e", f"ansible_python_interpreter={sys.executable}"]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    return subprocess.run(command, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))


def test_promtool_is_installed_by_setup():
    assert PROMTOOL.is_file(), "run make setup: it unpacks promtool from Debian's prometheus package"


def test_default_rules_pass_check_and_unit_tests(tmp_path):
    rendered = render_rules(tmp_path / "botstack.rules.yml")
    assert rendered.returncode == 0, rendered.stdout[-2000:]
    checked = subprocess.run([str(PROMTOOL), "check", "rules", str(tmp_path / "botstack.rules.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "SUCCESS: 15 rules found" in checked.stdout, checked.stdout + checked.stderr
    shutil.copy(pathlib.Path(__file__).parent / "monitoring" / "botstack.rules.test.yml", tmp_path)
    tested = subprocess.run([str(PROMTOOL), "test", "rules", "botstack.rules.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_thresholds_and_durations_reach_the_rules(tmp_path):
    rendered = render_rules(tmp_path / "botstack.rules.yml", {
        "monitoring_thresholds": {"error_ratio": 0.2, "p95_latency_seconds": 0.5, "memory_used_ratio": 0.8,
                                  "disk_free_ratio": 0.05, "cert_expiry_days": 30, "backup_max_age_hours": 26,
                                  "redis_backup_max_age_hours": 26, "queue_length": 50},
        "monitoring_app_requests_metric": "botapp_http_requests_total",
    })
    assert rendered.returncode == 0, rendered.stdout[-2000:]
    text = (tmp_path / "botstack.rules.yml").read_text()
    assert "> 0.2" in text and "botapp_http_requests_total{status=~\"5..\"}" in text
    assert "< 30 * 86400" in text and "> 26 * 3600" in text


def test_a_rule_promtool_rejects_is_caught(tmp_path):
    rendered = render_rules(tmp_path / "botstack.rules.yml",
                            {"monitoring_alert_rules_extra": [{"alert": "Broken", "expr": "rate(up[5m]"}]})
    assert rendered.returncode == 0, rendered.stdout[-2000:]
    checked = subprocess.run([str(PROMTOOL), "check", "rules", str(tmp_path / "botstack.rules.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode != 0 and "Broken" in checked.stdout + checked.stderr
