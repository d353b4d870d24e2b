"""Helpers shared by every scenario's testinfra verify step.

Molecule runs pytest with the scenario's tests/ and molecule/shared/tests/, so
this file (their common parent) is loaded for all of them.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import time

import pytest

RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.M,
)


def molecule_path(name: str) -> pathlib.Path:
    """A path from the environment molecule gives its verifier."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this through `molecule verify`")
    return pathlib.Path(value)


TIMINGS = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "test-logs" / "timings.log"


def record_note(text: str) -> None:
    """One line in .cache/test-logs/timings.log, stamped with the time and the scenario."""
    try:
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        with TIMINGS.open("a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {os.environ.get('MOLECULE_SCENARIO_NAME', '-')} {text}\n")
    except OSError:
        pass


def record_time(kind: str, what: str, started: float) -> None:
    """Where a scenario's time goes: one line per test, wait and playbook run."""
    record_note(f"{time.monotonic() - started:7.1f} s {kind} {what}")


TIMELINE: list[tuple[str, float, float]] = []  # (test, wall-clock start, end) of this session's tests


@pytest.fixture(autouse=True)
def _test_timeline(request):
    """Each test's start and end: in timings.log, and for checks that must tell which test ran when."""
    started, wall = time.monotonic(), time.time()
    yield
    TIMELINE.append((request.node.name, wall, time.time()))
    record_time("test", request.node.name, started)


def run_playbook(playbook: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """Run a playbook against the scenario's inventory, as molecule would."""
    inventory = molecule_path("MOLECULE_INVENTORY_FILE")
    cmd = ["ansible-playbook", "-i", str(inventory), str(playbook), *args]
    started = time.monotonic()
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        record_time("playbook", playbook.name, started)  # not its arguments: some carry secrets


def test_secrets() -> list[str]:
    """The scenario's known secret values (verifier env BOTSTACK_TEST_SECRETS, comma-separated)."""
    # Folded YAML (>-) joins its lines with a space: each value is stripped.
    return [v.strip() for v in os.environ.get("BOTSTACK_TEST_SECRETS", "").split(",") if v.strip()]


def assert_no_secret_in(output: str, what: str) -> None:
    """The project's goal: 0 occurrences of a secret in any output, at any verbosity."""
    leaked = {secret: output.count(secret) for secret in test_secrets() if secret in output}
    assert not leaked, f"{what} printed secrets (occurrences: {leaked})"


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """Per-host counters from a PLAY RECAP."""
    return {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(output)
    }


def wait_for(what: str, probe, timeout: float = 120, every: float = 2):
    """probe() until it returns something truthy (returned), or fail naming what and the last answer."""
    started = time.monotonic()
    deadline = started + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            record_time("wait", what, started)
            return last
        time.sleep(every)
    record_time("wait-timeout", what, started)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last seen: {last!r})")


def slack_alerts(host, path_prefix: str = "/alerts/") -> list[dict]:
    """Slack-compatible bodies the scenario's webhook receiver logged (one JSON request per line)."""
    text = host.run("cat /var/log/webhook.jsonl").stdout
    requests = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(r["body"]) for r in requests if r["path"].startswith(path_prefix)]


def slack_notified(host, alert: str, status: str, after: int) -> list:
    """Alerts past the first `after` whose title names the alert and status (FIRING or RESOLVED)."""
    return [n for n in slack_alerts(host)[after:]
            if any(f"{status}: {alert}" in (a.get("title") or "") for a in n.get("attachments", []))]


def container_address(name: str) -> str:
    """IP address of a test container on its docker network."""
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", name],
        capture_output=True, text=True, check=True,
    ).stdout
    networks = json.loads(out)
    return next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))


def run_module(host_name: str, module: str, args: dict, check: bool = False) -> dict:
    """Run one module on a scenario host through ansible's json callback.

    testinfra's host.ansible() reads the tree callback, which no longer carries
    "failed" on ansible-core 2.19+; the json callback does.
    """
    cmd = ["ansible", host_name, "-i", str(molecule_path("MOLECULE_INVENTORY_FILE")),
           "-m", module, "-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    try:
        document = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ansible {module} printed no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = document["plays"][0]["tasks"][0]["hosts"][host_name]
    result.setdefault("failed", False)
    return result


def assert_role_rejects(role: str, role_vars: dict, fragment: str, tmp_dir: pathlib.Path,
                        play_vars: dict | None = None, hosts: str = "all", allow_changes: bool = False) -> None:
    """Apply a role with bad input: it must fail with a message naming the problem,
    having changed nothing on the host (allow_changes: for failures detected after
    writing, such as nginx -t, whose callers check the rollback themselves)."""
    playbook = tmp_dir / f"reject-{role}-{abs(hash(json.dumps(role_vars, sort_keys=True)))}.yml"
    playbook.write_text(json.dumps([{
        "name": f"Reject bad input for {role}",
        "hosts": hosts,
        "become": True,
        "vars": play_vars or {},
        "roles": [{"role": f"botstack.deploy.{role}", "vars": role_vars}],
    }]))
    result = run_playbook(playbook, "-vvv")
    recap = play_recap(result.stdout)
    assert result.returncode != 0, f"{role} accepted {role_vars}:\n{result.stdout[-3000:]}"
    assert fragment in result.stdout + result.stderr, result.stdout[-3000:]
    assert_no_secret_in(result.stdout + result.stderr, f"rejecting {role_vars} at -vvv")
    if not allow_changes:
        assert recap and all(c["changed"] == 0 for c in recap.values()), recap


@pytest.fixture(scope="session")
def ephemeral_dir() -> pathlib.Path:
    return molecule_path("MOLECULE_EPHEMERAL_DIRECTORY")


@pytest.fixture(scope="session")
def reports_dir() -> pathlib.Path:
    """Where verify steps leave instrument output (ignored by git)."""
    root = molecule_path("MOLECULE_PROJECT_DIRECTORY") / "reports" / os.environ.get("MOLECULE_SCENARIO_NAME", "scenario")
    root.mkdir(parents=True, exist_ok=True)
    return root
