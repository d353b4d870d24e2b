#!/usr/bin/env python3
"""Build the sample app's git repository: its history as tags, one commit each.

    build-repo.py DEST                       a bare repository at DEST
    build-repo.py DEST --archive v2:OUT      ... and OUT, a .tar.gz of tag v2

The base tree (this directory without history/ and this script) is tag v1; every
other tag applies history/<tag>.patch on top of its parent, as listed in SERIES.
Commit dates and authors are fixed, so the same sources always give the same
commit ids (and the deploy role the same release ids).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
# tag: (parent tag, commit message)
SERIES = {
    "v2": ("v1", "Remember the sender's language; retry Bot API calls (new dependency: tenacity)"),
    "v3": ("v2", "Name the webhook path on the index page (code only)"),
    "v3-crash": ("v3", "Broken: imports a setting that was renamed (the API crashes at import)"),
    "v3-unhealthy": ("v3", "Broken: /health reads a check that does not exist (answers 500)"),
    "v3-badmigration": ("v3", "Broken: a migration indexes a column that does not exist"),
    "v3-schedcrash": ("v3", "Broken: the scheduler imports a setting that was renamed (it crashes once its imports ran)"),
    "v3-leak": ("v3", "Broken: the webhook secret must have 48 characters (every process fails at start-up, printing it)"),
}
# Names a deploy must resolve exactly: a branch whose name ends like a tag (git ls-remote v2 matches both
# refs/heads/backport/v2 and refs/tags/v2), and one name that is both a tag and a branch on two commits.
REFS = [("branch", "backport/v2", "v3-crash"), ("tag", "rc1", "v2"), ("branch", "rc1", "v1")]
EXCLUDED = {"history", "build-repo.py", "README.md", "__pycache__"}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "botapp", "GIT_AUTHOR_EMAIL": "botapp@example.invalid",
    "GIT_COMMITTER_NAME": "botapp", "GIT_COMMITTER_EMAIL": "botapp@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}


def git(work: pathlib.Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True, text=True,
                          env=dict(os.environ, **GIT_ENV)).stdout.strip()


def build(dest: pathlib.Path) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp) / "botapp"
        shutil.copytree(HERE, work, ignore=lambda _dir, names: [n for n in names if n in EXCLUDED])
        git(work, "init", "-q", "-b", "main")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "Sample bot platform: webhook API, worker, scheduler")
        git(work, "tag", "v1")
        for tag, (parent, message) in SERIES.items():
            git(work, "checkout", "-q", parent)
            git(work, "apply", "--index", str(HERE / "history" / f"{tag}.patch"))
            git(work, "commit", "-q", "-m", message)
            git(work, "tag", tag)
        git(work, "checkout", "-q", "v3")
        git(work, "branch", "-q", "-f", "main", "v3")
        for kind, name, target in REFS:
            git(work, "branch" if kind == "branch" else "tag", name, f"refs/tags/{target}")
        if dest.exists():
            shutil.rmtree(dest)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(dest)], check=True, env=dict(os.environ, **GIT_ENV))
    return {tag: git(dest, "rev-parse", f"{tag}^{{commit}}") for tag in ["v1", *SERIES]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=pathlib.Path, help="where the bare repository goes (replaced)")
    parser.add_argument("--archive", action="append", default=[], metavar="TAG:OUT",
                        help="also write a .tar.gz of TAG to OUT (repeatable)")
    args = parser.parse_args()
    tags = build(args.dest.resolve())
    for spec in args.archive:
        tag, _, out = spec.partition(":")
        git(args.dest.resolve(), "archive", "--format=tar.gz", "-o", str(pathlib.Path(out).resolve()), tag)
    for tag, commit in tags.items():
        print(f"{tag} {commit}")


if __name__ == "__main__":
    main()
