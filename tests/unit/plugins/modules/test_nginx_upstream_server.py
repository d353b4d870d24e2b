"""botstack.deploy.nginx_upstream_server against fake nginx and systemctl commands that record their calls."""
from __future__ import annotations

import pathlib
import subprocess
import time

import pytest

# nginx's master is a shell whose child stands for a worker; a reload starts a new pair, as nginx
# forks new workers, and records its pid where `systemctl show` reads MainPID.
FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> {log}
case "$(basename "$0") $*" in
  "nginx -t -q") if grep -q 'no-such-host' {upstream}/*.conf; then
                   echo 'nginx: [emerg] host not found in upstream "no-such-host:8002"' >&2; exit 1; fi ;;
  "nginx -s reload") sh -c 'sleep 20 & wait' </dev/null >/dev/null 2>&1 &
                     echo $! > {main_pid}; echo $! >> {spawned} ;;
  "systemctl is-active --quiet nginx") exit {active} ;;
  "systemctl show --property=ActiveState,MainPID nginx")
                     [ {active} = 0 ] && echo ActiveState=active || echo ActiveState=inactive
                     echo "MainPID=$(cat {main_pid} 2>/dev/null || echo 0)" ;;
esac
exit 0
"""


@pytest.fixture
def tools(tmp_path):
    def make(active: bool = True, nginx: bool = True) -> tuple[pathlib.Path, pathlib.Path]:
        bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
        bin_dir.mkdir(exist_ok=True)
        for name in (["nginx"] if nginx else []) + ["systemctl"]:
            tool = bin_dir / name
            tool.write_text(FAKE.format(log=log, upstream=tmp_path / "upstream.d", active=0 if active else 3,
                                        main_pid=tmp_path / "main.pid", spawned=tmp_path / "spawned"))
            tool.chmod(0o755)
        return bin_dir, log
    yield make
    spawned = tmp_path / "spawned"
    for pid in spawned.read_text().split() if spawned.exists() else []:
        subprocess.run(["pkill", "-P", pid], check=False)
        subprocess.run(["kill", pid], check=False, stderr=subprocess.DEVNULL)


def _switch(module, tmp_path, bin_dir, port=8002, check=False, **extra):
    args = {"dir": str(tmp_path / "upstream.d"), "name": "app1", "address": "10.20.0.11", "port": port, **extra}
    return module("nginx_upstream_server", args, check=check, diff=True, extra_path=str(bin_dir))


def _calls(log: pathlib.Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_switch_writes_the_entry_checks_nginx_and_reloads_once(module, tmp_path, tools):
    bin_dir, log = tools()
    first = _switch(module, tmp_path, bin_dir)
    entry = tmp_path / "upstream.d" / "app1.conf"
    assert first["changed"] is True and first["reloaded"] is True and first["server"] == "server 10.20.0.11:8002;"
    assert entry.read_text().endswith("server 10.20.0.11:8002;\n") and oct(entry.stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "upstream.d").stat().st_mode & 0o777) == "0o755"
    assert _calls(log) == ["nginx -t -q", "systemctl is-active --quiet nginx", "nginx -s reload"]
    assert first["diff"]["before"] == "" and "8002" in first["diff"]["after"]

    # nginx's workers are newer than the entry: it runs what is on disk.
    again = _switch(module, tmp_path, bin_dir)
    assert again["changed"] is False and again["reloaded"] is False and again["pending_reload"] is False
    assert _calls(log)[3:] == ["systemctl show --property=ActiveState,MainPID nginx"]

    drained = _switch(module, tmp_path, bin_dir, down=True)
    assert drained["changed"] is True and entry.read_text().endswith("server 10.20.0.11:8002 down;\n")
    assert "8002;" in drained["diff"]["before"] and "8002 down;" in drained["diff"]["after"]
    assert [p.name for p in entry.parent.iterdir()] == ["app1.conf"]


def test_check_mode_reports_the_change_and_touches_nothing(module, tmp_path, tools):
    bin_dir, log = tools()
    _switch(module, tmp_path, bin_dir, port=8001)
    before = (tmp_path / "upstream.d" / "app1.conf").read_text()
    checked = _switch(module, tmp_path, bin_dir, port=8002, check=True)
    assert checked["changed"] is True and "8001" in checked["diff"]["before"] and "8002" in checked["diff"]["after"]
    assert (tmp_path / "upstream.d" / "app1.conf").read_text() == before and "nginx -s reload" not in _calls(log)[3:]


def test_an_entry_nginx_rejects_is_put_back_and_nginx_is_not_reloaded(module, tmp_path, tools):
    bin_dir, log = tools()
    _switch(module, tmp_path, bin_dir, port=8001)
    entry = tmp_path / "upstream.d" / "app1.conf"
    before = entry.read_text()
    rejected = _switch(module, tmp_path, bin_dir, address="no-such-host")
    assert rejected["failed"] is True and rejected["reloaded"] is False
    assert 'host not found in upstream "no-such-host:8002"' in rejected["msg"] and "put back" in rejected["msg"]
    assert entry.read_text() == before
    assert _calls(log)[-1] == "nginx -t -q" and _calls(log).count("nginx -s reload") == 1


def test_a_new_entry_nginx_rejects_is_removed(module, tmp_path, tools):
    bin_dir, _ = tools()
    rejected = _switch(module, tmp_path, bin_dir, address="no-such-host")
    assert rejected["failed"] is True
    assert list((tmp_path / "upstream.d").iterdir()) == []


def test_without_nginx_the_entry_is_written_and_nothing_reloads(module, tmp_path, tools):
    bin_dir, log = tools(nginx=False)
    written = _switch(module, tmp_path, bin_dir)
    assert written["changed"] is True and written["reloaded"] is False and _calls(log) == []
    assert (tmp_path / "upstream.d" / "app1.conf").exists()


def test_a_stopped_nginx_is_checked_and_not_reloaded(module, tmp_path, tools):
    bin_dir, log = tools(active=False)
    written = _switch(module, tmp_path, bin_dir)
    assert written["changed"] is True and written["reloaded"] is False
    assert _calls(log) == ["nginx -t -q", "systemctl is-active --quiet nginx"]


def test_an_entry_written_by_a_run_killed_before_the_reload_is_loaded_by_the_next_run(module, tmp_path, tools):
    bin_dir, log = tools()
    _switch(module, tmp_path, bin_dir, port=8001)
    time.sleep(0.3)
    # The killed run: the entry points at the new slot, nginx still runs the old one.
    written = _switch(module, tmp_path, bin_dir, port=8002, reload=False)
    assert written["changed"] is True and written["reloaded"] is False
    calls = len(_calls(log))

    checked = _switch(module, tmp_path, bin_dir, port=8002, check=True)
    assert checked["changed"] is True and checked["pending_reload"] is True and checked["reloaded"] is False
    assert checked["diff"]["before"] == checked["diff"]["after"]
    assert "nginx -s reload" not in _calls(log)[calls:]

    retried = _switch(module, tmp_path, bin_dir, port=8002)
    assert retried["changed"] is True and retried["pending_reload"] is True and retried["reloaded"] is True
    assert _calls(log)[-3:] == ["nginx -t -q", "systemctl is-active --quiet nginx", "nginx -s reload"]

    settled = _switch(module, tmp_path, bin_dir, port=8002)
    assert settled["changed"] is False and settled["pending_reload"] is False


def test_an_entry_newer_than_a_stopped_nginx_needs_no_reload(module, tmp_path, tools):
    bin_dir, log = tools(active=False)
    _switch(module, tmp_path, bin_dir)
    again = _switch(module, tmp_path, bin_dir)
    assert again["changed"] is False and "nginx -s reload" not in _calls(log)


def test_an_ipv6_address_is_bracketed(module, tmp_path, tools):
    bin_dir, _ = tools()
    written = _switch(module, tmp_path, bin_dir, address="fd00::11")
    assert written["server"] == "server [fd00::11]:8002;"


@pytest.mark.parametrize("override, fragment", [
    ({"name": "../etc/passwd"}, "name must be a host name"),
    ({"address": "10.0.0.1; include /etc"}, "address must be an IP address or a host name"),
    ({"port": 0}, "port must be between 1 and 65535"),
])
def test_bad_input_is_refused_before_anything_is_written(module, tmp_path, tools, override, fragment):
    bin_dir, log = tools()
    refused = _switch(module, tmp_path, bin_dir, **override)
    assert refused["failed"] is True and fragment in refused["msg"]
    assert not (tmp_path / "upstream.d").exists() and _calls(log) == []
