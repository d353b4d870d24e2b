"""release, release_info and health_gate on a real systemd host."""
from __future__ import annotations

from conftest import run_module

APP = "/srv/gate-demo"


def _module(host, name, **args):
    return run_module(host.backend.host, f"botstack.deploy.{name}", args)


def test_current_points_at_the_healthy_release(host):
    assert host.file(f"{APP}/current").linked_to == f"{APP}/releases/r1"
    info = _module(host, "release_info", app_root=APP)
    assert info["current"] == "r1"
    assert info["releases"][0]["status"] == "healthy"
    assert info["releases"][0]["revision"] == "0123abcd"


def test_gate_passes_on_the_served_release(host):
    result = _module(host, "health_gate", url="http://127.0.0.1:8081/health.json", json_field="status",
                     json_value="healthy", successes=2, interval=0.2, timeout=10, unit="gate-demo.service")
    assert not result["failed"], result
    assert result["unit_state"]["gate-demo.service"]["ActiveState"] == "active"


def test_unhealthy_release_is_gated_and_rolled_back(host):
    created = _module(host, "release", app_root=APP, release_id="r2", revision="bad")
    host.run("printf '%%s' '{\"status\": \"degraded\"}' > %s/health.json", created["release"]["path"])
    refused = _module(host, "release", app_root=APP, release_id="r2", state="active")
    assert refused["failed"] and "is pending (not complete)" in refused["msg"]
    _module(host, "release", app_root=APP, release_id="r2", status="ready")
    switched = _module(host, "release", app_root=APP, release_id="r2", state="active")
    assert switched["previous"] == "r1"
    gate = _module(host, "health_gate", url="http://127.0.0.1:8081/health.json", json_field="status",
                   json_value="healthy", successes=2, interval=0.2, timeout=2)
    assert gate["failed"] is True
    assert "'degraded', expected 'healthy'" in gate["msg"]
    back = _module(host, "release", app_root=APP, state="rolled_back")
    assert back["current"] == "r1"
    assert host.file(f"{APP}/current").linked_to == f"{APP}/releases/r1"
    info = _module(host, "release_info", app_root=APP)
    assert {r["id"]: r["status"] for r in info["releases"]} == {"r1": "healthy", "r2": "failed"}
    healthy = _module(host, "health_gate", url="http://127.0.0.1:8081/health.json", json_field="status",
                      json_value="healthy", successes=1, timeout=5)
    assert not healthy["failed"], healthy
    _module(host, "release", app_root=APP, release_id="r2", state="absent")


def test_gate_fails_fast_on_a_failed_unit_with_its_journal(host):
    host.run("printf '[Service]\\nExecStart=/bin/sh -c \"echo boom: cannot import app >&2; exit 3\"\\n'"
             " > /etc/systemd/system/gate-broken.service && systemctl daemon-reload")
    host.run("systemctl start gate-broken.service")
    gate = _module(host, "health_gate", url="http://127.0.0.1:8099/health", unit="gate-broken.service",
                   timeout=60, interval=0.5)
    assert gate["failed"] is True
    assert gate["attempts"] <= 2, "the gate waited instead of failing at the unit's failed state"
    assert "entered the failed state" in gate["msg"]
    assert any("boom: cannot import app" in line for line in gate["journal"]["gate-broken.service"]), gate["journal"]
