# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: stat_drift
short_description: The paths whose mode or owner differs from the one wanted
version_added: 0.1.0
description:
  - Given the wanted C(path)/C(mode) (and optional C(owner), C(group), default C(root)) entries and the C(files)
    of one M(ansible.builtin.find) over their directories, returns the entries that exist and differ, so a
    re-run makes one call for every path instead of one or two per path. Paths that do not exist are left out.
positional: found
options:
  _input:
    description: Wanted entries, each with C(path) and C(mode) (C("0600")).
    type: list
    elements: dict
    required: true
  found:
    description: The C(files) that M(ansible.builtin.find) returned.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Restrict what differs
  ansible.builtin.file:
    path: "{{ item.path }}"
    mode: "{{ item.mode }}"
  loop: "{{ [{'path': '/etc/crontab', 'mode': '0600'}] | botstack.deploy.stat_drift(found.files) }}"
"""

RETURN = r"""
_value:
  description: The wanted entries that exist and differ.
  type: list
  elements: dict
"""

import re

from ansible.errors import AnsibleFilterError


def stat_drift(wanted, found):
    if not isinstance(wanted, (list, tuple)) or not isinstance(found, (list, tuple)):
        raise AnsibleFilterError("stat_drift expects a list of wanted entries and find's files")
    by_path = dict((entry.get("path"), entry) for entry in found)
    drifted = []
    for entry in wanted:
        if "path" not in entry or "mode" not in entry:
            raise AnsibleFilterError("stat_drift: every wanted entry needs path and mode, got %r" % (entry,))
        actual = by_path.get(entry["path"])
        if actual is None:
            continue
        if (int(str(actual.get("mode", "0")), 8) & 0o7777 != int(str(entry["mode"]), 8)
                or actual.get("pw_name") != entry.get("owner", "root")
                or actual.get("gr_name") != entry.get("group", "root")):
            drifted.append(entry)
    return drifted


def lines_differ(wanted, content):
    """The C(regexp)/C(line) entries that ansible.builtin.lineinfile would change in C(content)."""
    if not isinstance(wanted, (list, tuple)):
        raise AnsibleFilterError("lines_differ expects a list of entries with regexp and line")
    # As lineinfile reads the file: text mode (any line ending becomes "\n"), each line with its newline.
    text = str(content).replace("\r\n", "\n").replace("\r", "\n")
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    pending = []
    for entry in wanted:
        if "regexp" not in entry or "line" not in entry:
            raise AnsibleFilterError("lines_differ: every entry needs regexp and line, got %r" % (entry,))
        pattern = re.compile(entry["regexp"])
        found = [index for index, line in enumerate(lines) if pattern.search(line)]
        if not found:
            found = [index for index, line in enumerate(lines) if line.rstrip("\r\n") == entry["line"]]
        if not found or lines[found[-1]] != entry["line"] + "\n":
            pending.append(entry)
    return pending


class FilterModule(object):
    def filters(self):
        return {"stat_drift": stat_drift, "lines_differ": lines_differ}
