"""Monitoring across two hosts: backup-s3 is the monitoring host, backup-db only runs exporters.

Runs after test_backup.py (file order). The scenario shortens the backup alert's `for:` and the
scrape interval through variables (molecule.yml), never in the role. Alertmanager posts
Slack-compatible messages to the receiver on backup-s3 (path /alerts/...), which appends each
request to /var/log/webhook.jsonl.
"""
from __future__ import annotations

import datetime
import json
import re
import socket
import urllib.parse

import pytest
import testinfra

from conftest import container_address, molecule_path, play_recap, run_playbook, slack_alerts, slack_notified, wait_for

testinfra_hosts = ["backup-db"]

PROM = "http://127.0.0.1:9090"
EXPORTER_PORTS = {"node": 9100, "postgres": 9187, "redis": 9121}


@pytest.fixture(scope="module")
def monitor():
    return testinfra.get_host("ansible://backup-s3", ansible_inventory=str(molecule_path("MOLECULE_INVENTORY_FILE")))


def fetch(host, url: str) -> str:
    """GET from the host itself (the S3 host has python3, not curl)."""
    program = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    return host.check_output("python3 -c %s %s", program, url)


PKI = "/etc/botstack-pki"
SCRAPE_USER = "prometheus:scrape-Secret-e81b47"
SCRAPE_PROGRAM = """
import base64, ssl, sys, urllib.error, urllib.request
url, user, cert = sys.argv[1:4]
context = ssl.create_default_context(cafile="%s/ca.crt")
if cert == "yes":
    context.load_cert_chain("%s/prometheus-client.crt", "%s/prometheus-client.key")
request = urllib.request.Request(url)
if user:
    request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
try:
    sys.stdout.write(urllib.request.urlopen(request, context=context, timeout=5).read().decode())
except (urllib.error.URLError, ssl.SSLError, ConnectionError) as error:
    sys.stdout.write("refused: %%s" %% error)
""" % (PKI, PKI, PKI)


def scrape(monitor, address: str, port: int, user: str = "", cert: bool = False) -> str:
    """GET an exporter's metrics from the monitoring host as Prometheus does: verified HTTPS plus credentials."""
    return monitor.check_output("python3 -c %s %s %s %s", SCRAPE_PROGRAM, f"https://{address}:{port}/metrics",
                                user, "yes" if cert else "no")


def prometheus(monitor, path: str) -> dict:
    return json.loads(fetch(monitor, PROM + path))



def backup_result(monitor) -> str | None:
    query = urllib.parse.quote('botstack_backup_last_result{kind="postgresql",name="botstack"}')
    result = prometheus(monitor, f"/api/v1/query?query={query}")["data"]["result"]
    return result[0]["value"][1] if result else None


def backup_failed_firing(monitor) -> bool:
    alerts = prometheus(monitor, "/api/v1/alerts")["data"]["alerts"]
    return any(a["labels"]["alertname"] == "BackupFailed" and a["labels"].get("kind") == "postgresql"
               for a in alerts)


def test_the_monitoring_host_scrapes_the_database_host(monitor):
    def all_up():
        targets = prometheus(monitor, "/api/v1/targets")["data"]["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"]["host"]): t["health"] for t in targets}
        wanted = {("node", "backup-db"), ("node", "backup-s3"), ("postgres", "backup-db"), ("redis", "backup-db")}
        return seen if set(seen) >= wanted and all(h == "up" for h in seen.values()) else None
    wait_for("every target of both hosts up", all_up)


ALERTMANAGER = "http://127.0.0.1:9093"
# Rules of issue #37 ("alerts that cannot fire"): each must be loaded, whatever its state.
NEW_RULES = {"PrivateCertificateExpiring", "PostgreSQLDown", "RedisDown", "FilesystemSpaceFillingUp", "FilesystemAlmostOutOfInodes",
             "TextfileScrapeError", "TextfileStale", "PrometheusRuleEvaluationFailures",
             "PrometheusNotificationsFailing", "AlertmanagerFailedToSendAlerts", "Watchdog"}


def alerts_named(monitor, *names: str) -> list[dict]:
    """Alerts Prometheus holds (pending or firing) of these names."""
    return [a for a in prometheus(monitor, "/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] in names]


def test_the_watchdog_fires_the_new_rules_are_loaded_and_the_data_stores_are_quiet(monitor):
    groups = prometheus(monitor, "/api/v1/rules?type=alert")["data"]["groups"]
    loaded = {rule["name"] for group in groups if group["name"] == "botstack" for rule in group["rules"]}
    assert NEW_RULES <= loaded, NEW_RULES - loaded
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"]), groups

    # The dead man's switch fires from the first evaluation, and Alertmanager gives it to its own receiver
    # (no monitoring_watchdog_url here: one that notifies no one), never to the people's receiver.
    watchdog = wait_for("the Watchdog firing", lambda: [a for a in alerts_named(monitor, "Watchdog")
                                                         if a["state"] == "firing"])
    assert watchdog[0]["labels"]["severity"] == "none", watchdog
    query = urllib.parse.quote('alertname="Watchdog"')
    routed = wait_for("the Watchdog in Alertmanager", lambda: json.loads(
        fetch(monitor, f"{ALERTMANAGER}/api/v2/alerts?filter={query}")))
    assert [r["name"] for r in routed[0]["receivers"]] == ["botstack-watchdog"], routed
    assert not slack_notified(monitor, "Watchdog", "FIRING", 0)

    # While both answer their exporters, neither data store alert is even pending.
    for metric in ("pg_up", "redis_up"):
        wait_for(f"{metric} 1 on backup-db", lambda metric=metric: [
            r for r in prometheus(monitor, f"/api/v1/query?query={metric}")["data"]["result"]
            if r["metric"].get("host") == "backup-db" and r["value"][1] == "1"])
    wait_for("no PostgreSQLDown or RedisDown", lambda: not alerts_named(monitor, "PostgreSQLDown", "RedisDown"),
             timeout=30)


def test_exporters_answer_the_monitoring_host_alone(host, monitor):
    address = container_address("backup-db")
    # backup-db listens on its private address, not on every interface.
    listening = host.check_output("ss -Htln")
    for port in EXPORTER_PORTS.values():
        sockets = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{port}")]
        assert sockets == [f"{address}:{port}"], (port, sockets)
    # The monitoring host gets an answer over HTTPS it verifies against the private CA (the
    # certificate names backup-db's private address), with the scrape password or, for Redis,
    # Prometheus' client certificate; without them, nothing.
    for name, port in EXPORTER_PORTS.items():
        credentials = {"cert": True} if name == "redis" else {"user": SCRAPE_USER}
        assert "# TYPE" in scrape(monitor, address, port, **credentials), name
        assert scrape(monitor, address, port).startswith("refused:"), name
    # The machine running these tests (another host on the same network) gets no connection.
    for name, port in EXPORTER_PORTS.items():
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=3).close()
    # Each opening names the monitoring host as its only source.
    rules = host.check_output("ufw status")
    opened = re.findall(r"^(\d+)/tcp\s+ALLOW\s+(\S+)\s+# botstack-monitoring$", rules, re.MULTILINE)
    s3_address = container_address("backup-s3")
    assert sorted(opened) == sorted((str(port), s3_address) for port in EXPORTER_PORTS.values()), rules


def test_the_private_ca_stays_on_the_monitoring_host(host, monitor):
    assert monitor.file("/etc/botstack-ca/ca.key").mode == 0o600
    assert not host.file("/etc/botstack-ca").exists
    # backup-db holds only its own key, its certificate and the CA's certificate.
    assert sorted(host.file(PKI).listdir()) == ["ca.crt", "exporter.crt", "exporter.csr", "exporter.key"]
    host.check_output("openssl verify -CAfile %s/ca.crt %s/exporter.crt", PKI, PKI)


def test_a_failed_backup_fires_the_alert_and_the_next_good_one_resolves_it(host, monitor):
    # A good backup first: whatever test_backup.py left, the series starts healthy.
    host.check_output("systemctl start botstack-backup-postgresql.service")
    wait_for("the good backup seen by Prometheus", lambda: backup_result(monitor) == "1")
    wait_for("no BackupFailed alert", lambda: not backup_failed_firing(monitor))
    seen = len(slack_alerts(monitor))

    monitor.check_output("systemctl stop seaweedfs")
    try:
        assert host.run("systemctl start botstack-backup-postgresql.service").rc != 0
    finally:
        monitor.check_output("systemctl start seaweedfs")
        monitor.run("timeout 60 sh -c 'until (echo > /dev/tcp/127.0.0.1/8333) 2>/dev/null; do sleep 1; done'")
    message = wait_for("BackupFailed at the receiver", lambda: slack_notified(monitor, "BackupFailed", "FIRING", seen))
    text = json.dumps(message)
    assert "backup-db" in text and "postgresql" in text, text

    host.check_output("systemctl start botstack-backup-postgresql.service")
    wait_for("BackupFailed resolved at the receiver", lambda: slack_notified(monitor, "BackupFailed", "RESOLVED", seen))


def served_expiry(monitor) -> dict:
    """{host: the end of the private certificate its node exporter serves}, as the blackbox probe saw it."""
    query = urllib.parse.quote('probe_ssl_earliest_cert_expiry{job="pki"} and on(instance) probe_success == 1')
    result = prometheus(monitor, f"/api/v1/query?query={query}")["data"]["result"]
    return {r["metric"]["host"]: int(float(r["value"][1])) for r in result}


def certificate_end(host) -> int:
    end = host.check_output("openssl x509 -noout -enddate -in %s/exporter.crt", PKI).split("=", 1)[1]
    return int(datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.timezone.utc).timestamp())


def issue_exporter_certificate(tmp_path, host, **role_vars) -> None:
    """The pki role's certificate entry point for backup-db's exporter certificate, as the monitoring role calls it;
    the node exporter then serves the new one."""
    playbook = tmp_path / "exporter-certificate.yml"
    playbook.write_text(json.dumps([{
        "name": "The exporter certificate of backup-db", "hosts": "backup-db", "become": True,
        "tasks": [{"name": "Issue it", "ansible.builtin.include_role": {
            "name": "botstack.deploy.pki", "tasks_from": "certificate"},
            "vars": {"pki_certificate_name": "exporter", "pki_certificate_group": "prometheus",
                     "pki_certificate_sans": ["IP:127.0.0.1", "DNS:backup-db", f"IP:{container_address('backup-db')}"],
                     **role_vars}}],
    }]))
    result = run_playbook(playbook)
    assert result.returncode == 0 and play_recap(result.stdout)["backup-db"]["changed"] > 0, result.stdout[-3000:]
    host.check_output("systemctl restart prometheus-node-exporter")


def test_a_private_certificate_near_its_end_fires_the_alert_and_its_renewal_resolves_it(host, monitor, tmp_path):
    """The blackbox exporter on the monitoring host shakes hands with each host's exporter and reads the end of the
    certificate it serves: the end of the file on disk; ten days from its end (threshold 14) the alert fires at the
    receiver; the renewal a run of the role makes resolves it."""
    ends = wait_for("both hosts' private certificates probed", lambda: (lambda seen: seen if set(seen) == {
        "backup-db", "backup-s3"} else None)(served_expiry(monitor)))
    assert ends["backup-db"] == certificate_end(host), ends
    seen = len(slack_alerts(monitor))

    # Issued anew for ten days only, renewed at five: no run would re-issue it before the alert.
    host.check_output("rm %s/exporter.crt", PKI)
    issue_exporter_certificate(tmp_path, host, pki_certificate_valid_days=10, pki_certificate_renew_days=5)
    short = certificate_end(host)
    assert short - datetime.datetime.now(datetime.timezone.utc).timestamp() < 11 * 86400
    wait_for("the short certificate probed", lambda: served_expiry(monitor).get("backup-db") == short)
    message = wait_for("PrivateCertificateExpiring at the receiver",
                       lambda: slack_notified(monitor, "PrivateCertificateExpiring", "FIRING", seen))
    assert "backup-db" in json.dumps(message), message

    # The next run with the role's defaults (renewal 30 days before the end) re-issues it.
    issue_exporter_certificate(tmp_path, host)
    renewed = certificate_end(host)
    assert renewed - datetime.datetime.now(datetime.timezone.utc).timestamp() > 800 * 86400
    wait_for("the renewed certificate probed", lambda: served_expiry(monitor).get("backup-db") == renewed)
    wait_for("PrivateCertificateExpiring resolved at the receiver",
             lambda: slack_notified(monitor, "PrivateCertificateExpiring", "RESOLVED", seen))
    # Every exporter serves the renewed certificate again, as the role's handlers would have them.
    host.check_output("systemctl restart prometheus-postgres-exporter prometheus-redis-exporter")

