#!/usr/bin/env python3
"""Hardening figures for the base role, side by side with a bare host.

On one fresh Debian systemd container (the `base` molecule scenario's host):
bare ssh-audit + Lynis, then the role's first converge, second run and
`--check --diff` timed, then ssh-audit + Lynis again. Prints a table.

    .venv/bin/python benchmarks/base_hardening.py
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "molecule"))
from instruments import lynis_in_container, ssh_audit_in_container  # noqa: E402

SCENARIO = "base"
HOST = "base-host"


def molecule(step: str, *args: str) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(["molecule", step, "-s", SCENARIO, *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, NO_COLOR="1", ANSIBLE_NOCOLOR="1"), check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"molecule {step} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP")[-1]))


def main() -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-base-"))
    molecule("destroy")
    molecule("create")
    molecule("prepare")
    subprocess.run(["docker", "exec", HOST, "sh", "-c",
                    "for i in $(seq 1 30); do systemctl is-active -q ssh && break; sleep 1; done"], check=False)
    bare_ssh = ssh_audit_in_container(HOST, 22, work)
    bare_lynis = lynis_in_container(HOST)
    # Lynis is removed again so the role converges the host as it was.
    subprocess.run(["docker", "exec", HOST, "apt-get", "purge", "-y", "-qq", "lynis"], capture_output=True, check=False)
    first, first_out = molecule("converge")
    second, second_out = molecule("converge")
    check, check_out = molecule("converge", "--", "--check", "--diff")
    ours_ssh = ssh_audit_in_container(HOST, 22, work)
    ours_lynis = lynis_in_container(HOST)
    molecule("destroy")

    rows = [
        ("Lynis hardening index", bare_lynis["index"], ours_lynis["index"]),
        ("ssh-audit fail", bare_ssh["fail"], ours_ssh["fail"]),
        ("ssh-audit warn", bare_ssh["warn"], ours_ssh["warn"]),
        ("ssh-audit 'Hardened Debian 12 (version 3)'", "pass" if bare_ssh["policy_passed"] else "fail",
         "pass" if ours_ssh["policy_passed"] else "fail"),
    ]
    print(f"{'measure':45} {'bare Debian 12':>15} {'base role':>12}")
    for name, bare, ours in rows:
        print(f"{name:45} {bare!s:>15} {ours!s:>12}")
    print()
    print(f"first converge        {first:7.1f} s  changed={changed(first_out)}")
    print(f"second run            {second:7.1f} s  changed={changed(second_out)}")
    print(f"--check --diff        {check:7.1f} s  changed={changed(check_out)}")
    print()
    print("remaining Lynis suggestions:", " ".join(ours_lynis["suggestions"]))
    print("Lynis warnings:", " ".join(ours_lynis["warnings"]) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
