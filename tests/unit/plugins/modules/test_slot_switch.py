"""botstack.deploy.slot_switch: the units, the release and the local nginx entry of a blue/green switch in one run,
against the stand-in systemctl of the systemd_units tests and a stand-in nginx."""
from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading

import pytest
from test_systemd_units import systemd  # noqa: F401 - the stand-in systemctl fixture

NGINX = """#!/bin/sh
echo "nginx $*" >> {calls}
if [ "$1 $2" = "-t -q" ] && grep -q no-such-host {upstream}/*.conf; then
  echo 'nginx: [emerg] host not found in upstream "no-such-host:8002"' >&2; exit 1
fi
exit 0
"""


class _Health(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server naming
        code = 200 if self.path == "/health" else 500
        body = json.dumps({"status": "healthy" if code == 200 else "down"}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Health)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def host(tmp_path, systemd, module):  # noqa: F811 - the fixture imported above
    """Two releases on slots blue (live, v1) and green (started, v2), the entry pointing at blue, a stand-in nginx."""
    upstream = tmp_path / "upstream.d"
    upstream.mkdir()
    (upstream / "app1.conf").write_text("server 127.0.0.1:8001;\n")
    nginx = os.path.join(systemd.path, "nginx")
    with open(nginx, "w") as handle:
        handle.write(NGINX.format(calls=tmp_path / "nginx.log", upstream=upstream))
    os.chmod(nginx, 0o755)
    root = tmp_path / "app"
    for rid, slot in (("v1", "blue"), ("v2", "green")):
        assert module("release", {"app_root": str(root), "release_id": rid, "status": "ready"})["_rc"] == 0
        assert module("release", {"app_root": str(root), "release_id": rid, "state": "assigned", "slot": slot})["_rc"] == 0
    assert module("release", {"app_root": str(root), "release_id": "v1", "state": "active", "slot": "blue",
                              "status": "healthy"})["_rc"] == 0
    systemd.set(api_blue={"ActiveState": "active", "UnitFileState": "enabled"},
                worker_blue={"ActiveState": "active", "UnitFileState": "enabled"},
                api_green={"ActiveState": "active", "UnitFileState": "disabled"},
                worker_green={"ActiveState": "active", "UnitFileState": "disabled"})

    class Host:
        app_root, entry, nginx_log = root, upstream / "app1.conf", tmp_path / "nginx.log"

        def switch(self, check=False, **args):
            options = {"app_root": str(root), "release_id": "v2", "slot": "green", "status": "healthy",
                       "stopped": ["worker-blue.service"],
                       "enabled": ["api-green.service", "worker-green.service"],
                       "disabled": ["api-blue.service", "worker-blue.service"],
                       "upstream": {"dir": str(upstream), "name": "app1", "address": "127.0.0.1", "port": 8002}}
            options.update(args)
            options = {k: v for k, v in options.items() if v is not None}  # None: the option left out
            return module("slot_switch", options, check=check, diff=True, extra_path=systemd.path)

        def manifest(self, rid):
            return json.loads((root / "releases" / rid / ".release.json").read_text())

    return Host()


def test_one_run_stops_the_old_workers_switches_current_and_points_nginx_at_the_slot(host, systemd):  # noqa: F811
    result = host.switch()
    assert result["_rc"] == 0 and result["changed"] is True, result
    assert result["actions"] == ["systemctl stop --no-block -- worker-blue.service",
                                 "systemctl disable --quiet --no-reload -- api-blue.service worker-blue.service",
                                 "systemctl enable --quiet -- api-green.service worker-green.service",
                                 "switch current: blue (v1) -> green (v2)",
                                 "set v2 status healthy",
                                 "server 127.0.0.1:8002;"]
    units = systemd.units()
    assert units["worker-blue.service"]["ActiveState"] == "inactive"
    assert units["api-blue.service"]["ActiveState"] == "active"  # the old web process drains in the cleanup step
    assert os.readlink(host.app_root / "current") == "slots/green"
    assert host.manifest("v2")["status"] == "healthy"
    assert host.entry.read_text().endswith("server 127.0.0.1:8002;\n")
    assert host.nginx_log.read_text().splitlines() == ["nginx -t -q", "nginx -s reload"]
    assert len(result["diff"]) == 3  # units, release, nginx entry
    again = host.switch()
    assert again["changed"] is False and again["actions"] == []


def test_check_mode_reports_the_switch_and_changes_nothing(host, systemd):  # noqa: F811
    before = systemd.units()
    result = host.switch(check=True)
    assert result["changed"] is True and result["actions"] == ["switch current: blue (v1) -> green (v2)",
                                                          "set v2 status healthy"]
    assert "units" not in result and "upstream" not in result
    assert systemd.units() == before
    assert os.readlink(host.app_root / "current") == "slots/blue"
    assert host.entry.read_text() == "server 127.0.0.1:8001;\n"
    assert not host.nginx_log.exists()


def test_a_rejected_entry_is_put_back_and_fails_the_switch(host):
    result = host.switch(upstream={"dir": str(host.entry.parent), "name": "app1", "address": "no-such-host",
                                   "port": 8002})
    assert result.get("failed") is True
    assert "nginx rejected the upstream entry app1" in result["msg"] and "host not found" in result["msg"]
    assert host.entry.read_text() == "server 127.0.0.1:8001;\n"
    assert "nginx -s reload" not in host.nginx_log.read_text()


def test_a_rollback_switches_back_and_marks_the_release_left_failed(host):
    assert host.switch()["_rc"] == 0
    back = host.switch(state="rolled_back", release_id=None, status=None, slot="blue",
                       stopped=["worker-green.service"], enabled=["api-blue.service", "worker-blue.service"],
                       disabled=["api-green.service", "worker-green.service"],
                       upstream={"dir": str(host.entry.parent), "name": "app1", "address": "127.0.0.1", "port": 8001})
    assert back["_rc"] == 0 and back["release"]["current"] == "v1", back
    assert "switch current: green (v2) -> blue (v1) [rollback]" in back["actions"]
    assert host.manifest("v2")["status"] == "failed"
    assert host.entry.read_text().endswith("server 127.0.0.1:8001;\n")


def test_bad_input_fails_before_anything_changes(host, systemd):  # noqa: F811
    before = systemd.units()
    refused = host.switch(state="rolled_back", slot="blue")
    assert refused.get("failed") is True and "remove status" in refused["msg"]
    missing = host.switch(release_id=None)
    assert missing.get("failed") is True and "release_id" in missing["msg"]
    assert systemd.units() == before and os.readlink(host.app_root / "current") == "slots/blue"


def test_the_gate_passes_first_then_the_switch_runs(host, systemd, server):  # noqa: F811
    gate = {"url": server + "/health", "json_field": "status", "json_value": "healthy", "successes": 2,
            "interval": 0.05, "timeout": 5, "units": ["api-green.service", "worker-green.service"]}
    result = host.switch(gates=[gate])
    assert result["_rc"] == 0, result
    assert result["gates"][0]["consecutive"] == 2 and result["gates"][0]["last_status"] == 200
    assert os.readlink(host.app_root / "current") == "slots/green"
    assert host.entry.read_text().endswith("server 127.0.0.1:8002;\n")


def test_a_failed_gate_fails_with_its_evidence_before_anything_changes(host, systemd, server):  # noqa: F811
    before = systemd.units()
    result = host.switch(gates=[{"url": server + "/broken", "interval": 0.05, "timeout": 0.5,
                                 "units": ["api-green.service"]}])
    assert result.get("failed") is True and result["failed_step"] == "gate", result
    assert "health gate failed for %s/broken" % server in result["msg"] and "status 500" in result["msg"]
    assert '"down"' in result["msg"] and "journal of api-green.service" in result["msg"]
    assert systemd.units() == before
    assert os.readlink(host.app_root / "current") == "slots/blue"
    assert host.manifest("v2")["status"] == "ready"
    assert host.entry.read_text() == "server 127.0.0.1:8001;\n" and not host.nginx_log.exists()


def test_a_crash_looping_process_fails_the_gate_fast(host, systemd, server):  # noqa: F811
    units = systemd.units()
    units["worker-green.service"]["crashing"] = True
    systemd.set(**{name[:-len(".service")].replace("-", "_"): unit for name, unit in units.items()})
    result = host.switch(gates=[{"url": server + "/health", "interval": 0.05, "timeout": 30,
                                 "units": ["api-green.service", "worker-green.service"]}])
    assert result.get("failed") is True and "unit worker-green.service is crash-looping" in result["msg"], result
    assert result["gates"][0]["attempts"] <= 3, "the gate failed at the restart, not at its 30 s timeout"
    assert os.readlink(host.app_root / "current") == "slots/blue"


def test_check_mode_does_not_gate(host, server):
    result = host.switch(check=True, gates=[{"url": server + "/broken", "timeout": 0.5}])
    assert result["_rc"] == 0 and result["changed"] is True and "gates" not in result, result


def test_a_bad_gate_fails_before_anything_changes(host, systemd):  # noqa: F811
    before = systemd.units()
    result = host.switch(gates=[{"units": ["api-green.service"]}, {"url": "ftp://x/health"}])
    assert result.get("failed") is True and result["msg"] == 'gates[2]: url must be an http(s) URL, got "ftp://x/health"'
    result = host.switch(gates=[{"url": "http://127.0.0.1:1/health", "successes": 0}])
    assert result["msg"] == "gates[1]: successes must be at least 1, got 0"
    assert systemd.units() == before and os.readlink(host.app_root / "current") == "slots/blue"
