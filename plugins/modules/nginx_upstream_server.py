#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: nginx_upstream_server
short_description: Point one app host's entry of an nginx upstream at a port, validated and reloaded gracefully
version_added: 0.1.0
description:
  - An upstream of botstack.deploy.nginx includes one file per app host (C(<dir>/<name>.conf), one C(server)
    line). A blue/green switch rewrites that file with the new slot's port, or marks the host C(down) to drain it
    at the balancer.
  - In one call (one round trip, where a directory, a template and a shell task take three), the file is written
    atomically, C(nginx -t) checks the whole configuration and nginx reloads gracefully (C(nginx -s reload), what
    C(nginx.service)'s C(ExecReload) runs); in-flight requests finish on the old workers.
  - When nginx rejects the configuration, the previous file is put back (or the new one removed when there was
    none), nginx keeps serving what it had, and the task fails with nginx's own message.
  - When nginx is not installed yet (a first deploy before the nginx role), the file is written and nothing is
    reloaded; the nginx role validates it when it configures nginx. When nginx is installed but stopped, the
    configuration is still checked, and nothing is reloaded.
  - An unchanged file changes nothing (no reload), unless nginx has not loaded it yet. When the file is newer
    than nginx's newest worker process (the workers are forked at each start and reload), a run was killed between
    writing the entry and reloading, and nginx still routes to the previous port. The entry is then checked and
    nginx reloaded, so a retried deploy never stops a slot nginx still sends requests to.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  dir:
    description: The upstream's directory, e.g. C(/etc/nginx/botstack/upstream-botstack.d). Created (0755) when missing.
    type: path
    required: true
  name:
    description: The app host's entry (its inventory name); the file is C(<dir>/<name>.conf).
    type: str
    required: true
  address:
    description: Address nginx reaches the app host on (IP address or host name).
    type: str
    required: true
  port:
    description: The port of the host's live slot.
    type: int
    required: true
  down:
    description: Mark the entry C(down) (nginx sends it no new requests; in-flight ones finish).
    type: bool
    default: false
  reload:
    description: Check the configuration and reload nginx when the file changed.
    type: bool
    default: true
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Point the balancer at app1's green slot
  botstack.deploy.nginx_upstream_server:
    dir: /etc/nginx/botstack/upstream-botstack.d
    name: app1
    address: 10.20.0.11
    port: 8002
  delegate_to: lb1

- name: Take app1 out of the balancer while it switches
  botstack.deploy.nginx_upstream_server:
    dir: /etc/nginx/botstack/upstream-botstack.d
    name: app1
    address: 10.20.0.11
    port: 8001
    down: true
  delegate_to: lb1
"""

RETURN = r"""
path:
  description: The entry's file.
  returned: always
  type: str
  sample: /etc/nginx/botstack/upstream-botstack.d/app1.conf
server:
  description: The C(server) line the entry holds now.
  returned: always
  type: str
  sample: server 10.20.0.11:8002;
reloaded:
  description: Whether nginx was reloaded.
  returned: always
  type: bool
pending_reload:
  description: Whether the entry on disk was already right but newer than nginx's running configuration.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat
from ansible_collections.botstack.deploy.plugins.module_utils.nginx_upstream import apply_entry


def main():
    heartbeat()
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type="path", required=True),
            name=dict(type="str", required=True),
            address=dict(type="str", required=True),
            port=dict(type="int", required=True),
            down=dict(type="bool", default=False),
            reload=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**apply_entry(module, module.params))


if __name__ == "__main__":
    main()
