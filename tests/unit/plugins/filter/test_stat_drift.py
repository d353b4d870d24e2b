"""stat_drift and lines_differ: one read decides which per-path or per-line calls a run still needs."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from ansible_collections.botstack.deploy.plugins.filter.stat_drift import lines_differ, stat_drift  # noqa: E402

WANTED = [{"path": "/etc/crontab", "mode": "0600"}, {"path": "/etc/cron.d", "mode": "0700"},
          {"path": "/etc/cron.weekly", "mode": "0700"}]


def found(path, mode, owner="root", group="root"):
    return {"path": path, "mode": mode, "pw_name": owner, "gr_name": group}


def test_only_existing_paths_that_differ_are_returned():
    files = [found("/etc/crontab", "0644"), found("/etc/cron.d", "0700"), found("/etc/cron.hourly", "0755")]
    assert stat_drift(WANTED, files) == [WANTED[0]]


def test_owner_and_group_count_as_drift():
    files = [found("/etc/crontab", "0600", owner="adm"), found("/etc/cron.d", "0700", group="crontab")]
    assert stat_drift(WANTED, files) == WANTED[:2]


def test_nothing_differs_nothing_returned():
    assert stat_drift(WANTED, [found("/etc/crontab", "0600"), found("/etc/cron.d", "0700")]) == []


def test_an_entry_without_mode_is_refused():
    with pytest.raises(AnsibleFilterError, match="needs path and mode"):
        stat_drift([{"path": "/etc/crontab"}], [])


UMASK = {"regexp": r"^#?\s*UMASK\s", "line": "UMASK\t027"}
DAYS = {"regexp": r"^#?\s*PASS_MAX_DAYS\s", "line": "PASS_MAX_DAYS\t365"}

CONTENTS = {
    "set already": "# comment\nUMASK\t027\nPASS_MAX_DAYS\t365\n",
    "other values": "UMASK\t022\nPASS_MAX_DAYS\t99999\n",
    "commented out": "#UMASK 027\n# PASS_MAX_DAYS\t365\n",
    "missing": "ENCRYPT_METHOD SHA512\n",
    "earlier match right, last wrong": "UMASK\t027\nUMASK\t022\nPASS_MAX_DAYS\t365\n",
    "earlier match wrong, last right": "UMASK\t022\nUMASK\t027\nPASS_MAX_DAYS\t365\n",
    "spaces, not a tab": "UMASK 027\nPASS_MAX_DAYS\t365\n",
    "last line unterminated": "UMASK\t027\nPASS_MAX_DAYS\t365",
    "crlf": "UMASK\t027\r\nPASS_MAX_DAYS\t365\r\n",
    "a bare key after the right line": "UMASK\t027\nUMASK\nPASS_MAX_DAYS\t365\n",
    "old mac line ends": "UMASK\t027\rPASS_MAX_DAYS\t365\r",
    "empty": "",
}
EXPECTED = {
    "set already": [], "other values": [UMASK, DAYS], "commented out": [UMASK, DAYS], "missing": [UMASK, DAYS],
    "earlier match right, last wrong": [UMASK], "earlier match wrong, last right": [],
    "spaces, not a tab": [UMASK], "last line unterminated": [DAYS], "crlf": [], "empty": [UMASK, DAYS],
    "a bare key after the right line": [UMASK], "old mac line ends": [],
}


@pytest.mark.parametrize("case", sorted(CONTENTS))
def test_lines_differ_by_hand(case):
    assert lines_differ([UMASK, DAYS], CONTENTS[case]) == EXPECTED[case]


def test_lines_differ_agrees_with_lineinfile_itself(tmp_path):
    """ansible.builtin.lineinfile in check mode on each content: changed exactly where the filter says."""
    tasks = []
    for index, case in enumerate(sorted(CONTENTS)):
        path = tmp_path / f"case{index}"
        path.write_bytes(CONTENTS[case].encode())
        for which, entry in (("umask", UMASK), ("days", DAYS)):
            tasks.append({"name": f"{case}|{which}", "ansible.builtin.lineinfile": {
                "path": str(path), "regexp": entry["regexp"], "line": entry["line"]}, "check_mode": True})
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    result = subprocess.run(["ansible-playbook", "-c", "local", "-i", "localhost,", str(playbook)],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    changed = {}
    for task in json.loads(result.stdout)["plays"][0]["tasks"]:
        case, which = task["task"]["name"].split("|")
        changed[(case, which)] = task["hosts"]["localhost"]["changed"]
    for case in CONTENTS:
        predicted = lines_differ([UMASK, DAYS], CONTENTS[case])
        assert changed[(case, "umask")] == (UMASK in predicted), case
        assert changed[(case, "days")] == (DAYS in predicted), case
