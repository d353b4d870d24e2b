"""Behaviour of a host converged with botstack.deploy.base."""
from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import assert_role_rejects, container_address, play_recap, run_playbook
from instruments import lynis_in_container, ssh_audit_in_container

testinfra_hosts = ["base-host"]

ADMIN = "opsadmin"
LYNIS_TARGET = 75


def _ssh(address: str, user: str, *args: str, key=None) -> subprocess.CompletedProcess:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"]
    if key:
        cmd += ["-o", "IdentitiesOnly=yes", "-i", str(key)]
    cmd += [*args, f"{user}@{address}", "true"]
    # Never the test run's stdin: ssh leaves it non-blocking when a forward fails, and every ansible-playbook
    # started after would refuse to run.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def sshd(host):
    """Effective sshd settings (`sshd -T`), as a dict."""
    out = host.check_output("sshd -T -C user=%s,host=x,addr=127.0.0.1", ADMIN)
    settings = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key, value)
    return settings


def test_effective_sshd_settings_refuse_passwords_and_root(host, sshd):
    assert sshd["passwordauthentication"] == "no"
    assert sshd["kbdinteractiveauthentication"] == "no"
    assert sshd["permitrootlogin"] == "no"
    assert sshd["authenticationmethods"] == "publickey"
    assert sshd["allowgroups"] == "sshusers"
    assert sshd["x11forwarding"] == "no"
    # The admin (in sudo) may tunnel to loopback services only; anyone else may not forward at all.
    assert sshd["allowtcpforwarding"] == "local" and sshd["permitopen"] == "localhost:* 127.0.0.1:* [::1]:*"
    others = host.check_output("sshd -T -C user=nobody,host=x,addr=127.0.0.1")
    assert "allowtcpforwarding no" in others.splitlines() and "permitopen any" in others.splitlines(), others
    assert sshd["maxauthtries"] == "3"
    assert "ecdsa" not in sshd["hostkeyalgorithms"]
    assert all("etm" in mac for mac in sshd["macs"].split(","))


def test_cloud_init_style_drop_in_cannot_reenable_passwords(host):
    drop_in = "/etc/ssh/sshd_config.d/50-cloud-init.conf"
    host.run("printf 'PasswordAuthentication yes\\n' > %s", drop_in)
    try:
        out = host.check_output("sshd -T -C user=%s,host=x,addr=127.0.0.1", ADMIN)
        assert "passwordauthentication no" in out
    finally:
        host.run("rm -f %s", drop_in)


def test_only_publickey_is_offered_to_outside_clients(host):
    address = container_address(host.backend.host)
    result = _ssh(address, "root", "-o", "PreferredAuthentications=none")
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr, result.stderr


def test_admin_key_login_and_sudo_work(host, ephemeral_dir):
    address = container_address(host.backend.host)
    result = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "IdentitiesOnly=yes", "-i", str(ephemeral_dir / "admin_ed25519"),
         f"{ADMIN}@{address}", "sudo -n id -u"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_ssh_audit_passes_hardened_debian_policy(host, ephemeral_dir, reports_dir):
    audit = ssh_audit_in_container(host.backend.host, 22, ephemeral_dir)
    (reports_dir / "ssh-audit.txt").write_text(audit["audit_output"] + "\n" + audit["policy_output"])
    assert audit["fail"] == 0, audit["audit_output"]
    assert audit["policy_passed"], audit["policy_output"]


def test_firewall_denies_by_default_and_keeps_ssh_open(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming)" in status
    assert "22/tcp                     LIMIT IN    Anywhere" in status
    assert "5432/tcp                   ALLOW IN    10.10.0.0/16" in status
    assert "80/tcp" not in status


def _reaches_ssh(source: str | None, target: str) -> bool:
    """A TCP connection to target:22 from the probe container (source) or from the controller (None)."""
    probe = f"import socket; socket.create_connection(({target!r}, 22), timeout=3).close()"
    cmd = (["docker", "exec", source, "python3", "-c", probe] if source else ["python3", "-c", probe])
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0


def _firewall(ephemeral_dir, **role_vars):
    playbook = ephemeral_dir / "firewall.yml"
    playbook.write_text(json.dumps([{"name": "Firewall", "hosts": "hardened", "become": True, "tasks": [{
        "name": "Firewall", "ansible.builtin.include_role": {"name": "botstack.deploy.base", "tasks_from": "firewall"},
        "vars": role_vars}]}]))
    result = run_playbook(playbook)
    assert result.returncode == 0, result.stdout[-3000:]
    return result


def test_narrowing_the_ssh_allow_list_closes_ssh_to_everyone_else(host, ephemeral_dir):
    """The firewall converges to the declared rules: the open SSH rule goes when an allow-list is set."""
    target, probe = container_address("base-host"), container_address("base-probe")
    assert _reaches_ssh("base-probe", target) and _reaches_ssh(None, target)
    host.run("ufw allow 9999/tcp")  # a rule added by hand
    try:
        _firewall(ephemeral_dir, base_ssh_allow_cidrs=[f"{probe}/32"],
                  base_firewall_rules=[{"port": "5432", "from": ["10.10.0.0/16"], "comment": "postgresql from app hosts"}])
        status = host.check_output("ufw status")
        assert f"22/tcp                     LIMIT       {probe}" in status, status
        assert "Anywhere" not in status.split("22/tcp", 1)[1].splitlines()[0], status
        assert "9999" not in status, status
        assert _reaches_ssh("base-probe", target), "the listed source must still connect"
        assert not _reaches_ssh(None, target), "an unlisted source must be refused"
        host.run("ufw allow 9998/tcp")
        kept = _firewall(ephemeral_dir, base_firewall_prune=False, base_ssh_allow_cidrs=[f"{probe}/32"],
                         base_firewall_rules=[{"port": "5432", "from": ["10.10.0.0/16"], "comment": "postgresql from app hosts"}])
        assert "9998" in host.check_output("ufw status")
        assert "kept because base_firewall_prune is false" in kept.stdout and "allow 9998/tcp from any" in kept.stdout
    finally:
        _firewall(ephemeral_dir, base_firewall_rules=[{"port": "5432", "from": ["10.10.0.0/16"],
                                                        "comment": "postgresql from app hosts"}])
    status = host.check_output("ufw status")
    assert "22/tcp                     LIMIT       Anywhere" in status and probe not in status and "9998" not in status
    assert _reaches_ssh(None, target)


def test_fail2ban_sshd_jail_is_active(host):
    assert host.service("fail2ban").is_running
    jail = host.check_output("fail2ban-client status sshd")
    # Reads sshd failures from the journal (Debian 12+ has no auth.log).
    assert "Journal matches:" in jail and "_COMM=sshd" in jail


def test_unattended_upgrades_take_security_updates_only(host):
    dump = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    origins = [line for line in dump.splitlines() if "Origins-Pattern::" in line]
    assert origins and all("Security" in line for line in origins), dump
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    dry_run = host.run("unattended-upgrade --dry-run")
    assert dry_run.rc == 0, dry_run.stderr


def test_security_suite_is_an_apt_source(host):
    assert host.run("grep -rqs -- '-security' /etc/apt/sources.list /etc/apt/sources.list.d").rc == 0


def test_persistent_journal_with_caps(host):
    assert host.file("/var/log/journal").is_directory
    conf = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in conf
    assert "SystemMaxUse=1G" in conf


def test_core_dumps_are_disabled(host):
    assert host.file("/etc/security/limits.d/10-botstack-no-core-dumps.conf").contains("hard core 0")
    assert host.check_output("systemctl show --property DefaultLimitCORE") == "DefaultLimitCORE=0"


def test_login_defaults_and_banner(host):
    assert re.search(r"^UMASK\s+027$", host.file("/etc/login.defs").content_string, re.M)
    assert host.file("/etc/issue.net").contains("Authorized access only")


def test_drifted_login_defaults_and_permissions_are_shown_then_put_back(host, ephemeral_dir):
    """Both are decided from one read each: a drifted line or mode is still found, --check --diff shows it and
    changes nothing, the run puts it back, and the run after changes nothing."""
    # cron.daily and cron.d exist without cron installed (crontab does not).
    host.check_output("sed -i 's/^UMASK.*/UMASK\t022/' /etc/login.defs && chmod 0755 /etc/cron.daily && chgrp adm /etc/cron.d")
    playbook = ephemeral_dir / "login_and_permissions.yml"
    playbook.write_text(json.dumps([{"name": "Login defaults and permissions", "hosts": "hardened", "become": True,
                                     "tasks": [{"name": part, "ansible.builtin.include_role": {
                                         "name": "botstack.deploy.base", "tasks_from": part}}
                                               for part in ("login_defs", "permissions")]}]))
    check = run_playbook(playbook, "--check", "--diff")
    assert check.returncode == 0, check.stdout[-3000:]
    assert play_recap(check.stdout)["base-host"]["changed"] == 2, check.stdout[-3000:]
    assert "-UMASK\t022" in check.stdout and "+UMASK\t027" in check.stdout, check.stdout[-3000:]
    assert host.file("/etc/cron.daily").mode == 0o755 and host.file("/etc/cron.d").group == "adm"
    applied = run_playbook(playbook)
    assert applied.returncode == 0 and play_recap(applied.stdout)["base-host"]["changed"] == 2, applied.stdout[-3000:]
    assert re.search(r"^UMASK\s+027$", host.file("/etc/login.defs").content_string, re.M)
    assert host.file("/etc/cron.daily").mode == 0o700 and host.file("/etc/cron.d").group == "root"
    again = run_playbook(playbook)
    assert again.returncode == 0 and play_recap(again.stdout)["base-host"]["changed"] == 0, again.stdout[-3000:]


def test_lynis_hardening_index(host, reports_dir):
    lynis = lynis_in_container(host.backend.host)
    (reports_dir / "lynis.json").write_text(json.dumps(
        {k: lynis[k] for k in ("index", "suggestions", "warnings")}, indent=2))
    assert lynis["index"] >= LYNIS_TARGET, (
        f"Lynis index {lynis['index']} < {LYNIS_TARGET}; suggestions: {lynis['suggestions']}")


KEY = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHlCt1pbZ0QOkt3oQcp0zGO8NnIzNTq5XtFxK9fVn0vG alice@laptop"]


def test_the_admin_tunnels_to_loopback_services_and_nowhere_else(host, ephemeral_dir):
    """The documented tunnel to Prometheus or Alertmanager (ssh -L): a direct-tcpip channel to the host's own
    loopback opens (here to its sshd, which answers with its banner); one to another address, and a remote
    forward opening a port on the host, are refused. Between two checks that open no SSH connection: ufw
    limits SSH to 6 new connections per address in 30 s."""
    address = container_address(host.backend.host)
    key = ephemeral_dir / "admin_ed25519"
    local = _ssh_forward(address, key, "-W", "127.0.0.1:22")
    assert local.stdout.startswith("SSH-2.0-OpenSSH"), local.stderr
    elsewhere = _ssh_forward(address, key, "-W", f"{address}:22")
    assert not elsewhere.stdout.startswith("SSH-2.0"), elsewhere.stdout
    assert "administratively prohibited" in elsewhere.stderr, elsewhere.stderr
    remote = _ssh(address, ADMIN, "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:18022:127.0.0.1:22", key=key)
    assert remote.returncode != 0 and "remote port forwarding failed" in remote.stderr, remote.stderr


def _ssh_forward(address: str, key, *args: str) -> subprocess.CompletedProcess:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-i", str(key), *args, f"{ADMIN}@{address}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("role_vars", "fragment"), [
    ({"base_ssh_allow_cidrs": ["10.0.0.0/33"]}, 'base_ssh_allow_cidrs entry "10.0.0.0/33" is neither a network'),
    ({"base_ssh_allow_cidrs": ["office"]}, 'base_ssh_allow_cidrs entry "office" is neither a network'),
    ({"base_ssh_port": 70000}, "base_ssh_port must be between 1 and 65535, got 70000"),
    ({"base_admin_users": []}, "Lockout guard: base_ssh_password_authentication is false"),
    ({"base_admin_users": [{"name": "alice", "authorized_keys": []}]}, 'base_admin_users entry "alice" has no authorized_keys'),
    ({"base_firewall_rules": [{"port": "5432", "from": ["10.1.2.300/24"]}]}, "base_firewall_rules entry for port 5432"),
    ({"base_unattended_upgrades_reboot_time": "25:00"}, "base_unattended_upgrades_reboot_time must be HH:MM"),
])
def test_bad_input_is_rejected_before_anything_changes(role_vars, fragment, ephemeral_dir):
    assert_role_rejects("base", {"base_admin_users": [{"name": "alice", "authorized_keys": KEY}], **role_vars},
                        fragment, ephemeral_dir)


def test_lockout_guard_protects_the_connecting_ssh_user(host, ephemeral_dir):
    """Over real SSH as opsadmin: a run that would drop opsadmin is refused."""
    ssh_vars = {
        "ansible_connection": "ansible.builtin.ssh",
        "ansible_host": container_address(host.backend.host),
        "ansible_user": ADMIN,
        "ansible_ssh_private_key_file": str(ephemeral_dir / "admin_ed25519"),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }
    assert_role_rejects("base", {"base_admin_users": [{"name": "alice", "authorized_keys": KEY}]},
                        'Lockout guard: this run connects over SSH as "opsadmin"', ephemeral_dir, play_vars=ssh_vars)
    assert_role_rejects("base", {"base_admin_users": [{"name": ADMIN, "authorized_keys": KEY}]},
                        f'the authorized_keys given for "{ADMIN}" share no key', ephemeral_dir, play_vars=ssh_vars)
    own_key = [(ephemeral_dir / "admin_ed25519.pub").read_text().strip()]
    assert_role_rejects("base", {"base_admin_users": [{"name": ADMIN, "authorized_keys": own_key}],
                                 "base_ssh_allow_cidrs": ["203.0.113.0/24"]},
                        "outside base_ssh_allow_cidrs", ephemeral_dir, play_vars=ssh_vars)
