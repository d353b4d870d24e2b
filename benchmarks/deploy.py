#!/usr/bin/env python3
"""Releases under load: botstack.deploy's blue/green flow beside the seed's stop -> update -> install -> start.

One fresh host (the deploy scenario's container, reached over SSH as a server is), a steady
request loop (20 req/s, half on kept-alive connections, plus a 3 s request every second so some
are always in flight at a switch):

  deps changed   v1 -> v2: a new dependency (a new venv) and a new column (a migration)
  code only      v2 -> v3: the same lock file (the venv is reused)
  rollback       v3 -> v2 (playbooks/rollback.yml)
  kept running   v2 -> v3.N with deploy_keep_previous_running=true (v2's web processes stay up): v3.N
                 is v3 plus one commit (a new release, code only), tagged on the host's repository
                 first; then the rollback to v2, which gates the kept processes instead of starting new ones
  broken         v3-crash: the API crash-loops at import; the play must fail, v2 keep serving
  broken scheduler  v3-schedcrash: API and worker pass the gate and take traffic, the scheduler
                 crashes once its imports ran; the play must fail, v2 serve again
  seed           the same app on the same host run the seed way: systemctl stop, git checkout,
                 pip install -r, systemctl start (one shell script, the loop on its own port)
  kill trials    deploys killed (SIGKILL, whole process group) at a random point, each followed
                 by a full deploy that must succeed; the loop runs across all of them

Prints a table; asserts nothing.

    .venv/bin/python benchmarks/deploy.py [--kill-trials 20] [--kill-only] [--mitogen] [--keep] [--quick] [--profile] [--repeat N]

--repeat N runs the kept-running pair (code only, then the rollback to the kept slot) N times and
prints the median, lowest and highest of each: on a shared machine one run can be off by a second.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import random
import signal
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "molecule"))
from traffic import Traffic  # noqa: E402

HOST, SITE, KEY = "deploy-host", "bot.botstack.test", ROOT / ".cache" / "bench" / "id_ed25519"
SEED_PORT = 8101
# Figures given with the issue for the same kind of host (tiny FastAPI app, 20 req/s), measured elsewhere.
ANCHORS = {
    "seed": "0.7 s, 16 failed",
    "code only": "ansistrano 11.3 s, 7 failed",
    "rollback": "ansistrano 6.8 s, 8 failed",
    "broken": "ansistrano: reported success, site down 16 s",
}


def env() -> dict:
    e = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
             ANSIBLE_COLLECTIONS_PATH=f"{ROOT / '.collections'}:{ROOT}", NO_COLOR="1", ANSIBLE_NOCOLOR="1")
    return e


def sh(*argv, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, env=env(), cwd=ROOT, check=False, **kwargs)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv[:5]))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return result


def address() -> str:
    return sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", HOST).stdout.strip()


def prepare(mitogen: bool, reuse: bool = False) -> tuple[list[str], dict]:
    if reuse:
        print("[bench] the host left by --keep (v1 must be live)", flush=True)
    else:
        print("[bench] a fresh host: molecule create + converge (deploy scenario, v1 live)", flush=True)
        sh("molecule", "destroy", "-s", "deploy", check=False)
        sh("molecule", "create", "-s", "deploy")
        sh("molecule", "converge", "-s", "deploy")
    # The newest: a clone elsewhere (CI) leaves its own scenario directory beside this checkout's.
    inventory = max(glob.glob(os.path.expanduser("~/.ansible/tmp/molecule.*.deploy/inventory")), key=os.path.getmtime)
    KEY.parent.mkdir(parents=True, exist_ok=True)
    if not KEY.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(KEY))
    sh("docker", "exec", "-i", HOST, "sh", "-c", "mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys",
       input=KEY.with_suffix(".pub").read_text())
    ssh = {"ansible_connection": "ssh", "ansible_host": address(), "ansible_user": "root",
           "ansible_ssh_private_key_file": str(KEY),
           "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                      "-o ControlMaster=auto -o ControlPersist=120s"}
    extra_env = {}
    if mitogen:
        target = ROOT / ".cache" / "mitogen"
        if not (target / "ansible_mitogen").exists():
            sh(sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "mitogen==0.3.54")
        extra_env = {"ANSIBLE_STRATEGY_PLUGINS": str(target / "ansible_mitogen" / "plugins" / "strategy"),
                     "ANSIBLE_STRATEGY": "mitogen_linear", "PYTHONPATH": str(target),
                     # Mitogen's SSH client follows host_key_checking, not the -o options; the host is throwaway.
                     "ANSIBLE_HOST_KEY_CHECKING": "False"}
    return ["ansible-playbook", "-i", inventory, "-e", json.dumps(ssh)], extra_env


def playbook(base: list[str], extra_env: dict, name: str, *args: str) -> list[str]:
    return ["env", *(f"{k}={v}" for k, v in extra_env.items()), *base, str(ROOT / "playbooks" / name), *args]


PROFILE = False  # --profile: print each playbook's slowest tasks (ansible.posix.profile_tasks)


def measure(label: str, argv: list[str], url: str, host_header: str = SITE, slow: bool = True) -> dict:
    """One playbook run under 20 req/s; with slow, a 3-s request starts every second too (the drain waits for them)."""
    run_env = env()
    if PROFILE and argv[0] == "env":
        run_env.update(ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT=os.environ.get("PROFILE_TASKS_TASK_OUTPUT_LIMIT", "12"))
    started = time.monotonic()
    with Traffic(url, host_header, rate=20, slow_every=1 if slow else 0, slow_seconds=3) as traffic:
        result = subprocess.run(argv, capture_output=True, text=True, env=run_env, cwd=ROOT, check=False)
        elapsed = time.monotonic() - started
    if PROFILE and argv[0] == "env":
        tail = result.stdout[result.stdout.rfind("=" * 20):] if "=" * 20 in result.stdout else result.stdout[-1500:]
        tasks = len([line for line in result.stdout.splitlines() if line.startswith("TASK [")])
        print(f"[bench] {label}: {tasks} tasks; slowest:\n{tail.strip()}", flush=True)
    if result.returncode != 0:
        print(f"[bench] {label}: the playbook failed; its last lines:\n{result.stdout[-1200:]}", flush=True)
    report = traffic.report
    # When the release the run put live answered first, and the one it replaced last (plain requests).
    switched = ""
    if len(report.first_seen) > 1:
        old = min(report.first_seen, key=report.first_seen.get)
        new = max(report.last_seen, key=report.last_seen.get)
        if new != old:
            switched = (f"{new} from {report.first_seen[new] - started:.1f} s, "
                        f"{old} until {report.last_seen[old] - started:.1f} s")
    row = {"case": label, "seconds": round(elapsed, 1), "switched": switched, "requests": report.total,
           "failed": report.failed, "resent": report.resent,
           "outcome": "ok" if result.returncode == 0 else "reported a failure",
           "versions": dict(report.versions)}
    print(f"[bench] {label}: {row}", flush=True)
    return row


def prepare_seed(ssh_target: list[str]):
    """The seed's way on the same host: one directory, one venv, one unit, one port."""
    script = f"""set -e
id seed >/dev/null 2>&1 || useradd --system --shell /usr/sbin/nologin seed
rm -rf /srv/seed && mkdir -p /srv/seed && git clone -q /srv/git/botapp.git /srv/seed/app
cd /srv/seed/app && git checkout -q v1
python3 -m venv /srv/seed/venv && /srv/seed/venv/bin/pip install -q -r requirements.lock
cat > /etc/systemd/system/seed-api.service <<EOF
[Service]
User=seed
WorkingDirectory=/srv/seed/app
EnvironmentFile=/opt/botstack/.env
ExecStart=/srv/seed/venv/bin/uvicorn botapp.api:app --host 0.0.0.0 --port {SEED_PORT}
EOF
systemctl daemon-reload && systemctl restart seed-api
for i in $(seq 1 60); do curl -sf localhost:{SEED_PORT}/health >/dev/null && exit 0; sleep 0.5; done; exit 1
"""
    sh(*ssh_target, script)


def seed_deploy(ssh_target: list[str], version: str) -> list[str]:
    return [*ssh_target, f"set -e; systemctl stop seed-api; cd /srv/seed/app && git checkout -q {version}; "
                         f"/srv/seed/venv/bin/pip install -q -r requirements.lock; systemctl start seed-api"]


def kill_trials(base, extra_env, url, trials: int, rng: random.Random) -> dict:
    outcomes = {"killed": 0, "finished": 0, "recovered": 0, "recovery_failed": 0}
    started = time.monotonic()
    with Traffic(url, SITE, rate=20, slow_every=2, slow_seconds=3) as traffic:
        for trial in range(trials):
            version = "v2" if trial % 2 == 0 else "v3"
            # v3 may be marked failed (the rollbacks above return from it): a retried deploy forces it, as an operator
            # would; going back and forth between two releases needs the flag for the older one.
            deploy = playbook(base, extra_env, "deploy.yml", "-e", f"deploy_version={version}", "-e", "deploy_force=true",
                              "-e", "deploy_allow_older=true")
            proc = subprocess.Popen(deploy,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), cwd=ROOT,
                                    start_new_session=True)
            try:
                proc.wait(rng.uniform(0.5, 14.0))
                outcomes["finished"] += 1
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                outcomes["killed"] += 1
            recovery = subprocess.run(deploy, capture_output=True, text=True, env=env(), cwd=ROOT, check=False)
            outcomes["recovered" if recovery.returncode == 0 else "recovery_failed"] += 1
    report = traffic.report
    row = {"case": f"kill trials ({trials})", "seconds": round(time.monotonic() - started, 1),
           "requests": report.total, "failed": report.failed, "resent": report.resent,
           "outcome": f"{outcomes['killed']} killed, {outcomes['finished']} finished first, "
                      f"{outcomes['recovered']} recovered, {outcomes['recovery_failed']} recoveries failed",
           "versions": dict(report.versions)}
    print(f"[bench] {row}", flush=True)
    return row


def code_change(ssh_target: list[str], run: int) -> str:
    """Tag v3.<run> on the host's repository: v3 plus one commit changing a comment (code only, same lock file)."""
    tag = f"v3.{run}"
    sh(*ssh_target, f"set -e; rm -rf /tmp/bench-work; git clone -q /srv/git/botapp.git /tmp/bench-work; "
                    f"cd /tmp/bench-work; git checkout -q v3; echo '# bench change {run}' >> botapp/__init__.py; "
                    f"git -c user.name=bench -c user.email=bench@localhost commit -q -am 'bench change {run}'; "
                    f"git tag -f {tag}; git push -q -f origin {tag}; rm -rf /tmp/bench-work")
    return tag


def releases(base, extra_env, url: str, keep: str, repeat: int, ssh_target: list[str]) -> list[dict]:
    """The release cases, in order, from v1 live."""
    steady = code_change(ssh_target, 0)
    rows = [
        measure("deps changed", playbook(base, extra_env, "deploy.yml", "-e", "deploy_version=v2"), url),
        measure("code only", playbook(base, extra_env, "deploy.yml", "-e", "deploy_version=v3"), url),
        measure("rollback", playbook(base, extra_env, "rollback.yml"), url),
        # The anchor's load: the steady loop alone, no slow request for the old slot to drain.
        measure("code only, steady loop only", playbook(base, extra_env, "deploy.yml", "-e", f"deploy_version={steady}"),
                url, slow=False),
    ]
    for run in range(1, repeat + 1):
        suffix = f" ({run})" if run > 1 else ""
        tag = code_change(ssh_target, run)
        rows.append(measure(f"code only, previous kept running{suffix}",
                            playbook(base, extra_env, "deploy.yml", "-e", f"deploy_version={tag}", "-e", keep), url))
        rows.append(measure(f"rollback to the kept slot{suffix}", playbook(base, extra_env, "rollback.yml", "-e", keep),
                            url))
    rows += [
        measure("broken", playbook(base, extra_env, "deploy.yml", "-e", "deploy_version=v3-crash"), url),
        measure("broken scheduler", playbook(base, extra_env, "deploy.yml", "-e", "deploy_version=v3-schedcrash"), url),
        # The kept-running pairs ended where they began: on the steady loop's release.
        measure("no-op (same version)", playbook(base, extra_env, "deploy.yml", "-e", f"deploy_version={steady}"), url),
    ]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-trials", type=int, default=20)
    parser.add_argument("--mitogen", action="store_true", help="run the playbooks with Mitogen's strategy")
    parser.add_argument("--keep", action="store_true", help="leave the host up afterwards")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--quick", action="store_true", help="the releases only: no seed procedure, no kill trials")
    parser.add_argument("--kill-only", action="store_true", help="the kill trials only (after the converge)")
    parser.add_argument("--profile", action="store_true", help="print each release's slowest tasks")
    parser.add_argument("--reuse", action="store_true", help="measure on the host a --keep run left (v1 live)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the kept-running pair (median, min, max)")
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    keep = json.dumps({"deploy_keep_previous_running": True})
    base, extra_env = prepare(args.mitogen, args.reuse)
    ip = address()
    url = f"https://{ip}"
    ssh_target = ["ssh", "-i", str(KEY), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                  "-o", "LogLevel=ERROR", f"root@{ip}"]
    if args.kill_only:
        rows = [kill_trials(base, extra_env, url, args.kill_trials, random.Random(args.seed))]
    else:
        rows = releases(base, extra_env, url, keep, args.repeat, ssh_target)
    if not args.quick and not args.kill_only:
        prepare_seed(ssh_target)
        rows.append(measure("seed", seed_deploy(ssh_target, "v3"), f"http://{ip}:{SEED_PORT}", ""))
        rows.append(kill_trials(base, extra_env, url, args.kill_trials, random.Random(args.seed)))
    connection = "ssh + mitogen" if args.mitogen else "ssh (ControlPersist, pipelining)"
    print(f"\nReleases under 20 req/s through nginx over TLS (seed: its own port), {connection}, one Debian 12 "
          f"container, 2 cores\n")
    print(f"| case | wall s | traffic moved | requests | failed | resent | outcome | anchor |\n"
          f"|---|---|---|---|---|---|---|---|")
    for row in rows:
        anchor = next((v for k, v in ANCHORS.items() if row["case"].startswith(k)), "")
        print(f"| {row['case']} | {row['seconds']} | {row.get('switched', '')} | {row['requests']} | {row['failed']} "
              f"| {row.get('resent', 0)} | {row['outcome']} | {anchor} |")
    if args.repeat > 1:
        print()
        for case in ("code only, previous kept running", "rollback to the kept slot"):
            runs = [r for r in rows if r["case"].split(" (")[0] == case]
            walls = sorted(r["seconds"] for r in runs)
            moved = sorted(float(r["switched"].split(" from ")[1].split(" s")[0]) for r in runs if r["switched"])
            print(f"{case}, {len(runs)} runs: wall median {statistics.median(walls)} s (lowest {walls[0]}, highest "
                  f"{walls[-1]}); traffic moved at median {statistics.median(moved) if moved else '-'} s; "
                  f"failed requests {sum(r['failed'] for r in runs)}")
    if not args.keep:
        sh("molecule", "destroy", "-s", "deploy", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
