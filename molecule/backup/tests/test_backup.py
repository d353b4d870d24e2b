"""Backups to a real S3 server: encrypted objects with manifests, restores with the same rows,
failures that notify and delete nothing, retention, restore drills, Redis snapshots, bad input.

Tests run in file order and build on each other (one database, one bucket)."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import time

import boto3
import botocore.config
import pytest
import testinfra

from conftest import assert_no_secret_in, assert_role_rejects, container_address, molecule_path, run_playbook

testinfra_hosts = ["backup-db"]

BUCKET = "botstack-backups"
ACCESS_KEY, SECRET_KEY = "AKIDBACKUPTEST01", "s3-Secret-Key-5d8e2a9b"
PROGRAM = "/opt/botstack-backup/bin/botstack-backup"
PG_CONFIG = "/etc/botstack-backup/postgresql.json"
METRICS = "/var/lib/prometheus/node-exporter"
PLAYBOOKS = pathlib.Path(__file__).resolve().parents[3] / "playbooks"
MARKER = "needle-7f3a9c-in-the-dump"
# Keys are per host: <prefix>/<kind>/<host>/<name>/ (backup_s3_host_key, the inventory name).
SERIES = "botstack/postgresql/backup-db/botstack/"


def s3_host():
    return testinfra.get_host("ansible://backup-s3", ansible_inventory=str(molecule_path("MOLECULE_INVENTORY_FILE")))


@pytest.fixture(scope="module")
def s3():
    return boto3.client(
        "s3", endpoint_url=f"http://{container_address('backup-s3')}:8333", region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


def keys(s3, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def dump_keys(s3):
    """The dump backups' objects (pgBackRest's WAL archive shares the prefix and grows on its own)."""
    return [key for key in keys(s3, "botstack/") if not key.startswith("botstack/pgbackrest/")]


def psql(host, sql, database="botstack"):
    return host.check_output("runuser -u postgres -- psql -XAtq -d %s -c %s", database, sql)


def unit_run(host, unit):
    return host.run("systemctl start %s", unit)


def webhook_posts(unit):
    out = s3_host().run("cat /var/log/webhook.jsonl").stdout
    return [json.loads(line) for line in out.splitlines() if unit in line]


def metric(host, kind, name, metric_name):
    text = host.file(f"{METRICS}/botstack_backup_{kind}_{name}.prom").content_string
    for line in text.splitlines():
        if line.startswith(f"botstack_backup_{metric_name}{{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{metric_name} not in {text}")


@pytest.fixture(scope="module")
def seeded(host):
    """Varied rows (uuid, text, jsonb, timestamps) in two schemas, one empty table."""
    psql(host, """
        CREATE EXTENSION IF NOT EXISTS pgcrypto;
        DROP TABLE IF EXISTS users, events, empty_table; DROP SCHEMA IF EXISTS billing CASCADE;
        CREATE TABLE users (id uuid PRIMARY KEY, name text, profile jsonb, created timestamptz);
        INSERT INTO users SELECT gen_random_uuid(), md5(i::text) || ' user ' || i,
          jsonb_build_object('lang', (ARRAY['en','de','ru'])[1 + i %% 3], 'n', i, 'tags', jsonb_build_array(i %% 7, md5(i::text))),
          now() - i * interval '1 minute' FROM generate_series(1, 30000) i;
        UPDATE users SET name = '%s' WHERE name LIKE md5('1') || '%%';
        CREATE TABLE events (id bigserial PRIMARY KEY, user_id uuid, kind text, payload jsonb, at timestamptz DEFAULT now());
        INSERT INTO events (user_id, kind, payload) SELECT id, 'login', jsonb_build_object('ip', '10.0.0.' || (random()*250)::int)
          FROM users, generate_series(1, 3);
        CREATE TABLE empty_table (id int);
        CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int, amount numeric);
        INSERT INTO billing.invoices SELECT i, i * 1.5 FROM generate_series(1, 1234) i;
        ALTER TABLE users OWNER TO bot; ALTER TABLE events OWNER TO bot;
    """ % MARKER)
    return {"public.users": 30000, "public.events": 90000, "public.empty_table": 0, "billing.invoices": 1234}


def table_checksum(host, database):
    return psql(host, "SELECT md5(string_agg(id::text || name || profile::text, ',' ORDER BY id)) FROM users", database)


def test_timers_scheduled_persistent(host):
    for job, calendar in (("postgresql", "00/6:00:00"), ("redis", "00/12:00:00"), ("drill", "*-*-01 04:30:00")):
        timer = host.service(f"botstack-backup-{job}.timer")
        assert timer.is_enabled and timer.is_running, job
        shown = host.check_output(f"systemctl show botstack-backup-{job}.timer -p TimersCalendar -p Persistent -p RandomizedDelayUSec")
        assert calendar in shown and "Persistent=yes" in shown and "RandomizedDelayUSec=15min" in shown, shown


def test_files_holding_secrets_are_private(host):
    for path, owner in ((PG_CONFIG, "postgres"), ("/etc/botstack-backup/redis.json", "redis"),
                        ("/etc/botstack-backup/notify.json", "root"),
                        ("/etc/botstack-backup/age-identity-postgresql.txt", "postgres")):
        f = host.file(path)
        assert (f.mode, f.user) == (0o600, owner), path


def test_backup_units_are_sandboxed(host):
    exposure = host.check_output("systemd-analyze security --no-pager botstack-backup-postgresql.service | tail -1")
    score = float(exposure.split("exposure level for botstack-backup-postgresql.service:")[1].split()[0])
    assert score <= 3.0, exposure


def test_backup_uploads_an_encrypted_object_and_its_manifest(host, s3, seeded):
    before = keys(s3, SERIES)
    result = unit_run(host, "botstack-backup-postgresql.service")
    assert result.rc == 0, host.run("journalctl -u botstack-backup-postgresql.service -n 30 --no-pager").stdout
    stored = sorted(set(keys(s3, SERIES)) - set(before))
    assert len(stored) == 2 and stored[0].endswith(".dump.zst.age") and stored[1].endswith(".json"), stored
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=stored[1])["Body"].read())
    body = s3.get_object(Bucket=BUCKET, Key=stored[0])["Body"].read()
    assert manifest["row_counts"] == seeded
    assert manifest["sha256"] == hashlib.sha256(body).hexdigest() and manifest["size"] == len(body)
    assert manifest["encrypted"] and manifest["postgresql_version"].startswith("15") and manifest["owner"] == "bot"
    # Encrypted: age's header, no dump signature, no row content anywhere in the object.
    assert body.startswith(b"age-encryption.org/v1") and b"PGDMP" not in body and MARKER.encode() not in body
    assert metric(host, "postgresql", "botstack", "last_result") == 1
    assert metric(host, "postgresql", "botstack", "last_size_bytes") == len(body)


def test_roles_and_memberships_come_back_from_the_globals_backup(host, s3):
    """A database dump holds no roles: pg_dumpall --globals-only goes beside it, and restore.yml replays it."""
    psql(host, "DROP ROLE IF EXISTS reporting; CREATE ROLE reporting NOLOGIN; GRANT bot TO reporting", "postgres")
    try:
        result = unit_run(host, "botstack-backup-postgresql.service")
        assert result.rc == 0, host.run("journalctl -u botstack-backup-postgresql.service -n 30 --no-pager").stdout
        stored = keys(s3, "botstack/postgresql/backup-db/_globals/")
        assert any(k.endswith(".sql.zst.age") for k in stored) and any(k.endswith(".json") for k in stored), stored
        assert metric(host, "postgresql", "_globals", "last_result") == 1
        psql(host, "DROP ROLE reporting", "postgres")
        restored = run_playbook(PLAYBOOKS / "restore.yml", "-e", "backup_restore_globals=true", "-vvv")
        assert_no_secret_in(restored.stdout + restored.stderr, "restore.yml globals -vvv")
        assert restored.returncode == 0, restored.stdout[-3000:]
        member = psql(host, "SELECT string_agg(g.rolname, ',') FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                            "JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = 'reporting'", "postgres")
        assert member == "bot"
    finally:
        psql(host, "DROP ROLE IF EXISTS reporting", "postgres")


def config_copy(host, path, **changes):
    """A copy of the PostgreSQL job's configuration with some settings changed (a__b for a.b), readable by postgres.
    Without metrics_dir given, the copy writes no metrics (run by hand, postgres is not in the metrics group)."""
    changes.setdefault("metrics_dir", "")
    program = ("import json, sys; c = json.load(open(sys.argv[1])); changes = json.loads(sys.argv[2])\n"
               "for key, value in changes.items():\n"
               "    *parents, last = key.split('.'); d = c\n"
               "    for p in parents: d = d[p]\n"
               "    d[last] = value\n"
               "json.dump(c, open(sys.argv[3], 'w'))")
    host.check_output("runuser -u postgres -- python3 -c %s %s %s %s", program, PG_CONFIG,
                      json.dumps({k.replace("__", "."): v for k, v in changes.items()}), path)
    return path


def test_a_dump_that_dies_after_its_last_byte_leaves_no_object(host, s3):
    """pg_dump writes part of a dump and exits 1: the upload saw EOF, but its exit status decides."""
    before = keys(s3, SERIES)
    host.check_output("install -d -m 0755 /tmp/dying && printf %%s %s > /tmp/dying/pg_dump && chmod 0755 /tmp/dying/pg_dump",
                      "#!/bin/sh\nhead -c 7000000 /dev/urandom\necho 'pg_dump: error: connection lost' >&2\nexit 1\n")
    dying = config_copy(host, "/var/lib/botstack-backup/postgresql/dying.json")
    try:
        result = host.run("runuser -u postgres -- env PATH=/tmp/dying:/usr/bin:/bin %s --config %s backup --name botstack",
                          PROGRAM, dying)
    finally:
        host.run("rm -rf /tmp/dying %s", dying)
    assert result.rc != 0 and "pg_dump exited 1" in result.stdout + result.stderr, result.stdout + result.stderr
    assert keys(s3, SERIES) == before
    assert not s3.list_multipart_uploads(Bucket=BUCKET, Prefix="botstack/postgresql/").get("Uploads")


def test_a_rebuilt_clusters_empty_dump_is_never_restored_in_place_of_the_good_one(host, s3, seeded):
    """A host lost and rebuilt: site.yml makes a new, empty cluster whose timers dump at once. Its dumps are a
    lineage of their own (the cluster's system identifier); the restore refuses the newest one, names the good one."""
    stored = keys(s3, SERIES)
    manifests = [k for k in stored if k.endswith(".json")]
    good = json.loads(s3.get_object(Bucket=BUCKET, Key=manifests[-1])["Body"].read())
    assert good["system_identifier"] and good["rows"] == sum(seeded.values())
    host.check_output("pg_createcluster 15 rebuilt -p 5498 --start >/dev/null && "
                      "runuser -u postgres -- createdb -p 5498 botstack")
    empty = config_copy(host, "/var/lib/botstack-backup/postgresql/rebuilt.json", postgresql__port=5498)
    try:
        host.check_output("runuser -u postgres -- %s --config %s backup --name botstack", PROGRAM, empty)
        new = [k for k in keys(s3, SERIES) if k.endswith(".json") and k not in manifests]
        rebuilt = json.loads(s3.get_object(Bucket=BUCKET, Key=new[0])["Body"].read())
        assert rebuilt["rows"] == 0 and rebuilt["system_identifier"] != good["system_identifier"]
        refused = run_playbook(PLAYBOOKS / "restore.yml", "-e", "backup_restore_database=botstack",
                               "-e", "backup_restore_target=botstack_after_loss")
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0 and good["id"] in output and "backup_restore_allow_shrunk" in output, output[-3000:]
        assert not psql(host, "SELECT datname FROM pg_database WHERE datname LIKE 'botstack\\_after\\_loss%'", "postgres")
        named = run_playbook(PLAYBOOKS / "restore.yml", "-e", "backup_restore_database=botstack",
                             "-e", "backup_restore_target=botstack_after_loss", "-e", f"backup_restore_id={good['id']}")
        assert named.returncode == 0, named.stdout[-3000:]
        for table, rows in seeded.items():
            assert int(psql(host, f"SELECT count(*) FROM {table}", "botstack_after_loss")) == rows, table
        # Created from template0 with the source database's encoding and locale.
        assert psql(host, "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate FROM pg_database "
                          "WHERE datname = 'botstack_after_loss'", "postgres") == f"{good['encoding']} {good['lc_collate']}"
    finally:
        for key in set(keys(s3, SERIES)) - set(stored):
            s3.delete_object(Bucket=BUCKET, Key=key)
        host.run("pg_dropcluster 15 rebuilt --stop; rm -f %s", empty)
        psql(host, "DROP DATABASE IF EXISTS botstack_after_loss", "postgres")


def lifecycle(s3):
    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    except s3.exceptions.ClientError:
        return []


def expiring(rules, key):
    return [r["ID"] for r in rules if "Expiration" in r and key.startswith((r.get("Filter") or {}).get("Prefix", ""))]


def test_with_object_lock_the_hosts_own_keys_cannot_delete_a_backup_for_good(host, s3, seeded):
    """The database host's keys can delete every dump. With Object Lock (a bucket of its own here) a delete only
    adds a marker: after someone deletes everything with those keys, the restore still finds the backup."""
    bucket = f"botstack-locked-{int(time.time())}"  # a locked bucket cannot be emptied: one per run
    locked = config_copy(host, "/var/lib/botstack-backup/postgresql/locked.json", s3__bucket=bucket,
                         object_lock__days=1)
    run = f"runuser -u postgres -- {PROGRAM} --config {locked}"
    try:
        assert json.loads(host.check_output(run + " ensure-bucket")) == {"changed": True}
        host.check_output(run + " backup --name botstack")
        stored = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        dump = next(k for k in stored if k.endswith(".dump.zst.age"))
        assert s3.head_object(Bucket=bucket, Key=dump)["ObjectLockMode"] == "COMPLIANCE"
        # The compromise: every key deleted with the host's credentials, then every version it can see.
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stored]})
        versions = s3.list_object_versions(Bucket=bucket)["Versions"]
        refused = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
            {"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]})
        assert not refused.get("Deleted") and len(refused["Errors"]) == len(versions), refused
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
        hidden = host.run(run + " restore --name botstack --target botstack_locked")
        assert hidden.rc != 0 and "no postgresql backup" in hidden.stderr
        back = host.run(run + " restore --name botstack --target botstack_locked --include-deleted")
        assert back.rc == 0, back.stderr[-2000:]
        for table, rows in seeded.items():
            assert int(psql(host, f"SELECT count(*) FROM {table}", "botstack_locked")) == rows, table
    finally:
        host.run("rm -f %s", locked)
        psql(host, "DROP DATABASE IF EXISTS botstack_locked", "postgres")


def test_lifecycle_rules_expire_the_dumps_and_never_the_pgbackrest_repository(host, s3):
    repository = keys(s3, "botstack/pgbackrest/")
    assert any(key.endswith("archive.info") for key in repository), repository[:5]
    # Prune mode (the converge): only the rule that aborts abandoned uploads, on the dumps' prefixes.
    rules = lifecycle(s3)
    assert rules and all("Expiration" not in r for r in rules), rules
    config = json.loads(host.file(PG_CONFIG).content_string)
    expire = config_copy(host, "/var/lib/botstack-backup/postgresql/lifecycle.json", retention__mode="lifecycle")
    try:
        changed = json.loads(host.check_output("runuser -u postgres -- %s --config %s lifecycle", PROGRAM, expire))
        again = json.loads(host.check_output("runuser -u postgres -- %s --config %s lifecycle", PROGRAM, expire))
        assert changed == {"changed": True} and again == {"changed": False}
        rules = lifecycle(s3)
        assert [key for key in repository if expiring(rules, key)] == []
        assert expiring(rules, SERIES + "x.dump.zst.age") == ["botstack-backup-botstack-postgresql"]
        days = {r["ID"]: r["Expiration"]["Days"] for r in rules if "Expiration" in r}
        assert days == {f"botstack-backup-botstack-{kind}": d for kind, d in config["retention_days"].items()}, days
    finally:
        restored = json.loads(host.check_output("runuser -u postgres -- %s --config %s lifecycle", PROGRAM, PG_CONFIG))
        host.run("rm -f /var/lib/botstack-backup/postgresql/lifecycle.json")
    assert restored == {"changed": True} and all("Expiration" not in r for r in lifecycle(s3))


def test_restore_into_a_new_database_has_the_same_rows(host, seeded):
    psql(host, "DROP DATABASE IF EXISTS botstack_restored", "postgres")
    result = run_playbook(PLAYBOOKS / "restore.yml", "-e", "backup_restore_database=botstack",
                          "-e", "backup_restore_target=botstack_restored", "-vvv")
    assert_no_secret_in(result.stdout + result.stderr, "restore.yml -vvv")
    assert result.returncode == 0, result.stdout[-3000:]
    for table, rows in seeded.items():
        assert int(psql(host, f"SELECT count(*) FROM {table}", "botstack_restored")) == rows, table
    assert table_checksum(host, "botstack_restored") == table_checksum(host, "botstack")
    assert psql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'botstack_restored'", "postgres") == "bot"


def test_restore_over_a_live_database_needs_confirmation_and_keeps_it_aside(host):
    databases = "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
    before = psql(host, databases, "postgres")
    refused = run_playbook(PLAYBOOKS / "restore.yml", "-e", "backup_restore_database=botstack")
    assert refused.returncode != 0 and "needs the explicit confirmation" in refused.stdout + refused.stderr
    assert psql(host, databases, "postgres") == before
    psql(host, "INSERT INTO billing.invoices VALUES (99999, 1)")
    accepted = run_playbook(PLAYBOOKS / "restore.yml", "-e", "backup_restore_database=botstack",
                            "-e", "backup_restore_confirm_overwrite=true")
    assert accepted.returncode == 0, accepted.stdout[-3000:]
    assert psql(host, "SELECT count(*) FROM billing.invoices WHERE id = 99999") == "0"
    kept = psql(host, "SELECT datname FROM pg_database WHERE datname LIKE 'botstack\\_\\_replaced\\_%' ORDER BY datname DESC LIMIT 1", "postgres")
    assert kept and psql(host, "SELECT count(*) FROM billing.invoices WHERE id = 99999", kept) == "1"
    psql(host, f"DROP DATABASE {kept}", "postgres")


def test_unreachable_store_fails_loudly_notifies_and_deletes_nothing(host, s3):
    before = dump_keys(s3)
    s3_host().check_output("systemctl stop seaweedfs")
    try:
        result = unit_run(host, "botstack-backup-postgresql.service")
        assert result.rc != 0
        assert host.service("botstack-backup-postgresql.service").is_running is False
        assert metric(host, "postgresql", "botstack", "last_result") == 0
        # The OnFailure unit posted to the webhook receiver.
        deadline = time.monotonic() + 30
        while not webhook_posts("botstack-backup-postgresql.service") and time.monotonic() < deadline:
            time.sleep(1)
        posts = webhook_posts("botstack-backup-postgresql.service")
        assert posts and "failed on" in json.loads(posts[-1]["body"])["text"]
    finally:
        s3_host().check_output("systemctl start seaweedfs")
        s3_host().run("timeout 60 sh -c 'until (echo > /dev/tcp/127.0.0.1/8333) 2>/dev/null; do sleep 1; done'")
    time.sleep(3)
    assert dump_keys(s3) == before


def test_wrong_credentials_are_refused_and_nothing_is_stored(host, s3):
    before = dump_keys(s3)
    host.check_output(
        "runuser -u postgres -- python3 -c \"import json; c = json.load(open('%s')); "
        "c['s3']['secret_access_key'] = 'wrong-secret'; json.dump(c, open('/var/lib/botstack-backup/postgresql/wrong.json', 'w'))\"",
        PG_CONFIG)
    try:
        result = host.run("runuser -u postgres -- %s --config /var/lib/botstack-backup/postgresql/wrong.json backup", PROGRAM)
    finally:
        host.run("rm -f /var/lib/botstack-backup/postgresql/wrong.json")
    assert result.rc != 0
    assert "SignatureDoesNotMatch" in result.stdout + result.stderr or "AccessDenied" in result.stdout + result.stderr
    assert dump_keys(s3) == before


def put_fake_backup(s3, name, age_days):
    finished = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=age_days)
    backup_id = finished.strftime("%Y%m%dT%H%M%SZ") + "-fake"
    base = f"botstack/postgresql/backup-db/{name}/{backup_id}"
    s3.put_object(Bucket=BUCKET, Key=base + ".dump.zst.age", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key=base + ".json", Body=json.dumps({
        "id": backup_id, "object_key": base + ".dump.zst.age", "finished_at": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}).encode())
    return backup_id


@pytest.mark.parametrize(("ages", "kept"), [
    # 30 days, keep the newest 2 whatever their age.
    ([1, 10, 31, 40, 50], [1, 10]),
    ([40, 50, 60], [40, 50]),
    ([1, 2, 3, 29], [1, 2, 3, 29]),
])
def test_retention_keeps_exactly_the_right_backups(host, s3, ages, kept):
    name = "retention_probe"
    for key in keys(s3, f"botstack/postgresql/backup-db/{name}/"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    ids = {age: put_fake_backup(s3, name, age) for age in ages}
    host.check_output("runuser -u postgres -- %s --config %s prune --name %s", PROGRAM, PG_CONFIG, name)
    remaining = keys(s3, f"botstack/postgresql/backup-db/{name}/")
    expected = sorted(f"botstack/postgresql/backup-db/{name}/{ids[age]}{suffix}" for age in kept for suffix in (".dump.zst.age", ".json"))
    assert remaining == expected


def test_a_drill_that_would_fill_the_disk_is_refused_before_it_writes(host):
    """The drill needs about twice the database's size: short of room (here: 99.9 % must stay free), it is refused
    with the fix named, and its result says failed so RestoreDrillFailed fires."""
    crowded = config_copy(host, "/var/lib/botstack-backup/postgresql/crowded.json", drill_min_free_percent=99.9,
                          metrics_dir=METRICS)
    try:
        # As the drill unit runs it (postgres, the metrics group), so its result reaches the textfile directory.
        result = host.run("systemd-run --wait --pipe --collect -p User=postgres -p Group=postgres "
                          "-p SupplementaryGroups=botstack-metrics -p UMask=0077 %s --config %s drill", PROGRAM, crowded)
    finally:
        host.run("rm -f %s", crowded)
    output = result.stdout + result.stderr
    assert result.rc != 0 and "restore drill of botstack refused (nothing was restored)" in output, output
    assert "backup_drill_dir" in output
    assert metric(host, "postgresql", "botstack", "drill_last_result") == 0
    assert host.check_output("find /var/lib/botstack-backup/postgresql -maxdepth 1 -name 'drill-*'") == ""


def test_restore_drill_passes_on_a_good_backup(host):
    result = run_playbook(PLAYBOOKS / "restore_drill.yml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Restore drill passed" in result.stdout
    assert metric(host, "postgresql", "botstack", "drill_last_result") == 1
    assert metric(host, "postgresql", "botstack", "drill_restore_seconds") > 0
    # Restored into a scratch cluster of its own: no database, no session, no WAL in the live cluster.
    assert not psql(host, "SELECT datname FROM pg_database WHERE datname LIKE '%drill%'", "postgres")
    journal = host.check_output("journalctl -u botstack-backup-drill.service -n 30 --no-pager -o cat")
    assert '"event": "drill_passed"' in journal, journal
    assert host.check_output("find /var/lib/botstack-backup/postgresql -maxdepth 1 -name 'drill-*'") == ""


def test_restore_drill_fails_loudly_on_a_tampered_backup(host, s3):
    newest = [k for k in keys(s3, SERIES) if k.endswith(".age")][-1]
    original = s3.get_object(Bucket=BUCKET, Key=newest)["Body"].read()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=newest, Body=bytes(tampered))
    try:
        result = run_playbook(PLAYBOOKS / "restore_drill.yml")
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert "Restore drill FAILED" in output and "sha256 mismatch" in output
        assert metric(host, "postgresql", "botstack", "drill_last_result") == 0
        deadline = time.monotonic() + 30
        while not webhook_posts("botstack-backup-drill.service") and time.monotonic() < deadline:
            time.sleep(1)
        assert webhook_posts("botstack-backup-drill.service")
        assert not psql(host, "SELECT datname FROM pg_database WHERE datname LIKE '%\\_\\_drill%' OR datname LIKE '%\\_\\_restoring'", "postgres")
    finally:
        s3.put_object(Bucket=BUCKET, Key=newest, Body=original)


def redis(host, command):
    out = host.check_output("REDISCLI_AUTH=redis-Secret-3e9f01 redis-cli --no-auth-warning --user bot " + command)
    assert not out.startswith(("ERR", "NOPERM", "WRONGTYPE")), out
    return out


def test_redis_keys_come_back_after_a_restore(host, s3):
    redis(host, "SET botstack:probe:kept value-from-backup")
    redis(host, "RPUSH botstack:queue job1 job2 job3")
    result = unit_run(host, "botstack-backup-redis.service")
    assert result.rc == 0, host.run("journalctl -u botstack-backup-redis.service -n 30 --no-pager").stdout
    assert [k for k in keys(s3, "botstack/redis/backup-db/redis/") if k.endswith(".rdb.zst.age")]
    redis(host, "DEL botstack:probe:kept botstack:queue")
    redis(host, "SET botstack:probe:after later")
    refused = run_playbook(PLAYBOOKS / "restore.yml", "-e", "backup_restore_kind=redis")
    assert refused.returncode != 0 and "backup_restore_confirm_overwrite" in refused.stdout + refused.stderr
    result = run_playbook(PLAYBOOKS / "restore.yml", "-e", "backup_restore_kind=redis",
                          "-e", "backup_restore_confirm_overwrite=true", "-vvv")
    assert_no_secret_in(result.stdout + result.stderr, "restore.yml redis -vvv")
    assert result.returncode == 0, result.stdout[-3000:]
    assert redis(host, "GET botstack:probe:kept") == "value-from-backup"
    assert redis(host, "LRANGE botstack:queue 0 -1").split() == ["job1", "job2", "job3"]
    assert redis(host, "EXISTS botstack:probe:after") == "0"
    # AOF stays on and now holds the restored data: a restart keeps it.
    host.check_output("systemctl restart redis-server")
    time.sleep(1)
    assert redis(host, "GET botstack:probe:kept") == "value-from-backup"


BASE = {
    "backup_s3_bucket": "botstack-backups",
    "backup_age_recipients": ["age1l28ww8g0q0hdvh53vjqyf99zl5n6e28vz6rf3rzdfrx7zdcsvdrs8tuv38"],
    "backup_postgresql_databases": ["botstack"],
}


@pytest.mark.parametrize(("override", "fragment"), [
    ({"backup_s3_bucket": "Bad_Bucket..name"}, "backup_s3_bucket must be a valid S3 bucket name"),
    ({"backup_postgresql_schedule": "every tuesday-ish"}, 'backup_postgresql_schedule "every tuesday-ish" is not a systemd calendar'),
    ({"backup_postgresql_retention_days": 0}, "backup_postgresql_retention_days=0"),
    ({"backup_s3_sse": "aws:kms"}, "backup_s3_sse 'aws:kms' needs backup_s3_sse_kms_key_id"),
    ({"backup_age_recipients": []}, "backup_encryption_enabled needs backup_age_recipients"),
    # Point-in-time recovery: no key, plain HTTP, an IP address pgBackRest cannot verify, no retention.
    ({"backup_pitr_enabled": True, "backup_pitr_cipher_pass": ""}, "backup_pitr_cipher_pass must be set from vault"),
    ({"backup_pitr_enabled": True, "backup_pitr_s3_endpoint_url": "http://backup-s3:8333"}, "backup_pitr_s3_endpoint_url must be an https:// URL"),
    ({"backup_pitr_enabled": True, "backup_pitr_s3_endpoint_url": "https://10.0.0.5:8443"}, "names its host by IP address: use a DNS name"),
    ({"backup_pitr_enabled": True, "backup_pitr_retention_full": 0}, "backup_pitr_retention_full and backup_pitr_retention_diff must be at least 1"),
    ({"backup_pitr_enabled": True, "backup_pitr_full_schedule": "sundays"}, 'backup_pitr_full_schedule "sundays" is not a systemd calendar'),
])
def test_bad_input_is_refused_before_anything_changes(ephemeral_dir, override, fragment):
    assert_role_rejects("backup", {**BASE, **override}, fragment, ephemeral_dir, hosts="backup")
