"""The blue/green release flow on a real host, measured through nginx over TLS.

Tests run in file order: each deploy starts from the state the previous one left.
Converge deployed v1; the repository on the host holds v1, v2 (new dependency, new
column), v3 (code only) and the broken variants (examples/botapp/history).
"""
from __future__ import annotations

import calendar
import json
import pathlib
import random
import re
import signal
import subprocess
import time
import uuid

import pytest
import requests
import urllib3
from conftest import container_address, molecule_path, play_recap, run_module, run_playbook
from traffic import Traffic

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the scenario's certificate is self-signed
HOST = "deploy-host"
SITE = "bot.botstack.test"
APP_ROOT = "/opt/botstack"
SECRET = "hook-Secret-0f3e9a51c2"
PLAYBOOKS = pathlib.Path(__file__).resolve().parents[3] / "playbooks"
KILL_TRIALS = 6  # benchmarks/deploy.py runs at least 20
SHIPPED: dict = {}  # what earlier tests deployed, for the tests that repeat it
NO_SCHEDULER: list = []  # (start, end) of deploys that tried a scheduler which does not start


@pytest.fixture(scope="module")
def base_url():
    return f"https://{container_address(HOST)}"


def get(base_url, path, **kwargs):
    return requests.get(base_url + path, headers={"Host": SITE}, verify=False, timeout=15, **kwargs)


def deploy(*extra: str, playbook: str = "deploy.yml") -> subprocess.CompletedProcess:
    return run_playbook(PLAYBOOKS / playbook, *extra)


def releases() -> dict:
    return run_module(HOST, "botstack.deploy.release_info", {"app_root": APP_ROOT})


def status_of(version: str) -> str:
    """Status of the release of a version (ids are <version>-<12 hex of the commit>)."""
    return next(r["status"] for r in releases()["releases"] if re.fullmatch(re.escape(version) + r"-[0-9a-f]{12}", r["id"]))


def psql(host, sql: str) -> str:
    return host.check_output(f"runuser -u postgres -- psql -d botstack -Atc {json.dumps(sql)}")


def fingerprint_of(version: str) -> str:
    """The migrations fingerprint the release of a version recorded (deploy_migrate_paths)."""
    return next(r["fingerprints"]["migrations"] for r in releases()["releases"]
                if re.fullmatch(re.escape(version) + r"-[0-9a-f]{12}", r["id"]))


def migration_starts(host) -> str:
    """When each slot's migration unit last ran (monotonic microseconds)."""
    return host.check_output("systemctl show -p InactiveExitTimestampMonotonic botstack-migrate@blue.service "
                             "botstack-migrate@green.service")


def running_units(host) -> list[str]:
    out = host.check_output("systemctl list-units --plain --no-legend --state=active 'botstack-*@*.service'")
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def assert_ok(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


# --- the first release --------------------------------------------------------------

def test_v1_serves_the_health_document_through_nginx_over_tls(host, base_url):
    response = get(base_url, "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["version"] == "1.0.0"
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["redis"]["status"] == "ok"
    assert requests.get(base_url.replace("https", "http") + "/health", headers={"Host": SITE},
                        allow_redirects=False, timeout=10).status_code == 301


def test_only_the_live_slot_runs_and_starts_at_boot(host):
    info = releases()
    live = info["current_slot"]
    assert running_units(host) == sorted(f"botstack-{p}@{live}.service" for p in ("api", "scheduler", "worker"))
    wants = host.check_output("ls /etc/systemd/system/botstack.target.wants")
    assert sorted(wants.split()) == sorted(f"botstack-{p}@{live}.service" for p in ("api", "scheduler", "worker"))
    assert host.service("botstack.target").is_enabled


def test_the_layout_and_its_permissions(host):
    root = host.file(APP_ROOT)
    assert (root.user, root.group, root.mode) == ("root", "botstack", 0o750)
    # The environment lives in the configuration bundle the live slot runs: the app reads it, cannot change it.
    config = releases()["slots"][releases()["current_slot"]]["data"]["config"]
    env = host.file(f"{APP_ROOT}/config/{config}/env")
    assert (env.user, env.group, env.mode) == ("root", "botstack", 0o640)
    assert not host.file(f"{APP_ROOT}/.env").exists
    assert host.file(f"{APP_ROOT}/shared/logs").user == "botstack"
    user = host.user("botstack")
    assert user.shell == "/usr/sbin/nologin" and user.password in ("!", "*", "!*")
    live = host.file(f"{APP_ROOT}/current")
    assert live.is_symlink and live.linked_to.startswith(f"{APP_ROOT}/releases/v1-")
    release = host.file(live.linked_to)
    assert release.user == "root" and host.file(f"{live.linked_to}/logs").linked_to == f"{APP_ROOT}/shared/logs"
    rotate = host.file("/etc/logrotate.d/botstack")
    assert rotate.contains("daily") and rotate.contains("rotate 30") and rotate.contains("compress")
    assert host.run("logrotate --debug /etc/logrotate.d/botstack").rc == 0


def test_every_app_unit_scores_two_or_less_in_systemd_analyze_security(host, reports_dir):
    scores = {}
    # Each slot's units are installed from the configuration bundle it runs (only the live slot's so far).
    live = releases()["current_slot"]
    units = [f"botstack-{p}@{live}.service" for p in ("api", "worker", "scheduler", "migrate")]
    assert sorted(host.check_output("ls /etc/systemd/system | grep '^botstack-.*@.*[.]service$'").split()) == sorted(units)
    for unit in units:
        out = host.check_output(f"systemd-analyze security {unit} --no-pager")
        scores[unit] = float(out.strip().splitlines()[-1].split("level for")[1].split(":")[1].split()[0])
    (reports_dir / "systemd-analyze-security.json").write_text(json.dumps(scores, indent=2))
    assert all(score <= 2.0 for score in scores.values()), scores


def test_the_processes_write_only_below_shared(host):
    live = releases()["current_slot"]
    pid = host.check_output(f"systemctl show -p MainPID --value botstack-api@{live}.service")
    # As the app's user, inside its sandbox: the release and /etc are read-only.
    probe = host.run(f"nsenter -t {pid} -m runuser -u botstack -- touch {APP_ROOT}/current/x /etc/x")
    assert probe.rc != 0 and "Read-only file system" in probe.stderr, probe.stderr
    assert host.run(f"nsenter -t {pid} -m runuser -u botstack -- touch {APP_ROOT}/shared/logs/probe").rc == 0


def test_the_webhook_checks_its_secret_and_the_worker_answers(host, base_url):
    update_id = random.randint(10_000, 10_000_000)
    payload = {"update_id": update_id, "message": {"chat": {"id": 42}, "text": "hello", "from": {"language_code": "de"}}}
    refused = requests.post(base_url + "/webhook/telegram", json=payload, verify=False, timeout=10,
                            headers={"Host": SITE, "X-Telegram-Bot-Api-Secret-Token": "wrong-secret-value"})
    assert refused.status_code == 403
    accepted = requests.post(base_url + "/webhook/telegram", json=payload, verify=False, timeout=10,
                             headers={"Host": SITE, "X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert accepted.status_code == 200 and accepted.json() == {"ok": True}
    for _ in range(40):
        answer = get(base_url, f"/api/updates/{update_id}").json()
        if answer["processed_at"]:
            break
        time.sleep(0.25)
    assert answer["reply"] == "echo: hello"


# --- releases under load -------------------------------------------------------------

def test_v2_goes_live_under_load_without_a_failed_request_and_a_running_job_finishes_once(host, base_url):
    job = requests.post(base_url + "/api/jobs?seconds=10", headers={"Host": SITE}, verify=False, timeout=10).json()
    time.sleep(1)  # the worker picked it up
    with Traffic(base_url, SITE, rate=20, slow_every=1, slow_seconds=3) as traffic:
        result = deploy("-e", "deploy_version=v2")
    assert_ok(result)
    assert traffic.report.failed == 0, traffic.report.summary()
    assert traffic.report.slow_total > 5, traffic.report.summary()
    assert get(base_url, "/health").json()["version"] == "2.0.0"
    for _ in range(60):
        state = get(base_url, f"/api/jobs/{job['token']}").json()
        if state["finished_at"]:
            break
        time.sleep(0.5)
    assert state["finished_at"] and state["attempts"] == 1, state
    assert psql(host, "SELECT column_name FROM information_schema.columns "
                      "WHERE table_name = 'updates' AND column_name = 'language_code'") == "language_code"
    assert host.run(f"{APP_ROOT}/current/.venv/bin/python -c 'import tenacity'").rc == 0
    assert status_of("v2") == "healthy"
    # v2 adds a migration: its fingerprint differs from v1's, and it ran.
    assert fingerprint_of("v2") != fingerprint_of("v1")
    log = host.check_output(f"tail -n 1 {APP_ROOT}/deploy.log")
    entry = json.loads(log)
    assert entry["result"] == "success" and entry["release"].startswith("v2-") and entry["who"] == "molecule@controller"


def test_rerunning_the_proxy_layer_keeps_the_live_colour(host, base_url):
    live = releases()["current_slot"]
    port = 8001 if live == "blue" else 8002
    assert_ok(run_playbook(PLAYBOOKS / "nginx.yml"))
    assert host.file(f"/etc/nginx/botstack/upstream-botstack.d/{HOST}.conf").contains(f"127.0.0.1:{port};")
    assert get(base_url, "/health").json()["version"] == "2.0.0"


def test_an_archive_from_the_controller_deploys_code_only_reusing_the_venv_and_runs_the_hooks(host, base_url,
                                                                                               ephemeral_dir):
    """v3 shipped as CI would: an archive built on the controller; the hooks run around their phases."""
    before = host.file(f"{APP_ROOT}/current/.venv").linked_to
    archive = ephemeral_dir / "botapp-v3.tar.gz"
    subprocess.run(["git", "-C", str(ephemeral_dir / "botapp.git"), "archive", "--format=tar.gz", "-o", str(archive),
                    "v3"], check=True)
    hooks = {}
    for phase in ("before_update_code", "after_switch", "after_finalize"):
        hook = ephemeral_dir / f"hook-{phase}.yml"
        hook.write_text(json.dumps([{"name": f"Record {phase}", "ansible.builtin.shell":
                                     f"echo {phase} $(readlink {APP_ROOT}/current) >> /tmp/hooks.log",
                                     "changed_when": True}]))
        hooks[phase] = str(hook)
    host.run("rm -f /tmp/hooks.log")
    extra = {"deploy_source": "archive", "deploy_archive": str(archive), "deploy_version": "v3", "deploy_hooks": hooks}
    SHIPPED["v3"] = extra
    migrated = migration_starts(host)
    with Traffic(base_url, SITE, rate=20, slow_every=1) as traffic:
        result = deploy("-e", json.dumps(extra))
    assert_ok(result)
    assert traffic.report.failed == 0, traffic.report.summary()
    assert get(base_url, "/").json()["version"] == "3.0.0"
    assert host.file(f"{APP_ROOT}/current/.venv").linked_to == before
    # Code only: the same migration files as v2, so the migration unit did not run.
    assert fingerprint_of("v3") == fingerprint_of("v2")
    assert migration_starts(host) == migrated
    assert "Migrations not run: v3-" in result.stdout
    ran = host.check_output("cat /tmp/hooks.log").splitlines()
    assert [line.split()[0] for line in ran] == ["before_update_code", "after_switch", "after_finalize"], ran
    assert ran[0].split()[1] != ran[1].split()[1], "after_switch must see the new slot live"
    sha = subprocess.run(["sha256sum", str(archive)], capture_output=True, text=True, check=True).stdout[:12]
    assert releases()["current"] == f"v3-{sha}"


def test_deploying_the_same_version_again_changes_nothing(host):
    result = deploy("-e", json.dumps(dict(SHIPPED["v3"], deploy_hooks={})))
    assert_ok(result)
    assert play_recap(result.stdout)[HOST]["changed"] == 0, result.stdout[-4000:]


@pytest.mark.parametrize(("variant", "evidence"), [
    ("v3-crash", "cannot import name 'WEBHOOK_PATH'"),
    ("v3-unhealthy", "status 500"),
    ("v3-badmigration", 'column "lang" does not exist'),
    # API and worker pass the gate and take traffic; the scheduler crashes after ~1 s of imports.
    ("v3-schedcrash", "cannot import name 'TICK_SCHEDULE'"),
])
def test_a_broken_release_fails_with_evidence_and_the_previous_one_keeps_serving(host, base_url, variant, evidence):
    started = time.time()
    with Traffic(base_url, SITE, rate=20, slow_every=1) as traffic:
        result = deploy("-e", f"deploy_version={variant}")
    if variant == "v3-schedcrash":
        NO_SCHEDULER.append((started, time.time()))
    text = output(result)
    assert result.returncode != 0, text[-3000:]
    assert evidence in text, text[-6000:]
    assert "keeps serving on slot" in text and "is marked failed" in text
    assert traffic.report.failed == 0, traffic.report.summary()
    assert get(base_url, "/").json()["version"] == "3.0.0"
    assert status_of(variant) == "failed"
    live = releases()["current_slot"]
    assert all(unit.endswith(f"@{live}.service") for unit in running_units(host)), running_units(host)
    entry = json.loads(host.check_output(f"tail -n 1 {APP_ROOT}/deploy.log"))
    assert entry["result"] == "failed" and entry["release"].startswith(variant)


def test_a_failed_release_is_not_deployed_again_unless_forced(host):
    result = deploy("-e", "deploy_version=v3-unhealthy")
    assert result.returncode != 0 and "failed before" in output(result) and "deploy_force=true" in output(result)
    assert play_recap(result.stdout)[HOST]["changed"] == 0


def test_rollback_returns_to_the_previous_healthy_release_and_a_retry_changes_nothing(host, base_url):
    with Traffic(base_url, SITE, rate=20, slow_every=1) as traffic:
        assert_ok(deploy(playbook="rollback.yml"))
    assert traffic.report.failed == 0, traffic.report.summary()
    assert get(base_url, "/health").json()["version"] == "2.0.0"
    assert status_of("v3") == "failed"  # the archive's v3 release, rolled back from
    again = deploy(playbook="rollback.yml")
    assert_ok(again)
    assert play_recap(again.stdout)[HOST]["changed"] == 0, again.stdout[-3000:]
    assert get(base_url, "/health").json()["version"] == "2.0.0"


def test_a_changed_environment_rolls_out_through_the_same_switch(host, base_url):
    live = releases()["current_slot"]
    env = {"DATABASE_URL": "postgresql+asyncpg://bot:db-Secret-4a1c9e@127.0.0.1:5432/botstack",
           "REDIS_URL": "redis://bot:redis-Secret-77b2d0@127.0.0.1:6379/0",
           "TELEGRAM_WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
    with Traffic(base_url, SITE, rate=20, slow_every=1) as traffic:
        assert_ok(deploy("-e", json.dumps({"app_env": env, "deploy_version": "v2"})))
    assert traffic.report.failed == 0, traffic.report.summary()
    info = releases()
    assert info["current_slot"] != live and info["current"].startswith("v2-")
    pid = host.check_output(f"systemctl show -p MainPID --value botstack-api@{info['current_slot']}.service")
    assert "LOG_LEVEL=WARNING" in host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    # Back to the scenario's environment, the same way.
    assert_ok(deploy("-e", "deploy_version=v2"))


def test_a_rollback_to_a_slot_kept_running_reuses_its_web_processes(host, base_url):
    """deploy_keep_previous_running: the rollback gates the kept processes instead of starting new ones."""
    keep = {"deploy_keep_previous_running": True}
    v2_slot = releases()["current_slot"]
    assert_ok(deploy("-e", json.dumps({**keep, "deploy_version": "v3"})))
    info = releases()
    assert info["current"].startswith("v3-") and info["current_slot"] != v2_slot
    kept_pid = host.check_output(f"systemctl show -p MainPID --value botstack-api@{v2_slot}.service")
    assert kept_pid != "0" and f"botstack-worker@{v2_slot}.service" not in running_units(host)
    with Traffic(base_url, SITE, rate=20, slow_every=1) as traffic:
        result = deploy("-e", json.dumps(keep), playbook="rollback.yml")
    assert_ok(result)
    assert traffic.report.failed == 0, traffic.report.summary()
    assert releases()["current_slot"] == v2_slot and get(base_url, "/health").json()["version"] == "2.0.0"
    assert host.check_output(f"systemctl show -p MainPID --value botstack-api@{v2_slot}.service") == kept_pid
    assert f"botstack-worker@{v2_slot}.service" in running_units(host)
    # Without the setting, the next run stops what runs outside the live slot and changes nothing else.
    assert_ok(deploy("-e", "deploy_version=v2"))
    assert all(unit.endswith(f"@{v2_slot}.service") for unit in running_units(host)), running_units(host)


def test_the_lock_of_another_deploy_is_reported_not_broken(host):
    lock = {"owner": "alice@laptop", "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600)),
            "details": {"release": "v9"}}
    host.run(f"echo '{json.dumps(lock)}' > {APP_ROOT}/.deploy.lock")
    try:
        result = deploy("-e", "deploy_version=v2")
        assert result.returncode != 0
        assert "is held by alice@laptop for 10 min" in output(result) and "deploy_lock_break" in output(result)
        assert play_recap(result.stdout)[HOST]["changed"] == 0
    finally:
        host.run(f"rm -f {APP_ROOT}/.deploy.lock")


def test_a_deploy_killed_at_any_point_never_leaves_nginx_on_a_dead_release(host, base_url):
    rng = random.Random(int(time.time()))
    trials = []
    with Traffic(base_url, SITE, rate=20, slow_every=2) as traffic:
        for trial in range(KILL_TRIALS):
            version = "v1" if trial % 2 == 0 else "v2"
            delay = rng.uniform(0.5, 12.0)
            # Going back and forth between two releases: the older one only with the explicit flag.
            cmd = ["ansible-playbook", "-i", str(molecule_path("MOLECULE_INVENTORY_FILE")),
                   str(PLAYBOOKS / "deploy.yml"), "-e", f"deploy_version={version}", "-e", "deploy_allow_older=true"]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                proc.wait(delay)
                outcome = "finished"
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
                proc.wait()
                outcome = "killed"
            trials.append((version, round(delay, 1), outcome))
            assert get(base_url, "/health").status_code == 200, trials
    assert traffic.report.failed == 0, f"{traffic.report.summary()} trials {trials}"
    assert_ok(deploy("-e", "deploy_version=v2", "-e", "deploy_allow_older=true"))
    info = releases()
    assert info["current"].startswith("v2-") and info["pending_activation"] is None and not info["leftovers"]
    assert all(unit.endswith(f"@{info['current_slot']}.service") for unit in running_units(host))
    assert get(base_url, "/health").json()["version"] == "2.0.0"
    assert not host.file(f"{APP_ROOT}/.deploy.lock").exists


def test_the_scheduler_sent_every_minute_exactly_once(host):
    """Across every deploy above (each moved the scheduler), one tick per minute, none twice."""
    rows = psql(host, "SELECT tick, runs FROM ticks ORDER BY tick").splitlines()
    ticks = dict(row.split("|") for row in rows)
    assert len(ticks) >= 3, rows
    minutes = sorted(ticks)
    first = calendar.timegm(time.strptime(minutes[0], "%Y-%m-%dT%H:%MZ"))
    last = calendar.timegm(time.strptime(minutes[-1], "%Y-%m-%dT%H:%MZ"))
    # While a scheduler that does not start is tried and the previous one restored, none runs.
    boundaries = [first + 60 * i for i in range(int((last - first) / 60) + 1)]
    expected = {time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(at)) for at in boundaries
                if not any(begin <= at <= end for begin, end in NO_SCHEDULER)}
    assert expected <= set(minutes), f"missing minutes: {sorted(expected - set(minutes))}"
    assert all(int(runs) == 1 for runs in ticks.values()), ticks
    for minute in minutes:
        sent = host.check_output(f"redis-cli --user bot --pass redis-Secret-77b2d0 --no-auth-warning "
                                 f"get botapp:schedule:sent:{minute}")
        assert sent == "1", (minute, sent)


@pytest.mark.parametrize(("processes", "fragment"), [
    ([{"name": "api", "kind": "web", "command": "x"}], "a web process needs port"),
    ([{"name": "a", "kind": "singleton", "command": "x"}, {"name": "b", "kind": "singleton", "command": "y"}],
     "only one process per environment may be a singleton"),
    ([{"name": "api", "kind": "web", "port": 8001, "command": " "}], "command is empty"),
    ([{"name": "api", "kind": "daemon", "command": "x"}], "daemon"),
    ([{"name": "api", "kind": "web", "port": 8001, "command": "x", "health": {"path": "health"}}],
     "health.path must start with '/'"),
])
def test_a_bad_process_list_fails_before_anything_changes(host, processes, fragment):
    result = deploy("-e", json.dumps({"app_processes": processes}))
    assert result.returncode != 0 and fragment in output(result), output(result)[-3000:]
    assert play_recap(result.stdout)[HOST]["changed"] == 0


def test_a_version_that_is_not_in_the_repository_fails_before_anything_changes(host):
    result = deploy("-e", f"deploy_version=v{uuid.uuid4().hex[:6]}")
    assert result.returncode != 0 and "is not a tag or branch of /srv/git/botapp.git" in output(result)
    assert play_recap(result.stdout)[HOST]["changed"] == 0
