#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take or release an application's deploy lock, held by one run and taken over only from a dead one
version_added: 0.1.0
description:
  - A deploy lock is a file holding its owner, the run that holds it (I(run_id)), the time it was taken and what
    the deploy does. It appears atomically and complete, so two deploys of one application never run at once.
  - A lock of the same I(run_id) is this run's own and is taken again without a word (re-entrant).
  - A lock of another run is taken over only from a dead run, whoever its owner is. The owner string grants
    nothing - two terminals, a CI runner, cron and Semaphore of one account, a retry while the first run's module
    still runs, are all different runs.
  - 'The holder is alive when a process on this host carries C(BOTSTACK_DEPLOY_RUN=<its run id>) in its
    environment: the deploy role sets it on every task from the lock to its release, so every module of that run
    and their children (git, pip, systemctl waiting for a migration) carry it. The task then fails at once naming
    those processes.'
  - 'Otherwise the task watches the holder for I(grace) seconds: a process of it appearing, or its lock file
    touched (every botstack.deploy module touches its run''s lock when it starts - C(BOTSTACK_DEPLOY_LOCK), see
    the heartbeat below), fail the task. Nothing in I(grace) seconds: the holder is dead and its lock is taken
    over with a warning saying why.'
  - A lock from before run ids (no C(run_id) in it) cannot be matched to processes; it is dead when it was not
    touched for I(grace) seconds.
  - A live run must show life on this host at least every I(grace) seconds. Longer gaps between two of its tasks
    here - a slow upload of a large archive, a loop of tasks delegated to many other hosts, a long controller-side
    hook, several hosts deployed at once (C(serial) > 1) waiting on the slowest - would let another run take its
    lock over; such runs need a larger I(grace).
  - I(break_lock=true) skips the watch, for a holder known to be dead, but still refuses while processes of the
    holder's run run (they would race this deploy).
  - Two runs that both judged a holder dead cannot both take its lock over - every removal happens under an
    exclusive C(flock) of C(<path>.guard), a file kept beside the lock, after checking the lock is still the file
    judged (same inode, not touched since); a heartbeat touches the lock under a shared C(flock) of it.
  - Releasing (I(state=released)) removes the lock only when it is this run's; another run's lock is left in
    place with a warning. Releasing can append the deploy's outcome to a deploy log (I(log_path), one JSON line)
    and export it for node_exporter (I(metrics_path)), so who held the lock and what came of it are recorded
    together.
  - Heartbeat - C(botstack.deploy.plugins.module_utils.lock.heartbeat()), called first by every module of this
    collection - touches the lock file named by C(BOTSTACK_DEPLOY_LOCK) when its C(run_id) equals
    C(BOTSTACK_DEPLOY_RUN); without those variables, or for another run's lock, it does nothing, and it never
    fails a module.
  - Processes of other users are only visible to root; run this module with become, as the deploy role does.
  - Taking and releasing the lock is bookkeeping, not a change to the host, so the task reports C(changed=false)
    (a line added to the deploy log or a metrics file written does report a change).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the holder is judged as in a real run (its processes, then the I(grace) watch, which only
        reads) and a live holder fails the task; nothing is written - no lock, no guard file, no log, no metrics.
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
    description: C(acquired) takes the lock, C(released) gives it back (only when this run holds it).
    type: str
    choices: [acquired, released]
    default: acquired
  owner:
    description: Who deploys, e.g. C(alice@laptop) or an AWX job's user and template. Recorded and shown; it
      grants no takeover.
    type: str
    required: true
  run_id:
    description:
      - A unique id of this ansible-playbook run, made once per run (the deploy role makes it), e.g.
        C(20261123T100000Z-k3v9q2m1x8ab) - letters, digits, dots, underscores, colons, plus and minus signs,
        at most 128 characters.
      - The lock records it; a lock with the same I(run_id) is this run's own. Processes of the run show it as
        C(BOTSTACK_DEPLOY_RUN) in their environment; a task that runs with C(BOTSTACK_DEPLOY_RUN) or
        C(BOTSTACK_DEPLOY_LOCK) set to another run id or lock file fails (its heartbeats would never count).
    type: str
    required: true
  grace:
    description:
      - Seconds a holder with no process on this host is watched for a sign of life (a process of its run, a
        heartbeat) before it counts as dead and its lock is taken over. Greater than 0.
      - Longer than the longest gap between two tasks of a live run on this host. Only for a holder from another
        controller (see I(controller)); a run of this controller is judged by its process.
    type: float
    default: 15
  details:
    description: What the deploy does (release, version, action), shown to whoever finds the lock held.
    type: dict
    default: {}
  break_lock:
    description:
      - Take over another run's lock without watching it for I(grace) seconds - only when that deploy is known to be
        dead. A lock whose run still has processes on this host is refused all the same.
    type: bool
    default: false
  log_path:
    description:
      - With I(state=released) and I(log_entry), the deploy log the entry is appended to (created 0640, owner root).
        A symlink, or a file with several names (hard links), there is refused.
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
      - Other users may write that directory (the backup units do); the file is written under a random new name,
        given its mode on the open file and renamed into place, so nothing planted there (a symlink) is followed.
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
  controller:
    description:
      - This run's controller, C(name) (its host name) and C(pid) (its ansible-playbook process), recorded in the
        lock. The action plugin of this module fills it in.
      - A lock held by a run of the same controller counts as alive exactly while that process is among
        I(controller_pids), and as dead at once (no I(grace) waited) when it is not and no process of that run runs
        on the host - so two terminals, cron and CI jobs of one machine never run beside each other, however long a
        run stays away from the host, and a retry of a killed run takes the lock right away.
    type: dict
    suboptions:
      name:
        description: The controller's host name.
        type: str
        required: true
      pid:
        description: The run's ansible-playbook process.
        type: int
        required: true
  controller_pids:
    description: The ansible processes alive on this controller (the action plugin lists them).
    type: list
    elements: int
    default: []
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
- name: Name this run once (the deploy lock tells it from every other run, the same owner's included)
  ansible.builtin.set_fact:
    deploy_run_id: >-
      {{ now(utc=true, fmt='%Y%m%dT%H%M%SZ') }}-{{ lookup('ansible.builtin.password', '/dev/null',
         chars=['ascii_lowercase', 'digits'], length=12) }}

- name: Take the deploy lock
  botstack.deploy.deploy_lock:
    path: /opt/botstack/.deploy.lock
    owner: "{{ lookup('ansible.builtin.env', 'USER') }}@{{ lookup('ansible.builtin.pipe', 'hostname') }}"
    run_id: "{{ deploy_run_id }}"
    details: {release: v2-60fddc2ebe09, action: deploy}
    app_root: /opt/botstack
  register: deploy_lock  # deploy_lock.releases.current: the live release

- name: Deploy; every task shows this run alive to a run that finds the lock held
  environment:
    BOTSTACK_DEPLOY_RUN: "{{ deploy_run_id }}"
    BOTSTACK_DEPLOY_LOCK: /opt/botstack/.deploy.lock
  block:
    - name: Build, switch...
      ansible.builtin.debug:
        msg: the deploy's tasks
  always:
    - name: Give it back, and log what came of the deploy
      botstack.deploy.deploy_lock:
        path: /opt/botstack/.deploy.lock
        owner: "{{ lookup('ansible.builtin.env', 'USER') }}@{{ lookup('ansible.builtin.pipe', 'hostname') }}"
        run_id: "{{ deploy_run_id }}"
        state: released
        log_path: /opt/botstack/deploy.log
        log_entry: {release: v2-60fddc2ebe09, result: success}
        log_group: botstack

- name: Take over the lock of a deploy known to be dead, without the grace watch
  botstack.deploy.deploy_lock:
    path: /opt/botstack/.deploy.lock
    owner: alice@laptop
    run_id: "{{ deploy_run_id }}"
    break_lock: true
"""

RETURN = r"""
holder:
  description: The lock's content before the task (owner, run_id, since, details), or null when it was free.
  returned: always
  type: dict
  sample: {"owner": "alice@laptop", "run_id": "20261123T100000Z-k3v9q2m1x8ab", "since": "2026-11-23T10:00:00Z",
           "age_seconds": 42, "details": {"release": "v2"}}
liveness:
  description:
    - How the holder was judged. C(state) - C(free) (no lock), C(own) (this run's), C(alive) (the task failed),
      C(dead) (taken over, or would be in check mode), C(other) (state=released, another run's lock, left alone).
    - C(reason) says why in words; C(run_id) is the holder's run; C(processes) lists the processes of that run
      found on this host (pid, start of the command line); C(waited_seconds) is how long it was watched;
      C(touched_seconds_ago) is the age of the lock file's last write or heartbeat when first read.
  returned: always
  type: dict
  sample: {"state": "dead", "run_id": "20261123T093000Z-a1b2c3d4e5f6", "processes": [], "waited_seconds": 15.0,
           "touched_seconds_ago": 1260, "reason": "no process of that run on this host and no sign of life for 15 s"}
taken_over:
  description: Whether the lock of a dead run was taken over (in check mode - would be).
  returned: state=acquired
  type: bool
released:
  description: Whether this run's lock was removed.
  returned: state=released
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
import math
import os
import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils import lock
from ansible_collections.botstack.deploy.plugins.module_utils.files import append_line, write_file_atomic
from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseError, ReleaseStore
from ansible_collections.botstack.deploy.plugins.module_utils.systemd import parse_utc, running_since, unit_states

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _read(path):
    holder, info = lock.read_lock(path)
    return _with_age(holder), info


def _with_age(holder):
    if holder is not None:
        try:
            since = datetime.datetime.strptime(holder.get("since") or "", "%Y-%m-%dT%H:%M:%SZ")
            holder["age_seconds"] = int((_now() - since.replace(tzinfo=datetime.timezone.utc)).total_seconds())
        except (TypeError, ValueError):
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


def _held(p, holder):
    return "deploy lock %s is held by %s %s (since %s, run %s) for %s" % (
        p["path"], holder.get("owner"), _age(holder.get("age_seconds")), holder.get("since"),
        holder.get("run_id") or "unknown: a lock from before run ids",
        json.dumps(holder.get("details") or {}, sort_keys=True))


def _listed(procs, most=8):
    text = ", ".join("%d (%s)" % (proc["pid"], proc["cmd"]) for proc in procs[:most])
    return text + (" and %d more" % (len(procs) - most) if len(procs) > most else "")


# ---------------------------------------------------------------- acquire


def _liveness(state, reason, run_id=None, **extra):
    """How the holder was judged (returned as liveness)."""
    liveness = dict(state=state, run_id=run_id, processes=[], waited_seconds=0, touched_seconds_ago=None, reason=reason)
    liveness.update(extra)
    return liveness


def acquire(module, p, store=None):
    """A free lock is created; this run's own is kept; another run's is refused while that run lives, and taken
    over once it is dead."""
    holder, info = _read(p["path"])
    if holder is None:
        liveness = _liveness("free", "no lock")
    elif holder.get("run_id") == p["run_id"]:
        liveness = _liveness("own", "this run's own lock", p["run_id"])
    else:
        liveness = _judge(module, p, holder, info)  # fails when that run is alive
    content = {"owner": p["owner"], "run_id": p["run_id"], "since": _now().strftime("%Y-%m-%dT%H:%M:%SZ"),
               "details": p["details"], "pid": os.getpid(), "controller": p["controller"]}
    if liveness["state"] == "free" and not module.check_mode:
        taken, raced = lock.take_free(p["path"], content)
        if not taken:
            _raced(module, p, _with_age(raced))
    if liveness["state"] == "dead":
        if not module.check_mode:
            _take_over(module, p, holder, info, content, liveness)
        module.warn("%s the deploy lock %s held by %s %s (run %s): %s" % (
            "would take over (check mode)" if module.check_mode else "took over", p["path"], holder.get("owner"),
            _age(holder.get("age_seconds")), holder.get("run_id") or "unknown", liveness["reason"]))
    result = dict(changed=False, holder=holder, taken_over=liveness["state"] == "dead", liveness=liveness)
    if p["config_path"]:
        result["config"] = _first_line(p["config_path"])
    if store is not None:
        result["releases"] = store.describe()
        result["kept_running"] = _kept_running(module, p["slot_units"], result["releases"].get("slots") or {})
    module.exit_json(**result)


def _judge(module, p, holder, info):
    """Fail when the holder's run is alive. Returns the liveness of a dead holder (state dead), or of a lock its
    holder released while this run watched (state free)."""
    run = holder.get("run_id")
    liveness = _liveness("alive", "", run, processes=lock.run_processes(run, p["_exclude"]),
                         touched_seconds_ago=max(0, int(time.time() - info.st_mtime)))
    if liveness["processes"]:
        _refuse_processes(module, p, holder, liveness)
    # A run of this same controller is alive exactly as long as its ansible-playbook process is.
    theirs, mine = holder.get("controller") or {}, p["controller"] or {}
    if theirs.get("name") and theirs.get("name") == mine.get("name") and isinstance(theirs.get("pid"), int):
        if theirs["pid"] in p["controller_pids"] and theirs["pid"] != mine.get("pid"):
            liveness.update(state="alive", reason="its ansible-playbook process %d runs on this controller (%s)"
                            % (theirs["pid"], mine["name"]))
            module.fail_json(
                msg="%s, and that run is alive: its ansible-playbook process %d still runs on this controller (%s). "
                    "Wait for that deploy to finish, or stop it, then run again"
                    % (_held(p, holder), theirs["pid"], mine["name"]),
                holder=holder, liveness=liveness, taken_over=False)
        if theirs["pid"] != mine.get("pid"):
            return dict(liveness, state="dead", reason="its ansible-playbook process %d on this controller (%s) is gone "
                        "and no process of that run runs on this host" % (theirs["pid"], mine["name"]))
    if p["break_lock"]:
        return dict(liveness, state="dead", reason="break_lock=true and no process of that run on this host (no "
                    "grace watched; its lock was last touched %d s ago)" % liveness["touched_seconds_ago"])
    seen = lock.watch(p["path"], info, holder, p["grace"], p["_exclude"])
    liveness.update(processes=seen["processes"], waited_seconds=seen["waited_seconds"])
    if seen["sign"] == "processes":
        _refuse_processes(module, p, holder, liveness)
    if seen["sign"] == "heartbeat":
        _refuse_heartbeat(module, p, holder, liveness, "%s s into a %g s watch" % (seen["waited_seconds"], p["grace"]))
    if seen["sign"] == "replaced":
        _raced(module, p, _read(p["path"])[0], "while this run watched its previous holder")
    if seen["sign"] == "released":
        return dict(liveness, state="free", reason="its holder released it while this run watched")
    return dict(liveness, state="dead", reason=(
        "no process of that run on this host and no sign of life for %g s (its lock was last touched %d s ago)"
        % (p["grace"], liveness["touched_seconds_ago"] + int(seen["waited_seconds"])) if run else
        "a lock from before run ids, not touched for %g s" % p["grace"]))


def _take_over(module, p, holder, info, content, liveness):
    outcome, detail = lock.take_over(p["path"], info, holder, content, p["_exclude"])
    if outcome == "processes":
        liveness["processes"] = detail
        _refuse_processes(module, p, holder, liveness)
    if outcome == "changed" and lock.identity(detail) == lock.identity(holder):
        _refuse_heartbeat(module, p, holder, liveness, "at the last moment, as this run was taking its lock over")
    if outcome in ("changed", "raced"):
        _raced(module, p, _with_age(detail))


def _refuse_processes(module, p, holder, liveness):
    liveness.update(state="alive", reason="%d process(es) of that run on this host" % len(liveness["processes"]))
    module.fail_json(
        msg="%s, and that run is alive: %s of it run on this host: %s. Wait for that deploy to finish, or stop those "
            "processes, then run again (break_lock does not take the lock of a run whose processes run)"
            % (_held(p, holder), "a process" if len(liveness["processes"]) == 1 else "processes",
               _listed(liveness["processes"])),
        holder=holder, liveness=liveness, taken_over=False)


def _refuse_heartbeat(module, p, holder, liveness, when):
    liveness.update(state="alive", reason="its lock was touched (heartbeat) %s" % when)
    module.fail_json(
        msg="%s, and that run is alive: a task of it touched its lock %s. Wait for that deploy to finish, then run "
            "again (a run that shows life on this host less often than every %g s needs a larger grace, "
            "deploy_lock_grace)" % (_held(p, holder), when, p["grace"]),
        holder=holder, liveness=liveness, taken_over=False)


def _raced(module, p, holder, when="at the same moment"):
    holder = holder or {}
    module.fail_json(msg="deploy lock %s was taken by %s (run %s) %s; run again once it is free"
                         % (p["path"], holder.get("owner"), holder.get("run_id"), when),
                     holder=holder, taken_over=False,
                     liveness=_liveness("alive", "another run took the lock %s" % when, holder.get("run_id")))


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


# ---------------------------------------------------------------- release


def release(module, p):
    if module.check_mode:
        holder, removed = _read(p["path"])[0], False
        ours = holder is not None and holder.get("run_id") == p["run_id"]
    else:
        removed, holder = lock.release(p["path"], p["run_id"])
        holder, ours = _with_age(holder), removed
    if holder is not None and not ours:
        module.warn("deploy lock %s is held by %s (run %s), not this run (%s); left in place"
                    % (p["path"], holder.get("owner"), holder.get("run_id") or "unknown", p["run_id"]))
    state = "free" if holder is None else "own" if ours else "other"
    liveness = _liveness(state, {"free": "no lock", "own": "this run's own lock",
                                 "other": "another run's lock, left in place"}[state], (holder or {}).get("run_id"))
    logged = _log(module, p)
    measured = _metrics(module, p)
    module.exit_json(changed=logged or measured, holder=holder, released=removed, liveness=liveness)


def _log(module, p):
    if not (p["log_path"] and p["log_entry"]) or module.check_mode:
        return False
    append_line(p["log_path"], json.dumps(p["log_entry"], sort_keys=True) + "\n", 0o640, uid=0, gid=p["_log_gid"])
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
    # The directory is group-writable (the backup units write there too): never a fixed or followed name.
    write_file_atomic(p["metrics_path"], "\n".join(lines) + "\n", 0o644)
    return True


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


# ---------------------------------------------------------------- main


def _validate(p):
    if not p["owner"].strip():
        return "owner must name who deploys (e.g. alice@laptop), got an empty string"
    if not _RUN_ID.match(p["run_id"]):
        return ("run_id must be a unique id of this ansible-playbook run (letters, digits and . _ : + -, at most 128, "
                "e.g. 20261123T100000Z-k3v9q2m1x8ab), got %r" % p["run_id"])
    if not (p["grace"] > 0 and not math.isinf(p["grace"])):
        return "grace must be a number of seconds greater than 0 (how long a holder with no process here is watched), " \
               "got %s" % p["grace"]
    env_run, env_lock = os.environ.get(lock.ENV_RUN), os.environ.get(lock.ENV_LOCK)
    if env_run and env_run != p["run_id"]:
        return ("this task runs with %s=%s but run_id is %s: set both from the one id made once per run (otherwise "
                "this run's heartbeats never count and its lock can be taken over between two tasks)"
                % (lock.ENV_RUN, env_run, p["run_id"]))
    if env_lock and os.path.realpath(env_lock) != os.path.realpath(p["path"]):
        return ("this task runs with %s=%s but path is %s: both must name the same lock file (otherwise this run's "
                "heartbeats touch another file)" % (lock.ENV_LOCK, env_lock, p["path"]))
    if not os.path.isdir(os.path.dirname(p["path"]) or "/"):
        return ("the directory of the lock file %s does not exist: apply the app role first (site.yml or "
                "playbooks/app.yml)" % p["path"])
    if p["slot_units"] and not p["app_root"]:
        return "slot_units needs app_root (the slots' releases tell since when a unit counts as kept running)"
    bad = sorted(slot for slot, names in p["slot_units"].items()
                 if not isinstance(names, list) or not all(isinstance(name, str) for name in names))
    if bad:
        return "slot_units: %s must each be a list of unit names" % ", ".join(bad)
    return None


def main():
    lock.heartbeat()
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", default="acquired", choices=["acquired", "released"]),
            owner=dict(type="str", required=True),
            run_id=dict(type="str", required=True),
            grace=dict(type="float", default=15.0),
            details=dict(type="dict", default={}),
            break_lock=dict(type="bool", default=False),
            log_path=dict(type="path"),
            log_entry=dict(type="dict"),
            log_group=dict(type="str", default="root"),
            metrics_path=dict(type="path"),
            app_root=dict(type="path"),
            config_path=dict(type="path"),
            slot_units=dict(type="dict", default={}),
            controller=dict(type="dict", options=dict(name=dict(type="str", required=True),
                                                      pid=dict(type="int", required=True))),
            controller_pids=dict(type="list", elements="int", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    error = _validate(p)
    if error:
        module.fail_json(msg=error)
    p["_exclude"] = lock.lineage()
    p["_log_gid"] = None
    if p["state"] == "released" and p["log_path"] and p["log_entry"]:
        try:
            p["_log_gid"] = grp.getgrnam(p["log_group"]).gr_gid
        except KeyError:
            module.fail_json(msg="log_group %s does not exist: name a group of this host that may read the deploy log"
                                 % p["log_group"])
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
    except (IOError, OSError, lock.LockError) as exc:
        module.fail_json(msg="deploy lock %s: %s" % (p["path"], exc))


if __name__ == "__main__":
    main()
