"""Behaviour of Redis converged by botstack.deploy.redis."""
from __future__ import annotations

import pytest
from conftest import assert_role_rejects

BOT = "--user bot --pass bot-secret-for-tests --no-auth-warning"
OPS = "--user ops --pass ops-secret-for-tests --no-auth-warning"


def cli(host, auth, *command):
    return host.run("redis-cli %s %s" % (auth, " ".join(command)))


def test_commands_without_auth_are_refused(host):
    out = host.run("redis-cli set k v").stdout
    assert "NOAUTH" in out or "NOPERM" in out


def test_app_user_can_set_and_get_its_keys(host):
    assert cli(host, BOT, "set", "bot:greeting", "hello").stdout.strip() == "OK"
    assert cli(host, BOT, "get", "bot:greeting").stdout.strip() == "hello"
    assert "NOPERM" in cli(host, BOT, "get", "other:key").stdout


@pytest.mark.parametrize("command", ["flushall", "flushdb", "config get maxmemory", "keys '*'", "shutdown"])
def test_dangerous_commands_are_refused_for_the_app_user(host, command):
    assert "NOPERM" in cli(host, BOT, command).stdout


@pytest.mark.parametrize("command", ["flushall", "flushdb", "config set maxmemory 1", "keys x", "debug sleep 0",
                                     "shutdown", "monitor", "acl setuser bot on"])
def test_acl_denies_dangerous_commands_to_the_app_user(host, command):
    verdict = cli(host, OPS, "acl dryrun bot", command).stdout
    assert "no permissions" in verdict, verdict


def test_wrong_password_is_refused(host):
    result = host.run("redis-cli --user bot --pass nope --no-auth-warning ping")
    assert "WRONGPASS" in result.stdout + result.stderr
    assert "PONG" not in result.stdout


def test_nothing_listens_on_all_interfaces(host):
    listening = host.check_output("ss -Htlnp")
    assert ":6379" in listening
    assert "0.0.0.0:6379" not in listening and "*:6379" not in listening and "[::]:6379" not in listening


def test_password_is_not_stored_in_clear(host):
    acl = host.file("/etc/redis/users.acl")
    assert acl.mode == 0o640 and acl.user == "redis"
    assert not acl.contains("bot-secret-for-tests")
    assert acl.contains("user default off")


def test_info_shows_rendered_memory_settings(host):
    info = cli(host, OPS, "info", "memory").stdout
    assert "maxmemory_policy:volatile-lru" in info
    mem_total = int(host.check_output("awk '/MemTotal/ {print $2}' /proc/meminfo")) * 1024
    maxmemory = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("maxmemory:")))
    assert abs(maxmemory - mem_total * 0.10) < mem_total * 0.01


def test_data_survives_a_restart(host):
    for i in range(50):
        cli(host, BOT, "set", f"bot:persist:{i}", str(i))
    host.run("systemctl restart redis-server")
    host.run("for i in $(seq 1 30); do redis-cli --user ops --pass ops-secret-for-tests --no-auth-warning ping"
             " | grep -q PONG && break; sleep 0.5; done")
    assert cli(host, BOT, "get", "bot:persist:49").stdout.strip() == "49"
    assert host.file("/var/lib/redis/appendonlydir").is_directory
    assert host.file("/var/lib/redis/dump.rdb").exists
    persistence = cli(host, OPS, "info", "persistence").stdout
    assert "aof_enabled:1" in persistence


@pytest.mark.parametrize(("role_vars", "fragment"), [
    ({"redis_maxmemory_policy": "lru-please"}, "redis_maxmemory_policy"),
    ({"redis_maxmemory": "lots"}, 'redis_maxmemory must be a share of RAM ("25%") or a size'),
    ({"redis_users": [{"name": "bot", "password": "x", "rules": "+@all -flush all!"}]}, "ACL rule tokens Redis would reject: all!"),
    ({"redis_users": [{"name": "bot", "password": ""}]}, "non-empty password"),
    ({"redis_users": [{"name": "bot"}]}, "password"),
])
def test_bad_input_is_rejected_before_anything_changes(role_vars, fragment, ephemeral_dir):
    assert_role_rejects("redis", role_vars, fragment, ephemeral_dir)


def test_queued_jobs_survive_memory_pressure(host):
    """Past maxmemory, the default policy evicts TTL'd cache keys and never a queue entry."""
    before = cli(host, OPS, "config", "get", "maxmemory").stdout.split()[-1]
    assert cli(host, OPS, "config", "set", "maxmemory", "4mb").stdout.strip() == "OK"
    try:
        payload = "q" * 512
        for n in range(400):  # the queue: a stream without TTL, as Taskiq's broker keeps it
            # '*' quoted: unquoted, the shell globs it into file names; redis-cli exits 0 on ERR replies.
            added = cli(host, OPS, "xadd", "bot:queue", "'*'", "job", f"{n}-{payload}")
            assert added.rc == 0 and "ERR" not in added.stdout, added.stdout
        script = ("for i in $(seq 1 1200); do echo SET bot:cache:$i $(head -c 8192 /dev/zero | tr '\\0' c) EX 3600; done"
                  " | redis-cli %s > /dev/null" % OPS)
        host.run(script)
        info = cli(host, OPS, "info", "stats").stdout
        evicted = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("evicted_keys:")))
        assert evicted > 0, "the cache never went past maxmemory; the test proved nothing"
        assert cli(host, OPS, "xlen", "bot:queue").stdout.strip() == "400"
    finally:
        cli(host, OPS, "del", "bot:queue")
        host.run("redis-cli %s --scan --pattern 'bot:cache:*' | xargs -r redis-cli %s del > /dev/null" % (OPS, OPS))
        cli(host, OPS, "config", "set", "maxmemory", before)
