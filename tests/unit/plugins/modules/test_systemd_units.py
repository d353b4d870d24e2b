"""botstack.deploy.systemd_units against a stand-in systemctl that keeps unit states and records calls."""
from __future__ import annotations

import json
import os
import stat
import time

import pytest

FAKE = '''#!/usr/bin/env python3
"""systemctl stand-in: unit states in STATE (json), every call appended to CALLS."""
import json, pathlib, sys, time
STATE = pathlib.Path(None)
CALLS = STATE.with_name("calls.log")
units = json.loads(STATE.read_text())
args = sys.argv[1:]
with CALLS.open("a") as log:
    log.write(" ".join(args) + "\\n")
verb = args[0]
names = [a for a in args[1:] if not a.startswith("-")]
if verb == "show":
    blocks = []
    for name in names:
        u = units.get(name, {"LoadState": "not-found", "ActiveState": "inactive", "UnitFileState": ""})
        crashed = "crash_after" in u and time.time() - u.get("started_at", 0) >= u["crash_after"]
        if (u.get("crashing") or crashed) and u.get("ActiveState") == "active":
            u["NRestarts"] = str(int(u.get("NRestarts", "0")) + 1)  # restarted again since the last look
            STATE.write_text(json.dumps(units))
        blocks.append("\\n".join("%s=%s" % kv for kv in dict({"Id": name, "SubState": "dead", "NRestarts": "0",
                                                              "InvocationID": "", "Result": "success"}, **u).items()))
    print("\\n\\n".join(blocks))
elif verb == "list-units":
    pattern = names[-1].replace("*", "")
    for name, u in sorted(units.items()):
        if u.get("ActiveState") in ("active", "activating") and all(part in name for part in pattern.split("@")):
            print("%s loaded %s running x" % (name, u["ActiveState"]))
elif verb in ("start", "stop", "enable", "disable", "reset-failed"):
    for name in names:
        u = units.setdefault(name, {"LoadState": "loaded", "UnitFileState": "disabled"})
        if verb == "start":
            u["started_at"] = time.time()
            u.update(ActiveState=u.get("start_to", "active"), SubState="running" if u.get("start_to", "active") == "active" else "failed")
        elif verb == "stop":
            u.update(ActiveState="inactive", SubState="dead")
        elif verb == "enable":
            u["UnitFileState"] = "enabled"
        elif verb == "disable":
            u["UnitFileState"] = "disabled"
    STATE.write_text(json.dumps(units))
    if verb == "start" and any(units[n].get("start_to") == "failed" for n in names):
        print("Job failed", file=sys.stderr)
        sys.exit(1)
'''


@pytest.fixture
def systemd(tmp_path):
    state = tmp_path / "units.json"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(FAKE.replace("pathlib.Path(None)", "pathlib.Path(%r)" % str(state)))
    (bindir / "journalctl").write_text("#!/bin/sh\necho \"journalctl $*\"\necho 'Traceback: boom'\n")
    (bindir / "ss").write_text("#!/bin/sh\nexit 0\n")
    for name in ("systemctl", "journalctl", "ss"):
        (bindir / name).chmod(stat.S_IRWXU)

    class Systemd:
        path = str(bindir)

        def set(self, **units):
            state.write_text(json.dumps({name.replace("_", "-") + ".service": dict({"LoadState": "loaded"}, **u)
                                         for name, u in units.items()}))

        def units(self):
            return json.loads(state.read_text())

        def calls(self):
            return (tmp_path / "calls.log").read_text().splitlines()

    return Systemd()


def run(module, systemd, check=False, **args):
    return module("systemd_units", args, check=check, extra_path=systemd.path)


def test_acts_only_on_units_not_in_the_requested_state_in_a_fixed_order(module, systemd):
    systemd.set(api_blue={"ActiveState": "active", "UnitFileState": "enabled"},
                api_green={"ActiveState": "inactive", "UnitFileState": "disabled"},
                worker_green={"ActiveState": "active", "UnitFileState": "enabled"})
    result = run(module, systemd, stopped=["api-blue.service"], started=["api-green.service", "worker-green.service"],
                 enabled=["api-green.service", "worker-green.service"], disabled=["api-blue.service"])
    assert result["changed"] is True
    assert result["actions"] == ["systemctl stop -- api-blue.service",
                                 "systemctl reset-failed -- api-green.service",
                                 "systemctl start -- api-green.service",
                                 # one reload of systemd, by the enable
                                 "systemctl disable --quiet --no-reload -- api-blue.service",
                                 "systemctl enable --quiet -- api-green.service"]
    units = systemd.units()
    assert units["api-green.service"]["ActiveState"] == "active" and units["api-blue.service"]["ActiveState"] == "inactive"
    again = run(module, systemd, stopped=["api-blue.service"], started=["api-green.service", "worker-green.service"],
                enabled=["api-green.service", "worker-green.service"], disabled=["api-blue.service"])
    assert again["changed"] is False and again["actions"] == []


def test_a_disable_without_an_enable_reloads_systemd_itself(module, systemd):
    systemd.set(api_blue={"ActiveState": "inactive", "UnitFileState": "enabled"})
    result = run(module, systemd, disabled=["api-blue.service"])
    assert result["actions"] == ["systemctl disable --quiet -- api-blue.service"]
    assert systemd.units()["api-blue.service"]["UnitFileState"] == "disabled"


def test_check_mode_reports_and_changes_nothing(module, systemd):
    systemd.set(api_blue={"ActiveState": "inactive", "UnitFileState": "disabled"})
    result = run(module, systemd, check=True, started=["api-blue.service"])
    assert result["changed"] is True
    assert systemd.units()["api-blue.service"]["ActiveState"] == "inactive"
    assert not [c for c in systemd.calls() if c.startswith(("start", "stop"))]


def test_restarted_units_are_stopped_then_started(module, systemd):
    systemd.set(api_green={"ActiveState": "active", "UnitFileState": "disabled"},
                worker_green={"ActiveState": "inactive", "UnitFileState": "disabled"})
    result = run(module, systemd, restarted=["api-green.service", "worker-green.service"], no_block=True)
    assert result["actions"][0] == "systemctl stop -- api-green.service", "a restart waits for the stop"
    assert "systemctl start -- api-green.service worker-green.service" in result["actions"]


def _of(app, kind="web"):
    return {"ActiveState": "active", "Environment": f"BOTSTACK_APP={app} BOTSTACK_KIND={kind} BOTSTACK_SLOT=blue"}


def test_every_unit_of_the_app_is_stopped_except_what_is_kept(module, systemd):
    systemd.set(**{"bot-api@blue": _of("bot"), "bot-api@green": _of("bot"), "bot-worker@blue": _of("bot", "worker"),
                   "bot-old@green": _of("bot", "singleton")})
    result = run(module, systemd, stopped_app="bot", keep=["bot-api@green.service"], no_block=True)
    stopped = result["actions"][0].split("-- ")[1].split()
    assert sorted(stopped) == ["bot-api@blue.service", "bot-old@green.service", "bot-worker@blue.service"]
    assert "--no-block" in result["actions"][0]


def test_units_of_an_app_whose_name_starts_the_same_and_migrations_are_left_running(module, systemd):
    """App shop never stops shop-admin's units (the name glob shop-*@* matches them), nor its own migration."""
    systemd.set(**{"shop-api@blue": _of("shop"), "shop-admin-api@blue": _of("shop-admin"),
                   "shop-migrate@green": _of("shop", "migrate"), "shop-worker@green": _of("shop", "worker")})
    result = run(module, systemd, stopped_app="shop", keep=["shop-api@blue.service"])
    assert result["changed"] is True
    assert result["actions"] == ["systemctl stop -- shop-worker@green.service"], result["actions"]
    units = systemd.units()
    assert units["shop-admin-api@blue.service"]["ActiveState"] == "active"
    assert units["shop-migrate@green.service"]["ActiveState"] == "active"


def test_units_that_do_not_exist_count_as_stopped_and_disabled(module, systemd):
    systemd.set(api_blue={"ActiveState": "inactive", "UnitFileState": "disabled"})
    result = run(module, systemd, stopped=["gone@blue.service"], disabled=["gone@blue.service"])
    assert result["changed"] is False and result["actions"] == [], result


def test_a_unit_that_fails_to_start_fails_with_its_journal(module, systemd):
    systemd.set(api_green={"ActiveState": "inactive", "UnitFileState": "disabled", "start_to": "failed"})
    result = run(module, systemd, started=["api-green.service"])
    assert result["failed"] is True
    assert "systemctl start -- api-green.service failed" in result["msg"] and "Traceback: boom" in result["msg"]


def test_missing_units_and_contradictions_are_named(module, systemd):
    systemd.set(api_blue={"ActiveState": "inactive"})
    assert "no such unit: nope.service" in run(module, systemd, started=["nope.service"])["msg"]
    both = run(module, systemd, started=["api-blue.service"], stopped=["api-blue.service"])
    assert "units listed in opposite states: api-blue.service" in both["msg"]


def _utc(seconds_ago: float) -> str:
    import datetime
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_restarted_units_started_after_fresh_since_are_left_running(module, systemd):
    import time
    started = int((time.monotonic() - 30) * 1e6)  # both ran for 30 s
    systemd.set(api_blue={"ActiveState": "active", "SubState": "running", "InactiveExitTimestampMonotonic": str(started)},
                worker_blue={"ActiveState": "inactive", "UnitFileState": "disabled"})
    units = ["api-blue.service", "worker-blue.service"]
    # The slot was assigned its release a minute ago: the API started since runs it; the worker starts.
    kept = run(module, systemd, restarted=units, fresh_since=_utc(60))
    assert kept["fresh"] == ["api-blue.service"]
    assert kept["actions"] == ["systemctl reset-failed -- worker-blue.service", "systemctl start -- worker-blue.service"]
    # Assigned 10 s ago: the API still runs what the slot held before, so it is restarted.
    systemd.set(api_blue={"ActiveState": "active", "SubState": "running", "InactiveExitTimestampMonotonic": str(started)})
    stale = run(module, systemd, restarted=["api-blue.service"], fresh_since=_utc(10))
    assert stale["fresh"] == [] and stale["actions"][0] == "systemctl stop -- api-blue.service"


def test_fresh_since_must_be_a_utc_time(module, systemd):
    systemd.set(api_blue={"ActiveState": "active", "SubState": "running"})
    refused = run(module, systemd, restarted=["api-blue.service"], fresh_since="yesterday")
    assert refused["failed"] is True and "fresh_since must be a UTC time" in refused["msg"]


def test_a_waited_stop_ends_before_its_successor_starts_while_the_rest_is_queued(module, systemd):
    systemd.set(worker_blue={"ActiveState": "active"}, scheduler_blue={"ActiveState": "active"},
                scheduler_green={"ActiveState": "inactive"})
    result = run(module, systemd, stopped=["worker-blue.service", "scheduler-blue.service"],
                 stop_waited=["scheduler-blue.service"], started=["scheduler-green.service"], no_block=True)
    assert result["actions"] == ["systemctl stop --no-block -- worker-blue.service",
                                 "systemctl stop -- scheduler-blue.service",
                                 "systemctl reset-failed -- scheduler-green.service",
                                 "systemctl start -- scheduler-green.service"]


def _busy_port_for(systemd, seconds):
    """An ss stand-in that reports one established connection for the next `seconds`."""
    until = time.time() + seconds
    ss = os.path.join(systemd.path, "ss")
    with open(ss, "w") as handle:
        handle.write("#!/bin/sh\n[ $(date +%%s) -lt %d ] && echo 'ESTAB 0 0 127.0.0.1:8001 127.0.0.1:50000'\nexit 0\n"
                     % (int(until) + 1))


def test_stop_last_moves_the_singleton_first_and_stops_the_rest_once_it_settled(module, systemd):
    systemd.set(api_blue={"ActiveState": "active"}, worker_blue={"ActiveState": "active"},
                scheduler_blue={"ActiveState": "active"}, scheduler_green={"ActiveState": "inactive"})
    _busy_port_for(systemd, 1)
    result = run(module, systemd, stopped=["api-blue.service", "worker-blue.service", "scheduler-blue.service"],
                 stop_waited=["scheduler-blue.service"], started=["scheduler-green.service"], no_block=True,
                 stop_last=True, drain={"api-blue.service": [8001]}, settle=3, settle_interval=0.05, settle_seconds=1)
    assert result["_rc"] == 0, result
    assert result["actions"] == ["systemctl stop -- scheduler-blue.service",
                                 "systemctl reset-failed -- scheduler-green.service",
                                 "systemctl start -- scheduler-green.service",
                                 "systemctl stop --no-block -- api-blue.service worker-blue.service"]
    assert result["drained"]["remaining"] == [] and result["drained"]["seconds"] > 0
    verbs = [c.split()[0] for c in systemd.calls()]
    # watched while the connections drained, not only after
    assert verbs[verbs.index("start"):].count("show") >= 3 and verbs[-1] == "stop"


def test_a_connection_opened_after_a_first_empty_look_is_drained_too(module, systemd):
    """A proxy's old worker can connect to the old port just after a look found none: the port must stay quiet."""
    systemd.set(api_blue={"ActiveState": "active"})
    ss = os.path.join(systemd.path, "ss")
    count = os.path.join(systemd.path, "ss-count")
    # No connection at the first look, one at the second and third, then none.
    with open(ss, "w") as handle:
        handle.write("#!/bin/sh\nn=$(cat %s 2>/dev/null || echo 0); echo $((n + 1)) > %s\n"
                     "case $n in 1|2) echo 'ESTAB 0 0 127.0.0.1:8001 127.0.0.1:50000' ;; esac\nexit 0\n" % (count, count))
    os.chmod(ss, 0o755)
    result = run(module, systemd, stopped=["api-blue.service"], drain={"api-blue.service": [8001]}, no_block=True)
    assert result["_rc"] == 0, result
    with open(count) as handle:
        looks = int(handle.read())
    assert looks >= 5 and result["drained"]["remaining"] == [], (looks, result["drained"])
    assert result["drained"]["seconds"] >= 1.0, result["drained"]


def test_stop_last_leaves_the_rest_running_when_the_started_unit_fails_to_settle(module, systemd):
    systemd.set(api_blue={"ActiveState": "active"}, scheduler_blue={"ActiveState": "active"},
                scheduler_green={"ActiveState": "inactive", "crash_after": 0.3})
    failed = run(module, systemd, stopped=["api-blue.service", "scheduler-blue.service"],
                 stop_waited=["scheduler-blue.service"], started=["scheduler-green.service"], no_block=True,
                 stop_last=True, settle=3, settle_interval=0.05, settle_seconds=2)
    assert failed["failed"] is True and "crash-looping" in failed["msg"], failed
    units = systemd.units()
    assert units["api-blue.service"]["ActiveState"] == "active"  # the previous slot still serves
    assert units["scheduler-blue.service"]["ActiveState"] == "inactive"


def test_started_units_are_watched_and_a_crash_loop_fails_with_its_journal(module, systemd):
    systemd.set(scheduler_green={"ActiveState": "inactive", "UnitFileState": "disabled"})
    result = run(module, systemd, started=["scheduler-green.service"], settle=3, settle_interval=0.05)
    assert result["_rc"] == 0
    verbs = [c.split()[0] for c in systemd.calls()]
    assert verbs[verbs.index("start"):] == ["start", "show", "show", "show"]
    systemd.set(scheduler_green={"ActiveState": "inactive", "UnitFileState": "disabled", "crashing": True})
    failed = run(module, systemd, started=["scheduler-green.service"], settle=3, settle_interval=0.05)
    assert failed["failed"] is True and "crash-looping" in failed["msg"] and "Traceback: boom" in failed["msg"]


def test_settle_seconds_watches_long_enough_to_see_a_crash_after_start_up(module, systemd):
    # The process runs for 1.5 s (its imports), then crash-loops: 3 checks 0.05 s apart miss it (even
    # on a loaded machine, where each check's fake systemctl takes a while).
    systemd.set(scheduler_green={"ActiveState": "inactive", "UnitFileState": "disabled", "crash_after": 1.5})
    missed = run(module, systemd, started=["scheduler-green.service"], settle=3, settle_interval=0.05)
    assert missed["_rc"] == 0
    systemd.set(scheduler_green={"ActiveState": "inactive", "UnitFileState": "disabled", "crash_after": 1.5})
    caught = run(module, systemd, started=["scheduler-green.service"], settle=3, settle_interval=0.05, settle_seconds=3)
    assert caught["failed"] is True and "crash-looping" in caught["msg"] and "Traceback: boom" in caught["msg"]
    systemd.set(scheduler_green={"ActiveState": "inactive", "UnitFileState": "disabled"})
    steady = run(module, systemd, started=["scheduler-green.service"], settle=1, settle_interval=0.1, settle_seconds=0.5)
    assert steady["_rc"] == 0
    verbs = [c.split()[0] for c in systemd.calls()]
    assert verbs[verbs.index("start"):].count("show") >= 5  # watched for 0.5 s, not one check
