#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: stale_services
short_description: Find the services that started before one of their configuration files was last written
version_added: 0.1.0
description:
  - A run killed between writing a configuration file and its handler leaves the service on the older
    configuration, and the next run finds nothing to change. This module compares, for every service, when it
    last entered the active state (C(ActiveEnterTimestamp)) with the modification time of each of its files,
    in one call for all of them, and names the services to restart. Changes nothing.
  - The same look names the services that are enabled and active (or activating) already, so a task that enables
    and starts them can leave those out.
  - A service that never started, and a file that does not exist, are not stale.
  - Needs systemd 248 or later (C(systemctl show --timestamp=us+utc)).
options:
  services:
    description: Each service (unit name) and the files it reads when it starts.
    type: dict
    required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Find the services running an older configuration than the one written
  botstack.deploy.stale_services:
    services:
      prometheus: [/etc/default/prometheus, /etc/prometheus/prometheus.yml]
  register: stale

- name: Restart them
  ansible.builtin.systemd_service:
    name: "{{ item }}"
    state: restarted
  loop: "{{ stale.stale }}"
"""

RETURN = r"""
stale:
  description: The services to restart, in the order given.
  returned: always
  type: list
  elements: str
  sample: [prometheus]
running:
  description: The services that are enabled and active (or activating, reloading), in the order given.
  returned: always
  type: list
  elements: str
  sample: [prometheus, prometheus-alertmanager]
evidence:
  description: Per stale service, the newest file written after it started, and both times (UTC).
  returned: always
  type: list
  elements: dict
  sample: [{"service": "prometheus", "file": "/etc/prometheus/prometheus.yml",
            "written": "2026-12-06T09:00:01.250000Z", "started": "2026-12-06T08:59:58.100000Z"}]
"""

import datetime
import os

from ansible.module_utils.basic import AnsibleModule

_EPOCH = datetime.datetime(1970, 1, 1)


def _iso(seconds):
    return (_EPOCH + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unit_states(module, services):
    """Per service: seconds since the epoch it last became active (None: never started, or not loaded), and
    whether it is enabled and active."""
    rc, out, err = module.run_command(["systemctl", "show", "--timestamp=us+utc",
                                       "--property=Id,ActiveEnterTimestamp,ActiveState,UnitFileState",
                                       "--"] + list(services))
    if rc != 0:
        module.fail_json(msg="systemctl show failed: %s" % (err or out).strip())
    # One block per unit, in the order given, separated by an empty line.
    blocks = out.strip("\n").split("\n\n")
    if len(blocks) != len(services):
        module.fail_json(msg="systemctl show returned %d blocks for %d services" % (len(blocks), len(services)))
    started, running = {}, []
    for name, block in zip(services, blocks):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if values.get("UnitFileState") == "enabled" and values.get("ActiveState") in ("active", "activating", "reloading"):
            running.append(name)
        stamp = values.get("ActiveEnterTimestamp", "").strip()
        # "Mon 2026-11-23 10:00:00.123456 UTC", or empty when the service never started.
        parts = stamp.split()
        started[name] = None
        if len(parts) == 4 and parts[3] == "UTC":
            try:
                when = datetime.datetime.strptime(parts[1] + " " + parts[2], "%Y-%m-%d %H:%M:%S.%f")
            except ValueError:
                module.fail_json(msg="cannot read when %s started: %r" % (name, stamp))
            started[name] = (when - _EPOCH).total_seconds()
        elif stamp and stamp not in ("n/a",):
            module.fail_json(msg="cannot read when %s started: %r (systemd 248 or later is needed)" % (name, stamp))
    return started, running


def main():
    module = AnsibleModule(argument_spec=dict(services=dict(type="dict", required=True)), supports_check_mode=True)
    services = module.params["services"]
    for name, files in services.items():
        if not isinstance(files, list) or not all(isinstance(path, str) and os.path.isabs(path) for path in files):
            module.fail_json(msg="services[%r] must be a list of absolute paths, got %r" % (name, files))
    names = list(services)
    started, running = unit_states(module, names) if names else ({}, [])
    stale, evidence = [], []
    for name in names:
        if started[name] is None:
            continue
        newest = None
        for path in services[name]:
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                continue
            if mtime > started[name] and (newest is None or mtime > newest[1]):
                newest = (path, mtime)
        if newest:
            stale.append(name)
            evidence.append({"service": name, "file": newest[0], "written": _iso(newest[1]),
                             "started": _iso(started[name])})
    module.exit_json(changed=False, stale=stale, running=running, evidence=evidence)


if __name__ == "__main__":
    main()
