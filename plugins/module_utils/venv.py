# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Content-addressed virtualenvs shared by releases.

Layout under ``venvs_dir``::

    <impl>-<version>-<key16>/                 one complete venv per (interpreter, locked deps)
    <impl>-<version>-<key16>/.botstack-venv.json   its manifest, written last before the rename
    .tmp-<name>-<random>/                     a venv being built (never used by anyone)
    .trash-<name>-<random>/                   a venv being removed
    .venvs.lock                               flock serialising builders and pruners

A venv directory with a manifest is complete: builds happen in a temporary
directory that is renamed into place in one ``rename(2)``. The key covers the
interpreter (implementation, full version, ABI, machine, resolved executable),
the locked requirements (comments and blank lines dropped), the seed
packages and the bytecode option, so a code-only release reuses its venv without installing anything.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import re
import shutil
import uuid

from ansible_collections.botstack.deploy.plugins.module_utils.release import (
    flocked,
    fsync_dir,
    utcnow,
    write_json_atomic,
)

MANIFEST = ".botstack-venv.json"
LOCK_FILE = ".venvs.lock"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
KEY_FORMAT = 1
_INCLUDE = re.compile(r"^\s*(-r|-c|--requirement|--constraint)(\s|=|$)")
RELEASE_LINK = ".venv"
# What temp_path() and remove() name their directories: <prefix><venv name>-<8 hex>.
_LEFTOVER = re.compile(r"^(%s|%s)[a-z0-9]+-[0-9][0-9A-Za-z.+]*-[0-9a-f]{16}-[0-9a-f]{8}$"
                       % (re.escape(TEMP_PREFIX), re.escape(TRASH_PREFIX)))

# Printed by the interpreter itself: what a venv built on it is bound to.
IDENTITY_SCRIPT = (
    "import json, os, platform, sys, sysconfig; print(json.dumps({"
    "'implementation': sys.implementation.name, 'version': platform.python_version(), "
    "'soabi': sysconfig.get_config_var('SOABI') or '', 'machine': platform.machine(), "
    "'executable': os.path.realpath(sys.executable)}))"
)


class VenvError(Exception):
    """A request that cannot be carried out; the message names the option and the fix."""


def normalized_requirements(text, option="requirements"):
    """The lines an installer reads: comments, blank lines and trailing spaces dropped."""
    lines = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        if _INCLUDE.match(line):
            raise VenvError(
                "%s includes another file (%s): the venv key covers one file only. Compile a single "
                "lock file (uv pip compile / uv export / pip-compile) and point %s at it"
                % (option, line.strip(), option))
        lines.append(line)
    return "\n".join(lines) + "\n"


def venv_key(identity, requirements_text, seed_packages, compile_bytecode=True):
    payload = json.dumps({
        "format": KEY_FORMAT,
        "python": identity,
        "requirements": requirements_text,
        "seed": list(seed_packages),
        "bytecode": bool(compile_bytecode),
    }, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def venv_name(identity, key):
    return "%s-%s-%s" % (identity["implementation"], identity["version"], key[:16])


def relocate_scripts(venv, old, new):
    """Point pip-written entry points and activate scripts at the venv's final path.

    uv writes relocatable scripts (``uv venv --relocatable``); pip writes absolute
    shebangs, which must name the path the venv will be renamed to.
    """
    bindir = os.path.join(venv, "bin")
    old_b, new_b = old.encode(), new.encode()
    for name in os.listdir(bindir):
        path = os.path.join(bindir, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as handle:
            head = handle.read(2)
            if head != b"#!" and not name.startswith("activate"):
                continue
            data = head + handle.read()
        if old_b in data:
            with open(path, "wb") as handle:
                handle.write(data.replace(old_b, new_b))


class VenvStore(object):
    def __init__(self, venvs_dir):
        if not venvs_dir or not os.path.isabs(venvs_dir):
            raise VenvError("venvs_dir must be an absolute path, got %r" % (venvs_dir,))
        self.root = os.path.normpath(venvs_dir)

    def path(self, name):
        return os.path.join(self.root, name)

    def ensure_root(self):
        if not os.path.isdir(self.root):
            os.makedirs(self.root, 0o755)

    def locked(self):
        return flocked(os.path.join(self.root, LOCK_FILE), 0o600)

    def manifest(self, name):
        try:
            with open(os.path.join(self.path(name), MANIFEST)) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError):
            return None

    def venvs(self):
        """Complete venvs (those with a manifest), oldest first."""
        if not os.path.isdir(self.root):
            return []
        found = []
        for name in os.listdir(self.root):
            if name.startswith("."):
                continue
            manifest = self.manifest(name)
            if manifest is not None:
                manifest["path"] = self.path(name)
                found.append(manifest)
        return sorted(found, key=lambda m: (m.get("created", ""), m["name"]))

    def leftovers(self):
        """Directories this module created and an interrupted run left: only its own name pattern."""
        if not os.path.isdir(self.root):
            return []
        return sorted(self.path(n) for n in os.listdir(self.root)
                      if _LEFTOVER.match(n) and os.path.isdir(self.path(n)) and not os.path.islink(self.path(n)))

    def foreign(self):
        """Entries this module did not create (no manifest, not its temporary names): never removed."""
        if not os.path.isdir(self.root):
            return []
        return sorted(self.path(n) for n in os.listdir(self.root)
                      if n not in (LOCK_FILE, ".cache") and not _LEFTOVER.match(n) and self.manifest(n) is None)

    def remove_leftovers(self):
        removed = []
        for path in self.leftovers():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        return removed

    def temp_path(self, name):
        return self.path("%s%s-%s" % (TEMP_PREFIX, name, uuid.uuid4().hex[:8]))

    def publish(self, temp, name, manifest):
        """Write the manifest into the finished build, then rename it into place."""
        write_json_atomic(os.path.join(temp, MANIFEST), dict(manifest, name=name, created=utcnow()))
        final = self.path(name)
        try:
            os.rename(temp, final)
        except OSError as exc:
            # Someone published the same key first: theirs is as good as ours.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(temp, ignore_errors=True)
        fsync_dir(self.root)
        return final

    def remove(self, name):
        trash = self.path("%s%s-%s" % (TRASH_PREFIX, name, uuid.uuid4().hex[:8]))
        os.rename(self.path(name), trash)
        shutil.rmtree(trash, ignore_errors=True)

    def referenced_by(self, app_roots):
        """Venv names linked from releases under app_roots (``releases/*/.venv``)."""
        used = set()
        for app_root in app_roots:
            releases = os.path.join(app_root, "releases")
            if not os.path.isdir(releases):
                continue
            for release in os.listdir(releases):
                link = os.path.join(releases, release, RELEASE_LINK)
                name = self.name_of(link) if os.path.lexists(link) else None
                if name:
                    used.add(name)
        return used

    def name_of(self, path):
        """The venv name for a path inside venvs_dir, or None for a path elsewhere."""
        path = os.path.normpath(path if os.path.isabs(path) else self.path(path))
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if os.path.dirname(real) == root:
            return os.path.basename(real)
        if os.path.dirname(path) == self.root:
            return os.path.basename(path)
        return None

    def prune_plan(self, in_use_names, keep_unused):
        """(kept, removed) venv names: every venv in use is kept, then the keep_unused newest others."""
        venvs = self.venvs()
        unused = [m["name"] for m in venvs if m["name"] not in in_use_names]
        spare = set(unused[len(unused) - keep_unused:]) if keep_unused > 0 else set()
        removed = [n for n in unused if n not in spare]
        kept = [m["name"] for m in venvs if m["name"] not in removed]
        return kept, removed
