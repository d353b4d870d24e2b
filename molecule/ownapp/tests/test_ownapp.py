"""Two apps nobody here tailored, deployed by inventory variables alone, measured through nginx over TLS.

Tests run in file order, each app's after the other's: each step starts from the state the previous
one left. Converge deployed v1 of both: the guestbook (a Django monorepo, its backend/ pulled over SSH
with a deploy key from own-git) and notes (a uv project in a src layout, from an archive built on the
controller). Every release step runs under a request loop that includes POSTs, counted per class.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import pathlib
import re
import subprocess
import tarfile
import threading
import time

import pytest
import requests
import testinfra
import urllib3
import yaml
from conftest import container_address, molecule_path, play_recap, run_module, run_playbook
from conftest import test_secrets as known_secrets  # renamed: pytest would collect it as a test
from traffic import Traffic

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the scenario's certificates are self-signed
PLAYBOOKS = pathlib.Path(__file__).resolve().parents[3] / "playbooks"
CONVERGE = pathlib.Path(__file__).resolve().parents[1] / "converge.yml"
FIGURES: dict = {}
PS_SAMPLES: list = []  # git and ssh command lines on own-django, sampled during the guestbook's v2 deploy


# Compared and hashed by identity: one object per app (the cached helpers take it).
@dataclasses.dataclass(frozen=True, eq=False)
class App:
    name: str
    host: str
    site: str
    health: str
    web_unit: str
    column: tuple  # (table, column) the v2 migration adds
    crash_cause: str  # what the broken v2-crash prints when it fails to start
    env_change: dict  # a configuration change rolled out by the converge playbook

    @property
    def root(self) -> str:
        return f"/opt/{self.name}"


APPS = {
    "guestbook": App("guestbook", "own-django", "guestbook.ownapp.test", "/healthz", "guestbook-web",
                     ("entries_entry", "mood"), "ImproperlyConfigured", {"DJANGO_LOG_LEVEL": "WARNING"}),
    "notes": App("notes", "own-notes", "notes.ownapp.test", "/api/v1/utils/health-check/", "notes-api",
                 ("notes", "html"), "ValidationError", {"NOTES_SQL_ECHO": "false"}),
}
each_app = pytest.mark.parametrize("app", [pytest.param(app, id=name) for name, app in APPS.items()])


# --- helpers ------------------------------------------------------------------------------

@functools.cache
def remote(app: App):
    return testinfra.get_host(f"ansible://{app.host}", ansible_inventory=str(molecule_path("MOLECULE_INVENTORY_FILE")))


@functools.cache
def base_url(app: App) -> str:
    return f"https://{container_address(app.host)}"


def get(app: App, path: str, host: str | None = None, **kwargs) -> requests.Response:
    return requests.get(base_url(app) + path, headers={"Host": host or app.site}, verify=False, timeout=15, **kwargs)


def releases(app: App) -> dict:
    return run_module(app.host, "botstack.deploy.release_info", {"app_root": app.root})


def release_of(app: App, version: str) -> dict:
    """The release of a version (ids are <version>-<12 hex of the commit or the archive's sha256>)."""
    return next(r for r in releases(app)["releases"] if re.fullmatch(re.escape(version) + r"-[0-9a-f]{12}", r["id"]))


def psql(app: App, sql: str) -> str:
    return remote(app).check_output(f"runuser -u postgres -- psql -d {app.name} -Atc {json.dumps(sql)}")


def live_environment(app: App) -> set[str]:
    """NAME=value lines of the live web unit's main process (read, never printed: they hold secrets)."""
    slot = releases(app)["current_slot"]
    pid = remote(app).check_output(f"systemctl show -p MainPID --value {app.web_unit}@{slot}.service")
    return set(remote(app).check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines())


@functools.cache
def deploy_key_lines() -> tuple[str, ...]:
    """The deploy key's private material (its base64 lines), a secret like the inventory's."""
    text = (molecule_path("MOLECULE_EPHEMERAL_DIRECTORY") / "deploy_key").read_text()
    return tuple(line for line in text.splitlines() if line and not line.startswith("-----"))


def secrets() -> list[str]:
    return known_secrets() + list(deploy_key_lines())


def leaked(text: str) -> dict:
    """Which secrets (by position, never by value) a text holds."""
    return {f"secret #{i}": text.count(s) for i, s in enumerate(secrets()) if s in text}


def archive(version: str) -> pathlib.Path:
    return molecule_path("MOLECULE_EPHEMERAL_DIRECTORY") / f"notes-{version}.tar.gz"


def ship(app: App, version: str) -> list[str]:
    """The extra arguments that deploy a version of the app (notes: from its archive)."""
    if app.name == "notes":
        return ["-e", json.dumps({"deploy_source": "archive", "deploy_archive": str(archive(version)),
                                  "deploy_version": version})]
    return ["-e", f"deploy_version={version}"]


def run(app: App, playbook: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """A playbook on the app's host alone, and its wall time."""
    started = time.monotonic()
    result = run_playbook(PLAYBOOKS / playbook, "--limit", app.host, *args)
    return result, time.monotonic() - started


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def assert_ok(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def assert_no_failed_request(traffic: Traffic):
    report = traffic.report
    assert report.total > 0 and set(report.sent_by_class) == {"get", "post"}, report.summary()
    assert report.failed == 0 and not +report.failed_by_class, report.summary()


def figure(capsys, app: App, what: str, seconds: float, traffic: Traffic, reports_dir: pathlib.Path):
    """A figure for the lead's report: printed past pytest's capture, and kept in reports/ownapp/figures.json."""
    report = traffic.report
    FIGURES[f"{app.name} {what}"] = {"seconds": round(seconds, 1), "requests": report.total, "failed": report.failed,
                                     "by_class": {k: {"sent": v, "failed": report.failed_by_class[k]}
                                                  for k, v in report.sent_by_class.items()}}
    (reports_dir / "figures.json").write_text(json.dumps(FIGURES, indent=2))
    with capsys.disabled():
        print(f"\nFIGURE {app.name} {what} {seconds:.1f} s, {report.total} requests, {report.failed} failed")
        print("  by class (sent/failed): " + ", ".join(f"{k} {v}/{report.failed_by_class[k]}"
                                                        for k, v in sorted(report.sent_by_class.items())))


@dataclasses.dataclass
class Outcome:
    """A request that answered but not as expected, counted as failed by the request loop."""
    status_code: int
    text: str


def guestbook_entry(app: App):
    """A visitor signing the guestbook: GET / for the CSRF token, then POST the form (302 back to /)."""
    counter, origin = itertools.count(), f"https://{app.site}"

    def send(session: requests.Session):
        page = session.get(base_url(app) + "/", headers={"Host": app.site}, verify=False, timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if page.status_code != 200 or not token:
            return Outcome(page.status_code if page.status_code >= 400 else 590, f"GET / gave no form: {page.text[:150]}")
        n = next(counter)
        response = session.post(base_url(app) + "/", allow_redirects=False, verify=False, timeout=10,
                                data={"csrfmiddlewaretoken": token.group(1), "name": f"load {n}", "message": f"entry {n}"},
                                headers={"Host": app.site, "Origin": origin, "Referer": origin + "/"})
        if response.status_code == 302:
            return response
        return Outcome(response.status_code if response.status_code >= 400 else 591,
                       f"POST / answered {response.status_code}, not 302: {response.text[:150]}")
    return send


def new_note(app: App):
    """A client creating a note through the API (201)."""
    counter = itertools.count()

    def send(session: requests.Session):
        response = session.post(base_url(app) + "/api/v1/notes/", json={"text": f"note {next(counter)}"},
                                headers={"Host": app.site}, verify=False, timeout=10)
        if response.status_code == 201:
            return response
        return Outcome(response.status_code if response.status_code >= 400 else 591,
                       f"POST answered {response.status_code}, not 201: {response.text[:150]}")
    return send


def load(app: App, rate: float = 10, posts: float = 2) -> Traffic:
    """GETs of the health path (they carry the version) and POSTs that write to the database, per second."""
    post = guestbook_entry(app) if app.name == "guestbook" else new_note(app)
    return Traffic(base_url(app), app.site, rate=rate, path=app.health, slow_every=0, kinds=[("post", posts, post)])


class ProcessSampler(threading.Thread):
    """git and ssh command lines on a host, sampled every 0.2 s while a deploy runs, by one shell loop on the host
    (one `docker exec`, not one per sample); it ends when told to, or after ten minutes."""

    def __init__(self, container: str, into: list):
        super().__init__(daemon=True)
        self.container, self.into = container, into
        self.flag = f"/run/ownapp-sampler-{int(time.time() * 1000)}"
        loop = (f"end=$(($(date +%s) + 600)); while [ ! -e {self.flag} ] && [ $(date +%s) -lt $end ]; do "
                "ps -eo args | grep -E '(^|[ /])(git|ssh)( |$)' | grep -v grep; sleep 0.2; done; rm -f " + self.flag)
        self.process = subprocess.Popen(["docker", "exec", container, "sh", "-c", loop], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)

    def run(self):
        for line in self.process.stdout:
            self.into.append(line.rstrip("\n"))

    def finish(self):
        subprocess.run(["docker", "exec", self.container, "touch", self.flag], check=False)
        self.process.wait(timeout=30)
        self.join(timeout=30)


# --- 1. the first release -------------------------------------------------------------------

@each_app
def test_v1_serves_through_nginx_over_tls_after_its_gate(app):
    response = get(app, app.health)
    assert response.status_code == 200 and response.json() == {"status": "ok", "version": "1.0.0"}, response.text
    assert requests.get(base_url(app).replace("https", "http") + app.health, headers={"Host": app.site},
                        allow_redirects=False, timeout=10).status_code == 301
    info = releases(app)
    assert info["current"].startswith("v1-") and release_of(app, "v1")["status"] == "healthy", info
    if app.name == "guestbook":
        # ALLOWED_HOSTS is enforced (Django answers 400 to another name) and the gate passed with the site's name.
        other = get(app, app.health, host="elsewhere.ownapp.test")
        assert other.status_code == 400 and "Bad Request" in other.text, (other.status_code, other.text[:300])
        css = get(app, "/static/entries/site.css")
        # nginx serves it (Django does not with DEBUG off), from the live release's staticfiles/.
        assert css.status_code == 200 and "guestbook-css-v1" in css.text
        assert css.headers.get("Cache-Control") == "max-age=604800", css.headers
    else:
        created = requests.post(base_url(app) + "/api/v1/notes/", json={"text": "first"}, headers={"Host": app.site},
                                verify=False, timeout=10)
        assert created.status_code == 201 and created.json()["text"] == "first"


# --- 2. a new version -----------------------------------------------------------------------

@each_app
def test_v2_goes_live_without_a_failed_request_and_migrates(app, capsys, reports_dir):
    # The guestbook's deploy fetches over SSH: which command lines ran is checked in the last test.
    sampler = ProcessSampler(app.host, PS_SAMPLES) if app.name == "guestbook" else None
    with load(app) as traffic:
        if sampler:
            sampler.start()
        try:
            result, seconds = run(app, "deploy.yml", *ship(app, "v2"))
        finally:
            # Before the loop ends: it waits for every other thread of the process to end.
            if sampler:
                sampler.finish()
    figure(capsys, app, "deploy", seconds, traffic, reports_dir)
    assert_ok(result)
    assert_no_failed_request(traffic)
    assert get(app, app.health).json()["version"] == "2.0.0"
    assert release_of(app, "v2")["status"] == "healthy"
    table, column = app.column
    assert psql(app, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' "
                     f"AND column_name = '{column}'") == column
    if app.name == "guestbook":
        css = get(app, "/static/entries/site.css").text
        assert "guestbook-css-v2" in css and "guestbook-css-v1" not in css
    else:
        created = requests.post(base_url(app) + "/api/v1/notes/", json={"text": "*two*"}, headers={"Host": app.site},
                                verify=False, timeout=10)
        assert created.status_code == 201 and created.json()["html"] == "<p><em>two</em></p>"


# --- 3. a broken release that prints its secrets --------------------------------------------

@each_app
def test_a_release_that_crashes_fails_with_its_cause_keeps_v2_serving_and_prints_no_secret(app):
    with load(app, rate=4, posts=1) as traffic:
        result, _ = run(app, "deploy.yml", "-vvv", *ship(app, "v2-crash"))
    text = output(result)
    assert result.returncode != 0, text[-3000:]
    # The secrets first: a failing assertion below prints the output's tail.
    assert not leaked(text), f"the failed deploy printed secrets at -vvv: {leaked(text)}"
    assert app.crash_cause in text, text[-6000:]
    assert "keeps serving on slot" in text and "is marked failed" in text, text[-4000:]
    assert_no_failed_request(traffic)
    assert get(app, app.health).json()["version"] == "2.0.0"
    crashed = release_of(app, "v2-crash")
    assert crashed["status"] == "failed"
    assert not leaked(json.dumps(crashed)), f"the release's record holds secrets: {leaked(json.dumps(crashed))}"
    log = remote(app).check_output(f"cat {app.root}/deploy.log")
    assert not leaked(log), f"{app.root}/deploy.log holds secrets: {leaked(log)}"
    assert json.loads(log.splitlines()[-1])["result"] == "failed"


# --- 4. back to the previous release --------------------------------------------------------

@each_app
def test_rollback_returns_to_v1_without_a_failed_request(app, capsys, reports_dir):
    with load(app) as traffic:
        result, seconds = run(app, "rollback.yml")
    figure(capsys, app, "rollback", seconds, traffic, reports_dir)
    assert_ok(result)
    assert_no_failed_request(traffic)
    assert get(app, app.health).json()["version"] == "1.0.0"
    assert releases(app)["current"] == release_of(app, "v1")["id"]
    if app.name == "guestbook":
        assert "guestbook-css-v1" in get(app, "/static/entries/site.css").text


# --- 5. a change of configuration through the converge playbook (site.yml) -------------------

def inventory_env(app: App) -> dict:
    """The app_env the scenario's inventory gives the host, as written (its values still templates)."""
    host_vars = molecule_path("MOLECULE_INVENTORY_FILE").parent / "host_vars" / app.host
    return yaml.safe_load(host_vars.read_text())["app_env"]


def under_load(*args: str, playbook: pathlib.Path = CONVERGE) -> tuple[subprocess.CompletedProcess, dict, float]:
    """A playbook over both apps, each under a lighter request loop (a converge is long, and both apps' processes
    share the machine with it), and its wall time."""
    loops = {name: load(app, rate=4, posts=1) for name, app in APPS.items()}
    for traffic in loops.values():
        traffic.__enter__()
    started = time.monotonic()
    try:
        result = run_playbook(playbook, *args)
    finally:
        seconds = time.monotonic() - started
        # Every loop told to stop first: each one's exit waits until the process has no other thread.
        for traffic in loops.values():
            traffic._stop.set()
        for traffic in loops.values():
            traffic.__exit__(None, None, None)
    return result, loops, seconds


def test_a_changed_environment_rolls_out_through_the_converge_keeping_the_live_release(capsys, reports_dir):
    before = {name: releases(app)["current"] for name, app in APPS.items()}
    # As a user editing the inventory and re-running site.yml: app_env changed on each host, and
    # deploy_version bumped (site.yml ships no new version once one is live: playbooks/deploy.yml does).
    changed = {app.host: dict(inventory_env(app), **app.env_change) for app in APPS.values()}
    extra = {"__ownapp_env": changed, "app_env": "{{ __ownapp_env.get(inventory_hostname, {}) }}",
             "deploy_version": "v2", "deploy_archive": str(archive("v2"))}
    result, loops, seconds = under_load("-e", json.dumps(extra))
    for name, app in APPS.items():
        figure(capsys, app, "configuration change (converge, both apps)", seconds, loops[name], reports_dir)
    assert_ok(result)
    assert not leaked(output(result)), leaked(output(result))
    assert output(result).count("Kept the live release") == len(APPS), output(result)[-6000:]
    for name, app in APPS.items():
        assert releases(app)["current"] == before[name]
        assert_no_failed_request(loops[name])
        env = live_environment(app)
        wanted = [f"{k}={v}" for k, v in app.env_change.items()]
        assert all(line in env for line in wanted), f"{wanted} not in the environment of {app.name}'s live web process"

    # The inventory's own configuration again, shipped by the deploy playbook (the same release, its own
    # version in the inventory).
    result, loops, seconds = under_load(playbook=PLAYBOOKS / "deploy.yml")
    for name, app in APPS.items():
        figure(capsys, app, "configuration back (deploy.yml, both apps)", seconds, loops[name], reports_dir)
    assert_ok(result)
    for name, app in APPS.items():
        assert releases(app)["current"] == before[name]
        assert_no_failed_request(loops[name])
        env = live_environment(app)
        assert not any(line.split("=")[0] in app.env_change for line in env), f"{app.name} still runs with the change"


# --- 6. bad input -----------------------------------------------------------------------------

def editable_archive(tmp_path: pathlib.Path) -> pathlib.Path:
    """notes v2 with a requirements.txt that installs the project editable (`-e .`), as many projects ship one."""
    out = tmp_path / "notes-v2-editable.tar.gz"
    with tarfile.open(archive("v2")) as source, tarfile.open(out, "w:gz") as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        body = b"-e .\n"
        info = tarfile.TarInfo("notes-v2/requirements.txt")
        info.size, info.mode, info.mtime = len(body), 0o644, 1770000000
        target.addfile(info, io.BytesIO(body))
    return out


@pytest.mark.parametrize(("app_name", "case", "variable"), [
    ("guestbook", {"deploy_git_known_hosts": ""}, "deploy_git_known_hosts"),
    ("guestbook", {"deploy_git_subdir": "../x"}, "deploy_git_subdir"),
], ids=["known-hosts-empty", "subdir-outside"])
def test_bad_input_fails_before_anything_changes_naming_the_variable(app_name, case, variable, tmp_path):
    app = APPS[app_name]
    live = releases(app)["current"]
    result, _ = run(app, "deploy.yml", "-vvv", "-e", json.dumps(dict(case, deploy_version="v2")))
    text = output(result)
    assert result.returncode != 0, text[-3000:]
    assert not leaked(text), f"printed secrets at -vvv: {leaked(text)}"
    assert variable in text, text[-5000:]
    assert play_recap(result.stdout)[app.host]["changed"] == 0, result.stdout[-5000:]
    assert releases(app)["current"] == live


def test_an_editable_requirement_is_refused_naming_the_variable_and_nothing_live_changes(tmp_path):
    """`-e .` is read from the release's own lock file, so the release exists (pending, never built wrong) when it is
    refused; nothing that serves changes."""
    app = APPS["notes"]
    live = releases(app)
    case = {"deploy_source": "archive", "deploy_archive": str(editable_archive(tmp_path)),
            "deploy_version": "v2-editable", "deploy_requirements_file": "requirements.txt"}
    result, _ = run(app, "deploy.yml", "-vvv", "-e", json.dumps(case))
    text = " ".join(output(result).split())
    assert result.returncode != 0 and "editable" in text and "deploy_requirements_file" in text, text[-5000:]
    assert "deploy_install_project" in text and not leaked(text)
    after = releases(app)
    assert (after["current"], after["current_slot"]) == (live["current"], live["current_slot"])
    assert all(r["status"] == "pending" for r in after["releases"] if r["id"].startswith("v2-editable-"))


# --- 7. the deploy key stays where it was written ----------------------------------------------

def test_the_deploy_key_reaches_neither_the_releases_nor_the_clone_nor_a_command_line(capsys):
    app = APPS["guestbook"]
    host = remote(app)
    key = max(deploy_key_lines(), key=len)
    found = host.run(f"grep -rlF -e {key} {app.root} /var/cache/botstack/{app.name}/repo")
    assert found.rc == 1 and not found.stdout, f"the deploy key's material is in {found.stdout.split()}"
    config = host.check_output(f"cat /var/cache/botstack/{app.name}/repo/.git/config")
    assert "url = ssh://git@own-git/srv/git/guestbook.git" in config and not leaked(config), config
    written = host.file(f"/var/cache/botstack/{app.name}/auth/deploy_key")
    assert (written.user, written.group, written.mode) == ("root", "root", 0o600)
    assert not host.file(f"{app.root}/current/.git").exists
    # No token either: this repository is reached over SSH, so the URL carries none.
    assert not leaked("\n".join(PS_SAMPLES)), "a process's command line held the deploy key"
    programs = sorted({line.split()[0] for line in PS_SAMPLES if line.strip()})
    with capsys.disabled():
        print(f"\n{len(PS_SAMPLES)} git/ssh command lines sampled during the guestbook's v2 deploy: {programs}")
