"""botstack.deploy.release on a real filesystem, run as Ansible runs it."""
from __future__ import annotations

import json
import os

import pytest

from ansible_collections.botstack.deploy.plugins.module_utils.release import ReleaseStore


def _run(module, root, **args):
    result = module("release", {"app_root": str(root), **args})
    assert result["_rc"] == 0, result
    return result


def _make(module, root, rid, status="ready", **extra):
    """A complete release (ready unless told otherwise)."""
    return _run(module, root, release_id=rid, status=status, **extra)


def _activate(module, root, rid, **extra):
    return _run(module, root, release_id=rid, state="active", **extra)


def _manifest(root, rid):
    return json.loads((root / "releases" / rid / ".release.json").read_text())


def _failed(module, root, **args):
    result = module("release", {"app_root": str(root), **args})
    assert result.get("failed") is True, result
    return result["msg"]


# --- present ---------------------------------------------------------------

def test_present_creates_a_pending_release_with_manifest_and_is_idempotent(module, tmp_path):
    root = tmp_path / "app"
    first = _run(module, root, release_id="r1", revision="abc123")
    assert first["changed"] is True
    manifest = _manifest(root, "r1")
    assert (manifest["status"], manifest["revision"], manifest["sequence"]) == ("pending", "abc123", 1)
    assert _run(module, root, release_id="r1", revision="abc123")["changed"] is False


def test_present_in_check_mode_changes_nothing_and_reports_diff(module, tmp_path):
    root = tmp_path / "app"
    result = module("release", {"app_root": str(root), "release_id": "r1"}, check=True, diff=True)
    assert result["changed"] is True
    assert result["diff"]["after"]["releases"] == {"r1": "pending"}
    assert result["release"]["path"] == str(root / "releases" / "r1")
    assert not root.exists()


def test_status_changes_show_in_the_diff_and_carry_a_reason(module, tmp_path):
    root = tmp_path / "app"
    _run(module, root, release_id="r1")
    result = module("release", {"app_root": str(root), "release_id": "r1", "status": "failed",
                                "reason": "health gate: status 500"}, diff=True)
    assert result["diff"]["before"]["releases"] == {"r1": "pending"}
    assert result["diff"]["after"]["releases"] == {"r1": "failed"}
    assert _manifest(root, "r1")["status_reason"] == "health gate: status 500"
    again = module("release", {"app_root": str(root), "release_id": "r1", "status": "failed",
                               "reason": "health gate: status 500"})
    assert again["changed"] is False


def test_ready_again_never_demotes_a_healthy_release(module, tmp_path):
    root = tmp_path / "app"
    _run(module, root, release_id="r1")
    _run(module, root, release_id="r1", status="ready")
    _run(module, root, release_id="r1", status="healthy")
    again = _run(module, root, release_id="r1", status="ready")
    assert again["changed"] is False and _manifest(root, "r1")["status"] == "healthy"
    # A failed release asked to be ready again is a real change.
    _run(module, root, release_id="r2")
    _run(module, root, release_id="r2", status="failed", reason="gate")
    assert _run(module, root, release_id="r2", status="ready")["changed"] is True


def test_a_release_id_names_one_revision(module, tmp_path):
    root = tmp_path / "app"
    _run(module, root, release_id="r1", revision="aaa")
    msg = _failed(module, root, release_id="r1", revision="bbb")
    assert "exists with revision aaa, not bbb" in msg
    assert _manifest(root, "r1")["revision"] == "aaa"


def test_pinned_is_a_flag_of_present_only(module, tmp_path):
    root = tmp_path / "app"
    assert _run(module, root, release_id="r1", pinned=True)["changed"] is True
    assert _manifest(root, "r1")["pinned"] is True
    assert _run(module, root, release_id="r1", pinned=False)["changed"] is True
    assert "pinned cannot be used with state=pruned" in _failed(module, root, state="pruned", pinned=True)


# --- active ----------------------------------------------------------------

def test_active_switches_current_atomically_and_records_the_lineage(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    assert _activate(module, root, "r1")["changed"] is True
    result = _activate(module, root, "r2")
    assert (result["changed"], result["previous"], result["current"]) == (True, "r1", "r2")
    assert os.readlink(root / "current") == "releases/r2"
    manifest = _manifest(root, "r2")
    assert manifest["replaced"] == "r1" and manifest["activated"]
    assert [a["kind"] for a in manifest["activations"]] == ["deploy"]
    assert _activate(module, root, "r2")["changed"] is False


def test_active_refuses_a_release_that_is_only_its_manifest(module, tmp_path):
    root = tmp_path / "app"
    _run(module, root, release_id="r1")  # pending: its code was never put in place
    assert "is pending (not complete)" in _failed(module, root, release_id="r1", state="active")
    assert not os.path.lexists(root / "current")


def test_active_refuses_a_failed_release_unless_forced(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1", status="failed", reason="migration 0003 failed")
    msg = _failed(module, root, release_id="r1", state="active")
    assert "marked failed (migration 0003 failed)" in msg and "force=true" in msg
    assert _activate(module, root, "r1", force=True)["current"] == "r1"


def test_active_in_check_mode_leaves_current(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _activate(module, root, "r1")
    result = module("release", {"app_root": str(root), "release_id": "r2", "state": "active"}, check=True, diff=True)
    assert (result["changed"], result["current"]) == (True, "r2")
    assert result["diff"]["before"]["current"] == "r1"
    assert os.readlink(root / "current") == "releases/r1"


def test_active_refuses_a_missing_release(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    assert "create it first with state=present" in _failed(module, root, release_id="nope", state="active")


def test_a_killed_switch_is_finished_by_the_next_run(module, tmp_path):
    """Killed between the switch of current and the manifest update: the re-run records it."""
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _activate(module, root, "r1")
    store = ReleaseStore(str(root))
    # What activate() does, stopped after the rename of current.
    (root / ".activation.json").write_text(json.dumps(
        {"release": "r2", "slot": None, "from": "r1", "kind": "deploy", "at": "2026-11-23T10:00:00.000000Z"}))
    os.symlink("releases/r2", root / "current.tmp-dead")
    os.replace(root / "current.tmp-dead", root / "current")
    assert store.current() == "r2" and _manifest(root, "r2")["replaced"] is None
    result = _activate(module, root, "r2")
    assert result["changed"] is True and "finish the activation" in result["actions"][0]
    manifest = _manifest(root, "r2")
    assert manifest["replaced"] == "r1" and len(manifest["activations"]) == 1
    assert not (root / ".activation.json").exists()
    assert _activate(module, root, "r2")["changed"] is False


def test_a_killed_run_before_the_switch_leaves_nothing_behind(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _activate(module, root, "r1")
    (root / ".activation.json").write_text(json.dumps(
        {"release": "r2", "slot": None, "from": "r1", "kind": "deploy", "at": "2026-11-23T10:00:00.000000Z"}))
    (root / "current.tmp-0badcafe").symlink_to("releases/r2")
    (root / "releases" / "r1" / ".release.json.tmp-0badcafe").write_text("{")
    info = module("release_info", {"app_root": str(root)})
    assert info["pending_activation"]["release"] == "r2"
    assert set(info["leftovers"]) == {"current.tmp-0badcafe", "releases/r1/.release.json.tmp-0badcafe"}
    result = _make(module, root, "r3")
    assert result["changed"] is True
    assert os.readlink(root / "current") == "releases/r1"
    assert _manifest(root, "r2")["activated"] is None
    assert sorted(os.listdir(root)) == [".releases.lock", "current", "releases"]
    assert sorted(os.listdir(root / "releases" / "r1")) == [".release.json"]


# --- slots -----------------------------------------------------------------

def test_releases_and_slots_stay_readable_under_a_hardened_umask(module, tmp_path):
    """Ansible's sudo session may carry login.defs' UMASK 027 (pam_umask): the app's user still reads releases."""
    root = tmp_path / "app"
    previous = os.umask(0o027)
    try:
        _make(module, root, "r1")
        _run(module, root, release_id="r1", state="assigned", slot="blue", slot_data={"port": 8001})
    finally:
        os.umask(previous)
    for path in (root / "releases", root / "releases" / "r1", root / "slots"):
        assert oct(path.stat().st_mode & 0o777) == "0o755", path
    assert oct((root / "releases" / "r1" / ".release.json").stat().st_mode & 0o777) == "0o644"


def test_slots_record_what_each_colour_runs_and_current_follows_the_live_one(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _run(module, root, release_id="r1", state="assigned", slot="blue", slot_data={"port": 8001})
    _run(module, root, release_id="r1", state="active", slot="blue", status="healthy")
    assigned = _run(module, root, release_id="r2", state="assigned", slot="green", slot_data={"port": 8002})
    assert assigned["slots"] == {"blue": "r1", "green": "r2"}
    switched = _run(module, root, release_id="r2", state="active", slot="green")
    assert (switched["previous_slot"], switched["current_slot"], switched["current"]) == ("blue", "green", "r2")
    assert os.readlink(root / "current") == "slots/green"
    assert os.readlink(root / "slots" / "green") == "../releases/r2"
    info = module("release_info", {"app_root": str(root)})
    assert info["current_slot"] == "green"
    assert info["slots"]["blue"]["release"] == "r1" and info["slots"]["blue"]["data"] == {"port": 8001}
    assert _manifest(root, "r2")["activations"][-1]["slot"] == "green"
    same = _run(module, root, release_id="r2", state="assigned", slot="green", slot_data={"port": 8002})
    assert same["changed"] is False
    assert _run(module, root, release_id="r2", state="assigned", slot="green",
                slot_data={"port": 8002, "config": "x"})["changed"] is True


def test_the_live_slot_is_never_re_pointed(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _run(module, root, release_id="r1", state="assigned", slot="blue")
    _activate(module, root, "r1", slot="blue")
    msg = _failed(module, root, release_id="r2", state="assigned", slot="blue")
    assert "slot blue is live" in msg
    assert os.readlink(root / "slots" / "blue") == "../releases/r1"


def test_activating_a_slot_that_runs_another_release_fails(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _run(module, root, release_id="r1", state="assigned", slot="blue")
    assert "slot blue runs r1, not r2" in _failed(module, root, release_id="r2", state="active", slot="blue")


def test_releases_a_slot_runs_are_never_pruned_or_removed(module, tmp_path):
    root = tmp_path / "app"
    for rid in ["r1", "r2", "r3", "r4"]:
        _make(module, root, rid)
    _run(module, root, release_id="r1", state="assigned", slot="blue")
    _run(module, root, release_id="r4", state="assigned", slot="green")
    _activate(module, root, "r4", slot="green")
    assert "runs on slot blue" in _failed(module, root, release_id="r1", state="absent")
    result = _run(module, root, state="pruned", keep=1)
    assert result["removed"] == ["r2", "r3"]
    assert sorted(os.listdir(root / "releases")) == ["r1", "r4"]


# --- rollback ----------------------------------------------------------------

def _three_deploys(module, root):
    for rid in ["r1", "r2", "r3"]:
        _make(module, root, rid)
        _activate(module, root, rid, status="healthy")


def test_rolled_back_returns_to_the_previous_healthy_release_and_keeps_the_lineage(module, tmp_path):
    root = tmp_path / "app"
    _three_deploys(module, root)
    check = module("release", {"app_root": str(root), "state": "rolled_back"}, check=True)
    assert check["current"] == "r2" and os.readlink(root / "current") == "releases/r3"
    result = _run(module, root, state="rolled_back")
    assert (result["changed"], result["previous"], result["current"]) == (True, "r3", "r2")
    assert _manifest(root, "r3")["status"] == "failed"
    manifest = _manifest(root, "r2")
    assert manifest["replaced"] == "r1", "a rollback must not rewrite what r2 replaced"
    assert [a["kind"] for a in manifest["activations"]] == ["deploy", "rollback"]


def test_a_repeated_rollback_changes_nothing(module, tmp_path):
    """The retry an operator or AWX makes after a timeout must not go one release further."""
    root = tmp_path / "app"
    _three_deploys(module, root)
    _run(module, root, state="rolled_back")
    again = _run(module, root, state="rolled_back")
    assert again["changed"] is False and again["current"] == "r2"
    assert _manifest(root, "r2")["status"] == "healthy"
    assert module("release_info", {"app_root": str(root)})["rollback_target"] == "r2"


def test_a_rollback_killed_before_marking_the_origin_is_finished_by_the_retry(module, tmp_path):
    root = tmp_path / "app"
    _three_deploys(module, root)
    ReleaseStore(str(root)).activate("r2", kind="rollback")  # switched; r3 not yet marked failed
    result = _run(module, root, state="rolled_back")
    assert result["actions"] == ["set r3 status failed"]
    assert _manifest(root, "r3")["status"] == "failed" and result["current"] == "r2"


def test_rolled_back_through_a_slot_and_to_a_named_release(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1", status="healthy")
    _make(module, root, "r2")
    _run(module, root, release_id="r1", state="assigned", slot="blue")
    _run(module, root, release_id="r2", state="assigned", slot="green")
    _activate(module, root, "r2", slot="green")
    result = _run(module, root, state="rolled_back", release_id="r1", slot="blue", mark_failed=False)
    assert (result["current"], result["current_slot"]) == ("r1", "blue")
    assert os.readlink(root / "current") == "slots/blue"
    assert _manifest(root, "r2")["status"] == "ready"


def test_rolled_back_without_a_target_says_how_to_name_one(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _activate(module, root, "r1")
    assert "release_id" in _failed(module, root, state="rolled_back")
    assert os.readlink(root / "current") == "releases/r1"


# --- absent and pruned -----------------------------------------------------------

def test_absent_removes_a_release_but_never_the_active_one(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    _make(module, root, "r2")
    _activate(module, root, "r2")
    check = module("release", {"app_root": str(root), "release_id": "r1", "state": "absent"}, check=True)
    assert check["changed"] is True and (root / "releases" / "r1").exists()
    gone = _run(module, root, release_id="r1", state="absent")
    assert gone["changed"] is True and gone["removed"] == ["r1"]
    assert _run(module, root, release_id="r1", state="absent")["changed"] is False
    assert "active release" in _failed(module, root, release_id="r2", state="absent")


def test_pruned_keeps_newest_active_rollback_target_pinned_and_protected(module, tmp_path):
    root = tmp_path / "app"
    for rid in ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]:
        _make(module, root, rid, pinned=(rid == "r1"))
    _make(module, root, "r2", status="healthy")
    _activate(module, root, "r3")  # r4..r7 are newer but never went live
    check = module("release", {"app_root": str(root), "state": "pruned", "keep": 2, "protect": ["r4"]}, check=True)
    assert check["changed"] is True and (root / "releases" / "r5").exists()
    result = _run(module, root, state="pruned", keep=2, protect=["r4"])
    # r6, r7 newest; r3 active; r2 rollback target; r1 pinned; r4 protected.
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["r1", "r2", "r3", "r4", "r6", "r7"]
    assert result["removed"] == ["r5"]
    assert _run(module, root, state="pruned", keep=2, protect=["r4"])["changed"] is False


def test_pruned_orders_by_manifest_not_mtime(module, tmp_path):
    root = tmp_path / "app"
    for rid in ["a-old", "b-mid", "c-new"]:
        _make(module, root, rid)
    os.utime(root / "releases" / "a-old", (2_000_000_000, 2_000_000_000))
    _activate(module, root, "c-new")
    assert _run(module, root, state="pruned", keep=1)["removed"] == ["a-old", "b-mid"]


def test_pruned_clears_leftovers_of_interrupted_runs(module, tmp_path):
    root = tmp_path / "app"
    _make(module, root, "r1")
    (root / "releases" / ".tmp-r2-deadbeef").mkdir()
    result = _run(module, root, state="pruned", keep=3)
    assert "releases/.tmp-r2-deadbeef" in result["removed"]
    assert not (root / "releases" / ".tmp-r2-deadbeef").exists()


# --- the root itself --------------------------------------------------------------

def test_states_that_need_releases_never_create_a_missing_root(module, tmp_path):
    root = tmp_path / "app"
    assert "does not exist" in _failed(module, root, release_id="r1", state="active")
    assert _run(module, root, release_id="r1", state="absent")["changed"] is False
    assert _run(module, root, state="pruned")["changed"] is False
    assert not root.exists()


def test_a_root_that_is_a_file_is_named(module, tmp_path):
    root = tmp_path / "app"
    root.write_text("not a directory")
    assert "exists and is not a directory" in _failed(module, root, release_id="r1")


def test_current_that_is_a_directory_is_refused(module, tmp_path):
    root = tmp_path / "app"
    (root / "current").mkdir(parents=True)
    assert "not a symlink" in _failed(module, root, release_id="r1")


@pytest.mark.parametrize(("args", "fragment"), [
    ({"app_root": "relative/path", "release_id": "r1"}, "app_root must be an absolute path"),
    ({"release_id": "a/b"}, "release_id must be"),
    ({"release_id": "..evil"}, "release_id must be"),
    ({"release_id": "a..b"}, "release_id must be"),
    ({"state": "pruned", "keep": 0}, "keep must be at least 1"),
    ({"state": "active"}, "release_id"),
    ({"state": "pruned", "status": "healthy"}, "status cannot be used with state=pruned"),
    ({"state": "absent", "release_id": "r1", "status": "failed"}, "status cannot be used with state=absent"),
    ({"state": "active", "release_id": "r1", "revision": "abc"}, "revision cannot be used with state=active"),
    ({"state": "present", "release_id": "r1", "keep": 3}, "keep cannot be used with state=present"),
    ({"state": "present", "release_id": "r1", "reason": "x"}, "reason describes a status change"),
    ({"state": "assigned", "release_id": "r1", "slot": "Blue!"}, "slot must be"),
    ({"state": "assigned", "release_id": "r1"}, "slot"),
])
def test_bad_input_fails_with_the_option_named_and_changes_nothing(module, tmp_path, args, fragment):
    args = dict({"app_root": str(tmp_path / "untouched")}, **args)
    result = module("release", args)
    assert result["failed"] is True
    assert fragment in result["msg"]
    assert not (tmp_path / "untouched").exists()


def test_shared_directories_are_linked_into_the_release(module, tmp_path):
    root = tmp_path / "app"
    (root / "shared" / "logs").mkdir(parents=True)
    created = _run(module, root, release_id="r1", shared=["logs", "uploads"])
    assert "link r1/logs -> ../../shared/logs" in created["actions"]
    assert os.readlink(root / "releases" / "r1" / "logs") == "../../shared/logs"
    assert (root / "releases" / "r1" / "logs").resolve() == (root / "shared" / "logs").resolve()
    assert _run(module, root, release_id="r1", shared=["logs", "uploads"], status="ready")["actions"] == [
        "set r1 status ready"]
    (root / "releases" / "r1" / "media").mkdir()
    assert "ships its own media" in _failed(module, root, release_id="r1", shared=["media"])
    assert "shared entries are directory names" in _failed(module, root, release_id="r1", shared=["../etc"])


def test_fingerprints_record_what_files_a_release_ships_and_follow_their_content(module, tmp_path):
    root = tmp_path / "app"
    prints = {"migrations": ["alembic.ini", "migrations"]}
    for rid in ("r1", "r2", "r3"):
        _run(module, root, release_id=rid)
        release = root / "releases" / rid
        (release / "migrations" / "versions").mkdir(parents=True)
        (release / "migrations" / "versions" / "0001_users.py").write_text("revision = '0001'\n")
        (release / "alembic.ini").write_text("[alembic]\n")
        (release / "app.py").write_text("print(%r)\n" % rid)  # outside the fingerprinted paths
    # Bytecode is not what the release ships.
    (root / "releases" / "r2" / "migrations" / "versions" / "__pycache__").mkdir()
    (root / "releases" / "r2" / "migrations" / "versions" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / "releases" / "r3" / "migrations" / "versions" / "0002_orders.py").write_text("revision = '0002'\n")

    first = _make(module, root, "r1", fingerprints=prints)
    assert first["changed"] is True
    assert any(a.startswith("record r1 fingerprints migrations sha256:") for a in first["actions"])
    _make(module, root, "r2", fingerprints=prints)
    _make(module, root, "r3", fingerprints=prints)
    found = {rid: _manifest(root, rid)["fingerprints"]["migrations"] for rid in ("r1", "r2", "r3")}
    assert found["r1"] == found["r2"] != found["r3"]
    # Recorded once: asking again changes nothing, in check mode too.
    assert _make(module, root, "r1", fingerprints=prints)["changed"] is False
    again = module("release", {"app_root": str(root), "release_id": "r1", "status": "ready", "fingerprints": prints},
                   check=True)
    assert again["changed"] is False
    # A path that went missing counts.
    (root / "releases" / "r2" / "alembic.ini").unlink()
    assert _make(module, root, "r2", fingerprints=prints)["changed"] is True
    assert _manifest(root, "r2")["fingerprints"]["migrations"] != found["r1"]


@pytest.mark.parametrize("fingerprints, fragment", [
    ({"migrations": []}, "must be a non-empty list"),
    ({"migrations": ["/etc"]}, "must be relative to the release"),
    ({"migrations": ["../shared"]}, "must be relative to the release"),
    ({"Bad Name": ["x"]}, "fingerprints keys name"),
])
def test_fingerprints_refuse_paths_outside_the_release(module, tmp_path, fingerprints, fragment):
    root = tmp_path / "app"
    _run(module, root, release_id="r1")
    assert fragment in _failed(module, root, release_id="r1", fingerprints=fingerprints)
    assert "fingerprints" not in _manifest(root, "r1")
    assert "does not exist yet" in _failed(module, root, release_id="r9", fingerprints={"migrations": ["m"]})
    assert not (root / "releases" / "r9").exists()
