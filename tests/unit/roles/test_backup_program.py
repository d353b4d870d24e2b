"""The backup program's S3 side against moto's S3 (multipart, SSE, storage class, abort,
retention, lifecycle); the PostgreSQL and Redis sides run for real in molecule/backup."""
from __future__ import annotations

import datetime
import hashlib
import importlib.util
import io
import json
import os
import pathlib

import pytest

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

PROGRAM = pathlib.Path(__file__).resolve().parents[3] / "roles" / "backup" / "files" / "botstack-backup.py"
spec = importlib.util.spec_from_file_location("botstack_backup", PROGRAM)
backup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(backup)

BUCKET = "unit-backups"


@pytest.fixture
def store(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        config = {
            "s3": {"bucket": BUCKET, "prefix": "p", "sse": "AES256", "storage_class": "STANDARD_IA"},
            "part_size_mb": 5, "upload_threads": 2, "retention": {"days": 30, "keep_min": 2},
        }
        created = backup.Store(config)
        created.client.create_bucket(Bucket=BUCKET)
        yield created


def test_multipart_upload_keeps_bytes_sha256_sse_and_storage_class(store):
    data = os.urandom(12 * 1024 * 1024 + 123)
    size, sha256 = store.upload_stream("p/x/obj", io.BytesIO(data))
    assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())
    head = store.client.head_object(Bucket=BUCKET, Key="p/x/obj")
    assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA"
    assert head["ETag"].strip('"').endswith("-3")  # three parts of 5 MiB, 5 MiB and the rest
    assert store.client.get_object(Bucket=BUCKET, Key="p/x/obj")["Body"].read() == data


def test_empty_stream_still_makes_one_object(store):
    assert store.upload_stream("p/x/empty", io.BytesIO(b"")) == (0, hashlib.sha256(b"").hexdigest())
    assert store.client.head_object(Bucket=BUCKET, Key="p/x/empty")["ContentLength"] == 0


class Breaks(io.RawIOBase):
    """A dump that dies after 6 MiB, as pg_dump does when the database goes away."""

    def __init__(self):
        self.sent = 0

    def read(self, size=-1):
        if self.sent >= 6 * 1024 * 1024:
            raise OSError("pipe broke")
        self.sent += size
        return b"\0" * size


def test_a_failed_stream_aborts_the_upload_and_leaves_nothing(store):
    with pytest.raises(OSError):
        store.upload_stream("p/x/broken", Breaks())
    assert store.client.list_objects_v2(Bucket=BUCKET, Prefix="p/x/broken").get("KeyCount") == 0
    assert not store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def fake(store, name, age_days):
    finished = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=age_days)
    backup_id = finished.strftime("%Y%m%dT%H%M%SZ") + "-h"
    base = store.key("postgresql", name, backup_id)
    store.client.put_object(Bucket=BUCKET, Key=base + ".dump.zst.age", Body=b"x")
    store.put_json(base + ".json", {"id": backup_id, "object_key": base + ".dump.zst.age",
                                    "finished_at": backup.iso(finished)})
    return backup_id


def test_prune_keeps_the_newest_and_the_young(store):
    ids = {age: fake(store, "db", age) for age in (0, 5, 31, 45, 90)}
    deleted = backup.prune({"retention": {"days": 30, "keep_min": 2}}, store, "postgresql", "db")
    assert sorted(deleted) == sorted([ids[31], ids[45], ids[90]])
    left = [m["id"] for m in store.manifests("postgresql", "db")]
    assert left == [ids[0], ids[5]]


def test_prune_never_goes_below_keep_min_when_everything_is_old(store):
    ids = {age: fake(store, "db", age) for age in (40, 50, 60)}
    backup.prune({"retention": {"days": 30, "keep_min": 2}}, store, "postgresql", "db")
    assert [m["id"] for m in store.manifests("postgresql", "db")] == [ids[40], ids[50]]


def test_dry_run_deletes_nothing(store):
    fake(store, "db", 1), fake(store, "db", 2), fake(store, "db", 99)
    assert len(backup.prune({"retention": {"days": 30, "keep_min": 1}}, store, "postgresql", "db", dry_run=True)) == 1
    assert len(store.manifests("postgresql", "db")) == 3


LIFECYCLE = {"retention": {"mode": "lifecycle", "abort_incomplete_uploads": True},
             "retention_days": {"postgresql": 30, "redis": 7}}


def rules_covering(store, key):
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    return [r["ID"] for r in rules if "Expiration" in r and key.startswith(r["Filter"]["Prefix"])]


def test_lifecycle_rules_never_reach_the_pgbackrest_repository(store):
    """The rule once filtered on the whole prefix, so S3 expired pgBackRest's archive.info with the dumps."""
    assert backup.apply_lifecycle(LIFECYCLE, store) is True
    assert rules_covering(store, "p/pgbackrest/archive/main/archive.info") == []
    assert rules_covering(store, "p/postgresql/app/20260101T000000Z-h.dump.zst") == ["botstack-backup-p-postgresql"]
    assert rules_covering(store, "p/redis/redis/20260101T000000Z-h.rdb.zst") == ["botstack-backup-p-redis"]


def test_lifecycle_days_of_each_kind_stay_put_across_jobs(store):
    """Each job used to put its own days on one shared rule: 7 d (Redis) and 30 d (PostgreSQL) flipped."""
    assert backup.apply_lifecycle(LIFECYCLE, store) is True
    assert backup.apply_lifecycle(LIFECYCLE, store) is False  # the second job's run: nothing to change
    days = {r["ID"]: r["Expiration"]["Days"] for r in store.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert days == {"botstack-backup-p-postgresql": 30, "botstack-backup-p-redis": 7}


def test_lifecycle_replaces_the_old_whole_prefix_rule_and_keeps_other_tools_rules(store):
    others = {"ID": "someone-elses", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 3}}
    legacy = {"ID": "botstack-backup-expire", "Status": "Enabled", "Filter": {"Prefix": "p/"}, "Expiration": {"Days": 30}}
    store.client.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [others, legacy]})
    assert backup.apply_lifecycle(LIFECYCLE, store) is True
    ids = sorted(r["ID"] for r in store.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"])
    assert ids == ["botstack-backup-p-postgresql", "botstack-backup-p-redis", "someone-elses"]


def test_prune_mode_puts_only_the_abandoned_upload_rule(store):
    config = {"retention": {"mode": "prune", "abort_incomplete_uploads": True}, "retention_days": {"postgresql": 30}}
    assert backup.apply_lifecycle(config, store) is True
    (rule,) = store.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert "Expiration" not in rule and rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert backup.apply_lifecycle(config, store) is False


def test_a_dump_that_dies_after_its_last_byte_leaves_no_object(store):
    """EOF came, then pg_dump's exit status said it failed: the upload must not be completed."""
    def pg_dump_failed():
        raise backup.BackupError("pg_dump exited 1: connection lost")

    with pytest.raises(backup.BackupError):
        store.upload_stream("p/postgresql/db/x.dump.zst", io.BytesIO(b"half a dump"), before_complete=pg_dump_failed)
    assert store.client.list_objects_v2(Bucket=BUCKET, Prefix="p/postgresql/db/").get("KeyCount") == 0
    assert not store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def dump(store, name, age_days, rows, cluster):
    finished = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=age_days)
    backup_id = finished.strftime("%Y%m%dT%H%M%S.%fZ") + "-h"
    base = store.key("postgresql", name, backup_id)
    store.client.put_object(Bucket=BUCKET, Key=base + ".dump.zst", Body=b"x")
    store.put_json(base + ".json", {"id": backup_id, "object_key": base + ".dump.zst", "rows": rows,
                                    "system_identifier": cluster, "finished_at": backup.iso(finished)})
    return backup_id


def test_a_rebuilt_clusters_empty_dumps_never_push_the_old_clusters_out(store):
    good = [dump(store, "db", age, 5000, "old") for age in (40, 39, 38)]
    empty = [dump(store, "db", age / 24, 0, "new") for age in range(10, 0, -1)]  # hourly, after the rebuild
    deleted = backup.prune({"retention": {"days": 30, "keep_min": 2}}, store, "postgresql", "db")
    assert deleted == [good[0]]  # the old cluster keeps its newest keep_min
    assert {m["id"] for m in store.manifests("postgresql", "db")} == set(good[1:]) | set(empty)


def test_the_restore_refuses_a_rebuilt_clusters_empty_dump_and_names_the_good_one(store):
    good = dump(store, "db", 2, 5000, "old")
    for age in (1.0, 0.5, 0.1):
        dump(store, "db", age, 0, "new")
    with pytest.raises(backup.BackupError) as refused:
        backup.find_backup(store, "postgresql", "db")
    assert good in str(refused.value) and "backup_restore_allow_shrunk" in str(refused.value)
    assert backup.find_backup(store, "postgresql", "db", backup_id=good)["id"] == good
    assert backup.find_backup(store, "postgresql", "db", allow_shrunk=True)["rows"] == 0


def test_a_refilled_cluster_is_trusted_and_a_collapse_within_one_cluster_is_refused(store):
    dump(store, "db", 3, 5000, "old")
    dump(store, "db", 2, 0, "new")
    refilled = dump(store, "db", 1, 4900, "new")  # restored, then backed up again
    assert backup.find_backup(store, "postgresql", "db")["id"] == refilled
    dump(store, "db", 0.5, 100, "new")  # most rows gone since the last backup
    with pytest.raises(backup.BackupError, match="the data collapsed"):
        backup.find_backup(store, "postgresql", "db")


def test_prune_removes_orphans_and_abandoned_uploads_but_not_a_young_object(store, monkeypatch):
    kept = dump(store, "db", 0, 10, "c")
    store.client.put_object(Bucket=BUCKET, Key="p/postgresql/db/orphan.dump.zst", Body=b"x")
    # moto dates every upload 2010-11-10: this one counts as abandoned long ago.
    store.client.create_multipart_upload(Bucket=BUCKET, Key="p/postgresql/db/abandoned.dump.zst")
    deleted = backup.prune({"retention": {"days": 30, "keep_min": 1}}, store, "postgresql", "db")
    assert deleted == [] and not store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    listed = [o["Key"] for o in store.client.list_objects_v2(Bucket=BUCKET, Prefix="p/postgresql/db/")["Contents"]]
    assert "p/postgresql/db/orphan.dump.zst" in listed  # young: it may be a backup about to get its manifest
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
    monkeypatch.setattr(backup, "now", lambda: later)
    backup.prune({"retention": {"days": 30, "keep_min": 1}}, store, "postgresql", "db")
    listed = [o["Key"] for o in store.client.list_objects_v2(Bucket=BUCKET, Prefix="p/postgresql/db/")["Contents"]]
    assert "p/postgresql/db/orphan.dump.zst" not in listed and [m["id"] for m in store.manifests("postgresql", "db")] == [kept]


def families(path):
    """{family: (HELP line, TYPE line)} of one .prom file."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            _, what, family, *_ = line.split(" ", 3)
            found.setdefault(family, {})[what] = line
    return found


def test_every_writer_gives_a_family_the_same_help_and_type(tmp_path):
    """node_exporter drops a family whose HELP differs between two files: the PITR kinds never reached Prometheus."""
    backup.Metrics({"metrics_dir": str(tmp_path), "state_dir": str(tmp_path)}, "postgresql", "db").record(
        last_result=1, last_success_timestamp_seconds=100, last_attempt_timestamp_seconds=100,
        drill_last_result=1, drill_last_timestamp_seconds=100)
    assert backup.main(["metric", "--dir", str(tmp_path), "--file", "botstack_pitr_backup_main_full",
                        "--label", "kind=pitr-full", "--label", "name=main", "botstack_backup_last_result=1",
                        "botstack_backup_last_success_timestamp_seconds=200"]) == 0
    assert backup.main(["metric", "--dir", str(tmp_path), "--file", "botstack_pitr_drill_main", "--label", "kind=pitr",
                        "--label", "name=main", "botstack_backup_drill_last_result=0",
                        "botstack_backup_drill_last_timestamp_seconds=300"]) == 0
    seen = {}
    for path in tmp_path.glob("*.prom"):
        for family, lines in families(path).items():
            assert set(lines) == {"HELP", "TYPE"}, (path, family)
            assert seen.setdefault(family, lines) == lines, (path, family)
    assert {"botstack_backup_last_result", "botstack_backup_drill_last_result"} <= set(seen)


def test_a_failed_pitr_backup_keeps_the_last_success_time_and_refuses_junk(tmp_path):
    args = ["metric", "--dir", str(tmp_path), "--file", "f", "--label", "kind=pitr-diff",
            "--keep", "botstack_backup_last_success_timestamp_seconds"]
    assert backup.main(args + ["botstack_backup_last_result=1", "botstack_backup_last_success_timestamp_seconds=50"]) == 0
    assert backup.main(args + ["botstack_backup_last_result=0"]) == 0
    text = (tmp_path / "f.prom").read_text()
    assert 'botstack_backup_last_success_timestamp_seconds{kind="pitr-diff"} 50' in text
    assert 'botstack_backup_last_result{kind="pitr-diff"} 0' in text
    assert backup.main(args + ["botstack_backup_last_result=oops"]) == 1
    assert backup.main(args + ["botstack_made_up=1"]) == 1
    assert (tmp_path / "f.prom").read_text() == text


def test_ensure_bucket_reports_creation_once(store):
    store.bucket = "another-bucket"
    assert store.ensure_bucket() is True and store.ensure_bucket() is False


def test_metrics_file_keeps_the_last_good_values_after_a_failure(tmp_path):
    config = {"metrics_dir": str(tmp_path), "state_dir": str(tmp_path)}
    metrics = backup.Metrics(config, "postgresql", "db")
    old_umask = os.umask(0o077)  # the backup units' UMask
    try:
        metrics.record(last_result=1)
    finally:
        os.umask(old_umask)
    # Readable by node_exporter, which runs as another user.
    assert (tmp_path / "botstack_backup_postgresql_db.prom").stat().st_mode & 0o777 == 0o644
    metrics.record(last_result=1, last_success_timestamp_seconds=100, last_size_bytes=42)
    metrics.record(last_result=0, last_attempt_timestamp_seconds=200)
    text = (tmp_path / "botstack_backup_postgresql_db.prom").read_text()
    assert 'botstack_backup_last_result{kind="postgresql",name="db"} 0' in text
    assert 'botstack_backup_last_success_timestamp_seconds{kind="postgresql",name="db"} 100' in text
    assert 'botstack_backup_last_size_bytes{kind="postgresql",name="db"} 42' in text
    assert json.loads((tmp_path / "postgresql-db.json").read_text())["last_result"] == 0


def _victim(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    return victim


def test_metrics_never_follow_a_symlink_planted_in_the_shared_directory(tmp_path):
    """The metrics directory is group-writable: another writer may plant symlinks at any name there."""
    victim = _victim(tmp_path)
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    (textfile / ".botstack_backup_postgresql_db.prom.tmp").symlink_to(victim)  # the old fixed temporary name
    (textfile / "botstack_backup_postgresql_db.prom").symlink_to(victim)
    state = tmp_path / "state"
    state.mkdir()
    (state / "postgresql-db.tmp").symlink_to(victim)
    backup.Metrics({"metrics_dir": str(textfile), "state_dir": str(state)}, "postgresql", "db").record(last_result=1)
    assert victim.read_text() == "root:secret\n" and victim.stat().st_mode & 0o777 == 0o600
    target = textfile / "botstack_backup_postgresql_db.prom"
    assert not target.is_symlink() and target.stat().st_mode & 0o777 == 0o644
    assert 'botstack_backup_last_result{kind="postgresql",name="db"} 1' in target.read_text()
    assert json.loads((state / "postgresql-db.json").read_text()) == {"last_result": 1}


def test_a_redis_restore_as_root_writes_nothing_through_a_planted_symlink(tmp_path, monkeypatch):
    """The restore runs as root in the redis user's data directory, where that user can plant symlinks at any
    time - before the restore (moved aside with the data) or just after the data was moved aside."""
    victim = _victim(tmp_path)
    data = tmp_path / "redis"
    data.mkdir()
    (data / "dump.rdb").symlink_to(victim)
    work = tmp_path / "state"
    work.mkdir()
    config = {"redis": {"dir": str(data), "appendonly": True, "name": "redis"}, "work_dir": str(work)}
    snapshot = b"REDIS0011 snapshot"
    monkeypatch.setattr(backup, "find_backup", lambda *args, **kwargs: {"id": "b1"})

    def download(config, store, manifest, target, dir_fd=None):
        with open(target, "wb", opener=backup._new_file_opener(dir_fd)) as out:
            out.write(snapshot)

    monkeypatch.setattr(backup, "download_verified", download)
    calls = []
    monkeypatch.setattr(backup.subprocess, "run", lambda argv, check: calls.append(argv[1]))

    class Client:
        def ping(self):
            return True

    monkeypatch.setattr(backup, "redis_client", lambda config: Client())
    real_rename = os.rename

    def rename_then_plant(src, dst, **kwargs):
        # The redis user wins every race: a symlink at each name as soon as it is free.
        real_rename(src, dst, **kwargs)
        (data / src).symlink_to(victim if src == "dump.rdb" else tmp_path)

    monkeypatch.setattr(backup.os, "rename", rename_then_plant)
    result = backup.restore_redis(config, store=None)
    assert calls == ["stop", "start"]
    assert victim.read_text() == "root:secret\n" and victim.stat().st_mode & 0o777 == 0o600
    assert not (data / "dump.rdb").is_symlink() and (data / "dump.rdb").read_bytes() == snapshot
    aof = data / "appendonlydir"
    assert not aof.is_symlink() and (aof / "appendonly.aof.1.base.rdb").read_bytes() == snapshot
    assert "seq 1 type b" in (aof / "appendonly.aof.manifest").read_text()
    aside = pathlib.Path(result["kept_aside"])
    assert (aside / "dump.rdb").is_symlink()  # the planted link was moved aside, never written through
    assert list(work.iterdir()) == []  # the work directory is gone


class Cluster:
    """A PostgreSQL admin session's statements, played against a set of databases; one statement fails once."""

    def __init__(self, databases, failing):
        self.databases, self.failing, self.statements = dict(databases), failing, []

    def cursor(self):
        return self

    def close(self):
        pass

    def fetchone(self):
        return self._row

    def execute(self, statement, params=None):
        text = statement if isinstance(statement, str) else statement.as_string(None)
        self.statements.append(text)
        self._row = None
        if text.startswith("SELECT 1 FROM pg_database"):
            self._row = (1,) if params[0] in self.databases else None
        elif self.failing and self.failing in text:
            self.failing = None  # once: the revert's own statements succeed
            raise RuntimeError("failed: " + text)
        elif " RENAME TO " in text:
            old, new = (part.strip('" ') for part in text[len("ALTER DATABASE "):].split(" RENAME TO "))
            self.databases[new] = self.databases.pop(old)
        elif "ALLOW_CONNECTIONS" in text:
            name = text.split('"')[1]
            self.databases[name] = text.endswith("true")
        elif text.startswith("CREATE DATABASE"):
            self.databases[text.split('"')[1]] = True
        elif text.startswith("DROP DATABASE IF EXISTS"):
            self.databases.pop(text.split('"')[1], None)
        return self


@pytest.mark.parametrize("failing", ['RENAME TO "app"', 'RENAME TO "app__replaced_', "ALLOW_CONNECTIONS true"])
def test_a_restore_that_fails_over_a_live_database_leaves_it_serving(tmp_path, monkeypatch, failing):
    """Connections to the live database are closed before its rename: whatever fails after, it takes them again."""
    cluster = Cluster({"app": True}, failing)
    monkeypatch.setattr(backup, "pg_connect", lambda config, database: cluster)
    monkeypatch.setattr(backup, "database_exists", lambda cursor, name: name in cluster.databases)
    monkeypatch.setattr(backup, "find_backup", lambda *args, **kwargs: {"id": "b1", "owner": "bot"})
    monkeypatch.setattr(backup, "download_verified", lambda *args, **kwargs: None)
    monkeypatch.setattr(backup.subprocess, "run", lambda *args, **kwargs: backup.subprocess.CompletedProcess(args, 0))
    monkeypatch.setattr(backup.time, "sleep", lambda seconds: None)
    with pytest.raises(RuntimeError):
        backup.restore_postgresql({"work_dir": str(tmp_path)}, None, "app", "app", overwrite=True)
    serving = {name: open_ for name, open_ in cluster.databases.items() if not name.endswith("__restoring")}
    if failing == "ALLOW_CONNECTIONS true":
        # The restored database took the name; the replaced one is open again for the operator (second try).
        assert serving.get("app") is True and len(serving) == 2
    else:
        assert serving == {"app": True}, cluster.statements
    assert "app__restoring" not in cluster.databases


def test_keys_are_per_host_and_a_hosts_older_backups_still_count(monkeypatch):
    """Two hosts with a database of one name shared <prefix>/postgresql/<db>/: the newest dump of either restored."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        stores = {}
        for host in ("db1", "db2"):
            stores[host] = backup.Store({"s3": {"bucket": BUCKET, "prefix": "p"}, "host_key": host})
            stores[host].fqdn = host + ".example.net"
        stores["db1"].client.create_bucket(Bucket=BUCKET)
        legacy_own = dump(stores["db1"], "app", 3, 10, "c1")  # no host_key in the path: written before
        first = stores["db1"].manifests("postgresql", "app")
        assert first == []  # legacy manifests count only with this host's FQDN in them
        for manifest_key in [k["Key"] for k in stores["db1"].objects("p/postgresql/app/") if k["Key"].endswith(".json")]:
            document = json.loads(stores["db1"].client.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
            stores["db1"].put_json(manifest_key, dict(document, host="db1.example.net"))
        own, other = (stores[host].series("postgresql", "app") for host in ("db1", "db2"))
        assert (own, other) == ("p/postgresql/db1/app/", "p/postgresql/db2/app/")
        for store, age in ((stores["db1"], 2), (stores["db2"], 1)):
            store.client.put_object(Bucket=BUCKET, Key=store.series("postgresql", "app") + "b.dump.zst", Body=b"x")
            finished = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=age)
            store.put_json(store.series("postgresql", "app") + "b.json", {
                "id": "b-" + store.host, "object_key": store.series("postgresql", "app") + "b.dump.zst",
                "finished_at": backup.iso(finished), "host": store.fqdn})
        assert [m["id"] for m in stores["db1"].manifests("postgresql", "app")] == ["b-db1", legacy_own]
        assert [m["id"] for m in stores["db2"].manifests("postgresql", "app")] == ["b-db2"]
        # db2's newer dump is not db1's newest; another host's series is reached by name.
        assert backup.find_backup(stores["db1"], "postgresql", "app")["id"] == "b-db1"
        assert backup.find_backup(stores["db1"], "postgresql", "app", host="db2")["id"] == "b-db2"


def test_with_object_lock_a_delete_only_hides_a_backup_and_the_restore_finds_it(monkeypatch):
    """The database host holds keys that can delete every dump: with Object Lock they only add delete markers."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        store = backup.Store({"s3": {"bucket": BUCKET, "prefix": "p"}, "host_key": "db1",
                              "object_lock": {"days": 1, "mode": "COMPLIANCE"}})
        assert store.ensure_bucket() is True
        store.check()  # Object Lock enabled: accepted
        key = store.series("postgresql", "app") + "b1.dump.zst"
        store.upload_stream(key, io.BytesIO(b"dump bytes"))
        store.put_json(store.series("postgresql", "app") + "b1.json", {
            "id": "b1", "object_key": key, "finished_at": backup.iso(backup.now()), "rows": 3})
        manifest_key = store.series("postgresql", "app") + "b1.json"
        # (moto keeps no lock from a multipart upload's creation; SeaweedFS does: molecule/backup checks it there.)
        assert store.client.head_object(Bucket=BUCKET, Key=manifest_key)["ObjectLockMode"] == "COMPLIANCE"
        # The compromised host deletes everything it can see.
        listed = [o["Key"] for o in store.objects("p/")]
        store.delete(listed)
        assert store.manifests("postgresql", "app") == []
        with pytest.raises(backup.BackupError, match="no postgresql backup"):
            backup.find_backup(store, "postgresql", "app")
        found = backup.find_backup(store, "postgresql", "app", include_deleted=True)
        assert found["id"] == "b1" and found["hidden"]
        body = store.client.get_object(Bucket=BUCKET, Key=key, VersionId=found["object_version_id"])["Body"].read()
        assert body == b"dump bytes"
        versions = store.client.list_object_versions(Bucket=BUCKET, Prefix=manifest_key)["Versions"]
        with pytest.raises(store.client.exceptions.ClientError):
            store.client.delete_object(Bucket=BUCKET, Key=manifest_key, VersionId=versions[0]["VersionId"])


def test_object_lock_on_a_bucket_without_it_is_refused(store):
    store.lock_days = 1
    with pytest.raises(backup.BackupError, match="has no Object Lock"):
        store.check()


def test_an_earlier_clusters_backups_age_out_once_the_new_one_has_grown(store):
    """keep_min protects the newest lineage (and the one it replaces while it is still empty), not every lineage
    forever: an upgraded or rebuilt-and-restored cluster's predecessors go with age like any backup."""
    old = [dump(store, "db", age, 5000, "old") for age in (40, 39, 38)]
    grown = [dump(store, "db", age, 5100, "new") for age in (35, 2, 1)]
    deleted = backup.prune({"retention": {"days": 30, "keep_min": 2}}, store, "postgresql", "db")
    assert sorted(deleted) == sorted(old + grown[:1])  # the new lineage's two young ones are its keep_min
    assert {m["id"] for m in store.manifests("postgresql", "db")} == set(grown[1:])


def test_restoring_roles_keeps_the_password_of_a_role_that_exists(tmp_path, monkeypatch):
    script = ("CREATE ROLE bot;\nALTER ROLE bot WITH LOGIN PASSWORD 'SCRAM-SHA-256$old';\n"
              "CREATE ROLE reporting;\nALTER ROLE reporting WITH NOLOGIN PASSWORD 'SCRAM-SHA-256$kept';\n")
    ran = {}

    class Connection:
        def execute(self, query):
            return self

        def fetchall(self):
            return [("bot",), ("postgres",)]

        def close(self):
            pass

    monkeypatch.setattr(backup, "find_backup", lambda *args, **kwargs: {"id": "g1", "roles": 2})
    monkeypatch.setattr(backup, "download_verified", lambda config, store, manifest, target: target.write_text(script))
    monkeypatch.setattr(backup, "pg_connect", lambda config, database: Connection())

    def psql(argv, **kwargs):
        ran["sql"] = pathlib.Path(argv[-1]).read_text()
        return backup.subprocess.CompletedProcess(argv, 0, "", 'ERROR:  role "bot" already exists\n')

    monkeypatch.setattr(backup.subprocess, "run", psql)
    result = backup.restore_globals({"work_dir": str(tmp_path)}, None)
    assert result["passwords_kept"] == 1 and result["already_existed"] == 1
    assert "ALTER ROLE bot WITH LOGIN;" in ran["sql"] and "SCRAM-SHA-256$old" not in ran["sql"]
    assert "PASSWORD 'SCRAM-SHA-256$kept'" in ran["sql"]
