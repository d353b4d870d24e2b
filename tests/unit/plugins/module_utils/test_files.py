"""Writes as root into a directory another user may write: nothing planted there is followed."""
from __future__ import annotations

import os

import pytest

from ansible_collections.botstack.deploy.plugins.module_utils.files import append_line, write_file_atomic


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "shadow"
    path.write_text("root:secret\n")
    path.chmod(0o600)
    return path


def _untouched(victim):
    return victim.read_text() == "root:secret\n" and victim.stat().st_mode & 0o777 == 0o600


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path, victim):
    shared = tmp_path / "textfile"
    shared.mkdir(mode=0o775)
    target = shared / "botstack_deploy.prom"
    target.symlink_to(victim)
    (shared / ".botstack_deploy.prom.tmp").symlink_to(victim)  # the name the old writer used
    old_umask = os.umask(0o077)
    try:
        write_file_atomic(str(target), "metric 1\n", 0o644)
    finally:
        os.umask(old_umask)
    assert _untouched(victim)
    assert not target.is_symlink() and target.read_text() == "metric 1\n"
    assert target.stat().st_mode & 0o777 == 0o644  # set on the descriptor, whatever the umask
    assert sorted(p.name for p in shared.iterdir()) == [".botstack_deploy.prom.tmp", "botstack_deploy.prom"]


def test_the_owner_is_set_on_the_descriptor(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    target = tmp_path / "state.json"
    write_file_atomic(str(target), b"{}", 0o640, uid=65534, gid=65534)
    info = target.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (65534, 65534, 0o640)


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        write_file_atomic(str(tmp_path / "taken"), "x", 0o644)  # renaming a file onto a directory fails
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_append_line_creates_and_appends_with_mode_and_group(tmp_path):
    log = tmp_path / "deploy.log"
    gid = os.getgid()
    append_line(str(log), "one\n", 0o640, gid=gid)
    log.chmod(0o666)
    append_line(str(log), "two\n", 0o640, gid=gid)
    assert log.read_text() == "one\ntwo\n" and log.stat().st_mode & 0o777 == 0o640


def test_append_line_refuses_a_symlink_a_hard_link_and_a_fifo(tmp_path, victim):
    log = tmp_path / "deploy.log"
    log.symlink_to(victim)
    with pytest.raises(OSError):
        append_line(str(log), "line\n", 0o640)
    log.unlink()
    os.link(victim, log)
    with pytest.raises(OSError, match="hard links"):
        append_line(str(log), "line\n", 0o640)
    log.unlink()
    os.mkfifo(log)
    with pytest.raises(OSError):
        append_line(str(log), "line\n", 0o640)  # never blocks on it either
    assert _untouched(victim)
