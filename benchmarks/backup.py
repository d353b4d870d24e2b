#!/usr/bin/env python3
"""Backup throughput, restore time, uploader memory and size: the seed's way vs botstack-backup.

On this machine, with throwaway processes on loopback only: a PostgreSQL 15 cluster in a temporary
directory filled with realistic rows (uuid, text, jsonb, timestamps; not pgbench's), and a SeaweedFS
S3 server (from .venv-tools, `make setup`). Side by side in one run:

  naive:  pg_dump -Fc > file (its own compression, what a user writes), then upload the file (boto3 upload_file)
  ours:   botstack-backup backup (pg_dump -Fc -Z0 | zstd -T | age -> multipart upload, row counts)
  restore: botstack-backup restore (download + sha256 + decrypt + zstd -d -> pg_restore -j 2)
  pgBackRest: a full physical backup of the same cluster (zst, aes-256-cbc, process-max 2) into a local
          repository, no upload: the other tool the backup role runs, beside ours
  floors: pg_dump alone to /dev/null, and pg_dump -Z0 | zstd -T2 (no encryption, no upload)

Needs Debian's postgresql-15, zstd, age and pgbackrest on the host (apt-get install postgresql-15 zstd age pgbackrest).
Usage: .venv/bin/python benchmarks/backup.py [--size-mb 350]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PROGRAM = REPO / "roles" / "backup" / "files" / "botstack-backup.py"
PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
WEED = REPO / ".venv-tools" / "bin" / "weed"
PORT, S3_PORT = 55432, 18333
KEY, SECRET = "AKIDBENCH", "bench-secret-key"
RECIPIENT = "age1l28ww8g0q0hdvh53vjqyf99zl5n6e28vz6rf3rzdfrx7zdcsvdrs8tuv38"
IDENTITY = "AGE-SECRET-KEY-1Z5XYLKWS2LWWL3AGH546FSNZFL3UZ47PK4C8UC74ESGQZVFQYFES30WP34"


def sh(cmd, **kwargs):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kwargs)


def as_postgres(argv):
    return ["runuser", "-u", "postgres", "--"] + argv


def psql(sql, db="bench"):
    return subprocess.run(as_postgres(["psql", "-h", "/tmp/bench-pg", "-p", str(PORT), "-XAtq", "-d", db, "-c", sql]),
                          check=True, capture_output=True, text=True).stdout.strip()


def build_database(psql, size_mb: int) -> int:
    """Realistic rows (uuid, text, jsonb, timestamps) in database bench, about size_mb MiB; returns the message count."""
    rows = size_mb * 3400  # about 1 MiB of table and index per 3400 messages + users
    psql(f"""
        CREATE EXTENSION pgcrypto;
        CREATE TABLE users (id uuid PRIMARY KEY, name text, email text, profile jsonb, created timestamptz);
        INSERT INTO users SELECT gen_random_uuid(), 'user ' || md5(i::text), md5(random()::text) || '@example.com',
          jsonb_build_object('lang', (ARRAY['en','de','ru','es'])[1 + i % 4], 'score', random() * 1000,
            'tags', jsonb_build_array(md5((i * 7)::text), i % 13), 'bio', repeat(md5(random()::text), 2)),
          now() - random() * interval '700 days' FROM generate_series(1, {rows // 4}) i;
        CREATE TABLE messages (id bigserial PRIMARY KEY, user_id uuid, chat_id bigint, text text, meta jsonb,
          sent timestamptz);
        INSERT INTO messages (user_id, chat_id, text, meta, sent)
          SELECT gen_random_uuid(), (random() * 1e9)::bigint,
            'msg ' || md5(random()::text) || ' ' || substr(md5(random()::text), 1, (random() * 32)::int),
            jsonb_build_object('update_id', i, 'lang', (ARRAY['en','de','ru'])[1 + i % 3], 'ok', i % 2 = 0),
            now() - random() * interval '90 days' FROM generate_series(1, {rows}) i;
    """)
    return rows


def bench_bucket(endpoint: str, key: str, secret: str):
    """An S3 client of the benchmark's server, once bucket "bench" exists there (the server may still be starting)."""
    import boto3
    import botocore.config

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1", config=botocore.config.Config(s3={"addressing_style": "path"}))
    for _ in range(60):
        try:
            s3.create_bucket(Bucket="bench")
            break
        except Exception:  # noqa: BLE001 - server still starting
            time.sleep(1)
    return s3


def venv(work):
    """The program's own venv (its locked requirements), as the role builds it."""
    path = REPO / ".cache" / "bench-backup-venv"
    if not (path / "bin" / "python").exists():
        # The distribution's python3, as on a host (the postgres user must be able to run it).
        sh(["/usr/bin/python3", "-m", "venv", str(path)])
        sh([str(path / "bin" / "pip"), "install", "-q", "-r", str(REPO / "roles/backup/files/requirements.txt")],
           stderr=subprocess.DEVNULL)
    return path / "bin" / "python"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=350)
    args = parser.parse_args()
    for tool in ("zstd", "age", "pgbackrest"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install postgresql-15 zstd age pgbackrest")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-backup-"))
    os.chmod(work, 0o755)
    data, sock = work / "pg", pathlib.Path("/tmp/bench-pg")
    sock.mkdir(exist_ok=True)
    shutil.chown(sock, "postgres"), data.mkdir(), shutil.chown(data, "postgres")
    processes = []
    try:
        sh(as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust"]), capture_output=True)
        processes.append(subprocess.Popen(as_postgres([
            str(PG_BIN / "postgres"), "-D", str(data), "-p", str(PORT), "-k", str(sock), "-c", "listen_addresses=",
            "-c", "max_wal_size=4GB", "-c", "shared_buffers=512MB"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        (work / "s3").mkdir()
        (work / "s3.json").write_text(json.dumps({"identities": [{"name": "b", "credentials": [
            {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List"]}]}))
        processes.append(subprocess.Popen([str(WEED), "server", f"-dir={work / 's3'}", "-ip=127.0.0.1", "-s3",
                                           f"-s3.port={S3_PORT}", f"-s3.config={work / 's3.json'}",
                                           "-master.volumeSizeLimitMB=1024"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(120):
            try:
                psql("SELECT 1", "postgres")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.5)
        psql("CREATE DATABASE bench", "postgres")
        started = time.monotonic()
        rows = build_database(psql, args.size_mb)
        size = int(psql("SELECT pg_database_size('bench')"))
        print(f"database: {size / 2**20:.0f} MiB ({rows // 4} users, {rows} messages), built in {time.monotonic() - started:.0f} s")

        s3 = bench_bucket(f"http://127.0.0.1:{S3_PORT}", KEY, SECRET)

        # What a user writes: pg_dump's custom format (its own gzip compression) to a file, then upload it.
        dump = work / "naive.dump"
        started = time.monotonic()
        sh(f"runuser -u postgres -- pg_dump -h {sock} -p {PORT} -Fc bench > {dump}")
        dumped = time.monotonic() - started
        s3.upload_file(str(dump), "bench", "naive/bench.dump")
        naive = time.monotonic() - started
        naive_size = dump.stat().st_size
        dump.unlink()

        # References without encryption or upload: what pg_dump alone and the zstd pipeline cost here.
        references = {}
        for label, pipeline in (("pg_dump -Fc -Z0 > /dev/null", "> /dev/null"),
                                ("pg_dump -Fc -Z0 | zstd -T2 -3 > /dev/null", "| zstd -q -T2 -3 > /dev/null")):
            started = time.monotonic()
            sh(f"runuser -u postgres -- pg_dump -h {sock} -p {PORT} -Fc -Z0 bench {pipeline}")
            references[label] = time.monotonic() - started

        # pgBackRest's own full backup of the cluster (physical: indexes included), local repository.
        repo, lock = work / "pgbackrest", work / "pgbackrest-lock"
        for path in (repo, lock):
            path.mkdir()
            shutil.chown(path, "postgres")
        backrest = ["pgbackrest", "--stanza=bench", f"--pg1-path={data}", f"--pg1-socket-path={sock}",
                    f"--pg1-port={PORT}", f"--repo1-path={repo}", "--repo1-cipher-type=aes-256-cbc",
                    "--log-level-console=warn", "--log-level-file=off", f"--lock-path={lock}"]
        # pgBackRest refuses an option its command does not take: the backup's own go with the backup only.
        for command in (["stanza-create"], ["--type=full", "--compress-type=zst", "--process-max=2", "--no-archive-check",
                                                  "--start-fast", "backup"]):
            if command[-1] == "backup":
                started = time.monotonic()
            # The passphrase is refused on the command line (the process list): the environment, as a unit's.
            result = subprocess.run(as_postgres(backrest + command), capture_output=True, text=True, check=False,
                                    env=dict(os.environ, PGBACKREST_REPO1_CIPHER_PASS="bench-cipher-pass-0123456789"))
            if result.returncode:
                sys.exit(f"pgbackrest {command[-1]} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        physical = time.monotonic() - started
        physical_size = sum(p.stat().st_size for p in (repo / "backup").rglob("*") if p.is_file())

        python = venv(work)
        state = work / "state"
        state.mkdir()
        shutil.chown(state, "postgres")
        identity = work / "identity.txt"
        identity.write_text(IDENTITY + "\n")
        shutil.chown(identity, "postgres"), os.chmod(identity, 0o600)
        config = work / "config.json"
        config.write_text(json.dumps({
            "kind": "postgresql", "databases": ["bench"],
            "s3": {"bucket": "bench", "prefix": "ours", "endpoint_url": f"http://127.0.0.1:{S3_PORT}",
                   "addressing_style": "path", "access_key_id": KEY, "secret_access_key": SECRET},
            "encryption": {"recipients": [RECIPIENT], "identity_file": str(identity)},
            "retention": {"mode": "prune", "days": 30, "keep_min": 7},
            "postgresql": {"host": str(sock), "port": PORT},
            "zstd_level": 3, "zstd_threads": 0, "part_size_mb": 16, "upload_threads": 2, "restore_jobs": 2,
            "metrics_dir": "", "state_dir": str(state), "work_dir": str(state)}))
        shutil.chown(config, "postgres")
        program = as_postgres([str(python), str(PROGRAM), "--config", str(config)])
        started = time.monotonic()
        result = subprocess.run(program + ["backup"], capture_output=True, text=True, check=False)
        if result.returncode:
            sys.exit("botstack-backup failed:\n" + result.stderr[-3000:])
        ours = time.monotonic() - started
        done = next(json.loads(line) for line in result.stderr.splitlines() if '"backup_done"' in line)
        started = time.monotonic()
        restored = subprocess.run(program + ["restore", "--name", "bench", "--target", "bench_restored"],
                                  capture_output=True, text=True, check=False)
        if restored.returncode:
            sys.exit("restore failed:\n" + restored.stderr[-3000:])
        restore = time.monotonic() - started
        same = psql("SELECT count(*) FROM messages", "bench_restored") == psql("SELECT count(*) FROM messages")

        mib = size / 2**20
        print(f"naive  pg_dump -Fc > file ({dumped:.1f} s) + upload:        {naive:6.1f} s  {mib / naive:6.1f} MiB/s"
              f"  stored {naive_size / 2**20:6.1f} MiB, nothing encrypted")
        print(f"ours   botstack-backup backup:                     {ours:6.1f} s  {mib / ours:6.1f} MiB/s"
              f"  stored {done['size'] / 2**20:6.1f} MiB, age-encrypted; uploader peak RSS {done['peak_rss_mb']} MB")
        print(f"pgBackRest full backup (physical, local repo): {physical:6.1f} s  {mib / physical:6.1f} MiB/s"
              f"  stored {physical_size / 2**20:6.1f} MiB, aes-256-cbc, no upload")
        for label, seconds in references.items():
            print(f"ref    {label:44s}{seconds:6.1f} s  {mib / seconds:6.1f} MiB/s  (no encryption, no upload)")
        print(f"speed-up: {naive / ours:.1f}x (target >= 5x);  restore (download, sha256, decrypt, pg_restore -j 2): "
              f"{restore:.1f} s, rows match: {same}")
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(30)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


if __name__ == "__main__":
    main()
