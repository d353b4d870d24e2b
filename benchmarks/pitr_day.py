#!/usr/bin/env python3
"""The longest point-in-time restore the backup role's defaults allow, through `playbooks/restore.yml`.

pgBackRest runs a full backup on Sundays and a differential on the other days (backup_pitr_full_on_calendar,
backup_pitr_diff_on_calendar), and archive_timeout closes a WAL segment at least every minute while anything is
written. The longest restore is therefore to a moment just before a differential: the previous differential plus a
whole day of WAL. This benchmark builds exactly that and restores it the way an operator does.

  1. The hosts of the `backup` molecule scenario (PostgreSQL with pgBackRest on backup-db, SeaweedFS over HTTPS on
     backup-s3), converged by the collection (`molecule converge -s backup`), or reused with --reuse.
  2. A differential backup (botstack-pitr-diff.service, as its timer starts it).
  3. A bot's day, compressed in time but not in WAL: one message a row, one transaction each (--messages-per-second
     x 86,400, pgbench, two clients; synchronous_commit off for the load only: the same WAL, without waiting
     for each flush), a WAL switch after each minute's messages (what archive_timeout does over a
     real day: 1,440 segments) and a checkpoint after each five minutes' (checkpoint_timeout: the full-page writes
     that follow each one). Archiving runs as in production and is waited for.
  4. `ansible-playbook playbooks/restore.yml -e backup_restore_kind=pitr` to the end of the archive: RTO is the
     play's wall time, from the first task to the restored cluster open for writes; the rows are counted.

Prints figures beside the seed's objectives (RTO 4 h, RPO 1 h); asserts nothing.
Not while `make test` runs (it uses the backup scenario's containers and both cores).

    .venv/bin/python benchmarks/pitr_day.py [--messages-per-second 10] [--day-fraction 1.0] [--reuse] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOST = "backup-db"
PG_BIN = "/usr/lib/postgresql/15/bin"
SEGMENT_MB = 16


def env() -> dict:
    return dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
                ANSIBLE_COLLECTIONS_PATH=f"{ROOT / '.collections'}:{ROOT}", NO_COLOR="1", ANSIBLE_NOCOLOR="1")


def on_host(script: str, check: bool = True) -> str:
    result = subprocess.run(["docker", "exec", HOST, "bash", "-c", script], capture_output=True, text=True, check=False)
    if check and result.returncode:
        sys.exit(f"on {HOST}: {script[:200]}\nfailed ({result.returncode}): {result.stdout[-1500:]}{result.stderr[-1500:]}")
    return result.stdout.strip()


def sql(statement: str, database: str = "botstack") -> str:
    quoted = statement.replace("'", "'\\''")
    return on_host(f"runuser -u postgres -- psql -XAtq -d {database} -c '{quoted}'")


def molecule(*argv: str) -> None:
    started = time.monotonic()
    result = subprocess.run(["molecule", *argv, "-s", "backup"], cwd=ROOT, env=env(), capture_output=True, text=True,
                            check=False)
    if result.returncode:
        sys.exit(f"molecule {' '.join(argv)} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    print(f"molecule {argv[0]:<10} {time.monotonic() - started:7.1f} s", flush=True)


def inventory() -> pathlib.Path:
    """Molecule's ephemeral inventory of the scenario (its directory name carries a hash of the project's path)."""
    found = [*pathlib.Path.home().glob(".ansible/tmp/molecule.*.backup/inventory/ansible_inventory.yml"),
             *pathlib.Path.home().glob(f".cache/molecule/{ROOT.name}/backup/inventory/ansible_inventory.yml")]
    if not found:
        sys.exit("the backup scenario's inventory is missing: run without --reuse")
    return max(found, key=lambda path: path.stat().st_mtime)


def repository() -> dict:
    return json.loads(on_host("runuser -u postgres -- pgbackrest --stanza=main --output=json info"))[0]


def segment_number(name: str) -> int:
    """A WAL file name's position on its timeline (16 MiB segments: 256 to a log id)."""
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def archived(segment: str) -> bool:
    return sql("SELECT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name = '%s.done') OR NOT EXISTS "
               "(SELECT 1 FROM pg_ls_waldir() WHERE name = '%s')" % (segment, segment), "postgres") == "t"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages-per-second", type=float, default=10.0,
                        help="the bot's steady rate (benchmarks/pitr.py: one message every 100 ms)")
    parser.add_argument("--day-fraction", type=float, default=1.0, help="less than a day, for a quick look")
    parser.add_argument("--reuse", action="store_true", help="the scenario's hosts are up and converged")
    parser.add_argument("--keep", action="store_true", help="leave the hosts up afterwards")
    args = parser.parse_args()

    minutes = max(1, round(1440 * args.day_fraction))
    per_minute = max(2, round(args.messages_per_second * 60))
    per_minute -= per_minute % 2
    if not args.reuse:
        molecule("destroy")
        molecule("converge")
    try:
        sql("DROP TABLE IF EXISTS bench_messages")
        sql("CREATE TABLE bench_messages (id bigserial PRIMARY KEY, chat_id bigint NOT NULL, "
            "body text NOT NULL, sent_at timestamptz NOT NULL DEFAULT now())")
        sql("CREATE INDEX ON bench_messages (chat_id, sent_at)")

        started = time.monotonic()
        on_host("systemctl start botstack-pitr-diff.service")
        print(f"differential backup  {time.monotonic() - started:7.1f} s", flush=True)
        print("backups in the repository:", ", ".join(b["label"] for b in repository()["backup"]), flush=True)

        # WAL records written (pg_stat_wal): the LSN would also count each switched segment's unused end.
        wal_before = int(sql("SELECT wal_bytes FROM pg_stat_wal", "postgres"))
        on_host("printf '%s\\n' '\\set chat random(1, 5000)' "
                "\"INSERT INTO bench_messages (chat_id, body) VALUES (:chat, repeat('m', 160) || :chat);\" "
                "> /tmp/bench-message.sql && chmod 0644 /tmp/bench-message.sql")
        load = (f"for minute in $(seq 1 {minutes}); do "
                f"runuser -u postgres -- env PGOPTIONS='-c synchronous_commit=off' {PG_BIN}/pgbench -n -c 2 -j 2 -t {per_minute // 2} -f /tmp/bench-message.sql "
                "botstack >/dev/null 2>&1 || exit 1; "
                "runuser -u postgres -- psql -XAtq -d postgres -c 'SELECT pg_switch_wal()' >/dev/null || exit 1; "
                "if [ $((minute % 5)) -eq 0 ]; then runuser -u postgres -- psql -XAtq -d postgres -c CHECKPOINT || exit 1; fi; "
                "done")
        started = time.monotonic()
        on_host(load)
        loaded = time.monotonic() - started
        wal_mb = (int(sql("SELECT wal_bytes FROM pg_stat_wal", "postgres")) - wal_before) / 2**20
        last = sql("SELECT pg_walfile_name(pg_current_wal_lsn())", "postgres")
        sql("SELECT pg_switch_wal()", "postgres")
        waited = time.monotonic()
        while not archived(last):
            if time.monotonic() - waited > 3600:
                sys.exit(f"{last} not archived within an hour")
            time.sleep(2)
        rows = int(sql("SELECT count(*) FROM bench_messages"))
        print(f"the day's load       {loaded:7.1f} s: {rows:,} messages in {minutes:,} minutes' segments, "
              f"{wal_mb:,.0f} MiB of WAL records in {minutes * SEGMENT_MB:,} MiB of segments, "
              f"all archived {time.monotonic() - waited:.1f} s after the load", flush=True)
        archive = repository()["archive"][-1]
        print(f"archive range        {archive['min']} .. {archive['max']}", flush=True)

        # Every segment from the differential's start to the end of the archive is fetched and replayed.
        segments = segment_number(archive["max"]) - segment_number(repository()["backup"][-1]["archive"]["start"]) + 1
        started = time.monotonic()
        result = subprocess.run(
            ["ansible-playbook", "-i", str(inventory()), str(ROOT / "playbooks" / "restore.yml"), "-l", HOST,
             "-e", "backup_restore_kind=pitr", "-e", "backup_restore_confirm_overwrite=true"],
            cwd=ROOT, env=env(), capture_output=True, text=True, check=False)
        rto = time.monotonic() - started
        if result.returncode:
            sys.exit(f"restore.yml failed after {rto:.1f} s:\n{result.stdout[-4000:]}")
        restored = int(sql("SELECT count(*) FROM bench_messages"))
        redo = on_host("grep -h 'redo done at' /var/log/postgresql/postgresql-15-main.log | tail -n 1", check=False)
        print(f"restore.yml (RTO)    {rto:7.1f} s to the end of the archive: {restored:,} messages back "
              f"(lost: {rows - restored:,}); PostgreSQL: {redo.split('LOG:', 1)[-1].strip() or 'no redo line'}; "
              f"{segments:,} segments fetched from S3 and replayed", flush=True)
        print(f"seed objectives: RTO 4 h ({4 * 3600 / rto:,.0f}x inside), RPO 1 h "
              "(this restore: 0 s, every segment archived; a lost host: benchmarks/pitr.py)")
        aside = on_host("ls -d /var/lib/postgresql/15/main.replaced-* 2>/dev/null || true")
        if aside:
            on_host(f"rm -rf {aside}")
    finally:
        if not args.keep:
            molecule("destroy")


if __name__ == "__main__":
    main()
