# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: subject_alt_names
short_description: Addresses and host names as certificate subject alternative names
version_added: 0.1.0
description:
  - Turns each entry into C(IP:<address>) when it is an IPv4 or IPv6 address, into C(DNS:<name>) otherwise;
    entries already spelled C(IP:...) or C(DNS:...) are kept. Wildcard listen addresses (C(*), C(0.0.0.0),
    C(::)) and empty entries are dropped, duplicates removed, order kept.
positional: _input
options:
  _input:
    description: Addresses and names.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Names of a database server's certificate
  ansible.builtin.debug:
    msg: "{{ ['db1', '10.20.0.21', 'localhost', '*'] | botstack.deploy.subject_alt_names }}"
  # ['DNS:db1', 'IP:10.20.0.21', 'DNS:localhost']
"""

RETURN = r"""
_value:
  description: Subject alternative names.
  type: list
  elements: str
"""

import ipaddress

from ansible.errors import AnsibleFilterError

_WILDCARDS = ("*", "0.0.0.0", "::")


def subject_alt_names(entries):
    if not isinstance(entries, (list, tuple)):
        raise AnsibleFilterError("subject_alt_names expects a list of addresses and names, got %r" % (entries,))
    names = []
    for entry in entries:
        entry = str(entry).strip()
        if not entry or entry in _WILDCARDS:
            continue
        if not entry.startswith(("IP:", "DNS:")):
            try:
                entry = "IP:" + str(ipaddress.ip_address(entry.strip("[]")))
            except ValueError:
                entry = "DNS:" + entry
        if entry not in names:
            names.append(entry)
    return names


class FilterModule(object):
    def filters(self):
        return {"subject_alt_names": subject_alt_names}
