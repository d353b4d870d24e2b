#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: slot_switch
short_description: Make a started slot live in one call - old workers stopped, boot units swapped, current switched, local nginx entry
version_added: 0.1.0
description:
  - The blue/green switch of the deploy role as one module run (one round trip instead of four),
    in the order the steps take when run apart, each with the same guarantees as the module it shares its
    code with.
  - Given I(gates), first the new slot is gated (M(botstack.deploy.health_gate), one gate after the other);
    a gate that fails fails the task with its evidence before anything changes.
  - First the units (M(botstack.deploy.systemd_units)) - I(stopped) are stopped without waiting for them (old
    workers finish the task in hand on their own time), I(disabled) and I(enabled) swap the units started at boot.
  - Then the release (M(botstack.deploy.release) with I(state=active) or I(state=rolled_back)) - C(current)
    switches to I(slot), which must run I(release_id) already; the lineage and status are recorded.
  - Last, when I(upstream) is given, this host's entry of the nginx upstream on this same host
    (M(botstack.deploy.nginx_upstream_server)) - written atomically, C(nginx -t), graceful reload; the previous
    entry is put back when nginx rejects the new one. A balancer on other hosts keeps the separate, delegated
    M(botstack.deploy.nginx_upstream_server) task.
  - A failing step fails the task with its module's message; the steps before it stay done, as when the three
    modules run one after the other. Each step is idempotent, so a repeated or interrupted run ends where one clean
    run ends.
  - In check mode only the release step runs (it reports the switch); gates, units and nginx are left alone.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: partial
    details: Reports the release switch; the gate, unit and nginx steps are skipped.
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  app_root:
    description: The application root holding C(releases/), C(slots/) and C(current).
    type: path
    required: true
  release_id:
    description:
      - The release to make live. With I(state=rolled_back), omit it to roll back to the previous healthy release.
    type: str
  state:
    description: C(active) for a deploy, C(rolled_back) for a rollback (the release left is marked failed).
    type: str
    choices: [active, rolled_back]
    default: active
  slot:
    description: The slot (colour) that runs I(release_id) and becomes live.
    type: str
    required: true
  status:
    description: Status recorded with the switch (I(state=active) only), e.g. C(healthy) after the gate.
    type: str
    choices: [pending, ready, healthy, failed]
  force:
    description: Activate a release marked failed (I(state=active)), or one not complete.
    type: bool
    default: false
  gates:
    description:
      - Health gates the new slot passes before anything is switched, as M(botstack.deploy.health_gate) runs them
        (see its options), one per web process.
      - A gate with I(after_switch) runs once the switch is done and the proxy on this host points at the new slot
        - the public path a user's request takes - and before I(status) is recorded; when it fails, the task fails
        with C(failed_step=public), the switch done (the caller puts the previous slot back).
    type: list
    elements: dict
    default: []
    suboptions:
      url:
        description: C(http://) or C(https://) URL to poll; without it, only I(units) are watched.
        type: str
      journal_lines:
        description: Journal lines of the failing unit attached to a failure (those logged since its current start).
        type: int
        default: 30
      after_switch:
        description: Run this gate after the switch (the public path), not before it.
        type: bool
        default: false
      host:
        description: The C(Host) header of the requests (not secret); default the URL's host.
        type: str
      connect_to:
        description: Send the requests to this address (C(address[:port])), the URL's host as TLS server name and C(Host).
        type: str
      headers:
        description: Extra request headers (never logged).
        type: dict
        default: {}
      expect_headers:
        description: Response headers (and values) an answer must carry to count as healthy.
        type: dict
        default: {}
      validate_certs:
        description: Verify TLS certificates.
        type: bool
        default: true
      status_codes:
        description: Status codes that count as healthy.
        type: list
        elements: int
        default: [200]
      json_field:
        description: Dotted path of a field in the JSON body that must equal I(json_value).
        type: str
      json_value:
        description: Expected value of I(json_field).
        type: raw
      successes:
        description: Consecutive healthy answers (or checks of the units, without I(url)) required.
        type: int
        default: 3
      interval:
        description: Seconds between attempts.
        type: float
        default: 1.0
      timeout:
        description: Seconds after which the gate fails.
        type: float
        default: 60.0
      request_timeout:
        description: Seconds one request may take.
        type: float
        default: 5.0
      units:
        description: systemd units watched meanwhile; the gate fails fast when one fails, crash-loops or stops.
        type: list
        elements: str
        default: []
      settle_seconds:
        description: Seconds the main process of every unit in I(units) must have run before the gate passes.
        type: float
        default: 0
  stopped:
    description: Units stopped without waiting for them to end (the old slot's workers).
    type: list
    elements: str
    default: []
  enabled:
    description: Units enabled (started at boot), the new slot's.
    type: list
    elements: str
    default: []
  disabled:
    description: Units disabled, the old slot's.
    type: list
    elements: str
    default: []
  secrets:
    description: Values never shown in the result (masked in the gates' evidence, as M(botstack.deploy.health_gate) does).
    type: list
    elements: str
    default: []
  upstream:
    description:
      - This host's entry of the nginx upstream on this same host, pointed at the new slot's port after the switch.
    type: dict
    suboptions:
      dir:
        description: The upstream's directory.
        type: path
        required: true
      name:
        description: The app host's entry (its inventory name).
        type: str
        required: true
      address:
        description: Address nginx reaches the app on.
        type: str
        required: true
      port:
        description: The new slot's port.
        type: int
        required: true
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Make slot green live with v2, the proxy on this host pointed at it
  botstack.deploy.slot_switch:
    app_root: /opt/botstack
    release_id: v2
    slot: green
    status: healthy
    stopped: [botstack-worker@blue-1.service]
    enabled: [botstack-api@green.service, botstack-worker@green-1.service]
    disabled: [botstack-api@blue.service, botstack-worker@blue-1.service]
    upstream:
      dir: /etc/nginx/botstack/upstream-botstack.d
      name: app1
      address: 127.0.0.1
      port: 8002

- name: Roll back to the previous healthy release kept running on slot blue, once it answers
  botstack.deploy.slot_switch:
    app_root: /opt/botstack
    state: rolled_back
    slot: blue
    gates:
      - url: http://127.0.0.1:8001/health
        successes: 1
        interval: 0.25
        units: [botstack-api@blue.service]
"""

RETURN = r"""
gates:
  description: Each gate's result (as M(botstack.deploy.health_gate) returns it), in order.
  returned: when I(gates) are given and not in check mode
  type: list
  elements: dict
units:
  description: The unit step's result (as M(botstack.deploy.systemd_units) returns it); absent in check mode.
  returned: when not in check mode
  type: dict
release:
  description: The release step's result (as M(botstack.deploy.release) returns it).
  returned: always
  type: dict
upstream:
  description: The nginx step's result (as M(botstack.deploy.nginx_upstream_server) returns it).
  returned: when I(upstream) is given and not in check mode
  type: dict
failed_step:
  description: C(gate) when a gate failed (nothing was changed then), C(public) when a gate after the switch failed.
  returned: on failure of a gate
  type: str
  sample: gate
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["systemctl stop --no-block -- botstack-worker@blue-1.service", "switch current: blue (v1) -> green (v2)",
           "server 127.0.0.1:8002;"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.health import GATE_OPTIONS, gate_error, run_gate
from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat
from ansible_collections.botstack.deploy.plugins.module_utils.nginx_upstream import apply_entry
from ansible_collections.botstack.deploy.plugins.module_utils.redact import SECRETS_OPTION, protect
from ansible_collections.botstack.deploy.plugins.module_utils.release import STATE_OPTIONS, STATUSES, run_release
from ansible_collections.botstack.deploy.plugins.module_utils.systemd import apply_units

_UNIT_DEFAULTS = dict(stopped_app=None, keep=[], drain={}, drain_timeout=60, started=[], restarted=[],
                      fresh_since=None, settle=0, settle_interval=0.5, settle_seconds=0, no_block=True,
                      stop_waited=[], stop_last=False, daemon_reload=False,
                      journal_lines=30)
# The gate options a switch takes; the others keep health_gate's defaults.
_GATE_KEYS = ("url", "status_codes", "json_field", "json_value", "successes", "interval", "timeout",
              "request_timeout", "units", "settle_seconds", "host", "connect_to", "headers", "expect_headers", "validate_certs",
              "journal_lines")
_GATE_DEFAULTS = dict((k, v.get("default")) for k, v in GATE_OPTIONS.items() if k not in _GATE_KEYS)


def main():
    heartbeat()
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", required=True),
            release_id=dict(type="str"),
            state=dict(type="str", default="active", choices=["active", "rolled_back"]),
            slot=dict(type="str", required=True),
            status=dict(type="str", choices=list(STATUSES)),
            force=dict(type="bool", default=False),
            gates=dict(type="list", elements="dict", default=[],
                       options=dict([(k, dict((o, v) for o, v in GATE_OPTIONS[k].items() if o != "aliases"))
                                     for k in _GATE_KEYS] + [("after_switch", dict(type="bool", default=False))])),
            secrets=SECRETS_OPTION,
            stopped=dict(type="list", elements="str", default=[]),
            enabled=dict(type="list", elements="str", default=[]),
            disabled=dict(type="list", elements="str", default=[]),
            upstream=dict(type="dict", options=dict(
                dir=dict(type="path", required=True),
                name=dict(type="str", required=True),
                address=dict(type="str", required=True),
                port=dict(type="int", required=True),
            )),
        ),
        required_if=[("state", "active", ["release_id"])],
        supports_check_mode=True,
    )
    p = module.params
    protect(module, p["secrets"])
    if p["status"] is not None and p["state"] != "active":
        module.fail_json(msg="status is recorded by a deploy (state=active); a rollback keeps the status of the "
                             "release it returns to: remove status")

    gates = [dict(_GATE_DEFAULTS, **gate) for gate in p["gates"]]
    for number, gate in enumerate(gates, 1):
        error = gate_error(gate)
        if error:
            module.fail_json(msg="gates[%d]: %s" % (number, error))

    result = dict(changed=False, actions=[])
    diffs = []

    def run_gates(after_switch):
        for gate in gates:
            if gate["after_switch"] != after_switch or module.check_mode:
                continue
            outcome, failure = run_gate(module, gate)
            result.setdefault("gates", []).append(outcome)
            if failure:
                module.fail_json(msg=failure, failed_step="public" if after_switch else "gate", **result)

    run_gates(after_switch=False)

    def record(name, step):
        result[name] = step
        result["changed"] = result["changed"] or bool(step.get("changed"))
        actions = step.get("actions")
        if actions is None and step.get("changed"):  # the nginx entry's result names its server line instead
            actions = [step["server"]]
        result["actions"].extend(actions or [])
        if "diff" in step:
            diffs.append(step.pop("diff"))

    if not module.check_mode:
        units = dict(_UNIT_DEFAULTS, stopped=p["stopped"], enabled=p["enabled"], disabled=p["disabled"])
        record("units", apply_units(module, units))
    # The status (healthy) is recorded only once the gates after the switch passed: a release is called
    # healthy when a request along the public path reached it.
    public = [g for g in gates if g["after_switch"]] if not module.check_mode else []
    release = dict.fromkeys(set().union(*STATE_OPTIONS.values()))
    release.update(app_root=p["app_root"], release_id=p["release_id"], state=p["state"], slot=p["slot"],
                   status=None if public else p["status"], force=p["force"])
    record("release", run_release(module, release))
    if p["upstream"] and not module.check_mode:
        record("upstream", apply_entry(module, dict(p["upstream"], down=False, reload=True)))
    run_gates(after_switch=True)
    if public and p["status"]:
        status = dict.fromkeys(set().union(*STATE_OPTIONS.values()))
        status.update(app_root=p["app_root"], release_id=result["release"]["release"]["id"], state="present",
                      status=p["status"], force=False)
        step = run_release(module, status)
        result["release"]["actions"] = result["release"].get("actions", []) + step.get("actions", [])
        result["changed"] = result["changed"] or step["changed"]
        result["actions"].extend(step.get("actions", []))
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
