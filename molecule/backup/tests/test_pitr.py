"""Point-in-time recovery: pgBackRest archives every WAL segment to the S3 server over HTTPS.

Runs after test_monitoring.py (file order): Prometheus on backup-s3 scrapes the archiving
metrics and Alertmanager posts to the receiver there.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time

import pytest
import testinfra

from conftest import (assert_no_secret_in, molecule_path, play_recap, run_playbook, slack_alerts, slack_notified,
                      wait_for)

testinfra_hosts = ["backup-db"]

STANZA = "main"
SCRATCH = "/var/lib/postgresql/pitr-scratch"
SCRATCH_PORT = 5499
PLAYBOOKS = pathlib.Path(__file__).resolve().parents[3] / "playbooks"


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


def archived(host, segment: str) -> bool:
    """PostgreSQL marked the segment archived, or already removed it (which it does only once archived).
    pg_stat_archiver's last_archived_wal cannot tell: a backup's .backup file, archived later, replaces it."""
    return psql(host, "SELECT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name = '%s.done') "
                      "OR NOT EXISTS (SELECT 1 FROM pg_ls_waldir() WHERE name = '%s')" % (segment, segment),
                database="postgres") == "t"


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



def backup_ended(host) -> bool:
    """No full backup runs (a oneshot unit is "activating" while it runs)."""
    return host.run("systemctl is-active botstack-pitr-full.service").stdout.strip() in ("inactive", "failed")


def moment_between_two_archived_rows(host, before: int, after: int) -> str:
    """Write row `before`, note the time, write row `after` 3 s apart, wait until both are in S3."""
    psql(host, f"INSERT INTO pitr_probe (id) VALUES ({before})")
    time.sleep(1.5)
    moment = psql(host, "SELECT now()")
    time.sleep(1.5)
    psql(host, f"INSERT INTO pitr_probe (id) VALUES ({after})")
    segment = switch_wal(host)
    wait_for(f"{segment} archived", lambda: archived(host, segment))
    return moment


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
    wait_for(f"{segment} archived", lambda: archived(host, segment))
    # The repository on S3 holds no plaintext: the configuration and backup.info are encrypted.
    assert host.file("/etc/pgbackrest/pgbackrest.conf").mode == 0o600
    host.check_output("runuser -u postgres -- pgbackrest --stanza=%s --log-level-console=error check", STANZA)


def test_a_point_in_time_restore_holds_exactly_the_rows_written_before_it(host):
    """Rows 1 and 2 a second apart; a restore to the time between them has row 1 and not row 2."""
    target = moment_between_two_archived_rows(host, 1, 2)

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


def test_a_pitr_drill_that_would_fill_the_disk_is_refused_before_it_restores(host):
    result = host.run("systemd-run --wait --pipe --collect -p User=postgres -p Group=postgres "
                      "-p SupplementaryGroups=botstack-metrics /opt/botstack-backup/bin/botstack-pitr-drill 99.9")
    output = result.stdout + result.stderr
    assert result.rc != 0 and "drill: refused (nothing was restored)" in output and "backup_pitr_drill_dir" in output, output
    metrics = host.file(f"/var/lib/prometheus/node-exporter/botstack_pitr_drill_{STANZA}.prom").content_string
    assert f'botstack_backup_drill_last_result{{kind="pitr",name="{STANZA}"}} 0' in metrics
    assert not host.file("/var/lib/postgresql/botstack-pitr-drill/cluster").exists


def test_the_scheduled_drill_brings_back_a_row_written_just_before(host):
    assert host.service("botstack-pitr-drill.timer").is_enabled
    host.check_output("systemctl start botstack-pitr-drill.service")
    metrics = host.file(f"/var/lib/prometheus/node-exporter/botstack_pitr_drill_{STANZA}.prom")
    assert metrics.mode == 0o644
    assert f'botstack_backup_drill_last_result{{kind="pitr",name="{STANZA}"}} 1' in metrics.content_string
    assert not host.file("/var/lib/postgresql/botstack-pitr-drill/cluster").exists
    journal = host.check_output("journalctl -u botstack-pitr-drill.service -n 20 --no-pager")
    assert "drill: restored stanza main to the end of the archive" in journal, journal


def prometheus_query(monitor, expression: str) -> dict:
    """{series labels as a sorted tuple: value} of an instant query, asked of Prometheus on the monitoring host."""
    program = ("import sys, urllib.parse, urllib.request; sys.stdout.write(urllib.request.urlopen("
               "'http://127.0.0.1:9090/api/v1/query?query=' + urllib.parse.quote(sys.argv[1]), timeout=5).read().decode())")
    answer = json.loads(monitor.check_output("python3 -c %s %s", program, expression))
    return {tuple(sorted(r["metric"].items())): r["value"][1] for r in answer["data"]["result"]}


def test_pitr_backup_and_drill_results_reach_prometheus_through_node_exporter(host, monitor):
    """The PITR units wrote these families without the dump backups' HELP: node_exporter dropped them (one
    writer now), so BackupFailed and RestoreDrillFailed could never fire for point-in-time recovery."""
    host.check_output("systemctl start botstack-pitr-diff.service")
    for kind in ("pitr-full", "pitr-diff"):
        wait_for(f"botstack_backup_last_result{{kind={kind!r}}} in Prometheus", lambda kind=kind: prometheus_query(
            monitor, f'botstack_backup_last_result{{kind="{kind}",name="{STANZA}"}} == 1'))
    wait_for("the PITR drill's result in Prometheus", lambda: prometheus_query(
        monitor, f'botstack_backup_drill_last_result{{kind="pitr",name="{STANZA}"}} == 1'))
    wait_for("the archiving metrics in Prometheus", lambda: prometheus_query(
        monitor, f'botstack_pitr_last_archived_timestamp_seconds{{stanza="{STANZA}"}} > 0'))
    # Every textfile read cleanly: node_exporter reports a conflicting or malformed file here.
    errors = prometheus_query(monitor, "node_textfile_scrape_error")
    assert errors and set(errors.values()) == {"0"}, errors


def pitr_result(host, kind: str) -> str:
    text = host.file(f"/var/lib/prometheus/node-exporter/botstack_pitr_backup_{STANZA}_{kind}.prom").content_string
    return next(line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith("botstack_backup_last_result{"))


def test_pgbackrest_verify_reads_the_repository_back_and_fails_on_a_damaged_file(host):
    """Restoring to the end of the archive proves the newest chain only: verify reads every file back. pgbackrest
    verify exits 0 even when it finds invalid files, so the unit judges its report."""
    import boto3
    import botocore.config

    from conftest import container_address

    s3 = boto3.client("s3", endpoint_url=f"http://{container_address('backup-s3')}:8333", region_name="us-east-1",
                      aws_access_key_id="AKIDBACKUPTEST01", aws_secret_access_key="s3-Secret-Key-5d8e2a9b",
                      config=botocore.config.Config(s3={"addressing_style": "path"}))
    assert host.service("botstack-pitr-verify.timer").is_enabled
    passed = host.run("systemctl start botstack-pitr-verify.service")
    journal = "journalctl -u botstack-pitr-verify.service -n 30 --no-pager"
    assert passed.rc == 0, host.run(journal).stdout
    assert pitr_result(host, "verify") == "1"
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="botstack-backups", Prefix="botstack/pgbackrest/archive/")
    wal = sorted(o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].rsplit("/", 1)[1].startswith("0000"))[0]
    original = s3.get_object(Bucket="botstack-backups", Key=wal)["Body"].read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    s3.put_object(Bucket="botstack-backups", Key=wal, Body=bytes(damaged))
    try:
        failed = host.run("systemctl start botstack-pitr-verify.service")
        assert failed.rc != 0, host.run(journal).stdout
        assert pitr_result(host, "verify") == "0"
        assert "invalid or missing files" in host.run(journal).stdout
    finally:
        s3.put_object(Bucket="botstack-backups", Key=wal, Body=original)
    assert host.run("systemctl start botstack-pitr-verify.service").rc == 0
    assert pitr_result(host, "verify") == "1"


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
        # Meanwhile a point-in-time restore is refused before anything stops: the repository cannot be read.
        target = host.check_output("date -u '+%Y-%m-%d %H:%M:%S+00'")
        pid = host.check_output("systemctl show -P MainPID postgresql@15-main")
        refused = restore_play("-e", "backup_restore_confirm_overwrite=true", "-e", f"backup_restore_time='{target}'")
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "the cluster was not touched" in output, output[-3000:]
        assert play_recap(refused.stdout)["backup-db"]["changed"] == 0
        assert host.check_output("systemctl show -P MainPID postgresql@15-main") == pid
    finally:
        monitor.check_output("systemctl start seaweedfs")
        monitor.run("timeout 60 sh -c 'until (echo > /dev/tcp/127.0.0.1/8443) 2>/dev/null; do sleep 1; done'")
    wait_for(f"{held} archived once S3 is back", lambda: archived(host, held), timeout=180)
    wait_for("WalArchivingFailing resolved at the receiver",
             lambda: slack_notified(monitor, "WalArchivingFailing", "RESOLVED", seen), timeout=180)


def restore_play(*extra_vars: str):
    return run_playbook(PLAYBOOKS / "restore.yml", "-l", "backup-db", "-e", "backup_restore_kind=pitr", *extra_vars)


@pytest.mark.parametrize(("extra_vars", "fragment"), [
    ((), "backup_restore_confirm_overwrite=true"),
    (("-e", "backup_restore_confirm_overwrite=true", "-e", "backup_restore_time='2099-01-01 00:00:00+00'"),
     "must lie between the end of the oldest backup"),
    (("-e", "backup_restore_confirm_overwrite=true", "-e", "backup_restore_time='2001-01-01 00:00:00+00'"),
     "must lie between the end of the oldest backup"),
    (("-e", "backup_restore_confirm_overwrite=true", "-e", "backup_restore_time=yesterday"), "YYYY-MM-DD HH:MM:SS+00"),
    (("-e", "backup_restore_confirm_overwrite=true", "-e", "backup_restore_time='2026-01-01 00:00:00+00'",
      "-e", "backup_restore_point=before"), "at most one of backup_restore_time"),
])
def test_a_restore_the_repository_cannot_reach_is_refused_before_anything_changes(host, extra_vars, fragment):
    pid = host.check_output("systemctl show -P MainPID postgresql@15-main")
    result = restore_play(*extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert fragment in output, output[-3000:]
    assert play_recap(result.stdout)["backup-db"]["changed"] == 0
    assert_no_secret_in(output, f"refused restore {extra_vars}")
    assert host.check_output("systemctl show -P MainPID postgresql@15-main") == pid


def test_the_live_cluster_is_restored_to_a_point_in_time_and_the_old_one_kept_aside(host):
    target = moment_between_two_archived_rows(host, 20, 21)

    result = restore_play("-e", "backup_restore_confirm_overwrite=true", "-e", f"backup_restore_time='{target}'")
    assert result.returncode == 0, result.stdout[-3000:]
    assert_no_secret_in(result.stdout + result.stderr, "the point-in-time restore")
    rows = psql(host, "SELECT string_agg(id::text, ',' ORDER BY id) FROM pitr_probe WHERE id >= 20")
    assert rows == "20", f"restored to {target}: rows {rows}"
    # The data it replaced is kept, whole, beside the new one.
    aside = host.check_output("ls -d /var/lib/postgresql/15/main.replaced-*").split()
    assert len(aside) == 1 and host.file(f"{aside[0]}/PG_VERSION").exists, aside
    assert not host.file("/var/lib/botstack-backup/pitr-restore-aside").exists
    # The restored cluster archives on its new timeline.
    host.check_output("runuser -u postgres -- pgbackrest --stanza=%s --log-level-console=error check", STANZA)
    host.run("rm -rf %s", aside[0])


def test_a_lost_database_host_is_rebuilt_from_the_archive_to_a_point_in_time(host):
    """The database host dies after a write. A new host under its name (an empty cluster: another system
    identifier) refuses to archive into the lost one's repository, then is restored: to the end of the archive
    (the last write is back), then to a time between two writes."""
    # The full backup the previous restore started ends first: were it to end after the target, the next full
    # backup (the one the restore below starts) would expire the only backup set that reaches the target, and the
    # restore to it would be refused, rightly.
    wait_for("the previous restore's full backup ended", lambda: backup_ended(host), timeout=300)
    target = moment_between_two_archived_rows(host, 40, 41)
    # The last write before the host dies: no WAL switch, archive_timeout (60 s) alone sends it to S3.
    psql(host, "INSERT INTO pitr_probe (id) VALUES (42)")
    written = time.monotonic()
    current = psql(host, "SELECT pg_walfile_name(pg_current_wal_lsn())", database="postgres")
    try:
        wait_for(f"{current} archived without a WAL switch", lambda: archived(host, current),
                 timeout=150)
    except pytest.fail.Exception as exc:
        pytest.fail(f"{exc}; archiver {archiver(host)}, now writing " + psql(
            host, "SELECT pg_walfile_name(pg_current_wal_lsn()) || ' ' || current_setting('archive_timeout')",
            database="postgres"))
    assert time.monotonic() - written <= 60 + 15, "a write waited longer than archive_timeout to reach S3"
    # The host dies in the middle of a full backup: the repository keeps a partial backup set the restores ignore.
    host.check_output("systemctl start --no-block botstack-pitr-full.service")
    wait_for("a full backup running", lambda: not backup_ended(host), timeout=30, every=0.2)
    # The host dies (every process of the cluster killed) and is rebuilt: a new cluster, no configuration
    # left (pg_dropcluster keeps the files it did not create, such as conf.d).
    host.check_output("pkill -KILL -u postgres; sleep 1; rm -f /var/lib/postgresql/15/main/postmaster.pid")
    host.check_output("pg_dropcluster 15 main && rm -rf /etc/postgresql/15/main "
                      "&& pg_createcluster 15 main --start >/dev/null")
    before = info(host)
    converge = pathlib.Path(__file__).resolve().parents[1] / "converge.yml"

    refused = run_playbook(converge, "-l", "backup-db")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output[-3000:]
    assert "holds the archive of another cluster" in output and "playbooks/restore.yml" in output, output[-3000:]
    assert_no_secret_in(output, "the converge of a new database host")
    assert psql(host, "SHOW archive_mode", database="postgres") == "off"
    assert info(host)["archive"] == before["archive"], "the new cluster archived into the lost one's repository"

    # The end of the archive: the last write before the host died is back.
    restored = restore_play("-e", "backup_restore_confirm_overwrite=true")
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert_no_secret_in(restored.stdout + restored.stderr, "the restore onto a new database host")
    rows = psql(host, "SELECT string_agg(id::text, ',' ORDER BY id) FROM pitr_probe WHERE id >= 20")
    assert rows == "20,40,41,42", rows
    # A time between two writes: exactly the first.
    restored = restore_play("-e", "backup_restore_confirm_overwrite=true", "-e", f"backup_restore_time='{target}'")
    assert restored.returncode == 0, restored.stdout[-3000:]
    rows = psql(host, "SELECT string_agg(id::text, ',' ORDER BY id) FROM pitr_probe WHERE id >= 20")
    assert rows == "20,40", f"restored to {target}: rows {rows}"
    host.run("rm -rf /var/lib/postgresql/15/main.replaced-*")

    again = run_playbook(converge, "-l", "backup-db")
    assert again.returncode == 0, again.stdout[-3000:]
    assert psql(host, "SHOW archive_mode", database="postgres") == "on"
    host.check_output("runuser -u postgres -- pgbackrest --stanza=%s --log-level-console=error check", STANZA)


def test_a_restore_killed_half_way_is_finished_by_the_next_run(host):
    """The retry of an operator (or AWX) after a timeout: killed once the live data went aside, run again."""
    psql(host, "INSERT INTO pitr_probe (id) VALUES (50)")
    segment = switch_wal(host)
    wait_for(f"{segment} archived", lambda: archived(host, segment))
    argv = ["ansible-playbook", "-i", str(molecule_path("MOLECULE_INVENTORY_FILE")), str(PLAYBOOKS / "restore.yml"),
            "-l", "backup-db", "-e", "backup_restore_kind=pitr", "-e", "backup_restore_confirm_overwrite=true"]
    killed = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for("the live data moved aside", lambda: host.run("ls -d /var/lib/postgresql/15/main.replaced-*").rc == 0,
                 timeout=180, every=0.3)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()

    result = restore_play("-e", "backup_restore_confirm_overwrite=true")
    assert result.returncode == 0, result.stdout[-3000:]
    rows = psql(host, "SELECT string_agg(id::text, ',' ORDER BY id) FROM pitr_probe WHERE id >= 20")
    assert rows == "20,40,50", rows
    # One aside directory, the one the killed run chose, holding the cluster it replaced.
    aside = host.check_output("ls -d /var/lib/postgresql/15/main.replaced-*").split()
    assert len(aside) == 1 and host.file(f"{aside[0]}/PG_VERSION").exists, aside
    assert not host.file("/var/lib/botstack-backup/pitr-restore-aside").exists
    host.check_output("runuser -u postgres -- pgbackrest --stanza=%s --log-level-console=error check", STANZA)
    host.run("rm -rf %s", aside[0])


def test_a_target_past_the_last_archived_wal_of_a_running_cluster_is_refused_before_anything_changes(host):
    """Archiving fails (archive_command false, as with a lost S3 key): writes after the last archived WAL are not
    in the repository, so a target after it would end the replay early and leave PostgreSQL down. The restore
    names the last archived WAL's time and the archiving failure, and the serving cluster is not touched."""
    psql(host, "ALTER SYSTEM SET archive_command = '/bin/false'", database="postgres")
    psql(host, "SELECT pg_reload_conf()", database="postgres")
    try:
        psql(host, "INSERT INTO pitr_probe (id) VALUES (60)")
        switch_wal(host)
        time.sleep(2)
        target = host.check_output("date -u '+%Y-%m-%d %H:%M:%S+00'")
        pid = psql(host, "SELECT pg_postmaster_start_time()", database="postgres")
        aside = host.run("ls -d /var/lib/postgresql/15/main.replaced-* 2>/dev/null").stdout.split()
        result = restore_play("-e", "backup_restore_confirm_overwrite=true", "-e", f"backup_restore_time='{target}'")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        assert "Point-in-time restore refused (the cluster was not touched)" in output, output[-3000:]
        assert "the last archived WAL (" in output and "archiving fails now" in output, output[-3000:]
        assert play_recap(result.stdout)["backup-db"]["changed"] == 0
        # The same cluster serves, with the row the archive never got.
        assert psql(host, "SELECT pg_postmaster_start_time()", database="postgres") == pid
        assert psql(host, "SELECT count(*) FROM pitr_probe WHERE id = 60") == "1"
        assert host.run("ls -d /var/lib/postgresql/15/main.replaced-* 2>/dev/null").stdout.split() == aside, "moved aside"
    finally:
        psql(host, "ALTER SYSTEM RESET archive_command", database="postgres")
        psql(host, "SELECT pg_reload_conf()", database="postgres")
    segment = switch_wal(host)
    wait_for(f"{segment} archived once archiving works again", lambda: archived(host, segment), timeout=180)
    psql(host, "DELETE FROM pitr_probe WHERE id = 60")


def test_a_replay_that_falls_short_of_the_target_puts_the_previous_cluster_back(host):
    """Last in this file: it stops the cluster.
    A stopped cluster cannot say how far its archive reaches: the target is bounded by "now" only. The last
    write never reached the archive (no WAL switch before the stop), so the replay ends before the target and
    PostgreSQL stops. The restore puts the previous data directory back and starts it: nothing lost, nothing down."""
    psql(host, "INSERT INTO pitr_probe (id) VALUES (30)")
    host.check_output("systemctl stop postgresql@15-main")
    time.sleep(2)
    target = host.check_output("date -u '+%Y-%m-%d %H:%M:%S+00'")
    result = restore_play("-e", "backup_restore_confirm_overwrite=true", "-e", f"backup_restore_time='{target}'")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "did not complete" in output and "The previous data directory is back in place" in output, output[-3000:]
    assert host.service("postgresql@15-main").is_running
    assert psql(host, "SELECT count(*) FROM pitr_probe WHERE id = 30") == "1"
    failed = host.check_output("ls -d /var/lib/postgresql/15/main.failed-restore-* 2>/dev/null || true").split()
    assert len(failed) == 1, failed
    assert not host.file("/var/lib/botstack-backup/pitr-restore-aside").exists
    host.run("rm -rf %s", failed[0])
    psql(host, "DELETE FROM pitr_probe WHERE id = 30")
    host.check_output("runuser -u postgres -- pgbackrest --stanza=%s --log-level-console=error check", STANZA)
