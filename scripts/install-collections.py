#!/usr/bin/env python3
"""Install the collections this project depends on without Ansible Galaxy.

The PyPI wheel of the ``ansible`` package carries every collection we use.
Download it once (pip, no dependencies) and extract only the folders listed in
requirements/collections.txt into .collections/ansible_collections/.
"""
from __future__ import annotations

import hashlib
import pathlib
import shutil
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = ROOT / "requirements" / "collections.txt"
CACHE = ROOT / ".cache" / "wheels"
TARGET = ROOT / ".collections" / "ansible_collections"
STAMP = ROOT / ".collections" / ".stamp"


def _read_spec() -> tuple[str, list[str]]:
    lines = [ln.split("#", 1)[0].strip() for ln in SPEC.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[0], lines[1:]


def main() -> int:
    wheel_req, collections = _read_spec()
    digest = hashlib.sha256(SPEC.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        print(f"collections: up to date ({len(collections)} from {wheel_req})")
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    name, _, version = wheel_req.partition("==")
    wheels = sorted(CACHE.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--python-version", "3.12",
             "--dest", str(CACHE), wheel_req],
            check=True,
        )
        wheels = sorted(CACHE.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        print(f"collections: no wheel for {wheel_req} in {CACHE}", file=sys.stderr)
        return 1
    if TARGET.exists():
        shutil.rmtree(TARGET)
    prefixes = tuple(
        "ansible_collections/{}/{}/".format(*c.split(".", 1)) for c in collections
    )
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = [m for m in wheel.namelist() if m.startswith(prefixes)]
        wheel.extractall(TARGET.parent, members)
    missing = [c for c in collections if not (TARGET / c.replace(".", "/")).is_dir()]
    if missing:
        print(f"collections: not in {wheels[0].name}: {', '.join(missing)}", file=sys.stderr)
        return 1
    STAMP.write_text(digest)
    print(f"collections: installed {len(collections)} from {wheels[0].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
