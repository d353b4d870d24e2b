# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health gate (shared by the health_gate and slot_switch modules): poll an HTTP endpoint until it
answers healthy N times in a row, while the systemd units serving it are watched for a crash loop."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import socket
import ssl
import time

from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.six.moves import http_client
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import urlsplit
from ansible.module_utils.urls import open_url

from ansible_collections.botstack.deploy.plugins.module_utils.systemd import (
    journal,
    restarts,
    started_at,
    unit_problem,
    unit_states,
)

BODY_LIMIT = 65536
SHOWN_BODY = 2000

# The options of one gate, as argument spec.
GATE_OPTIONS = dict(
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
    settle_seconds=dict(type="float", default=0.0),
    journal_lines=dict(type="int", default=30),
    host=dict(type="str"),
    connect_to=dict(type="str"),
    expect_headers=dict(type="dict", default={}),
)


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


def _request_via(params):
    """One request to params["connect_to"] (address[:port]) for the URL's host: its name is the TLS server name
    (SNI) and the Host header, as for a client that resolved it there (curl --connect-to). Returns
    (status, headers, body)."""
    url = urlsplit(params["url"])
    https = url.scheme.lower() == "https"
    address, sep, port = params["connect_to"].rpartition(":") if params["connect_to"].count(":") == 1 \
        else (params["connect_to"], "", "")
    address = (address or params["connect_to"]).strip("[]")
    port = int(port) if sep and port else (url.port or (443 if https else 80))
    sock = socket.create_connection((address, port), timeout=params["request_timeout"])
    try:
        if https:
            context = ssl.create_default_context()
            if not params["validate_certs"]:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=url.hostname)
        connection = http_client.HTTPConnection(url.hostname, port, timeout=params["request_timeout"])
        connection.sock = sock
        headers = dict({"Host": params.get("host") or url.netloc, "Connection": "close"}, **params["headers"])
        connection.request(params["method"], (url.path or "/") + ("?" + url.query if url.query else ""), headers=headers)
        response = connection.getresponse()
        return response.status, dict((k.lower(), v) for k, v in response.getheaders()), response.read(BODY_LIMIT)
    finally:
        sock.close()


def probe(params):
    """One request: returns (healthy, status, error, body)."""
    status, body, headers = None, "", {}
    try:
        if params.get("connect_to"):
            status, headers, raw = _request_via(params)
            body = to_text(raw, errors="replace")
        else:
            response = open_url(
                params["url"], method=params["method"],
                headers=dict(params["headers"], **({"Host": params["host"]} if params.get("host") else {})),
                validate_certs=params["validate_certs"], timeout=params["request_timeout"],
                unix_socket=params["unix_socket"], follow_redirects="none",
            )
            status = response.getcode()
            headers = dict((k.lower(), v) for k, v in response.headers.items())
            body = to_text(response.read(BODY_LIMIT), errors="replace")
    except HTTPError as exc:
        status = exc.code
        headers = dict((k.lower(), v) for k, v in (exc.headers or {}).items())
        try:
            body = to_text(exc.read(BODY_LIMIT), errors="replace")
        except Exception:  # pylint: disable=broad-except
            body = ""
    except (URLError, OSError, ValueError, http_client.HTTPException) as exc:
        return False, None, "request failed: %s" % to_text(getattr(exc, "reason", exc)), ""
    if status not in params["status_codes"]:
        return False, status, "status %s not in %s" % (status, params["status_codes"]), body
    for name, expected in sorted((params.get("expect_headers") or {}).items()):
        expected, seen = str(expected), headers.get(name.lower())
        if not (re.search(expected[1:], seen or "") if expected.startswith("~") else seen == expected):
            return False, status, "response header %s is %r, expected %r" % (name, headers.get(name.lower()), expected), body
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


def _ran_for(state):
    """Seconds the unit's main process has run (0 when it is not running)."""
    started = started_at(state, process=True)
    if started is None or state.get("ActiveState") != "active":
        return 0.0
    return time.time() - started


def gate_error(p):
    """What is wrong with the options of one gate (None when nothing)."""
    if p["url"] is None and not p["units"]:
        return "give url (an http(s) health endpoint), units (systemd units to watch), or both"
    if p["url"] is not None and not p["url"].lower().startswith(("http://", "https://")):
        return 'url must be an http(s) URL, got "%s"' % p["url"]
    for option in ("timeout", "request_timeout"):
        if p[option] <= 0:
            return "%s must be greater than 0, got %s" % (option, p[option])
    if p["interval"] < 0:
        return "interval must not be negative, got %s" % p["interval"]
    if p["successes"] < 1:
        return "successes must be at least 1, got %s" % p["successes"]
    if not 0 <= p["settle_seconds"] < p["timeout"]:
        return "settle_seconds must be 0 or more and less than timeout (%s), got %s" % (p["timeout"], p["settle_seconds"])
    if p["settle_seconds"] and not p["units"]:
        return "settle_seconds is how long the units must have run: give units too"
    if p["max_restarts"] < 0:
        return "max_restarts must be 0 or more, got %s" % p["max_restarts"]
    if p["json_field"] and p["json_value"] is None:
        return "json_value is required with json_field (the value %s must have)" % p["json_field"]
    if p.get("connect_to") and (p["url"] is None or p["unix_socket"]):
        return "connect_to (the address to send the url's requests to) needs url, and not unix_socket"
    if p.get("expect_headers") and p["url"] is None:
        return "expect_headers are response headers of url's answers: give url too"
    return None


def run_gate(module, p):
    """Run one gate: returns (result, message); message is None when the gate passed, else the evidence."""
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
        # A process that crashes once its imports ran is still running a second later: watched
        # units must have run settle_seconds before the gate passes.
        young = [u for u in p["units"] if _ran_for(states[u]) < p["settle_seconds"]] if p["settle_seconds"] else []
        if consecutive >= p["successes"] and not young:
            break
        if time.monotonic() + p["interval"] > deadline:
            reason = "no %d consecutive healthy %s within %ss" % (
                p["successes"], "answers" if p["url"] else "checks", p["timeout"])
            if consecutive >= p["successes"]:
                reason = "%s did not run %ss within %ss" % (", ".join(young), p["settle_seconds"], p["timeout"])
            break
        time.sleep(p["interval"])

    result = dict(
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
        return result, None
    evidence = ["health gate failed for %s: %s" % (p["url"] or ", ".join(p["units"]), reason),
                "attempts %d, elapsed %.1fs, last status %s, last error: %s"
                % (attempts, result["elapsed"], status, error)]
    if body:
        evidence.append("last body: %s" % body[:500])
    if p["units"]:
        # The journal of the unit that failed; when the answers failed, of the unit serving them.
        culprits = [u for u in p["units"] if (" %s " % u) in (" %s " % reason)] or p["units"][:1]
        result["journal"] = {}
        for unit in p["units"]:
            state = result["unit_state"][unit]
            shown = dict((k, v) for k, v in state.items() if k in ("ActiveState", "SubState", "Result", "NRestarts"))
            evidence.append("unit %s: %s" % (unit, shown))
        for unit in culprits:
            result["journal"][unit] = journal(module, unit, seen.get(unit) or result["unit_state"][unit], p["journal_lines"],
                                              since=time.time() - (time.monotonic() - start))
            evidence.append("journal of %s (the run that failed):\n%s" % (unit, "\n".join(result["journal"][unit])))
    return result, "\n".join(evidence)
