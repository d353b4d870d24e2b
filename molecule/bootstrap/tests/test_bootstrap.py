"""A new server's first day: root (with the provider's password) creates the admin and proves its key login;
site.yml's layers then refuse to run as root, run as the admin, and turn root and password logins off."""
from __future__ import annotations

import pathlib
import subprocess

from conftest import assert_no_secret_in, molecule_path, play_recap, run_playbook

ROOT = pathlib.Path(__file__).resolve().parents[3]
ADDRESS, HOST, ADMIN = "10.213.9.10", "bootstrap-host", "deploy"
EPHEMERAL = molecule_path("MOLECULE_EPHEMERAL_DIRECTORY")
KEY = EPHEMERAL / "deploy_ed25519"
BOOTSTRAP = ROOT / "playbooks" / "bootstrap.yml"


def ssh(user: str, command: str, *options: str) -> subprocess.CompletedProcess:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", f"UserKnownHostsFile={EPHEMERAL}/known_hosts",
           "-o", "StrictHostKeyChecking=accept-new", *options, f"{user}@{ADDRESS}", command]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_the_admin_logs_in_with_its_key_and_gets_root_with_sudo():
    result = ssh(ADMIN, "sudo -n id -u; sudo -n getent shadow deploy | cut -d: -f2", "-o", "IdentitiesOnly=yes",
                 "-i", str(KEY))
    assert result.returncode == 0, result.stderr
    uid, password = result.stdout.split()
    assert uid == "0" and password.startswith("!"), "root through sudo; no password to guess"


def test_a_check_run_after_bootstrap_changes_nothing_and_prints_no_secret():
    result = run_playbook(BOOTSTRAP, "--check", "--diff", "-vvv")
    assert result.returncode == 0, output(result)[-3000:]
    assert play_recap(result.stdout)[HOST]["changed"] == 0, result.stdout[-3000:]
    assert_no_secret_in(output(result), "bootstrap.yml --check --diff -vvv")


def test_without_an_admin_with_a_key_it_stops_before_anything_changes():
    result = run_playbook(BOOTSTRAP, "-e", '{"base_admin_users": []}')
    assert result.returncode != 0
    assert "base_admin_users must list an admin with authorized_keys" in output(result), output(result)[-2000:]
    assert play_recap(result.stdout)[HOST]["changed"] == 0


def test_a_key_that_does_not_log_in_stops_the_handover(tmp_path):
    other = tmp_path / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    result = run_playbook(BOOTSTRAP, "-e", f"bootstrap_private_key_file={other}")
    assert result.returncode != 0
    text = output(result)
    assert f"{ADMIN}@{ADDRESS} could not log in with a key" in text and "Do not run site.yml yet" in text, text[-2000:]
    assert_no_secret_in(text, "bootstrap.yml with a wrong key")


def test_the_handover_site_refuses_root_runs_as_the_admin_and_closes_root_and_passwords():
    # The base role's users and SSH parts: what the handover changes (the whole role is the base scenario's).
    base = ROOT / "playbooks" / "base.yml"
    handover = ("--tags", "base_users,base_ssh")
    as_root = run_playbook(base, *handover)
    assert as_root.returncode != 0
    assert 'Lockout guard: this run connects over SSH as "root"' in output(as_root), output(as_root)[-2000:]
    assert play_recap(as_root.stdout)[HOST]["changed"] == 0
    as_admin = run_playbook(base, *handover, "-e", f"ansible_user={ADMIN}", "-e", f"ansible_ssh_private_key_file={KEY}")
    assert as_admin.returncode == 0, output(as_admin)[-3000:]
    assert_no_secret_in(output(as_admin), "base.yml as the admin")
    # Root's password no longer opens anything: the server offers public keys only, and root is refused.
    offered = ssh("root", "true", "-o", "PreferredAuthentications=none")
    assert offered.returncode != 0 and "Permission denied (publickey)" in offered.stderr, offered.stderr
    assert ssh(ADMIN, "sudo -n true", "-o", "IdentitiesOnly=yes", "-i", str(KEY)).returncode == 0
