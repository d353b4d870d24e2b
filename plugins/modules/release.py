#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: release
short_description: Manage release directories, the slots that run them and the C(current) symlink
version_added: 0.1.0
description:
  - Creates, completes, assigns to slots, activates, removes, prunes and rolls back releases under I(app_root).
  - Every release has a manifest (id, source revision, created time, sequence, status, the release it
    replaced when it first went live, and its activations).
  - A release is C(pending) while it is built, C(ready) once complete (asking C(ready) of a C(healthy) release
    changes nothing), C(healthy) once it passed its
    health gate and C(failed) when it must not go live. Only C(ready) and C(healthy) releases can be
    assigned to a slot or activated, unless I(force=true).
  - Slots (colours such as C(blue) and C(green)) are symlinks C(slots/<slot>) to the release each one
    runs, with what it was started with (I(slot_data)), so a blue/green flow can start a release on the
    idle slot and switch to it, and a rollback can return to a slot that still runs the previous release.
  - C(current) points at the live slot (C(current -> slots/<slot>)) or, without slots, at a release.
    Every symlink is switched by renaming a complete temporary one over it, and a switch is recorded
    before and after it happens, so a run killed at any step and repeated ends where one clean run ends.
extends_documentation_fragment:
  - botstack.deploy.release
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  release_id:
    description:
      - Release identifier (directory name). Letters, digits, C(.), C(_), C(+), C(-); no C(/) or C(..).
      - Required for I(state=present), I(state=assigned), I(state=active) and I(state=absent). With
        I(state=rolled_back), the release to return to (default the newest healthy release older than
        the one being rolled back).
    type: str
  state:
    description:
      - C(present) creates the release directory and manifest (C(pending)) when missing; with I(status),
        I(pinned) or I(reason) it updates them.
      - C(assigned) points I(slot) at the release. The live slot is never re-pointed to another release
        unless I(force=true).
      - C(active) points C(current) at I(slot) (which must run the release) or, without I(slot), at the release.
      - C(absent) removes the release; the active release and releases a slot runs are never removed.
      - C(pruned) keeps the I(keep) newest releases, never removing the active one, any slot's, the
        rollback target, pinned or I(protect)ed ones, and clears leftovers of interrupted runs.
      - C(rolled_back) points C(current) back at I(release_id) or the rollback target (through I(slot) when
        given) and, with I(mark_failed), marks the release it left as C(failed). Repeated after it completed,
        it changes nothing, because the target is computed from the release that was rolled back, not from C(current).
    type: str
    choices: [present, assigned, active, absent, pruned, rolled_back]
    default: present
  revision:
    description:
      - Source revision recorded when the release is created (I(state=present) only). A release id names one
        revision, so giving another revision for an existing release fails.
    type: str
  status:
    description:
      - Set the release's status (with I(state=present), I(state=assigned) or I(state=active)).
    type: str
    choices: [pending, ready, healthy, failed]
  reason:
    description: Why the status was set (e.g. the failed gate's evidence); stored as C(status_reason). Requires I(status).
    type: str
  pinned:
    description: With I(state=present), whether the release is pinned (never pruned).
    type: bool
  shared:
    description:
      - With I(state=present), names of directories under C(<app_root>/shared) to link into the release
        (C(releases/<id>/<name> -> ../../shared/<name>)), e.g. C(logs) and C(uploads). A release that ships a
        file or directory by that name is refused.
    type: list
    elements: str
  fingerprints:
    description:
      - With I(state=present) on an existing release, fingerprints to record in its manifest (C(fingerprints)),
        each a name and the paths (relative to the release) whose files it covers, for example C(migrations)
        covering C(alembic.ini) and the C(migrations) directory. Each is the sha256 of the names, contents and
        link targets under the paths (a missing path counts too; C(__pycache__) is skipped).
      - Two releases with the same fingerprint ship the same files there, e.g. the same migrations, so a
        deploy can skip running them again.
    type: dict
  protect:
    description: With I(state=pruned), release ids to keep besides the ones the module always keeps.
    type: list
    elements: str
  keep:
    description: With I(state=pruned), the number of newest releases to keep (at least 1). Default 5.
    type: int
  slot:
    description:
      - Slot name, such as C(blue) or C(green). Required with I(state=assigned); with I(state=active) or
        I(state=rolled_back), C(current) is pointed at this slot, which must already run the release.
    type: str
  slot_data:
    description:
      - With I(state=assigned), what the slot runs the release with (ports, units, a configuration hash),
        returned by M(botstack.deploy.release_info). A change re-assigns the slot.
    type: dict
  force:
    description:
      - Assign or activate a release that is C(failed) or not complete, or re-point the live slot.
    type: bool
    default: false
  mark_failed:
    description: With I(state=rolled_back), mark the release rolled back from as C(failed). Default true.
    type: bool
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Create the release directory
  botstack.deploy.release:
    app_root: /opt/botstack
    release_id: "v2-{{ git_sha[:12] }}"
    revision: "{{ git_sha }}"
  register: new_release

- name: Link the shared directories and mark it complete once its code and venv are in place
  botstack.deploy.release:
    app_root: /opt/botstack
    release_id: "{{ new_release.release.id }}"
    shared: [logs, uploads]
    fingerprints: {migrations: [alembic.ini, migrations]}
    status: ready

- name: Run it on the idle slot
  botstack.deploy.release:
    app_root: /opt/botstack
    release_id: "{{ new_release.release.id }}"
    state: assigned
    slot: green
    slot_data: {port: 8002}

- name: Switch current to the slot once its health gate passed, and mark the release healthy
  botstack.deploy.release:
    app_root: /opt/botstack
    release_id: "{{ new_release.release.id }}"
    state: active
    slot: green
    status: healthy

- name: Keep five releases
  botstack.deploy.release:
    app_root: /opt/botstack
    state: pruned
    keep: 5

- name: Roll back to the previous healthy release (the deploy role starts it on a slot first)
  botstack.deploy.release:
    app_root: /opt/botstack
    state: rolled_back
    slot: blue
"""

RETURN = r"""
current:
  description: Id of the release C(current) resolves to after the task (after it would, in check mode).
  returned: always
  type: str
  sample: v2-60fddc2ebe09
current_slot:
  description: Slot C(current) points at after the task, or null.
  returned: always
  type: str
  sample: green
previous:
  description: Id of the release C(current) resolved to before the task.
  returned: always
  type: str
previous_slot:
  description: Slot C(current) pointed at before the task.
  returned: always
  type: str
slots:
  description: Release each slot runs after the task.
  returned: always
  type: dict
  sample: {"blue": "v1-f6011886005", "green": "v2-60fddc2ebe09"}
release:
  description: Manifest of the release the task acted on, with its C(path).
  returned: when a release was named or chosen
  type: dict
  sample: {"id": "r2", "path": "/opt/botstack/releases/r2", "status": "ready", "sequence": 2}
releases:
  description: Manifests of all releases after the task, oldest first.
  returned: always
  type: list
  elements: dict
removed:
  description: Release ids and leftovers of interrupted runs removed (or to be removed in check mode).
  returned: always
  type: list
  elements: str
actions:
  description: What was done (or would be done in check mode), in order, for auditing.
  returned: always
  type: list
  elements: str
  sample: ["assign slot green: v2", "switch current: blue (v1) -> green (v2)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat
from ansible_collections.botstack.deploy.plugins.module_utils.release import (
    STATE_OPTIONS,
    STATUSES,
    run_release,
)


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", required=True),
            release_id=dict(type="str"),
            state=dict(type="str", default="present", choices=list(STATE_OPTIONS)),
            revision=dict(type="str"),
            status=dict(type="str", choices=list(STATUSES)),
            reason=dict(type="str"),
            pinned=dict(type="bool"),
            shared=dict(type="list", elements="str"),
            fingerprints=dict(type="dict"),
            protect=dict(type="list", elements="str"),
            keep=dict(type="int"),
            slot=dict(type="str"),
            slot_data=dict(type="dict"),
            force=dict(type="bool", default=False),
            mark_failed=dict(type="bool"),
        ),
        required_if=[
            ("state", "present", ["release_id"]),
            ("state", "assigned", ["release_id", "slot"]),
            ("state", "active", ["release_id"]),
            ("state", "absent", ["release_id"]),
        ],
        supports_check_mode=True,
    )
    module.exit_json(**run_release(module, module.params))


def main():
    heartbeat()
    run_module()


if __name__ == "__main__":
    main()
