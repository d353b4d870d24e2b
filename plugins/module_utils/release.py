# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release directories, their manifests, the slots that run them and the ``current`` symlink.

Layout under ``app_root``::

    releases/<id>/                 one directory per release
    releases/<id>/.release.json    its manifest (id, revision, created, sequence, status, activations...)
    slots/<slot>                   relative symlink -> ../releases/<id>: the release a slot (colour) runs
    slots/<slot>.json              what the slot was started with (port, units, config id...)
    config/<id>/                   configuration bundles (botstack.deploy.app_config), by fingerprint
    current                        relative symlink -> slots/<slot> (or releases/<id> without slots)
    .activation.json               write-ahead record of a switch in progress
    .releases.lock                 flock serialising writers

Invariants kept even when a process is killed between any two steps:

* a directory named ``releases/<id>`` always has a complete manifest: releases are built
  under ``releases/.tmp-<id>-<random>`` and renamed into place;
* every symlink is replaced with ``rename(2)`` of a fully written temporary symlink, so
  ``current`` and the slots always point at complete releases (or do not exist yet);
* a switch of ``current`` is recorded in ``.activation.json`` before it happens and in the
  release's manifest after; a run that finds the record finishes (or discards) it, so an
  interrupted activation converges to what one clean run leaves;
* a release is removed by renaming it to ``releases/.trash-...`` first;
* order comes from the manifests' ``sequence`` numbers, never from mtimes.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid

MANIFEST = ".release.json"
RELEASES_DIR = "releases"
SLOTS_DIR = "slots"
CURRENT_LINK = "current"
LOCK_FILE = ".releases.lock"
ACTIVATION_FILE = ".activation.json"
# pending: being built; ready: complete, never live; healthy: passed its gate; failed: must not go live.
STATUSES = ("pending", "ready", "healthy", "failed")
ACTIVATABLE = ("ready", "healthy")
ACTIVATIONS_KEPT = 20
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SLOT_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_TEMP_PREFIXES = (".tmp-", ".trash-")
_TEMP_INFIX = ".tmp-"


class ReleaseError(Exception):
    """A request that cannot be carried out; the message names the option and the fix."""


def fingerprint(root, paths):
    """sha256 of the files under ``paths`` (relative to ``root``): names, types, contents, link targets.

    A missing path counts as missing, so adding it changes the fingerprint. Symlinks are read,
    never followed.
    """
    digest = hashlib.sha256()

    def add(*parts):
        for part in parts:
            data = part if isinstance(part, bytes) else part.encode("utf-8", "surrogateescape")
            digest.update(b"%d:" % len(data) + data)

    def add_entry(rel):
        """Add one entry; True for a directory to walk."""
        path = os.path.join(root, rel)
        if os.path.islink(path):
            add("link", rel, os.readlink(path))
        elif os.path.isfile(path):
            with open(path, "rb") as f:
                add("file", rel, f.read())
        elif os.path.isdir(path):
            add("dir", rel)
            return True
        else:
            add("missing", rel)
        return False

    for rel in sorted(set(paths)):
        if add_entry(rel):
            for top, dirs, files in os.walk(os.path.join(root, rel)):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                for name in sorted(dirs + files):
                    add_entry(os.path.relpath(os.path.join(top, name), root))
    return "sha256:" + digest.hexdigest()


def validate_app_root(app_root):
    if not app_root or not os.path.isabs(app_root):
        raise ReleaseError("app_root must be an absolute path, got %r" % (app_root,))
    app_root = os.path.normpath(app_root)
    if os.path.exists(app_root) and not os.path.isdir(app_root):
        raise ReleaseError("app_root %s exists and is not a directory; point app_root at the "
                           "application's directory" % app_root)
    return app_root


def validate_release_id(release_id, option="release_id"):
    if release_id is None or release_id == "":
        raise ReleaseError("%s is required for this state" % option)
    if "/" in release_id or ".." in release_id or not _ID_PATTERN.match(release_id):
        raise ReleaseError(
            "%s must be 1-128 characters of letters, digits, '.', '_', '+' or '-', start with a "
            "letter or digit, and contain neither '/' nor '..'; got %r" % (option, release_id))
    return release_id


def validate_slot(slot, option="slot"):
    if not slot or not _SLOT_PATTERN.match(slot):
        raise ReleaseError("%s must be 1-32 lowercase letters, digits, '_' or '-', starting with a "
                           "letter (e.g. blue, green); got %r" % (option, slot))
    return slot


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def flocked(path, mode=0o644):
    """Hold an exclusive flock on path (created when missing) for the with-block."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_json_atomic(path, data):
    tmp = "%s%s%s" % (path, _TEMP_INFIX, uuid.uuid4().hex[:8])
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def replace_symlink(target, link):
    """Point link at target with one rename(2) of a complete temporary symlink."""
    tmp = "%s%s%s" % (link, _TEMP_INFIX, uuid.uuid4().hex[:8])
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(os.path.dirname(link))


def _last_activation(manifest, kinds=None):
    """The newest activation of a release (of one of kinds), or {}."""
    found = [a for a in (manifest or {}).get("activations") or [] if kinds is None or a.get("kind") in kinds]
    return found[-1] if found else {}


class ReleaseStore:
    """All reads and writes of one application's releases and slots."""

    def __init__(self, app_root):
        self.app_root = validate_app_root(app_root)
        self.releases_dir = os.path.join(self.app_root, RELEASES_DIR)
        self.slots_dir = os.path.join(self.app_root, SLOTS_DIR)
        self.current_link = os.path.join(self.app_root, CURRENT_LINK)
        self.activation_file = os.path.join(self.app_root, ACTIVATION_FILE)

    # --- reading ---------------------------------------------------------
    def exists(self):
        return os.path.isdir(self.app_root)

    def release_path(self, release_id):
        return os.path.join(self.releases_dir, release_id)

    def read_manifest(self, release_id):
        return read_json(os.path.join(self.release_path(release_id), MANIFEST))

    def releases(self):
        """Manifests of complete releases, oldest first (by sequence)."""
        try:
            names = os.listdir(self.releases_dir)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return []
            raise
        found = []
        for name in names:
            if name.startswith(_TEMP_PREFIXES) or not os.path.isdir(self.release_path(name)):
                continue
            manifest = self.read_manifest(name)
            if manifest is not None and manifest.get("id") == name:
                found.append(manifest)
        found.sort(key=lambda m: (m.get("sequence", 0), m.get("created", ""), m["id"]))
        return found

    def _release_of_link(self, link):
        """Release id a symlink (current or a slot) resolves to, or None."""
        try:
            real = os.path.realpath(link)
        except OSError:
            return None
        if os.path.dirname(real) != os.path.realpath(self.releases_dir):
            return None
        name = os.path.basename(real)
        return name if self.read_manifest(name) is not None else None

    def current(self):
        """Id of the release ``current`` resolves to (through its slot), or None."""
        if not os.path.islink(self.current_link):
            return None
        return self._release_of_link(self.current_link)

    def current_slot(self):
        """Slot ``current`` points at, or None (no current, or current names a release directly)."""
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        head, name = os.path.split(os.path.normpath(target))
        return name if head == SLOTS_DIR else None

    def slot_link(self, slot):
        return os.path.join(self.slots_dir, slot)

    def slot_release(self, slot):
        link = self.slot_link(slot)
        return self._release_of_link(link) if os.path.islink(link) else None

    def slots(self):
        """{slot: {release, data, assigned}} for every slot symlink."""
        try:
            names = sorted(os.listdir(self.slots_dir))
        except OSError:
            return {}
        found = {}
        for name in names:
            if _TEMP_INFIX in name or name.endswith(".json") or not _SLOT_PATTERN.match(name):
                continue
            if not os.path.islink(self.slot_link(name)):
                continue
            release = self.slot_release(name)
            meta = read_json(self.slot_link(name) + ".json") or {}
            # The metadata is written before the link: it describes the link only when they agree.
            fresh = meta.get("release") == release
            found[name] = {"release": release, "data": meta.get("data", {}) if fresh else {},
                           "assigned": meta.get("assigned") if fresh else None}
        return found

    def pending_activation(self):
        return read_json(self.activation_file)

    def rollback_origin(self, releases=None, current=None):
        """The release a rollback undoes: current, or what current was rolled back from."""
        current = self.current() if current is None else current
        if current is None:
            return None
        manifest = next((m for m in (releases or self.releases()) if m["id"] == current), None) or {}
        last = (manifest.get("activations") or [{}])[-1]
        if last.get("kind") == "rollback" and last.get("from"):
            return last["from"]
        return current

    def rollback_target(self, releases=None, current=None):
        """Newest healthy release older than the rollback origin.

        Computed from the origin, not from current, so a rollback repeated after it
        completed (an operator's or AWX's retry) finds the same target instead of
        going one release further back. When the origin went live as a change of configuration
        only (the same release with another configuration bundle), the origin itself is the
        target: a rollback then returns to the configuration it replaced (rollback_config).
        """
        return self.rollback_plan(releases, current)[0]

    def rollback_plan(self, releases=None, current=None):
        """(release, config) a rollback returns to; config is None when no bundle is recorded."""
        releases = self.releases() if releases is None else releases
        current = self.current() if current is None else current
        origin = self.rollback_origin(releases, current)
        by_id = dict((m["id"], m) for m in releases)
        went_live = _last_activation(by_id.get(origin), kinds=("deploy",))
        if (went_live.get("from") == origin and went_live.get("from_config")
                and went_live.get("from_config") != went_live.get("config")):
            return origin, went_live["from_config"]
        origin_seq = (by_id.get(origin) or {}).get("sequence")
        candidates = [m for m in releases
                      if m["id"] != origin and m.get("status") == "healthy"
                      and (origin_seq is None or m.get("sequence", 0) < origin_seq)]
        if not candidates:
            return None, None
        return candidates[-1]["id"], _last_activation(candidates[-1]).get("config")

    def configs(self):
        """Ids of the configuration bundles present (botstack.deploy.app_config writes them)."""
        root = os.path.join(self.app_root, "config")
        try:
            names = sorted(os.listdir(root))
        except OSError:
            return []
        return [n for n in names if not n.startswith(_TEMP_PREFIXES)
                and os.path.isfile(os.path.join(root, n, "manifest.json"))]

    def describe(self):
        """Everything release_info returns: releases (with path and active flag), current, slots, rollback target."""
        current = self.current()
        releases = self.releases()
        for manifest in releases:
            manifest["path"] = self.release_path(manifest["id"])
            manifest["active"] = manifest["id"] == current
        target, config = self.rollback_plan(releases, current)
        return dict(
            current=current,
            current_slot=self.current_slot(),
            slots=self.slots(),
            rollback_target=target,
            rollback_config=config,
            configs=self.configs(),
            pending_activation=self.pending_activation(),
            releases=releases,
            leftovers=self.leftovers(),
        )

    def leftovers(self):
        """Temporary files and directories left by interrupted runs (paths relative to app_root)."""
        found = []
        if os.path.isdir(self.releases_dir):
            for name in sorted(os.listdir(self.releases_dir)):
                if name.startswith(_TEMP_PREFIXES):
                    found.append(os.path.join(RELEASES_DIR, name))
                    continue
                path = self.release_path(name)
                if os.path.isdir(path) and not os.path.islink(path):
                    found.extend(os.path.join(RELEASES_DIR, name, f) for f in sorted(os.listdir(path))
                                 if f.startswith(MANIFEST + _TEMP_INFIX))
        for directory, prefix in ((self.app_root, ""), (self.slots_dir, SLOTS_DIR)):
            if os.path.isdir(directory):
                found.extend(os.path.join(prefix, n) if prefix else n for n in sorted(os.listdir(directory))
                             if _TEMP_INFIX in n and not n.startswith(_TEMP_PREFIXES))
        return found

    def snapshot(self):
        return {
            "current": self.current(),
            "current_slot": self.current_slot(),
            "slots": dict((k, v["release"]) for k, v in self.slots().items()),
            "releases": dict((m["id"], m.get("status")) for m in self.releases()),
        }

    # --- writing (callers hold the lock) ----------------------------------
    def locked(self):
        """Serialise writers of this app_root (flock; released if the process dies)."""
        return flocked(os.path.join(self.app_root, LOCK_FILE))

    def ensure_root(self):
        os.makedirs(self.app_root, exist_ok=True)

    def create(self, release_id, revision=None, status="pending", pinned=False, mode=0o755):
        """Build the release under a temporary name, then rename it into place."""
        os.makedirs(self.releases_dir, exist_ok=True)
        releases = self.releases()
        sequence = max([m.get("sequence", 0) for m in releases] or [0]) + 1
        manifest = {
            "id": release_id,
            "revision": revision,
            "created": utcnow(),
            "sequence": sequence,
            "status": status,
            "replaced": None,
            "activated": None,
            "activations": [],
            "pinned": bool(pinned),
        }
        tmp = os.path.join(self.releases_dir, ".tmp-%s-%s" % (release_id, uuid.uuid4().hex[:8]))
        os.mkdir(tmp, mode)
        write_json_atomic(os.path.join(tmp, MANIFEST), manifest)
        os.rename(tmp, self.release_path(release_id))
        fsync_dir(self.releases_dir)
        return manifest

    def update(self, release_id, **fields):
        manifest = self.read_manifest(release_id)
        manifest.update(fields)
        write_json_atomic(os.path.join(self.release_path(release_id), MANIFEST), manifest)
        return manifest

    def set_status(self, release_id, status, reason=None):
        return self.update(release_id, status=status, status_reason=reason, status_changed=utcnow())

    def assign(self, slot, release_id, data):
        """Point slots/<slot> at the release; its metadata is written first (see slots())."""
        os.makedirs(self.slots_dir, exist_ok=True)
        write_json_atomic(self.slot_link(slot) + ".json",
                          {"slot": slot, "release": release_id, "data": data or {}, "assigned": utcnow()})
        replace_symlink(os.path.join("..", RELEASES_DIR, release_id), self.slot_link(slot))

    def activate(self, release_id, slot=None, kind="deploy"):
        """Switch current with a write-ahead record, then record the activation in the manifest.

        The record names the configuration bundle the slot runs (its data's config) and the one the
        previous live slot ran, so a rollback can return to either."""
        slots = self.slots()
        intent = {"release": release_id, "slot": slot, "from": self.current(), "kind": kind, "at": utcnow(),
                  "config": ((slots.get(slot) or {}).get("data") or {}).get("config"),
                  "from_config": ((slots.get(self.current_slot()) or {}).get("data") or {}).get("config")}
        write_json_atomic(self.activation_file, intent)
        target = os.path.join(SLOTS_DIR, slot) if slot else os.path.join(RELEASES_DIR, release_id)
        replace_symlink(target, self.current_link)
        self.finish_activation()

    def finish_activation(self):
        """Complete the recorded activation if current switched, discard it if not.

        Returns what was done, for the caller's audit trail, or None when no record exists.
        """
        intent = self.pending_activation()
        if intent is None:
            return None
        switched = self.current() == intent.get("release") and self.current_slot() == intent.get("slot")
        if switched and self.read_manifest(intent["release"]) is not None:
            manifest = self.read_manifest(intent["release"])
            activations = manifest.get("activations") or []
            if not activations or activations[-1].get("at") != intent["at"]:
                recorded = ("at", "from", "slot", "kind", "config", "from_config")
                activations = activations + [dict((k, intent.get(k)) for k in recorded)]
                fields = {"activations": activations[-ACTIVATIONS_KEPT:]}
                if not manifest.get("activated"):
                    # The lineage: what this release replaced when it first went live.
                    fields.update(activated=intent["at"], replaced=intent["from"])
                self.update(intent["release"], **fields)
            done = "recorded activation of %s" % intent["release"]
        else:
            done = "discarded unfinished activation of %s" % intent.get("release")
        os.unlink(self.activation_file)
        fsync_dir(self.app_root)
        return done

    def remove(self, release_id):
        """Rename out of the way first, so no half-deleted tree keeps a release name."""
        trash = os.path.join(self.releases_dir, ".trash-%s-%s" % (release_id, uuid.uuid4().hex[:8]))
        os.rename(self.release_path(release_id), trash)
        shutil.rmtree(trash)

    def remove_leftovers(self):
        removed = []
        for relative in self.leftovers():
            path = os.path.join(self.app_root, relative)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    continue
            removed.append(relative)
        return removed

    # --- planning ---------------------------------------------------------
    def prune_plan(self, keep, protect=()):
        """Ids to remove: all but the ``keep`` newest, sparing the active release, every
        slot's release, the rollback target, pinned and protected releases."""
        releases = self.releases()
        current = self.current()
        protected = set(protect) | {m["id"] for m in releases if m.get("pinned")}
        protected |= {s["release"] for s in self.slots().values() if s["release"]}
        intent = self.pending_activation() or {}
        protected |= {r for r in (current, intent.get("release"), self.rollback_target(releases, current)) if r}
        newest = {m["id"] for m in releases[-keep:]} if keep > 0 else set()
        return [m["id"] for m in releases if m["id"] not in newest and m["id"] not in protected]


# Which options each state accepts beyond app_root and state.
STATE_OPTIONS = {
    "present": {"release_id", "revision", "status", "reason", "pinned", "shared", "fingerprints"},
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
    unsupported = sorted(given - STATE_OPTIONS[state])
    if p["force"] and "force" not in STATE_OPTIONS[state]:
        unsupported.append("force")
    if unsupported:
        raise ReleaseError("%s cannot be used with state=%s (it would be ignored); options for %s: %s"
                           % (", ".join(unsupported), state, state, ", ".join(sorted(STATE_OPTIONS[state]))))
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
    for name, paths in (p.get("fingerprints") or {}).items():
        if not re.match(r"^[a-z][a-z0-9_]{0,31}$", str(name)):
            raise ReleaseError("fingerprints keys name what is fingerprinted (lower-case letters, digits, _), got %r"
                               % (name,))
        if not isinstance(paths, list) or not paths or not all(isinstance(x, str) and x for x in paths):
            raise ReleaseError("fingerprints.%s must be a non-empty list of paths relative to the release, got %r"
                               % (name, paths))
        for rel in paths:
            if os.path.isabs(rel) or ".." in rel.split("/"):
                raise ReleaseError("fingerprints.%s: %r must be relative to the release, without '..'" % (name, rel))
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
        if p.get("fingerprints"):
            raise ReleaseError("fingerprints describe the files of release %r, which does not exist yet: give them "
                               "once its files are in place (with status=ready)" % p["release_id"])
        return [("create", p["release_id"])] + [("link", p["release_id"], n, os.path.join("..", "..", "shared", n))
                                                for n in p["shared"] or []]
    if p["revision"] is not None and manifest.get("revision") not in (None, p["revision"]):
        raise ReleaseError(
            "release %r exists with revision %s, not %s: a release id names one revision; use a new "
            "release_id for the new revision" % (p["release_id"], manifest.get("revision"), p["revision"]))
    plan = _link_steps(store, p)
    if p.get("fingerprints"):
        found = {name: fingerprint(store.release_path(p["release_id"]), paths)
                 for name, paths in sorted(p["fingerprints"].items())}
        if dict(manifest.get("fingerprints") or {}, **found) != (manifest.get("fingerprints") or {}):
            plan.append(("fingerprints", p["release_id"], found))
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
        elif kind == "fingerprints":
            store.update(step[1], fingerprints=dict(store.read_manifest(step[1]).get("fingerprints") or {}, **step[2]))
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
    if kind == "fingerprints":
        return "record %s fingerprints %s" % (step[1], ", ".join("%s %s" % (k, v[:19]) for k, v in sorted(step[2].items())))
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


def run_release(module, p):
    """What the release module does with options p (its argument spec's); fails through module.fail_json.

    Returns the module's result. Shared by the release module and the slot switch.
    """
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
        return dict(changed=False, current=None, current_slot=None, previous=None, previous_slot=None,
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
    return result
