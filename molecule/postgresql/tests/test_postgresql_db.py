"""The database host: rendered settings, authentication rules, stored secrets."""
from __future__ import annotations

import pytest
from conftest import assert_role_rejects

testinfra_hosts = ["pg-db"]


@pytest.fixture(scope="module")
def version(host):
    """Major version the role picked for this distribution."""
    return host.check_output("ls /etc/postgresql | grep -E '^[0-9]+$' | sort -n | tail -n1")


def sql(host, query, db="postgres"):
    return host.check_output("sudo -u postgres psql -XAtq -d %s -c %s", db, query)


def test_service_is_running(host, version):
    assert host.service(f"postgresql@{version}-main").is_running
    assert host.socket("tcp://127.0.0.1:5432").is_listening


@pytest.mark.parametrize(("setting", "expected"), [
    ("max_connections", "83"),  # 2 processes x (20 + 10) + 20 headroom + 3 reserved
    ("password_encryption", "scram-sha-256"),
    ("ssl", "on"),
    ("log_min_duration_statement", "500ms"),
    ("log_connections", "on"),
])
def test_show_returns_the_rendered_settings(host, setting, expected):
    assert sql(host, f"SHOW {setting}") == expected


def test_memory_settings_follow_host_ram(host):
    mem_mb = int(host.check_output("awk '/MemTotal/ {print $2}' /proc/meminfo")) // 1024
    shared_buffers_mb = int(sql(host, "SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'"))
    assert abs(shared_buffers_mb - mem_mb // 4) <= 8


def test_no_trust_line_and_no_remote_superuser(host):
    rules = sql(host, "SELECT type, user_name, auth_method FROM pg_hba_file_rules")
    assert "trust" not in rules
    assert "hostssl|{bot}|scram-sha-256" in rules
    assert "host|{postgres}|reject" in rules
    assert sql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"


def test_password_is_stored_as_scram(host):
    assert sql(host, "SELECT rolpassword ~ '^SCRAM-SHA-256\\$4096:' FROM pg_authid WHERE rolname = 'bot'") == "t"


def test_a_rotated_password_gets_a_new_random_salt_and_the_old_one_stops_working(host, ephemeral_dir):
    """The verifier is kept while the password matches (idempotence), renewed with a new salt when it changes."""
    import json
    from conftest import run_playbook

    before = sql(host, "SELECT rolpassword FROM pg_authid WHERE rolname = 'bot'")
    playbook = ephemeral_dir / "rotate.yml"

    def converge(password):
        playbook.write_text(json.dumps([{"name": "Rotate", "hosts": "db", "become": True, "tasks": [{
            "name": "Roles", "ansible.builtin.include_role": {"name": "botstack.deploy.postgresql", "tasks_from": "objects"},
            "vars": {"postgresql_users": [{"name": "bot", "password": password}]}}]}]))
        result = run_playbook(playbook)
        assert result.returncode == 0, result.stdout[-3000:]
        return sql(host, "SELECT rolpassword FROM pg_authid WHERE rolname = 'bot'")

    try:
        rotated = converge("rotated-db-secret-for-tests")
        assert rotated != before and rotated.split("$")[1] != before.split("$")[1], "the salt must change"
        login = "PGPASSWORD=%s psql -XAtq 'host=localhost user=bot dbname=botstack sslmode=require' -c 'select 1'"
        assert host.run(login % "rotated-db-secret-for-tests").rc == 0
        assert host.run(login % "bot-db-secret-for-tests").rc != 0
    finally:
        restored = converge("bot-db-secret-for-tests")
    assert converge("bot-db-secret-for-tests") == restored, "an unchanged password keeps its verifier"


def test_database_extension_and_grants(host):
    assert sql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'botstack'") == "bot"
    assert sql(host, "SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'", db="botstack") == "pgcrypto"
    assert sql(host, "SELECT has_schema_privilege('reporting', 'public', 'USAGE')", db="botstack") == "t"


def test_key_and_config_permissions(host, version):
    key = host.file("/etc/postgresql/ssl/server.key")
    assert key.user == "postgres" and key.mode == 0o600
    assert host.file(f"/etc/postgresql/{version}/main/pg_hba.conf").mode == 0o640


@pytest.mark.parametrize(("role_vars", "fragment"), [
    ({"postgresql_databases": [{"name": "Bad Name!"}]}, 'postgresql_databases entry "Bad Name!" is not a valid name'),
    ({"postgresql_users": [{"name": "app"}]}, 'postgresql_users entry "app" needs a valid name'),
    ({"postgresql_hba_entries": [{"user": "bot", "address": "10.0.0.0/40"}]}, "address a network in CIDR notation"),
    ({"postgresql_hba_entries": [{"user": "bot", "address": "10.0.0.0/8", "method": "trust"}]}, "method"),
    ({"postgresql_max_connections": 50}, "postgresql_max_connections is 50, below the app's pools"),
])
def test_bad_input_is_rejected_before_anything_changes(role_vars, fragment, ephemeral_dir):
    assert_role_rejects("postgresql", role_vars, fragment, ephemeral_dir, hosts="db")
