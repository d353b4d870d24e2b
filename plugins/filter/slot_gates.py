# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: slot_gates
short_description: The health gates of one slot of an application, one per web process
version_added: 0.1.0
description:
  - From an application layout (the output of M(botstack.deploy.app_layout#filter)), the health gate of each web
    process on the given slot, in the form M(botstack.deploy.health_gate) and the I(gates) of
    M(botstack.deploy.slot_switch) take - the health endpoint on the slot's port (bind addresses C(0.0.0.0) and
    C(::) are reached on C(127.0.0.1)), the process's unit and the slot's workers watched meanwhile.
positional: slot
options:
  _input:
    description: The application layout.
    type: dict
    required: true
  slot:
    description: The slot (colour).
    type: str
    required: true
  kept:
    description: Units running since their slot got the release, gated then; they need one healthy answer.
    type: list
    elements: str
    default: []
  workers:
    description: Units watched beside each web process; the slot's workers when not given.
    type: list
    elements: str
  successes:
    description: Consecutive healthy answers a process started now needs.
    type: int
    default: 3
  interval:
    description: Seconds between attempts.
    type: float
    default: 0.25
  timeout:
    description: Seconds after which a gate fails.
    type: float
    default: 60
  request_timeout:
    description: Seconds one request may take.
    type: float
    default: 5
  settle_seconds:
    description: Seconds every watched unit's main process must have run before a gate passes.
    type: float
    default: 0
  host:
    description:
      - The C(Host) header of each gate's requests, unless the process's C(health.host) names one - the public name
        nginx forwards, so that an app checking it (Django C(ALLOWED_HOSTS), Starlette C(TrustedHostMiddleware))
        answers the gate as it answers its users. Empty sends the address the gate connects to.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Gate slot green
  botstack.deploy.health_gate:
    url: "{{ item.url }}"
    successes: "{{ item.successes }}"
    units: "{{ item.units }}"
  loop: "{{ app_layout | botstack.deploy.slot_gates('green') }}"
"""

RETURN = r"""
_value:
  description: >-
    One dict per web process - C(url), C(host), C(validate_certs), C(status_codes), C(json_field), C(json_value),
    C(successes), C(interval), C(timeout), C(request_timeout), C(units), C(settle_seconds).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError


def slot_gates(layout, slot, kept=None, workers=None, successes=3, interval=0.25, timeout=60, request_timeout=5,
               settle_seconds=0, host=""):
    """The health gates of a slot, one per web process (as the health_gate module and slot_switch's gates take
    them): its health endpoint on the slot's port, its unit and the slot's workers watched meanwhile. A process
    in kept (running since its slot got the release, gated then) needs one healthy answer."""
    if slot not in layout["slots"]:
        raise AnsibleFilterError("slot_gates: unknown slot %r; the slots are %s" % (slot, ", ".join(layout["slots"])))
    address = layout["bind_address"]
    address = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
    address = "[%s]" % address if ":" in address else address
    watched = layout["units"][slot]["worker"] if workers is None else list(workers)
    gates = []
    for process in layout["web"]:
        health, unit = process["health"], process["units"][slot]
        header = health.get("host") or host
        gates.append({
            "url": "%s://%s:%d%s" % (health.get("scheme") or "http", address, process["ports"][slot], health["path"]),
            "host": header or None,
            # A process answering https itself on its private port has no certificate for that address.
            "validate_certs": False,
            "status_codes": health["status_codes"],
            "json_field": health["json_field"] or None,
            "json_value": health["json_value"] if health["json_field"] else None,
            "successes": 1 if unit in (kept or []) else int(successes),
            "interval": float(interval),
            "timeout": float(timeout),
            "request_timeout": float(request_timeout),
            "units": [unit] + [u for u in watched if u != unit],
            "settle_seconds": float(settle_seconds),
        })
    return gates


class FilterModule(object):
    def filters(self):
        return {"slot_gates": slot_gates}
