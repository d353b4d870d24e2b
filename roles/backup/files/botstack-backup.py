#!/usr/bin/env python3
"""botstack-backup: streaming, encrypted PostgreSQL and Redis backups to S3.

pg_dump -Fc -Z0 (in an exported snapshot) | zstd -T | age  ->  S3 multipart upload, then a
manifest beside the object (written last: no manifest, no backup). Restore downloads, checks
the sha256 while decrypting, and only then writes to a database. Configuration: one JSON file
per job (see the backup role); secrets live only there (0600).
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

# boto3 and botocore.config load only where a command talks to S3 (Store): the textfile metrics units run
# `metric` every few seconds, and importing them costs more CPU than the rest of that command.
import botocore.exceptions

MANIFEST_FORMAT = 1
UTC = datetime.timezone.utc


class BackupError(Exception):
    """A failure with a message meant for the operator."""


def log(event, **fields):
    # One JSON line per event on stderr (journald keeps it; stdout stays for results), never a secret.
    print(json.dumps({"event": event, **fields}, sort_keys=True, default=str), file=sys.stderr, flush=True)


def peak_rss_mb():
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def now():
    return datetime.datetime.now(UTC)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class Store:
    """The S3 side: keys, multipart uploads, manifests."""

    def __init__(self, config):
        s3 = config["s3"]
        self.bucket = s3["bucket"]
        self.prefix = s3.get("prefix", "").strip("/")
        # Objects live under <prefix>/<kind>/<host>/<name>/: databases of one name on two hosts (and every
        # host's Redis) never share a series. Without a host (older configurations): <prefix>/<kind>/<name>/.
        self.host = config.get("host_key") or ""
        self.fqdn = socket.getfqdn()
        self.storage_class = s3.get("storage_class") or ""
        self.sse = s3.get("sse") or ""
        self.sse_kms_key_id = s3.get("sse_kms_key_id") or ""
        self.part_size = int(config.get("part_size_mb", 16)) * 1024 * 1024
        self.upload_threads = int(config.get("upload_threads", 2))
        # S3 Object Lock: every object (dump and manifest) is kept, whatever deletes it, for lock_days. A host's
        # keys then delete nothing for good: a delete only hides an object behind a delete marker.
        lock = config.get("object_lock") or {}
        self.lock_days = int(lock.get("days") or 0)
        self.lock_mode = lock.get("mode") or "COMPLIANCE"
        import boto3
        import botocore.config

        kwargs = {
            "region_name": s3.get("region") or "us-east-1",
            "config": botocore.config.Config(
                retries={"max_attempts": 5, "mode": "standard"},
                s3={"addressing_style": s3.get("addressing_style") or "auto"},
                connect_timeout=10,
                read_timeout=120,
            ),
        }
        if s3.get("endpoint_url"):
            kwargs["endpoint_url"] = s3["endpoint_url"]
        if s3.get("access_key_id"):
            kwargs["aws_access_key_id"] = s3["access_key_id"]
            kwargs["aws_secret_access_key"] = s3["secret_access_key"]
        if s3.get("ca_bundle"):
            kwargs["verify"] = s3["ca_bundle"]
        self.client = boto3.client("s3", **kwargs)

    def key(self, *parts):
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _object_args(self):
        args = {}
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse == "aws:kms" and self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.lock_days:
            args["ObjectLockMode"] = self.lock_mode
            args["ObjectLockRetainUntilDate"] = now() + datetime.timedelta(days=self.lock_days)
        return args

    def check(self):
        # A GET (not HEAD) so a refusal comes with its code (SignatureDoesNotMatch, AccessDenied...).
        self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(""), MaxKeys=1)
        if self.lock_days:
            try:
                enabled = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
            except botocore.exceptions.ClientError as error:
                enabled = {"error": str(error)}
            if enabled.get("ObjectLockEnabled") != "Enabled":
                raise BackupError(
                    "backup_s3_object_lock_days is set but s3://%s has no Object Lock (%s): create the bucket with Object "
                    "Lock (backup_s3_create_bucket does) or enable it on the versioned bucket" % (self.bucket, enabled))

    def ensure_bucket(self):
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
        self.client.create_bucket(Bucket=self.bucket, **({"ObjectLockEnabledForBucket": True} if self.lock_days else {}))
        return True

    def upload_stream(self, key, stream, before_complete=None):
        """Multipart upload of a stream; returns (size, sha256). Aborted on any failure.

        before_complete runs after the stream's end and before the upload is completed: a producer that
        died mid-stream (its exit status read there) aborts the upload, so no object looks complete."""
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **self._object_args())
        upload_id = upload["UploadId"]
        digest, size, parts, futures = hashlib.sha256(), 0, [], []
        # At most upload_threads parts in flight plus the one being read: bounded memory.
        slots = threading.Semaphore(self.upload_threads)

        def send(number, body):
            try:
                answer = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                return {"PartNumber": number, "ETag": answer["ETag"]}
            finally:
                slots.release()

        try:
            with concurrent.futures.ThreadPoolExecutor(self.upload_threads) as pool:
                number = 0
                while True:
                    body = read_full(stream, self.part_size)
                    if not body and number > 0:
                        break
                    digest.update(body)
                    size += len(body)
                    number += 1
                    slots.acquire()
                    futures.append(pool.submit(send, number, body))
                    del body
                    for done in [f for f in futures if f.done()]:
                        parts.append(done.result())
                        futures.remove(done)
                    if size == 0:
                        break
                for future in futures:
                    parts.append(future.result())
            parts.sort(key=lambda part: part["PartNumber"])
            if before_complete is not None:
                before_complete()
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as error:  # noqa: BLE001 - the original failure matters more
                log("abort_failed", key=key, error=str(error))
            raise
        return size, digest.hexdigest()

    def put_json(self, key, document):
        body = json.dumps(document, indent=2, sort_keys=True).encode()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **self._object_args())

    def series(self, kind, name, host=None):
        """The key prefix of one host's backups of one database (or Redis), with its trailing slash."""
        host = self.host if host is None else host
        return self.key(kind, host, name) + "/"

    def _manifests_under(self, prefix, direct_only=False):
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        extra = {"Delimiter": "/"} if direct_only else {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **extra):
            for item in page.get("Contents", []):
                if item["Key"].endswith(".json"):
                    body = self.client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                    manifest = json.loads(body)
                    manifest["manifest_key"] = item["Key"]
                    found.append(manifest)
        return found

    def hidden_manifests(self, kind, name, host=None):
        """Manifests a delete only hid (Object Lock keeps their versions), each with the version ids of itself and
        of its object: what a restore reads back after someone deleted the backups with this host's keys."""
        prefix = self.series(kind, name, host)
        versions, markers = {}, set()
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Versions", []):
                versions.setdefault(item["Key"], []).append(item)
            for item in page.get("DeleteMarkers", []):
                if item.get("IsLatest"):
                    markers.add(item["Key"])
        found = []
        for key in markers:
            if not key.endswith(".json") or key not in versions:
                continue
            newest = max(versions[key], key=lambda v: v["LastModified"])
            body = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=newest["VersionId"])["Body"].read()
            manifest = json.loads(body)
            objects = versions.get(manifest["object_key"])
            if not objects:
                continue
            manifest.update(manifest_key=key, hidden=True,
                            object_version_id=max(objects, key=lambda v: v["LastModified"])["VersionId"])
            found.append(manifest)
        return found

    def manifests(self, kind, name, host=None):
        """Every manifest of one host's kind/name, newest first. Backups this machine wrote before keys were per
        host (<prefix>/<kind>/<name>/, its own FQDN in the manifest) count too, so they restore and age out."""
        found = self._manifests_under(self.series(kind, name, host))
        if self.host and host in (None, self.host):
            legacy = self._manifests_under(self.key(kind, name) + "/", direct_only=True)
            found += [m for m in legacy if m.get("host") == self.fqdn]
        found.sort(key=lambda m: m["finished_at"], reverse=True)
        return found

    def objects(self, prefix):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def uploads(self, prefix):
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Uploads", [])

    def delete(self, keys):
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})


def read_full(stream, size):
    chunks, remaining = [], size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class Pipeline:
    """A chain of processes whose last stdout is read by Python; every exit status is checked."""

    def __init__(self, commands, stdin=None, env=None):
        self.processes = []
        previous = stdin
        for command in commands:
            process = subprocess.Popen(
                command, stdin=previous, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True, env=env
            )
            if previous is not None and previous is not stdin:
                previous.close()
            previous = process.stdout
            self.processes.append((command, process))
        self.stdout = previous
        self.stderr = {}
        self._threads = [
            threading.Thread(target=self._drain, args=(command[0], process), daemon=True)
            for command, process in self.processes
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, name, process):
        self.stderr[name] = process.stderr.read().decode(errors="replace")[-4000:]

    def kill(self):
        for _, process in self.processes:
            if process.poll() is None:
                process.kill()

    def wait(self):
        failures = []
        for command, process in self.processes:
            code = process.wait()
            if code != 0:
                failures.append((command[0], code))
        for thread in self._threads:
            thread.join(5)
        if failures:
            details = "; ".join(
                "%s exited %d: %s" % (name, code, self.stderr.get(name, "").strip()) for name, code in failures
            )
            raise BackupError(details)


def compress_commands(config):
    zstd = ["zstd", "-q", "-c", "-%d" % int(config.get("zstd_level", 3)), "-T%d" % int(config.get("zstd_threads", 0))]
    commands = [zstd]
    recipients = config.get("encryption", {}).get("recipients") or []
    if recipients:
        age = ["age", "--encrypt"]
        for recipient in recipients:
            age += ["-r", recipient]
        commands.append(age)
    return commands


def decrypt_commands(config, manifest):
    commands = []
    if manifest.get("encrypted"):
        identity = config.get("encryption", {}).get("identity_file")
        if not identity or not os.path.exists(identity):
            raise BackupError(
                "the backup is encrypted and no age identity is installed on this host: "
                "set backup_age_identity (vault) for the hosts that restore"
            )
        commands.append(["age", "--decrypt", "-i", identity])
    commands.append(["zstd", "-q", "-d", "-c"])
    return commands


# ---------------------------------------------------------------- files
# The metrics directory is group-writable (every unit that exports metrics may write it) and a Redis restore runs
# as root in the redis user's directories: whoever can write a directory can plant a symlink at any name in it.
# So a file there is never opened, chmod-ed or chown-ed by name after its creation: it is made under a random
# name (O_EXCL), given its mode and owner on the descriptor, and renamed into place (a symlink at the target
# name is replaced, not followed). The same rules as the collection's module_utils/files.py, which this
# stand-alone program cannot import.

def write_atomic(path, data, mode, uid=-1, gid=-1):
    """Replace path with data (str or bytes)."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        try:
            _write_all(fd, data.encode() if isinstance(data, str) else data)
            if (uid, gid) != (-1, -1):
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, str(path))
    except BaseException:
        _unlink_quietly(tmp)
        raise


def install_at(dir_fd, name, source, mode, uid=-1, gid=-1):
    """Replace name in the directory open as dir_fd with the bytes of source (bytes, or a readable file)."""
    tmp = ".%s.%s.tmp" % (name, os.urandom(6).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        try:
            if isinstance(source, bytes):
                _write_all(fd, source)
            else:
                for chunk in iter(lambda: source.read(1024 * 1024), b""):
                    _write_all(fd, chunk)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly(tmp, dir_fd)
        raise


def open_own_dir(name, dir_fd=None):
    """A directory this process just made, opened without following a symlink; refused when another user's."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        raise BackupError("%s was replaced by another user's directory while in use; nothing was written to it" % name)
    return fd


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(name, dir_fd=None):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


# Every textfile metric of the backup role, written by this program only (the PITR units call
# `botstack-backup metric`): node_exporter drops a family whose HELP or TYPE differs between two files.
METRICS = {
    "botstack_backup_last_success_timestamp_seconds": ("gauge", "End of the newest successful backup (age = time() - this)."),
    "botstack_backup_last_attempt_timestamp_seconds": ("gauge", "End of the newest backup attempt."),
    "botstack_backup_last_result": ("gauge", "1 when the newest attempt succeeded, 0 when it failed."),
    "botstack_backup_last_size_bytes": ("gauge", "Stored size of the newest successful backup."),
    "botstack_backup_last_duration_seconds": ("gauge", "Duration of the newest successful backup."),
    "botstack_backup_drill_last_timestamp_seconds": ("gauge", "End of the newest restore drill."),
    "botstack_backup_drill_last_result": ("gauge", "1 when the newest restore drill matched what was backed up, 0 otherwise."),
    "botstack_backup_drill_restore_seconds": ("gauge", "Duration of the newest restore drill's restore."),
    "botstack_pitr_last_archived_timestamp_seconds": ("gauge", "pg_stat_archiver: when the last WAL segment was archived."),
    "botstack_pitr_last_archive_failure_timestamp_seconds": ("gauge", "pg_stat_archiver: when archiving last failed."),
    "botstack_pitr_archived_total": ("counter", "pg_stat_archiver: WAL segments archived."),
    "botstack_pitr_archive_failures_total": ("counter", "pg_stat_archiver: failed archiving attempts."),
    "botstack_pitr_wal_segments": ("gauge", "WAL segments in pg_wal (they pile up while archiving fails)."),
}


def read_prom(path):
    """The values of a file this program wrote: {metric: value}."""
    values = {}
    try:
        text = pathlib.Path(path).read_text()
    except OSError:
        return values
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series.split("{", 1)[0]] = value
    return values


def write_prom(directory, stem, labels, values):
    """One .prom file: every metric with this program's HELP and TYPE, one label set, replaced atomically
    (the directory is shared with other writers: a new file by mkstemp, never a planted symlink followed)."""
    unknown = sorted(set(values) - set(METRICS))
    if unknown:
        raise BackupError("unknown metric(s): %s" % ", ".join(unknown))
    rendered = ",".join('%s="%s"' % (key, str(value).replace("\\", "\\\\").replace('"', '\\"'))
                        for key, value in labels.items())
    lines = []
    for metric in METRICS:
        if metric in values:
            kind, help_text = METRICS[metric]
            lines += ["# HELP %s %s" % (metric, help_text), "# TYPE %s %s" % (metric, kind),
                      "%s{%s} %s" % (metric, rendered, values[metric])]
    # node_exporter runs as another user; the units' UMask=0077 would hide the file from it.
    write_atomic(pathlib.Path(directory) / (stem + ".prom"), "\n".join(lines) + "\n", 0o644)


class Metrics:
    """node_exporter textfile collector output, plus a state file keeping the last good values."""

    def __init__(self, config, kind, name):
        self.dir = config.get("metrics_dir") or ""
        self.state_path = pathlib.Path(config["state_dir"]) / ("%s-%s.json" % (kind, name))
        self.kind, self.name = kind, name

    def load(self):
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def record(self, **values):
        state = self.load()
        state.update(values)
        write_atomic(self.state_path, json.dumps(state, sort_keys=True), 0o600)
        if not self.dir or not os.path.isdir(self.dir):
            return
        write_prom(self.dir, "botstack_backup_%s_%s" % (self.kind, self.name), {"kind": self.kind, "name": self.name},
                   {"botstack_backup_" + key: value for key, value in state.items()
                    if "botstack_backup_" + key in METRICS})


def record_metric(args):
    """`metric`: the PITR units' writer. Values named by --keep and not given keep the file's current value."""
    values = {}
    for pair in args.values:
        metric, _, value = pair.partition("=")
        float(value)  # a number, or ValueError before anything is written
        values[metric] = value
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", args.file):
        raise BackupError("--file is a plain name, got %r" % args.file)
    current = read_prom(pathlib.Path(args.dir) / (args.file + ".prom"))
    for metric in args.keep or []:
        if metric not in values and metric in current:
            values[metric] = current[metric]
    labels = dict(label.partition("=")[::2] for label in args.label or [])
    write_prom(args.dir, args.file, labels, values)


# ---------------------------------------------------------------- PostgreSQL

def pg_connect(config, database):
    import psycopg

    pg = config.get("postgresql", {})
    # The socket directory is explicit: a bundled libpq does not know Debian's /var/run/postgresql.
    # UTF8 on the client side: a SQL_ASCII database would hand text back as bytes.
    return psycopg.connect(
        dbname=database, host=pg.get("host") or "/var/run/postgresql", port=pg.get("port") or 5432,
        application_name="botstack-backup", client_encoding="UTF8",
    )


def pg_env(config):
    pg = config.get("postgresql", {})
    return dict(os.environ, PGHOST=pg.get("host") or "/var/run/postgresql", PGPORT=str(pg.get("port") or 5432))


TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1, 2
"""


def cluster_identity(cursor):
    """The cluster's system identifier: a rebuilt cluster (initdb again) has a new one, so its dumps
    form a new lineage and never count as newer copies of the old cluster's data."""
    # Guarded: a role without EXECUTE on it (a managed database) must not abort the dump's transaction.
    row = cursor.execute(
        "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')"
        " THEN (SELECT system_identifier FROM pg_control_system())::text END").fetchone()
    return row[0]


def row_counts(cursor):
    from psycopg import sql

    cursor.execute(TABLES_SQL)
    counts = {}
    for schema, table in cursor.fetchall():
        cursor.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        counts["%s.%s" % (schema, table)] = cursor.fetchone()[0]
    return counts


def backup_postgresql(config, store, database):
    started = now()
    backup_id = "%s-%s" % (started.strftime("%Y%m%dT%H%M%SZ"), socket.gethostname())
    encrypted = bool(config.get("encryption", {}).get("recipients"))
    object_key = store.series("postgresql", database) + backup_id + ".dump.zst" + (".age" if encrypted else "")
    import psycopg

    connection = pg_connect(config, database)
    # The dump and the row counts see the same snapshot: the one this transaction exports.
    connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    connection.read_only = True
    try:
        with connection.cursor() as cursor:
            snapshot = cursor.execute("SELECT pg_export_snapshot()").fetchone()[0]
            server_version = cursor.execute("SHOW server_version").fetchone()[0]
            owner, encoding, collate, ctype = cursor.execute(
                "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype"
                " FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            system_identifier = cluster_identity(cursor)
            dump = ["pg_dump", "--format=custom", "--compress=0", "--snapshot=" + snapshot, "--dbname=" + database]
            pipeline = Pipeline([dump] + compress_commands(config), env=pg_env(config))
            counted, count_errors = {}, []

            def count():
                try:
                    counted.update(row_counts(cursor))
                except Exception as error:  # noqa: BLE001 - raised in the main thread below
                    count_errors.append(error)

            counter = threading.Thread(target=count, daemon=True)
            counter.start()
            try:
                size, sha256 = store.upload_stream(object_key, pipeline.stdout, before_complete=pipeline.wait)
            except BaseException:
                pipeline.kill()
                try:
                    pipeline.wait()
                except BackupError as error:
                    log("pipeline_failed", error=str(error))
                # The counting thread still uses the connection: cancel its query and wait for it.
                connection.cancel_safe()
                counter.join(60)
                raise
            counter.join()
            if count_errors:
                raise BackupError("counting rows in the dump's snapshot failed: %s" % count_errors[0])
            connection.commit()
    finally:
        connection.close()
    local_copy(config, "postgresql", database, object_key, store)
    finished = now()
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": "postgresql",
        "id": backup_id,
        "database": database,
        "owner": owner,
        "encoding": encoding,
        "lc_collate": collate,
        "lc_ctype": ctype,
        "system_identifier": system_identifier,
        "host": socket.getfqdn(),
        "postgresql_version": server_version,
        "object_key": object_key,
        "sha256": sha256,
        "size": size,
        "encrypted": encrypted,
        "compression": "zstd",
        "dump_format": "custom",
        "started_at": iso(started),
        "finished_at": iso(finished),
        "row_counts": counted,
        "rows": sum(counted.values()),
    }
    # Written last: a manifest means the object above is complete.
    store.put_json(object_key.rsplit(".dump", 1)[0] + ".json", manifest)
    log("backup_done", kind="postgresql", database=database, id=backup_id, size=size,
        seconds=round((finished - started).total_seconds(), 1), tables=len(counted), peak_rss_mb=peak_rss_mb())
    return manifest


GLOBALS = "_globals"


def backup_globals(config, store):
    """Roles, memberships, role settings and tablespaces (pg_dumpall --globals-only): what a database dump
    does not hold. A series of its own, "_globals", beside the databases'."""
    started = now()
    backup_id = "%s-%s" % (started.strftime("%Y%m%dT%H%M%SZ"), socket.gethostname())
    encrypted = bool(config.get("encryption", {}).get("recipients"))
    object_key = store.series("postgresql", GLOBALS) + backup_id + ".sql.zst" + (".age" if encrypted else "")
    connection = pg_connect(config, "postgres")
    try:
        with connection.cursor() as cursor:
            system_identifier = cluster_identity(cursor)
            roles = cursor.execute("SELECT count(*) FROM pg_roles WHERE rolname !~ '^pg_'").fetchone()[0]
            server_version = cursor.execute("SHOW server_version").fetchone()[0]
            superuser = cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        connection.commit()
    finally:
        connection.close()
    # pg_authid (the passwords) is a superuser's to read: a managed database's admin role gets the rest.
    dumpall = ["pg_dumpall", "--globals-only", "--database=postgres"] + ([] if superuser else ["--no-role-passwords"])
    pipeline = Pipeline([dumpall] + compress_commands(config), env=pg_env(config))
    try:
        size, sha256 = store.upload_stream(object_key, pipeline.stdout, before_complete=pipeline.wait)
    except BaseException:
        pipeline.kill()
        raise
    manifest = {
        "format": MANIFEST_FORMAT, "kind": "postgresql-globals", "id": backup_id, "database": GLOBALS,
        "system_identifier": system_identifier, "host": socket.getfqdn(), "postgresql_version": server_version,
        "object_key": object_key, "sha256": sha256, "size": size, "encrypted": encrypted, "compression": "zstd",
        "started_at": iso(started), "finished_at": iso(now()), "roles": roles, "role_passwords": bool(superuser),
    }
    store.put_json(object_key.rsplit(".sql", 1)[0] + ".json", manifest)
    log("backup_done", kind="postgresql", database=GLOBALS, id=backup_id, size=size, roles=roles)
    return manifest


def restore_globals(config, store, backup_id=None, from_host=None):
    """Replay the roles and memberships into this cluster. Roles that exist already stay (their CREATE fails,
    the ALTERs that follow set their attributes); every other error is reported."""
    manifest = find_backup(store, "postgresql", GLOBALS, backup_id, allow_shrunk=True, host=from_host)
    work = pathlib.Path(tempfile.mkdtemp(prefix="restore-", dir=config["work_dir"]))
    try:
        script = work / "globals.sql"
        download_verified(config, store, manifest, script)
        # A role that exists keeps its password: the inventory (or a rotation since the backup) set it, and an old
        # one put back would lock its app out. Only roles the cluster lacks get theirs from the backup.
        connection = pg_connect(config, "postgres")
        try:
            existing = {row[0] for row in connection.execute("SELECT rolname FROM pg_roles").fetchall()}
        finally:
            connection.close()
        kept = 0
        lines = []
        for line in script.read_text().splitlines():
            match = re.match(r'^ALTER ROLE ("(?:[^"]|"")+"|[^ ]+) ', line)
            if match and " PASSWORD '" in line:
                role = match.group(1).strip('"').replace('""', '"')
                if role in existing:
                    line, count = re.subn(r" PASSWORD '(?:[^']|'')*'", "", line)
                    kept += count
            lines.append(line)
        script.write_text("\n".join(lines) + "\n")
        result = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-d", "postgres", "-f", str(script)],
                                env=pg_env(config), capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    errors = [line for line in result.stderr.splitlines() if "ERROR:" in line]
    already = [line for line in errors if "already exists" in line]
    others = [line for line in errors if line not in already]
    if result.returncode != 0 or others:
        raise BackupError("restoring the roles of %s failed: %s" % (manifest["id"], " | ".join(others[-5:]) or result.stderr[-1500:]))
    log("restore_done", kind="postgresql", source=GLOBALS, id=manifest["id"], roles=manifest.get("roles"),
        already_existed=len(already), passwords_kept=kept)
    return {"id": manifest["id"], "target": "roles", "already_existed": len(already), "passwords_kept": kept}


def local_copy(config, kind, name, object_key, store):
    """Optional: keep a local copy of the stored object (downloaded back, so it is what S3 holds)."""
    local = config.get("local_copy") or {}
    if not local.get("dir"):
        return
    target_dir = pathlib.Path(local["dir"]) / kind / name
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / object_key.rsplit("/", 1)[-1]
    partial = target.with_name(target.name + ".partial")
    store.client.download_file(store.bucket, object_key, str(partial))
    partial.replace(target)
    copies = sorted(target_dir.glob("*.zst*"), key=lambda p: p.name, reverse=True)
    for old in copies[int(local.get("keep", 2)):]:
        old.unlink()


def lineage(manifest):
    """Dumps of one cluster share a lineage; older manifests (no identity recorded) form their own."""
    return manifest.get("system_identifier") or "unrecorded"


def size_of(manifest):
    """What a backup holds, comparable between two backups of one database: rows, or keys for Redis."""
    if "rows" in manifest:
        return manifest["rows"]
    if "row_counts" in manifest:
        return sum(manifest["row_counts"].values())
    return None  # Redis: keys come and go with queues and TTLs, no basis for a refusal


def shrink_reference(manifests, chosen, shrink_limit=0.5):
    """The backup that makes a chosen one look collapsed, or None.

    Within one lineage: the backup just before it, when the chosen one holds less than shrink_limit of it.
    Across lineages: when the chosen backup's cluster is newer than another one's (a rebuilt host), the other
    lineage's newest backup, as long as the new lineage never held shrink_limit of it (once a restore or the
    app has filled the new cluster, its backups are trusted on their own)."""
    size = size_of(chosen)
    if size is None:
        return None
    older = [m for m in manifests if m["finished_at"] < chosen["finished_at"]]
    same = [m for m in older if lineage(m) == lineage(chosen)]
    other = [m for m in older if lineage(m) != lineage(chosen)]
    if same and size_of(same[0]) and size < size_of(same[0]) * shrink_limit:
        return same[0]
    if other and size_of(other[0]):
        grown = [m for m in [chosen] + same if (size_of(m) or 0) >= size_of(other[0]) * shrink_limit]
        if not grown:
            return other[0]
    return None


def find_backup(store, kind, name, backup_id=None, allow_shrunk=False, shrink_limit=0.5, host=None,
                include_deleted=False):
    manifests = store.manifests(kind, name, host)
    if include_deleted:
        manifests = sorted(manifests + store.hidden_manifests(kind, name, host), key=lambda m: m["finished_at"],
                           reverse=True)
    candidates = [m for m in manifests if m["id"] == backup_id] if backup_id else manifests
    if not candidates:
        raise BackupError(
            "no %s backup %sfound under s3://%s/%s/"
            % (kind, ("'%s' " % backup_id) if backup_id else "", store.bucket, store.series(kind, name, host))
        )
    chosen = candidates[0]
    reference = None if allow_shrunk else shrink_reference(manifests, chosen, shrink_limit)
    if reference is not None:
        new_cluster = lineage(chosen) != lineage(reference)
        raise BackupError(
            "restore refused (nothing was changed): backup %s of %s holds %d %s, backup %s%s holds %d; %s. "
            "Restore that one (backup_restore_id=%s / --id %s), or, when the shrink is real, confirm it "
            "(backup_restore_allow_shrunk=true / --allow-shrunk)"
            % (chosen["id"], name, size_of(chosen), "rows" if kind == "postgresql" else "keys", reference["id"],
               " (of the cluster before)" if new_cluster else " (the one before it)", size_of(reference),
               "it was taken of a new, emptier cluster (a rebuilt host?)" if new_cluster else "the data collapsed",
               reference["id"], reference["id"])
        )
    return chosen


def download_verified(config, store, manifest, target_path, dir_fd=None):
    """Object -> sha256 + decrypt + decompress -> target_path (a new file; with dir_fd, a name in that directory).
    Raises before anyone uses a bad file."""
    pipeline = Pipeline(decrypt_commands(config, manifest), stdin=subprocess.PIPE)
    first = pipeline.processes[0][1]
    digest = hashlib.sha256()
    writer_error = []

    def feed():
        # The whole object is hashed even when the decryptor stops early, so a tampered object
        # is reported as such rather than as a decryption error.
        piping = True
        try:
            version = {"VersionId": manifest["object_version_id"]} if manifest.get("object_version_id") else {}
            body = store.client.get_object(Bucket=store.bucket, Key=manifest["object_key"], **version)["Body"]
            for chunk in body.iter_chunks(1024 * 1024):
                digest.update(chunk)
                if piping:
                    try:
                        first.stdin.write(chunk)
                    except BrokenPipeError:
                        piping = False
        except Exception as error:  # noqa: BLE001 - reported below
            writer_error.append(error)
        finally:
            try:
                first.stdin.close()
            except OSError:
                pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    with open(target_path, "wb", opener=_new_file_opener(dir_fd)) as out:
        shutil.copyfileobj(pipeline.stdout, out, 1024 * 1024)
    feeder.join()
    if writer_error:
        pipeline.kill()
        raise BackupError("download of %s failed: %s" % (manifest["object_key"], writer_error[0]))
    if digest.hexdigest() != manifest["sha256"]:
        pipeline.kill()
        os.unlink(target_path, dir_fd=dir_fd)
        raise BackupError(
            "sha256 mismatch for %s: manifest %s, object %s (tampered or corrupted; nothing restored)"
            % (manifest["object_key"], manifest["sha256"], digest.hexdigest())
        )
    pipeline.wait()


def _new_file_opener(dir_fd):
    """open()'s opener: a new file (never an existing name or a symlink), relative to dir_fd when given."""
    def opener(name, flags):
        return os.open(name, flags | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    return opener


def database_exists(cursor, name):
    return cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def restore_postgresql(config, store, source, target, backup_id=None, overwrite=False, keep_replaced=True,
                       allow_shrunk=False, from_host=None, include_deleted=False):
    from psycopg import sql

    admin = pg_connect(config, "postgres")
    admin.autocommit = True
    try:
        cursor = admin.cursor()
        if database_exists(cursor, target) and not overwrite:
            raise BackupError(
                "database '%s' exists: restoring over it needs the explicit confirmation "
                "(restore_confirm_overwrite: true / --confirm-overwrite); the current one is kept aside" % target
            )
        manifest = find_backup(store, "postgresql", source, backup_id, allow_shrunk, host=from_host,
                               include_deleted=include_deleted)
        work = pathlib.Path(tempfile.mkdtemp(prefix="restore-", dir=config["work_dir"]))
        staging = target + "__restoring"
        replaced = closed = None
        try:
            dump_file = work / "dump"
            started = time.monotonic()
            download_verified(config, store, manifest, dump_file)
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))
            # From template0 (whatever template1 holds on this cluster is not part of the backup), with the
            # source database's encoding and locale when the manifest recorded them.
            create = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                sql.Identifier(staging), sql.Identifier(manifest["owner"]))
            if manifest.get("encoding"):
                create += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                    sql.Literal(manifest["encoding"]), sql.Literal(manifest["lc_collate"]),
                    sql.Literal(manifest["lc_ctype"]))
            cursor.execute(create)
            jobs = str(int(config.get("restore_jobs", 2)))
            result = subprocess.run(
                ["pg_restore", "--exit-on-error", "--jobs=" + jobs, "--dbname=" + staging, str(dump_file)],
                env=pg_env(config), capture_output=True, text=True, check=False,
            )
            if result.returncode != 0:
                raise BackupError("pg_restore failed (%d): %s" % (result.returncode, result.stderr.strip()[-2000:]))
            if database_exists(cursor, target):
                replaced = "%s__replaced_%s" % (target, now().strftime("%Y%m%d%H%M%S"))
                # No new sessions, the current ones ended, so it can be renamed; it is kept, not dropped.
                cursor.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(target)))
                closed = target
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (target,),
                )
                time.sleep(0.5)
                cursor.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target), sql.Identifier(replaced)))
                closed = replaced
            cursor.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(target)))
            if replaced:
                # Out of the application's way under its new name: open again for the operator.
                cursor.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(replaced)))
                closed = None
            if replaced and not keep_replaced:
                cursor.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(replaced)))
                replaced = None
        except BaseException:
            # Whatever failed, the database that served before serves again: under its own name when the
            # rename did not happen, put back under it when the new one could not take its place.
            try:
                if closed and closed == replaced and not database_exists(cursor, target):
                    cursor.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(replaced), sql.Identifier(target)))
                    closed = target
                if closed:
                    cursor.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(closed)))
                    log("restore_reverted", target=target, reopened=closed)
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))
            except Exception as error:  # noqa: BLE001 - the restore's own failure is the one to report
                log("restore_revert_failed", target=target, closed=closed, error=str(error))
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        admin.close()
    log("restore_done", kind="postgresql", source=source, target=target, id=manifest["id"],
        replaced=replaced, seconds=round(time.monotonic() - started, 1))
    return {"id": manifest["id"], "target": target, "replaced": replaced, "manifest": manifest}


def check_drill_space(config, root, database):
    """A drill needs room for the decrypted dump and the restored database, both under root, and must leave
    drill_min_free_percent of that filesystem free: a drill never fills the disk production runs on."""
    connection = pg_connect(config, database)
    try:
        size = connection.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    finally:
        connection.close()
    stats = os.statvfs(str(root))
    free, total = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
    # The restored copy is about the database's size; the dump has no indexes but text in COPY form can outgrow
    # its compressed storage: half as much again as a margin.
    needed = int(2.5 * size) + 64 * 1024 * 1024
    keep = total * float(config.get("drill_min_free_percent", 10)) / 100
    if free - needed < keep:
        raise BackupError(
            "restore drill of %s refused (nothing was restored): it needs about %d MiB under %s, which has %d MiB free "
            "of %d MiB, and must leave %s%% free. Free space there, or point backup_drill_dir at another filesystem"
            % (database, needed >> 20, root, free >> 20, total >> 20, config.get("drill_min_free_percent", 10)))
    return needed


class ScratchCluster:
    """A throwaway PostgreSQL cluster in a private directory: sockets there only, no TCP, no archiving, no
    fsync. A drill restored here puts no load, no WAL (nothing reaches the PITR archive) and no database
    into the live cluster."""

    def __init__(self, work, manifest):
        major = str(manifest.get("postgresql_version", "")).split(".")[0]
        candidates = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
        chosen = [p for p in candidates if p.parent.parent.name == major] or candidates[-1:]
        if not chosen:
            raise BackupError("no PostgreSQL server binaries under /usr/lib/postgresql for the drill's scratch cluster")
        self.bin = chosen[0].parent
        self.work = pathlib.Path(work)
        self.data = self.work / "cluster"
        self.log = self.work / "cluster.log"
        self.port = 5432  # the socket lives in the private directory: no clash with the live cluster

    def run(self, *argv):
        result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BackupError("%s failed (%d): %s" % (pathlib.Path(str(argv[0])).name, result.returncode,
                                                      (result.stderr or result.stdout).strip()[-1500:]))
        return result

    def __enter__(self):
        self.run(self.bin / "initdb", "-D", self.data, "--auth=trust", "--username=postgres", "--no-sync",
                  "--encoding=UTF8", "--locale=C.UTF-8")
        options = " ".join([
            "-p %d" % self.port, "-k %s" % self.work, "-c listen_addresses=''", "-c archive_mode=off",
            "-c wal_level=minimal", "-c max_wal_senders=0", "-c fsync=off", "-c synchronous_commit=off",
            "-c full_page_writes=off", "-c jit=off", "-c dynamic_shared_memory_type=mmap", "-c shared_buffers=64MB",
        ])
        try:
            self.run(self.bin / "pg_ctl", "-D", self.data, "-w", "-t", "600", "-l", self.log, "-o", options, "start")
        except BackupError as error:
            log_tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise BackupError("%s; its log: %s" % (error, log_tail)) from error
        return self

    def __exit__(self, *exc):
        subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, check=False)
        return False

    def connect(self, database):
        import psycopg

        return psycopg.connect(dbname=database, host=str(self.work), port=self.port, user="postgres",
                               application_name="botstack-backup-drill", autocommit=True)


def check_row_counts(manifest, counts):
    """A drill's verdict: every table holds the rows its manifest recorded."""
    expected = manifest["row_counts"]
    mismatches = {
        table: {"manifest": expected.get(table), "restored": counts.get(table)}
        for table in sorted(set(expected) | set(counts))
        if expected.get(table) != counts.get(table)
    }
    if mismatches:
        raise BackupError("restore drill of %s: row counts differ from the manifest: %s"
                          % (manifest["id"], json.dumps(mismatches, sort_keys=True)))


def remove_stale_drills(root):
    """A drill killed hard (SIGKILL, a reboot) leaves its scratch cluster and plaintext dump: the next one removes them."""
    for stale in root.glob("drill-*"):
        pid_file = stale / "cluster" / "postmaster.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
            continue  # its postmaster still runs: a drill in progress
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(stale, ignore_errors=True)
        log("drill_stale_removed", path=str(stale))


def drill_in_live_cluster(config, store, database, backup_id, metrics):
    """The drill where this host has no PostgreSQL server binaries: a scratch database in the live cluster."""
    from psycopg import sql

    scratch = database + "__drill"
    try:
        restored = restore_postgresql(config, store, database, scratch, backup_id, overwrite=True, keep_replaced=False)
        connection = pg_connect(config, scratch)
        try:
            with connection.cursor() as cursor:
                counts = row_counts(cursor)
        finally:
            connection.close()
        check_row_counts(restored["manifest"], counts)
    except BaseException:
        metrics.record(drill_last_timestamp_seconds=int(time.time()), drill_last_result=0)
        raise
    finally:
        admin = pg_connect(config, "postgres")
        admin.autocommit = True
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
        admin.close()
    metrics.record(drill_last_timestamp_seconds=int(time.time()), drill_last_result=1)
    log("drill_passed", database=database, id=restored["id"], tables=len(counts), rows=sum(counts.values()),
        where="live cluster")
    return {"id": restored["id"], "tables": len(counts), "rows": sum(counts.values())}


def drill_postgresql(config, store, database, backup_id=None):
    """Restore the newest backup into a scratch cluster and compare every table's row count with its manifest."""
    metrics = Metrics(config, "postgresql", database)
    root = pathlib.Path(config.get("drill_dir") or config["work_dir"])
    work = None
    started = time.monotonic()
    remove_stale_drills(root)
    if not list(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        # A database host elsewhere (client packages only here): the drill restores into that cluster instead.
        return drill_in_live_cluster(config, store, database, backup_id, metrics)
    try:
        manifest = find_backup(store, "postgresql", database, backup_id)
        check_drill_space(config, root, database)
        work = pathlib.Path(tempfile.mkdtemp(prefix="drill-", dir=str(root)))
        dump_file = work / "dump"
        download_verified(config, store, manifest, dump_file)
        with ScratchCluster(work, manifest) as cluster:
            admin = cluster.connect("postgres")
            create = "CREATE DATABASE drill TEMPLATE template0"
            if manifest.get("encoding"):
                from psycopg import sql

                create = sql.SQL(create + " ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                    sql.Literal(manifest["encoding"]), sql.Literal(manifest["lc_collate"]),
                    sql.Literal(manifest["lc_ctype"]))
            admin.execute(create)
            admin.close()
            # Roles are the live cluster's: the scratch cluster restores the data without owners and grants.
            cluster.run(cluster.bin / "pg_restore", "--exit-on-error", "--no-owner", "--no-acl",
                         "--jobs=%d" % int(config.get("restore_jobs", 2)), "--host=%s" % work,
                         "--port=%d" % cluster.port, "--username=postgres", "--dbname=drill", dump_file)
            dump_file.unlink()
            connection = cluster.connect("drill")
            try:
                with connection.cursor() as cursor:
                    counts = row_counts(cursor)
            finally:
                connection.close()
        check_row_counts(manifest, counts)
    except BaseException:
        metrics.record(drill_last_timestamp_seconds=int(time.time()), drill_last_result=0)
        raise
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    metrics.record(drill_last_timestamp_seconds=int(time.time()), drill_last_result=1,
                   drill_restore_seconds=round(time.monotonic() - started, 1))
    log("drill_passed", database=database, id=manifest["id"], tables=len(counts), rows=sum(counts.values()),
        seconds=round(time.monotonic() - started, 1))
    return {"id": manifest["id"], "tables": len(counts), "rows": sum(counts.values())}


# ---------------------------------------------------------------- Redis

def redis_client(config):
    import redis

    settings = config["redis"]
    return redis.Redis(
        host=settings.get("host") or "127.0.0.1", port=int(settings.get("port") or 6379),
        username=settings.get("user") or None, password=settings.get("password") or None,
        ssl=bool(settings.get("tls")), socket_timeout=30,
    )


def backup_redis(config, store):
    started = now()
    client = redis_client(config)
    before = client.lastsave()
    if before.timestamp() >= time.time() - 1:
        time.sleep(1.1)  # LASTSAVE has one-second resolution
    client.bgsave(schedule=True)
    deadline = time.monotonic() + int(config["redis"].get("save_timeout", 600))
    while client.lastsave() == before:
        if time.monotonic() > deadline:
            raise BackupError("BGSAVE did not finish within %ss" % config["redis"].get("save_timeout", 600))
        time.sleep(0.2)
    rdb = pathlib.Path(config["redis"]["dir"]) / config["redis"].get("dbfilename", "dump.rdb")
    backup_id = "%s-%s" % (started.strftime("%Y%m%dT%H%M%SZ"), socket.gethostname())
    name = config["redis"].get("name", "redis")
    encrypted = bool(config.get("encryption", {}).get("recipients"))
    object_key = store.series("redis", name) + backup_id + ".rdb.zst" + (".age" if encrypted else "")
    with open(rdb, "rb") as source:
        pipeline = Pipeline(compress_commands(config), stdin=source)
        try:
            size, sha256 = store.upload_stream(object_key, pipeline.stdout, before_complete=pipeline.wait)
        except BaseException:
            pipeline.kill()
            raise
    keys = sum(int(info.get("keys", 0)) for db, info in client.info("keyspace").items())
    finished = now()
    manifest = {
        "format": MANIFEST_FORMAT, "kind": "redis", "id": backup_id, "database": name,
        "host": socket.getfqdn(), "redis_version": client.info("server").get("redis_version"),
        "object_key": object_key, "sha256": sha256, "size": size, "encrypted": encrypted,
        "compression": "zstd", "started_at": iso(started), "finished_at": iso(finished), "keys": keys,
    }
    store.put_json(object_key.rsplit(".rdb", 1)[0] + ".json", manifest)
    local_copy(config, "redis", name, object_key, store)
    log("backup_done", kind="redis", id=backup_id, size=size, keys=keys)
    return manifest


def restore_redis(config, store, backup_id=None, allow_shrunk=False, from_host=None, include_deleted=False):
    """Stop Redis, keep its data aside, install the snapshot (as the AOF base when AOF is on), start.

    Runs as root in directories the redis user owns (its data directory, the job's state directory): every file
    is written through a descriptor of a directory this process made or opened, never through a path the redis
    user could swap for a symlink meanwhile.
    """
    settings = config["redis"]
    name = settings.get("name", "redis")
    manifest = find_backup(store, "redis", name, backup_id, allow_shrunk, host=from_host,
                           include_deleted=include_deleted)
    data_dir = pathlib.Path(settings["dir"])
    work = pathlib.Path(tempfile.mkdtemp(prefix="restore-", dir=config["work_dir"]))
    work_fd = data_fd = aside_fd = aof_fd = None
    try:
        work_fd = open_own_dir(str(work))
        download_verified(config, store, manifest, "dump.rdb", dir_fd=work_fd)
        service = settings.get("service", "redis-server")
        subprocess.run(["systemctl", "stop", service], check=True)
        data_fd = os.open(str(data_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        aside = data_dir / ("restore-aside-" + now().strftime("%Y%m%d%H%M%S"))
        os.mkdir(aside.name, 0o755, dir_fd=data_fd)
        aside_fd = open_own_dir(aside.name, data_fd)
        dbfilename = settings.get("dbfilename", "dump.rdb")
        appenddir = settings.get("appenddirname", "appendonlydir")
        for entry in (dbfilename, appenddir):
            try:
                os.rename(entry, entry, src_dir_fd=data_fd, dst_dir_fd=aside_fd)
            except FileNotFoundError:
                pass
        stat = os.fstat(data_fd)
        owner = (stat.st_uid, stat.st_gid)
        if settings.get("appendonly"):
            # With AOF on, Redis ignores dump.rdb when no AOF exists: install it as the AOF base.
            os.mkdir(appenddir, 0o750, dir_fd=data_fd)
            aof_fd = open_own_dir(appenddir, data_fd)
            with open("dump.rdb", "rb", opener=_dir_opener(work_fd)) as snapshot:
                install_at(aof_fd, "appendonly.aof.1.base.rdb", snapshot, 0o640, *owner)
            install_at(aof_fd, "appendonly.aof.1.incr.aof", b"", 0o640, *owner)
            install_at(aof_fd, "appendonly.aof.manifest",
                       b"file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
                       0o640, *owner)
            os.fchown(aof_fd, *owner)
        with open("dump.rdb", "rb", opener=_dir_opener(work_fd)) as snapshot:
            install_at(data_fd, dbfilename, snapshot, 0o640, *owner)
        subprocess.run(["systemctl", "start", service], check=True)
        client = redis_client(config)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.ping():
                    break
            except Exception:  # noqa: BLE001 - loading; retried until the deadline
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)
    finally:
        for fd in (work_fd, data_fd, aside_fd, aof_fd):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(work, ignore_errors=True)  # fd-based: never follows a symlink inside
    log("restore_done", kind="redis", id=manifest["id"], kept_aside=str(aside))
    return {"id": manifest["id"], "kept_aside": str(aside)}


def _dir_opener(dir_fd):
    def opener(name, flags):
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
    return opener


# ---------------------------------------------------------------- retention

def prune(config, store, kind, name, dry_run=False, orphan_grace_hours=24):
    """Delete backups older than retention days, always keeping the newest keep_min of every lineage.

    A lineage is one cluster's backups: the dumps of a rebuilt (empty) cluster never push the old cluster's
    last good backups out. Objects no manifest names (a dump that died after its upload) and multipart
    uploads abandoned for orphan_grace_hours go too: nothing else ever completes them."""
    retention = config["retention"]
    days, keep_min = int(retention["days"]), int(retention["keep_min"])
    manifests = store.manifests(kind, name)
    cutoff = now() - datetime.timedelta(days=days)
    # keep_min protects the newest lineage, and the one before it while the newest never held half its rows (a
    # rebuilt, still empty cluster); older lineages (an earlier cluster, dumps from before identities were
    # recorded) age out like any backup.
    order = []
    for manifest in manifests:
        if lineage(manifest) not in order:
            order.append(lineage(manifest))
    protected = set(order[:1])
    if len(order) > 1 and shrink_reference(manifests, manifests[0]) is not None:
        protected.add(order[1])
    doomed, kept_per_lineage = [], {}
    for manifest in manifests:  # newest first
        seen = kept_per_lineage.get(lineage(manifest), 0)
        young = parse_iso(manifest["finished_at"]) >= cutoff
        if young or (lineage(manifest) in protected and seen < keep_min):
            kept_per_lineage[lineage(manifest)] = seen + 1
        else:
            doomed.append(manifest)
    keys = []
    for manifest in doomed:
        keys += [manifest["object_key"], manifest["manifest_key"]]
    named = {m[k] for m in manifests for k in ("object_key", "manifest_key")}
    grace = now() - datetime.timedelta(hours=orphan_grace_hours)
    prefix = store.series(kind, name)
    orphans = [item["Key"] for item in store.objects(prefix)
               if item["Key"] not in named and item["LastModified"] < grace]
    abandoned = [upload for upload in store.uploads(prefix) if upload["Initiated"] < grace]
    if not dry_run:
        if keys or orphans:
            store.delete(keys + orphans)
        for upload in abandoned:
            store.client.abort_multipart_upload(Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    log("prune", kind=kind, name=name, kept=len(manifests) - len(doomed), deleted=[m["id"] for m in doomed],
        lineages=len(kept_per_lineage), orphans=orphans, aborted_uploads=len(abandoned), dry_run=dry_run)
    return [m["id"] for m in doomed]


KINDS = ("postgresql", "redis")


def rule_id(store, kind):
    # The prefix is part of the ID: environments sharing a bucket under their own prefixes keep their own rules.
    return "botstack-backup-%s%s" % (store.prefix.replace("/", "-") + "-" if store.prefix else "", kind)


def lifecycle_rules(config, store):
    """This program's lifecycle rules: one per kind of dump, each filtered on that kind's own prefix, so a
    rule never reaches what another tool keeps under the same prefix (the pgBackRest repository) and one
    job's retention never rewrites another's. Mode prune keeps only the abandoned-upload cleanup."""
    rules, retention = [], config["retention"]
    for kind, days in sorted((config.get("retention_days") or {}).items()):
        rule = {"ID": rule_id(store, kind), "Status": "Enabled", "Filter": {"Prefix": store.key(kind) + "/"}}
        if retention.get("abort_incomplete_uploads", True):
            rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": 1}
        if retention.get("mode") == "lifecycle":
            rule["Expiration"] = {"Days": int(days)}
        if store.lock_days:
            # A delete leaves the locked version behind a marker: it goes once its lock has ended.
            rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": 1}
        if len(rule) > 3:
            rules.append(rule)
    repository = (config.get("pitr_repo_prefix") or "").strip("/")
    if store.lock_days and repository:
        # pgBackRest expires and rewrites its files: under Object Lock each leaves a noncurrent version behind.
        # Only those go (one day after they stopped being current); the current repository is never touched.
        rules.append({"ID": rule_id(store, "pgbackrest"), "Status": "Enabled", "Filter": {"Prefix": repository + "/"},
                      "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    return rules


def apply_lifecycle(config, store):
    """Put this program's lifecycle rules; rules of other tools on the bucket are kept as they are."""
    wanted = lifecycle_rules(config, store)
    try:
        rules = store.client.get_bucket_lifecycle_configuration(Bucket=store.bucket).get("Rules", [])
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("NotImplemented", "MethodNotAllowed") and not wanted:
            return False  # an S3 server without lifecycle support, and nothing asked of it
        if code != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    ours = {rule["ID"] for rule in wanted}
    current = {r["ID"]: r for r in rules if r.get("ID") in ours}
    # The rule earlier releases put on the whole prefix ("botstack-backup-expire") expired the pgBackRest
    # repository along with the dumps: it goes. Rules of ours not wanted now (every kind is always listed, so
    # only a change of mode or of Object Lock drops one) go too.
    filter_prefix = store.key("") + "/" if store.prefix else ""
    stale = {r["ID"] for r in rules if r.get("ID") not in ours and (
        r.get("ID") in {rule_id(store, kind) for kind in KINDS + ("pgbackrest",)}
        or (r.get("ID") == "botstack-backup-expire" and (r.get("Filter") or {}).get("Prefix", "") == filter_prefix))}
    fields = ("ID", "Status", "Filter", "Expiration", "AbortIncompleteMultipartUpload", "NoncurrentVersionExpiration")
    changed = bool(stale) or len(current) != len(wanted) or any(
        {k: v for k, v in current.get(rule["ID"], {}).items() if k in fields} != rule for rule in wanted)
    if changed:
        rules = [r for r in rules if r.get("ID") not in ours | stale] + wanted
        if rules:
            store.client.put_bucket_lifecycle_configuration(Bucket=store.bucket, LifecycleConfiguration={"Rules": rules})
        else:
            store.client.delete_bucket_lifecycle(Bucket=store.bucket)
    return changed


# ---------------------------------------------------------------- notification

def notify(config, unit):
    url = config.get("webhook_url")
    if not url:
        log("notify_skipped", unit=unit, reason="no webhook configured")
        return
    host = socket.getfqdn()
    text = ":rotating_light: %s failed on %s (journalctl -u %s)" % (unit, host, unit)
    body = json.dumps({"text": text, "unit": unit, "host": host}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=15) as answer:  # noqa: S310 - URL from the operator's config
        log("notified", unit=unit, status=answer.status)


# ---------------------------------------------------------------- entry point

def run_backup(config, store, kind, names):
    failures = []
    try:
        store.check()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, BackupError) as error:
        for name in names:
            Metrics(config, kind, name).record(last_attempt_timestamp_seconds=int(time.time()), last_result=0)
        raise BackupError("the bucket cannot be reached, nothing was dumped: %s" % error) from error
    for name in names:
        metrics = Metrics(config, kind, name)
        started = time.monotonic()
        try:
            if kind == "redis":
                manifest = backup_redis(config, store)
            elif name == GLOBALS:
                manifest = backup_globals(config, store)
            else:
                manifest = backup_postgresql(config, store, name)
        except Exception as error:  # noqa: BLE001 - recorded, reported, and the exit status says it
            metrics.record(last_attempt_timestamp_seconds=int(time.time()), last_result=0)
            log("backup_failed", kind=kind, name=name, error=str(error))
            failures.append(name)
            continue
        metrics.record(
            last_attempt_timestamp_seconds=int(time.time()), last_success_timestamp_seconds=int(time.time()),
            last_result=1, last_size_bytes=manifest["size"],
            last_duration_seconds=round(time.monotonic() - started, 1),
        )
        # Retention runs only after this name's backup succeeded; its failure is reported, not fatal to the others.
        if config.get("retention", {}).get("mode", "prune") == "prune":
            try:
                prune(config, store, kind, name)
            except Exception as error:  # noqa: BLE001 - counted in the exit status below
                log("prune_failed", kind=kind, name=name, error=str(error))
                failures.append("%s (retention)" % name)
    if failures:
        raise BackupError("%s backup failed for: %s" % (kind, ", ".join(failures)))


def _terminated(number, frame):
    raise SystemExit(128 + number)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="botstack-backup", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="job configuration (JSON); every command but metric needs it")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="reach the bucket with the configured credentials")
    commands.add_parser("ensure-bucket", help="create the bucket when it does not exist")
    backup = commands.add_parser("backup", help="back up every configured database (or --name)")
    backup.add_argument("--name", action="append")
    listing = commands.add_parser("list", help="backups as JSON, newest first")
    listing.add_argument("--name")
    listing.add_argument("--host", help="another host's backups (its inventory name)")
    restore = commands.add_parser("restore", help="restore the newest (or --id) backup")
    restore.add_argument("--name", help="database the backup was taken of")
    restore.add_argument("--target", help="database to restore into (default: --name)")
    restore.add_argument("--id")
    restore.add_argument("--confirm-overwrite", action="store_true")
    restore.add_argument("--include-deleted", action="store_true",
                         help="consider backups a delete hid (Object Lock keeps their versions)")
    restore.add_argument("--globals", action="store_true", help="restore the roles and memberships (pg_dumpall -g)")
    restore.add_argument("--from-host", help="restore another host's backup (its inventory name; default this host)")
    restore.add_argument("--allow-shrunk", action="store_true",
                         help="restore a backup holding far fewer rows (keys) than the one before it")
    drill = commands.add_parser("drill", help="restore into a scratch database and compare row counts")
    drill.add_argument("--name", action="append")
    drill.add_argument("--id")
    prune_parser = commands.add_parser("prune", help="apply retention")
    prune_parser.add_argument("--name", action="append")
    prune_parser.add_argument("--dry-run", action="store_true")
    commands.add_parser("lifecycle", help="put the bucket lifecycle rule (retention mode lifecycle)")
    notify_parser = commands.add_parser("notify", help="post a unit failure to the webhook")
    notify_parser.add_argument("--unit", required=True)
    metric = commands.add_parser("metric", help="write a textfile metric file (for the PITR units)")
    metric.add_argument("--dir", required=True, help="node_exporter's textfile directory")
    metric.add_argument("--file", required=True, help="file name without .prom")
    metric.add_argument("--label", action="append", help="name=value, every series of the file")
    metric.add_argument("--keep", action="append", help="a metric that keeps its current value when not given")
    metric.add_argument("values", nargs="+", help="metric=value")
    args = parser.parse_args(argv)
    # systemd's stop and timeout (SIGTERM) and a dropped session (SIGHUP) unwind like an error: every finally
    # and revert runs (a drill's scratch cluster removed, a live database reopened).
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _terminated)
    if args.command == "metric":
        os.umask(0o022)
        try:
            record_metric(args)
        except (BackupError, ValueError, OSError) as error:
            print("botstack-backup: %s" % error, file=sys.stderr)
            return 1
        return 0
    if not args.config:
        parser.error("--config is required for %s" % args.command)

    with open(args.config) as handle:
        config = json.load(handle)
    kind = config["kind"]
    names = config.get("databases") if kind == "postgresql" else [config.get("redis", {}).get("name", "redis")]
    if kind == "postgresql" and config.get("globals", True):
        names = list(names) + [GLOBALS]
    selected = getattr(args, "name", None)
    if isinstance(selected, list) and selected:
        names = selected
    os.umask(0o077)
    try:
        if args.command == "notify":
            notify(config, args.unit)
            return 0
        store = Store(config)
        if args.command == "check":
            store.check()
            log("check_ok", bucket=store.bucket)
        elif args.command == "ensure-bucket":
            print(json.dumps({"changed": store.ensure_bucket()}))
        elif args.command == "backup":
            run_backup(config, store, kind, names)
        elif args.command == "list":
            result = {name: store.manifests(kind, name, args.host) for name in names if not args.name or name == args.name}
            print(json.dumps(result, indent=2, sort_keys=True))
        elif args.command == "restore":
            if kind == "postgresql" and (args.globals or args.name == GLOBALS):
                result = restore_globals(config, store, args.id, from_host=args.from_host)
            elif kind == "postgresql":
                source = args.name or names[0]
                result = restore_postgresql(config, store, source, args.target or source, args.id, args.confirm_overwrite,
                                            allow_shrunk=args.allow_shrunk, from_host=args.from_host,
                                            include_deleted=args.include_deleted)
                result.pop("manifest")
            else:
                result = restore_redis(config, store, args.id, allow_shrunk=args.allow_shrunk, from_host=args.from_host,
                                       include_deleted=args.include_deleted)
            print(json.dumps({"restored": result}, sort_keys=True))
        elif args.command == "drill":
            failures = []
            for name in [n for n in names if n != GLOBALS]:
                try:
                    drill_postgresql(config, store, name, args.id)
                except Exception as error:  # noqa: BLE001 - every database is drilled, then the status says it
                    log("drill_failed", database=name, error=str(error))
                    failures.append(name)
            if failures:
                raise BackupError("restore drill failed for: " + ", ".join(failures))
        elif args.command == "prune":
            for name in names:
                prune(config, store, kind, name, args.dry_run)
        elif args.command == "lifecycle":
            print(json.dumps({"changed": apply_lifecycle(config, store)}))
    except (BackupError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        log("error", command=args.command, error=str(error))
        print("botstack-backup: %s" % error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
