# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: redact
short_description: The same entries with their secrets replaced by a marker
version_added: 0.1.0
description:
  - For loops and messages over entries that hold secrets (users with passwords). Every value of I(keys) that is
    set becomes C(<redacted>), an empty or missing one stays as it was, so a check can still tell a secret was
    given, and a loop item printed at any verbosity shows none.
positional: keys
options:
  _input:
    description: A list of dicts (or one dict).
    type: raw
    required: true
  keys:
    description: The keys holding secrets.
    type: list
    elements: str
    default: [password]
"""

EXAMPLES = r"""
- name: Check every user has a name and a password, printing no password
  ansible.builtin.assert:
    that: item.password | default('') | length > 0
    fail_msg: user {{ item.name }} needs a password
  loop: "{{ redis_users | botstack.deploy.redact }}"
"""

RETURN = r"""
_value:
  description: The entries, with the secrets replaced by C(<redacted>).
  type: raw
"""

# The other filters of this file, secret_values and masked, are documented in their .yml files beside it.

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.six.moves.urllib.parse import unquote, urlsplit
from ansible_collections.botstack.deploy.plugins.module_utils.redact import forms, mask

MARKER = "<redacted>"
# Values that say nothing secret and would mask every line of evidence they appear in.
_PLAIN = re.compile(r"^(-?[0-9.]+|true|false|yes|no|on|off|none|null)$", re.I)


def _one(entry, keys):
    if not isinstance(entry, dict):
        raise AnsibleFilterError("redact expects dicts (e.g. user entries), got %s" % type(entry).__name__)
    return dict((k, MARKER if k in keys and v not in (None, "") else v) for k, v in entry.items())


def redact(entries, keys=("password",)):
    keys = [keys] if isinstance(keys, str) else list(keys)
    if isinstance(entries, dict):
        return _one(entries, keys)
    return [_one(entry, keys) for entry in entries or []]


def _secret_forms(value):
    value = str(value)
    found = [value]
    # A password inside a connection URL is printed alone as often as with its URL.
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            found += [password, unquote(password)]
    return found


def secret_values(env, extra=None, plain=None):
    """The values failure evidence must never show: every app_env value (but those named in plain, and those
    too short or too plain to be secret), the password inside each connection URL, and the extra values
    (vault variables)."""
    if not isinstance(env, dict):
        raise AnsibleFilterError("secret_values expects app_env (a dict), got %s" % type(env).__name__)
    plain = set(plain or [])
    values = []
    for name, value in sorted(env.items()):
        if name not in plain:
            values.extend(_secret_forms(value))
    for value in extra or []:
        if isinstance(value, (str, int, float)):
            values.extend(_secret_forms(value))
    return sorted(set(v for v in values if len(v) >= 4 and not _PLAIN.match(v)))


def masked(text, secrets):
    """text with every secret value (and the forms an app prints it in) replaced by ********."""
    return mask(text, forms(secrets))


class FilterModule(object):
    def filters(self):
        return {"redact": redact, "secret_values": secret_values, "masked": masked}
