#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: release_info
short_description: Read the releases of an application and their status
version_added: 0.1.0
description:
  - Lists the releases under I(app_root) from their manifests, oldest first, with the active
    release and slot, the release each slot runs (and what it was started with), and the release
    a rollback would return to. Changes nothing.
extends_documentation_fragment:
  - botstack.deploy.release
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Read the releases
  botstack.deploy.release_info:
    app_root: /srv/botstack
  register: releases

- name: Show what a rollback would do
  ansible.builtin.debug:
    msg: "current {{ releases.current }} on {{ releases.current_slot }}, rollback target {{ releases.rollback_target }}"
"""

RETURN = r"""
current:
  description: Id of the active release, or null when C(current) does not exist.
  returned: always
  type: str
current_slot:
  description: Slot C(current) points at, or null (no current, or current names a release directly).
  returned: always
  type: str
  sample: green
slots:
  description: Per slot, the release it runs (C(release)), the I(slot_data) it was assigned with (C(data)) and when (C(assigned)).
  returned: always
  type: dict
  sample: {"blue": {"release": "v1-f6011886005", "data": {"port": 8001}, "assigned": "2026-11-23T10:00:00.000000Z"}}
rollback_target:
  description:
    - Newest healthy release older than the one a rollback undoes (the active release, or the release the
      active one was rolled back from), or null. Equal to C(current) once a rollback completed. When the
      active release went live as a change of configuration only, that release itself (see C(rollback_config)).
  returned: always
  type: str
rollback_config:
  description:
    - The configuration bundle (botstack.deploy.app_config) a rollback returns to - the one C(rollback_target) last
      ran with, or the one a change of configuration only replaced - or null when none was recorded.
  returned: always
  type: str
configs:
  description: Ids of the configuration bundles present under C(<app_root>/config/).
  returned: always
  type: list
  elements: str
pending_activation:
  description: A switch of C(current) an interrupted run recorded but did not finish (the next write finishes it), or null.
  returned: always
  type: dict
releases:
  description: Manifests of all releases, oldest first, each with its C(path) and C(active) flag.
  returned: always
  type: list
  elements: dict
leftovers:
  description: Temporary files and directories left by interrupted runs (the next write removes them).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat
from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseError, ReleaseStore


def main():
    heartbeat()
    module = AnsibleModule(
        argument_spec=dict(app_root=dict(type="path", required=True)),
        supports_check_mode=True,
    )
    try:
        store = ReleaseStore(module.params["app_root"])
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **store.describe())


if __name__ == "__main__":
    main()
