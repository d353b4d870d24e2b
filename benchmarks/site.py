#!/usr/bin/env python3
"""The whole single-host stack: a cold `site.yml` converge and the idempotent re-run, with the
slowest tasks of each (ansible.posix.profile_tasks).

A fresh demo container (the `demo` molecule scenario, as `make demo` makes it; it replaces a demo
host that is up), the demo inventory (hardening, PostgreSQL, Redis, Debian's Python, the sample bot
platform v1, nginx with TLS, Prometheus + Alertmanager), run twice. The issue's targets on a 2-core
machine: cold <= 6 min (no CPython compile here: Debian's python3), re-run <= 60 s with 0 changed.

The re-run is also measured as production runs it, over SSH (the demo admin user, sudo, ControlPersist,
pipelining), and with `--mitogen` over SSH with Mitogen's strategy (the accelerator the issue names; installed
from PyPI into .cache/mitogen, not a dependency of the collection).

Prints figures; asserts nothing.

    .venv/bin/python benchmarks/site.py [--top 12] [--keep] [--mitogen] [--reuse]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "demo"
HOST = "botstack-demo"
TASK_LINE = re.compile(r"^(?P<name>.+?) -+ (?P<seconds>\d+\.\d+)s$")
RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def env(**extra: str) -> dict:
    return dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
                ANSIBLE_COLLECTIONS_PATH=f"{ROOT / '.collections'}:{ROOT}", NO_COLOR="1", ANSIBLE_NOCOLOR="1", **extra)


def sh(*argv, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, env=kwargs.pop("env", env()), cwd=ROOT,
                            check=False, **kwargs)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv[:6]))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return result


def fresh_host() -> None:
    print("[bench] a fresh demo container (molecule scenario demo)", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    key = WORK / "demo_ed25519"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo@botstack", "-f", str(key))
    sh(sys.executable, "examples/botapp/build-repo.py", str(WORK / "botapp.git"),
       "--archive", f"v1:{WORK / 'botapp-v1.tar.gz'}", "--archive", f"v2:{WORK / 'botapp-v2.tar.gz'}")
    sh("molecule", "destroy", "-s", "demo", check=False)
    sh("molecule", "create", "-s", "demo")
    for _ in range(30):
        state = sh("docker", "exec", HOST, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    # As make demo does: Debian's Redis unit needs a user namespace a container lacks.
    sh("docker", "exec", HOST, "sh", "-c", "mkdir -p /etc/systemd/system/redis-server.service.d && printf "
       "'[Service]\\nProtectProc=default\\n' > /etc/systemd/system/redis-server.service.d/10-container.conf")


def over_ssh() -> list[str]:
    """An inventory source that reaches the demo host over SSH; later sources win for the same host, and
    unlike extra vars it leaves the tasks delegated to localhost local."""
    address = sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", HOST).stdout.strip()
    inventory = WORK / "bench-over-ssh.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {HOST: {
        "ansible_connection": "ssh", "ansible_host": address, "ansible_user": "demo",
        "ansible_ssh_private_key_file": str(WORK / "demo_ed25519"),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes "
                                   "-o ControlMaster=auto -o ControlPersist=120s"}}}}))
    return ["-i", str(inventory)]


def mitogen() -> dict:
    target = ROOT / ".cache" / "mitogen"
    if not (target / "ansible_mitogen").exists():
        sh(sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "mitogen==0.3.54")
    return {"ANSIBLE_STRATEGY_PLUGINS": str(target / "ansible_mitogen" / "plugins" / "strategy"),
            "ANSIBLE_STRATEGY": "mitogen_linear", "PYTHONPATH": str(target),
            # Mitogen's SSH client follows host_key_checking, not the -o options; the demo host is throwaway.
            "ANSIBLE_HOST_KEY_CHECKING": "False"}


def converge(label: str, extra: list[str] | None = None, extra_env: dict | None = None) -> dict:
    started = time.monotonic()
    result = sh("ansible-playbook", "-i", "inventories/demo", *(extra or []), "--vault-password-file",
                "inventories/demo/vault-password.txt", "site.yml", check=False,
                env=env(ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT="all",
                        PROFILE_TASKS_SORT_ORDER="descending", **(extra_env or {})))
    seconds = time.monotonic() - started
    log = WORK / f"bench-site-{label}.log"
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"site.yml ({label}) failed after {seconds:.0f} s; its output: {log}")
    recap = RECAP.search(result.stdout)
    tasks = []
    summary = result.stdout.split("PLAY RECAP", 1)[1]
    for line in summary.splitlines():
        match = TASK_LINE.match(line.strip())
        if match:
            tasks.append((float(match["seconds"]), match["name"].strip()))
    return {"seconds": seconds, "ok": int(recap.group(1)), "changed": int(recap.group(2)), "tasks": tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=12, help="slowest tasks to print per run")
    parser.add_argument("--keep", action="store_true", help="leave the demo host up")
    parser.add_argument("--mitogen", action="store_true", help="also re-run over SSH with Mitogen's strategy")
    parser.add_argument("--reuse", action="store_true", help="keep the converged demo host: re-runs only")
    args = parser.parse_args()
    if not args.reuse:
        fresh_host()
    runs = {}
    plan = [] if args.reuse else [("cold", None, None)]
    plan += [("re-run", None, None), ("re-run over ssh", over_ssh(), None)]
    if args.mitogen:
        plan.append(("re-run over ssh + mitogen", over_ssh(), mitogen()))
    for label, extra, extra_env in plan:
        print(f"[bench] site.yml, {label}", flush=True)
        runs[label] = converge(label.replace(" ", "-").replace("+", ""), extra, extra_env)
    if not args.keep:
        sh("molecule", "destroy", "-s", "demo", check=False)

    print("\n| run | wall | tasks ok | changed | sum of task times | target |")
    print("|---|---|---|---|---|---|")
    for label, run in runs.items():
        total = sum(s for s, _ in run["tasks"])
        target = "<= 360 s" if label == "cold" else "<= 60 s, 0 changed"
        print(f"| {label} | {run['seconds']:.1f} s | {run['ok']} | {run['changed']} | {total:.1f} s | {target} |")
    for label, run in runs.items():
        print(f"\nslowest tasks, {label}:")
        for seconds, name in run["tasks"][:args.top]:
            print(f"  {seconds:7.2f} s  {name}")
        per_role: dict[str, float] = {}
        for seconds, name in run["tasks"]:
            role = name.split(" : ", 1)[0] if " : " in name else "(playbook)"
            per_role[role] = per_role.get(role, 0.0) + seconds
        print(f"  by role: " + ", ".join(f"{r.replace('botstack.deploy.', '')} {s:.0f} s"
                                         for r, s in sorted(per_role.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
