#!/usr/bin/env python3
"""Pack the collections botstack.deploy depends on (galaxy.yml's dependencies and theirs) as
artifacts `ansible-galaxy collection install --offline` accepts, from the collections `make setup`
installed under .collections/ (taken from the PyPI `ansible` wheel).

    scripts/collection-artifacts.py OUTDIR [REQUIREMENTS]

The wheel ships each collection without its CI and test files while its FILES.json still lists
them, so FILES.json is written anew for what is there (with sha256 sums) and MANIFEST.json points at
it. REQUIREMENTS (an ee/requirements.yml) must list every artifact written, or this fails.
"""
from __future__ import annotations

import hashlib
import io
import json
import pathlib
import sys
import tarfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALLED = ROOT / ".collections" / "ansible_collections"


def closure() -> list[str]:
    todo = list(yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"])
    seen: set[str] = set()
    while todo:
        fqcn = todo.pop()
        if fqcn not in seen:
            seen.add(fqcn)
            manifest = json.loads((INSTALLED / fqcn.replace(".", "/") / "MANIFEST.json").read_text())
            todo += list(manifest["collection_info"].get("dependencies") or {})
    return sorted(seen)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def pack(fqcn: str, out: pathlib.Path) -> None:
    source = INSTALLED / fqcn.replace(".", "/")
    manifest = json.loads((source / "MANIFEST.json").read_text())
    files = [{"name": ".", "ftype": "dir", "chksum_type": None, "chksum_sha256": None, "format": 1}]
    paths = sorted(p for p in source.rglob("*") if p.name not in ("MANIFEST.json", "FILES.json")
                   and "__pycache__" not in p.parts)
    for path in paths:
        name = path.relative_to(source).as_posix()
        if path.is_dir():
            files.append({"name": name, "ftype": "dir", "chksum_type": None, "chksum_sha256": None, "format": 1})
        elif path.is_file():
            files.append({"name": name, "ftype": "file", "chksum_type": "sha256",
                          "chksum_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "format": 1})
    files_json = json.dumps({"files": files, "format": 1}, indent=2).encode()
    manifest["file_manifest_file"]["chksum_sha256"] = hashlib.sha256(files_json).hexdigest()
    with tarfile.open(out, "w:gz") as tar:
        _add_bytes(tar, "MANIFEST.json", json.dumps(manifest, indent=2).encode())
        _add_bytes(tar, "FILES.json", files_json)
        for path in paths:
            tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)


def main() -> int:
    out = pathlib.Path(sys.argv[1])
    listed = (pathlib.Path(sys.argv[2]).read_text() if len(sys.argv) > 2 else None)
    out.mkdir(parents=True, exist_ok=True)
    for fqcn in closure():
        artifact = f"{fqcn.replace('.', '-')}.tar.gz"
        if listed is not None and f"collections/{artifact}" not in listed:
            print(f"{sys.argv[2]} does not list collections/{artifact} ({fqcn}, a dependency)", file=sys.stderr)
            return 1
        pack(fqcn, out / artifact)
        print(f"packed {fqcn} -> {out / artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
