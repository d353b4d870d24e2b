"""botstack.deploy.release_info reads what release wrote, and changes nothing."""
from __future__ import annotations


def test_info_lists_releases_current_and_rollback_target(module, tmp_path):
    root = tmp_path / "app"
    for rid, status in [("r1", "healthy"), ("r2", "failed"), ("r3", "ready")]:
        assert module("release", {"app_root": str(root), "release_id": rid, "status": status})["_rc"] == 0
    module("release", {"app_root": str(root), "release_id": "r3", "state": "active"})
    (root / "releases" / ".trash-r0-cafe").mkdir()
    before = sorted(p.name for p in (root / "releases").iterdir())
    info = module("release_info", {"app_root": str(root)})
    assert info["changed"] is False
    assert info["current"] == "r3"
    assert info["rollback_target"] == "r1"
    assert [r["id"] for r in info["releases"]] == ["r1", "r2", "r3"]
    assert [r["active"] for r in info["releases"]] == [False, False, True]
    assert info["leftovers"] == ["releases/.trash-r0-cafe"]
    assert info["current_slot"] is None and info["slots"] == {} and info["pending_activation"] is None
    assert sorted(p.name for p in (root / "releases").iterdir()) == before


def test_info_on_an_empty_root(module, tmp_path):
    info = module("release_info", {"app_root": str(tmp_path / "nothing")})
    assert info["current"] is None and info["releases"] == [] and info["rollback_target"] is None
    assert not (tmp_path / "nothing").exists()


def test_info_rejects_a_relative_root(module):
    info = module("release_info", {"app_root": "srv/app"})
    assert info["failed"] is True and "absolute path" in info["msg"]
