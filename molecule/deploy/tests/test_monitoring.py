"""Monitoring on the deploy host: targets up, alerts that reach a receiver and resolve.

Runs after test_deploy.py (file order): the app is live. The scenario shortens the alerts'
`for:` durations and the scrape interval through variables (molecule.yml), never in the role.
Alertmanager posts Slack-compatible messages to the receiver on 127.0.0.1:8099, which appends
each body to /var/log/webhook.jsonl.
"""
from __future__ import annotations

import json
import pathlib
import time

import pytest
import requests
import urllib3
from conftest import assert_role_rejects, container_address, play_recap, run_playbook, wait_for

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the scenario's certificate is self-signed
SITE = "bot.botstack.test"

PROM = "http://127.0.0.1:9090"
PLAYBOOKS = pathlib.Path(__file__).resolve().parents[3] / "playbooks"
RECEIVED = "/var/log/webhook.jsonl"


def prometheus(host, path: str) -> dict:
    return json.loads(host.check_output(f"curl -fsS '{PROM}{path}'"))


def firing(host, alert: str) -> list:
    alerts = prometheus(host, "/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def notifications(host) -> list[dict]:
    text = host.run(f"cat {RECEIVED}").stdout
    return [json.loads(json.loads(line)["body"]) for line in text.splitlines() if line.strip()]


def notified(host, alert: str, status: str, after: int) -> list:
    """Slack-compatible bodies past the first `after` lines whose title names the alert and status."""
    return [n for n in notifications(host)[after:]
            if any(f"{status}: {alert}" in (a.get("title") or "") for a in n.get("attachments", []))]


def test_every_target_is_up(host):
    def all_up():
        targets = prometheus(host, "/api/v1/targets")["data"]["activeTargets"]
        jobs = {t["labels"]["job"]: t["health"] for t in targets}
        return jobs if set(jobs) >= {"prometheus", "node", "postgres", "redis", "nginx", "app", "health", "pki"} and \
            all(t["health"] == "up" for t in targets) else None
    wait_for("every scrape target up", all_up)
    # The site through nginx (health) and the private certificate the exporters serve (pki) both answer.
    seen = {}

    def both_succeed():
        probes = prometheus(host, "/api/v1/query?query=probe_success")["data"]["result"]
        seen.update({r["metric"]["job"]: r["value"][1] for r in probes})
        return seen == {"health": "1", "pki": "1"}
    try:
        wait_for("both probes succeed", both_succeed, timeout=60)
    except pytest.fail.Exception:
        pytest.fail(f"probe_success by job: {seen}")


def test_exporters_and_servers_listen_on_loopback_only(host):
    listening = host.check_output("ss -Htlnp")
    for port in (9090, 9093, 9100, 9113, 9115, 9121, 9187):
        sockets = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{port}")]
        assert sockets and all(s.startswith("127.0.0.1:") for s in sockets), (port, sockets)
    # No gossip port: one Alertmanager per monitoring host.
    assert ":9094" not in listening


PKI = "/etc/botstack-pki"
SCRAPE = "prometheus:scrape-Secret-6a2f90"


def https_status(host, url: str, *options: str) -> str:
    """HTTP status curl gets verifying against the private CA, or curl's exit code when TLS fails."""
    result = host.run(" ".join(["curl -sS -o /dev/null -w '%{http_code}'", f"--cacert {PKI}/ca.crt", *options, url]))
    return result.stdout if result.rc == 0 else f"curl exit {result.rc}"


def test_exporters_serve_https_from_the_private_ca_and_authenticate(host):
    for port in (9100, 9187):
        url = f"https://127.0.0.1:{port}/metrics"
        assert https_status(host, url, f"-u {SCRAPE}") == "200", port
        assert https_status(host, url) == "401", port
        assert https_status(host, url, "-u prometheus:wrong") == "401", port
        # Plain HTTP on the TLS port gets nothing it can read.
        assert host.run("curl -fsS http://127.0.0.1:%s/metrics", str(port)).rc != 0, port
        # TLS 1.2 answers; TLS 1.1 is refused by the exporter (the client is allowed to offer it).
        assert host.run("openssl s_client -connect 127.0.0.1:%s -tls1_2 </dev/null", str(port)).rc == 0, port
        assert host.run("openssl s_client -connect 127.0.0.1:%s -tls1_1 -cipher 'DEFAULT@SECLEVEL=0' </dev/null",
                        str(port)).rc != 0, port
    # The Redis exporter has no basic auth: it asks for Prometheus' client certificate instead.
    redis_url = "https://127.0.0.1:9121/metrics"
    assert https_status(host, redis_url).startswith("curl exit"), "redis exporter served a client without a certificate"
    client = f"--cert {PKI}/prometheus-client.crt --key {PKI}/prometheus-client.key"
    assert https_status(host, redis_url, client) == "200"


def test_the_private_ca_keeps_its_key_and_files_hold_no_password(host):
    ca_key = host.file("/etc/botstack-ca/ca.key")
    assert (ca_key.user, ca_key.mode) == ("root", 0o600)
    assert host.file("/etc/botstack-ca").mode == 0o700
    for name in ("exporter", "prometheus-client"):
        key = host.file(f"{PKI}/{name}.key")
        assert (key.user, key.group, key.mode) == ("root", "prometheus", 0o640), name
        host.check_output("openssl verify -CAfile %s/ca.crt %s/%s.crt", PKI, PKI, name)
    web = host.file("/etc/prometheus/exporter-web.yml")
    assert (web.group, web.mode) == ("prometheus", 0o640)
    assert "scrape-Secret" not in web.content_string and "$2b$" in web.content_string
    password = host.file("/etc/prometheus/exporter-password")
    assert (password.user, password.group, password.mode) == ("root", "prometheus", 0o640)
    sans = host.check_output("openssl x509 -noout -ext subjectAltName -in %s/exporter.crt", PKI)
    assert "IP Address:127.0.0.1" in sans and "DNS:deploy-host" in sans, sans


def test_secret_holding_files_are_closed(host):
    exporter = host.file("/etc/default/prometheus-redis-exporter")
    assert (exporter.user, exporter.mode) == ("root", 0o600)
    config = host.file("/etc/prometheus/alertmanager.yml")
    assert (config.user, config.group, config.mode) == ("root", "prometheus", 0o640)
    assert "T000-hook-Token-93be" in host.check_output("cat /etc/prometheus/alertmanager.yml")


def test_the_data_stores_are_measured(host):
    assert prometheus(host, "/api/v1/query?query=pg_up")["data"]["result"][0]["value"][1] == "1"
    assert prometheus(host, "/api/v1/query?query=redis_up")["data"]["result"][0]["value"][1] == "1"
    assert prometheus(host, "/api/v1/query?query=nginx_up")["data"]["result"][0]["value"][1] == "1"
    requests_seen = prometheus(host, "/api/v1/query?query=botapp_http_requests_total")["data"]["result"]
    assert requests_seen, "the app's own metrics were not scraped through nginx"


def test_the_last_deploy_is_exported(host):
    """The deploy flow writes its outcome to the textfile directory; node_exporter serves it."""
    assert host.file("/var/lib/prometheus/node-exporter/botstack_deploy_botstack.prom").exists
    result = wait_for("botstack_deploy_last_result in Prometheus",
                      lambda: prometheus(host, "/api/v1/query?query=botstack_deploy_last_result")["data"]["result"])
    assert result[0]["metric"]["app"] == "botstack" and result[0]["value"][1] in ("0", "1")


def test_bot_down_reaches_the_receiver_and_resolves(host):
    api_units = host.check_output("systemctl list-units --plain --no-legend --state=active 'botstack-api@*' "
                                  "| awk '{print $1}'").split()
    assert api_units, "no api unit is running"
    seen = len(notifications(host))
    host.check_output("systemctl stop %s" % " ".join(api_units))
    try:
        wait_for("BotDown firing in Prometheus", lambda: firing(host, "BotDown"), timeout=90)
        message = wait_for("BotDown at the receiver", lambda: notified(host, "BotDown", "FIRING", seen), timeout=90)
        assert message[0]["channel"] == "#alerts"
    finally:
        host.check_output("systemctl start %s" % " ".join(api_units))
    wait_for("BotDown resolved at the receiver", lambda: notified(host, "BotDown", "RESOLVED", seen), timeout=150)


def test_high_error_rate_fires_when_the_app_answers_5xx(host):
    """Without Redis the health endpoint answers 503; clients keep calling it through nginx.

    The ratio is taken over 5 minutes, which still hold the request loops of the deploy tests:
    the clients' 503s, not the probe's alone, must carry it past 5 %. Its resolution is not
    awaited (it clears minutes later, when the window has moved on).
    """
    base = f"https://{container_address('deploy-host')}"

    def clients_see_5xx_and_alert():
        statuses = [requests.get(base + "/health", headers={"Host": SITE}, verify=False, timeout=10).status_code
                    for _ in range(40)]
        assert any(code >= 500 for code in statuses), statuses
        return firing(host, "HighErrorRate")

    host.check_output("systemctl stop redis-server")
    try:
        alert = wait_for("HighErrorRate firing", clients_see_5xx_and_alert, timeout=180, every=1)
        assert float(alert[0]["value"]) > 0.05
    finally:
        host.check_output("systemctl start redis-server")


def test_a_run_killed_before_its_handlers_is_repaired_by_the_next(host):
    """A configuration written by a run that died before its handlers ran: the next run restarts the service.
    One look decides both for every service: a service stopped meanwhile is started again by the same run."""
    pid = host.check_output("systemctl show -P MainPID prometheus-node-exporter")
    time.sleep(1.1)  # the file must be newer than the service's start, to the second
    host.check_output("touch /etc/default/prometheus-node-exporter")
    host.check_output("systemctl stop prometheus-blackbox-exporter")
    repaired = run_playbook(PLAYBOOKS / "monitoring.yml")
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    assert host.check_output("systemctl show -P MainPID prometheus-node-exporter") != pid
    assert host.service("prometheus-blackbox-exporter").is_running
    # The restart and the start were the run's only changes, and nothing is left for the next run to repair:
    # the exporter now started after its file was written (what the role compares).
    assert sum(c["changed"] for c in play_recap(repaired.stdout).values()) == 2, repaired.stdout[-3000:]
    started = float(host.check_output(
        "date -d \"$(systemctl show --timestamp=us+utc -P ActiveEnterTimestamp prometheus-node-exporter)\" +%s.%N"))
    written = float(host.check_output("stat -c %.9Y /etc/default/prometheus-node-exporter"))
    assert started > written


@pytest.mark.parametrize("role_vars, fragment", [
    ({"monitoring_thresholds": {"error_ratio": "five percent"}}, "monitoring_thresholds.error_ratio must be a number"),
    ({"monitoring_receivers": [{"name": "ops"}]}, 'monitoring_receivers entry "ops" needs'),
    ({"monitoring_receivers": [{"name": "ops", "slack_url": "hooks.example.com/T0-Secret-x"}]},
     'monitoring_receivers entry "ops" needs'),
    ({"monitoring_scrape_extra": [{"job": "extra", "host": "db9.example.com", "port": 9100}]}, "must be an"),
    ({"monitoring_alert_rules_extra": [{"alert": "Broken", "expr": "rate(up[5m]"}]}, "promtool rejects the alert rules"),
    ({"monitoring_exporter_tls": False}, "needs monitoring_exporter_tls: true"),
    ({"monitoring_tls_ca_host": "ca.example.invalid"}, "must be an inventory host that keeps the private CA"),
])
def test_bad_input_is_rejected_before_anything_changes(role_vars, fragment, ephemeral_dir):
    assert_role_rejects("monitoring", role_vars, fragment, ephemeral_dir)
