"""botstack.deploy.health_gate against a real local HTTP server."""
from __future__ import annotations

import http.server
import json
import os
import socketserver
import stat
import threading
import time

import pytest


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: dict = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server naming
        count = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/healthy":
            self._send(200, {"status": "healthy", "checks": {"db": True}})
        elif self.path == "/degraded":
            self._send(200, {"status": "degraded"})
        elif self.path == "/error":
            self._send(503, {"status": "down"})
        elif self.path == "/warming":
            # Unhealthy for the first three requests, then healthy.
            self._send(200 if count > 3 else 503, {"status": "healthy" if count > 3 else "starting"})
        elif self.path == "/text":
            self._send(200, "plain text")
        elif self.path == "/header":
            self._send(200 if self.headers.get("X-Probe") == "yes" else 401, {})
        else:
            self._send(404, {})

    def _send(self, code, body):
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def unix_server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sock") / "api.sock")

    class _Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    class _UnixHandler(_Handler):
        def address_string(self):
            return "unix"

    httpd = _Unix(path, _UnixHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield path
    httpd.shutdown()


FAKE_SYSTEMCTL = '''#!/usr/bin/env python3
"""systemctl show [--property=...] -- UNIT...: each unit's next state, one block per unit."""
import pathlib, sys, time
STATE_DIR = None
units = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[2:3]
blocks = []
for unit in units:
    states = pathlib.Path(STATE_DIR) / (unit + ".states")
    count = pathlib.Path(STATE_DIR) / (unit + ".count")
    n = int(count.read_text()) if count.exists() else 0
    count.write_text(str(n + 1))
    lines = states.read_text().split()
    active, sub, restarts = lines[min(n, len(lines) - 1)].split("/")
    # <unit>.since: the main process started at this time.monotonic(); else long ago.
    since = pathlib.Path(STATE_DIR) / (unit + ".since")
    process = int(float(since.read_text()) * 1e6) if since.exists() else 1000000
    blocks.append("Id=%s\\nActiveState=%s\\nSubState=%s\\nResult=exit-code\\nNRestarts=%s\\nLoadState=loaded\\n"
                  "InvocationID=0123456789abcdef0123456789abcdef\\nInactiveExitTimestampMonotonic=1000000\\n"
                  "ExecMainStartTimestampMonotonic=%d" % (unit, active, sub, restarts, process))
print("\\n\\n".join(blocks))
'''

FAKE_JOURNALCTL = '''#!/bin/sh
echo "journalctl $*"
echo 'api[42]: ImportError: No module named fastapi'
'''


def _fake_systemd(tmp_path, **units):
    """systemctl/journalctl stand-ins on PATH for the module.

    Each unit gets a sequence of states ("active/running/0" = ActiveState/SubState/NRestarts);
    every `systemctl show` returns the next one, the last repeating. journalctl prints its own
    arguments, so a test sees how the journal was scoped.
    """
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for unit, sequence in units.items():
        (tmp_path / f"{unit}.states").write_text("\n".join(sequence) + "\n")
    (bindir / "systemctl").write_text(FAKE_SYSTEMCTL.replace("STATE_DIR = None", "STATE_DIR = %r" % str(tmp_path)))
    (bindir / "journalctl").write_text(FAKE_JOURNALCTL)
    for name in ("systemctl", "journalctl"):
        (bindir / name).chmod(stat.S_IRWXU)
    return str(bindir)


def test_passes_after_n_consecutive_successes(module, server):
    result = module("health_gate", {"url": server + "/healthy", "successes": 3, "interval": 0.05, "timeout": 10})
    assert result["_rc"] == 0, result
    assert result["changed"] is False
    assert result["attempts"] == 3 and result["consecutive"] == 3
    assert result["last_status"] == 200


def test_waits_for_a_warming_service(module, server):
    result = module("health_gate", {"url": server + "/warming", "successes": 2, "interval": 0.05, "timeout": 10})
    assert result["_rc"] == 0, result
    assert result["attempts"] == 5


def test_fails_on_timeout_with_evidence_in_the_message(module, server):
    result = module("health_gate", {"url": server + "/error", "interval": 0.1, "timeout": 0.5})
    assert result["failed"] is True
    assert result["last_status"] == 503
    assert "no 3 consecutive healthy answers within 0.5s" in result["msg"]
    assert "last status 503" in result["msg"] and '"down"' in result["msg"]
    assert result["attempts"] <= 6, "0.5 s at one attempt per 0.1 s"


def test_honours_the_json_field(module, server):
    ok = module("health_gate", {"url": server + "/healthy", "json_field": "status", "json_value": "healthy",
                                "successes": 1, "timeout": 5})
    assert ok["_rc"] == 0, ok
    nested = module("health_gate", {"url": server + "/healthy", "json_field": "checks.db", "json_value": True,
                                    "successes": 1, "timeout": 5})
    assert nested["_rc"] == 0, nested
    bad = module("health_gate", {"url": server + "/degraded", "json_field": "status", "json_value": "healthy",
                                 "interval": 0.05, "timeout": 0.3})
    assert bad["failed"] is True
    assert "JSON field 'status' is 'degraded', expected 'healthy'" in bad["msg"]
    text = module("health_gate", {"url": server + "/text", "json_field": "status", "json_value": "healthy",
                                  "interval": 0.05, "timeout": 0.2})
    assert "body is not JSON" in text["msg"]


def test_sends_headers_and_accepts_listed_status_codes(module, server):
    ok = module("health_gate", {"url": server + "/header", "headers": {"X-Probe": "yes"}, "successes": 1, "timeout": 5})
    assert ok["_rc"] == 0, ok
    accepted = module("health_gate", {"url": server + "/error", "status_codes": [503], "successes": 1, "timeout": 5})
    assert accepted["_rc"] == 0, accepted


def test_connection_refused_is_reported(module):
    result = module("health_gate", {"url": "http://127.0.0.1:9/health", "interval": 0.05, "timeout": 0.3})
    assert result["failed"] is True and result["last_status"] is None
    assert "request failed" in result["msg"]


def test_polls_through_a_unix_socket(module, unix_server):
    result = module("health_gate", {"url": "http://localhost/healthy", "unix_socket": unix_server,
                                    "json_field": "status", "json_value": "healthy", "successes": 2,
                                    "interval": 0.05, "timeout": 5})
    assert result["_rc"] == 0, result


def test_fails_fast_when_the_unit_has_failed(module, server, tmp_path):
    bindir = _fake_systemd(tmp_path, **{"botstack-api@green.service": ["active/running/0", "failed/failed/0"]})
    result = module("health_gate", {"url": server + "/error", "units": ["botstack-api@green.service"],
                                    "timeout": 30, "interval": 0.5}, extra_path=bindir)
    assert result["failed"] is True
    assert result["attempts"] <= 1, "the gate waited instead of failing at the unit's second look"
    assert "entered the failed state" in result["msg"]
    assert "ImportError: No module named fastapi" in result["msg"]
    journal = result["journal"]["botstack-api@green.service"]
    assert "_SYSTEMD_INVOCATION_ID=0123456789abcdef0123456789abcdef" in journal[0], journal


def test_fails_fast_on_a_crash_loop_that_never_reaches_failed(module, server, tmp_path):
    """Restart=on-failure: the unit flips between activating/auto-restart and running, NRestarts grows."""
    loop = ["activating/start/2", "active/running/2", "activating/auto-restart/3", "active/running/4"]
    bindir = _fake_systemd(tmp_path, **{"api@green.service": loop})
    result = module("health_gate", {"url": server + "/error", "units": ["api@green.service"],
                                    "timeout": 60, "interval": 0.2}, extra_path=bindir)
    assert result["failed"] is True and result["attempts"] < len(loop), "it failed once the restart counter grew"
    assert "crash-looping" in result["msg"]


def test_tolerates_restarts_up_to_max_restarts(module, server, tmp_path):
    bindir = _fake_systemd(tmp_path, **{"api@green.service": ["active/running/0", "active/running/1"]})
    result = module("health_gate", {"url": server + "/healthy", "units": ["api@green.service"], "max_restarts": 1,
                                    "successes": 3, "interval": 0.05, "timeout": 5}, extra_path=bindir)
    assert result["_rc"] == 0, result


def test_fails_fast_when_the_unit_stops(module, server, tmp_path):
    bindir = _fake_systemd(tmp_path, **{"api@green.service": ["active/running/0", "inactive/dead/0"]})
    result = module("health_gate", {"url": server + "/error", "units": ["api@green.service"],
                                    "timeout": 60, "interval": 0.2}, extra_path=bindir)
    assert result["failed"] is True and result["attempts"] <= 1, "it failed at the unit's second look"
    assert "is not running (inactive/dead)" in result["msg"]


def test_watches_units_without_a_url(module, tmp_path):
    states = {"worker@green.service": ["activating/start/0", "active/running/0"],
              "worker2@green.service": ["active/running/0"]}
    bindir = _fake_systemd(tmp_path, **states)
    result = module("health_gate", {"units": list(states), "successes": 3, "interval": 0.05, "timeout": 5},
                    extra_path=bindir)
    assert result["_rc"] == 0, result
    assert result["attempts"] == 4 and result["last_status"] is None
    looping = _fake_systemd(tmp_path / "loop", **{"worker@green.service": ["active/running/0",
                                                                         "activating/auto-restart/1"]})
    failed = module("health_gate", {"units": ["worker@green.service"], "timeout": 30, "interval": 0.05},
                    extra_path=looping)
    assert failed["failed"] is True and "crash-looping" in failed["msg"]


def test_an_active_unit_does_not_stop_the_gate(module, server, tmp_path):
    bindir = _fake_systemd(tmp_path, **{"botstack-api@green.service": ["active/running/0"]})
    result = module("health_gate", {"url": server + "/healthy", "unit": "botstack-api@green.service",
                                    "successes": 2, "interval": 0.05, "timeout": 5}, extra_path=bindir)
    assert result["_rc"] == 0, result
    assert result["unit_state"]["botstack-api@green.service"]["ActiveState"] == "active"


def test_settle_seconds_holds_the_gate_until_the_units_ran_that_long(module, server, tmp_path):
    """A scheduler that crashes once its imports ran: healthy answers alone do not pass the gate."""
    units = {"api@green.service": ["active/running/0"], "scheduler@green.service": ["active/running/0"]}
    bindir = _fake_systemd(tmp_path, **units)
    started = time.monotonic()
    (tmp_path / "scheduler@green.service.since").write_text(str(started))
    result = module("health_gate", {"url": server + "/healthy", "units": list(units), "successes": 1,
                                    "interval": 0.1, "timeout": 10, "settle_seconds": 1.5}, extra_path=bindir)
    assert result["_rc"] == 0, result
    # Healthy from the first answer, yet held until the scheduler had run 1.5 s (a lower bound the gate guarantees,
    # whatever the machine's speed).
    assert result["consecutive"] == result["attempts"] and time.monotonic() - started >= 1.5, result
    # It crashes while the gate holds: refused, with its journal, though the endpoint was healthy.
    crash = _fake_systemd(tmp_path / "crash", **{"api@green.service": ["active/running/0"],
                                                 "scheduler@green.service": ["active/running/0"] * 4
                                                 + ["activating/auto-restart/1"]})
    (tmp_path / "crash" / "scheduler@green.service.since").write_text(str(time.monotonic()))
    failed = module("health_gate", {"url": server + "/healthy", "units": list(units), "successes": 1,
                                    "interval": 0.1, "timeout": 10, "settle_seconds": 3}, extra_path=crash)
    assert failed["failed"] is True and failed["attempts"] <= 5, "refused at the crash, not at the end of the hold"
    assert "scheduler@green.service is crash-looping" in failed["msg"]
    assert "ImportError" in failed["msg"]
    # Units running long before need no wait.
    old = _fake_systemd(tmp_path / "old", **units)
    quick = module("health_gate", {"url": server + "/healthy", "units": list(units), "successes": 1,
                                   "interval": 0.1, "timeout": 10, "settle_seconds": 3}, extra_path=old)
    assert quick["_rc"] == 0 and quick["attempts"] == 1, quick


def test_headers_never_reach_the_result(module, server):
    secret = "s3cr3t-webhook-token-value"
    result = module("health_gate", {"url": server + "/header", "headers": {"X-Probe": "yes", "X-Token": secret},
                                    "successes": 1, "timeout": 5})
    assert result["_rc"] == 0, result
    assert secret not in json.dumps(result)


def test_runs_in_check_mode(module, server):
    result = module("health_gate", {"url": server + "/healthy", "successes": 1, "timeout": 5}, check=True)
    assert result["_rc"] == 0 and result["changed"] is False


@pytest.mark.parametrize(("args", "fragment"), [
    ({"url": "localhost:8000/health"}, 'url must be an http(s) URL, got "localhost:8000/health"'),
    ({"url": "http://127.0.0.1/", "timeout": 0}, "timeout must be greater than 0"),
    ({"url": "http://127.0.0.1/", "timeout": -1}, "timeout must be greater than 0"),
    ({"url": "http://127.0.0.1/", "request_timeout": 0}, "request_timeout must be greater than 0"),
    ({"url": "http://127.0.0.1/", "successes": 0}, "successes must be at least 1"),
    ({"url": "http://127.0.0.1/", "json_field": "status"}, "json_value is required with json_field"),
    ({}, "give url (an http(s) health endpoint), units"),
    ({"units": ["a.service"], "max_restarts": -1}, "max_restarts must be 0 or more"),
    ({"units": ["a.service"], "settle_seconds": 60}, "settle_seconds must be 0 or more and less than timeout"),
    ({"url": "http://127.0.0.1/", "settle_seconds": 3}, "settle_seconds is how long the units must have run"),
])
def test_bad_input_names_the_option(module, args, fragment):
    result = module("health_gate", args)
    assert result["failed"] is True
    assert fragment in result["msg"]
    assert "attempts" not in result


def test_a_unit_already_running_again_shows_the_crashed_run_not_the_new_one(module, server, tmp_path):
    """Restarted between two looks (under load its new run has printed nothing yet): the evidence is the unit's
    journal since the gate began, which holds the crash, not the new run's (empty) invocation."""
    began = time.time()
    bindir = _fake_systemd(tmp_path, **{"scheduler@green.service": ["active/running/0", "active/running/1"]})
    result = module("health_gate", {"url": server + "/healthy", "units": ["scheduler@green.service"],
                                    "successes": 5, "interval": 0.1, "timeout": 10}, extra_path=bindir)
    assert result["failed"] is True and "restarted 1 time(s)" in result["msg"], result
    query = result["journal"]["scheduler@green.service"][0]
    assert "--unit scheduler@green.service" in query and "_SYSTEMD_INVOCATION_ID" not in query, query
    since = int(query.split("--since @")[1].split()[0])
    assert began - 3 <= since <= time.time(), (began, query)
    assert "ImportError: No module named fastapi" in result["msg"]
