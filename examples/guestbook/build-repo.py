#!/usr/bin/env python3
"""Build the guestbook monorepo's git repository: its history as tags, one commit each.

    build-repo.py DEST                       a bare repository at DEST
    build-repo.py DEST --archive v2:OUT      ... and OUT, a .tar.gz of tag v2 (top directory guestbook-v2/)

The base tree (this directory without the fixture's own files: history/, this script,
FIXTURE.md) is tag v1; every other tag applies history/<tag>.patch on top of its parent,
as listed in SERIES. Branch main points at v2. Commit dates and authors are fixed, so
the same sources always give the same commit ids.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
BASE_MESSAGE = "Guestbook: Django backend (entries app) and frontend placeholder"
# tag: (parent tag, commit message, commit date)
SERIES = {
    "v2": ("v1", "entries: optional mood on each entry (migration 0002); new stylesheet", "2026-02-01T10:00:00Z"),
    "v2-crash": ("v2", "Check the notification e-mail setting at start-up", "2026-02-08T10:00:00Z"),
}
BASE_DATE = "2026-01-15T10:00:00Z"
MAIN = "v2"
EXCLUDED_TOP = {"history", "build-repo.py", "FIXTURE.md"}
EXCLUDED_ANYWHERE = {"__pycache__", ".venv", "staticfiles", "db.sqlite3"}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dana Developer", "GIT_AUTHOR_EMAIL": "dana@guestbook.example.invalid",
    "GIT_COMMITTER_NAME": "Dana Developer", "GIT_COMMITTER_EMAIL": "dana@guestbook.example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}


def git(work: pathlib.Path, *args: str, date: str = BASE_DATE) -> str:
    env = dict(os.environ, **GIT_ENV, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _ignore(directory: str, names: list[str]) -> list[str]:
    top = pathlib.Path(directory) == HERE
    return [n for n in names if n in EXCLUDED_ANYWHERE or (top and n in EXCLUDED_TOP)]


def build(dest: pathlib.Path) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp) / "guestbook"
        shutil.copytree(HERE, work, ignore=_ignore)
        git(work, "init", "-q", "-b", "main")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", BASE_MESSAGE)
        git(work, "tag", "v1")
        for tag, (parent, message, date) in SERIES.items():
            git(work, "checkout", "-q", parent)
            git(work, "apply", "--index", str(HERE / "history" / f"{tag}.patch"))
            git(work, "commit", "-q", "-m", message, date=date)
            git(work, "tag", tag)
        git(work, "checkout", "-q", MAIN)
        git(work, "branch", "-q", "-f", "main", MAIN)
        git(work, "checkout", "-q", "main")
        if dest.exists():
            shutil.rmtree(dest)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(dest)], check=True,
                       env=dict(os.environ, **GIT_ENV))
    return {tag: git(dest, "rev-parse", f"{tag}^{{commit}}") for tag in ["v1", *SERIES]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=pathlib.Path, help="where the bare repository goes (replaced)")
    parser.add_argument("--archive", action="append", default=[], metavar="TAG:OUT",
                        help="also write a .tar.gz of TAG to OUT (repeatable)")
    args = parser.parse_args()
    dest = args.dest.resolve()
    tags = build(dest)
    for spec in args.archive:
        tag, _, out = spec.partition(":")
        git(dest, "archive", "--format=tar.gz", f"--prefix=guestbook-{tag}/", "-o", str(pathlib.Path(out).resolve()), tag)
    for tag, commit in tags.items():
        print(f"{tag} {commit}")


if __name__ == "__main__":
    main()
