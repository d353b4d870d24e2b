# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading systemd units and their journal, and changing units, shared by health_gate, systemd_units and
slot_switch."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import fnmatch
import time

UNIT_PROPERTIES = ("Id", "ActiveState", "SubState", "Result", "NRestarts", "LoadState", "UnitFileState",
                   "InvocationID", "InactiveExitTimestampMonotonic", "ExecMainStartTimestampMonotonic")


def unit_states(module, units):
    """{unit: {property: value}} for every unit, read with one systemctl call."""
    if not units:
        return {}
    rc, out, err = module.run_command(
        ["systemctl", "show", "--property=" + ",".join(UNIT_PROPERTIES), "--"] + list(units))
    if rc != 0:
        return dict((unit, {"error": (err or out).strip()}) for unit in units)
    blocks, current = [], {}
    for line in out.splitlines() + [""]:
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    # systemctl prints one block per unit, in the order asked.
    return dict((unit, blocks[i] if i < len(blocks) else {}) for i, unit in enumerate(units))


def parse_utc(text):
    """Seconds since the epoch of a UTC time such as 2026-11-23T10:00:00.000000Z, or None."""
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.datetime.strptime(text, layout).replace(tzinfo=datetime.timezone.utc).timestamp()
        except (TypeError, ValueError):
            pass
    return None


def started_at(state, process=False):
    """Wall-clock time the unit's current run started (with process, its main process: a restart of
    Restart=on-failure starts a new one, not a new run), or None. systemd records it on
    CLOCK_MONOTONIC, which time.monotonic() reads too."""
    key = "ExecMainStartTimestampMonotonic" if process else "InactiveExitTimestampMonotonic"
    try:
        since_boot = int(state.get(key) or 0) / 1e6
    except ValueError:
        return None
    if not since_boot:
        return None
    return time.time() - (time.monotonic() - since_boot)


def running_since(state, since):
    """Whether the unit runs, in a run started at or after `since` (seconds since the epoch)."""
    started = started_at(state)
    return (state.get("ActiveState") == "active" and state.get("SubState") == "running"
            and started is not None and since is not None and started >= since)


def restarts(state):
    try:
        return int(state.get("NRestarts") or 0)
    except ValueError:
        return 0


def unit_problem(unit, state, baseline, max_restarts):
    """Why the unit cannot become healthy any more, or None."""
    active, sub = state.get("ActiveState"), state.get("SubState")
    if state.get("LoadState") == "not-found":
        return "unit %s does not exist (check the unit name, and that the app role ran)" % unit
    if active == "failed":
        return "unit %s entered the failed state (result: %s)" % (unit, state.get("Result"))
    restarted = restarts(state) - baseline
    if restarted > max_restarts:
        return "unit %s is crash-looping: restarted %d time(s) while it was watched (result: %s)" % (
            unit, restarted, state.get("Result"))
    if sub == "auto-restart" and max_restarts == 0:
        return "unit %s is crash-looping: it exited (result: %s) and waits to be restarted" % (unit, state.get("Result"))
    if active in ("inactive", "deactivating"):
        return "unit %s is not running (%s/%s): start it before gating, or it stopped" % (unit, active, sub)
    return None


JOURNAL_WAIT = 5.0


def journal(module, unit, state, lines, since=None):
    """The journal lines of the unit's run that state describes (its InvocationID), not of other runs.

    Given the state read when a failure was seen, a crash loop's evidence is the complete output of
    the run that crashed, not the beginning of the next attempt. A unit that systemd already started
    again (running, restarted) crashed in an earlier run: then its lines since `since` (when the
    watch began), the crash and the restart both.
    """
    by_unit = ["--unit", unit]
    started = started_at(state)
    invocation = state.get("InvocationID") or ""
    queries = [["_SYSTEMD_INVOCATION_ID=%s" % invocation]] if len(invocation) == 32 else []
    if since is not None and restarts(state) > 0 and state.get("ActiveState") in _RUNNING:
        started, queries = since, []
    if started is not None:
        by_unit += ["--since", "@%d" % int(started - 1)]
    base = ["journalctl", "--lines", str(lines), "--no-pager", "--output", "short-iso"]
    # journald reads a unit's output from its stream asynchronously: the lines of a run that just
    # ended can arrive a moment after systemd reports it failed (later on a busy host). Lines of a
    # process that exited at once may lack the invocation id (its cgroup was gone when journald
    # looked), so after a second the unit's lines since this run started count too.
    began = time.monotonic()
    while True:
        for match in queries + ([by_unit] if not queries or time.monotonic() - began >= 1.0 else []):
            rc, out, err = module.run_command(base + match)
            if rc != 0:
                return err.splitlines()[-lines:]
            if [line for line in out.splitlines() if not line.startswith("-- ")]:
                return out.splitlines()[-lines:]
        if time.monotonic() - began >= JOURNAL_WAIT:
            return out.splitlines()[-lines:]
        time.sleep(0.25)


def established(module, ports):
    """Established TCP connections whose local port is one of ports (ss from iproute2)."""
    if not ports:
        return []
    expression = " or ".join("sport = :%d" % int(port) for port in ports)
    rc, out, dummy = module.run_command(["ss", "-Htn", "state", "established", "( %s )" % expression])
    return [line for line in out.splitlines() if line.strip()] if rc == 0 else []


_RUNNING = ("active", "activating", "reloading")
_ENABLED = ("enabled", "enabled-runtime", "alias", "linked", "linked-runtime")


def _running_of_app(module, app):
    """Running units of app: named <app>-*@*.service and started with BOTSTACK_APP=<app> in their environment
    (botstack.deploy.app's units carry it), so that app shop never matches units of app shop-admin. Migrations
    (BOTSTACK_KIND=migrate) are never among them: stopping one would kill it half-way."""
    pattern = "%s-*@*.service" % app
    rc, out, err = module.run_command(["systemctl", "list-units", "--plain", "--no-legend", "--type=service",
                                       "--state=" + ",".join(_RUNNING), pattern])
    if rc != 0:
        module.fail_json(msg="systemctl list-units %s failed: %s" % (pattern, (err or out).strip()))
    named = [line.split()[0] for line in out.splitlines() if line.split() and fnmatch.fnmatch(line.split()[0], pattern)]
    if not named:
        return []
    rc, out, err = module.run_command(["systemctl", "show", "--property=Id,Environment", "--"] + named)
    owned = []
    # One block of properties per unit (in systemd's order of properties, not the order asked).
    for block in out.split("\n\n"):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        words = props.get("Environment", "").split()
        if "BOTSTACK_APP=%s" % app in words and "BOTSTACK_KIND=migrate" not in words:
            owned.append(props.get("Id"))
    return [u for u in named if u in owned]


def _parse_utc(module, text):
    moment = parse_utc(text)
    if moment is None:
        module.fail_json(msg="fresh_since must be a UTC time such as 2026-11-23T10:00:00.000000Z, got %r" % text)
    return moment


# How long the ports must stay without a connection: a proxy's old worker, slow to exit under load, can still
# open one to the old port for a request it read before its reload, after a single look found none.
DRAIN_QUIET_SECONDS = 1.0


def _drain(module, ports, timeout, watch=None):
    """Wait until no connection to ports is established for DRAIN_QUIET_SECONDS on end (at most timeout s); started units are
    watched meanwhile."""
    started = time.monotonic()
    remaining = established(module, ports)
    quiet_since = None if remaining else started
    while time.monotonic() - started < timeout and (remaining or time.monotonic() - quiet_since < DRAIN_QUIET_SECONDS):
        time.sleep(0.25)
        if watch:
            watch.check()
        remaining = established(module, ports)
        if remaining:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
    return {"seconds": round(time.monotonic() - started, 2), "remaining": remaining}


def _evidence(module, units, lines, seen=None, since=None):
    states = unit_states(module, units)
    return dict((u, journal(module, u, (seen or states)[u], lines, since)) for u in units), states


class _Watch(object):
    """Units just started, looked at again and again: all running, none restarted since the first look; a
    problem fails the task at once, with the unit's journal of that start."""

    def __init__(self, module, units, lines):
        self.module, self.units, self.lines = module, units, lines
        self.since = time.time()
        self.baseline = None
        self.count = 0

    def check(self, last=False):
        states = unit_states(self.module, self.units)
        if self.baseline is None:
            self.baseline = dict((u, restarts(states[u])) for u in self.units)
        self.count += 1
        for unit in self.units:
            problem = unit_problem(unit, states[unit], self.baseline[unit], 0)
            if problem is None and states[unit].get("SubState") != "running" and last:
                problem = "unit %s is still %s/%s" % (unit, states[unit].get("ActiveState"), states[unit].get("SubState"))
            if problem:
                logs, dummy = _evidence(self.module, [unit], self.lines, states, self.since)
                self.module.fail_json(msg="%s\njournal of %s (the run that failed):\n%s" % (problem, unit, "\n".join(logs[unit])),
                                      units=states, journal=logs)


def _settle(watch, checks, interval, until):
    """Go on watching until `checks` checks were made and the clock reached `until`."""
    while True:
        if watch.count:
            time.sleep(interval)
        last = watch.count >= checks - 1 and time.monotonic() >= until
        watch.check(last)
        if last:
            return


def apply_units(module, p):
    """Stop, start, restart, enable and disable units as the systemd_units module's options p say; fails
    through module.fail_json. Returns that module's result. Shared by it and the slot switch."""
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
    if p["stopped_app"]:
        spared = set(p["keep"]) | set(p["started"]) | set(p["restarted"])
        stray = [u for u in _running_of_app(module, p["stopped_app"]) if u not in spared]
    every = list(dict.fromkeys(p["stopped"] + stray + p["restarted"] + p["started"] + p["enabled"] + p["disabled"]))
    states = unit_states(module, every)
    # A unit that does not exist is stopped and disabled already; one to start or enable must exist.
    needed = set(p["restarted"] + p["started"] + p["enabled"])
    missing = sorted(u for u in needed if states[u].get("LoadState") == "not-found")
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
    to_disable = [u for u in p["disabled"] if states[u].get("UnitFileState") in _ENABLED
                  and states[u].get("LoadState") != "not-found"]
    to_enable = [u for u in p["enabled"] if states[u].get("UnitFileState") not in _ENABLED]
    # Units restarted here must be gone before they start again: never --no-block for them.
    waited = set(restarted) | set(p["stop_waited"])
    queued = [u for u in to_stop if u not in waited] if p["no_block"] else []
    stops = []
    if queued:
        stops.append(["systemctl", "stop", "--no-block", "--"] + queued)
    if len(queued) < len(to_stop):
        stops.append(["systemctl", "stop", "--"] + [u for u in to_stop if u not in queued])
    # With stop_last, only the stops their successors wait for come first; the others follow the start.
    late = [argv for argv in stops if p["stop_last"] and not waited.intersection(argv[2:])]
    plan = [argv for argv in stops if argv not in late]
    if to_start:
        # A deliberate start clears the unit's failed state and its start-rate counter, so rapid
        # deploys never meet StartLimitBurst (crash loops are caught by the gate instead).
        plan.append(["systemctl", "reset-failed", "--"] + to_start)
        plan.append(["systemctl", "start", "--"] + to_start)
    plan.extend(late)
    if to_disable:
        # The enable that follows reloads systemd once for both.
        plan.append(["systemctl", "disable", "--quiet"] + (["--no-reload"] if to_enable else []) + ["--"] + to_disable)
    if to_enable:
        plan.append(["systemctl", "enable", "--quiet", "--"] + to_enable)

    result = dict(changed=bool(plan), units=states, actions=[" ".join(a) for a in actions + plan], fresh=result_fresh)
    watch, until = None, 0
    settling = to_start and (p["settle"] or p["settle_seconds"])
    if not module.check_mode:
        for argv in plan:
            if argv[1] == "stop":
                stopping = argv[argv.index("--") + 1:]
                ports = sorted(set(int(port) for u in stopping for port in (p["drain"].get(u) or [])))
                if ports:
                    drained = _drain(module, ports, p["drain_timeout"], watch)
                    if drained["remaining"]:
                        module.warn("stopping %s with %d connection(s) still open after %ss of draining"
                                    % (", ".join(stopping), len(drained["remaining"]), p["drain_timeout"]))
                    before = result.get("drained", {"seconds": 0, "remaining": []})
                    result["drained"] = {"seconds": round(before["seconds"] + drained["seconds"], 2),
                                         "remaining": before["remaining"] + drained["remaining"]}
                if watch:  # the started units settle before the rest stops (stop_last)
                    _settle(watch, max(p["settle"], 1), p["settle_interval"], until)
                    watch = None
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
            if argv[1] == "start" and settling:
                watch, until = _Watch(module, to_start, p["journal_lines"]), time.monotonic() + p["settle_seconds"]
                watch.check()
                if not late:
                    _settle(watch, max(p["settle"], 1), p["settle_interval"], until)
                    watch = None

    changed_units = to_stop + to_start + to_disable + to_enable
    if module._diff:
        result["diff"] = dict(
            before="".join("%s: %s %s\n" % (u, states[u].get("ActiveState"), states[u].get("UnitFileState"))
                           for u in changed_units),
            after="".join("%s: %s\n" % (u, "stopped" if u in to_stop else "started" if u in to_start
                                        else "disabled" if u in to_disable else "enabled") for u in changed_units))
    return result
