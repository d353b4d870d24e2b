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
    release and the release a rollback would return to. Changes nothing.
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
    msg: "current {{ releases.current }}, rollback target {{ releases.rollback_target }}"
"""

RETURN = r"""
current:
  description: Id of the active release, or null when C(current) does not exist.
  returned: always
  type: str
rollback_target:
  description: Newest healthy release older than the active one, or null.
  returned: always
  type: str
releases:
  description: Manifests of all releases, oldest first, each with its C(path) and C(active) flag.
  returned: always
  type: list
  elements: dict
leftovers:
  description: Temporary or trash directories left by interrupted runs (removed by I(state=pruned)).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseError, ReleaseStore


def main():
    module = AnsibleModule(
        argument_spec=dict(app_root=dict(type="path", required=True)),
        supports_check_mode=True,
    )
    try:
        store = ReleaseStore(module.params["app_root"])
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))
    current = store.current()
    releases = store.releases()
    for manifest in releases:
        manifest["path"] = store.release_path(manifest["id"])
        manifest["active"] = manifest["id"] == current
    module.exit_json(
        changed=False,
        current=current,
        rollback_target=store.rollback_target(releases, current),
        releases=releases,
        leftovers=store.leftovers(),
    )


if __name__ == "__main__":
    main()
