# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release directories, their manifests, the slots that run them and the ``current`` symlink.

Layout under ``app_root``::

    releases/<id>/                 one directory per release
    releases/<id>/.release.json    its manifest (id, revision, created, sequence, status, activations...)
    slots/<slot>                   relative symlink -> ../releases/<id>: the release a slot (colour) runs
    slots/<slot>.json              what the slot was started with (port, units, config hash...)
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
        going one release further back.
        """
        releases = self.releases() if releases is None else releases
        current = self.current() if current is None else current
        origin = self.rollback_origin(releases, current)
        origin_seq = next((m.get("sequence") for m in releases if m["id"] == origin), None)
        candidates = [m for m in releases
                      if m["id"] != origin and m.get("status") == "healthy"
                      and (origin_seq is None or m.get("sequence", 0) < origin_seq)]
        return candidates[-1]["id"] if candidates else None

    def describe(self):
        """Everything release_info returns: releases (with path and active flag), current, slots, rollback target."""
        current = self.current()
        releases = self.releases()
        for manifest in releases:
            manifest["path"] = self.release_path(manifest["id"])
            manifest["active"] = manifest["id"] == current
        return dict(
            current=current,
            current_slot=self.current_slot(),
            slots=self.slots(),
            rollback_target=self.rollback_target(releases, current),
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
        """Switch current with a write-ahead record, then record the activation in the manifest."""
        intent = {"release": release_id, "slot": slot, "from": self.current(), "kind": kind, "at": utcnow()}
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
                activations = (activations + [dict((k, intent[k]) for k in ("at", "from", "slot", "kind"))])
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
