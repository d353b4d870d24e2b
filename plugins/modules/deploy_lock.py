#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take or release an application's deploy lock, recording who holds it and since when
version_added: 0.1.0
description:
  - A deploy lock is a file holding its owner, the time it was taken and what the deploy does. It is
    created atomically (C(O_EXCL)), so two deploys of one application never run at once.
  - A lock held by another owner stops the task with the owner, its age and what it was doing; it is
    never broken silently. I(break_lock=true) takes it over (after checking that deploy really died).
  - A lock held by the same I(owner) is taken over with a warning, since it is that owner's own run, interrupted
    by a timeout, a killed terminal or a cancelled AWX job, and now retried.
  - Releasing the lock can append the deploy's outcome to a deploy log (I(log_path), one JSON line), so who held
    the lock and what came of it are recorded together.
  - Taking and releasing the lock is bookkeeping, not a change to the host, so the task reports C(changed=false)
    (a line added to the deploy log does report a change).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode a lock held by another owner still fails the task; nothing is written.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description: Lock file (its directory must exist), e.g. C(<app_root>/.deploy.lock).
    type: path
    required: true
  state:
    description: C(acquired) takes the lock, C(released) gives it back (only when this owner holds it).
    type: str
    choices: [acquired, released]
    default: acquired
  owner:
    description: Who deploys, e.g. C(alice@laptop) or an AWX job's user and template.
    type: str
    required: true
  details:
    description: What the deploy does (release, version, action), shown to whoever finds the lock held.
    type: dict
    default: {}
  break_lock:
    description: Take over a lock held by another owner. Only when that deploy is known to be dead.
    type: bool
    default: false
  log_path:
    description: With I(state=released) and I(log_entry), the deploy log the entry is appended to (created 0640).
    type: path
  log_entry:
    description: With I(state=released), one JSON line for the deploy log (who, what, when, result).
    type: dict
  log_group:
    description: Group that may read the deploy log (owner root).
    type: str
    default: root
  metrics_path:
    description:
      - With I(state=released) and I(log_entry), a Prometheus textfile (node_exporter's textfile collector) replaced
        atomically with the outcome - C(botstack_deploy_last_result) (1 success, 0 failed),
        C(botstack_deploy_last_timestamp_seconds) and C(botstack_deploy_release_info). Skipped when its directory
        does not exist (no node_exporter on the host).
    type: path
  app_root:
    description:
      - With I(state=acquired), read this application's releases and slots once the lock is held and return them
        as I(releases), what M(botstack.deploy.release_info) returns - a view no other deploy can change before
        this one releases the lock, at no extra round trip.
    type: path
  config_path:
    description:
      - With I(state=acquired), return the first line of this file as I(config) (null when there is none) - the
        botstack.deploy.app role's fingerprint of the configuration it last applied, read under the lock.
    type: path
  slot_units:
    description:
      - With I(app_root), the web and worker units of each slot, by slot name. The task returns,
        per slot, those running since the slot got the release it holds (I(kept_running)) - so a rollback to a slot
        kept running learns that its processes need no start, at no extra round trip.
    type: dict
    default: {}
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Take the deploy lock
  botstack.deploy.deploy_lock:
    path: /opt/botstack/.deploy.lock
    owner: "{{ lookup('ansible.builtin.env', 'USER') }}@{{ lookup('ansible.builtin.pipe', 'hostname') }}"
    details: {release: v2-60fddc2ebe09, action: deploy}
    app_root: /opt/botstack
  register: deploy_lock  # deploy_lock.releases.current: the live release

- name: Give it back, and log what came of the deploy
  botstack.deploy.deploy_lock:
    path: /opt/botstack/.deploy.lock
    owner: "{{ lookup('ansible.builtin.env', 'USER') }}@{{ lookup('ansible.builtin.pipe', 'hostname') }}"
    state: released
    log_path: /opt/botstack/deploy.log
    log_entry: {release: v2-60fddc2ebe09, result: success}
    log_group: botstack
"""

RETURN = r"""
holder:
  description: The lock's content before the task (owner, since, details), or null when it was free.
  returned: always
  type: dict
  sample: {"owner": "alice@laptop", "since": "2026-11-23T10:00:00Z", "age_seconds": 42, "details": {"release": "v2"}}
taken_over:
  description: Whether a lock left by an earlier run was taken over.
  returned: state=acquired
  type: bool
releases:
  description: With I(app_root), the application's releases and slots as M(botstack.deploy.release_info) returns them.
  returned: state=acquired and app_root given
  type: dict
  sample: {"current": "v2-60fddc2ebe09", "current_slot": "green", "rollback_target": "v1-0a1b2c3d4e5f",
           "slots": {}, "releases": [], "pending_activation": null, "leftovers": []}
config:
  description: With I(config_path), the file's first line, or null when it does not exist.
  returned: state=acquired and config_path given
  type: str
  sample: 3f1c0a9e5b7d
kept_running:
  description: With I(slot_units), per slot the units running in a run started since the slot got its release.
  returned: state=acquired and app_root given
  type: dict
  sample: {"blue": ["botstack-api@blue.service"], "green": []}
"""

import datetime
import errno
import grp
import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseError, ReleaseStore
from ansible_collections.botstack.deploy.plugins.module_utils.systemd import parse_utc, running_since, unit_states


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _read(path):
    try:
        with open(path) as handle:
            holder = json.load(handle)
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    except ValueError:
        holder = {"owner": "unknown (unreadable lock file)", "since": None}
    try:
        since = datetime.datetime.strptime(holder.get("since") or "", "%Y-%m-%dT%H:%M:%SZ")
        holder["age_seconds"] = int((_now() - since.replace(tzinfo=datetime.timezone.utc)).total_seconds())
    except ValueError:
        holder["age_seconds"] = None
    return holder


def _age(seconds):
    if seconds is None:
        return "for an unknown time"
    if seconds < 120:
        return "for %d s" % seconds
    if seconds < 7200:
        return "for %d min" % (seconds // 60)
    return "for %.1f h" % (seconds / 3600.0)


def _write_exclusive(path, content):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(content, handle, sort_keys=True)
        handle.write("\n")


def acquire(module, p, store=None):
    content = {"owner": p["owner"], "since": _now().strftime("%Y-%m-%dT%H:%M:%SZ"), "details": p["details"],
               "pid": os.getpid()}
    holder = _read(p["path"])
    taken_over = False
    if holder is not None:
        if holder.get("owner") != p["owner"] and not p["break_lock"]:
            module.fail_json(
                msg="deploy lock %s is held by %s %s (since %s) for %s. Wait for that deploy to finish; if it "
                    "died, check nothing is running and set deploy_lock_break=true (break_lock) to take it over"
                    % (p["path"], holder.get("owner"), _age(holder.get("age_seconds")), holder.get("since"),
                       json.dumps(holder.get("details") or {}, sort_keys=True)),
                holder=holder)
        module.warn("took over the deploy lock %s held by %s %s (%s)" % (
            p["path"], holder.get("owner"), _age(holder.get("age_seconds")),
            "same owner: an interrupted run retried" if holder.get("owner") == p["owner"] else "break_lock=true"))
        taken_over = True
    if not module.check_mode:
        if holder is not None:
            os.unlink(p["path"])
        try:
            _write_exclusive(p["path"], content)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            raced = _read(p["path"]) or {}
            module.fail_json(msg="deploy lock %s was taken by %s at the same moment; run again once it is free"
                                 % (p["path"], raced.get("owner")), holder=raced)
    result = dict(changed=False, holder=holder, taken_over=taken_over)
    if p["config_path"]:
        result["config"] = _first_line(p["config_path"])
    if store is not None:
        result["releases"] = store.describe()
        result["kept_running"] = _kept_running(module, p["slot_units"], result["releases"].get("slots") or {})
    module.exit_json(**result)


def _first_line(path):
    try:
        with open(path) as handle:
            return handle.readline().strip()
    except IOError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def _kept_running(module, slot_units, slots):
    units = [u for names in slot_units.values() for u in names or []]
    states = unit_states(module, units)
    return dict((slot, [u for u in names or [] if running_since(
        states.get(u, {}), parse_utc((slots.get(slot) or {}).get("assigned")))]) for slot, names in slot_units.items())


def _log(module, p):
    if not (p["log_path"] and p["log_entry"]) or module.check_mode:
        return False
    line = json.dumps(p["log_entry"], sort_keys=True) + "\n"
    fd = os.open(p["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "a") as handle:
        handle.write(line)
    try:
        gid = grp.getgrnam(p["log_group"]).gr_gid
    except KeyError:
        module.fail_json(msg="log_group %s does not exist" % p["log_group"])
    os.chown(p["log_path"], 0, gid)
    os.chmod(p["log_path"], 0o640)
    return True


def _metrics(module, p):
    if not (p["metrics_path"] and p["log_entry"]) or module.check_mode:
        return False
    directory = os.path.dirname(p["metrics_path"])
    if not os.path.isdir(directory):
        return False
    entry = p["log_entry"]
    labels = 'app="%s"' % _label(entry.get("app") or os.path.basename(os.path.dirname(p["path"])))
    lines = [
        "# HELP botstack_deploy_last_result 1 when the newest deploy succeeded, 0 when it failed and was rolled back.",
        "# TYPE botstack_deploy_last_result gauge",
        "botstack_deploy_last_result{%s} %d" % (labels, 1 if entry.get("result") == "success" else 0),
        "# HELP botstack_deploy_last_timestamp_seconds End of the newest deploy.",
        "# TYPE botstack_deploy_last_timestamp_seconds gauge",
        "botstack_deploy_last_timestamp_seconds{%s} %d" % (labels, int(time.time())),
        "# HELP botstack_deploy_release_info The release the newest deploy shipped (or tried to).",
        "# TYPE botstack_deploy_release_info gauge",
        'botstack_deploy_release_info{%s,release="%s",result="%s"} 1'
        % (labels, _label(entry.get("release", "")), _label(entry.get("result", ""))),
    ]
    tmp = os.path.join(directory, ".%s.tmp" % os.path.basename(p["metrics_path"]))
    with open(tmp, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, p["metrics_path"])
    return True


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def release(module, p):
    holder = _read(p["path"])
    if holder is not None and holder.get("owner") != p["owner"]:
        module.warn("deploy lock %s is held by %s, not %s; left in place" % (p["path"], holder.get("owner"), p["owner"]))
    elif holder is not None and not module.check_mode:
        os.unlink(p["path"])
    logged = _log(module, p)
    measured = _metrics(module, p)
    module.exit_json(changed=logged or measured, holder=holder)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", default="acquired", choices=["acquired", "released"]),
            owner=dict(type="str", required=True),
            details=dict(type="dict", default={}),
            break_lock=dict(type="bool", default=False),
            log_path=dict(type="path"),
            log_entry=dict(type="dict"),
            log_group=dict(type="str", default="root"),
            metrics_path=dict(type="path"),
            app_root=dict(type="path"),
            config_path=dict(type="path"),
            slot_units=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not p["owner"].strip():
        module.fail_json(msg="owner must name who deploys (e.g. alice@laptop), got an empty string")
    if not os.path.isdir(os.path.dirname(p["path"]) or "/"):
        module.fail_json(msg="the directory of the lock file %s does not exist: apply the app role first (site.yml or "
                             "playbooks/app.yml)" % p["path"])
    if p["slot_units"] and not p["app_root"]:
        module.fail_json(msg="slot_units needs app_root (the slots' releases tell since when a unit counts as kept running)")
    bad = sorted(slot for slot, names in p["slot_units"].items()
                 if not isinstance(names, list) or not all(isinstance(name, str) for name in names))
    if bad:
        module.fail_json(msg="slot_units: %s must each be a list of unit names" % ", ".join(bad))
    store = None
    if p["app_root"] and p["state"] == "acquired":
        try:
            store = ReleaseStore(p["app_root"])
        except ReleaseError as exc:
            module.fail_json(msg=str(exc))
    try:
        if p["state"] == "acquired":
            acquire(module, p, store)
        release(module, p)
    except (IOError, OSError) as exc:
        module.fail_json(msg="deploy lock %s: %s" % (p["path"], exc))


if __name__ == "__main__":
    main()
