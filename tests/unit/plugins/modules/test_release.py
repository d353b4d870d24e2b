"""botstack.deploy.release on a real filesystem, run as Ansible runs it."""
from __future__ import annotations

import json
import os

import pytest


def _make(module, root, rid, **extra):
    result = module("release", {"app_root": str(root), "release_id": rid, **extra})
    assert result["_rc"] == 0, result
    return result


def _activate(module, root, rid, **extra):
    result = module("release", {"app_root": str(root), "release_id": rid, "state": "active", **extra})
    assert result["_rc"] == 0, result
    return result


def _manifest(root, rid):
    return json.loads((root / "releases" / rid / ".release.json").read_text())


def test_present_creates_release_with_manifest_and_is_idempotent(module, tmp_path):
    root = tmp_path / "app"
    first = _make(module, root, "r1", revision="abc123")
    assert first["changed"] is True
    manifest = _manifest(root, "r1")
    assert manifest["status"] == "pending"
    assert manifest["revision"] == "abc123"
    assert manifest["sequence"] == 1
    second = _make(module, root, "r1", revision="abc123")
    assert second["changed"] is False


def test_present_in_check_mode_changes_nothing_and_reports_diff(module, tmp_path):
    root = tmp_path / "app"
    result = module("release", {"app_root": str(root), "release_id": "r1"}, check=True, diff=True)
    assert result["changed"] is True
    assert result["diff"]["after"]["releases"] == ["r1"]
    assert result["release"]["path"] == str(root / "releases" / "r1")
    assert not root.exists()


def test_active_switches_current_atomically_and_records_previous(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    assert _activate(module, root, "r1")["changed"] is True
    result = _activate(module, root, "r2")
    assert result["changed"] is True
    assert result["previous"] == "r1"
    assert result["current"] == "r2"
    assert os.readlink(root / "current") == "releases/r2"
    assert _manifest(root, "r2")["replaced"] == "r1"
    assert _activate(module, root, "r2")["changed"] is False


def test_active_in_check_mode_leaves_current(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _activate(module, root, "r1")
    result = module("release", {"app_root": str(root), "release_id": "r2", "state": "active"}, check=True, diff=True)
    assert result["changed"] is True
    assert result["current"] == "r2"
    assert result["diff"]["before"]["current"] == "r1"
    assert os.readlink(root / "current") == "releases/r1"


def test_active_refuses_a_missing_release(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    result = module("release", {"app_root": str(root), "release_id": "nope", "state": "active"})
    assert result["failed"] is True
    assert "create it first with state=present" in result["msg"]


def test_status_update_with_present(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    result = _make(module, root, "r1", status="healthy")
    assert result["changed"] is True
    assert _manifest(root, "r1")["status"] == "healthy"
    assert _make(module, root, "r1", status="healthy")["changed"] is False


def test_absent_removes_release_but_never_the_active_one(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _activate(module, root, "r2")
    check = module("release", {"app_root": str(root), "release_id": "r1", "state": "absent"}, check=True)
    assert check["changed"] is True and (root / "releases" / "r1").exists()
    gone = module("release", {"app_root": str(root), "release_id": "r1", "state": "absent"})
    assert gone["changed"] is True and gone["removed"] == ["r1"]
    assert not (root / "releases" / "r1").exists()
    again = module("release", {"app_root": str(root), "release_id": "r1", "state": "absent"})
    assert again["changed"] is False
    refused = module("release", {"app_root": str(root), "release_id": "r2", "state": "absent"})
    assert refused["failed"] is True and "active release" in refused["msg"]
    assert (root / "releases" / "r2").exists()


def test_pruned_keeps_newest_active_rollback_target_and_pinned(module, tmp_path):
    root = tmp_path / "app"
    for rid in ["r1", "r2", "r3", "r4", "r5", "r6"]:
        _make(module, root, rid, pinned=(rid == "r1"))
    _make(module, root, "r2", status="healthy")
    _activate(module, root, "r3")  # r4..r6 are newer but never went live
    check = module("release", {"app_root": str(root), "state": "pruned", "keep": 2}, check=True)
    assert check["changed"] is True and (root / "releases" / "r4").exists()
    result = module("release", {"app_root": str(root), "state": "pruned", "keep": 2})
    remaining = sorted(p.name for p in (root / "releases").iterdir())
    # r5, r6 newest; r3 active; r2 rollback target (healthy, older); r1 pinned.
    assert remaining == ["r1", "r2", "r3", "r5", "r6"]
    assert result["removed"] == ["r4"]
    assert module("release", {"app_root": str(root), "state": "pruned", "keep": 2})["changed"] is False


def test_pruned_orders_by_manifest_not_mtime(module, tmp_path):
    root = tmp_path / "app"
    for rid in ["a-old", "b-mid", "c-new"]:
        _make(module, root, rid)
    # Make the oldest release look newest on disk.
    os.utime(root / "releases" / "a-old", (2_000_000_000, 2_000_000_000))
    _activate(module, root, "c-new")
    result = module("release", {"app_root": str(root), "state": "pruned", "keep": 1, "pinned": []})
    assert result["removed"] == ["a-old", "b-mid"]


def test_pruned_clears_leftovers_of_interrupted_runs(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    (root / "releases" / ".tmp-r2-deadbeef").mkdir()
    result = module("release", {"app_root": str(root), "state": "pruned", "keep": 3})
    assert ".tmp-r2-deadbeef" in result["removed"]
    assert not (root / "releases" / ".tmp-r2-deadbeef").exists()


def test_rolled_back_returns_to_previous_healthy_and_marks_failed(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1", status="healthy")
    _make(module, root, "r2")
    _make(module, root, "r3")
    _activate(module, root, "r1")
    _activate(module, root, "r2")
    _activate(module, root, "r3")  # r2 never became healthy
    check = module("release", {"app_root": str(root), "state": "rolled_back"}, check=True)
    assert check["current"] == "r1" and os.readlink(root / "current") == "releases/r3"
    result = module("release", {"app_root": str(root), "state": "rolled_back"})
    assert result["changed"] is True
    assert result["previous"] == "r3" and result["current"] == "r1"
    assert os.readlink(root / "current") == "releases/r1"
    assert _manifest(root, "r3")["status"] == "failed"


def test_rolled_back_to_a_named_release(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _activate(module, root, "r2")
    result = module("release", {"app_root": str(root), "state": "rolled_back", "release_id": "r1", "mark_failed": False})
    assert result["current"] == "r1"
    assert _manifest(root, "r2")["status"] == "pending"


def test_rolled_back_without_a_target_says_how_to_name_one(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _activate(module, root, "r1")
    result = module("release", {"app_root": str(root), "state": "rolled_back"})
    assert result["failed"] is True
    assert "release_id" in result["msg"]
    assert os.readlink(root / "current") == "releases/r1"


def test_current_that_is_a_directory_is_refused(module, tmp_path):
    root = tmp_path / "app"
    (root / "current").mkdir(parents=True)
    result = module("release", {"app_root": str(root), "release_id": "r1"})
    assert result["failed"] is True and "not a symlink" in result["msg"]


@pytest.mark.parametrize(("args", "fragment"), [
    ({"app_root": "relative/path", "release_id": "r1"}, "app_root must be an absolute path"),
    ({"app_root": "/srv/x", "release_id": "a/b"}, "release_id must be"),
    ({"app_root": "/srv/x", "release_id": "..evil"}, "release_id must be"),
    ({"app_root": "/srv/x", "release_id": "a..b"}, "release_id must be"),
    ({"app_root": "/srv/x", "state": "pruned", "keep": 0}, "keep must be at least 1"),
    ({"app_root": "/srv/x", "state": "active"}, "release_id"),
])
def test_bad_input_fails_with_the_option_named_and_changes_nothing(module, tmp_path, args, fragment):
    if args["app_root"].startswith("/srv/x"):
        args = dict(args, app_root=str(tmp_path / "untouched"))
    result = module("release", args)
    assert result["failed"] is True
    assert fragment in result["msg"]
    assert not (tmp_path / "untouched").exists()
