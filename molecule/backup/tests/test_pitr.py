"""Point-in-time recovery: pgBackRest archives every WAL segment to the S3 server over HTTPS.

Runs after test_monitoring.py (file order): Prometheus on backup-s3 scrapes the archiving
metrics and Alertmanager posts to the receiver there.
"""
from __future__ import annotations

import json
import time

import pytest
import testinfra

from conftest import molecule_path, slack_alerts, slack_notified, wait_for

testinfra_hosts = ["backup-db"]

STANZA = "main"
SCRATCH = "/var/lib/postgresql/pitr-scratch"
SCRATCH_PORT = 5499


@pytest.fixture(scope="module")
def monitor():
    return testinfra.get_host("ansible://backup-s3", ansible_inventory=str(molecule_path("MOLECULE_INVENTORY_FILE")))


def psql(host, sql: str, database: str = "botstack", port: int = 5432, socket: str = "/var/run/postgresql") -> str:
    return host.check_output("runuser -u postgres -- psql -XAtq -h %s -p %s -d %s -c %s", socket, str(port), database, sql)


def info(host) -> dict:
    return json.loads(host.check_output("runuser -u postgres -- pgbackrest --stanza=%s --output=json info", STANZA))[0]


def archiver(host) -> dict:
    row = psql(host, "SELECT archived_count, failed_count, coalesce(last_archived_wal, ''), "
                     "coalesce(last_failed_wal, '') FROM pg_stat_archiver", database="postgres")
    archived, failed, last_archived, last_failed = row.split("|")
    return {"archived": int(archived), "failed": int(failed), "last_archived": last_archived, "last_failed": last_failed}


def hot_standby_settings(host) -> str:
    """Recovery refuses settings lower than the primary's: the scratch cluster takes the live ones."""
    names = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
             "max_locks_per_transaction")
    values = psql(host, "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings WHERE name IN (%s)"
                  % ", ".join(f"'{name}'" for name in names), database="postgres")
    return " ".join(f"-c {pair}" for pair in values.split())


def switch_wal(host) -> str:
    """Close the current segment (after a write) and return its name."""
    return psql(host, "SELECT pg_walfile_name(pg_switch_wal())", database="postgres")



def test_wal_is_archived_encrypted_with_a_full_backup_to_start_from(host):
    settings = psql(host, "SELECT current_setting('archive_mode') || ' ' || current_setting('archive_timeout')",
                    database="postgres")
    assert settings == "on 1min", settings
    state = info(host)
    assert state["status"]["code"] == 0, state["status"]
    assert state["cipher"] == "aes-256-cbc"
    assert [b["type"] for b in state["backup"]][:1] == ["full"], state["backup"]
    psql(host, "DROP TABLE IF EXISTS pitr_probe")
    psql(host, "CREATE TABLE pitr_probe (id int PRIMARY KEY, written_at timestamptz DEFAULT now())")
    psql(host, "INSERT INTO pitr_probe (id) VALUES (0)")
    segment = switch_wal(host)
    wait_for(f"{segment} archived", lambda: archiver(host)["last_archived"] >= segment)
    # The repository on S3 holds no plaintext: the configuration and backup.info are encrypted.
    assert host.file("/etc/pgbackrest/pgbackrest.conf").mode == 0o600
    host.check_output("runuser -u postgres -- pgbackrest --stanza=%s --log-level-console=error check", STANZA)


def test_a_point_in_time_restore_holds_exactly_the_rows_written_before_it(host):
    """Rows 1 and 2 a second apart; a restore to the time between them has row 1 and not row 2."""
    psql(host, "INSERT INTO pitr_probe (id) VALUES (1)")
    time.sleep(1.5)
    target = psql(host, "SELECT now()")
    time.sleep(1.5)
    psql(host, "INSERT INTO pitr_probe (id) VALUES (2)")
    segment = switch_wal(host)
    wait_for(f"{segment} archived", lambda: archiver(host)["last_archived"] >= segment)

    version = psql(host, "SHOW server_version_num", database="postgres")[:2]
    binaries = f"/usr/lib/postgresql/{version}/bin"
    host.run("runuser -u postgres -- %s/pg_ctl -D %s stop -m immediate", binaries, SCRATCH)
    host.check_output("rm -rf %s && install -d -o postgres -g postgres -m 0700 %s", SCRATCH, SCRATCH)
    try:
        host.check_output(
            "runuser -u postgres -- pgbackrest --stanza=%s --pg1-path=%s --type=time --target=%s "
            "--target-action=promote --log-level-console=warn restore", STANZA, SCRATCH, target)
        # Debian keeps the configuration in /etc: the scratch cluster gets a minimal one of its own.
        host.check_output("printf '%%s\\n' 'local all all peer' > %s/pg_hba.conf && touch %s/postgresql.conf "
                          "&& chown postgres: %s/pg_hba.conf %s/postgresql.conf", SCRATCH, SCRATCH, SCRATCH, SCRATCH)
        host.check_output(
            "runuser -u postgres -- %s/pg_ctl -D %s -w -t 120 -l %s/startup.log "
            "-o %s start", binaries, SCRATCH, SCRATCH,
            f"-p {SCRATCH_PORT} -k /tmp -c archive_mode=off -c listen_addresses='' {hot_standby_settings(host)}")
        wait_for("the scratch cluster promoted", lambda: psql(
            host, "SELECT NOT pg_is_in_recovery()", port=SCRATCH_PORT, socket="/tmp") == "t", timeout=120)
        rows = psql(host, "SELECT string_agg(id::text, ',' ORDER BY id) FROM pitr_probe", port=SCRATCH_PORT, socket="/tmp")
        assert rows == "0,1", f"restored to {target}: rows {rows}"
    finally:
        host.run("runuser -u postgres -- %s/pg_ctl -D %s stop -m fast", binaries, SCRATCH)
        host.run("rm -rf %s", SCRATCH)


def test_archiving_fails_loudly_while_s3_is_down_and_catches_up(host, monitor):
    seen = len(slack_alerts(monitor))
    before = archiver(host)
    monitor.check_output("systemctl stop seaweedfs")
    try:
        psql(host, "INSERT INTO pitr_probe (id) VALUES (3)")
        held = switch_wal(host)
        wait_for("archiving failures counted", lambda: archiver(host)["failed"] > before["failed"], timeout=180)
        # PostgreSQL keeps serving and keeps the segment until it is archived.
        assert psql(host, "SELECT count(*) FROM pitr_probe") == "4"
        assert host.file(f"/var/lib/postgresql/{psql(host, 'SHOW server_version_num', database='postgres')[:2]}"
                         f"/main/pg_wal/{held}").exists
        message = wait_for("WalArchivingFailing at the receiver",
                           lambda: slack_notified(monitor, "WalArchivingFailing", "FIRING", seen), timeout=180)
        assert "backup-db" in json.dumps(message)
    finally:
        monitor.check_output("systemctl start seaweedfs")
        monitor.run("timeout 60 sh -c 'until (echo > /dev/tcp/127.0.0.1/8443) 2>/dev/null; do sleep 1; done'")
    wait_for(f"{held} archived once S3 is back", lambda: archiver(host)["last_archived"] >= held, timeout=180)
    wait_for("WalArchivingFailing resolved at the receiver",
             lambda: slack_notified(monitor, "WalArchivingFailing", "RESOLVED", seen), timeout=180)
