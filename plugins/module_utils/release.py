# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release directories, their manifests and the ``current`` symlink.

Layout under ``app_root``::

    releases/<id>/                 one directory per release
    releases/<id>/.release.json    its manifest (id, revision, created, sequence, status, replaced, pinned)
    current -> releases/<id>       relative symlink, swapped atomically

Invariants the code keeps even when a process is killed between any two steps:

* a directory named ``releases/<id>`` always has a complete manifest: releases are
  built under ``releases/.tmp-<id>-<random>`` and renamed into place;
* ``current`` is replaced with ``rename(2)`` of a fully written temporary
  symlink, so it always points at a complete release (or does not exist yet);
* a release is removed by renaming it to ``releases/.trash-...`` first, so a
  half-deleted tree never carries a release name;
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
CURRENT_LINK = "current"
LOCK_FILE = ".releases.lock"
STATUSES = ("pending", "healthy", "failed")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_TEMP_PREFIXES = (".tmp-", ".trash-")


class ReleaseError(Exception):
    """A request that cannot be carried out; the message names the option and the fix."""


def validate_app_root(app_root):
    if not app_root or not os.path.isabs(app_root):
        raise ReleaseError("app_root must be an absolute path, got %r" % (app_root,))
    return os.path.normpath(app_root)


def validate_release_id(release_id, option="release_id"):
    if release_id is None or release_id == "":
        raise ReleaseError("%s is required for this state" % option)
    if "/" in release_id or ".." in release_id or not _ID_PATTERN.match(release_id):
        raise ReleaseError(
            "%s must be 1-128 characters of letters, digits, '.', '_', '+' or '-', start with a "
            "letter or digit, and contain neither '/' nor '..'; got %r" % (option, release_id))
    return release_id


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
    tmp = "%s.tmp-%s" % (path, uuid.uuid4().hex[:8])
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ReleaseStore:
    """All reads and writes of one application's releases."""

    def __init__(self, app_root):
        self.app_root = validate_app_root(app_root)
        self.releases_dir = os.path.join(self.app_root, RELEASES_DIR)
        self.current_link = os.path.join(self.app_root, CURRENT_LINK)

    # --- reading ---------------------------------------------------------
    def release_path(self, release_id):
        return os.path.join(self.releases_dir, release_id)

    def read_manifest(self, release_id):
        path = os.path.join(self.release_path(release_id), MANIFEST)
        try:
            with open(path) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError):
            return None

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

    def leftovers(self):
        """Temporary and trash directories left by interrupted runs."""
        try:
            return sorted(n for n in os.listdir(self.releases_dir) if n.startswith(_TEMP_PREFIXES))
        except OSError:
            return []

    def current(self):
        """Id of the release ``current`` points at, or None."""
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        name = os.path.basename(os.path.normpath(target))
        return name if self.read_manifest(name) is not None else None

    def rollback_target(self, releases=None, current=None):
        """Newest healthy release older than the current one."""
        releases = self.releases() if releases is None else releases
        current = self.current() if current is None else current
        cur_seq = next((m["sequence"] for m in releases if m["id"] == current), None)
        candidates = [m for m in releases
                      if m["id"] != current and m.get("status") == "healthy"
                      and (cur_seq is None or m["sequence"] < cur_seq)]
        return candidates[-1]["id"] if candidates else None

    def snapshot(self):
        return {"current": self.current(), "releases": [m["id"] for m in self.releases()]}

    # --- writing (callers hold the lock) ----------------------------------
    def locked(self):
        """Serialise writers of this app_root (flock; released if the process dies)."""
        os.makedirs(self.app_root, exist_ok=True)
        return flocked(os.path.join(self.app_root, LOCK_FILE))

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

    def switch(self, release_id):
        """Point ``current`` at the release with one rename(2)."""
        tmp = "%s.tmp-%s" % (self.current_link, uuid.uuid4().hex[:8])
        os.symlink(os.path.join(RELEASES_DIR, release_id), tmp)
        os.replace(tmp, self.current_link)
        fsync_dir(self.app_root)

    def remove(self, release_id):
        """Rename out of the way first, so no half-deleted tree keeps a release name."""
        trash = os.path.join(self.releases_dir, ".trash-%s-%s" % (release_id, uuid.uuid4().hex[:8]))
        os.rename(self.release_path(release_id), trash)
        shutil.rmtree(trash)

    def remove_leftovers(self):
        removed = []
        for name in self.leftovers():
            shutil.rmtree(os.path.join(self.releases_dir, name), ignore_errors=True)
            removed.append(name)
        for name in os.listdir(self.app_root):
            if name.startswith(CURRENT_LINK + ".tmp-"):
                os.unlink(os.path.join(self.app_root, name))
                removed.append(name)
        return removed

    # --- planning ---------------------------------------------------------
    def prune_plan(self, keep, pinned=()):
        """Ids to remove: all but the ``keep`` newest, sparing the active release,
        the rollback target and pinned releases."""
        releases = self.releases()
        current = self.current()
        protected = set(pinned) | {m["id"] for m in releases if m.get("pinned")}
        if current:
            protected.add(current)
        target = self.rollback_target(releases, current)
        if target:
            protected.add(target)
        newest = {m["id"] for m in releases[-keep:]} if keep > 0 else set()
        return [m["id"] for m in releases if m["id"] not in newest and m["id"] not in protected]
