#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: release
short_description: Manage release directories and switch the C(current) symlink atomically
version_added: 0.1.0
description:
  - Creates, activates, removes, prunes and rolls back releases under I(app_root).
  - Every release has a manifest (id, source revision, created time, sequence, status
    C(pending)/C(healthy)/C(failed), the release it replaced, pinned).
  - C(current) is switched by renaming a complete temporary symlink over it, so it never points
    at a missing or partial release, even if the process is killed at any step.
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
      - Required for I(state=present), I(state=active) and I(state=absent). With I(state=rolled_back),
        the release to return to (default the newest healthy release older than the current one).
    type: str
  state:
    description:
      - C(present) creates the release directory and manifest (C(pending)) when missing.
      - C(active) points C(current) at the release and records the one it replaced.
      - C(absent) removes the release; the active release is never removed.
      - C(pruned) keeps the I(keep) newest releases, never removing the active one, the newest
        healthy one before it (the rollback target) or pinned ones, and clears leftovers of
        interrupted runs.
      - C(rolled_back) points C(current) back at I(release_id) or the previous healthy release.
    type: str
    choices: [present, active, absent, pruned, rolled_back]
    default: present
  revision:
    description: Source revision recorded in the manifest when the release is created.
    type: str
  status:
    description:
      - Set the release's status in its manifest (with I(state=present) or I(state=active)).
    type: str
    choices: [pending, healthy, failed]
  pinned:
    description:
      - With I(state=present), mark the release as pinned (never pruned).
      - With I(state=pruned), extra release ids to keep.
    type: raw
  keep:
    description: Number of newest releases kept by I(state=pruned). At least 1.
    type: int
    default: 5
  mark_failed:
    description: With I(state=rolled_back), mark the release rolled back from as C(failed).
    type: bool
    default: true
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Create the release directory
  botstack.deploy.release:
    app_root: /srv/botstack
    release_id: "20261122T101500-{{ git_sha[:8] }}"
    revision: "{{ git_sha }}"
  register: new_release

- name: Make it the current release
  botstack.deploy.release:
    app_root: /srv/botstack
    release_id: "{{ new_release.release.id }}"
    state: active

- name: Mark it healthy once the health gate passed
  botstack.deploy.release:
    app_root: /srv/botstack
    release_id: "{{ new_release.release.id }}"
    status: healthy

- name: Keep five releases
  botstack.deploy.release:
    app_root: /srv/botstack
    state: pruned
    keep: 5

- name: Roll back to the previous healthy release
  botstack.deploy.release:
    app_root: /srv/botstack
    state: rolled_back
"""

RETURN = r"""
current:
  description: Id of the release C(current) points at after the task (after it would, in check mode).
  returned: always
  type: str
  sample: 20261122T101500-1a2b3c4d
previous:
  description: Id C(current) pointed at before the task.
  returned: always
  type: str
release:
  description: Manifest of the release the task acted on, with its C(path).
  returned: when a release was named or chosen
  type: dict
  sample: {"id": "r2", "path": "/srv/botstack/releases/r2", "status": "pending", "sequence": 2}
releases:
  description: Manifests of all releases after the task, oldest first.
  returned: always
  type: list
  elements: dict
removed:
  description: Release ids (and leftover temporary directories) removed or to be removed.
  returned: always
  type: list
  elements: str
actions:
  description: What was done (or would be done in check mode), in order, for auditing.
  returned: always
  type: list
  elements: str
  sample: ["switch current: r1 -> r2", "set r1 replaced by r2"]
"""

import contextlib
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.release import (
    STATUSES,
    ReleaseError,
    ReleaseStore,
    utcnow,
    validate_app_root,
    validate_release_id,
)


def _pinned_list(value, option="pinned"):
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return [validate_release_id(v, option) for v in value]


def _with_path(store, manifest):
    if manifest is None:
        return None
    result = dict(manifest)
    result["path"] = store.release_path(manifest["id"])
    return result


def _require(store, release_id):
    manifest = store.read_manifest(release_id)
    if manifest is None:
        raise ReleaseError(
            "release %r does not exist under %s; create it first with state=present"
            % (release_id, store.releases_dir))
    return manifest


def _present(store, p, plan):
    manifest = store.read_manifest(p["release_id"])
    if manifest is None:
        plan.append(("create", p["release_id"]))
    elif p["status"] and manifest.get("status") != p["status"]:
        plan.append(("status", p["release_id"], p["status"]))
    return p["release_id"]


def _active(store, p, plan, before):
    _require(store, p["release_id"])
    if before != p["release_id"]:
        plan.append(("switch", p["release_id"], before))
    if p["status"] and store.read_manifest(p["release_id"]).get("status") != p["status"]:
        plan.append(("status", p["release_id"], p["status"]))
    return p["release_id"]


def _rolled_back(store, p, plan, before):
    target = p["release_id"] or store.rollback_target()
    if target is None:
        raise ReleaseError(
            "no healthy release older than %r to roll back to; name one with release_id "
            "(see botstack.deploy.release_info)" % (before,))
    _require(store, target)
    if before != target:
        plan.append(("switch", target, before))
        if before and p["mark_failed"]:
            plan.append(("status", before, "failed"))
    return target


def _execute(store, plan, p):
    for step in plan:
        if step[0] == "create":
            store.create(step[1], revision=p["revision"], status=p["status"] or "pending",
                         pinned=p["pinned"] is True)
        elif step[0] == "status":
            store.update(step[1], status=step[2])
        elif step[0] == "switch":
            store.switch(step[1])
            store.update(step[1], replaced=step[2], activated=utcnow())
        elif step[0] == "remove":
            store.remove(step[1])
        elif step[0] == "leftovers":
            store.remove_leftovers()


def _describe(step):
    if step[0] == "create":
        return "create release %s" % step[1]
    if step[0] == "status":
        return "set %s status %s" % (step[1], step[2])
    if step[0] == "switch":
        return "switch current: %s -> %s" % (step[2], step[1])
    if step[0] == "remove":
        return "remove release %s" % step[1]
    return "remove leftovers %s" % ", ".join(step[1])


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", required=True),
            release_id=dict(type="str"),
            state=dict(type="str", default="present",
                       choices=["present", "active", "absent", "pruned", "rolled_back"]),
            revision=dict(type="str"),
            status=dict(type="str", choices=list(STATUSES)),
            pinned=dict(type="raw"),
            keep=dict(type="int", default=5),
            mark_failed=dict(type="bool", default=True),
        ),
        required_if=[
            ("state", "present", ["release_id"]),
            ("state", "active", ["release_id"]),
            ("state", "absent", ["release_id"]),
        ],
        supports_check_mode=True,
    )
    p = module.params
    try:
        validate_app_root(p["app_root"])
        if p["release_id"] is not None:
            validate_release_id(p["release_id"])
        if p["state"] == "pruned":
            if p["keep"] < 1:
                raise ReleaseError("keep must be at least 1, got %d" % p["keep"])
            pinned_ids = _pinned_list(p["pinned"])
        elif p["pinned"] not in (None, True, False):
            raise ReleaseError("pinned must be a boolean with state=%s" % p["state"])
        store = ReleaseStore(p["app_root"])
        if os.path.lexists(store.current_link) and not os.path.islink(store.current_link):
            raise ReleaseError(
                "%s exists and is not a symlink; move it into %s/<id>/ so it can be managed as a release"
                % (store.current_link, store.releases_dir))
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))

    plan = []
    chosen = None
    try:
        # Check mode only reads: no lock, no lock file.
        with (contextlib.nullcontext() if module.check_mode else store.locked()):
            before_snapshot = store.snapshot()
            before = before_snapshot["current"]
            if p["state"] == "present":
                chosen = _present(store, p, plan)
            elif p["state"] == "active":
                chosen = _active(store, p, plan, before)
            elif p["state"] == "rolled_back":
                chosen = _rolled_back(store, p, plan, before)
            elif p["state"] == "absent":
                if store.read_manifest(p["release_id"]) is not None:
                    if before == p["release_id"]:
                        raise ReleaseError(
                            "release %r is the active release; activate or roll back to another "
                            "release before removing it" % p["release_id"])
                    plan.append(("remove", p["release_id"]))
            elif p["state"] == "pruned":
                for release_id in store.prune_plan(p["keep"], pinned_ids):
                    plan.append(("remove", release_id))
                leftovers = store.leftovers()
                if leftovers:
                    plan.append(("leftovers", leftovers))
            if not module.check_mode:
                _execute(store, plan, p)
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))
    except (IOError, OSError) as exc:
        module.fail_json(msg="release %s failed under %s: %s" % (p["state"], p["app_root"], exc),
                         actions=[_describe(s) for s in plan])

    removed = []
    for step in plan:
        if step[0] == "remove":
            removed.append(step[1])
        elif step[0] == "leftovers":
            removed.extend(step[1])
    after_current = before
    for step in plan:
        if step[0] == "switch":
            after_current = step[1]
    after_releases = [r for r in before_snapshot["releases"] if r not in removed]
    if any(s[0] == "create" for s in plan) and chosen not in after_releases:
        after_releases.append(chosen)

    manifests = [_with_path(store, m) for m in store.releases()]
    result = dict(
        changed=bool(plan),
        current=after_current,
        previous=before,
        releases=manifests,
        removed=removed,
        actions=[_describe(s) for s in plan],
    )
    if chosen:
        release = _with_path(store, store.read_manifest(chosen))
        if release is None:  # check mode: not created yet
            release = {"id": chosen, "path": store.release_path(chosen), "status": p["status"] or "pending",
                       "revision": p["revision"]}
        result["release"] = release
    if module._diff:
        result["diff"] = dict(
            before={"current": before, "releases": before_snapshot["releases"]},
            after={"current": after_current, "releases": after_releases},
            before_header="%s (before)" % p["app_root"],
            after_header="%s (after)" % p["app_root"],
        )
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()
