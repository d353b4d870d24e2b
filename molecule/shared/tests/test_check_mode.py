"""Every scenario: after converge, `--check --diff` has nothing to change, and its -vvv
output holds none of the scenario's secrets (BOTSTACK_TEST_SECRETS)."""
from __future__ import annotations

import os
import pathlib

from conftest import assert_no_secret_in, play_recap, run_playbook


def test_check_mode_after_converge_reports_no_changes_and_no_secret():
    playbook = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    result = run_playbook(playbook, "--check", "--diff", "-vvv")
    assert_no_secret_in(result.stdout + result.stderr, "converge.yml --check --diff -vvv")
    recap = play_recap(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert recap, "no PLAY RECAP in the check run:\n" + result.stdout[-2000:]
    changed = {host: counts["changed"] for host, counts in recap.items() if counts["changed"]}
    assert not changed, f"check mode would change {changed}:\n{result.stdout[-6000:]}"
