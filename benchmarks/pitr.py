#!/usr/bin/env python3
"""Point-in-time recovery measured: RPO when the database host dies, RTO of the restore, archive throughput.

On this machine, with throwaway processes on loopback only: a PostgreSQL 15 cluster in a temporary
directory (the database of benchmarks/backup.py, realistic rows), archiving every WAL segment with
pgBackRest to a SeaweedFS S3 server over HTTPS (a certificate from a throwaway CA), with the
settings the backup role writes (archive_timeout 60 s, zstd, aes-256-cbc, process-max 2).

  1. full backup of the database (throughput)
  2. a steady write load (one bot message every 100 ms, plus bulk inserts) for --load-seconds:
     WAL generated vs archived, the archiver's lag
  3. the host dies: PostgreSQL is killed with SIGKILL, its data directory is never read again
  4. restore elsewhere: pgbackrest restore into a new directory (end of the archive), start, open
     RPO = seconds of acknowledged writes missing from the restored cluster; RTO = restore + replay + open

The seed's objectives stand beside the figures: RPO 1 h (dumps alone: up to 6 h), RTO 4 h.
Needs postgresql-15, pgbackrest, zstd on the host (apt-get install postgresql-15 pgbackrest zstd).
Usage: .venv/bin/python benchmarks/pitr.py [--size-mb 350] [--load-seconds 150]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from backup import PG_BIN, WEED, as_postgres, bench_bucket, build_database, sh

PORT, RESTORED_PORT, S3_PORT = 55433, 55434, 18443
KEY, SECRET = "AKIDBENCHPITR", "bench-pitr-secret-key"
STANZA = "bench"
ARCHIVE_TIMEOUT = 60


def certificate(work: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A throwaway CA and a certificate for localhost (pgBackRest verifies the S3 server by DNS name only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = work / "ca.crt", work / "s3.crt", work / "s3.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    for path in paths:
        os.chmod(path, 0o644)
    return paths


def psql(sql: str, db: str = "bench", port: int = PORT, sock: str = "/tmp/bench-pitr") -> str:
    return subprocess.run(as_postgres(["psql", "-h", sock, "-p", str(port), "-XAtq", "-d", db, "-c", sql]),
                          check=True, capture_output=True, text=True).stdout.strip()


def backrest(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"{' '.join(argv[4:])} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def wait_open(port: int, sock: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psql("SELECT NOT pg_is_in_recovery()", "postgres", port, sock) == "t":
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.2)
    sys.exit(f"the cluster on port {port} did not open within {timeout:.0f} s")


def kill_tree(root: int) -> None:
    """SIGKILL a process and all its descendants in one go (children found through /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += parents.get(pid, [])
    for pid in tree:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Writer(threading.Thread):
    """A bot's steady traffic: one message every 100 ms (id and commit time recorded once acknowledged),
    plus a bulk insert of 2,000 messages every 2 s (the WAL volume of a busy platform)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.acked: list[tuple[int, float]] = []

    def run(self):
        program = (
            "import sys, time\n"
            "print('\\\\set ON_ERROR_STOP 1')\n"
            "i = 0\n"
            "while True:\n"
            "    i += 1\n"
            "    print(\"INSERT INTO ticks (id) VALUES (%d) RETURNING id, extract(epoch FROM written_at);\" % i)\n"
            "    if i % 20 == 0:\n"
            "        print(\"INSERT INTO messages (chat_id, text, meta, sent) SELECT (random() * 1e9)::bigint, "
            "md5(random()::text) || md5(random()::text), jsonb_build_object('n', g), now() "
            "FROM generate_series(1, 2000) g;\")\n"
            "    sys.stdout.flush()\n"
            "    time.sleep(0.1)\n"
        )
        feeder = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE)
        client = subprocess.Popen(as_postgres(["psql", "-h", "/tmp/bench-pitr", "-p", str(PORT), "-XAtq", "-d", "bench"]),
                                  stdin=feeder.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.feeder, self.client = feeder, client
        for line in client.stdout:
            if "|" in line:
                tick, written = line.strip().split("|")
                self.acked.append((int(tick), float(written)))
            if self.stop.is_set():
                break

    def halt(self):
        self.stop.set()
        for process in (self.feeder, self.client):
            process.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=350)
    parser.add_argument("--load-seconds", type=int, default=150)
    args = parser.parse_args()
    for tool in ("pgbackrest", "zstd"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install postgresql-15 pgbackrest zstd")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-pitr-"))
    os.chmod(work, 0o755)
    data, restored, sock = work / "pg", work / "restored", pathlib.Path("/tmp/bench-pitr")
    for path in (data, restored, sock, work / "log", work / "spool", work / "lock"):
        path.mkdir(exist_ok=True)
        shutil.chown(path, "postgres")
    os.chmod(restored, 0o700)
    processes = []
    try:
        ca, crt, key = certificate(work)
        (work / "s3.json").write_text(json.dumps({"identities": [{"name": "b", "credentials": [
            {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List"]}]}))
        (work / "s3").mkdir()
        processes.append(subprocess.Popen(
            [str(WEED), "server", f"-dir={work / 's3'}", "-ip=127.0.0.1", "-s3", "-s3.port=18334",
             f"-s3.port.https={S3_PORT}", f"-s3.cert.file={crt}", f"-s3.key.file={key}",
             f"-s3.config={work / 's3.json'}", "-master.volumeSizeLimitMB=1024"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        config = work / "pgbackrest.conf"
        config.write_text("\n".join([
            "[global]", "repo1-type=s3", "repo1-path=/bench/pgbackrest", "repo1-s3-bucket=bench",
            "repo1-s3-endpoint=localhost", f"repo1-storage-port={S3_PORT}", "repo1-s3-region=us-east-1",
            "repo1-s3-uri-style=path", f"repo1-s3-key={KEY}", f"repo1-s3-key-secret={SECRET}",
            f"repo1-storage-ca-file={ca}", "repo1-cipher-type=aes-256-cbc", "repo1-cipher-pass=bench-pitr-cipher-passphrase",
            "repo1-retention-full=2", "process-max=2", "compress-type=zst", "compress-level=3", "start-fast=y",
            f"log-path={work / 'log'}", f"spool-path={work / 'spool'}", f"lock-path={work / 'lock'}",
            "log-level-console=warn", "log-level-stderr=warn", "", "[global:archive-push]", "io-timeout=10", "",
            f"[{STANZA}]", f"pg1-path={data}", f"pg1-port={PORT}", f"pg1-socket-path={sock}", ""]))
        shutil.chown(config, "postgres"), os.chmod(config, 0o600)
        pgbackrest = as_postgres(["pgbackrest", f"--config={config}", f"--stanza={STANZA}"])

        sh(as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust"]), capture_output=True)
        postgres = subprocess.Popen(as_postgres([
            str(PG_BIN / "postgres"), "-D", str(data), "-p", str(PORT), "-k", str(sock), "-c", "listen_addresses=",
            "-c", "max_wal_size=4GB", "-c", "shared_buffers=512MB", "-c", "archive_mode=on",
            "-c", f"archive_command=pgbackrest --config={config} --stanza={STANZA} archive-push %p",
            "-c", f"archive_timeout={ARCHIVE_TIMEOUT}"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(postgres)
        wait_open(PORT, str(sock), 60)
        psql("CREATE DATABASE bench", "postgres")
        started = time.monotonic()
        rows = build_database(psql, args.size_mb)
        psql("CREATE TABLE ticks (id bigint PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        size = int(psql("SELECT pg_database_size('bench')"))
        print(f"database: {size / 2**20:.0f} MiB ({rows} messages), built in {time.monotonic() - started:.0f} s")

        bench_bucket("http://127.0.0.1:18334", KEY, SECRET)
        backrest(pgbackrest + ["stanza-create"])
        started = time.monotonic()
        backrest(pgbackrest + ["--type=full", "backup"])
        full = time.monotonic() - started
        print(f"full backup: {full:.1f} s ({size / 2**20 / full:.1f} MiB/s, zstd + aes-256-cbc over HTTPS)")

        # Archive throughput: a burst of writes (a bulk import), then until every segment is in S3.
        lsn_before = psql("SELECT pg_current_wal_lsn()", "postgres")
        started = time.monotonic()
        psql("INSERT INTO messages (chat_id, text, meta, sent) SELECT (random() * 1e9)::bigint, "
             "md5(random()::text) || md5(random()::text), jsonb_build_object('n', g), now() "
             "FROM generate_series(1, 600000) g")
        last = psql("SELECT pg_walfile_name(pg_switch_wal())", "postgres")
        written = time.monotonic() - started
        while psql(f"SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver", "postgres") != "t":
            time.sleep(0.2)
        burst = time.monotonic() - started
        burst_bytes = int(psql(f"SELECT pg_current_wal_lsn() - '{lsn_before}'::pg_lsn", "postgres"))
        print(f"archive throughput: a burst of {burst_bytes / 2**20:.0f} MiB of WAL written in {written:.1f} s was all "
              f"in S3 {burst:.1f} s after it began ({burst_bytes / 2**20 / burst:.1f} MiB/s, one archive-push per segment)")

        lsn_before = psql("SELECT pg_current_wal_lsn()", "postgres")
        archived_before = int(psql("SELECT archived_count FROM pg_stat_archiver", "postgres"))
        writer = Writer()
        writer.start()
        lag_max, started = 0, time.monotonic()
        while time.monotonic() - started < args.load_seconds:
            time.sleep(2)
            # Segments PostgreSQL finished and the archiver has not pushed yet.
            lag_max = max(lag_max, len(list((data / "pg_wal" / "archive_status").glob("*.ready"))))
        wal_bytes = int(psql(f"SELECT pg_current_wal_lsn() - '{lsn_before}'::pg_lsn", "postgres"))
        archived = int(psql("SELECT archived_count FROM pg_stat_archiver", "postgres")) - archived_before
        elapsed = time.monotonic() - started
        # The host dies: every process of the cluster at once (archive pushes in flight included), no
        # shutdown, no final archive; its data directory is never used again.
        kill_tree(int((data / "postmaster.pid").read_text().split()[0]))
        died = time.time()
        writer.halt()
        acked = writer.acked
        print(f"load: {len(acked)} messages acknowledged in {elapsed:.0f} s; WAL {wal_bytes / 2**20:.0f} MiB "
              f"({wal_bytes / 2**20 / elapsed:.2f} MiB/s), {archived} segments archived "
              f"({archived * 16 / elapsed:.2f} MiB/s); most segments waiting at once: {lag_max}")

        started = time.monotonic()
        backrest(pgbackrest + [f"--pg1-path={restored}", "--archive-mode=off", "restore"])
        (restored / "postgresql.conf").write_text("")
        (restored / "pg_hba.conf").write_text("local all all trust\n")
        for name in ("postgresql.conf", "pg_hba.conf"):
            shutil.chown(restored / name, "postgres")
        processes.append(subprocess.Popen(as_postgres([
            str(PG_BIN / "postgres"), "-D", str(restored), "-p", str(RESTORED_PORT), "-k", str(sock),
            "-c", "listen_addresses=", "-c", "shared_buffers=512MB"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_open(RESTORED_PORT, str(sock), 3600)
        rto = time.monotonic() - started
        row = psql("SELECT coalesce(max(id), 0), coalesce(extract(epoch FROM max(written_at)), 0) FROM ticks",
                   port=RESTORED_PORT)
        last_id, last_written = int(row.split("|")[0]), float(row.split("|")[1])
        last_acked_id, last_acked_at = acked[-1] if acked else (0, died)
        lost_rows = last_acked_id - last_id
        rpo = max(0.0, last_acked_at - last_written) if lost_rows > 0 else 0.0
        same = psql("SELECT count(*) FROM messages", port=RESTORED_PORT)
        print(f"RPO: {lost_rows} acknowledged messages lost, the newest {rpo:.1f} s of writes "
              f"(archive_timeout {ARCHIVE_TIMEOUT} s; seed objective 1 h = 3600 s; dumps alone up to 6 h)")
        print(f"RTO: restore + WAL replay + open {rto:.1f} s for {size / 2**20:.0f} MiB "
              f"(seed objective 4 h = 14400 s); restored messages: {same}")
    finally:
        for cluster in (data, restored):
            if (cluster / "postmaster.pid").exists():
                kill_tree(int((cluster / "postmaster.pid").read_text().split()[0]))
        for process in reversed(processes):
            process.kill()
            process.wait(30)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


if __name__ == "__main__":
    main()
