#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: health_gate
short_description: Wait until an HTTP health endpoint answers healthy N times in a row
version_added: 0.1.0
description:
  - Polls I(url) (optionally through a unix socket) until I(successes) consecutive answers are
    healthy, or fails when I(timeout) seconds have passed.
  - An answer is healthy when its status is in I(status_codes) and, if I(json_field) is given,
    that field of the JSON body equals I(json_value).
  - Given a systemd I(unit), the gate fails at once when the unit enters the C(failed) state
    instead of waiting out the timeout, and attaches the unit's last journal lines.
  - The failure message itself carries the evidence (last status, error, body, journal).
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
    description: C(http://) or C(https://) URL to poll. With I(unix_socket), its host only sets the Host header.
    type: str
    required: true
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
    description: Consecutive healthy answers required.
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
    description: Extra request headers.
    type: dict
    default: {}
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
  unit:
    description: systemd unit serving the endpoint; the gate fails fast when it enters the C(failed) state.
    type: str
  journal_lines:
    description: Journal lines of I(unit) attached to a failure.
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
    unit: botstack-api@green.service

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
  description: Requests made.
  returned: always
  type: int
elapsed:
  description: Seconds the gate took.
  returned: always
  type: float
consecutive:
  description: Consecutive healthy answers at the end.
  returned: always
  type: int
last_status:
  description: HTTP status of the last answer (null when it could not connect).
  returned: always
  type: int
last_error:
  description: Why the last attempt was not healthy.
  returned: always
  type: str
last_body:
  description: Start of the last response body (at most 2000 characters).
  returned: always
  type: str
unit_state:
  description: ActiveState/SubState/Result/NRestarts of I(unit) at the end.
  returned: when I(unit) is given
  type: dict
journal:
  description: Last journal lines of I(unit).
  returned: on failure, when I(unit) is given
  type: list
  elements: str
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

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


def unit_state(module, unit):
    rc, out, err = module.run_command(
        ["systemctl", "show", unit, "--property=ActiveState,SubState,Result,NRestarts,LoadState"])
    if rc != 0:
        return {"error": (err or out).strip()}
    state = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            state[key] = value
    return state


def journal(module, unit, lines):
    rc, out, err = module.run_command(
        ["journalctl", "--unit", unit, "--lines", str(lines), "--no-pager", "--output", "short-iso"])
    return (out if rc == 0 else err).splitlines()[-lines:]


def _validate(module):
    p = module.params
    if not p["url"].lower().startswith(("http://", "https://")):
        module.fail_json(msg='url must be an http(s) URL, got "%s"' % p["url"])
    for option in ("timeout", "request_timeout"):
        if p[option] <= 0:
            module.fail_json(msg="%s must be greater than 0, got %s" % (option, p[option]))
    if p["interval"] < 0:
        module.fail_json(msg="interval must not be negative, got %s" % p["interval"])
    if p["successes"] < 1:
        module.fail_json(msg="successes must be at least 1, got %s" % p["successes"])
    if p["json_field"] and p["json_value"] is None:
        module.fail_json(msg="json_value is required with json_field (the value %s must have)" % p["json_field"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            unix_socket=dict(type="path"),
            method=dict(type="str", default="GET", choices=["GET", "HEAD"]),
            status_codes=dict(type="list", elements="int", default=[200]),
            json_field=dict(type="str"),
            json_value=dict(type="raw"),
            successes=dict(type="int", default=3),
            interval=dict(type="float", default=1.0),
            timeout=dict(type="float", default=60.0),
            request_timeout=dict(type="float", default=5.0),
            headers=dict(type="dict", default={}),
            validate_certs=dict(type="bool", default=True),
            unit=dict(type="str"),
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
    state = None
    reason = None
    while True:
        if p["unit"]:
            state = unit_state(module, p["unit"])
            if state.get("LoadState") == "not-found":
                reason = "unit %s does not exist (check the unit option)" % p["unit"]
                break
            if state.get("ActiveState") == "failed":
                reason = "unit %s entered the failed state (result: %s)" % (p["unit"], state.get("Result"))
                break
        attempts += 1
        healthy, status, error, body = probe(p)
        consecutive = consecutive + 1 if healthy else 0
        if consecutive >= p["successes"]:
            break
        now = time.monotonic()
        if now + p["interval"] > deadline:
            reason = "no %d consecutive healthy answers within %ss" % (p["successes"], p["timeout"])
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
    if p["unit"]:
        result["unit_state"] = unit_state(module, p["unit"]) if reason else state
    if reason is None:
        module.exit_json(**result)
    evidence = ["health gate failed for %s: %s" % (p["url"], reason),
                "attempts %d, elapsed %.1fs, last status %s, last error: %s"
                % (attempts, result["elapsed"], status, error)]
    if body:
        evidence.append("last body: %s" % body[:500])
    if p["unit"]:
        result["journal"] = journal(module, p["unit"], p["journal_lines"])
        evidence.append("unit %s: %s" % (p["unit"], result["unit_state"]))
        evidence.append("last journal lines:\n" + "\n".join(result["journal"]))
    module.fail_json(msg="\n".join(evidence), **result)


if __name__ == "__main__":
    main()
