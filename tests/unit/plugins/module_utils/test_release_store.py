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

from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseStore, replace_symlink

REPO = pathlib.Path(__file__).resolve().parents[4]


def assert_consistent(root: pathlib.Path) -> None:
    """current and every slot resolve to a complete release; every release name has its manifest."""
    releases = root / "releases"
    if releases.exists():
        for entry in releases.iterdir():
            if entry.name.startswith("."):
                continue
            manifest = json.loads((entry / ".release.json").read_text())
            assert manifest["id"] == entry.name
    links = [root / "current"] + sorted((root / "slots").glob("*[!n]") if (root / "slots").exists() else [])
    for link in links:
        if os.path.lexists(link) and ".tmp-" not in link.name:
            target = pathlib.Path(os.path.realpath(link))
            assert target.is_dir(), f"{link.name} -> {os.readlink(link)} is dangling"
            assert json.loads((target / ".release.json").read_text())["id"] == target.name


def _switcher(root: str, ids: list[str], rounds: int) -> None:
    store = ReleaseStore(root)
    for i in range(rounds):
        # The atomic primitive under every switch, deliberately without the lock.
        replace_symlink(f"releases/{ids[i % len(ids)]}", store.current_link)


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
    store.activate("r1")
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


# A blue/green deploy's filesystem steps, as the deploy role runs them (each idempotent), killed
# with SIGKILL at the Nth operation; kill_at 0 runs to the end.
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
        store.finish_activation()
        store.remove_leftovers()
        if store.read_manifest("r2") is None:
            store.create("r2", revision="new", status="ready")
        if store.slot_release("green") != "r2":
            store.assign("green", "r2", {"port": 8002})
        if (store.current(), store.current_slot()) != ("r2", "green"):
            store.activate("r2", slot="green")
        if store.read_manifest("r2")["status"] != "healthy":
            store.set_status("r2", "healthy")
        if store.read_manifest("r0") is not None:
            store.remove("r0")
    print("completed", calls[0])
""")


def _seed(root: pathlib.Path) -> None:
    store = ReleaseStore(str(root))
    store.create("r0", status="ready")
    store.create("r1", status="healthy")
    store.assign("blue", "r1", {"port": 8001})
    store.activate("r1", slot="blue")


def _flow(root: pathlib.Path, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(root), str(kill_at), str(REPO)],
                          capture_output=True, text=True, timeout=60, check=False)


def _end_state(root: pathlib.Path) -> dict:
    store = ReleaseStore(str(root))
    r2 = store.read_manifest("r2")
    return {"current": store.current(), "slot": store.current_slot(), "status": r2["status"],
            "activations": [(a["from"], a["slot"], a["kind"]) for a in r2["activations"]],
            "replaced": r2["replaced"], "releases": [m["id"] for m in store.releases()],
            "slots": {k: v["release"] for k, v in store.slots().items()},
            "files": sorted(os.listdir(root)), "leftovers": store.leftovers(),
            "pending": store.pending_activation()}


def test_a_flow_killed_at_any_step_and_repeated_ends_where_a_clean_run_ends(tmp_path):
    clean = tmp_path / "clean"
    _seed(clean)
    assert _flow(clean, 0).returncode == 0
    expected = _end_state(clean)
    assert expected["current"] == "r2" and expected["activations"] == [("r1", "green", "deploy")]
    completed_at = None
    for kill_at in range(1, 300):
        root = tmp_path / f"kill-{kill_at}"
        _seed(root)
        proc = _flow(root, kill_at)
        assert_consistent(root)
        assert os.readlink(root / "current") in ("slots/blue", "slots/green")
        if proc.returncode == 0:
            completed_at = kill_at
            break
        assert proc.returncode == -9, proc.stderr
        repeat = _flow(root, 0)
        assert repeat.returncode == 0, repeat.stderr
        assert _end_state(root) == expected, f"killed at step {kill_at}"
    assert completed_at is not None and completed_at > 20, "the crash loop did not cover the steps"


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a..b", "-lead", "x" * 129, "sp ace"])
def test_release_ids_are_validated(bad):
    from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseError, validate_release_id
    with pytest.raises(ReleaseError):
        validate_release_id(bad)
