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
  - An unchanged file changes nothing (no reload).
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
"""

import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ADDRESS = re.compile(r"^[A-Za-z0-9_.:\[\]-]+$")


def render(name, address, port, down):
    host = "[%s]" % address if ":" in address and not address.startswith("[") else address
    return (
        "# Managed by botstack.deploy: %s's entry in this upstream. The nginx role writes it first,\n"
        "# the deploy role rewrites it on each blue/green switch (nginx -t, then a graceful reload).\n"
        "server %s:%d%s;\n" % (name, host, port, " down" if down else "")
    )


def _read(path):
    try:
        with open(path, "rb") as handle:
            return to_text(handle.read())
    except (IOError, OSError):
        return None


def _write(module, path, content):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(to_bytes(content))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main():
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
    p = module.params
    if not _NAME.match(p["name"]):
        module.fail_json(msg="name must be a host name made of letters, digits, '.', '_' and '-', got %r" % p["name"])
    if not p["address"] or not _ADDRESS.match(p["address"]):
        module.fail_json(msg="address must be an IP address or a host name, got %r" % p["address"])
    if not 1 <= p["port"] <= 65535:
        module.fail_json(msg="port must be between 1 and 65535, got %d" % p["port"])
    if os.path.exists(p["dir"]) and not os.path.isdir(p["dir"]):
        module.fail_json(msg="dir %s exists and is not a directory" % p["dir"])

    path = os.path.join(p["dir"], p["name"] + ".conf")
    content = render(p["name"], p["address"], p["port"], p["down"])
    previous = _read(path)
    result = dict(changed=previous != content, path=path, server=content.splitlines()[-1], reloaded=False)
    if module._diff:
        result["diff"] = dict(before=previous or "", after=content, before_header=path, after_header=path)
    if not result["changed"] or module.check_mode:
        module.exit_json(**result)

    if not os.path.isdir(p["dir"]):
        os.makedirs(p["dir"], 0o755)
        os.chmod(p["dir"], 0o755)
    _write(module, path, content)

    nginx = module.get_bin_path("nginx")
    if not p["reload"] or nginx is None:
        module.exit_json(**result)
    rc, out, err = module.run_command([nginx, "-t", "-q"])
    if rc != 0:
        if previous is None:
            os.unlink(path)
        else:
            _write(module, path, previous)
        module.fail_json(
            msg="nginx rejected the upstream entry %s (%s), so the previous one was put back and nginx kept its "
                "configuration: %s" % (p["name"], result["server"], (err or out).strip()),
            **result)
    systemctl = module.get_bin_path("systemctl")
    if systemctl is not None and module.run_command([systemctl, "is-active", "--quiet", "nginx"])[0] == 0:
        rc, out, err = module.run_command([nginx, "-s", "reload"])
        if rc != 0:
            module.fail_json(msg="nginx accepted the configuration but did not reload: %s" % (err or out).strip(),
                             **result)
        result["reloaded"] = True
    module.exit_json(**result)


if __name__ == "__main__":
    main()
