#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: python_venv
short_description: Content-addressed virtualenvs for releases, built aside and renamed into place
version_added: 0.1.0
description:
  - With I(state=present), returns the virtualenv for one interpreter and one lock (a locked requirements
    file or a uv project's C(uv.lock)), building it only when no venv with the same key exists. The key is a
    SHA-256 over the interpreter (implementation, full version, ABI, machine, resolved executable), the locked
    requirements (comments and blank lines dropped; for a C(uv.lock), what C(uv export) gives for it, so the
    same lock in two releases gives the same venv) and I(seed_packages); the venv lives in
    C(<venvs_dir>/<implementation>-<version>-<key16>). A code-only release therefore installs nothing.
  - With I(project), the project itself is installed too, as a wheel and without its dependencies (they come
    from the lock), so that src layouts and console scripts work from the venv. Its source fingerprint (paths,
    modes and content of its files) is then part of the key, so such a venv belongs to one version of the code.
  - Editable requirements (C(-e .), C(-e git+...)) are refused before anything is built, and so are local
    directories, whose files the key does not cover. A release is read-only and replaced on every deploy.
  - A new venv is built in C(<venvs_dir>/.tmp-*) and renamed into place only when the install and
    C(pip check) succeeded, so a failed build never leaves a venv a release could pick up.
  - With I(state=pruned), removes the venvs that no release links to (C(releases/*/.venv)) and that are not
    listed in I(in_use), keeping the I(keep_unused) newest unused ones, and clears leftovers of interrupted
    builds. The releases looked at are those of I(app_roots) and of every app root registered in the store
    (see I(link)), so apps sharing a store never prune each other's venvs.
  - Only what the module created is ever removed, that is venvs with its manifest and its own temporary
    and trash directories (C(.tmp-<venv>-<random>)). Anything else in I(venvs_dir) is reported in
    C(foreign) and left alone, so a mistyped I(venvs_dir) cannot wipe unrelated data.
  - Builders, linkers and pruners of one I(venvs_dir) are serialised with an C(flock) on C(<venvs_dir>/.venvs.lock).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Nothing is built; a C(uv.lock) is read with C(uv export) (offline, without writing) to compute the key.
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  state:
    description: C(present) returns (building when needed) a venv; C(pruned) removes unused ones.
    type: str
    choices: [present, pruned]
    default: present
  venvs_dir:
    description: Absolute directory holding the venvs; created when missing.
    type: path
    required: true
  interpreter:
    description: Python the venv is based on (e.g. C(/opt/pyenv/versions/3.12.13/bin/python3)). Required with I(state=present).
    type: path
  requirements:
    description:
      - The lock on the host, required with I(state=present). Either one self-contained locked requirements file
        (as written by C(uv pip compile), C(uv export) or C(pip-compile); C(-r)/C(-c) includes are refused), or a
        uv project's C(uv.lock) with its C(pyproject.toml) beside it (see I(lock_format)).
      - Relative paths in it are taken from its directory.
    type: path
  lock_format:
    description:
      - How to read I(requirements). C(requirements) is a requirements file. C(uv) is a C(uv.lock), installed
        like C(uv sync --locked --no-dev) would, without the project itself (see I(project)); it is read with
        C(uv export --locked --offline --no-dev --no-emit-project) and never re-resolved, so a lock that does not
        match its C(pyproject.toml) fails. Needs uv (I(uv_path)), whatever I(installer) says.
      - C(auto) is C(uv) when the file is named C(uv.lock), else C(requirements).
    type: str
    choices: [auto, requirements, uv]
    default: auto
  project:
    description:
      - Directory of a Python project (with a C(pyproject.toml) or C(setup.py)) to install into the venv,
        non-editably and without its dependencies, which must all be in the lock (C(pip check) verifies it).
      - The wheel is built (C(uv build) with uv, C(pip wheel) with pip) from a copy of the project's files, so the
        project's directory is never written to. Version control directories, caches, C(.venv), top-level
        C(build/) and C(dist/), C(*.egg-info), C(*.pyc), the release record and symlinks leading out of the
        project are left out of the copy and of the fingerprint.
      - The fingerprint of those files is part of the key, so the venv changes with the code (two releases of
        the same code still share it).
    type: path
  seed_packages:
    description: Requirement specifiers installed alongside, e.g. pinned C(pip) and C(setuptools). Part of the key.
    type: list
    elements: str
    default: []
  compile_bytecode:
    description:
      - Compile every module to bytecode at build time. The venvs are read-only to the application, which
        otherwise recompiles in memory at every process start. Part of the key.
    type: bool
    default: true
  installer:
    description: C(uv) (fast, relocatable scripts), C(pip) (C(python -m venv) + pip), or C(auto) (uv when found, else pip).
    type: str
    choices: [auto, uv, pip]
    default: auto
  uv_path:
    description: uv binary; searched on PATH when unset.
    type: path
  cache_dir:
    description: Download/wheel cache shared by builds (C(uv/) and C(pip/) below it). Defaults to C(<venvs_dir>/.cache).
    type: path
  index_url:
    description: Package index to install from instead of PyPI (a mirror for air-gapped sites).
    type: str
  ca_bundle:
    description:
      - CA bundle pip and uv verify the index with (C(PIP_CERT), C(SSL_CERT_FILE)), e.g. the host's store
        C(/etc/ssl/certs/ca-certificates.crt) behind a TLS-inspecting proxy. Unset, each uses its own bundle.
    type: path
  extra_index_urls:
    description: Additional package indexes.
    type: list
    elements: str
    default: []
  app_roots:
    description:
      - With I(state=pruned), application roots whose releases' C(.venv) links mark venvs in use, besides the app
        roots registered in the store and those the venvs' manifests name (venvs built before the registry).
    type: list
    elements: path
    default: []
  in_use:
    description: With I(state=pruned), further venvs to keep (names or paths).
    type: list
    elements: str
    default: []
  keep_unused:
    description: With I(state=pruned), how many of the newest unused venvs to keep.
    type: int
    default: 0
  link:
    description:
      - With I(state=present), a symlink to point at the venv (e.g. C(<release>/.venv)), replaced atomically
        (rename of a complete temporary link) when it points elsewhere. Its directory must exist.
      - The link is registered in the store (C(<venvs_dir>/.apps.json)) under the same lock as the venv is
        found or built, so no prune, of this app or another, can remove the venv meanwhile. A release's link
        (C(<app_root>/releases/<id>/.venv)) registers its app root, any other link itself. I(state=pruned)
        forgets app roots and links that no longer exist.
    type: path
notes:
  - Builds run with umask 022; the venv is owned by the user the module runs as.
  - Entry points are relocatable (uv) or rewritten to the final path before the rename (pip).
seealso:
  - module: botstack.deploy.release
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Venv for this release's locked dependencies
  botstack.deploy.python_venv:
    venvs_dir: /opt/botstack/venvs
    interpreter: /opt/pyenv/versions/3.12.13/bin/python3
    requirements: /srv/botstack/releases/20261122T0300Z/requirements.lock
    seed_packages: [pip==26.3, setuptools==84.2.1]
    uv_path: /opt/botstack/python-tools/bin/uv
    cache_dir: /var/cache/botstack/python
  register: venv

- name: Venv for the release, linked as its .venv (one call)
  botstack.deploy.python_venv:
    venvs_dir: /opt/botstack/venvs
    interpreter: /usr/bin/python3
    requirements: /srv/botstack/releases/20261122T0300Z/requirements.lock
    link: /srv/botstack/releases/20261122T0300Z/.venv

- name: Venv for a uv project, the project itself installed (src layout, console scripts)
  botstack.deploy.python_venv:
    venvs_dir: /opt/botstack/venvs
    interpreter: /opt/pyenv/versions/3.12.13/bin/python3
    requirements: /srv/botstack/releases/20261122T0300Z/uv.lock
    project: /srv/botstack/releases/20261122T0300Z
    uv_path: /opt/botstack/python-tools/bin/uv
    link: /srv/botstack/releases/20261122T0300Z/.venv

- name: Remove venvs no kept release (of any app using the store) uses
  botstack.deploy.python_venv:
    state: pruned
    venvs_dir: /opt/botstack/venvs
    app_roots: [/srv/botstack]
"""

RETURN = r"""
path:
  description: Path of the venv (I(state=present)); in check mode, where it would be built.
  returned: state=present
  type: str
  sample: /opt/botstack/venvs/cpython-3.12.13-3f1c0e9a4b7d2e61
name:
  description: Directory name of the venv.
  returned: state=present
  type: str
key:
  description: Full SHA-256 key of the venv.
  returned: state=present
  type: str
reused:
  description: Whether an existing venv with the same key was returned (nothing installed).
  returned: state=present
  type: bool
installer:
  description: Installer used for a new build, or recorded in the reused venv's manifest.
  returned: state=present
  type: str
lock_format:
  description: How I(requirements) was read (C(requirements) or C(uv)).
  returned: state=present
  type: str
project:
  description:
    - The project installed with I(project) (C(path), C(fingerprint); C(wheel), C(wheel_sha256) and
      C(distribution) of the build that made the venv), or C(null).
  returned: state=present
  type: dict
python:
  description: Identity of the interpreter (implementation, version, soabi, machine, executable).
  returned: state=present
  type: dict
packages:
  description: Installed distributions (C(name==version)) as recorded in the manifest.
  returned: state=present
  type: list
  elements: str
link:
  description: The link pointed at the venv (I(link)).
  returned: state=present and link is set
  type: str
duration:
  description: Seconds spent in this call.
  returned: always
  type: float
kept:
  description: Venvs kept by I(state=pruned).
  returned: state=pruned
  type: list
  elements: str
removed:
  description: Venvs (and leftovers) removed, or that would be removed in check mode.
  returned: state=pruned
  type: list
  elements: str
in_use:
  description: Names of the venvs found in use (linked from a release or a registered link, or listed in I(in_use)).
  returned: state=pruned
  type: list
  elements: str
app_roots:
  description: App roots whose releases were looked at (I(app_roots), the registered ones, those the manifests name).
  returned: state=pruned
  type: list
  elements: str
forgotten:
  description: Registered app roots and links dropped from the registry because they no longer exist.
  returned: state=pruned
  type: list
  elements: str
foreign:
  description: Entries of I(venvs_dir) the module did not create; never removed (a warning names them).
  returned: always
  type: list
  elements: str
"""

import hashlib
import json
import os
import shutil
import time
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat
from ansible_collections.botstack.deploy.plugins.module_utils.venv import (
    BUILD_DIR,
    IDENTITY_SCRIPT,
    VenvError,
    VenvStore,
    copy_project,
    local_directories,
    normalized_requirements,
    project_fingerprint,
    relocate_scripts,
    venv_key,
    venv_name,
)

UV_LOCK = "uv.lock"
PRESENT_ONLY = ("interpreter", "requirements", "project", "link")


def tail(text, lines=25):
    return "\n".join((text or "").strip().splitlines()[-lines:])


class Source(object):
    """What a venv is made of: the lock's requirements text, where its relative paths start, the project."""

    def __init__(self, path, lock_format, text, project=None, fingerprint=None, entries=None):
        self.path = os.path.abspath(path)
        self.lock_format = lock_format
        self.text = text
        self.base = os.path.dirname(self.path)
        self.project = os.path.abspath(project) if project else None
        self.fingerprint = fingerprint
        self.entries = entries

    @property
    def label(self):
        return "requirements %s%s" % (self.path, " (as uv export gives it)" if self.lock_format == "uv" else "")


class Builder(object):
    def __init__(self, module, store):
        self.module = module
        self.store = store
        params = module.params
        self.cache_dir = params["cache_dir"] or store.path(".cache")
        self.tls_env = {}
        if params["ca_bundle"]:
            self.tls_env = {"PIP_CERT": params["ca_bundle"], "SSL_CERT_FILE": params["ca_bundle"]}
        self.index_args = []
        if params["index_url"]:
            self.index_args += ["--index-url", params["index_url"]]
        for url in params["extra_index_urls"]:
            self.index_args += ["--extra-index-url", url]

    def run(self, argv, step, env=None, cwd=None):
        env = dict(self.tls_env, **(env or {}))
        rc, out, err = self.module.run_command(argv, environ_update=env, cwd=cwd or self.store.root)
        if rc != 0:
            raise VenvError("%s failed (rc %s): %s\n%s" % (step, rc, " ".join(argv), tail(err or out)))
        return out

    def uv_env(self):
        return {"UV_CACHE_DIR": os.path.join(self.cache_dir, "uv"), "UV_PYTHON_DOWNLOADS": "never",
                "UV_NO_PROGRESS": "1", "NO_COLOR": "1"}

    def export_uv_lock(self, uv, lock, interpreter):
        """The requirements a uv.lock pins for `uv sync --locked --no-dev`, without the project itself.

        Read-only (offline, no cache, the lock never rewritten): also run in check mode."""
        if not uv:
            raise VenvError(
                "requirements %s is a uv.lock, which is read with uv, but no uv binary was found%s: set uv_path, "
                "install uv (role botstack.deploy.python does), or ship a requirements file instead (uv export "
                "--frozen --no-dev --no-emit-project -o requirements.lock) with lock_format=requirements"
                % (lock, " at %s" % self.module.params["uv_path"] if self.module.params["uv_path"] else " on PATH"))
        directory = os.path.dirname(os.path.abspath(lock))
        if not os.path.isfile(os.path.join(directory, "pyproject.toml")):
            raise VenvError("requirements %s has no pyproject.toml beside it: uv reads a uv.lock with its project; "
                            "ship the project's pyproject.toml with the lock" % lock)
        argv = [uv, "export", "--offline", "--no-cache", "--quiet", "--no-dev", "--no-emit-project",
                "--format", "requirements-txt", "--python", self.module.params["interpreter"]]
        env = dict(self.tls_env, **self.uv_env())
        rc, out, err = self.module.run_command(argv + ["--locked"], environ_update=env, cwd=directory)
        if rc == 0:
            return out
        # --locked fails both on a stale lock and on an unreadable one: --frozen tells them apart.
        frozen_rc = self.module.run_command(argv + ["--frozen"], environ_update=env, cwd=directory)[0]
        if frozen_rc == 0:
            raise VenvError(
                "requirements %s does not match the pyproject.toml beside it (uv sync --locked would refuse it; "
                "the lock is never re-resolved on the host): run `uv lock` in the project, commit the updated "
                "uv.lock and deploy again. uv said:\n%s" % (lock, tail(err or out)))
        raise VenvError("uv export of requirements %s failed (rc %s): %s\n%s"
                        % (lock, rc, " ".join(argv + ["--locked"]), tail(err or out)))

    def _workdir(self, temp, source):
        """<temp>/.botstack-build with the requirements to install (the text the key covers)."""
        work = os.path.join(temp, BUILD_DIR)
        os.makedirs(work)
        requirements = os.path.join(work, "requirements.txt")
        with open(requirements, "w") as handle:
            handle.write(source.text)
        return work, requirements

    def _wheel(self, work):
        wheels = [f for f in os.listdir(os.path.join(work, "wheels")) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise VenvError("building project %s gave %d wheels (%s), expected one"
                            % (self.module.params["project"], len(wheels), ", ".join(wheels)))
        return os.path.join(work, "wheels", wheels[0])

    def build_uv(self, uv, interpreter, temp, name, source, seed):
        env = self.uv_env()
        self.run([uv, "venv", "--no-config", "--no-project", "--relocatable", "--quiet",
                  "--prompt", name, "--python", interpreter, temp], "uv venv", env)
        python = os.path.join(temp, "bin", "python")
        work, requirements = self._workdir(temp, source)
        # One resolution for both: uv checks the lock's hashes without demanding them of the seeds.
        compile_flag = ["--compile-bytecode"] if self.module.params["compile_bytecode"] else []
        self.run([uv, "pip", "install", "--no-config", "--python", python] + compile_flag + self.index_args
                 + ["-r", requirements] + seed, "installing %s with uv" % source.label, env, cwd=source.base)
        wheel = None
        if source.project:
            copy_project(source.project, os.path.join(work, "src"), source.entries)
            self.run([uv, "build", "--no-config", "--wheel", "--quiet", "--python", interpreter, "--out-dir",
                      os.path.join(work, "wheels")] + self.index_args + [os.path.join(work, "src")],
                     "building the wheel of project %s with uv" % source.project, env)
            wheel = self._wheel(work)
            self.run([uv, "pip", "install", "--no-config", "--python", python, "--no-deps"] + compile_flag + [wheel],
                     "installing project %s with uv" % source.project, env)
        self.run([uv, "pip", "check", "--no-config", "--python", python], "uv pip check", env)
        out = self.run([uv, "pip", "freeze", "--no-config", "--python", python], "uv pip freeze", env)
        return self._finish(work, out.splitlines(), wheel)

    def build_pip(self, interpreter, temp, final, source, seed):
        self.run([interpreter, "-m", "venv", "--prompt", os.path.basename(final), temp], "python -m venv")
        python = os.path.join(temp, "bin", "python")
        work, requirements = self._workdir(temp, source)
        pip = [python, "-m", "pip", "--no-input", "--disable-pip-version-check"]
        cache = ["--cache-dir", os.path.join(self.cache_dir, "pip")]
        install = pip + ["install"] + cache + self.index_args
        if not self.module.params["compile_bytecode"]:
            install.append("--no-compile")
        # Seeds on their own: a hashed lock turns on pip's hash checking for everything beside it.
        if seed:
            self.run(install + seed, "installing seed_packages %s with pip" % " ".join(seed))
        self.run(install + ["-r", requirements], "installing %s with pip" % source.label, cwd=source.base)
        wheel = None
        if source.project:
            copy_project(source.project, os.path.join(work, "src"), source.entries)
            self.run(pip + ["wheel", "--no-deps"] + cache + self.index_args
                     + ["--wheel-dir", os.path.join(work, "wheels"), os.path.join(work, "src")],
                     "building the wheel of project %s with pip" % source.project)
            wheel = self._wheel(work)
            self.run(install + ["--no-deps", wheel], "installing project %s with pip" % source.project)
        self.run(pip + ["check"], "pip check")
        out = self.run(pip + ["freeze", "--all"], "pip freeze")
        built = self._finish(work, out.splitlines(), wheel)
        relocate_scripts(temp, temp, final)
        return built

    def _finish(self, work, packages, wheel):
        """Drop the build directory; name the project by its version, not by the wheel's temporary path.

        Returns (packages, the wheel's record or None)."""
        record = None
        if wheel:
            name, version = os.path.basename(wheel).split("-")[:2]
            distribution = "%s==%s" % (name, version)
            for index, line in enumerate(packages):
                if work in line:
                    distribution = packages[index] = "%s==%s" % (line.split(" @ ", 1)[0].strip(), version)
            record = dict(wheel=os.path.basename(wheel), wheel_sha256=_sha256(wheel), distribution=distribution)
        shutil.rmtree(work, ignore_errors=True)
        return packages, record


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_uv(module):
    if module.params["uv_path"]:
        path = module.params["uv_path"]
        return path if os.access(path, os.X_OK) else None
    return module.get_bin_path("uv")


def interpreter_identity(module):
    interpreter = module.params["interpreter"]
    if not os.access(interpreter, os.X_OK):
        raise VenvError("interpreter %s does not exist or is not executable: install it first "
                        "(role botstack.deploy.python) or fix the path" % interpreter)
    rc, out, err = module.run_command([interpreter, "-c", IDENTITY_SCRIPT])
    if rc != 0:
        raise VenvError("interpreter %s does not run (rc %s): %s" % (interpreter, rc, tail(err)))
    return json.loads(out)


def lock_format(params):
    """The format of the requirements option, resolved from lock_format and the file name."""
    named_uv = os.path.basename(params["requirements"]) == UV_LOCK
    if params["lock_format"] == "auto":
        return "uv" if named_uv else "requirements"
    if params["lock_format"] == "uv" and not named_uv:
        raise VenvError("lock_format=uv reads a uv project's uv.lock, but requirements is %s: point requirements "
                        "at <project>/uv.lock (pyproject.toml beside it) or set lock_format=requirements"
                        % params["requirements"])
    return params["lock_format"]


def read_source(module, builder, uv, fmt):
    """The Source for the requirements and project options; fails on what must never be built."""
    params = module.params
    path = params["requirements"]
    if fmt == "uv":
        text = builder.export_uv_lock(uv, path, params["interpreter"])
    else:
        try:
            with open(path) as handle:
                text = handle.read()
        except (IOError, OSError) as exc:
            raise VenvError("requirements %s cannot be read: %s" % (path, exc.strerror or exc))
    source = Source(path, fmt, text)
    locked = normalized_requirements(text, source=source.label)
    directories = local_directories(locked, source.base)
    if directories:
        raise VenvError(
            "%s names local directories (%s): the venv key covers the requirements, not those directories' "
            "files, so a changed directory would reuse a stale venv. Build them as wheels referenced with "
            "--hash, or, for the project itself, use the project option (role variable python_venv_project)"
            % (source.label, ", ".join(directories)))
    if params["project"]:
        source.project = os.path.abspath(params["project"])
        source.fingerprint, source.entries = project_fingerprint(params["project"])
    return source, locked


def choose_installer(module, uv):
    params = module.params
    if params["installer"] == "uv" and not uv:
        raise VenvError("installer=uv but no uv binary was found%s: set uv_path, install uv (role "
                        "botstack.deploy.python does) or use installer=pip"
                        % (" at %s" % params["uv_path"] if params["uv_path"] else " on PATH"))
    return "uv" if uv and params["installer"] != "pip" else "pip"


def present(module, store):
    params = module.params
    for option in ("interpreter", "requirements"):
        if not params[option]:
            raise VenvError("%s is required with state=present" % option)
    fmt = lock_format(params)
    missing = [p for p in (params["requirements"], params["project"]) if p and not os.path.exists(p)]
    if module.check_mode and missing:
        # A check run before the task that ships the release: say what would happen.
        module.warn("%s does not exist yet; a real run needs it" % " and ".join(missing))
        unknown = dict(changed=True, reused=False, path=None, name=None, key=None, installer=params["installer"],
                       lock_format=fmt, project=None, python={}, packages=[])
        return _link(module, store, unknown) if params["link"] else unknown
    uv = find_uv(module)
    builder = Builder(module, store)
    identity = interpreter_identity(module)
    source, locked = read_source(module, builder, uv, fmt)
    key = venv_key(identity, locked, params["seed_packages"], params["compile_bytecode"], source.fingerprint)
    name = venv_name(identity, key)
    final = store.path(name)
    project = dict(path=source.project, fingerprint=source.fingerprint) if source.project else None
    result = dict(path=final, name=name, key=key, python=identity, lock_format=fmt, project=project)

    def reused():
        existing = store.manifest(name)
        if existing and existing.get("key") == key:
            return dict(result, changed=False, reused=True, installer=existing.get("installer"),
                        project=dict(existing.get("project") or {}, **project) if project else None,
                        packages=existing.get("packages", []))
        return None

    installer = choose_installer(module, uv)
    if module.check_mode:
        found = reused() or dict(result, changed=True, reused=False, installer=installer, packages=[],
                                 diff=dict(before="", after="%s\n" % final))
        return _link(module, store, found) if params["link"] else found

    store.ensure_root()
    with store.locked():
        # Under the lock: no prune can remove the venv between finding it and linking it.
        found = reused()
        if not found:
            # Under the lock nobody else is building: any temporary directory is a leftover.
            store.remove_leftovers()
            found = _build(module, store, builder, uv, installer, source, dict(result, installer=installer))
        if params["link"]:
            found = _link(module, store, found)
    return found


def _build(module, store, builder, uv, installer, source, result):
    """Build the venv aside and rename it into place with its manifest."""
    params = module.params
    temp = store.temp_path(result["name"])
    try:
        if installer == "uv":
            packages, wheel = builder.build_uv(uv, params["interpreter"], temp, result["name"], source,
                                               params["seed_packages"])
        else:
            packages, wheel = builder.build_pip(params["interpreter"], temp, result["path"], source,
                                                params["seed_packages"])
        project = dict(result["project"], **(wheel or {})) if source.project else None
        store.publish(temp, result["name"], dict(
            key=result["key"], python=result["python"], installer=installer, requirements=source.path,
            lock_format=source.lock_format, seed_packages=params["seed_packages"], project=project,
            packages=packages))
    except Exception:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return dict(result, changed=True, reused=False, project=project, packages=packages,
                diff=dict(before="", after="%s\n" % result["path"]))


def pruned(module, store):
    params = module.params
    for option in PRESENT_ONLY:
        if params[option]:
            raise VenvError("%s is only used with state=present; remove it from the state=pruned call" % option)
    if params["keep_unused"] < 0:
        raise VenvError("keep_unused must be 0 or more, got %d" % params["keep_unused"])

    def plan(write):
        """Every venv a release of any app using the store links to is in use, whoever asked."""
        registry, forgotten = store.forget_missing(write)
        roots = sorted(set(params["app_roots"]) | set(registry["app_roots"]) | store.builder_roots())
        in_use = store.referenced_by(roots) | store.linked_from(registry["links"])
        in_use.update(name for name in (store.name_of(item) for item in params["in_use"]) if name)
        kept, removed = store.prune_plan(in_use, params["keep_unused"])
        return roots, forgotten, in_use, kept, removed

    roots, forgotten, in_use, kept, removed = plan(write=False)
    paths = [store.path(n) for n in removed] + store.leftovers()
    diff = dict(before="\n".join(kept + removed) + "\n", after="\n".join(kept) + "\n")
    if (paths or forgotten) and not module.check_mode:
        with store.locked():
            roots, forgotten, in_use, kept, removed = plan(write=True)
            for name in removed:
                store.remove(name)
            paths = [store.path(n) for n in removed] + store.remove_leftovers()
    return dict(changed=bool(paths or forgotten), kept=[store.path(n) for n in kept], removed=paths,
                in_use=sorted(in_use), app_roots=roots, forgotten=forgotten, foreign=store.foreign(), diff=diff)


def _link(module, store, result):
    """Register the link, then point it at the venv atomically (the caller holds the lock)."""
    link = module.params["link"]
    if result.get("path") is None:  # check mode before the release exists
        return dict(result, changed=True, link=link)
    if os.path.lexists(link) and not os.path.islink(link):
        raise VenvError("link %s exists and is not a symlink; remove it (a release must not ship its own .venv)" % link)
    if not os.path.isdir(os.path.dirname(link)):
        raise VenvError("the directory of link %s does not exist" % link)
    # Registered first: a link no prune knows of must never exist.
    registered = store.register(link, write=not module.check_mode)
    before = os.readlink(link) if os.path.islink(link) else None
    if before == result["path"]:
        return dict(result, changed=result["changed"] or registered, link=link)
    if not module.check_mode:
        tmp = "%s.tmp-%s" % (link, uuid.uuid4().hex[:8])
        os.symlink(result["path"], tmp)
        os.replace(tmp, link)
    diff = result.get("diff") or dict(before="", after="")
    diff = dict(before=diff["before"] + ("%s -> %s\n" % (link, before) if before else ""),
                after=diff["after"] + "%s -> %s\n" % (link, result["path"]))
    return dict(result, changed=True, link=link, diff=diff)


def main():
    heartbeat()
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "pruned"]),
            venvs_dir=dict(type="path", required=True),
            interpreter=dict(type="path"),
            requirements=dict(type="path"),
            lock_format=dict(type="str", default="auto", choices=["auto", "requirements", "uv"]),
            project=dict(type="path"),
            seed_packages=dict(type="list", elements="str", default=[]),
            installer=dict(type="str", default="auto", choices=["auto", "uv", "pip"]),
            compile_bytecode=dict(type="bool", default=True),
            uv_path=dict(type="path"),
            cache_dir=dict(type="path"),
            index_url=dict(type="str", no_log=True),
            extra_index_urls=dict(type="list", elements="str", default=[], no_log=True),
            ca_bundle=dict(type="path"),
            app_roots=dict(type="list", elements="path", default=[]),
            in_use=dict(type="list", elements="str", default=[]),
            keep_unused=dict(type="int", default=0),
            link=dict(type="path"),
        ),
        required_if=[("state", "present", ("interpreter", "requirements"))],
        supports_check_mode=True,
    )
    started = time.time()
    os.umask(0o022)
    try:
        store = VenvStore(module.params["venvs_dir"])
        if module.params["state"] == "present":
            result = present(module, store)
        else:
            result = pruned(module, store)
        result.setdefault("foreign", store.foreign())
        result["duration"] = round(time.time() - started, 3)
        if result["foreign"]:
            module.warn("%s holds entries this module did not create; they were left alone: %s"
                        % (store.root, ", ".join(result["foreign"])))
    except VenvError as exc:
        module.fail_json(msg=str(exc), duration=round(time.time() - started, 3))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
