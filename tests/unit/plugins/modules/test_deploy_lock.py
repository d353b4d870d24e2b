"""botstack.deploy.deploy_lock on a real filesystem."""
from __future__ import annotations

import datetime
import grp
import json
import os


def _lock(module, path, owner="alice@laptop", **extra):
    return module("deploy_lock", {"path": str(path), "owner": owner, **extra})


def test_take_and_give_back_reporting_no_change(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    taken = _lock(module, path, details={"release": "v2"})
    assert taken["_rc"] == 0 and taken["changed"] is False and taken["holder"] is None
    held = json.loads(path.read_text())
    assert held["owner"] == "alice@laptop" and held["details"] == {"release": "v2"}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    released = _lock(module, path, state="released")
    assert released["changed"] is False and not path.exists()


def test_another_owners_lock_is_reported_with_its_age_and_never_broken_silently(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=42)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps({"owner": "bob@ci", "since": since, "details": {"release": "v9"}}))
    refused = _lock(module, path)
    assert refused["failed"] is True
    assert "held by bob@ci for 42 min" in refused["msg"] and '"release": "v9"' in refused["msg"]
    assert "deploy_lock_break" in refused["msg"]
    assert json.loads(path.read_text())["owner"] == "bob@ci"
    checked = module("deploy_lock", {"path": str(path), "owner": "alice@laptop"}, check=True)
    assert checked["failed"] is True
    broken = _lock(module, path, break_lock=True)
    assert broken["taken_over"] is True and json.loads(path.read_text())["owner"] == "alice@laptop"


def test_the_same_owner_takes_over_an_interrupted_run(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    path.write_text(json.dumps({"owner": "alice@laptop", "since": "2026-01-01T00:00:00Z"}))
    taken = _lock(module, path)
    assert taken["_rc"] == 0 and taken["taken_over"] is True
    assert any("interrupted run retried" in json.dumps(w) for w in taken.get("warnings", []))


def test_releasing_someone_elses_lock_leaves_it(module, tmp_path):
    path = tmp_path / ".deploy.lock"
    path.write_text(json.dumps({"owner": "bob@ci", "since": "2026-01-01T00:00:00Z"}))
    released = _lock(module, path, state="released")
    assert released["_rc"] == 0 and path.exists()


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
    taken = module("deploy_lock", {"path": str(root / ".deploy.lock"), "owner": "alice@laptop", "app_root": str(root),
                                   "slot_units": units}, extra_path=str(bindir))
    assert taken["_rc"] == 0, taken
    # The worker runs since before blue got r1 (an older release's process): it needs a start.
    assert taken["kept_running"] == {"blue": ["api@blue.service"], "green": []}
    refused = _lock(module, tmp_path / ".other.lock", slot_units=units)
    assert refused["failed"] is True and "slot_units needs app_root" in refused["msg"]
