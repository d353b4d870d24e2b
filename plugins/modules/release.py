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

import contextlib
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.release import (
    ACTIVATABLE,
    STATUSES,
    ReleaseError,
    ReleaseStore,
    replace_symlink,
    validate_release_id,
    validate_slot,
)

# Which options each state accepts beyond app_root and state.
_OPTIONS = {
    "present": {"release_id", "revision", "status", "reason", "pinned", "shared"},
    "assigned": {"release_id", "slot", "slot_data", "status", "reason", "force"},
    "active": {"release_id", "slot", "status", "reason", "force"},
    "absent": {"release_id"},
    "pruned": {"keep", "protect"},
    "rolled_back": {"release_id", "slot", "force", "mark_failed"},
}
_DEFAULTED = {"state", "app_root", "force"}


def _validate(p):
    state = p["state"]
    given = {k for k, v in p.items() if v is not None and k not in _DEFAULTED}
    unsupported = sorted(given - _OPTIONS[state])
    if p["force"] and "force" not in _OPTIONS[state]:
        unsupported.append("force")
    if unsupported:
        raise ReleaseError("%s cannot be used with state=%s (it would be ignored); options for %s: %s"
                           % (", ".join(unsupported), state, state, ", ".join(sorted(_OPTIONS[state]))))
    if p["release_id"] is not None:
        validate_release_id(p["release_id"])
    if p["slot"] is not None:
        validate_slot(p["slot"])
    if p["reason"] is not None and p["status"] is None:
        raise ReleaseError("reason describes a status change: give status too")
    if state == "pruned" and p["keep"] is not None and p["keep"] < 1:
        raise ReleaseError("keep must be at least 1, got %d" % p["keep"])
    for release_id in p["protect"] or []:
        validate_release_id(release_id, "protect")
    for name in p["shared"] or []:
        if not name or "/" in name or name in (".", "..") or name.startswith("."):
            raise ReleaseError("shared entries are directory names under <app_root>/shared (no '/', not hidden), "
                               "got %r" % (name,))


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


def _require_activatable(manifest, p, what):
    status = p.get("status") or manifest.get("status")
    if status in ACTIVATABLE or p["force"]:
        return
    if status == "failed":
        raise ReleaseError(
            "release %r is marked failed (%s), so it cannot be %s; deploy a fixed release, or set "
            "force=true to use it anyway" % (manifest["id"], manifest.get("status_reason") or "no reason recorded", what))
    raise ReleaseError(
        "release %r is %s (not complete), so it cannot be %s; finish it and set status=ready first"
        % (manifest["id"], status, what))


def _status_step(manifest, p):
    # Healthy implies ready: asking for ready again (a re-run of the build step) never demotes it.
    if p["status"] == "ready" and manifest.get("status") == "healthy" and p["reason"] is None:
        return []
    if p["status"] and (manifest.get("status") != p["status"]
                        or (p["reason"] is not None and manifest.get("status_reason") != p["reason"])):
        return [("status", manifest["id"], p["status"], p["reason"])]
    return []


def _plan_present(store, p):
    manifest = store.read_manifest(p["release_id"])
    if manifest is None:
        return [("create", p["release_id"])] + [("link", p["release_id"], n, os.path.join("..", "..", "shared", n))
                                                for n in p["shared"] or []]
    if p["revision"] is not None and manifest.get("revision") not in (None, p["revision"]):
        raise ReleaseError(
            "release %r exists with revision %s, not %s: a release id names one revision; use a new "
            "release_id for the new revision" % (p["release_id"], manifest.get("revision"), p["revision"]))
    plan = _link_steps(store, p)
    plan += _status_step(manifest, p)
    if p["pinned"] is not None and bool(manifest.get("pinned")) != p["pinned"]:
        plan.append(("pinned", p["release_id"], p["pinned"]))
    return plan


def _link_steps(store, p):
    steps = []
    for name in p["shared"] or []:
        link = os.path.join(store.release_path(p["release_id"]), name)
        target = os.path.join("..", "..", "shared", name)
        if os.path.lexists(link) and not os.path.islink(link):
            raise ReleaseError("release %r ships its own %s, where the shared directory %s is linked; remove it from "
                               "the code (or from the shared list)" % (p["release_id"], name, name))
        if not os.path.islink(link) or os.readlink(link) != target:
            steps.append(("link", p["release_id"], name, target))
    return steps


def _plan_assigned(store, p, before):
    manifest = _require(store, p["release_id"])
    _require_activatable(manifest, p, "assigned to a slot")
    slot, data = p["slot"], p["slot_data"] or {}
    running = store.slots().get(slot, {})
    if before["current_slot"] == slot and running.get("release") != p["release_id"] and not p["force"]:
        raise ReleaseError(
            "slot %s is live (current points at it) and runs %s; assign the release to the idle slot, or set "
            "force=true to re-point the live slot" % (slot, running.get("release")))
    plan = _status_step(manifest, p)
    if running.get("release") != p["release_id"] or running.get("data") != data:
        plan.append(("assign", slot, p["release_id"], data))
    return plan


def _plan_switch(store, p, release_id, before, kind):
    slot = p["slot"]
    if slot and store.slot_release(slot) != release_id:
        raise ReleaseError(
            "slot %s runs %s, not %s: assign the release to the slot (state=assigned) and start it first"
            % (slot, store.slot_release(slot), release_id))
    if before["current"] == release_id and before["current_slot"] == slot:
        return []
    return [("activate", release_id, slot, kind)]


def _plan_active(store, p, before):
    manifest = _require(store, p["release_id"])
    _require_activatable(manifest, p, "activated")
    return _plan_switch(store, p, p["release_id"], before, "deploy") + _status_step(manifest, p)


def _plan_rolled_back(store, p, before):
    origin = store.rollback_origin(current=before["current"])
    target = p["release_id"] or store.rollback_target(current=before["current"])
    if target is None:
        raise ReleaseError(
            "no healthy release older than %r to roll back to; name one with release_id "
            "(see botstack.deploy.release_info)" % (origin,))
    manifest = _require(store, target)
    if target != before["current"]:
        _require_activatable(manifest, dict(p, status=None), "rolled back to")
    plan = _plan_switch(store, p, target, before, "rollback")
    mark = p["mark_failed"] is not False
    origin = before["current"] if plan else origin
    if mark and origin and origin != target and (store.read_manifest(origin) or {}).get("status") != "failed":
        plan.append(("status", origin, "failed", "rolled back to %s" % target))
    return target, plan


def _plan_absent(store, p, before):
    if store.read_manifest(p["release_id"]) is None:
        return []
    if before["current"] == p["release_id"]:
        raise ReleaseError("release %r is the active release; activate or roll back to another release before "
                           "removing it" % p["release_id"])
    users = sorted(s for s, release in before["slots"].items() if release == p["release_id"])
    if users:
        raise ReleaseError("release %r runs on slot %s; assign another release to the slot before removing it"
                           % (p["release_id"], ", ".join(users)))
    return [("remove", p["release_id"])]


def _execute(store, plan, p):
    for step in plan:
        kind = step[0]
        if kind == "create":
            store.create(step[1], revision=p["revision"], status=p["status"] or "pending", pinned=bool(p["pinned"]))
            if p["reason"] is not None:
                store.update(step[1], status_reason=p["reason"])
        elif kind == "status":
            store.set_status(step[1], step[2], step[3])
        elif kind == "pinned":
            store.update(step[1], pinned=step[2])
        elif kind == "assign":
            store.assign(step[1], step[2], step[3])
        elif kind == "activate":
            store.activate(step[1], slot=step[2], kind=step[3])
        elif kind == "remove":
            store.remove(step[1])
        elif kind == "link":
            replace_symlink(step[3], os.path.join(store.release_path(step[1]), step[2]))


def _describe(step, before):
    kind = step[0]
    if kind == "create":
        return "create release %s" % step[1]
    if kind == "status":
        return "set %s status %s" % (step[1], step[2])
    if kind == "pinned":
        return "set %s pinned %s" % (step[1], step[2])
    if kind == "assign":
        return "assign slot %s: %s" % (step[1], step[2])
    if kind == "activate":
        return "switch current: %s (%s) -> %s (%s)%s" % (
            before["current_slot"] or "-", before["current"], step[2] or "-", step[1],
            " [rollback]" if step[3] == "rollback" else "")
    if kind == "remove":
        return "remove release %s" % step[1]
    if kind == "link":
        return "link %s/%s -> %s" % (step[1], step[2], step[3])
    if kind == "finish":
        return "finish the activation an interrupted run recorded"
    return "remove leftovers %s" % ", ".join(step[1])


def _after(before, plan, p):
    """The state a plan leads to (what check mode reports)."""
    after = {"current": before["current"], "current_slot": before["current_slot"],
             "slots": dict(before["slots"]), "releases": dict(before["releases"])}
    for step in plan:
        if step[0] == "create":
            after["releases"][step[1]] = p["status"] or "pending"
        elif step[0] == "status":
            after["releases"][step[1]] = step[2]
        elif step[0] == "assign":
            after["slots"][step[1]] = step[2]
        elif step[0] == "activate":
            after["current"], after["current_slot"] = step[1], step[2]
        elif step[0] == "remove":
            after["releases"].pop(step[1], None)
    return after


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", required=True),
            release_id=dict(type="str"),
            state=dict(type="str", default="present", choices=list(_OPTIONS)),
            revision=dict(type="str"),
            status=dict(type="str", choices=list(STATUSES)),
            reason=dict(type="str"),
            pinned=dict(type="bool"),
            shared=dict(type="list", elements="str"),
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
    p = module.params
    # The app's user reads releases and slots: their modes must not follow the caller's umask (a
    # hardened login.defs UMASK 027 reaches sudo sessions through pam_umask on Debian 13 and Ubuntu).
    os.umask(0o022)
    try:
        _validate(p)
        store = ReleaseStore(p["app_root"])
        if os.path.lexists(store.current_link) and not os.path.islink(store.current_link):
            raise ReleaseError(
                "%s exists and is not a symlink; move it into %s/<id>/ so it can be managed as a release"
                % (store.current_link, store.releases_dir))
        if not store.exists() and p["state"] in ("assigned", "active", "rolled_back"):
            raise ReleaseError("app_root %s does not exist: there is no release to %s; create one with "
                               "state=present first" % (store.app_root, p["state"].replace("_", " ")))
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))

    empty = {"current": None, "current_slot": None, "slots": {}, "releases": {}}
    if not store.exists() and p["state"] != "present":
        # Nothing to remove or prune, and no directory is created for it.
        module.exit_json(changed=False, current=None, current_slot=None, previous=None, previous_slot=None,
                         slots={}, releases=[], removed=[], actions=[])

    plan, chosen, before = [], p["release_id"], empty
    try:
        if not module.check_mode:
            store.ensure_root()
        # Check mode only reads: no lock, no lock file.
        with (contextlib.nullcontext() if module.check_mode else store.locked()):
            # Under the lock nobody else is writing: temporary files are leftovers of killed runs,
            # and a recorded activation is one a killed run did not finish.
            pre = []
            if store.pending_activation() is not None:
                pre.append(("finish",))
            leftovers = store.leftovers()
            if leftovers:
                pre.append(("leftovers", leftovers))
            if not module.check_mode:
                store.finish_activation()
                store.remove_leftovers()
            before = store.snapshot()
            state = p["state"]
            if state == "present":
                plan = _plan_present(store, p)
            elif state == "assigned":
                plan = _plan_assigned(store, p, before)
            elif state == "active":
                plan = _plan_active(store, p, before)
            elif state == "rolled_back":
                chosen, plan = _plan_rolled_back(store, p, before)
            elif state == "absent":
                plan = _plan_absent(store, p, before)
            elif state == "pruned":
                plan = [("remove", r) for r in store.prune_plan(p["keep"] or 5, p["protect"] or [])]
            if not module.check_mode:
                _execute(store, plan, p)
            plan = pre + plan
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))
    except (IOError, OSError) as exc:
        module.fail_json(msg="release %s failed under %s: %s" % (p["state"], p["app_root"], exc),
                         actions=[_describe(s, before) for s in plan])

    after = _after(before, plan, p)
    removed = [s[1] for s in plan if s[0] == "remove"] + [x for s in plan if s[0] == "leftovers" for x in s[1]]
    result = dict(
        changed=bool(plan),
        current=after["current"],
        current_slot=after["current_slot"],
        previous=before["current"],
        previous_slot=before["current_slot"],
        slots=after["slots"],
        releases=[_with_path(store, m) for m in store.releases()],
        removed=removed,
        actions=[_describe(s, before) for s in plan],
    )
    if chosen:
        release = _with_path(store, store.read_manifest(chosen))
        if release is None:  # check mode: not created yet
            release = {"id": chosen, "path": store.release_path(chosen), "status": p["status"] or "pending",
                       "revision": p["revision"]}
        result["release"] = release
    if module._diff:
        result["diff"] = dict(before=before, after=after, before_header="%s (before)" % store.app_root,
                              after_header="%s (after)" % store.app_root)
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()
