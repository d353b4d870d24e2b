"""After a reboot the whole one-host stack comes back on its own, the app on its live slot, in order: a local
database that takes its time to start is up before the app's processes start (they would crash, and give up).

Runs last (files run in name order): the container restarts, so systemd boots again as on a host's reboot.
"""
from __future__ import annotations

import subprocess
import time

import requests
import urllib3
from conftest import container_address, run_module

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
HOST = "deploy-host"
SITE = "bot.botstack.test"


def _seconds(host, unit, prop):
    return int(host.check_output(f"systemctl show -p {prop} --value {unit} | xargs -r -I{{}} date -d '{{}}' +%s%N") or 0)


def test_a_reboot_brings_the_live_slot_back_after_its_database(host):
    live = run_module(HOST, "botstack.deploy.release_info", {"app_root": "/opt/botstack"})["current_slot"]
    timers = host.check_output("systemctl list-units --type=timer --state=active --plain --no-legend "
                               "| awk '{print $1}'").split()
    # A database slow to start (crash recovery after a power loss takes its time).
    host.check_output("mkdir -p /etc/systemd/system/postgresql@.service.d && printf '[Service]\\nExecStartPre=/bin/sleep 15\\n'"
                      " > /etc/systemd/system/postgresql@.service.d/50-slow.conf && systemctl daemon-reload")
    try:
        subprocess.run(["docker", "restart", "-t", "30", HOST], check=True, capture_output=True)
        for _ in range(90):
            state = host.run("systemctl is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(2)
        units = [f"botstack-{p}@{live}.service" for p in ("api", "worker", "scheduler")]
        for unit in units + ["botstack.target", "postgresql@15-main.service", "redis-server.service", "nginx.service",
                             "prometheus.service"]:
            assert host.run(f"systemctl is-active {unit}").stdout.strip() == "active", unit
        assert "botstack-" not in host.run("systemctl list-units --failed --plain --no-legend").stdout
        # The app waited for the database instead of starting beside it.
        ready = _seconds(host, "postgresql@15-main.service", "ActiveEnterTimestamp")
        for unit in units:
            assert _seconds(host, unit, "ExecMainStartTimestamp") >= ready, unit
        # Every timer that waited for its next run before the reboot waits again.
        assert timers and all(host.run(f"systemctl is-active {t}").stdout.strip() == "active" for t in timers), timers
        for _ in range(30):
            try:
                answer = requests.get(f"https://{container_address(HOST)}/health", headers={"Host": SITE},
                                      verify=False, timeout=5)
                if answer.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert answer.status_code == 200 and answer.json()["status"] == "healthy"
    finally:
        host.run("rm -f /etc/systemd/system/postgresql@.service.d/50-slow.conf && systemctl daemon-reload")
