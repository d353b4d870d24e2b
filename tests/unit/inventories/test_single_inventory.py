"""inventories/single (one VPS runs everything) is consistent as shipped: with its secrets filled in, the
preflight site.yml starts with passes (topology, names, the app's environment), the release flow's own checks
pass (the Telegram webhook settings included), and every playbook parses against it."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
SINGLE = ROOT / "inventories" / "single"
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"


def filled_vault() -> dict:
    """The example's secrets with values of the kind playbooks/secrets.yml and the providers give."""
    names = yaml.safe_load((SINGLE / "group_vars" / "all" / "vault.yml.example").read_text())
    values = {name: "Gen3ratedValue0123456789abcdefghijklmnopqrstu" for name in names}
    values.update(vault_telegram_bot_token="123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0",
                  vault_alert_webhook_url="https://hooks.slack.com/services/T0/B0/x0",
                  vault_backup_age_identity="AGE-SECRET-KEY-1Z5XYLKWS2LWWL3AGH546FSNZFL3UZ47PK4C8UC74ESGQZVFQYFES30WP34")
    return values


def play(tmp_path, *args: str) -> subprocess.CompletedProcess:
    secrets = tmp_path / "vault.json"
    secrets.write_text(json.dumps(filled_vault()))
    return subprocess.run([str(PLAYBOOK), "-i", str(SINGLE), *args, "-e", f"@{secrets}"], capture_output=True,
                          text=True, check=False, cwd=ROOT, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))


def test_the_preflight_passes_once_the_secrets_are_filled_in(tmp_path):
    result = play(tmp_path, str(ROOT / "playbooks" / "preflight.yml"))
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_release_flow_accepts_its_settings(tmp_path):
    checks = tmp_path / "validate.yml"
    checks.write_text(json.dumps([{
        "name": "The app and deploy roles' checks against inventories/single", "hosts": "app",
        "gather_facts": False, "connection": "local",
        "tasks": [
            {"ansible.builtin.include_role": {"name": "botstack.deploy.app", "tasks_from": "layout"}},
            {"ansible.builtin.include_role": {"name": "botstack.deploy.deploy", "tasks_from": "validate"}},
        ]}]))
    result = play(tmp_path, str(checks), "-e", f"ansible_python_interpreter={sys.executable}")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Check the Telegram webhook settings" in result.stdout


def test_every_playbook_parses_against_it(tmp_path):
    # One run parses them all (ansible-playbook takes several playbooks) and names the first that fails.
    playbooks = [ROOT / "site.yml", *sorted((ROOT / "playbooks").glob("*.yml"))]
    result = play(tmp_path, *map(str, playbooks), "--syntax-check")
    assert result.returncode == 0, f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
    assert result.stdout.count("playbook: ") == len(playbooks), result.stdout
