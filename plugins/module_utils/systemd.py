# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading systemd units and their journal, shared by health_gate and systemd_units."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import time

UNIT_PROPERTIES = ("Id", "ActiveState", "SubState", "Result", "NRestarts", "LoadState", "UnitFileState",
                   "InvocationID", "InactiveExitTimestampMonotonic")


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


def started_at(state):
    """Wall-clock time the unit's current run started, or None (systemd records it on CLOCK_MONOTONIC,
    which time.monotonic() reads too)."""
    try:
        since_boot = int(state.get("InactiveExitTimestampMonotonic") or 0) / 1e6
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


def journal(module, unit, state, lines):
    """The journal lines of the unit's run that state describes (its InvocationID), not of other runs.

    Given the state read when a failure was seen, a crash loop's evidence is the complete output of
    the run that crashed, not the beginning of the next attempt.
    """
    by_unit = ["--unit", unit]
    started = started_at(state)
    if started is not None:
        by_unit += ["--since", "@%d" % int(started - 1)]
    invocation = state.get("InvocationID") or ""
    queries = [["_SYSTEMD_INVOCATION_ID=%s" % invocation]] if len(invocation) == 32 else []
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
