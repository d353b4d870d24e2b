"""The deploy lock's primitives: the heartbeat, the takeover's compare-and-swap, the watch."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import threading
import uuid

from ansible_collections.botstack.deploy.plugins.module_utils import lock


# Run ids of this test session only: processes of another session on this host must not match them.
TAG = uuid.uuid4().hex[:8]
RUN_A, RUN_B, RUN_C, RUN_DEAD = ("%s-%s" % (name, TAG) for name in ("run-a", "run-b", "run-c", "run-dead"))


def _content(run_id, owner="alice@laptop"):
    return {"owner": owner, "run_id": run_id, "since": "2026-01-01T00:00:00Z", "details": {}, "pid": 1}


def _env(run_id, path):
    return {lock.ENV_RUN: run_id, lock.ENV_LOCK: str(path)}


def _held(path, run_id):
    assert lock.take_free(str(path), _content(run_id)) == (True, None)
    os.utime(path, (1000, 1000))  # an old mtime: any touch shows


def test_the_heartbeat_touches_only_its_own_runs_lock(tmp_path):
    path = tmp_path / ".deploy.lock"
    _held(path, RUN_A)
    assert lock.heartbeat({}) is False  # no variables: not inside a deploy
    assert lock.heartbeat({lock.ENV_RUN: RUN_A}) is False  # no lock named
    assert lock.heartbeat(_env(RUN_B, path)) is False  # another run's lock
    assert lock.heartbeat(_env(RUN_A, tmp_path / "missing.lock")) is False
    assert path.stat().st_mtime == 1000
    assert lock.heartbeat(_env(RUN_A, path)) is True
    assert path.stat().st_mtime != 1000
    assert json.loads(path.read_text())["run_id"] == RUN_A  # touched, never rewritten


def test_the_heartbeat_leaves_a_lock_from_before_run_ids_and_an_unreadable_one(tmp_path):
    path = tmp_path / ".deploy.lock"
    for text in (json.dumps({"owner": "alice@laptop", "since": "2026-01-01T00:00:00Z"}), "{not json", "[1]"):
        path.write_text(text)
        os.utime(path, (1000, 1000))
        assert lock.heartbeat(_env(RUN_A, path)) is False and path.stat().st_mtime == 1000


def test_the_heartbeat_never_raises(tmp_path, monkeypatch):
    path = tmp_path / ".deploy.lock"
    _held(path, RUN_A)

    def broken(*args, **kwargs):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(lock.os, "utime", broken)
    assert lock.heartbeat(_env(RUN_A, path)) is False
    monkeypatch.setenv(lock.ENV_RUN, RUN_A)
    monkeypatch.setenv(lock.ENV_LOCK, str(tmp_path / "not-a-dir" / "x.lock"))
    assert lock.heartbeat() is False  # os.environ by default


def test_of_many_runs_taking_over_one_dead_holder_at_once_exactly_one_wins(tmp_path):
    for attempt in range(20):
        path = tmp_path / ("%d.lock" % attempt)
        assert lock.take_free(str(path), _content(RUN_DEAD)) == (True, None)
        holder, judged = lock.read_lock(str(path))
        start = threading.Barrier(8)
        outcomes = {}

        def take(run_id):
            start.wait()
            outcomes[run_id] = lock.take_over(str(path), judged, holder, _content(run_id))[0]

        threads = [threading.Thread(target=take, args=("run-%d-%s" % (n, TAG),)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [run for run, outcome in outcomes.items() if outcome == "taken"]
        assert len(winners) == 1, outcomes
        assert set(outcomes.values()) <= {"taken", "changed", "raced"}
        assert json.loads(path.read_text())["run_id"] == winners[0]


def test_a_takeover_gives_way_to_a_heartbeat_after_the_holder_was_judged(tmp_path):
    path = tmp_path / ".deploy.lock"
    _held(path, RUN_B)
    holder, judged = lock.read_lock(str(path))
    assert lock.heartbeat(_env(RUN_B, path)) is True
    outcome, current = lock.take_over(str(path), judged, holder, _content(RUN_A))
    assert outcome == "changed" and current["run_id"] == RUN_B
    assert json.loads(path.read_text())["run_id"] == RUN_B


def test_a_takeover_gives_way_to_a_process_of_the_holder(tmp_path):
    path = tmp_path / ".deploy.lock"
    _held(path, RUN_B)
    holder, judged = lock.read_lock(str(path))
    proc = subprocess.Popen(["sleep", "60"], env=dict(os.environ, **{lock.ENV_RUN: RUN_B}))
    # Before its exec the child still shows its parent's environment.
    while b"sleep" not in pathlib.Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        time.sleep(0.01)
    try:
        outcome, procs = lock.take_over(str(path), judged, holder, _content(RUN_A), exclude=lock.lineage())
    finally:
        proc.kill()
        proc.wait()
    assert outcome == "processes" and [p["pid"] for p in procs] == [proc.pid] and procs[0]["cmd"] == "sleep 60"
    assert json.loads(path.read_text())["run_id"] == RUN_B
    assert lock.take_over(str(path), judged, holder, _content(RUN_A))[0] == "taken"


def test_the_watch_tells_a_new_lock_from_a_heartbeat_even_on_a_reused_inode(tmp_path):
    path = tmp_path / ".deploy.lock"
    _held(path, RUN_B)
    holder, judged = lock.read_lock(str(path))
    calls = []

    def sleep(seconds):
        # While the watch waits: run-b's lock is replaced by run-c's (the inode may be reused).
        calls.append(seconds)
        path.unlink()
        lock.create(str(path), _content(RUN_C))

    seen = lock.watch(str(path), judged, holder, grace=60, sleep=sleep)
    assert seen["sign"] == "replaced" and len(calls) == 1


def test_the_watch_ends_after_the_grace_without_a_sign(tmp_path):
    path = tmp_path / ".deploy.lock"
    _held(path, RUN_B)
    holder, judged = lock.read_lock(str(path))
    now = [0.0]
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        now[0] += seconds

    seen = lock.watch(str(path), judged, holder, grace=1.0, clock=lambda: now[0], sleep=sleep)
    assert seen["sign"] is None and seen["waited_seconds"] == 1.0
    assert abs(sum(polls) - 1.0) < 1e-9 and max(polls) <= lock.POLL_SECONDS


def test_the_lock_only_ever_appears_complete(tmp_path):
    path = tmp_path / ".deploy.lock"
    assert lock.create(str(path), _content(RUN_A)) is True
    assert lock.create(str(path), _content(RUN_B)) is False
    assert json.loads(path.read_text())["run_id"] == RUN_A
    assert path.stat().st_mode & 0o777 == 0o600 and path.stat().st_nlink == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".deploy.lock"]  # no temporary file left
