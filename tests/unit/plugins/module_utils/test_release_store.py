"""Crash and concurrency properties of module_utils.release, on a real filesystem."""
from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseStore

REPO = pathlib.Path(__file__).resolve().parents[4]


def assert_consistent(root: pathlib.Path) -> None:
    """current resolves to a complete release; every release name has its manifest."""
    releases = root / "releases"
    if releases.exists():
        for entry in releases.iterdir():
            if entry.name.startswith("."):
                continue
            manifest = json.loads((entry / ".release.json").read_text())
            assert manifest["id"] == entry.name
    link = root / "current"
    if os.path.lexists(link):
        target = root / os.readlink(link)
        assert target.is_dir(), f"current -> {os.readlink(link)} is dangling"
        assert json.loads((target / ".release.json").read_text())["id"] == target.name


def _switcher(root: str, ids: list[str], rounds: int) -> None:
    store = ReleaseStore(root)
    for i in range(rounds):
        store.switch(ids[i % len(ids)])  # deliberately without the lock


def _reader(root: str, rounds: int, errors) -> None:
    for _ in range(rounds):
        try:
            assert_consistent(pathlib.Path(root))
        except Exception as exc:  # noqa: BLE001 - report any inconsistency
            errors.append(repr(exc))


def test_concurrent_switches_never_leave_current_dangling(tmp_path):
    store = ReleaseStore(str(tmp_path))
    for rid in ("r1", "r2", "r3"):
        store.create(rid)
    store.switch("r1")
    errors = multiprocessing.Manager().list()
    procs = [
        multiprocessing.Process(target=_switcher, args=(str(tmp_path), ["r1", "r2"], 400)),
        multiprocessing.Process(target=_switcher, args=(str(tmp_path), ["r3", "r2"], 400)),
        multiprocessing.Process(target=_reader, args=(str(tmp_path), 600, errors)),
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert list(errors) == []
    assert_consistent(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("current.tmp-")]


def test_the_lock_serialises_writers(tmp_path):
    """Two processes creating releases under the lock get distinct sequence numbers."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseStore
        store = ReleaseStore({str(tmp_path)!r})
        for i in range(25):
            with store.locked():
                store.create("p%s-%02d" % (sys.argv[1], i))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, tag]) for tag in ("a", "b")]
    assert [p.wait(60) for p in procs] == [0, 0]
    sequences = [m["sequence"] for m in ReleaseStore(str(tmp_path)).releases()]
    assert sorted(sequences) == list(range(1, 51))


# A deploy's filesystem steps, killed with SIGKILL at the Nth operation.
CRASH_SCRIPT = textwrap.dedent("""
    import json, os, shutil, signal, sys
    sys.path.insert(0, sys.argv[3])
    from ansible_collections.botstack.deploy.plugins.module_utils import release as rel

    kill_at, calls = int(sys.argv[2]), [0]

    def hook(name, fn):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapper

    for name in ("mkdir", "rename", "replace", "symlink", "fsync", "unlink", "rmdir"):
        setattr(os, name, hook(name, getattr(os, name)))
    rel.json.dump = hook("json.dump", json.dump)

    store = rel.ReleaseStore(sys.argv[1])
    with store.locked():
        store.create("r2", revision="new")
        store.switch("r2")
        store.update("r2", status="healthy")
        store.remove("r0")
    print("completed", calls[0])
""")


def _seed(root: pathlib.Path) -> None:
    store = ReleaseStore(str(root))
    store.create("r0")
    store.create("r1", status="healthy")
    store.switch("r1")


def test_a_process_killed_at_any_step_leaves_a_consistent_tree(tmp_path):
    completed_at = None
    for kill_at in range(1, 200):
        root = tmp_path / f"kill-{kill_at}"
        _seed(root)
        proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(root), str(kill_at), str(REPO)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert_consistent(root)
        current = os.readlink(root / "current")
        assert current in ("releases/r1", "releases/r2")
        if proc.returncode == 0:
            completed_at = kill_at
            assert current == "releases/r2"
            break
        assert proc.returncode == -9, proc.stderr
        # The next run cleans what the killed one left behind.
        store = ReleaseStore(str(root))
        store.remove_leftovers()
        assert store.leftovers() == []
        assert_consistent(root)
    assert completed_at is not None and completed_at > 10, "the crash loop did not cover the steps"


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a..b", "-lead", "x" * 129, "sp ace"])
def test_release_ids_are_validated(bad):
    from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseError, validate_release_id
    with pytest.raises(ReleaseError):
        validate_release_id(bad)
