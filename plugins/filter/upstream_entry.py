# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: upstream_entry
short_description: A balancer's first upstream entry for an app host, marked down until its first deploy
version_added: 0.1.0
description:
  - From an app host's variables (C(hostvars[host])), the entry botstack.deploy.nginx writes for it on a balancer
    before anything is deployed - C(name) (its inventory name), C(address) (how the deploy role will name it -
    I(deploy_upstream_address), else a private I(app_bind_address), else I(ansible_host), else its name), C(port)
    and C(down) (true - the host's first deploy points it at its live slot).
positional: port
options:
  _input:
    description: The app host's variables, e.g. C(hostvars['app1']).
    type: dict
    required: true
  port:
    description: The port written until the first deploy (the first slot's).
    type: int
    default: 8001
"""

EXAMPLES = r"""
- name: Every app host, down until deployed
  ansible.builtin.debug:
    msg: "{{ groups['app'] | map('extract', hostvars) | map('botstack.deploy.upstream_entry', 8001) | list }}"
"""

RETURN = r"""
_value:
  description: C(name), C(address), C(port), C(down).
  type: dict
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def upstream_entry(host_vars, port=8001):
    if not isinstance(host_vars, Mapping) or "inventory_hostname" not in host_vars:
        raise AnsibleFilterError("upstream_entry expects an app host's hostvars (with inventory_hostname)")
    name = host_vars["inventory_hostname"]
    bind = str(host_vars.get("app_bind_address") or "")
    address = (host_vars.get("deploy_upstream_address")
               or (bind if bind and bind not in ("0.0.0.0", "::") else None)
               or host_vars.get("ansible_host") or name)
    return {"name": name, "address": str(address), "port": int(port), "down": True}


class FilterModule(object):
    def filters(self):
        return {"upstream_entry": upstream_entry}
