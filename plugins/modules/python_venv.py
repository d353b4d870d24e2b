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
  - With I(state=present), returns the virtualenv for one interpreter and one locked requirements
    file, building it only when no venv with the same key exists. The key is a SHA-256 over the
    interpreter (implementation, full version, ABI, machine, resolved executable), the requirements
    (comments and blank lines dropped) and I(seed_packages); the venv lives in
    C(<venvs_dir>/<implementation>-<version>-<key16>). A code-only release therefore installs nothing.
  - A new venv is built in C(<venvs_dir>/.tmp-*) and renamed into place only when the install and
    C(pip check) succeeded, so a failed build never leaves a venv a release could pick up.
  - With I(state=pruned), removes the venvs no release under I(app_roots) links to (C(releases/*/.venv))
    and that are not listed in I(in_use), keeping the I(keep_unused) newest unused ones, and clears
    leftovers of interrupted builds.
  - Only what the module created is ever removed, that is venvs with its manifest and its own temporary
    and trash directories (C(.tmp-<venv>-<random>)). Anything else in I(venvs_dir) is reported in
    C(foreign) and left alone, so a mistyped I(venvs_dir) cannot wipe unrelated data.
  - Builders and pruners of one I(venvs_dir) are serialised with an C(flock) on C(<venvs_dir>/.venvs.lock).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
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
      - Locked requirements file on the host (one self-contained file, as written by C(uv pip compile),
        C(uv export) or C(pip-compile); C(-r)/C(-c) includes are refused). Required with I(state=present).
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
    description: With I(state=pruned), application roots whose releases' C(.venv) links mark venvs in use.
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

- name: Remove venvs no kept release uses
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
python:
  description: Identity of the interpreter (implementation, version, soabi, machine, executable).
  returned: state=present
  type: dict
packages:
  description: Installed distributions (C(name==version)) as recorded in the manifest.
  returned: state=present
  type: list
  elements: str
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
foreign:
  description: Entries of I(venvs_dir) the module did not create; never removed (a warning names them).
  returned: always
  type: list
  elements: str
"""

import json
import os
import shutil
import time
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.venv import (
    IDENTITY_SCRIPT,
    VenvError,
    VenvStore,
    normalized_requirements,
    relocate_scripts,
    venv_key,
    venv_name,
)


def tail(text, lines=25):
    return "\n".join((text or "").strip().splitlines()[-lines:])


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

    def run(self, argv, step, env=None):
        env = dict(self.tls_env, **(env or {}))
        rc, out, err = self.module.run_command(argv, environ_update=env, cwd=self.store.root)
        if rc != 0:
            raise VenvError("%s failed (rc %s): %s\n%s" % (step, rc, " ".join(argv), tail(err or out)))
        return out

    def uv_env(self):
        return {"UV_CACHE_DIR": os.path.join(self.cache_dir, "uv"), "UV_PYTHON_DOWNLOADS": "never",
                "UV_NO_PROGRESS": "1", "NO_COLOR": "1"}

    def build_uv(self, uv, interpreter, temp, name, requirements, seed):
        env = self.uv_env()
        self.run([uv, "venv", "--no-config", "--no-project", "--relocatable", "--quiet",
                  "--prompt", name, "--python", interpreter, temp], "uv venv", env)
        python = os.path.join(temp, "bin", "python")
        # One resolution for both: uv checks the lock's hashes without demanding them of the seeds.
        compile_flag = ["--compile-bytecode"] if self.module.params["compile_bytecode"] else []
        self.run([uv, "pip", "install", "--no-config", "--python", python] + compile_flag + self.index_args
                 + ["-r", requirements] + seed, "installing requirements %s with uv" % requirements, env)
        self.run([uv, "pip", "check", "--no-config", "--python", python], "uv pip check", env)
        out = self.run([uv, "pip", "freeze", "--no-config", "--python", python], "uv pip freeze", env)
        return out.splitlines()

    def build_pip(self, interpreter, temp, final, requirements, seed):
        self.run([interpreter, "-m", "venv", "--prompt", os.path.basename(final), temp], "python -m venv")
        python = os.path.join(temp, "bin", "python")
        pip = [python, "-m", "pip", "--no-input", "--disable-pip-version-check"]
        install = pip + ["install", "--cache-dir", os.path.join(self.cache_dir, "pip")] + self.index_args
        if not self.module.params["compile_bytecode"]:
            install.append("--no-compile")
        # Seeds on their own: a hashed lock turns on pip's hash checking for everything beside it.
        if seed:
            self.run(install + seed, "installing seed_packages %s with pip" % " ".join(seed))
        self.run(install + ["-r", requirements], "installing requirements %s with pip" % requirements)
        self.run(pip + ["check"], "pip check")
        out = self.run(pip + ["freeze", "--all"], "pip freeze")
        relocate_scripts(temp, temp, final)
        return out.splitlines()


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


def present(module, store, started):
    params = module.params
    for option in ("interpreter", "requirements"):
        if not params[option]:
            raise VenvError("%s is required with state=present" % option)
    requirements = params["requirements"]
    if module.check_mode and not os.path.exists(requirements):
        # A check run before the task that ships the lock file: say what would happen.
        module.warn("requirements %s does not exist yet; a real run needs it" % requirements)
        return dict(changed=True, reused=False, path=None, name=None, key=None, installer=params["installer"],
                    python={}, packages=[], duration=round(time.time() - started, 3))
    try:
        with open(requirements) as handle:
            locked = normalized_requirements(handle.read())
    except (IOError, OSError) as exc:
        raise VenvError("requirements %s cannot be read: %s" % (requirements, exc.strerror or exc))
    identity = interpreter_identity(module)
    key = venv_key(identity, locked, params["seed_packages"], params["compile_bytecode"])
    name = venv_name(identity, key)
    final = store.path(name)
    result = dict(path=final, name=name, key=key, python=identity)

    def reused():
        existing = store.manifest(name)
        if existing and existing.get("key") == key:
            return dict(result, changed=False, reused=True, installer=existing.get("installer"),
                        packages=existing.get("packages", []), duration=round(time.time() - started, 3))
        return None

    found = reused()
    if found:
        return found

    installer = params["installer"]
    uv = find_uv(module) if installer in ("auto", "uv") else None
    if installer == "uv" and not uv:
        raise VenvError("installer=uv but no uv binary was found%s: set uv_path, install uv (role "
                        "botstack.deploy.python does) or use installer=pip"
                        % (" at %s" % params["uv_path"] if params["uv_path"] else " on PATH"))
    installer = "uv" if uv else "pip"
    diff = dict(before="", after="%s\n" % final)
    if module.check_mode:
        return dict(result, changed=True, reused=False, installer=installer, packages=[],
                    diff=diff, duration=round(time.time() - started, 3))

    store.ensure_root()
    builder = Builder(module, store)
    with store.locked():
        # Another run may have published it while this one waited for the lock.
        found = reused()
        if found:
            return found
        # Under the lock nobody else is building: any temporary directory is a leftover.
        store.remove_leftovers()
        temp = store.temp_path(name)
        try:
            if installer == "uv":
                packages = builder.build_uv(uv, params["interpreter"], temp, name, requirements, params["seed_packages"])
            else:
                packages = builder.build_pip(params["interpreter"], temp, final, requirements,
                                             params["seed_packages"])
            store.publish(temp, name, dict(key=key, python=identity, installer=installer,
                                           requirements=os.path.abspath(requirements),
                                           seed_packages=params["seed_packages"], packages=packages))
        except Exception:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return dict(result, changed=True, reused=False, installer=installer, packages=packages, diff=diff,
                duration=round(time.time() - started, 3))


def pruned(module, store, started):
    params = module.params
    if params["keep_unused"] < 0:
        raise VenvError("keep_unused must be 0 or more, got %d" % params["keep_unused"])
    in_use = store.referenced_by(params["app_roots"])
    for item in params["in_use"]:
        name = store.name_of(item)
        if name:
            in_use.add(name)
    kept, removed = store.prune_plan(in_use, params["keep_unused"])
    leftovers = store.leftovers()
    paths = [store.path(n) for n in removed] + leftovers
    diff = dict(before="\n".join(kept + removed) + "\n", after="\n".join(kept) + "\n")
    if paths and not module.check_mode:
        with store.locked():
            kept, removed = store.prune_plan(in_use | store.referenced_by(params["app_roots"]),
                                             params["keep_unused"])
            for name in removed:
                store.remove(name)
            leftovers = store.remove_leftovers()
            paths = [store.path(n) for n in removed] + leftovers
    return dict(changed=bool(paths), kept=[store.path(n) for n in kept], removed=paths,
                in_use=sorted(in_use), foreign=store.foreign(), diff=diff, duration=round(time.time() - started, 3))


def _link(module, result):
    """Point the link option at the venv, atomically; report it as a change when it moved."""
    link = module.params["link"]
    if result.get("path") is None:  # check mode before the lock file exists
        return dict(result, changed=True)
    if os.path.islink(link) and os.readlink(link) == result["path"]:
        return result
    if os.path.lexists(link) and not os.path.islink(link):
        raise VenvError("link %s exists and is not a symlink; remove it (a release must not ship its own .venv)" % link)
    if not os.path.isdir(os.path.dirname(link)):
        raise VenvError("the directory of link %s does not exist" % link)
    if not module.check_mode:
        tmp = "%s.tmp-%s" % (link, uuid.uuid4().hex[:8])
        os.symlink(result["path"], tmp)
        os.replace(tmp, link)
    return dict(result, changed=True, link=link)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "pruned"]),
            venvs_dir=dict(type="path", required=True),
            interpreter=dict(type="path"),
            requirements=dict(type="path"),
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
            result = present(module, store, started)
            if module.params["link"]:
                result = _link(module, result)
        else:
            result = pruned(module, store, started)
        result.setdefault("foreign", store.foreign())
        if result["foreign"]:
            module.warn("%s holds entries this module did not create; they were left alone: %s"
                        % (store.root, ", ".join(result["foreign"])))
    except VenvError as exc:
        module.fail_json(msg=str(exc), duration=round(time.time() - started, 3))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
