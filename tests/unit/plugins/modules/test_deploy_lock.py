"""botstack.deploy.deploy_lock on a real filesystem."""
from __future__ import annotations

import contextlib
import datetime
import grp
import json
import os
import pathlib
import subprocess
import time
import threading
import uuid

from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat


# Run ids of this test session only: processes of another session on this host (they carry the same variable)
# must never look like a live holder here.
TAG = uuid.uuid4().hex[:8]
RUN_A, RUN_B, RUN_OLD, RUN_DEAD = ("%s-%s" % (name, TAG) for name in ("run-a", "run-b", "run-old", "run-dead"))


def _lock(module, path, owner="alice@laptop", run_id=RUN_A, check=False, **extra):
    return module("deploy_lock", {"path": str(path), "owner": owner, "run_id": run_id, **extra}, check=check)


def _warnings(result):
    """The task's warnings as one text (ansible-core may return them as structured events)."""
    return json.dumps(result.get("warnings", []))


def _since(minutes):
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=minutes)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def _run_process(run_id):
    """A process of run_id on this host, as a module of that run (or its git, pip...) would be."""
    env = dict(os.environ, BOTSTACK_DEPLOY_RUN=run_id)
    proc = subprocess.Popen(["sleep", "300"], env=env)
    _wait_exec(proc, run_id)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _wait_exec(proc, run_id):
    """Until the child exec'd: before that, /proc/<pid>/environ is still its parent's."""
    for _ in range(500):
        try:
            if ("BOTSTACK_DEPLOY_RUN=%s" % run_id).encode() in pathlib.Path(f"/proc/{proc.pid}/environ").read_bytes():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"process {proc.pid} never carried the run id")


def test_take_and_give_back_reporting_no_change(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    taken = _lock(module, path, details={"release": "v2"})
    assert taken["_rc"] == 0 and taken["changed"] is False and taken["holder"] is None
    held = json.loads(path.read_text())
    assert held["owner"] == "alice@laptop" and held["details"] == {"release": "v2"}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    released = _lock(module, path, state="released")
    assert released["changed"] is False and not path.exists()


def test_a_live_runs_lock_is_refused_at_once_naming_its_processes_whoever_owns_it(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    for owner in ("bob@ci", "alice@laptop"):  # the owner string grants nothing: the same owner's other run too
        path.write_text(json.dumps({"owner": owner, "run_id": RUN_B, "since": _since(42),
                                    "details": {"release": "v9"}}))
        with _run_process(RUN_B) as holder:
            # A grace far beyond the harness's timeout: the refusal cannot have come from waiting it out.
            refused = _lock(module, path, grace=600)
            assert refused["failed"] is True, refused
            assert "held by %s for 42 min" % owner in refused["msg"] and '"release": "v9"' in refused["msg"]
            assert "run %s" % RUN_B in refused["msg"] and "%d (sleep 300)" % holder.pid in refused["msg"]
            assert refused["liveness"]["state"] == "alive" and refused["liveness"]["waited_seconds"] == 0
            assert [p["pid"] for p in refused["liveness"]["processes"]] == [holder.pid]
            checked = _lock(module, path, grace=600, check=True)
            assert checked["failed"] is True and str(holder.pid) in checked["msg"]
            # break_lock skips the watch, never a run whose processes run.
            broken = _lock(module, path, break_lock=True)
            assert broken["failed"] is True and "break_lock does not take" in broken["msg"]
        assert json.loads(path.read_text())["run_id"] == RUN_B
    # Once its processes are gone, break_lock takes the lock over without watching.
    broken = _lock(module, path, break_lock=True, grace=600)
    assert broken["_rc"] == 0 and broken["taken_over"] is True, broken
    assert broken["liveness"]["state"] == "dead" and "break_lock=true" in broken["liveness"]["reason"]
    assert json.loads(path.read_text())["run_id"] == RUN_A


def test_a_process_of_the_holder_appearing_during_the_watch_refuses(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    assert _lock(module, path, run_id=RUN_B)["_rc"] == 0
    stop = threading.Event()
    started = []

    def start_a_task_of_run_b():
        # Its next task starts while the other run watches (or just before: refused all the same).
        with _run_process(RUN_B) as proc:
            started.append(proc.pid)
            stop.wait(120)

    thread = threading.Thread(target=start_a_task_of_run_b)
    thread.start()
    try:
        refused = _lock(module, path, grace=600)
    finally:
        stop.set()
        thread.join()
    assert refused["failed"] is True and refused["liveness"]["state"] == "alive"
    assert started and str(started[0]) in refused["msg"]
    assert json.loads(path.read_text())["run_id"] == RUN_B


def test_a_heartbeat_during_the_grace_refuses(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    assert _lock(module, path, run_id=RUN_B)["_rc"] == 0
    stop, beats = threading.Event(), []
    environ = {"BOTSTACK_DEPLOY_RUN": RUN_B, "BOTSTACK_DEPLOY_LOCK": str(path)}

    def run_b_starts_tasks():
        while not stop.is_set():
            beats.append(heartbeat(environ))
            stop.wait(0.05)

    thread = threading.Thread(target=run_b_starts_tasks)
    thread.start()
    try:
        refused = _lock(module, path, grace=600)
    finally:
        stop.set()
        thread.join()
    assert refused["failed"] is True, refused
    assert refused["liveness"]["state"] == "alive" and "heartbeat" in refused["liveness"]["reason"]
    assert "touched its lock" in refused["msg"] and not refused["liveness"]["processes"]
    assert any(beats) and json.loads(path.read_text())["run_id"] == RUN_B


def test_a_dead_runs_lock_is_taken_over_after_the_grace_whoever_owns_it(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    assert _lock(module, path, owner="alice@laptop", run_id=RUN_OLD, details={"release": "v1"})["_rc"] == 0
    before = path.read_text()
    checked = _lock(module, path, grace=0.5, check=True)
    assert checked["_rc"] == 0 and checked["taken_over"] is True, checked
    assert "would take over (check mode)" in _warnings(checked)
    assert path.read_text() == before  # check mode wrote nothing
    taken = _lock(module, path, grace=0.5)
    assert taken["_rc"] == 0 and taken["taken_over"] is True, taken
    # The watch lasts the whole grace: the one bound the algorithm itself guarantees.
    assert taken["liveness"]["state"] == "dead" and taken["liveness"]["waited_seconds"] >= 0.5
    assert taken["holder"]["run_id"] == RUN_OLD and taken["liveness"]["run_id"] == RUN_OLD
    warning = _warnings(taken)
    assert "took over the deploy lock" in warning and "run %s" % RUN_OLD in warning
    assert "no process of that run on this host and no sign of life for 0.5 s" in warning
    held = json.loads(path.read_text())
    assert held["run_id"] == RUN_A and held["owner"] == "alice@laptop"


def test_this_runs_own_lock_is_taken_again_without_a_word(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    assert _lock(module, path)["_rc"] == 0
    again = _lock(module, path, grace=600)
    assert again["_rc"] == 0 and again["taken_over"] is False and not again.get("warnings")
    assert again["liveness"]["state"] == "own" and again["holder"]["run_id"] == RUN_A


def test_a_lock_from_before_run_ids_is_dead_when_untouched_for_the_grace(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    path.write_text(json.dumps({"owner": "alice@laptop", "since": "2026-01-01T00:00:00Z"}))
    taken = _lock(module, path, grace=0.5)
    assert taken["_rc"] == 0 and taken["taken_over"] is True, taken
    assert "a lock from before run ids" in _warnings(taken)
    assert json.loads(path.read_text())["run_id"] == RUN_A


def test_two_runs_that_find_a_dead_holder_at_once_one_wins(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    assert _lock(module, path, run_id=RUN_DEAD)["_rc"] == 0
    results = {}

    def acquire(run_id):
        results[run_id] = _lock(module, path, run_id=run_id, grace=0.5)

    threads = [threading.Thread(target=acquire, args=("run-%d-%s" % (n, TAG),)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run for run, result in results.items() if result["_rc"] == 0]
    assert len(winners) == 1, results
    assert json.loads(path.read_text())["run_id"] == winners[0]
    for run, result in results.items():
        if run != winners[0]:
            assert result["failed"] is True and "was taken by alice@laptop (run %s)" % winners[0] in result["msg"]


def test_releasing_another_runs_lock_leaves_it_whoever_owns_it(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    path.write_text(json.dumps({"owner": "bob@ci", "since": "2026-01-01T00:00:00Z"}))  # from before run ids
    released = _lock(module, path, state="released")
    assert released["_rc"] == 0 and path.exists() and released["released"] is False
    assert _lock(module, path, state="released", run_id=RUN_B, grace=0.5)["released"] is False
    path.unlink()
    # The same owner's other run (a second terminal) holds it: this run's release step leaves it.
    assert _lock(module, path, run_id=RUN_B)["_rc"] == 0
    released = _lock(module, path, state="released", run_id=RUN_A)
    assert released["_rc"] == 0 and released["released"] is False and released["liveness"]["state"] == "other"
    assert "not this run (%s); left in place" % RUN_A in _warnings(released)
    assert json.loads(path.read_text())["run_id"] == RUN_B
    checked = _lock(module, path, state="released", run_id=RUN_B, check=True)
    assert checked["released"] is False and path.exists()
    released = _lock(module, path, state="released", run_id=RUN_B)
    assert released["released"] is True and not path.exists() and not released.get("warnings")


def test_a_symlink_planted_in_the_textfile_directory_is_never_followed(module, tmp_path):
    """The textfile directory is group-writable (the backup units write there): a planted symlink at the old
    temporary name or at the metrics file itself must not make root write or chmod the file it points to."""
    path, log = tmp_path / ".deploy.lock", tmp_path / "deploy.log"
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    metrics = textfile / "botstack_deploy.prom"
    victims = {name: tmp_path / name for name in ("shadow", "passwd")}
    for victim in victims.values():
        victim.write_text("root:secret\n")
        victim.chmod(0o600)
    (textfile / ".botstack_deploy.prom.tmp").symlink_to(victims["shadow"])
    metrics.symlink_to(victims["passwd"])
    group = grp.getgrgid(os.getgid()).gr_name
    _lock(module, path)
    released = _lock(module, path, state="released", log_path=str(log), log_group=group, metrics_path=str(metrics),
                     log_entry={"app": "botstack", "release": "v3", "result": "success"})
    assert released["_rc"] == 0, released
    for victim in victims.values():
        assert victim.read_text() == "root:secret\n" and victim.stat().st_mode & 0o777 == 0o600
    assert not metrics.is_symlink() and metrics.is_file() and metrics.stat().st_mode & 0o777 == 0o644
    assert 'botstack_deploy_last_result{app="botstack"} 1' in metrics.read_text()
    # The deploy log is appended to, never through a symlink.
    log.unlink()
    log.symlink_to(victims["shadow"])
    _lock(module, path)
    refused = _lock(module, path, state="released", log_path=str(log), log_group=group,
                    log_entry={"release": "v3", "result": "success"})
    assert refused["failed"] is True and "deploy.log" in refused["msg"]
    assert victims["shadow"].read_text() == "root:secret\n" and victims["shadow"].stat().st_mode & 0o777 == 0o600


def test_the_outcome_is_appended_to_the_deploy_log_on_release(module, tmp_path):
    path, log = tmp_path / ".deploy.lock", tmp_path / "deploy.log"
    group = grp.getgrgid(os.getgid()).gr_name
    for result in ("success", "failed"):
        _lock(module, path)
        released = _lock(module, path, state="released", log_path=str(log), log_group=group,
                         log_entry={"release": "v2", "result": result})
        assert released["changed"] is True
    assert [json.loads(line)["result"] for line in log.read_text().splitlines()] == ["success", "failed"]
    assert oct(log.stat().st_mode & 0o777) == "0o640"


def test_bad_input_is_named(module, tmp_path):
    assert "owner must name who deploys" in _lock(module, tmp_path / "x.lock", owner=" ")["msg"]
    assert "does not exist" in _lock(module, tmp_path / "missing" / "x.lock")["msg"]


def test_the_outcome_is_exported_for_node_exporter(module, tmp_path):
    path, log = tmp_path / ".deploy.lock", tmp_path / "deploy.log"
    metrics = tmp_path / "textfile" / "botstack_deploy.prom"
    group = grp.getgrgid(os.getgid()).gr_name
    # No textfile directory (no node_exporter): nothing written, no error.
    _lock(module, path)
    released = _lock(module, path, state="released", log_path=str(log), log_group=group, metrics_path=str(metrics),
                     log_entry={"app": "botstack", "release": "v2-abc", "result": "success"})
    assert released["_rc"] == 0 and not metrics.exists()
    metrics.parent.mkdir()
    for result, value in (("success", 1), ("failed", 0)):
        _lock(module, path)
        _lock(module, path, state="released", log_path=str(log), log_group=group, metrics_path=str(metrics),
              log_entry={"app": "botstack", "release": "v3-def", "result": result})
        text = metrics.read_text()
        assert 'botstack_deploy_last_result{app="botstack"} %d' % value in text
        assert 'botstack_deploy_release_info{app="botstack",release="v3-def",result="%s"} 1' % result in text
    assert [p.name for p in metrics.parent.iterdir()] == ["botstack_deploy.prom"]


def test_the_lock_returns_the_releases_read_once_it_is_held(module, tmp_path):
    root = tmp_path / "app"
    for rid in ("r1", "r2"):
        assert module("release", {"app_root": str(root), "release_id": rid, "status": "healthy"})["_rc"] == 0
    module("release", {"app_root": str(root), "release_id": "r2", "state": "active"})
    taken = _lock(module, root / ".deploy.lock", app_root=str(root))
    assert taken["_rc"] == 0 and (root / ".deploy.lock").exists()
    # What release_info returns, from the same round trip.
    info = module("release_info", {"app_root": str(root)})
    info = dict((k, v) for k, v in info.items() if k in taken["releases"])
    assert taken["releases"] == info and taken["releases"]["current"] == "r2"
    assert taken["releases"]["rollback_target"] == "r1"


def test_the_lock_reads_the_configuration_fingerprint(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    missing = _lock(module, path, config_path=str(tmp_path / ".app-config"))
    assert missing["_rc"] == 0 and missing["config"] is None
    _lock(module, path, state="released")
    (tmp_path / ".app-config").write_text("3f1c0a9e5b7d\n")
    taken = _lock(module, path, config_path=str(tmp_path / ".app-config"))
    assert taken["config"] == "3f1c0a9e5b7d"


def test_a_bad_app_root_fails_before_the_lock_is_taken(module, tmp_path):
    (tmp_path / "file").write_text("")
    refused = _lock(module, tmp_path / ".deploy.lock", app_root=str(tmp_path / "file"))
    assert refused["failed"] is True and "is not a directory" in refused["msg"]
    assert not (tmp_path / ".deploy.lock").exists()


SYSTEMCTL_SHOW = '''#!/usr/bin/env python3
"""systemctl show stand-in: the api runs since now, the worker since an hour ago, the rest is stopped."""
import sys, time
now = int(time.monotonic() * 1e6)
started = {"api@blue.service": now, "worker@blue.service": now - 3600 * 10**6}
blocks = []
for name in [a for a in sys.argv[2:] if not a.startswith("-")]:
    running = name in started
    blocks.append("Id=%s\\nActiveState=%s\\nSubState=%s\\nInactiveExitTimestampMonotonic=%d" % (
        name, "active" if running else "inactive", "running" if running else "dead", started.get(name, 0)))
print("\\n\\n".join(blocks))
'''


def test_the_lock_tells_which_units_run_since_their_slot_got_its_release(module, tmp_path):
    root = tmp_path / "app"
    assert module("release", {"app_root": str(root), "release_id": "r1", "status": "healthy"})["_rc"] == 0
    assigned = module("release", {"app_root": str(root), "release_id": "r1", "state": "assigned", "slot": "blue"})
    assert assigned["_rc"] == 0, assigned
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(SYSTEMCTL_SHOW)
    (bindir / "systemctl").chmod(0o755)
    units = {"blue": ["api@blue.service", "worker@blue.service"], "green": ["api@green.service"]}
    taken = module("deploy_lock", {"path": str(root / ".deploy.lock"), "owner": "alice@laptop", "run_id": RUN_A,
                                   "app_root": str(root),
                                   "slot_units": units}, extra_path=str(bindir))
    assert taken["_rc"] == 0, taken
    # The worker runs since before blue got r1 (an older release's process): it needs a start.
    assert taken["kept_running"] == {"blue": ["api@blue.service"], "green": []}
    refused = _lock(module, tmp_path / ".other.lock", slot_units=units)
    assert refused["failed"] is True and "slot_units needs app_root" in refused["msg"]


def test_every_module_of_the_run_touches_its_lock_first(module, tmp_path, monkeypatch):
    root = tmp_path / "app"
    root.mkdir()
    path = root / ".deploy.lock"
    assert _lock(module, path, run_id=RUN_A)["_rc"] == 0
    os.utime(path, (1000, 1000))
    monkeypatch.setenv("BOTSTACK_DEPLOY_RUN", RUN_B)
    monkeypatch.setenv("BOTSTACK_DEPLOY_LOCK", str(path))
    assert module("release_info", {"app_root": str(root)})["_rc"] == 0
    assert path.stat().st_mtime == 1000  # another run's lock: left alone
    monkeypatch.setenv("BOTSTACK_DEPLOY_RUN", RUN_A)
    assert module("release_info", {"app_root": str(root)})["_rc"] == 0
    assert path.stat().st_mtime != 1000
    # The lock task itself refuses variables that name another run or lock: its heartbeats would never count.
    monkeypatch.setenv("BOTSTACK_DEPLOY_RUN", RUN_B)
    refused = _lock(module, path, state="released", run_id=RUN_A)
    assert refused["failed"] is True and "BOTSTACK_DEPLOY_RUN=%s but run_id is %s" % (RUN_B, RUN_A) in refused["msg"]
    monkeypatch.setenv("BOTSTACK_DEPLOY_RUN", RUN_A)
    monkeypatch.setenv("BOTSTACK_DEPLOY_LOCK", str(tmp_path / "other.lock"))
    refused = _lock(module, path, state="released", run_id=RUN_A)
    assert refused["failed"] is True and "both must name the same lock file" in refused["msg"]
    assert json.loads(path.read_text())["run_id"] == RUN_A


def test_bad_run_id_and_grace_are_named(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    for run_id in ("", "a b", "-x", "x" * 129, "run\n1"):
        assert "run_id must be a unique id" in _lock(module, path, run_id=run_id)["msg"]
    for grace in (0, -1, "inf"):
        assert "grace must be a number of seconds greater than 0" in _lock(module, path, grace=grace)["msg"]
    assert not path.exists()


def test_check_mode_writes_nothing(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    checked = _lock(module, path, check=True)
    assert checked["_rc"] == 0 and checked["liveness"]["state"] == "free"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module-args"]  # no lock, no guard file


def test_a_run_of_this_controller_is_alive_while_its_process_is_and_dead_at_once_when_gone(module, tmp_path):
    """Two terminals of one machine: the holder's ansible-playbook process decides, however long it stays away from
    the host (no grace is waited either way)."""
    path = tmp_path / ".deploy.lock"
    holder = {"name": "bastion", "pid": 4242}
    assert _lock(module, path, run_id=RUN_B, grace=600, controller=holder)["_rc"] == 0
    me = {"name": "bastion", "pid": 5151}
    refused = _lock(module, path, grace=600, controller=me, controller_pids=[4242, 5151])
    assert refused["failed"] is True and "ansible-playbook process 4242 still runs on this controller" in refused["msg"]
    assert refused["liveness"]["waited_seconds"] == 0
    taken = _lock(module, path, grace=600, controller=me, controller_pids=[5151])
    assert taken["_rc"] == 0 and taken["taken_over"] is True and taken["liveness"]["waited_seconds"] == 0, taken
    assert json.loads(path.read_text())["controller"] == me


def test_a_run_of_another_controller_is_judged_by_the_host_with_the_grace(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    assert _lock(module, path, run_id=RUN_B, controller={"name": "laptop", "pid": 4242})["_rc"] == 0
    taken = _lock(module, path, grace=0.3, controller={"name": "ci-runner", "pid": 4242}, controller_pids=[4242])
    assert taken["_rc"] == 0 and taken["taken_over"] is True and taken["liveness"]["waited_seconds"] >= 0.3


def test_the_controller_lists_its_ansible_processes():
    from ansible_collections.botstack.deploy.plugins.action.deploy_lock import ansible_pids
    proc = subprocess.Popen(["bash", "-c", "exec -a ansible-playbook-test sleep 30"])
    try:
        for _ in range(200):
            if proc.pid in ansible_pids():
                break
            time.sleep(0.05)
        assert proc.pid in ansible_pids()
    finally:
        proc.kill()
        proc.wait()
