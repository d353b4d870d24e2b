"""A balancer, two app hosts and a database host converged by site.yml: traffic between hosts is
encrypted and verified, the app ports answer the balancer alone, deploys roll host by host under
load without a failed request, and a wrong topology stops before anything changes."""
from __future__ import annotations

import json
import pathlib
import shlex
import subprocess
import textwrap

import pytest
import requests
import testinfra
import urllib3

from conftest import assert_no_secret_in, molecule_path, play_recap, run_module, run_playbook
from traffic import Traffic

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the request loop skips the Pebble chain
LB, APP1, APP2, DB = "multi-lb", "multi-app1", "multi-app2", "multi-db"
ADDRESS = {LB: "10.213.7.10", APP1: "10.213.7.11", APP2: "10.213.7.12", DB: "10.213.7.20"}
SITE = "bot.multi.test"
BASE_URL = f"https://{ADDRESS[LB]}"
ROOT = pathlib.Path(__file__).resolve().parents[3]
CA = "/etc/botstack-pki/ca.crt"
VENV_PYTHON = "/opt/botstack/current/.venv/bin/python"


def on(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=str(molecule_path("MOLECULE_INVENTORY_FILE")))


def get(path: str, **kwargs):
    return requests.get(BASE_URL + path, headers={"Host": SITE}, verify=False, timeout=15, **kwargs)


def output(result) -> str:
    return result.stdout + result.stderr


def app_python(host, code: str, **env: str):
    """Run Python from the live release's venv on an app host, as the app user."""
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    return host.run(f"cd /tmp && runuser -u botstack -- env -i PATH=/usr/bin:/bin HOME=/nonexistent {exports} "
                    f"{VENV_PYTHON} -c {shlex.quote(textwrap.dedent(code))}")


def live_ports(host) -> list[str]:
    """Ports the app listens on now (the live slot's, on the host's private address)."""
    out = host.check_output("ss -Htln")
    return sorted({line.split()[3].rsplit(":", 1)[1] for line in out.splitlines()
                   if line.split()[3].startswith(ADDRESS[host.backend.host] + ":")})


# --- end to end ------------------------------------------------------------------------

def test_the_balancer_serves_the_app_healthy_from_both_app_hosts():
    answer = get("/health")
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"]["database"]["status"] == "ok"
    assert answer.json()["checks"]["redis"]["status"] == "ok"
    lb = on(LB)
    for app in (APP1, APP2):
        ports = live_ports(on(app))
        assert ports, f"nothing listens on {app}'s private address"
        body = lb.check_output(f"curl -fsS --max-time 5 http://{ADDRESS[app]}:{ports[0]}/health")
        assert json.loads(body)["status"] == "healthy", body


def test_the_site_certificate_comes_from_the_acme_server_and_verifies():
    lb = on(LB)
    lb.check_output("curl -sS --cacert /etc/pebble/ca.crt https://127.0.0.1:15000/roots/0 > /tmp/pebble-roots.pem")
    body = lb.check_output("curl -sS --fail --cacert /tmp/pebble-roots.pem --resolve bot.multi.test:443:127.0.0.1 "
                           "https://bot.multi.test/health")
    assert json.loads(body)["status"] == "healthy", body
    issuer = lb.check_output("openssl s_client -connect 127.0.0.1:443 -servername bot.multi.test </dev/null 2>/dev/null "
                             "| openssl x509 -noout -issuer")
    assert "Pebble" in issuer, issuer


def test_the_balancer_lists_each_app_host_at_its_live_port_and_nothing_else():
    lb = on(LB)
    entries = lb.check_output("cd /etc/nginx/botstack/upstream-botstack.d && grep -H server *.conf").splitlines()
    assert sorted(line.split(".conf:")[0] for line in entries) == [APP1, APP2], entries
    for line in entries:
        name = line.split(".conf:")[0]
        assert f"server {ADDRESS[name]}:{live_ports(on(name))[0]}" in line, (line, live_ports(on(name)))


def test_the_scheduler_runs_on_one_host_only():
    def schedulers(name):
        return on(name).run("systemctl list-units --plain --no-legend --state=active 'botstack-scheduler@*'").stdout.strip()
    assert schedulers(APP1), "no scheduler on the scheduler host"
    assert not schedulers(APP2), schedulers(APP2)


# --- PostgreSQL over verified TLS -------------------------------------------------------

def test_the_app_reaches_postgresql_over_tls_only():
    db = on(DB)
    rows = db.check_output(
        "runuser -u postgres -- psql -Atc \"select a.client_addr, s.ssl, s.version from pg_stat_activity a "
        "join pg_stat_ssl s using (pid) where a.usename = 'bot' and a.client_addr is not null\"").splitlines()
    assert rows, "no app connection to PostgreSQL"
    clients = {row.split("|")[0] for row in rows}
    assert clients <= {ADDRESS[APP1], ADDRESS[APP2]} and len(clients) == 2, rows
    assert all(row.split("|")[1] == "t" and row.split("|")[2] in ("TLSv1.2", "TLSv1.3") for row in rows), rows


def test_postgresql_refuses_plaintext_and_a_certificate_it_cannot_verify():
    app = on(APP1)
    connect = """
        import asyncio, asyncpg, os
        async def main():
            c = await asyncpg.connect(host="multi-db", user="bot", database="botstack",
                                      password=os.environ["PW"], ssl={ssl!r})
            print("connected", await c.fetchval("select ssl from pg_stat_ssl where pid = pg_backend_pid()"))
        asyncio.run(main())
    """
    password = "db-Secret-91c0e7"
    plain = app_python(app, connect.format(ssl="disable"), PW=password)
    assert plain.rc != 0 and "no encryption" in plain.stderr, plain.stderr[-800:]
    # verify-full without the private CA: the server's certificate is not trusted.
    untrusted = app_python(app, connect.format(ssl="verify-full"), PW=password)
    assert untrusted.rc != 0, untrusted.stdout
    assert "certificate" in untrusted.stderr.lower() or "root" in untrusted.stderr.lower(), untrusted.stderr[-800:]
    verified = app_python(app, connect.format(ssl="verify-full"), PW=password, PGSSLROOTCERT=CA)
    assert verified.rc == 0 and "connected True" in verified.stdout, verified.stderr[-800:]


def test_the_postgresql_certificate_names_the_host_and_comes_from_the_private_ca():
    app = on(APP1)
    out = app.run(f"openssl s_client -starttls postgres -connect multi-db:5432 -CAfile {CA} -verify_hostname multi-db "
                  "-verify_return_error </dev/null 2>&1")
    assert "Verify return code: 0 (ok)" in out.stdout, out.stdout[-1500:]
    wrong = app.run(f"openssl s_client -starttls postgres -connect multi-db:5432 -CAfile {CA} -verify_hostname other-db "
                    "-verify_return_error </dev/null 2>&1")
    assert "Verify return code: 0 (ok)" not in wrong.stdout, wrong.stdout[-1500:]


# --- Redis over verified TLS ---------------------------------------------------------

def test_the_app_reaches_redis_over_tls_and_plain_redis_is_closed_to_the_network():
    db = on(DB)
    tls_peers = db.check_output("ss -Htn state established '( sport = :6380 )'")
    plain_peers = db.check_output("ss -Htn state established '( sport = :6379 )'")
    for app in (APP1, APP2):
        assert ADDRESS[app] + ":" in tls_peers, f"{app} holds no TLS connection to Redis:\n{tls_peers}"
        assert ADDRESS[app] + ":" not in plain_peers, plain_peers
    app = on(APP1)
    plain = app.run("timeout 5 bash -c '</dev/tcp/multi-db/6379'")
    assert plain.rc != 0, "plain Redis answers the app host"
    verified = app.run(f"openssl s_client -connect multi-db:6380 -CAfile {CA} -verify_hostname multi-db "
                       "-verify_return_error </dev/null 2>&1")
    assert "Verify return code: 0 (ok)" in verified.stdout, verified.stdout[-1500:]
    untrusted = app.run("openssl s_client -connect multi-db:6380 -verify_hostname multi-db -verify_return_error "
                        "</dev/null 2>&1")
    assert "Verify return code: 0 (ok)" not in untrusted.stdout, untrusted.stdout[-1500:]


def test_redis_refuses_the_app_user_over_tls_without_the_password():
    wrong = app_python(on(APP1), """
        import redis
        r = redis.Redis.from_url("rediss://bot:wrong-password@multi-db:6380/0?ssl_ca_certs=/etc/botstack-pki/ca.crt")
        r.ping()
    """)
    assert wrong.rc != 0 and ("WRONGPASS" in wrong.stderr or "invalid username-password" in wrong.stderr), \
        wrong.stderr[-800:]


# --- app ports: the balancer alone ------------------------------------------------------

def test_the_app_ports_answer_the_balancer_and_nobody_else():
    db = on(DB)
    for app in (APP1, APP2):
        for port in live_ports(on(app)):
            refused = db.run(f"curl -sS --max-time 4 -o /dev/null http://{ADDRESS[app]}:{port}/health")
            assert refused.rc != 0, f"{app}:{port} answers the database host"
    rules = on(APP1).check_output("ufw status")
    assert "10.213.7.10" in rules and "botstack-app" in rules, rules


# --- a rolling deploy under load -------------------------------------------------------

SAMPLES = "/var/log/units-sampler.log"


def start_samplers():
    """On each app host, every 0.2 s, which of the app's units run (or start, or stop), with the release of their slot."""
    script = ("while :; do line=$(date +%s.%N); for u in $(systemctl list-units --plain --no-legend "
              "--state=active,activating,deactivating 'botstack-*@*.service' | awk '{print $1\"=\"$3}'); do "
              "s=${u#*@}; s=${s%%.service*}; line=\"$line $u=$(basename \"$(readlink /opt/botstack/slots/$s)\")\"; "
              "done; echo \"$line\" >> " + SAMPLES + "; sleep 0.2; done")
    for app in (APP1, APP2):
        on(app).run(f"systemctl stop units-sampler.service; rm -f {SAMPLES}")
        # From a file: systemd-run would expand the script's own $variables as the unit's environment.
        on(app).check_output(f"printf '%s\\n' {shlex.quote(script)} > /usr/local/sbin/units-sampler")
        on(app).check_output("systemd-run --unit=units-sampler.service /bin/bash /usr/local/sbin/units-sampler")


def stop_samplers() -> dict:
    """{host: [(time, {unit: (state, release)})]} of what the samplers saw."""
    seen = {}
    for app in (APP1, APP2):
        on(app).run("systemctl stop units-sampler.service")
        rows = []
        for line in on(app).check_output(f"cat {SAMPLES}").splitlines():
            stamp, *units = line.split()
            rows.append((float(stamp), {u.split("=")[0]: tuple(u.split("=")[1:3]) for u in units}))
        seen[app] = rows
    return seen


def assert_one_scheduler_and_no_new_task_to_an_old_worker(seen: dict, new_release: str):
    """Across hosts, at every moment: at most one scheduler unit, and while a scheduler of the new release runs, no
    worker of another release takes tasks (one stopping - deactivating - finishes the task in hand only)."""
    latest, checked = {}, 0
    for stamp, host, units in sorted((t, h, u) for h, rows in seen.items() for t, u in rows):
        latest[host] = (stamp, units)
        now = {h: u for h, (t, u) in latest.items() if stamp - t <= 0.3}
        schedulers = [(h, unit, release) for h, u in now.items() for unit, (_, release) in u.items()
                      if "-scheduler@" in unit]
        assert len(schedulers) <= 1, (stamp, schedulers)
        if schedulers and schedulers[0][2] == new_release:
            old = [(h, unit, release) for h, u in now.items() for unit, (state, release) in u.items()
                   if "-worker@" in unit and state == "active" and release != new_release]
            assert not old, (stamp, schedulers, old)
            checked += 1
    seen_schedulers = sorted({(h, unit, release) for h, rows in seen.items() for _, u in rows
                              for unit, (_, release) in u.items() if "-scheduler@" in unit})
    assert checked > 0, ("no sample saw the new release's scheduler", new_release, seen_schedulers,
                         {h: len(rows) for h, rows in seen.items()})


def test_a_rolling_deploy_under_load_loses_no_request_and_both_hosts_run_the_new_release():
    start_samplers()
    with Traffic(BASE_URL, SITE, rate=20, slow_every=1, slow_seconds=2) as traffic:
        result = run_playbook(ROOT / "playbooks" / "deploy.yml", "-e", "deploy_version=v2")
    seen = stop_samplers()
    assert result.returncode == 0, output(result)[-5000:]
    assert_no_secret_in(output(result), "deploy.yml")
    assert traffic.report.failed == 0, traffic.report.summary()
    # Host by host, the scheduler's host last: while one host switched, the other served the old release, and
    # the new scheduler started once every worker ran the new release.
    text = output(result)
    first, last = text.index("PLAY [Release on the app hosts, one at a time"), text.index("PLAY [Release on the singleton")
    assert first < text.index(f"[{APP2}]", first) < last < text.index(f"[{APP1}]", last), "app2 first, then app1"
    assert {"1.0.0", "2.0.0"} <= set(traffic.report.versions), traffic.report.summary()
    v2 = on(APP1).check_output("basename $(readlink -f /opt/botstack/current)")
    assert v2.startswith("v2-")
    assert_one_scheduler_and_no_new_task_to_an_old_worker(seen, v2)
    lb = on(LB)
    for app in (APP1, APP2):
        port = live_ports(on(app))[0]
        body = json.loads(lb.check_output(f"curl -fsS --max-time 5 http://{ADDRESS[app]}:{port}/health"))
        assert body["version"] == "2.0.0", (app, body)


def test_moving_the_scheduler_to_another_host_never_runs_two():
    """app_singleton_host names app2: app1 (no longer the scheduler's host) deploys first and stops its scheduler,
    app2 starts one last; and back again."""
    for target, other in ((APP2, APP1), (APP1, APP2)):
        start_samplers()
        result = run_playbook(ROOT / "playbooks" / "deploy.yml", "-e", "deploy_version=v2",
                              *(["-e", f"app_singleton_host={target}"] if target == APP2 else []))
        seen = stop_samplers()
        assert result.returncode == 0, output(result)[-5000:]
        running = {app: on(app).check_output("systemctl list-units --plain --no-legend --state=active,activating,"
                                             "deactivating 'botstack-scheduler@*'") for app in (target, other)}
        assert len(running[target].splitlines()) == 1 and not running[other].strip(), (target, running,
                                                                                      output(result)[-6000:])
        # Nor is one left to start at its next boot.
        assert "scheduler" not in on(other).run("ls /etc/systemd/system/botstack.target.wants").stdout
        assert_one_scheduler_and_no_new_task_to_an_old_worker(seen, on(APP1).check_output(
            "basename $(readlink -f /opt/botstack/current)"))


def test_an_unreachable_balancer_fails_the_deploy_and_the_release_is_never_called_healthy():
    """The balancer cannot be reached while app2 switches: app2's deploy fails in its switch, the release is marked
    failed (never healthy), app2 keeps its live slot, and the message names the balancer."""
    app2 = on(APP2)
    before = app2.check_output("basename $(readlink -f /opt/botstack/current)")
    subprocess.run(["docker", "pause", LB], check=True)
    try:
        result = run_playbook(ROOT / "playbooks" / "deploy.yml", "-e", "deploy_version=v3", "--limit", APP2)
    finally:
        subprocess.run(["docker", "unpause", LB], check=True)
    assert result.returncode != 0 and LB in output(result), output(result)[-5000:]
    info = json.loads(app2.check_output("cat /opt/botstack/releases/$(ls /opt/botstack/releases | grep '^v3-' | head -1)"
                                        "/.release.json"))
    assert info["status"] == "failed", info
    assert app2.check_output("basename $(readlink -f /opt/botstack/current)") == before
    # Once the balancer answers, a deploy ends where one clean run ends.
    assert run_playbook(ROOT / "playbooks" / "deploy.yml", "-e", "deploy_version=v2").returncode == 0
    assert get("/health").status_code == 200


# --- bad input: before anything changes -------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["-e", "app_bind_address=127.0.0.1"], "set app_bind_address"),
    (["-e", '{"app_env": {"DATABASE_URL": "postgresql+asyncpg://bot:pw@127.0.0.1:5432/botstack"}}'],
     "app_env DATABASE_URL point at localhost"),
    (["-e", "vault_db_bot_password=CHANGE-ME-db-password"], "vault_db_bot_password"),
    (["-e", '{"app_firewall_sources": []}'], "app_firewall_sources"),
    (["-e", '{"app_ca_certificates": [{"name": "rds", "content": "not a certificate"}]}'],
     'app_ca_certificates entry "rds" needs'),
], ids=["loopback-behind-a-remote-balancer", "database-on-localhost", "example-secret", "no-firewall-source",
        "provider-ca-not-a-certificate"])
def test_a_wrong_topology_stops_in_the_preflight_with_nothing_changed(args, message):
    result = run_playbook(ROOT / "site.yml", *args)
    assert result.returncode != 0
    assert message in output(result), output(result)[-3000:]
    assert "TASK [botstack.deploy.base" not in result.stdout, "the run went past the preflight"
    assert all(c["changed"] == 0 for c in play_recap(result.stdout).values()), result.stdout[-3000:]
    assert_no_secret_in(output(result), "site.yml with bad input")


def test_two_scheduler_hosts_stop_the_run_before_anything_changes(tmp_path):
    extra = tmp_path / "two-schedulers.yml"
    extra.write_text("all:\n  children:\n    scheduler:\n      hosts:\n        multi-app2:\n")
    result = run_playbook(ROOT / "site.yml", "-i", str(extra))
    assert result.returncode != 0
    assert "exactly one host per environment may run the scheduler" in output(result), output(result)[-3000:]
    assert all(c["changed"] == 0 for c in play_recap(result.stdout).values()), result.stdout[-3000:]


# --- topology 4: managed PostgreSQL and Redis ---------------------------------------------

def test_an_app_host_on_managed_databases_converges_with_the_providers_ca_from_variables(tmp_path):
    """No host in db or redis: their roles skip; endpoints and the provider's CA come from variables.

    multi-db stands in for the provider: its CA certificate is handed over as app_ca_certificates
    (as a provider publishes its CA bundle), and app2 verifies PostgreSQL and Redis against that file."""
    import shutil

    import yaml

    inventory = tmp_path / "managed"
    shutil.copytree(molecule_path("MOLECULE_INVENTORY_FILE").parent, inventory)
    hosts_file = inventory / "ansible_inventory.yml"
    hosts = yaml.safe_load(hosts_file.read_text())
    for group in ("db", "redis"):
        hosts.pop(group, None)
    hosts_file.write_text(yaml.safe_dump(hosts))
    provider_ca = on(DB).check_output(f"cat {CA}")
    managed = tmp_path / "managed-vars.json"
    managed.write_text(json.dumps({
        "deploy_version": "v2",
        "app_pki_trust": False,
        "app_ca_certificates": [{"name": "provider", "content": provider_ca}],
        "app_env": {
            "DATABASE_URL": "postgresql+asyncpg://bot:{{ test_db_password }}@multi-db:5432/botstack?ssl=verify-full",
            "PGSSLROOTCERT": "/etc/botstack-pki/provider.crt",
            "REDIS_URL": "rediss://bot:{{ test_redis_password }}@multi-db:6380/0?ssl_cert_reqs=required"
                         "&ssl_ca_certs=/etc/botstack-pki/provider.crt",
            "TELEGRAM_WEBHOOK_SECRET": "{{ test_webhook_secret }}",
        },
    }))
    args = ("-i", str(inventory), "--limit", APP2, "-e", f"@{managed}")
    first = run_playbook(ROOT / "site.yml", *args)
    assert first.returncode == 0, output(first)[-5000:]
    assert_no_secret_in(output(first), "site.yml on managed databases")
    assert "TASK [botstack.deploy.postgresql" not in first.stdout and "TASK [botstack.deploy.redis" not in first.stdout

    app2 = on(APP2)
    ca_file = app2.file("/etc/botstack-pki/provider.crt")
    assert (ca_file.mode, ca_file.user) == (0o644, "root") and ca_file.content_string.strip() == provider_ca.strip()
    # The live slot's configuration bundle holds the environment it runs with.
    info = run_module(APP2, "botstack.deploy.release_info", {"app_root": "/opt/botstack"})
    env = f"/opt/botstack/config/{info['slots'][info['current_slot']]['data']['config']}/env"
    assert app2.run(f"""grep -qx 'PGSSLROOTCERT="/etc/botstack-pki/provider.crt"' {env}""").rc == 0
    # The live slot checked PostgreSQL and Redis, both verified against the provider's CA.
    port = live_ports(app2)[0]
    body = json.loads(on(LB).check_output(f"curl -fsS --max-time 5 http://{ADDRESS[APP2]}:{port}/health"))
    assert body["status"] == "healthy" and body["version"] == "2.0.0", body
    assert {name: check["status"] for name, check in body["checks"].items()} == {"database": "ok", "redis": "ok"}

    again = run_playbook(ROOT / "site.yml", *args)
    assert again.returncode == 0, output(again)[-5000:]
    assert play_recap(again.stdout)[APP2]["changed"] == 0, again.stdout[-5000:]
