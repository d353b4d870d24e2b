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


def test_lifecycle_rule_is_put_once(store):
    config = {"retention": {"days": 30}}
    assert backup.apply_lifecycle(config, store) is True
    assert backup.apply_lifecycle(config, store) is False
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rules[0]["Expiration"] == {"Days": 30} and rules[0]["Filter"] == {"Prefix": "p/"}


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
    monkeypatch.setattr(backup, "find_backup", lambda store, kind, name, backup_id=None: {"id": "b1"})

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
