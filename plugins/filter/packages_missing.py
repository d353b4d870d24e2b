# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: packages_missing
short_description: The packages of a list that are not installed
version_added: 0.1.0
description:
  - Keeps the names that are not in I(installed), so an
    C(ansible.builtin.apt) task with C(state=present) runs only when it has something to install, and a re-run
    makes no call for it. A name with a version (C(=), C(>)), an architecture (C(:)), a wildcard or a path, and
    every name when the list is missing (C(none)), is kept, for apt to decide.
  - I(installed) is what was read from dpkg's database once per host and run (C(__base_packages_installed), the
    packages whose status is C(installed), so a half-configured one still goes to apt), by C(botstack.deploy.base)
    or by the first role that needs it (C(tasks_from=installed) of the base role), and read again after a purge.
    Read earlier in a run, it may miss what was installed since, which only ever makes a task run, never skips one.
positional: installed
options:
  _input:
    description: Package names (a string is one name).
    type: list
    elements: str
    required: true
  installed:
    description: The names of the installed packages, or C(none) when they were not read.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Install ufw
  ansible.builtin.apt:
    name: "{{ missing }}"
    state: present
  vars:
    missing: "{{ ['ufw'] | botstack.deploy.packages_missing(__base_packages_installed | default(none)) }}"
  when: missing | length > 0
"""

RETURN = r"""
_value:
  description: The names to hand to apt.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

_UNDECIDED = ("=", ">", "<", ":", "*", "?", "[", "/")


def packages_missing(names, installed):
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)):
        raise AnsibleFilterError("packages_missing expects a list of package names, got %r" % (names,))
    if installed is not None and not isinstance(installed, (list, tuple, dict)):
        raise AnsibleFilterError("packages_missing expects the installed package names (a list) or none")
    installed = None if installed is None else set(installed)
    missing = []
    for name in names:
        name = str(name).strip()
        if not name:
            continue
        if installed is None or any(mark in name for mark in _UNDECIDED) or name not in installed:
            missing.append(name)
    return missing


class FilterModule(object):
    def filters(self):
        return {"packages_missing": packages_missing}
