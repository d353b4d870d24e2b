"""Run instruments nobody here wrote (ssh-audit, Lynis) against a test host.

Used by verify steps and by benchmarks/, so both measure the same way.
"""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tempfile
import zipapp

SSH_AUDIT_POLICY = "Hardened Debian 12 (version 3)"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def ssh_audit_pyz(dest_dir: pathlib.Path) -> pathlib.Path:
    """Pack the controller's ssh-audit (PyPI) as a zipapp a host's python3 can run."""
    import ssh_audit  # noqa: PLC0415 - only needed by this helper

    target = dest_dir / "ssh-audit.pyz"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(pathlib.Path(ssh_audit.__file__).parent, pathlib.Path(tmp) / "ssh_audit",
                        ignore=shutil.ignore_patterns("__pycache__"))
        zipapp.create_archive(tmp, target, main="ssh_audit.ssh_audit:main")
    return target


def ssh_audit_in_container(container: str, port: int, workdir: pathlib.Path) -> dict:
    """ssh-audit over the host's loopback (ufw does not rate-limit lo).

    Returns fail/warn counts of a plain audit and the policy verdict.
    """
    pyz = ssh_audit_pyz(workdir)
    _docker("cp", str(pyz), f"{container}:/tmp/ssh-audit.pyz")
    audit = _docker("exec", container, "python3", "/tmp/ssh-audit.pyz", "--no-colors",
                    "-p", str(port), "127.0.0.1", check=False)
    policy = _docker("exec", container, "python3", "/tmp/ssh-audit.pyz", "--no-colors",
                     "-p", str(port), "-P", SSH_AUDIT_POLICY, "127.0.0.1", check=False)
    return {
        "fail": len(re.findall(r"\(\w+\) .*-- \[fail\]", audit.stdout)),
        "warn": len(re.findall(r"\(\w+\) .*-- \[warn\]", audit.stdout)),
        "audit_output": audit.stdout,
        "policy_passed": policy.returncode == 0 and "Passed" in policy.stdout,
        "policy_output": policy.stdout,
    }


def lynis_in_container(container: str) -> dict:
    """Lynis from Debian, run inside the host; returns the index and suggestion IDs."""
    _docker("exec", "-e", "DEBIAN_FRONTEND=noninteractive", container,
            "apt-get", "install", "-y", "-qq", "--no-install-recommends", "lynis")
    run = _docker("exec", container, "lynis", "audit", "system", "--quick", "--no-colors",
                  check=False)
    report = _docker("exec", container, "cat", "/var/log/lynis-report.dat").stdout
    index = re.search(r"^hardening_index=(\d+)", report, re.M)
    suggestions = sorted(set(re.findall(r"^suggestion\[\]=([A-Z]+-\d+)\|", report, re.M)))
    warnings = sorted(set(re.findall(r"^warning\[\]=([A-Z]+-\d+)\|", report, re.M)))
    return {
        "index": int(index.group(1)) if index else -1,
        "suggestions": suggestions,
        "warnings": warnings,
        "output": run.stdout,
    }
