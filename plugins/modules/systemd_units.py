#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: systemd_units
short_description: Stop, start, enable and disable a set of systemd units in one call, in a fixed order
version_added: 0.1.0
description:
  - Brings several units to the requested states with one round trip to the host, where
    M(ansible.builtin.systemd_service) needs one task (and one round trip) per unit. A blue/green
    switch touches every process of two slots, so this is what keeps a deploy fast.
  - The order is always I(stopped) (after draining), then I(started) (then watched for I(settle) checks),
    then I(disabled), then I(enabled); each list is acted on in one C(systemctl) call, and only for the units
    not already in the requested state.
  - A unit that fails to start, or fails, crash-loops or stops while it settles, fails the task with the
    unit's state and its journal since that start.
  - Read-only in check mode (reports what would change).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  stopped:
    description: Units to stop (those active, activating or reloading).
    type: list
    elements: str
    default: []
  stopped_matching:
    description:
      - A unit name pattern (C(systemctl list-units) glob, e.g. C(botstack-*@*.service)); every running unit it
        matches is stopped, except those in I(keep) and I(started).
    type: str
  keep:
    description: Units I(stopped_matching) leaves running.
    type: list
    elements: str
    default: []
  drain:
    description:
      - Per unit, local TCP ports whose established connections must finish before the unit is stopped
        (a web process's port, after the proxy stopped sending it new requests). Waits at most I(drain_timeout).
    type: dict
    default: {}
  drain_timeout:
    description: Seconds to wait for the connections of I(drain) to finish; the units are stopped anyway after it.
    type: float
    default: 60
  started:
    description: Units to start (those not active).
    type: list
    elements: str
    default: []
  restarted:
    description:
      - Units that must run a process started by this task - running ones are stopped (after I(drain)) and all
        are started, for instance after the release their slot runs was changed.
    type: list
    elements: str
    default: []
  fresh_since:
    description:
      - A UTC time (ISO 8601, e.g. C(2026-11-23T10:00:00.000000Z)). Units of I(restarted) that are running and were
        started at or after it are left running, as they already run what they must. The deploy passes the time the
        slot was assigned its release, so a rollback to a slot whose processes were kept running reuses them.
    type: str
  settle:
    description:
      - After starting, check this many times (every I(settle_interval) seconds) that every unit of I(started) is
        running and not restarting. 0 does not watch.
    type: int
    default: 0
  settle_interval:
    description: Seconds between the I(settle) checks.
    type: float
    default: 0.5
  settle_seconds:
    description:
      - Watch the units of I(started) for at least this many seconds after their start, however many I(settle) checks
        that takes. A process that crashes once it has imported its code (a Python scheduler takes a second or more
        to get there) is running until then, so a watch shorter than that misses it. 0 watches for the I(settle)
        checks only.
    type: float
    default: 0
  enabled:
    description: Units to enable (their C([Install]) section wires them into their targets).
    type: list
    elements: str
    default: []
  disabled:
    description: Units to disable.
    type: list
    elements: str
    default: []
  no_block:
    description:
      - Queue the stop jobs and return without waiting for them (for processes that finish the work in
        hand first, such as queue workers). Starts always wait.
    type: bool
    default: false
  stop_waited:
    description:
      - Units whose stop is waited for even with I(no_block), for instance a singleton whose successor is in
        I(started) - the two never run at once.
    type: list
    elements: str
    default: []
  daemon_reload:
    description: Run C(systemctl daemon-reload) first.
    type: bool
    default: false
  journal_lines:
    description: Journal lines of a unit that failed attached to the failure.
    type: int
    default: 30
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Start the green slot's processes, watch them settle, and make them the ones that start at boot
  botstack.deploy.systemd_units:
    started: [botstack-api@green.service, botstack-worker@green.service]
    settle: 3
    enabled: [botstack-api@green.service, botstack-worker@green.service]
    disabled: [botstack-api@blue.service, botstack-worker@blue.service]

- name: Stop everything of the app outside the green slot, after the blue API's connections finished
  botstack.deploy.systemd_units:
    stopped_matching: botstack-*@*.service
    keep: [botstack-api@green.service, botstack-worker@green.service]
    drain: {botstack-api@blue.service: [8001]}
    no_block: true
"""

RETURN = r"""
units:
  description: Per unit acted on or asked about, its state before the task (ActiveState, UnitFileState...).
  returned: always
  type: dict
  sample: {"botstack-api@green.service": {"ActiveState": "inactive", "UnitFileState": "disabled"}}
actions:
  description: The C(systemctl) commands run (or that would run in check mode).
  returned: always
  type: list
  elements: str
  sample: ["systemctl stop botstack-api@blue.service", "systemctl start botstack-api@green.service"]
fresh:
  description: Units of I(restarted) left running because they started after I(fresh_since).
  returned: always
  type: list
  elements: str
drained:
  description: Seconds spent draining, and the connections still open when the drain ended.
  returned: when units with I(drain) ports were stopped
  type: dict
  sample: {"seconds": 1.5, "remaining": []}
"""

import fnmatch
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.systemd import (
    established,
    journal,
    parse_utc,
    restarts,
    running_since,
    unit_problem,
    unit_states,
)

_RUNNING = ("active", "activating", "reloading")
_ENABLED = ("enabled", "enabled-runtime", "alias", "linked", "linked-runtime")


def _running_matching(module, pattern):
    rc, out, err = module.run_command(["systemctl", "list-units", "--plain", "--no-legend", "--type=service",
                                       "--state=" + ",".join(_RUNNING), pattern])
    if rc != 0:
        module.fail_json(msg="systemctl list-units %s failed: %s" % (pattern, (err or out).strip()))
    return [line.split()[0] for line in out.splitlines() if line.split() and fnmatch.fnmatch(line.split()[0], pattern)]


def _parse_utc(module, text):
    moment = parse_utc(text)
    if moment is None:
        module.fail_json(msg="fresh_since must be a UTC time such as 2026-11-23T10:00:00.000000Z, got %r" % text)
    return moment


def _drain(module, ports, timeout):
    started = time.monotonic()
    remaining = established(module, ports)
    while remaining and time.monotonic() - started < timeout:
        time.sleep(0.25)
        remaining = established(module, ports)
    return {"seconds": round(time.monotonic() - started, 2), "remaining": remaining}


def _evidence(module, units, lines, seen=None):
    states = unit_states(module, units)
    return dict((u, journal(module, u, (seen or states)[u], lines)) for u in units), states


def _settle(module, units, checks, interval, lines, seconds=0.0):
    """Watch started units for `checks` checks and at least `seconds`: all running, none restarted; fail fast otherwise."""
    baseline = None
    until = time.monotonic() + seconds
    check = 0
    while True:
        if check:
            time.sleep(interval)
        last = check >= checks - 1 and time.monotonic() >= until
        states = unit_states(module, units)
        if baseline is None:
            baseline = dict((u, restarts(states[u])) for u in units)
        for unit in units:
            problem = unit_problem(unit, states[unit], baseline[unit], 0)
            if problem is None and states[unit].get("SubState") != "running" and last:
                problem = "unit %s is still %s/%s" % (unit, states[unit].get("ActiveState"), states[unit].get("SubState"))
            if problem:
                logs, dummy = _evidence(module, [unit], lines, states)
                module.fail_json(msg="%s\njournal of %s (the run that failed):\n%s" % (problem, unit, "\n".join(logs[unit])),
                                 units=states, journal=logs)
        if last:
            return
        check += 1


def main():
    module = AnsibleModule(
        argument_spec=dict(
            stopped=dict(type="list", elements="str", default=[]),
            stopped_matching=dict(type="str"),
            keep=dict(type="list", elements="str", default=[]),
            drain=dict(type="dict", default={}),
            drain_timeout=dict(type="float", default=60),
            started=dict(type="list", elements="str", default=[]),
            restarted=dict(type="list", elements="str", default=[]),
            fresh_since=dict(type="str"),
            settle=dict(type="int", default=0),
            settle_interval=dict(type="float", default=0.5),
            settle_seconds=dict(type="float", default=0),
            enabled=dict(type="list", elements="str", default=[]),
            disabled=dict(type="list", elements="str", default=[]),
            no_block=dict(type="bool", default=False),
            stop_waited=dict(type="list", elements="str", default=[]),
            daemon_reload=dict(type="bool", default=False),
            journal_lines=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    p = module.params
    both = sorted((set(p["stopped"]) & set(p["started"] + p["restarted"])) | (set(p["enabled"]) & set(p["disabled"])))
    if both:
        module.fail_json(msg="units listed in opposite states: %s; list each unit once per pair "
                             "(stopped/started, enabled/disabled)" % ", ".join(both))
    if p["settle"] < 0 or p["drain_timeout"] < 0 or p["settle_seconds"] < 0:
        module.fail_json(msg="settle, settle_seconds and drain_timeout must be 0 or more")
    actions = []
    if p["daemon_reload"]:
        actions.append(["systemctl", "daemon-reload"])
        if not module.check_mode:
            module.run_command(["systemctl", "daemon-reload"], check_rc=True)

    stray = []
    if p["stopped_matching"]:
        spared = set(p["keep"]) | set(p["started"]) | set(p["restarted"])
        stray = [u for u in _running_matching(module, p["stopped_matching"]) if u not in spared]
    every = list(dict.fromkeys(p["stopped"] + stray + p["restarted"] + p["started"] + p["enabled"] + p["disabled"]))
    states = unit_states(module, every)
    missing = sorted(u for u in every if states[u].get("LoadState") == "not-found" and u not in stray)
    if missing:
        module.fail_json(msg="no such unit: %s (is the app role applied, and the unit name right?)" % ", ".join(missing),
                         units=states)

    restarted = p["restarted"]
    if p["fresh_since"] and restarted:
        since = _parse_utc(module, p["fresh_since"])
        result_fresh = [u for u in restarted if running_since(states[u], since)]
        restarted = [u for u in restarted if u not in result_fresh]
    else:
        result_fresh = []
    to_stop = [u for u in list(dict.fromkeys(p["stopped"] + stray + restarted))
               if states[u].get("ActiveState") in _RUNNING]
    to_start = list(dict.fromkeys(restarted + [u for u in p["started"] if states[u].get("ActiveState") != "active"]))
    to_disable = [u for u in p["disabled"] if states[u].get("UnitFileState") in _ENABLED]
    to_enable = [u for u in p["enabled"] if states[u].get("UnitFileState") not in _ENABLED]
    drain_ports = sorted(set(int(port) for u in to_stop for port in (p["drain"].get(u) or [])))
    plan = []
    if to_stop:
        # Units restarted here must be gone before they start again: never --no-block for them.
        waited = set(restarted) | set(p["stop_waited"])
        queued = [u for u in to_stop if u not in waited] if p["no_block"] else []
        if queued:
            plan.append(["systemctl", "stop", "--no-block", "--"] + queued)
        if len(queued) < len(to_stop):
            plan.append(["systemctl", "stop", "--"] + [u for u in to_stop if u not in queued])
    if to_start:
        # A deliberate start clears the unit's failed state and its start-rate counter, so rapid
        # deploys never meet StartLimitBurst (crash loops are caught by the gate instead).
        plan.append(["systemctl", "reset-failed", "--"] + to_start)
        plan.append(["systemctl", "start", "--"] + to_start)
    if to_disable:
        # The enable that follows reloads systemd once for both.
        plan.append(["systemctl", "disable", "--quiet"] + (["--no-reload"] if to_enable else []) + ["--"] + to_disable)
    if to_enable:
        plan.append(["systemctl", "enable", "--quiet", "--"] + to_enable)

    result = dict(changed=bool(plan), units=states, actions=[" ".join(a) for a in actions + plan], fresh=result_fresh)
    if not module.check_mode:
        for argv in plan:
            if argv[1] == "stop" and drain_ports and "drained" not in result:
                result["drained"] = _drain(module, drain_ports, p["drain_timeout"])
                if result["drained"]["remaining"]:
                    module.warn("stopping %s with %d connection(s) still open after %ss of draining"
                                % (", ".join(to_stop), len(result["drained"]["remaining"]), p["drain_timeout"]))
            rc, out, err = module.run_command(argv)
            if rc != 0 and argv[1] == "reset-failed":
                continue  # nothing to reset (the unit never failed) is fine
            if rc != 0:
                failed = to_start if argv[1] == "start" else []
                logs, after = _evidence(module, list(failed), p["journal_lines"])
                logs = dict((u, lines) for u, lines in logs.items() if after[u].get("ActiveState") != "active")
                module.fail_json(msg="%s failed: %s%s" % (
                    " ".join(argv), (err or out).strip(),
                    "".join("\njournal of %s (the run that failed):\n%s" % (u, "\n".join(lines)) for u, lines in logs.items())),
                    units=states, journal=logs, actions=result["actions"])
            if argv[1] == "start" and (p["settle"] or p["settle_seconds"]):
                _settle(module, to_start, max(p["settle"], 1), p["settle_interval"], p["journal_lines"], p["settle_seconds"])

    changed_units = to_stop + to_start + to_disable + to_enable
    if module._diff:
        result["diff"] = dict(
            before="".join("%s: %s %s\n" % (u, states[u].get("ActiveState"), states[u].get("UnitFileState"))
                           for u in changed_units),
            after="".join("%s: %s\n" % (u, "stopped" if u in to_stop else "started" if u in to_start
                                        else "disabled" if u in to_disable else "enabled") for u in changed_units))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
