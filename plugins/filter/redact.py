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

from ansible.errors import AnsibleFilterError

MARKER = "<redacted>"


def _one(entry, keys):
    if not isinstance(entry, dict):
        raise AnsibleFilterError("redact expects dicts (e.g. user entries), got %s" % type(entry).__name__)
    return dict((k, MARKER if k in keys and v not in (None, "") else v) for k, v in entry.items())


def redact(entries, keys=("password",)):
    keys = [keys] if isinstance(keys, str) else list(keys)
    if isinstance(entries, dict):
        return _one(entries, keys)
    return [_one(entry, keys) for entry in entries or []]


class FilterModule(object):
    def filters(self):
        return {"redact": redact}
