#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: health_gate
short_description: Wait until an HTTP health endpoint answers healthy N times in a row, and its units stay up
version_added: 0.1.0
description:
  - Polls I(url) (optionally through a unix socket) until I(successes) consecutive answers are
    healthy, or fails when I(timeout) seconds have passed.
  - An answer is healthy when its status is in I(status_codes) and, if I(json_field) is given,
    that field of the JSON body equals I(json_value).
  - Given systemd I(units), the gate fails within one I(interval) of a unit failing, crash-looping
    (restarted more than I(max_restarts) times since the gate began, or waiting to be restarted) or
    stopping, instead of waiting out the timeout, and attaches the journal lines of this start.
  - Without I(url), the gate passes once every unit was found running I(successes) times in a row
    (for processes without an HTTP endpoint, such as queue workers).
  - The failure message itself carries the evidence (last status, error, body, unit state, journal).
  - Read-only; runs the same in check mode. Works on the target (checking localhost) and when
    delegated to the controller.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  url:
    description:
      - C(http://) or C(https://) URL to poll. With I(unix_socket), its host only sets the Host header.
      - Without it, only I(units) are watched (at least one is then required).
    type: str
  unix_socket:
    description: Path of a unix socket to connect through instead of TCP.
    type: path
  method:
    description: HTTP method.
    type: str
    choices: [GET, HEAD]
    default: GET
  status_codes:
    description: Status codes that count as healthy.
    type: list
    elements: int
    default: [200]
  json_field:
    description: Dotted path of a field in the JSON body that must equal I(json_value) (e.g. C(status), C(checks.db)).
    type: str
  json_value:
    description: Expected value of I(json_field). Compared as strings when the types differ.
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
    description: Seconds after which the gate fails. Must be greater than 0.
    type: float
    default: 60.0
  request_timeout:
    description: Seconds one request may take. Must be greater than 0.
    type: float
    default: 5.0
  headers:
    description: Extra request headers. Never logged (they often carry secret tokens).
    type: dict
    default: {}
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
  units:
    description:
      - systemd units serving the endpoint (or, without I(url), the units to watch). The gate fails fast
        when one fails, crash-loops or stops.
    type: list
    elements: str
    default: []
    aliases: [unit]
  max_restarts:
    description: Restarts of a unit tolerated while the gate runs before it counts as crash-looping.
    type: int
    default: 0
  journal_lines:
    description: Journal lines of each unit attached to a failure (those logged since the unit's current start).
    type: int
    default: 30
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Gate the new release on its health endpoint
  botstack.deploy.health_gate:
    url: http://127.0.0.1:8002/health
    json_field: status
    json_value: healthy
    successes: 3
    timeout: 60
    units: [botstack-api@green.service]

- name: Gate the workers (no HTTP endpoint) - running, not restarting, three checks in a row
  botstack.deploy.health_gate:
    units: [botstack-worker@green.service]
    successes: 3
    interval: 1

- name: Check the public endpoint from the controller
  botstack.deploy.health_gate:
    url: https://bot.example.com/health
    successes: 2
  delegate_to: localhost

- name: Check through a unix socket
  botstack.deploy.health_gate:
    url: http://localhost/health
    unix_socket: /run/botstack/api.sock
"""

RETURN = r"""
attempts:
  description: Checks made.
  returned: always
  type: int
elapsed:
  description: Seconds the gate took.
  returned: always
  type: float
consecutive:
  description: Consecutive healthy checks at the end.
  returned: always
  type: int
last_status:
  description: HTTP status of the last answer (null when it could not connect, or without I(url)).
  returned: always
  type: int
last_error:
  description: Why the last check was not healthy.
  returned: always
  type: str
last_body:
  description: Start of the last response body (at most 2000 characters).
  returned: always
  type: str
unit_state:
  description: Per unit, ActiveState/SubState/Result/NRestarts/InvocationID at the end.
  returned: when I(units) are given
  type: dict
journal:
  description: The journal lines of the failing unit (or, when the answers failed, the first unit) since its current start.
  returned: on failure, when I(units) are given
  type: dict
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

from ansible_collections.botstack.deploy.plugins.module_utils.systemd import (
    journal,
    restarts,
    unit_problem,
    unit_states,
)

BODY_LIMIT = 65536
SHOWN_BODY = 2000


def _field(data, dotted):
    for part in dotted.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            raise KeyError(dotted)
    return data


def _same(actual, expected):
    if type(actual) is type(expected):
        return actual == expected
    if isinstance(actual, bool) or isinstance(expected, bool):
        return str(actual).lower() == str(expected).lower()
    return to_text(actual) == to_text(expected)


def probe(params):
    """One request: returns (healthy, status, error, body)."""
    status, body = None, ""
    try:
        response = open_url(
            params["url"], method=params["method"], headers=params["headers"],
            validate_certs=params["validate_certs"], timeout=params["request_timeout"],
            unix_socket=params["unix_socket"], follow_redirects="none",
        )
        status = response.getcode()
        body = to_text(response.read(BODY_LIMIT), errors="replace")
    except HTTPError as exc:
        status = exc.code
        try:
            body = to_text(exc.read(BODY_LIMIT), errors="replace")
        except Exception:  # pylint: disable=broad-except
            body = ""
    except (URLError, OSError, ValueError) as exc:
        return False, None, "request failed: %s" % to_text(getattr(exc, "reason", exc)), ""
    if status not in params["status_codes"]:
        return False, status, "status %s not in %s" % (status, params["status_codes"]), body
    if params["json_field"]:
        try:
            value = _field(json.loads(body), params["json_field"])
        except ValueError:
            return False, status, "body is not JSON", body
        except KeyError:
            return False, status, "JSON field %r missing" % params["json_field"], body
        if not _same(value, params["json_value"]):
            return False, status, "JSON field %r is %r, expected %r" % (
                params["json_field"], value, params["json_value"]), body
    return True, status, None, body


def _settled(module, states, reason, wait=5.0):
    """Unit states whose runs are over, so their journal is complete.

    A crash loop seen through its restart counter may already be in its next attempt, whose
    output is not all there yet: wait (briefly) for that attempt to end too.
    """
    if not reason or "crash-looping" not in reason:
        return states
    looping = [u for u in states if (" %s " % u) in (" %s " % reason)]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if all(states[u].get("SubState") not in ("running", "start", "start-pre", "start-post") for u in looping):
            return states
        time.sleep(0.25)
        states = dict(states, **unit_states(module, looping))
    return states


def _validate(module):
    p = module.params
    if p["url"] is None and not p["units"]:
        module.fail_json(msg="give url (an http(s) health endpoint), units (systemd units to watch), or both")
    if p["url"] is not None and not p["url"].lower().startswith(("http://", "https://")):
        module.fail_json(msg='url must be an http(s) URL, got "%s"' % p["url"])
    for option in ("timeout", "request_timeout"):
        if p[option] <= 0:
            module.fail_json(msg="%s must be greater than 0, got %s" % (option, p[option]))
    if p["interval"] < 0:
        module.fail_json(msg="interval must not be negative, got %s" % p["interval"])
    if p["successes"] < 1:
        module.fail_json(msg="successes must be at least 1, got %s" % p["successes"])
    if p["max_restarts"] < 0:
        module.fail_json(msg="max_restarts must be 0 or more, got %s" % p["max_restarts"])
    if p["json_field"] and p["json_value"] is None:
        module.fail_json(msg="json_value is required with json_field (the value %s must have)" % p["json_field"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str"),
            unix_socket=dict(type="path"),
            method=dict(type="str", default="GET", choices=["GET", "HEAD"]),
            status_codes=dict(type="list", elements="int", default=[200]),
            json_field=dict(type="str"),
            json_value=dict(type="raw"),
            successes=dict(type="int", default=3),
            interval=dict(type="float", default=1.0),
            timeout=dict(type="float", default=60.0),
            request_timeout=dict(type="float", default=5.0),
            headers=dict(type="dict", default={}, no_log=True),
            validate_certs=dict(type="bool", default=True),
            units=dict(type="list", elements="str", default=[], aliases=["unit"]),
            max_restarts=dict(type="int", default=0),
            journal_lines=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    _validate(module)
    p = module.params
    start = time.monotonic()
    deadline = start + p["timeout"]
    attempts = consecutive = 0
    status, error, body = None, None, ""
    states, baseline = {}, {}
    reason = None
    while True:
        states = unit_states(module, p["units"])
        for unit in p["units"]:
            baseline.setdefault(unit, restarts(states[unit]))
            reason = unit_problem(unit, states[unit], baseline[unit], p["max_restarts"])
            if reason:
                break
        if reason:
            break
        attempts += 1
        if p["url"]:
            healthy, status, error, body = probe(p)
        else:
            waiting = [u for u in p["units"] if states[u].get("SubState") != "running"]
            healthy, error = not waiting, ("not running yet: %s" % ", ".join(waiting)) if waiting else None
        consecutive = consecutive + 1 if healthy else 0
        if consecutive >= p["successes"]:
            break
        if time.monotonic() + p["interval"] > deadline:
            reason = "no %d consecutive healthy %s within %ss" % (
                p["successes"], "answers" if p["url"] else "checks", p["timeout"])
            break
        time.sleep(p["interval"])

    result = dict(
        changed=False,
        attempts=attempts,
        elapsed=round(time.monotonic() - start, 3),
        consecutive=consecutive,
        last_status=status,
        last_error=error,
        last_body=body[:SHOWN_BODY],
    )
    seen = _settled(module, states, reason)
    if p["units"]:
        result["unit_state"] = unit_states(module, p["units"]) if reason else states
    if reason is None:
        module.exit_json(**result)
    evidence = ["health gate failed for %s: %s" % (p["url"] or ", ".join(p["units"]), reason),
                "attempts %d, elapsed %.1fs, last status %s, last error: %s"
                % (attempts, result["elapsed"], status, error)]
    if body:
        evidence.append("last body: %s" % body[:500])
    if p["units"]:
        # The journal of the unit that failed; when the answers failed, of the unit serving them.
        culprits = [u for u in p["units"] if reason and (" %s " % u) in (" %s " % reason)] or p["units"][:1]
        result["journal"] = {}
        for unit in p["units"]:
            state = result["unit_state"][unit]
            shown = dict((k, v) for k, v in state.items() if k in ("ActiveState", "SubState", "Result", "NRestarts"))
            evidence.append("unit %s: %s" % (unit, shown))
        for unit in culprits:
            result["journal"][unit] = journal(module, unit, seen.get(unit) or result["unit_state"][unit], p["journal_lines"])
            evidence.append("journal of %s (the run that failed):\n%s" % (unit, "\n".join(result["journal"][unit])))
    module.fail_json(msg="\n".join(evidence), **result)


if __name__ == "__main__":
    main()
