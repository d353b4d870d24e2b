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
  settle_seconds:
    description:
      - The gate passes only once the main process of every unit in I(units) has run this many seconds
        (watched all along), however early the answers turned healthy. A process that crashes once its imports
        ran (a scheduler without an endpoint) is running a second or more after its start; this holds the gate
        until it would have crashed. Units running longer already cost no wait. Less than I(timeout).
    type: float
    default: 0
  journal_lines:
    description: Journal lines of each unit attached to a failure (those logged since the unit's current start).
    type: int
    default: 30
  host:
    description:
      - The C(Host) header of the requests (not secret, unlike I(headers)), e.g. the public name an app that checks
        it (Django C(ALLOWED_HOSTS)) accepts. Default - the URL's host.
    type: str
  connect_to:
    description:
      - Send I(url)'s requests to this address (C(address) or C(address:port)) instead of the address its host
        name resolves to, with that name as TLS server name (SNI) and C(Host) header, as C(curl --connect-to)
        does. Checks the path a user's request takes through a proxy from the proxy's own host, e.g. I(url)
        C(https://shop.example.com/healthz) with I(connect_to) C(127.0.0.1).
    type: str
  expect_headers:
    description:
      - Response headers an answer must carry, with these values, to count as healthy (names are not
        case-sensitive), e.g. the upstream nginx chose for the request. A value starting with C(~) is a regular
        expression the header must contain a match of.
    type: dict
    default: {}
  secrets:
    description:
      - Values that must never appear in the result, in the failure's evidence above all (an app's journal can
        print its settings). Each is masked, also URL-quoted and escaped as an app would print it. Values shorter
        than 4 characters are not masked.
    type: list
    elements: str
    default: []
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

- name: Check the public path through the local nginx reaches the green slot
  botstack.deploy.health_gate:
    url: https://shop.example.com/healthz
    connect_to: 127.0.0.1
    validate_certs: false
    headers: {X-Botstack-Probe: upstream-of-this-answer}
    expect_headers: {X-Botstack-Upstream: "127.0.0.1:8002"}

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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.health import GATE_OPTIONS, gate_error, run_gate
from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat
from ansible_collections.botstack.deploy.plugins.module_utils.redact import SECRETS_OPTION, protect


def main():
    heartbeat()
    module = AnsibleModule(argument_spec=dict(GATE_OPTIONS, secrets=SECRETS_OPTION), supports_check_mode=True)
    protect(module, module.params["secrets"])
    error = gate_error(module.params)
    if error:
        module.fail_json(msg=error)
    result, failure = run_gate(module, module.params)
    if failure:
        module.fail_json(msg=failure, changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
