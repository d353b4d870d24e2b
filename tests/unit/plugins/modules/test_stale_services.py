"""botstack.deploy.stale_services: a service that started before its file was last written is named, in one call."""
from __future__ import annotations

import os
import stat

import pytest

# The start times systemctl would print, per unit (empty: never started).
FAKE = '''#!/bin/sh
echo "$*" >> "{calls}"
shift 4
for unit in "$@"; do
  case "$unit" in
    old) stamp="Sat 2026-12-05 10:00:00.500000 UTC"; state=active; file=enabled ;;
    new) stamp="Sun 2026-12-06 10:00:00.000000 UTC"; state=activating; file=enabled ;;
    disabled) stamp="Sun 2026-12-06 10:00:00.000000 UTC"; state=active; file=disabled ;;
    odd) stamp="yesterday-ish"; state=active; file=enabled ;;
    *) stamp=""; state=inactive; file="" ;;
  esac
  printf 'Id=%s.service\\nActiveEnterTimestamp=%s\\nActiveState=%s\\nUnitFileState=%s\\n\\n' "$unit" "$stamp" "$state" "$file"
done
'''
STARTED_OLD = 1796464800.5   # 2026-12-05 10:00:00.5 UTC
STARTED_NEW = 1796551200.0   # 2026-12-06 10:00:00 UTC


@pytest.fixture
def systemctl(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.log"
    (bindir / "systemctl").write_text(FAKE.format(calls=calls))
    (bindir / "systemctl").chmod(stat.S_IRWXU)
    return str(bindir), calls


def file_written(path, at):
    path.write_text("x")
    os.utime(path, (at, at))
    return str(path)


def test_only_services_started_before_a_file_was_written_are_stale(module, systemctl, tmp_path):
    bindir, calls = systemctl
    written = file_written(tmp_path / "written-after-old", STARTED_OLD + 0.2)
    earlier = file_written(tmp_path / "written-before", STARTED_OLD - 60)
    result = module("stale_services", {"services": {
        "old": [earlier, written, str(tmp_path / "missing")],
        "new": [written],
        "never": [written],
        "disabled": [],
    }}, extra_path=bindir)
    assert result["_rc"] == 0 and result["changed"] is False, result
    assert result["stale"] == ["old"]
    assert result["running"] == ["old", "new"]
    assert result["evidence"] == [{"service": "old", "file": written, "written": "2026-12-05T10:00:00.700000Z",
                                   "started": "2026-12-05T10:00:00.500000Z"}]
    # One systemctl call for every service.
    assert calls.read_text().splitlines() == [
        "show --timestamp=us+utc --property=Id,ActiveEnterTimestamp,ActiveState,UnitFileState -- old new never disabled"]


def test_nothing_stale_in_check_mode_either(module, systemctl, tmp_path):
    bindir, _ = systemctl
    earlier = file_written(tmp_path / "conf", STARTED_OLD - 1)
    result = module("stale_services", {"services": {"old": [earlier]}}, extra_path=bindir, check=True)
    assert result["_rc"] == 0 and result["stale"] == [] and result["evidence"] == []


def test_an_unreadable_start_time_fails_naming_the_service(module, systemctl, tmp_path):
    bindir, _ = systemctl
    result = module("stale_services", {"services": {"odd": [file_written(tmp_path / "c", STARTED_NEW)]}},
                    extra_path=bindir)
    assert result["failed"] is True and "cannot read when odd started" in result["msg"]


def test_relative_paths_are_refused(module, systemctl):
    bindir, _ = systemctl
    result = module("stale_services", {"services": {"old": ["etc/default/x"]}}, extra_path=bindir)
    assert result["failed"] is True and "must be a list of absolute paths" in result["msg"]
