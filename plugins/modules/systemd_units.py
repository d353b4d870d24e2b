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
    not already in the requested state. With I(stop_last), the stops not waited for come after the start instead.
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
    description: Units to stop (those active, activating or reloading). A unit that does not exist counts as stopped.
    type: list
    elements: str
    default: []
  stopped_app:
    description:
      - An application's name (botstack.deploy.app's C(app_name)); every running unit of that application is
        stopped, except those in I(keep), I(started) and I(restarted). A unit belongs to it when it is named
        C(<app>-*@*.service) and its environment holds C(BOTSTACK_APP=<app>) - never a unit of another app
        whose name starts the same (C(shop) and C(shop-admin)). Its migration units (C(BOTSTACK_KIND=migrate))
        are never stopped this way, as that would kill a migration half-way.
    type: str
  keep:
    description: Units I(stopped_app) leaves running.
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
    description: Units to disable (a unit that does not exist counts as disabled).
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
  stop_last:
    description:
      - Stop the units queued with I(no_block) only once the units of I(started) settled, their connections
        (I(drain)) finishing meanwhile - the previous slot keeps serving while its successor's singleton is watched,
        and stays up when that fails. The stops waited for (I(stop_waited), I(restarted)) still come first.
    type: bool
    default: false
  daemon_reload:
    description: Run C(systemctl daemon-reload) first.
    type: bool
    default: false
  secrets:
    description:
      - Values never shown in the result - above all in the journal lines of a unit that failed, which an app can
        fill with its settings. Each is masked, also URL-quoted and escaped as an app prints it (4 characters or more).
    type: list
    elements: str
    default: []
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
    stopped_app: botstack
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat
from ansible_collections.botstack.deploy.plugins.module_utils.redact import SECRETS_OPTION, protect
from ansible_collections.botstack.deploy.plugins.module_utils.systemd import apply_units


def main():
    heartbeat()
    module = AnsibleModule(
        argument_spec=dict(
            stopped=dict(type="list", elements="str", default=[]),
            stopped_app=dict(type="str"),
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
            stop_last=dict(type="bool", default=False),
            daemon_reload=dict(type="bool", default=False),
            journal_lines=dict(type="int", default=30),
            secrets=SECRETS_OPTION,
        ),
        supports_check_mode=True,
    )
    protect(module, module.params["secrets"])
    module.exit_json(**apply_units(module, module.params))


if __name__ == "__main__":
    main()
