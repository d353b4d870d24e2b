#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: app_config
short_description: An application's configuration as immutable bundles, each slot running the one it was gated with
version_added: 0.1.0
description:
  - A configuration bundle is what an application's processes run with besides their code - the environment file
    and one systemd unit file per process and slot - kept under C(<app_root>/config/<config_id>/). Bundles are
    named by a fingerprint of their inputs (botstack.deploy.app computes it), so a bundle never changes once
    written; a changed configuration is a new bundle.
  - With I(state=present) the bundle is written (built aside, renamed into place). Nothing that runs reads it yet.
  - With I(state=installed) the bundle's unit files of one I(slot) are copied to I(units_dir) as instance unit files
    (C(<app>-<process>@<slot>.service), which systemd prefers to any template), unit files of that slot and app that
    the bundle no longer lists are removed, and systemd is reloaded when anything changed. Each slot's units then
    read their own bundle's environment file, so a configuration change reaches only the slot it is rolled out to;
    the other slot (the previous release, the rescue's and the rollback's target) keeps the configuration it was
    gated with, even when one of its processes restarts.
  - With I(state=pruned), bundles no slot runs, no kept release recorded and I(in_use) does not name are removed,
    keeping the I(keep) newest.
  - Only files this module wrote are ever changed or removed - unit files with the marker line naming the app (the
    bundles' units carry it, see I(units)) and bundle directories with a manifest.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The environment file's content is never shown, only that it changes.
  platform:
    platforms: posix
options:
  app_root:
    description: The application's directory; bundles live in C(<app_root>/config/).
    type: path
    required: true
  state:
    description: C(present) writes a bundle, C(installed) puts a bundle's units on a slot, C(pruned) removes unused bundles.
    type: str
    choices: [present, installed, pruned]
    default: present
  config_id:
    description: The bundle's name (its fingerprint, 1-64 letters and digits). Required with C(present) and C(installed).
    type: str
  env:
    description: With C(present), the content of the environment file (C(EnvironmentFile=) syntax); written 0640 root:I(group).
    type: str
  group:
    description: With C(present), the group that may read the environment file and list the bundles (the app's group).
    type: str
    default: root
  units:
    description:
      - With C(present), the unit files by name (their content by file name, such as C(shop-api@blue.service)). Each name is
        C(<app>-<process>@<slot>.service); each content holds the marker line - a comment C(app) followed by a colon
        and the app's name, as botstack.deploy.app writes it.
    type: dict
    default: {}
  app_name:
    description: With C(installed), the application whose unit files of the slot are managed (their marker line).
    type: str
  slot:
    description: With C(installed), the slot (e.g. C(blue)) whose unit files are installed.
    type: str
  units_dir:
    description: With C(installed), where systemd reads unit files.
    type: path
    default: /etc/systemd/system
  keep:
    description: With C(pruned), how many of the newest bundles to keep besides those in use.
    type: int
    default: 5
  in_use:
    description: With C(pruned), bundles never removed (e.g. the one the app role applied last).
    type: list
    elements: str
    default: []
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Write the configuration bundle
  botstack.deploy.app_config:
    app_root: /opt/shop
    config_id: 3f1c0a9e5b7d2c41
    env: "{{ lookup('ansible.builtin.template', 'app/env.j2') }}"
    group: shop
    units: {shop-api@blue.service: "# app: shop\n[Service]\nExecStart=...\n"}
  no_log: true

- name: Run the green slot with it
  botstack.deploy.app_config:
    app_root: /opt/shop
    state: installed
    config_id: 3f1c0a9e5b7d2c41
    app_name: shop
    slot: green
"""

RETURN = r"""
path:
  description: The bundle's directory.
  returned: with state present and installed
  type: str
  sample: /opt/shop/config/3f1c0a9e5b7d2c41
actions:
  description: What was done (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["install shop-api@green.service", "remove shop-admin@green.service", "systemctl daemon-reload"]
installed:
  description: With C(installed), the slot's unit names now installed from the bundle.
  returned: with state installed
  type: list
  elements: str
removed:
  description: With C(installed), unit files removed (processes no longer listed); with C(pruned), bundles removed.
  returned: with state installed and pruned
  type: list
  elements: str
"""

import json
import os
import re
import shutil
import time
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.files import write_file_atomic
from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat

CONFIG_DIR = "config"
MANIFEST = "manifest.json"
_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
_UNIT = re.compile(r"^[a-z][a-z0-9-]{0,62}@[a-z][a-z0-9_-]{0,31}\.service$")
_TEMP = ".tmp-"


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def _gid(module, group):
    import grp
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        module.fail_json(msg="group %s does not exist: apply the app role first (it creates the app's group)" % group)


def _bundle_dir(p):
    return os.path.join(p["app_root"], CONFIG_DIR, p["config_id"])


def _validate(module, p):
    state = p["state"]
    if state in ("present", "installed"):
        if not p["config_id"] or not _ID.match(p["config_id"]):
            module.fail_json(msg="config_id must be 1-64 letters and digits (the configuration's fingerprint), got %r"
                                 % (p["config_id"],))
    if state == "present":
        if p["env"] is None:
            module.fail_json(msg="env (the environment file's content) is required with state=present")
        bad = sorted(n for n in p["units"] if not _UNIT.match(n))
        if bad:
            module.fail_json(msg="units: %s are not unit names <app>-<process>@<slot>.service" % ", ".join(bad))
        unmarked = sorted(n for n, content in p["units"].items() if "\n# app: " not in "\n" + str(content))
        if unmarked:
            module.fail_json(msg="units: %s lack the '# app: <name>' line that marks them as this app's" % ", ".join(unmarked))
    if state == "installed":
        if not p["slot"] or not re.match(r"^[a-z][a-z0-9_-]{0,31}$", p["slot"]):
            module.fail_json(msg="slot must name a slot such as blue or green, got %r" % (p["slot"],))
        if not p["app_name"] or not re.match(r"^[a-z][a-z0-9-]{0,30}$", p["app_name"]):
            module.fail_json(msg="app_name must be the app's name (it prefixes its units), got %r" % (p["app_name"],))
    if state == "pruned" and p["keep"] < 1:
        module.fail_json(msg="keep must be at least 1, got %d" % p["keep"])


def present(module, p):
    bundle = _bundle_dir(p)
    files = dict(("units/%s" % name, (str(content), 0o644, -1)) for name, content in sorted(p["units"].items()))
    gid = _gid(module, p["group"]) if not module.check_mode or os.path.isdir(bundle) else -1
    files["env"] = (p["env"], 0o640, gid)
    manifest = {"id": p["config_id"], "units": sorted(p["units"])}
    actions, diff = [], {"before": "", "after": ""}
    if not os.path.isdir(bundle):
        actions.append("create bundle %s (%d unit files, environment file)" % (p["config_id"], len(p["units"])))
        diff["after"] = "".join("%s\n" % n for n in sorted(files))
        if not module.check_mode:
            root = os.path.join(p["app_root"], CONFIG_DIR)
            if not os.path.isdir(root):
                os.makedirs(root, 0o750)
            os.chown(root, 0, gid)
            os.chmod(root, 0o750)
            tmp = os.path.join(root, "%s%s-%s" % (_TEMP, p["config_id"], uuid.uuid4().hex[:8]))
            os.mkdir(tmp, 0o750)
            os.chown(tmp, 0, gid)
            os.mkdir(os.path.join(tmp, "units"), 0o755)
            for rel, (data, mode, owner_gid) in files.items():
                write_file_atomic(os.path.join(tmp, rel), data, mode, gid=None if owner_gid == -1 else owner_gid)
            manifest["created"] = _now()
            write_file_atomic(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n", 0o644)
            os.rename(tmp, bundle)
        return _with_diff(module, dict(changed=True, path=bundle, actions=actions), diff)
    # A bundle never changes; a file that differs from what its inputs render (edited, or cut short by a
    # killed run of an older version) is put back.
    for rel, (data, mode, owner_gid) in sorted(files.items()):
        path = os.path.join(bundle, rel)
        stat = os.lstat(path) if os.path.lexists(path) else None
        if _read(path) != data or stat is None or (stat.st_mode & 0o7777) != mode or \
                (owner_gid != -1 and stat.st_gid != owner_gid):
            actions.append("repair %s/%s" % (p["config_id"], rel))
            if not module.check_mode:
                write_file_atomic(path, data, mode, gid=None if owner_gid == -1 else owner_gid)
    stale = sorted(set(os.listdir(os.path.join(bundle, "units"))) - set(p["units"])) \
        if os.path.isdir(os.path.join(bundle, "units")) else []
    for name in stale:
        actions.append("remove %s/units/%s" % (p["config_id"], name))
        if not module.check_mode:
            os.unlink(os.path.join(bundle, "units", name))
    diff["after"] = "".join("%s\n" % a for a in actions)
    return _with_diff(module, dict(changed=bool(actions), path=bundle, actions=actions), diff)


def _with_diff(module, result, diff):
    if module._diff:
        result["diff"] = diff
    return result


def _now():
    import datetime
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _owned(path, app_name):
    return "\n# app: %s\n" % app_name in "\n" + (_read(path) or "") + "\n"


def installed(module, p):
    bundle = _bundle_dir(p)
    units_src = os.path.join(bundle, "units")
    if not os.path.isfile(os.path.join(bundle, MANIFEST)):
        module.fail_json(msg="configuration bundle %s does not exist under %s: apply the app role (it writes the "
                             "bundle of the configuration it applies)" % (p["config_id"], os.path.dirname(bundle)))
    suffix = "@%s.service" % p["slot"]
    wanted = dict((name, _read(os.path.join(units_src, name))) for name in sorted(os.listdir(units_src))
                  if name.endswith(suffix) and name.startswith(p["app_name"] + "-"))
    actions, removed, before, after = [], [], [], []
    for name, data in wanted.items():
        target = os.path.join(p["units_dir"], name)
        current = _read(target) if not os.path.islink(target) else None
        if current != data:
            actions.append("install %s" % name)
            before.append("%s: %s\n" % (name, "absent" if current is None else "other content"))
            after.append("%s: bundle %s\n" % (name, p["config_id"]))
            if not module.check_mode:
                if os.path.islink(target):
                    os.unlink(target)
                write_file_atomic(target, data, 0o644)
    for name in sorted(os.listdir(p["units_dir"])):
        path = os.path.join(p["units_dir"], name)
        if (name.endswith(suffix) and name.startswith(p["app_name"] + "-") and name not in wanted
                and os.path.isfile(path) and not os.path.islink(path) and _owned(path, p["app_name"])):
            actions.append("remove %s" % name)
            removed.append(name)
            before.append("%s: installed\n" % name)
            after.append("%s: absent\n" % name)
            if not module.check_mode:
                os.unlink(path)
    if actions:
        actions.append("systemctl daemon-reload")
        if not module.check_mode:
            module.run_command(["systemctl", "daemon-reload"], check_rc=True)
    result = dict(changed=bool(actions), path=bundle, actions=actions, installed=sorted(wanted), removed=removed)
    if module._diff:
        result["diff"] = dict(before="".join(before), after="".join(after))
    return result


def _referenced(app_root):
    """Bundles a slot runs or a kept release was activated with."""
    used = set()
    slots = os.path.join(app_root, "slots")
    for name in os.listdir(slots) if os.path.isdir(slots) else []:
        if name.endswith(".json") and _TEMP not in name:
            data = (_load(os.path.join(slots, name)) or {}).get("data") or {}
            used.add(data.get("config"))
    releases = os.path.join(app_root, "releases")
    for name in os.listdir(releases) if os.path.isdir(releases) else []:
        manifest = _load(os.path.join(releases, name, ".release.json")) or {}
        for activation in manifest.get("activations") or []:
            used.update((activation.get("config"), activation.get("from_config")))
    return used - {None}


def _load(path):
    text = _read(path)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def pruned(module, p):
    root = os.path.join(p["app_root"], CONFIG_DIR)
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    # A temporary directory of a write still in progress elsewhere is young: only old ones are leftovers.
    leftovers = [n for n in names if n.startswith(_TEMP) and time.time() - os.lstat(os.path.join(root, n)).st_mtime > 3600]
    bundles = [(_load(os.path.join(root, n, MANIFEST)) or {}, n) for n in names if not n.startswith(_TEMP)]
    bundles = sorted(((m.get("created") or "", n) for m, n in bundles if m.get("id") == n))
    newest = set(n for dummy, n in bundles[-p["keep"]:])
    keep = newest | set(p["in_use"]) | _referenced(p["app_root"])
    removed = [n for dummy, n in bundles if n not in keep]
    actions = ["remove bundle %s" % n for n in removed] + ["remove leftover %s" % n for n in leftovers]
    if not module.check_mode:
        for name in removed + leftovers:
            trash = os.path.join(root, "%strash-%s" % (_TEMP, uuid.uuid4().hex[:8]))
            os.rename(os.path.join(root, name), trash)
            shutil.rmtree(trash, ignore_errors=True)
    return dict(changed=bool(actions), actions=actions, removed=removed + leftovers)


def main():
    heartbeat()
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "installed", "pruned"]),
            config_id=dict(type="str"),
            env=dict(type="str", no_log=True),
            group=dict(type="str", default="root"),
            units=dict(type="dict", default={}),
            app_name=dict(type="str"),
            slot=dict(type="str"),
            units_dir=dict(type="path", default="/etc/systemd/system"),
            keep=dict(type="int", default=5),
            in_use=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    _validate(module, p)
    os.umask(0o022)
    try:
        result = {"present": present, "installed": installed, "pruned": pruned}[p["state"]](module, p)
    except (IOError, OSError) as exc:
        module.fail_json(msg="app_config %s under %s failed: %s" % (p["state"], p["app_root"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
