"""The blue/green release flow on a real host, measured through nginx over TLS.

Tests run in file order: each deploy starts from the state the previous one left.
Converge deployed v1; the repository on the host holds v1, v2 (new dependency, new
column), v3 (code only) and the broken variants (examples/botapp/history).
"""
from __future__ import annotations

import calendar
import html
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
from conftest import (TIMELINE, assert_no_secret_in, container_address, molecule_path, play_recap, record_note,
                      run_module, run_playbook, wait_for)
from traffic import Traffic, webhook

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the scenario's certificate is self-signed
HOST = "deploy-host"
SITE = "bot.botstack.test"
APP_ROOT = "/opt/botstack"
SECRET = "hook-Secret-0f3e9a51c2"
BOT_TOKEN = "5550001111:AAFake-Bot-Token_for-the-deploy-test"
PLAYBOOKS = pathlib.Path(__file__).resolve().parents[3] / "playbooks"
KILL_TRIALS = 4  # benchmarks/deploy.py runs at least 20
SHIPPED: dict = {}  # what earlier tests deployed, for the tests that repeat it
NO_SCHEDULER: list = []  # (start, end) of deploys that tried a scheduler which does not start


@pytest.fixture(scope="module")
def base_url():
    return f"https://{container_address(HOST)}"


def load(base_url, full: bool = False, **kwargs) -> Traffic:
    """The request loop every deploy runs under: GET /health, slow requests in flight, and Telegram-like
    webhook POSTs (secret header, JSON body), each class counted apart. The zero-downtime claims (v2 going live,
    the rollback, the kill trials) run at the benchmark's rate, 20 GETs and 4 webhooks a second; the failure paths
    at 6 and 1, a request every ~0.15 s, which still sees any outage they could cause. At the full rate everywhere
    the test process alone used 576 CPU-seconds in a 2,031-s verify step, besides what nginx and the app spent."""
    rate, webhooks = (20, 4) if full else (6, 1)
    return Traffic(base_url, SITE, rate=rate, kinds=[("webhook", webhooks, webhook(base_url, SITE, SECRET))], **kwargs)


SAMPLER = "/var/log/scheduler-sampler.log"
# A minute sent on time runs within ~60 s of its start, one sent late at the next send: ~120 s, plus a queue.
TICK_LATE_LIMIT = 180


@pytest.fixture(scope="module", autouse=True)
def scheduler_sampler(host):
    """Every 0.2 s, how many scheduler units run (or start, or stop) on the host - seen by systemd, not by the app."""
    host.run("systemctl stop scheduler-sampler.service; rm -f " + SAMPLER)
    host.check_output(
        "systemd-run --unit=scheduler-sampler.service /bin/sh -c 'while :; do "
        "echo \"$(date +%s.%N) $(systemctl list-units --plain --no-legend "
        "--state=active,activating,deactivating,reloading botstack-scheduler@*.service | wc -l)\" >> " + SAMPLER + "; "
        "sleep 0.2; done'")
    yield
    host.run("systemctl stop scheduler-sampler.service")


def host_run_processes(host) -> list[str]:
    """Processes of any deploy run still on the host (their environment names the run)."""
    out = host.run("grep -lsa BOTSTACK_DEPLOY_RUN= /proc/[0-9]*/environ | cut -d/ -f3").stdout
    return [pid for pid in out.split() if pid.isdigit()]


def kill_run_processes(host):
    """A controller killed under the docker connection leaves its module running in the container: kill it too."""
    for pid in host_run_processes(host):
        host.run(f"kill -9 {pid}")


def assert_one_live_slot(host):
    """The live slot runs one API, one worker and one scheduler, nothing else of the app runs, the lock is free."""
    info = releases()
    live = info["current_slot"]
    assert running_units(host) == sorted(f"botstack-{p}@{live}.service" for p in ("api", "scheduler", "worker")), \
        running_units(host)
    assert info["pending_activation"] is None and not info["leftovers"], info
    assert next(r for r in info["releases"] if r["id"] == info["current"])["status"] == "healthy"
    assert not host.file(f"{APP_ROOT}/.deploy.lock").exists


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


# Deploy notifications (deploy_notify_webhooks in molecule.yml): the receiver logs every POST, one JSON line each.
# Entry 1 is Slack-shaped under a secret path, entry 2 JSON, entry 3 a closed port (reported, never fatal).
RECEIVED = "/var/log/webhook.jsonl"
NOTIFY_SECRET = "notify-Token-5c1d"


def received(host) -> int:
    """How many POSTs the receiver logged so far."""
    return int(host.check_output(f"cat {RECEIVED} 2>/dev/null | wc -l"))


def deploy_notifications(host, since: int) -> tuple[list[str], list[dict]]:
    """The deploy notifications received after the first `since` POSTs: the Slack texts and the JSON events."""
    lines = host.check_output(f"tail -n +{since + 1} {RECEIVED} 2>/dev/null || true").splitlines()
    posts = [json.loads(line) for line in lines if line.strip()]
    assert_no_secret_in("\n".join(post["body"] for post in posts), "the deploy notifications")
    texts = [json.loads(post["body"])["text"] for post in posts if post["path"].startswith("/deploys/T000")]
    events = [json.loads(post["body"]) for post in posts if post["path"] == "/deploys/json"]
    return texts, events


def assert_notified(host, since: int, result: subprocess.CompletedProcess, ending: str) -> dict:
    """A run that switched (or tried to) told both webhooks its start and its end, and the closed one's failure
    was reported without failing anything or showing a URL. Returns the end event."""
    texts, events = deploy_notifications(host, since)
    assert [event["event"] for event in events] == ["start", ending], events
    assert len(texts) == 2 and texts[0].startswith("molecule@controller started the "), texts
    start, end = events
    assert (start["app"], start["host"], start["who"]) == ("botstack", HOST, "molecule@controller"), start
    assert end["release"] == start["release"] and end["from"] == start["from"] and end["duration_seconds"] > 0, events
    assert html.unescape(texts[1]) == end["text"], (texts, end)  # the Slack text is escaped for Slack
    # The callback wraps long lines: compared with its whitespace joined.
    said = " ".join(output(result).split())
    assert "to deploy_notify_webhooks entry 3 (counting from 1) failed; the deploy is not affected" in said, said[-3000:]
    assert NOTIFY_SECRET not in output(result) and "127.0.0.1:9/" not in output(result)
    return end


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


def test_the_logs_playbook_shows_each_process_of_the_live_slot_with_its_secrets_masked(host):
    """playbooks/logs.yml: the live slot's journal per process (the worker's answer to the update above), a line
    in which the app printed its database password shown masked, at -vvv too, and the command to follow them."""
    live = releases()["current_slot"]
    # The worker logs the update once its reply went to the (fake) Bot API, a moment after the reply was stored.
    wait_for("the worker's line for the update the test above sent", lambda: "update processed" in host.run(
        f"journalctl --no-pager -u botstack-worker@{live}.service").stdout, timeout=60)
    host.check_output(f"printf 'MESSAGE=settings: DATABASE_URL=postgresql+asyncpg://bot:db-Secret-4a1c9e@127.0.0.1/botstack\\n"
                      f"OBJECT_SYSTEMD_UNIT=botstack-api@{live}.service\\nSYSLOG_IDENTIFIER=botstack-api\\n' "
                      "| logger --journald")
    result = deploy("-vvv", "-e", "logs_lines=400", playbook="logs.yml")
    assert result.returncode == 0, output(result)[-3000:]
    assert_no_secret_in(output(result), "logs.yml -vvv")
    text = result.stdout
    assert f"(item=botstack-api@{live}.service)" in text and f"(item=botstack-worker@{live}.service)" in text
    assert "settings: DATABASE_URL=postgresql+asyncpg://bot:********@127.0.0.1/botstack" in text, text[-3000:]
    assert "update processed" in text, "the worker's line for the update the test above sent"
    assert f"journalctl --follow --output=short-iso --unit=botstack-api@{live}.service" in text
    assert play_recap(text)[HOST]["changed"] == 0
    one = deploy("-e", "logs_process=worker", "-e", "logs_grep=update processed", playbook="logs.yml")
    assert one.returncode == 0 and f"(item=botstack-api@{live}.service)" not in one.stdout, output(one)[-2000:]
    assert "update processed" in one.stdout and "worker started" not in one.stdout, one.stdout[-2000:]
    wrong = deploy("-e", "logs_process=nope", playbook="logs.yml")
    assert wrong.returncode != 0 and "logs_process must name one of api, worker" in output(wrong), output(wrong)[-2000:]


def test_a_check_run_of_a_new_version_says_what_it_would_do_and_changes_nothing(host):
    """The docs say to run --check --diff first: on a version not built yet it reports the switch, fails nothing."""
    before = releases()
    result = deploy("--check", "--diff", "-e", "deploy_version=v2")
    assert_ok(result)
    assert "Would put v2-" in result.stdout and "marked failed" not in output(result)
    assert play_recap(result.stdout)[HOST]["changed"] >= 1
    after = releases()
    assert (after["current"], [r["id"] for r in after["releases"]]) == (before["current"], [r["id"] for r in before["releases"]])


def test_a_version_name_is_resolved_exactly_and_an_ambiguous_one_is_refused(host):
    """rc1 is a tag and a branch on two commits: refused, naming both. (v2, next, is also a branch's suffix:
    refs/heads/backport/v2 points at a crashing commit; the v2 deploy below serves 2.0.0, the tag's.)"""
    result = deploy("-e", "deploy_version=rc1")
    assert result.returncode != 0
    assert "refs/tags/rc1" in output(result) and "refs/heads/rc1" in output(result), output(result)[-3000:]
    assert play_recap(result.stdout)[HOST]["changed"] == 0


# --- releases under load -------------------------------------------------------------

def test_v2_goes_live_under_load_without_a_failed_request_and_a_running_job_finishes_once(host, base_url):
    job = requests.post(base_url + "/api/jobs?seconds=10", headers={"Host": SITE}, verify=False, timeout=10).json()
    time.sleep(1)  # the worker picked it up
    seen = received(host)
    with load(base_url, full=True, slow_every=1, slow_seconds=3) as traffic:
        result = deploy("-e", "deploy_version=v2")
    assert_ok(result)
    success = assert_notified(host, seen, result, "success")
    assert success["release"].startswith("v2-") and success["from"].startswith("v1-"), success
    assert f"{success['release']} is live on {HOST}" in success["text"], success
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


ENV = {"DATABASE_URL": "postgresql+asyncpg://bot:db-Secret-4a1c9e@127.0.0.1:5432/botstack",
       "REDIS_URL": "redis://bot:redis-Secret-77b2d0@127.0.0.1:6379/0", "TELEGRAM_WEBHOOK_SECRET": SECRET,
       "TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": "http://127.0.0.1:8081"}


# What systemd sets for each start of a unit (not the configuration's): left out of the comparisons.
PER_START = ("INVOCATION_ID=", "JOURNAL_STREAM=", "SYSTEMD_EXEC_PID=", "MAINPID=", "MANAGERPID=")


def live_environ(host) -> str:
    """The environment of the live API process, without what systemd sets anew at each start."""
    pid = host.check_output(f"systemctl show -p MainPID --value botstack-api@{releases()['current_slot']}.service")
    lines = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
    return "\n".join(line for line in lines if not line.startswith(PER_START))


def test_the_site_playbook_keeps_the_live_release_and_a_configuration_change_rolls_out_and_back_like_code(
        host, base_url, ephemeral_dir):
    """A configuration run of site.yml's app, proxy and release layers (the others change nothing here) with the
    inventory still naming v1: the live v2 stays, the raised rate limit and the new environment go live on the
    other slot. rollback.yml then returns to the configuration it replaced, on the same release, not failed."""
    live, environ = releases(), sorted(live_environ(host).splitlines())
    changed = {"app_env": dict(ENV, LOG_LEVEL="DEBUG"), "nginx_rate_limit_burst": 2500}
    site = ephemeral_dir / "site-layers.yml"
    site.write_text(json.dumps([
        {"name": "App", "ansible.builtin.import_playbook": str(PLAYBOOKS / "app.yml")},
        {"name": "Proxy", "ansible.builtin.import_playbook": str(PLAYBOOKS / "nginx.yml")},
        # Exactly as site.yml imports it.
        {"name": "Release", "ansible.builtin.import_playbook": str(PLAYBOOKS / "rollout.yml"),
         "vars": {"deploy_action": "deploy", "deploy_keep_live_release": True}}]))
    with load(base_url, slow_every=2) as traffic:
        result = run_playbook(site, "-e", json.dumps(changed))
    assert_ok(result)
    assert traffic.report.failed == 0, traffic.report.summary()
    after = releases()
    assert after["current"] == live["current"] and after["current"].startswith("v2-"), after
    assert after["current_slot"] != live["current_slot"], "the new environment rolls out on the other slot"
    assert "LOG_LEVEL=DEBUG" in live_environ(host)
    # The callback folds long messages: compare with single spaces.
    assert "Kept the live release: deploy_version v1 is shipped by playbooks/deploy.yml" in " ".join(result.stdout.split())
    assert "burst=2500" in host.check_output("cat /etc/nginx/sites-available/botstack.conf")
    assert after["rollback_target"] == live["current"]
    assert after["rollback_config"] == live["slots"][live["current_slot"]]["data"]["config"]
    with load(base_url, slow_every=2) as traffic:
        assert_ok(deploy(playbook="rollback.yml"))
    assert traffic.report.failed == 0, traffic.report.summary()
    back = releases()
    assert (back["current"], back["current_slot"]) == (live["current"], live["current_slot"])
    assert sorted(live_environ(host).splitlines()) == environ, "the environment the release ran with before the change"
    assert status_of("v2") == "healthy"


def test_deploying_a_release_older_than_the_live_one_is_refused_unless_asked(host):
    result = deploy("-e", "deploy_version=v1")
    assert result.returncode != 0 and "older than the live release" in output(result), output(result)[-3000:]
    assert "playbooks/rollback.yml" in output(result) and "deploy_allow_older=true" in output(result)
    assert play_recap(result.stdout)[HOST]["changed"] == 0
    assert releases()["current"].startswith("v2-")


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
    with load(base_url, slow_every=2) as traffic:
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
    seen = received(host)
    result = deploy("-e", json.dumps(dict(SHIPPED["v3"], deploy_hooks={})))
    assert_ok(result)
    assert play_recap(result.stdout)[HOST]["changed"] == 0, result.stdout[-4000:]
    # Nothing went live: nobody is told.
    assert deploy_notifications(host, seen) == ([], []) and "Deploy notification" not in output(result)


TEXTFILES = "/var/lib/prometheus/node-exporter"


def test_a_symlink_planted_in_the_textfile_directory_is_never_followed_by_root(host):
    """The directory is group-writable (the backup units write there): a link at the deploy metrics' names must not
    make root truncate or chmod its target. The deploys below write the metrics (checked after them)."""
    host.check_output("echo precious > /etc/victim && chmod 600 /etc/victim")
    host.check_output(f"ln -sf /etc/victim {TEXTFILES}/.botstack_deploy_botstack.prom.tmp && "
                      f"rm -f {TEXTFILES}/botstack_deploy_botstack.prom && ln -s /etc/victim {TEXTFILES}/botstack_deploy_botstack.prom")


@pytest.mark.parametrize(("variant", "evidence"), [
    # The settings want a longer webhook secret: every process fails at start-up, pydantic printing the value.
    # (v3-crash, an API failing at import, is the benchmark's: v3-leak fails the same way, printing a secret.)
    ("v3-leak", "telegram_webhook_secret"),
    ("v3-unhealthy", "status 500"),
    ("v3-badmigration", 'column "lang" does not exist'),
    # API and worker pass the gate and take traffic; the scheduler crashes after ~1 s of imports.
    ("v3-schedcrash", "cannot import name 'TICK_SCHEDULE'"),
])
def test_a_broken_release_fails_with_evidence_and_the_previous_one_keeps_serving(host, base_url, variant, evidence):
    started = time.time()
    seen = received(host)
    with load(base_url, slow_every=2) as traffic:
        result = deploy("-e", f"deploy_version={variant}", *(["-vvv"] if variant == "v3-leak" else []))
    if variant in ("v3-schedcrash", "v3-leak"):
        NO_SCHEDULER.append((started, time.time()))
    text = output(result)
    assert result.returncode != 0, text[-3000:]
    assert evidence in text, text[-6000:]
    # The app's journal is copied into the evidence: what it printed of its settings is masked, at -vvv too,
    # and so are the release's status reason and the deploy log.
    assert_no_secret_in(text, f"the failed deploy of {variant}")
    reason = next(r for r in releases()["releases"] if r["id"].startswith(variant + "-"))["status_reason"]
    assert_no_secret_in(reason + host.check_output(f"cat {APP_ROOT}/deploy.log"), "the status reason and deploy log")
    if variant == "v3-leak":
        assert "input_value='********'" in text, text[-6000:]
    assert "keeps serving on slot" in text and "is marked failed" in text
    assert traffic.report.failed == 0, traffic.report.summary()
    assert get(base_url, "/").json()["version"] == "3.0.0"
    assert status_of(variant) == "failed"
    live = releases()["current_slot"]
    assert all(unit.endswith(f"@{live}.service") for unit in running_units(host)), running_units(host)
    entry = json.loads(host.check_output(f"tail -n 1 {APP_ROOT}/deploy.log"))
    assert entry["result"] == "failed" and entry["release"].startswith(variant)
    # The webhooks heard of it: the phase, what serves now and the evidence's first line, masked (checked above).
    failure = assert_notified(host, seen, result, "failure")
    assert failure["release"].startswith(variant) and failure["serving"] == failure["from"], failure
    assert failure["phase"] == entry["phase"] and failure["evidence"], failure
    assert f"FAILED in phase {failure['phase']}" in failure["text"], failure


def test_the_planted_symlinks_were_replaced_not_followed(host):
    assert host.check_output("cat /etc/victim") == "precious" and host.file("/etc/victim").mode == 0o600
    metrics = host.file(f"{TEXTFILES}/botstack_deploy_botstack.prom")
    assert metrics.is_file and not metrics.is_symlink and metrics.contains('botstack_deploy_last_result{app="botstack"} 0')


def test_a_failed_release_is_not_deployed_again_unless_forced(host):
    result = deploy("-e", "deploy_version=v3-unhealthy")
    assert result.returncode != 0 and "failed before" in output(result) and "deploy_force=true" in output(result)
    assert play_recap(result.stdout)[HOST]["changed"] == 0


def test_rollback_returns_to_the_previous_healthy_release_and_a_retry_changes_nothing(host, base_url):
    seen = received(host)
    with load(base_url, full=True, slow_every=1) as traffic:
        result = deploy(playbook="rollback.yml")
    assert_ok(result)
    assert traffic.report.failed == 0, traffic.report.summary()
    assert get(base_url, "/health").json()["version"] == "2.0.0"
    assert status_of("v3") == "failed"  # the archive's v3 release, rolled back from
    rollback = assert_notified(host, seen, result, "rollback")
    assert rollback["action"] == "rollback" and rollback["release"].startswith("v2-"), rollback
    assert f"rolled back to {rollback['release']}" in rollback["text"], rollback
    again = deploy(playbook="rollback.yml")
    assert_ok(again)
    assert play_recap(again.stdout)[HOST]["changed"] == 0, again.stdout[-3000:]
    assert get(base_url, "/health").json()["version"] == "2.0.0"


def test_a_configuration_that_breaks_the_new_slot_never_reaches_the_live_one(host, base_url):
    """A typo in REDIS_URL: the new slot's processes crash, the gate fails, the rescue restarts the old workers -
    with their own configuration, not the new one - and the live processes keep theirs when they restart."""
    live = releases()
    bad = dict(ENV, REDIS_URL="redis://bot:redis-Secret-77b2d0@127.0.0.1:6390/0")
    started = time.time()
    with load(base_url, slow_every=2) as traffic:
        result = deploy("-e", json.dumps({"app_env": bad, "deploy_version": "v2"}))
    NO_SCHEDULER.append((started, time.time()))
    assert result.returncode != 0 and "keeps serving on slot" in output(result), output(result)[-3000:]
    assert traffic.report.failed == 0, traffic.report.summary()
    assert_no_secret_in(output(result), "the failed configuration rollout")
    after = releases()
    assert (after["current"], after["current_slot"]) == (live["current"], live["current_slot"])
    assert status_of("v2") == "healthy", "the release is fine: its new configuration was not"
    slot = live["current_slot"]
    for unit in (f"botstack-worker@{slot}.service", f"botstack-api@{slot}.service"):
        host.check_output(f"systemctl kill -s KILL {unit}")
    for _ in range(60):
        if get(base_url, "/health").status_code == 200 and all(
                u.endswith(f"@{slot}.service") for u in running_units(host)) and len(running_units(host)) == 3:
            break
        time.sleep(0.5)
    assert get(base_url, "/health").json()["status"] == "healthy"
    assert "127.0.0.1:6379/0" in live_environ(host) and ":6390/" not in live_environ(host)


def test_a_rollback_to_a_slot_kept_running_reuses_its_web_processes(host, base_url):
    """deploy_keep_previous_running: the rollback gates the kept processes instead of starting new ones."""
    keep = {"deploy_keep_previous_running": True}
    v2_slot = releases()["current_slot"]
    assert_ok(deploy("-e", json.dumps({**keep, "deploy_version": "v3"})))
    info = releases()
    assert info["current"].startswith("v3-") and info["current_slot"] != v2_slot
    kept_pid = host.check_output(f"systemctl show -p MainPID --value botstack-api@{v2_slot}.service")
    assert kept_pid != "0" and f"botstack-worker@{v2_slot}.service" not in running_units(host)
    # The same deploy again changes nothing: the kept slot stays, and with it the instant rollback.
    again = deploy("-e", json.dumps({**keep, "deploy_version": "v3"}))
    assert_ok(again)
    assert play_recap(again.stdout)[HOST]["changed"] == 0, again.stdout[-3000:]
    assert host.check_output(f"systemctl show -p MainPID --value botstack-api@{v2_slot}.service") == kept_pid
    with load(base_url, slow_every=2) as traffic:
        result = deploy("-e", json.dumps(keep), playbook="rollback.yml")
    assert_ok(result)
    assert traffic.report.failed == 0, traffic.report.summary()
    assert releases()["current_slot"] == v2_slot and get(base_url, "/health").json()["version"] == "2.0.0"
    assert host.check_output(f"systemctl show -p MainPID --value botstack-api@{v2_slot}.service") == kept_pid
    assert f"botstack-worker@{v2_slot}.service" in running_units(host)
    # Without the setting, the next run stops what runs outside the live slot and changes nothing else.
    assert_ok(deploy("-e", "deploy_version=v2"))
    assert all(unit.endswith(f"@{v2_slot}.service") for unit in running_units(host)), running_units(host)


def test_the_lock_of_a_live_run_of_another_owner_is_reported_not_broken(host):
    """alice's run holds the lock and one of its processes still runs on the host: refused at once, naming it."""
    run = "20261205T100000Z-alicealice01"
    lock = {"owner": "alice@laptop", "run_id": run, "pid": 1, "details": {"release": "v9"},
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))}
    host.check_output(f"systemd-run --unit=alice-deploy.service --setenv=BOTSTACK_DEPLOY_RUN={run} sleep 600")
    host.run(f"echo '{json.dumps(lock)}' > {APP_ROOT}/.deploy.lock")
    try:
        result = deploy("-e", "deploy_version=v2")
        assert result.returncode != 0
        assert "is held by alice@laptop for 10 min" in output(result) and "sleep 600" in output(result), output(result)[-3000:]
        assert play_recap(result.stdout)[HOST]["changed"] == 0
        assert json.loads(host.check_output(f"cat {APP_ROOT}/.deploy.lock"))["run_id"] == run
    finally:
        host.run(f"systemctl stop alice-deploy.service; rm -f {APP_ROOT}/.deploy.lock")


def test_a_second_run_of_the_same_owner_waits_for_the_first_instead_of_taking_its_lock(host, ephemeral_dir):
    """Two terminals (or a cron job and a retry) of one owner: the second finds the first alive and is refused; the
    first finishes undisturbed. The first pauses in a hook between gate and switch to be found holding the lock."""
    hook = ephemeral_dir / "hook-pause.yml"
    hook.write_text(json.dumps([{"name": "Pause", "ansible.builtin.pause": {"seconds": 15}}]))
    extra = json.dumps({"deploy_version": "v3", "deploy_force": True, "deploy_hooks": {"before_switch": str(hook)}})
    first = subprocess.Popen(["ansible-playbook", "-i", str(molecule_path("MOLECULE_INVENTORY_FILE")),
                              str(PLAYBOOKS / "deploy.yml"), "-e", extra], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(120):
            if host.file(f"{APP_ROOT}/.deploy.lock").exists:
                break
            time.sleep(0.5)
        second = deploy("-e", "deploy_version=v3")
        assert second.returncode != 0 and "molecule@controller" in output(second), output(second)[-3000:]
        assert play_recap(second.stdout)[HOST]["changed"] == 0
    finally:
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-4000:]
    assert releases()["current"].startswith("v3-")
    assert_one_live_slot(host)


def test_cleanup_stops_only_this_apps_units_and_never_a_migration(host):
    """Units of app botstack-admin (its names start like ours) and a migration of a killed run keep running;
    a leftover worker of ours stops."""
    starts = {"botstack-admin-api@blue.service": "botstack-admin web",
              "botstack-migrate@orphan.service": "botstack migrate",
              "botstack-worker@orphan.service": "botstack worker"}
    for unit, env in starts.items():
        app, kind = env.split()
        host.check_output(f"systemd-run --unit={unit} --setenv=BOTSTACK_APP={app} --setenv=BOTSTACK_KIND={kind} sleep 600")
    try:
        assert_ok(deploy("-e", "deploy_version=v2", "-e", "deploy_allow_older=true"))
        assert host.service("botstack-admin-api@blue.service").is_running
        assert host.service("botstack-migrate@orphan.service").is_running
        assert not host.service("botstack-worker@orphan.service").is_running
    finally:
        host.run("systemctl stop " + " ".join(starts))


def git_release_id(host, tag: str) -> str:
    """The release a tag of the host's repository deploys as (an archive of the same tag has another id)."""
    return f"{tag}-" + host.check_output(f"git -C /srv/git/botapp.git rev-parse {tag}^{{commit}}")[:12]


def test_a_release_whose_public_path_fails_is_not_called_healthy_and_the_previous_one_serves(host, base_url):
    """The deploy points an upstream nginx does not serve (as when the proxy and the deploy disagree on the app's
    name - a user's first converge answered 502): the gate on the port passes, the public path does not reach the
    new slot, so the release is not healthy, the previous one serves, and the play says why."""
    started = time.time()
    with load(base_url, slow_every=2) as traffic:
        result = deploy("-e", "deploy_version=v3", "-e", "deploy_nginx_app_name=elsewhere")
    NO_SCHEDULER.append((started, time.time()))
    host.run("rm -rf /etc/nginx/botstack/upstream-elsewhere.d")
    assert result.returncode != 0 and "X-Botstack-Upstream" in output(result), output(result)[-4000:]
    assert "keeps serving on slot" in output(result)
    assert traffic.report.failed == 0, traffic.report.summary()
    v3 = git_release_id(host, "v3")
    assert next(r for r in releases()["releases"] if r["id"] == v3)["status"] == "failed"
    assert get(base_url, "/health").json()["version"] == "2.0.0"
    assert_one_live_slot(host)


def test_a_deploy_killed_at_any_point_never_leaves_nginx_on_a_dead_release(host, base_url):
    rng = random.Random(int(time.time()))
    trials = []
    with load(base_url, full=True, slow_every=2) as traffic:
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
                # Over SSH the module dies with its session; under the docker connection it runs on: kill it too.
                kill_run_processes(host)
                outcome = "killed"
            trials.append((version, round(delay, 1), outcome))
            assert get(base_url, "/health").status_code == 200, trials
            if outcome == "finished" and proc.returncode == 0:
                # A run that repaired a killed one ends where one clean run ends.
                assert_one_live_slot(host)
    assert traffic.report.failed == 0, f"{traffic.report.summary()} trials {trials}"
    assert_ok(deploy("-e", "deploy_version=v2", "-e", "deploy_allow_older=true"))
    assert releases()["current"].startswith("v2-") and get(base_url, "/health").json()["version"] == "2.0.0"
    assert_one_live_slot(host)
    assert not host_run_processes(host)


def test_never_two_schedulers_ran_at_once(host):
    """Seen by systemd every 0.2 s across every deploy, rollback, kill and rescue above, whatever the app does."""
    samples = [line.split() for line in host.check_output(f"cat {SAMPLER}").splitlines() if len(line.split()) == 2]
    # A look every 0.2 s or so, all along the deploys above (more than 10 minutes of them).
    assert len(samples) > 300 and float(samples[-1][0]) - float(samples[0][0]) > 600, (len(samples), samples[:1], samples[-1:])
    twice = [sample for sample in samples if int(sample[1]) > 1]
    assert not twice, f"{len(twice)} samples saw two scheduler units, first {twice[:5]}"


def minute_evidence(host, minute: str) -> dict:
    """What happened to one minute's tick: the scheduler's claim and send, the tests that ran then, the journal."""
    at = calendar.timegm(time.strptime(minute, "%Y-%m-%dT%H:%MZ"))
    redis = "redis-cli --user bot --pass redis-Secret-77b2d0 --no-auth-warning get "
    journal = host.run("journalctl -o short-iso-precise --no-pager -u 'botstack-*' --since @%d --until @%d "
                       "| grep -Ei 'tick|schedul|stopp|start|claim|sen[dt]' | tail -n 60", at - 20, at + 80).stdout
    return {"minute": minute,
            "claimed": host.run(redis + f"botapp:schedule:botapp.tick:{minute}").stdout.strip(),
            "sent": host.run(redis + f"botapp:schedule:sent:{minute}").stdout.strip(),
            "tests": [name for name, begin, end in TIMELINE if begin <= at + 60 and end >= at],
            "journal": journal.splitlines()}


def test_the_scheduler_sent_every_minute_exactly_once(host):
    """Across every deploy above (each moved the scheduler), one tick per minute, none twice, none long late.

    The sample's scheduler sends a minute its loop skipped (a busy host) late, at its next send: the lateness
    bound is what keeps a handover that left no scheduler for minutes from passing as caught up."""
    rows = psql(host, "SELECT tick, runs, extract(epoch FROM ran_at)::bigint FROM ticks ORDER BY tick").splitlines()
    ticks = {tick: (int(runs), int(ran_at)) for tick, runs, ran_at in (row.split("|") for row in rows)}
    assert len(ticks) >= 3, rows
    minutes = sorted(ticks)
    first = calendar.timegm(time.strptime(minutes[0], "%Y-%m-%dT%H:%MZ"))
    last = calendar.timegm(time.strptime(minutes[-1], "%Y-%m-%dT%H:%MZ"))
    # While a scheduler that does not start is tried and the previous one restored, none runs.
    boundaries = [first + 60 * i for i in range(int((last - first) / 60) + 1)]
    expected = {time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(at)) for at in boundaries
                if not any(begin <= at <= end for begin, end in NO_SCHEDULER)}
    missing = sorted(expected - set(minutes))
    if missing:  # kept where a failure's message is cut short
        record_note("tick evidence " + json.dumps([minute_evidence(host, m) for m in missing]))
    assert not missing, f"missing minutes: {[minute_evidence(host, m) for m in missing]}"
    late = {minute: ticks[minute][1] - calendar.timegm(time.strptime(minute, "%Y-%m-%dT%H:%MZ"))
            for minute in sorted(expected)}
    record_note(f"ticks: {len(expected)} minutes, latest ran {max(late.values())} s after its minute began")
    assert max(late.values()) <= TICK_LATE_LIMIT, {m: s for m, s in late.items() if s > TICK_LATE_LIMIT}
    twice = [minute for minute in minutes if ticks[minute][0] != 1]
    if twice:  # which workers ran it, and when: the journal of each, kept where a failure's message is cut short
        record_note("doubled tick evidence " + json.dumps([minute_evidence(host, m) for m in twice]))
    assert not twice, f"ticks run more than once: {[dict(minute_evidence(host, m), runs=ticks[m][0]) for m in twice]}"
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


def test_a_bad_notification_webhook_is_refused_by_its_number_without_its_url(host):
    """An entry with an ftp:// URL (its path a secret): refused before anything changes, the URL never shown."""
    hooks = [{"url": f"http://127.0.0.1:8099/deploys/T000-{NOTIFY_SECRET}"},
             {"url": f"ftp://127.0.0.1/{NOTIFY_SECRET}", "format": "json"}, {"url": "https://x.test/", "events": ["end"]}]
    seen = received(host)
    result = deploy("-e", json.dumps({"deploy_notify_webhooks": hooks, "deploy_version": "v2"}), "-vvv")
    text = " ".join(output(result).split())
    assert result.returncode != 0 and "deploy_notify_webhooks entries 2, 3 (counting from 1) need url" in text, text[-3000:]
    assert play_recap(result.stdout)[HOST]["changed"] == 0
    assert NOTIFY_SECRET not in output(result) and deploy_notifications(host, seen) == ([], [])
