# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Content-addressed virtualenvs shared by releases.

Layout under ``venvs_dir``::

    <impl>-<version>-<key16>/                 one complete venv per (interpreter, locked deps[, project])
    <impl>-<version>-<key16>/.botstack-venv.json   its manifest, written last before the rename
    .tmp-<name>-<random>/                     a venv being built (never used by anyone)
    .trash-<name>-<random>/                   a venv being removed
    .apps.json                                the app roots (and other links) that link venvs of this store
    .venvs.lock                               flock serialising builders, linkers and pruners

A venv directory with a manifest is complete: builds happen in a temporary
directory that is renamed into place in one ``rename(2)``. The key covers the
interpreter (implementation, full version, ABI, machine, resolved executable),
the locked requirements (comments and blank lines dropped; a uv.lock counts as
what ``uv export`` gives for it), the seed packages and the bytecode option, so a
code-only release reuses its venv without installing anything. A venv that also
holds the project itself adds the project's source fingerprint to the key.

Several apps may share one store: every link made through the module registers
its app root in ``.apps.json``, and pruning keeps what the releases of every
registered root link to, whichever app asked for the prune.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import uuid

from ansible.module_utils.six.moves.urllib.parse import unquote, urlparse

from ansible_collections.botstack.deploy.plugins.module_utils.release import (
    MANIFEST as RELEASE_MANIFEST,
    RELEASES_DIR,
    flocked,
    fsync_dir,
    read_json,
    utcnow,
    write_json_atomic,
)

MANIFEST = ".botstack-venv.json"
LOCK_FILE = ".venvs.lock"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
KEY_FORMAT = 1
REGISTRY = ".apps.json"
REGISTRY_TEMP = REGISTRY + ".tmp-"  # write_json_atomic's temporary names
BUILD_DIR = ".botstack-build"  # inside a venv being built: the project's copy and wheel, removed before publish
_INCLUDE = re.compile(r"^\s*(-r|-c|--requirement|--constraint)(\s|=|$)")
_EDITABLE = re.compile(r"^\s*(-e|--editable)(\s|=|$)")
_NAMED_URL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:\[[^\]]*\])?\s*@\s*(\S+)")
RELEASE_LINK = ".venv"
# Never part of a project's fingerprint nor of the copy its wheel is built from: version control,
# caches, venvs, build outputs, and the record the release module keeps in a release.
_SKIP_DIRS = frozenset((".git", ".hg", ".svn", "__pycache__", ".venv", ".tox", ".nox", ".mypy_cache",
                        ".pytest_cache", ".ruff_cache"))
_SKIP_TOP = frozenset(("build", "dist"))
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


def normalized_requirements(text, option="requirements", source=None):
    """The lines an installer reads: comments, blank lines and trailing spaces dropped.

    Refuses includes (the key covers one file) and editable installs (a venv must not point
    into a release, which is read-only and replaced on every deploy). source names the file
    in messages (default: the option).
    """
    source = source or option
    lines = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        if _INCLUDE.match(line):
            raise VenvError(
                "%s includes another file (%s): the venv key covers one file only. Compile a single "
                "lock file (uv pip compile / uv export / pip-compile) and point %s at it"
                % (option, line.strip(), option))
        if _EDITABLE.match(line):
            raise VenvError(
                "%s line %d: \"%s\" is an editable install. A release is read-only and replaced on every "
                "deploy, and the venv is shared by releases, so it must not point into one: install the project "
                "non-editably with the project option (role variable python_venv_project), or drop the line"
                % (source, number, line.strip()))
        lines.append(line)
    return "\n".join(lines) + "\n"


def local_directories(requirements_text, base):
    """Requirement lines naming a local directory (relative paths from base): the key covers the
    requirements' text, not the directory's files, so a changed directory would reuse a stale venv."""
    found = []
    for line in requirements_text.splitlines():
        spec = line.strip().rstrip("\\").strip()
        if not spec or spec.startswith("-"):
            continue
        spec = spec.split(";", 1)[0].split(" --", 1)[0].strip()
        named = _NAMED_URL.match(spec)
        target = named.group(1) if named else spec
        if target.startswith("file:"):
            target = unquote(urlparse(target).path)
        elif not target.startswith((".", "/")):
            continue
        if os.path.isdir(os.path.join(base, target)):
            found.append(spec)
    return found


def venv_key(identity, requirements_text, seed_packages, compile_bytecode=True, project=None):
    """SHA-256 of what a venv is made of; project is the project's fingerprint when it is installed too."""
    payload = {
        "format": KEY_FORMAT,
        "python": identity,
        "requirements": requirements_text,
        "seed": list(seed_packages),
        "bytecode": bool(compile_bytecode),
    }
    if project:  # absent otherwise, so deps-only venvs keep the keys they always had
        payload["project"] = project
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def venv_name(identity, key):
    return "%s-%s-%s" % (identity["implementation"], identity["version"], key[:16])


def _project_entries(root):
    """(relative path, kind, data) of what a project is built from, sorted.

    kind is "file" (data: exec bit, content sha256) or "link" (data: its target, for links that
    stay inside the project; others, such as a release's shared directories, are left out).
    """
    root = os.path.realpath(root)
    entries = []
    for top, dirs, files in os.walk(root):
        rel_top = os.path.relpath(top, root)
        rel_top = "" if rel_top == "." else rel_top
        kept = []
        for name in sorted(dirs):
            path = os.path.join(top, name)
            if name in _SKIP_DIRS or name.endswith(".egg-info") or (not rel_top and name in _SKIP_TOP):
                continue
            if os.path.islink(path):
                files.append(name)  # recorded as a link below, never walked into
                continue
            kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            path = os.path.join(top, name)
            rel = os.path.join(rel_top, name)
            if name.endswith((".pyc", ".pyo")) or (not rel_top and name.startswith(RELEASE_MANIFEST)):
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                real = os.path.realpath(path)
                if real.startswith(root + os.sep) and os.path.exists(real):
                    entries.append((rel, "link", os.readlink(path)))
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                entries.append((rel, "file", "%d:%s" % (bool(info.st_mode & 0o111), digest.hexdigest())))
    return sorted(entries)


def project_fingerprint(root):
    """(fingerprint, entries) of the project at root: a SHA-256 over its files' paths, modes and content.

    Path-independent, so the same code in two release directories has the same fingerprint.
    """
    if not os.path.isdir(root):
        raise VenvError("project %s is not a directory: point project at the directory holding the project's "
                        "pyproject.toml" % root)
    if not any(os.path.isfile(os.path.join(root, f)) for f in ("pyproject.toml", "setup.py")):
        raise VenvError("project %s has neither a pyproject.toml nor a setup.py: point project at the directory "
                        "holding the project's pyproject.toml" % root)
    entries = _project_entries(root)
    payload = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(payload).hexdigest(), entries


def copy_project(root, dest, entries):
    """Copy exactly the fingerprinted entries: the wheel is built from what the key covers, and
    building never writes into the project (setuptools leaves build/ and *.egg-info behind)."""
    root = os.path.realpath(root)
    for rel, kind, data in entries:
        target = os.path.join(dest, rel)
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent)
        if kind == "link":
            os.symlink(data, target)
        else:
            shutil.copy2(os.path.join(root, rel), target)


def app_root_of_link(link):
    """The app root of a release's venv link (<root>/releases/<id>/.venv), else None."""
    link = os.path.abspath(link)
    release = os.path.dirname(link)
    if os.path.basename(link) == RELEASE_LINK and os.path.basename(os.path.dirname(release)) == RELEASES_DIR:
        return os.path.dirname(os.path.dirname(release))
    return None


def _app_root_of_file(path):
    """The app root of a release or of a file in one (<root>/releases/<id>[/...]), else None."""
    parts = os.path.abspath(path).split(os.sep)
    for index in range(len(parts) - 2, 0, -1):
        if parts[index] == RELEASES_DIR:
            return os.sep.join(parts[:index]) or os.sep
    return None


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
            data = direct_shebang(data.replace(old_b, new_b))
            with open(path, "wb") as handle:
                handle.write(data)


# pip (distlib) writes this /bin/sh trampoline when the interpreter's path is longer than the
# kernel's shebang limit: the long temporary build path can need it where the final path does not.
TRAMPOLINE = re.compile(br"\A#!/bin/sh\n'''exec' (?P<exe>/\S+) \"\$0\" \"\$@\"\n' '''\n")
SHEBANG_MAX = 127


def direct_shebang(data):
    """Turn pip's /bin/sh trampoline back into a plain shebang when the interpreter path fits."""
    match = TRAMPOLINE.match(data)
    if match is None or len(b"#!" + match.group("exe")) > SHEBANG_MAX:
        return data
    return b"#!" + match.group("exe") + b"\n" + data[match.end():]


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
                      if n not in (LOCK_FILE, REGISTRY, ".cache") and not n.startswith(REGISTRY_TEMP)
                      and not _LEFTOVER.match(n) and self.manifest(n) is None)

    def remove_leftovers(self):
        """Remove leftovers (the caller holds the lock), the registry's temporary files included."""
        removed = []
        for path in self.leftovers():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        if os.path.isdir(self.root):
            for name in os.listdir(self.root):
                if name.startswith(REGISTRY_TEMP) and os.path.isfile(self.path(name)):
                    os.unlink(self.path(name))
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
            releases = os.path.join(app_root, RELEASES_DIR)
            if not os.path.isdir(releases):
                continue
            for release in os.listdir(releases):
                link = os.path.join(releases, release, RELEASE_LINK)
                name = self.name_of(link) if os.path.lexists(link) else None
                if name:
                    used.add(name)
        return used

    def linked_from(self, links):
        """Venv names the given links point at."""
        return set(name for name in (self.name_of(link) for link in links if os.path.islink(link)) if name)

    def registry(self):
        """What links venvs of this store: {"app_roots": [...], "links": [...]} (links outside a release)."""
        data = read_json(self.path(REGISTRY)) or {}
        return {"app_roots": sorted(set(data.get("app_roots", []))), "links": sorted(set(data.get("links", [])))}

    def _write_registry(self, registry):
        write_json_atomic(self.path(REGISTRY), dict(registry, format=1))
        fsync_dir(self.root)

    def register(self, link, write=True):
        """Record who links a venv (the caller holds the lock): the app root of a release's link
        (<root>/releases/<id>/.venv), any other link itself. True when the registry changes."""
        registry = self.registry()
        root = app_root_of_link(link)
        kind, entry = ("app_roots", root) if root else ("links", os.path.abspath(link))
        if entry in registry[kind]:
            return False
        if write:
            registry[kind] = sorted(registry[kind] + [entry])
            self._write_registry(registry)
        return True

    def forget_missing(self, write=True):
        """Drop registered app roots and links that no longer exist (the caller holds the lock to write).

        Returns (registry left, entries dropped)."""
        registry = self.registry()
        gone = [r for r in registry["app_roots"] if not os.path.isdir(r)]
        gone += [link for link in registry["links"] if not os.path.lexists(link)]
        if gone:
            registry = {"app_roots": [r for r in registry["app_roots"] if r not in gone],
                        "links": [link for link in registry["links"] if link not in gone]}
            if write:
                self._write_registry(registry)
        return registry, gone

    def builder_roots(self):
        """App roots the venvs' manifests name (their requirements or project inside a release): covers
        venvs linked before the registry existed, by apps that have not deployed since."""
        roots = set()
        for manifest in self.venvs():
            for path in (manifest.get("requirements"), (manifest.get("project") or {}).get("path")):
                root = _app_root_of_file(path) if path else None
                if root and os.path.isdir(root):
                    roots.add(root)
        return roots

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
