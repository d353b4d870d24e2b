#!/usr/bin/env bash
# scripts/vm-reboot.sh: a real reboot of the one-host stack, on a real kernel.
#
# A container cannot boot a kernel again, so this turns the demo's converged container into a
# QEMU VM (software emulation, TCG: /dev/kvm hangs on this engine's hosts, see TESTHOSTS.md) and
# reboots that VM with a database slow to come back. It proves that every unit and timer comes back
# on the live slot, the app's processes starting after PostgreSQL is up (not giving up before it),
# and that the base role's kernel settings apply on a real kernel and survive the reboot.
#
#   1. converge  the demo's host (molecule/demo's container, inventories/demo): site.yml, then v2
#   2. disk      kernel + ifupdown into it, `docker export`, `mkfs.ext4 -d`, boot it in QEMU
#   3. before    over SSH (127.0.0.1:2222, the demo's admin user and key): live slot, units, timers,
#                timestamps; base converged again into the VM with base_sysctl_enabled=true
#   4. reboot    PostgreSQL made slow (ExecStartPre sleeps 20 s), `systemctl reboot`, then the same
#                checks and the ordering of the app after PostgreSQL; a PASS/FAIL table
#   5. clean up  VM shut down, container destroyed, disk removed (--keep keeps all three)
#
# Usage: scripts/vm-reboot.sh [--keep] [--reuse-disk] [--no-sysctl]
#   --keep        leave the VM running and the container and disk in place (ssh: see the end)
#   --reuse-disk  skip 1-2 and boot .cache/vm/disk.img as it is (a disk kept by an earlier --keep run)
#   --no-sysctl   skip the base converge of the kernel settings inside the VM
# Everything lives under .cache/vm/ (git-ignored). Exit 0 only when every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$PWD/.collections:$PWD"
export NO_COLOR=1 ANSIBLE_NOCOLOR=1

keep=false build=true sysctl=true
for arg; do
  case $arg in
    --keep) keep=true ;;
    --reuse-disk) build=false ;;
    --no-sysctl) sysctl=false ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

# --- names: the demo's, so the stack is converged exactly as `make demo` converges it -------------
name=botstack-demo                # molecule/demo's container = inventories/demo's only host
site=demo.botstack.test           # inventories/demo/group_vars/web/nginx.yml
app=$(awk '$1 == "app_name:" {print $2}' inventories/demo/group_vars/app/app.yml)
demo=.cache/demo                  # scripts/demo.sh keeps the admin key and release archives here
work=.cache/vm
port=2222
vault=(--vault-password-file inventories/demo/vault-password.txt)
playbook=(ansible-playbook -i inventories/demo "${vault[@]}")
# The molecule lanes lock the shared apt archive while they download: this script gets its own,
# seeded with hard links to it (as scripts/test.sh does for its second lane).
archives=/var/cache/botstack/apt-archives-vm
# The slow database of the reboot (a crash recovery after a power loss takes its time).
slow_db_seconds=20
mkdir -p "$work"
t_script=$SECONDS

say() { printf '\n[vm] %s\n' "$*"; }
die() { printf '\n[vm] FAILED: %s\n' "$*" >&2; exit 1; }
took() { echo "$((SECONDS - $1)) s"; }
recap() { grep -A1 'PLAY RECAP' "$1" | tail -n1 | sed 's/^/     /'; }
run_logged() {  # run_logged LOG CMD...: the command's output goes to LOG, its tail to the screen on failure
  local log=$1; shift
  "$@" >"$log" 2>&1 || { tail -n 40 "$log" >&2; die "$* (log: $log)"; }
}

# --- SSH into the VM: the demo's admin user and key, as an operator logs in -------------------------
# The base role forbids root logins (PermitRootLogin no, AllowGroups sshusers), so no root key is
# planted: the demo's admin `demo` (sudo without password) is the way in. One multiplexed connection
# serves every command: ufw rate-limits SSH (6 new connections in 30 s) and sshd allows 2 sessions.
ssh_opts=(-p "$port" -i "$demo/demo_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes
  -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$PWD/$work/known_hosts"
  -o ConnectTimeout=10 -o ServerAliveInterval=10 -o LogLevel=ERROR
  -o ControlMaster=auto -o ControlPath="$PWD/$work/ssh-%C" -o ControlPersist=300)
vm() { ssh "${ssh_opts[@]}" demo@127.0.0.1 "$@"; }
vm_root() { vm sudo -n sh -s; }  # a shell script on stdin, run as root (ssh would re-split arguments)
vm_close() { ssh "${ssh_opts[@]}" -O exit demo@127.0.0.1 >/dev/null 2>&1 || true; }

qemu_running() { [[ -f $work/qemu.pid ]] && kill -0 "$(cat "$work/qemu.pid")" 2>/dev/null; }
vm_stop() {  # poweroff through systemd; the QEMU process (ours, by its pid file) killed if it lingers
  qemu_running || return 0
  vm sudo -n systemctl poweroff >/dev/null 2>&1 || true
  vm_close
  for _ in $(seq 1 60); do qemu_running || break; sleep 2; done
  if qemu_running; then kill "$(cat "$work/qemu.pid")"; sleep 2; fi
  rm -f "$work/qemu.pid"
}
# The container is ours only when this script created it: a `make demo` host of the same name is
# never destroyed here.
container_exists() { docker inspect "$name" >/dev/null 2>&1; }
container_destroy() {
  if container_exists && [[ -f $work/container.ours ]]; then
    molecule --env-file "$work/env.yml" destroy -s demo >"$work/destroy.log" 2>&1 || docker rm -f "$name" >/dev/null
  fi
  rm -f "$work/container.ours"
}
cleanup() {
  local rc=$?
  if $keep; then
    ((rc == 0)) || echo "[vm] --keep: VM, container and disk left as they are" >&2
    return
  fi
  vm_stop
  container_destroy
  rm -rf "$work/rootfs"
  ((rc != 0)) || rm -f "$work/disk.img"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # interrupted is failed: the disk stays for --reuse-disk

# --- tools: QEMU (Debian's package) -------------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null; then
  say "installing qemu-system-x86"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi
# One VM at a time: a VM left by an earlier --keep run is this script's own (its pid file).
if qemu_running; then say "stopping the VM of an earlier run"; vm_stop; fi

if $build; then
  # --- 1. converge: the demo's container and inventory, site.yml, then v2 ---------------------------
  if container_exists && [[ ! -f $work/container.ours ]]; then
    die "a container $name exists that this script did not start (make demo's host?): make clean first"
  fi
  say "1. the one-host stack, converged as make demo converges it ($name, inventories/demo)"
  t_phase=$SECONDS
  # What scripts/demo.sh prepares: the admin key pair and the app's release archives.
  [[ -f $demo/demo_ed25519 ]] || { mkdir -p "$demo"; ssh-keygen -q -t ed25519 -N '' -C demo@botstack -f "$demo/demo_ed25519"; }
  examples/botapp/build-repo.py "$demo/botapp.git" \
    --archive "v1:$demo/botapp-v1.tar.gz" --archive "v2:$demo/botapp-v2.tar.gz" >/dev/null
  mkdir -p "$archives/partial"
  find /var/cache/botstack/apt-archives -maxdepth 1 -name '*.deb' -exec cp -aln {} "$archives/" \; 2>/dev/null || true
  sed "s#/var/cache/botstack/apt-archives#$archives#g" .env.yml >"$work/env.yml"
  container_destroy
  touch "$work/container.ours"
  run_logged "$work/create.log" molecule --env-file "$work/env.yml" create -s demo
  for _ in $(seq 1 60); do
    state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
    [[ $state == running || $state == degraded ]] && break
    sleep 1
  done
  # As scripts/demo.sh: Debian's redis unit needs user namespaces a container cannot create.
  docker exec "$name" sh -c 'mkdir -p /etc/systemd/system/redis-server.service.d &&
    printf "[Service]\nProtectProc=default\n" > /etc/systemd/system/redis-server.service.d/10-container.conf'
  t0=$SECONDS
  run_logged "$work/converge.log" "${playbook[@]}" site.yml
  echo "     site.yml: $(took "$t0")"; recap "$work/converge.log"
  t0=$SECONDS
  run_logged "$work/deploy-v2.log" "${playbook[@]}" playbooks/deploy.yml -e deploy_version=v2
  echo "     deploy v2: $(took "$t0")"; recap "$work/deploy-v2.log"
  echo "     live: $(docker exec "$name" readlink "/opt/$app/current") (phase $(took "$t_phase"))"

  # --- 2. the container becomes a VM disk ---------------------------------------------------------
  say "2. the container becomes a VM disk (kernel, ifupdown, docker export, mkfs.ext4 -d)"
  t_phase=$SECONDS
  # The converge set needrestart up: list only, never restart the stack's services here.
  run_logged "$work/kernel.log" docker exec -e DEBIAN_FRONTEND=noninteractive -e NEEDRESTART_MODE=l "$name" \
    apt-get install -y --no-install-recommends linux-image-cloud-amd64 ifupdown isc-dhcp-client curl
  # A clean shutdown: PostgreSQL's data directory is consistent on the disk.
  docker exec "$name" systemctl poweroff >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do [[ $(docker inspect -f '{{.State.Running}}' "$name") == false ]] && break; sleep 1; done
  [[ $(docker inspect -f '{{.State.Running}}' "$name") == false ]] || docker stop -t 30 "$name" >/dev/null
  rm -rf "$work/rootfs"; mkdir -p "$work/rootfs"
  docker export "$name" | tar -C "$work/rootfs" -x --numeric-owner -p --xattrs --xattrs-include='*'
  root=$work/rootfs
  # What docker bind-mounted or set up, written as a VM needs it.
  rm -f "$root/.dockerenv"
  printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' >"$root/etc/network/interfaces"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
  echo "$name" >"$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' "$name" >"$root/etc/hosts"
  rm -f "$root/etc/resolv.conf"; echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"  # dhclient rewrites it
  # An empty machine-id would make the VM's first boot a "first boot" (presets applied to every unit).
  [[ -s $root/etc/machine-id ]] || tr -d '-' </proc/sys/kernel/random/uuid >"$root/etc/machine-id"
  kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
  [[ -n $kernel ]] || die "no kernel under $root/boot (see $work/kernel.log)"
  cp "$kernel" "$work/vmlinuz"; cp "$root/boot/initrd.img-${kernel##*/vmlinuz-}" "$work/initrd.img"
  used_mb=$(du -sxm "$root" | cut -f1)
  size_mb=$((used_mb * 3 / 2 + 2048)); ((size_mb >= 6144)) || size_mb=6144
  rm -f "$work/disk.img"
  run_logged "$work/mkfs.log" mkfs.ext4 -q -F -L root -d "$root" "$work/disk.img" "${size_mb}M"
  rm -rf "$root" "$work/known_hosts"
  echo "     ${used_mb} MiB of files on a ${size_mb} MiB disk, kernel ${kernel##*/vmlinuz-} ($(took "$t_phase"))"
  # The container has served its purpose; the VM is the host from here on (--keep keeps it).
  $keep || container_destroy
fi
[[ -f $work/disk.img && -f $work/vmlinuz ]] || die "no $work/disk.img to boot (run without --reuse-disk)"

# --- the probe: what systemd says on the VM, as JSON (runs as root there) --------------------------
cat >"$work/probe.py" <<'PY'
import json, os, subprocess, sys, time
app, site, tries = sys.argv[1], sys.argv[2], int(sys.argv[3])
def sh(*args):
    return subprocess.run(args, capture_output=True, text=True).stdout.strip()
def names(*args):
    return [line.split()[0] for line in sh(*args).splitlines() if line.strip()]
PROPS = ("Id,ActiveState,SubState,Result,NRestarts,UnitFileState,ActiveEnterTimestamp,ActiveEnterTimestampMonotonic,"
         "InactiveExitTimestampMonotonic,ExecMainStartTimestamp,ExecMainStartTimestampMonotonic")
def show(units):
    blocks = sh("systemctl", "show", "-p", PROPS, "--", *units).split("\n\n") if units else []
    parsed = [dict(l.split("=", 1) for l in b.splitlines() if "=" in l) for b in blocks]
    return {p["Id"]: p for p in parsed if p.get("Id")}
live = os.path.basename(os.readlink(f"/opt/{app}/current"))
target = f"{app}.target"
wanted = sorted(sh("systemctl", "show", "-p", "Wants", "--value", target).split())
app_units = names("systemctl", "list-units", "--all", "--plain", "--no-legend", f"{app}-*@*.service")
platform = (names("systemctl", "list-units", "--all", "--plain", "--no-legend", "postgresql@*-main.service")
            + ["postgresql.service", "redis-server.service", "nginx.service"]
            + names("systemctl", "list-units", "--all", "--plain", "--no-legend", "prometheus*.service"))
timers = names("systemctl", "list-units", "--type=timer", "--state=active", "--plain", "--no-legend")
units = show(sorted(set(wanted + app_units + platform + timers + [target])))
health = {"code": 0, "body": ""}
for _ in range(tries):  # nginx may answer a few seconds after the boot is over
    out = subprocess.run(["curl", "-sk", "--max-time", "5", "--resolve", f"{site}:443:127.0.0.1",
                          "-w", "\n%{http_code}", f"https://{site}/health"], capture_output=True, text=True).stdout
    body, _, code = out.rpartition("\n")
    health = {"code": int(code or 0), "body": body}
    if health["code"] == 200:
        break
    time.sleep(2)
sysctl = {}
for conf in ("/etc/sysctl.d/90-botstack-hardening.conf", "/etc/sysctl.d/60-botstack-redis.conf"):
    if os.path.exists(conf):
        for line in open(conf):
            if "=" in line and not line.lstrip().startswith(("#", ";")):
                key, value = (s.strip() for s in line.split("=", 1))
                sysctl[key] = {"file": value, "kernel": sh("sysctl", "-n", key)}
shown = ["net.ipv4.tcp_syncookies", "kernel.kptr_restrict", "kernel.dmesg_restrict", "kernel.sysrq",
         "kernel.yama.ptrace_scope", "kernel.unprivileged_bpf_disabled", "fs.protected_regular",
         "net.ipv4.conf.all.rp_filter", "net.ipv6.conf.all.accept_ra", "vm.overcommit_memory"]
print(json.dumps({
    "live": live, "target": target, "wanted": wanted, "app_units": app_units, "platform": platform,
    "timers": timers, "units": units, "health": health, "sysctl": sysctl,
    "kernel_values": {key: sh("sysctl", "-n", key) for key in shown},
    "system": sh("systemctl", "is-system-running"),
    "failed": names("systemctl", "list-units", "--failed", "--plain", "--no-legend"),
    "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(),
    "uptime": float(open("/proc/uptime").read().split()[0]),
    "startup": sh("systemd-analyze", "time").splitlines()[0] if sh("systemd-analyze", "time") else "",
    "virt": sh("systemd-detect-virt"), "kernel": os.uname().release,
}))
PY
probe() { vm sudo -n python3 - "$app" "$site" "${2:-30}" <"$work/probe.py" >"$work/$1.json"; }

# wait_vm LABEL T0 OFFSET: the boot whose console output starts at byte OFFSET of console.log answers
# SSH, then systemd has finished starting up; how long each took since T0 (epoch s) goes to LABEL.times.
# No SSH connection is tried before the serial console shows the login prompt (network up, sshd
# started with it), and then one at most every 35 s: ufw drops a 6th new SSH connection from one
# address within 30 s, and QEMU's user network resends an unanswered SYN, each resend a new one —
# connections tried while the guest boots would keep the port closed to us.
wait_vm() {
  local label=$1 t0=$2 offset=$3 boot_id='' t_console t_ssh t_up state
  for _ in $(seq 1 900); do
    tail -c +$((offset + 1)) "$work/console.log" | grep -aq 'login: ' && break
    qemu_running || { tail -n 30 "$work/console.log" >&2; die "QEMU exited (console: $work/console.log)"; }
    sleep 2
  done
  t_console=$(($(date +%s) - t0))
  sleep 5
  for _ in $(seq 1 20); do
    boot_id=$(vm cat /proc/sys/kernel/random/boot_id 2>/dev/null) && break
    vm_close; sleep 35
  done
  [[ -n $boot_id ]] || { tail -n 30 "$work/console.log" >&2; die "no SSH on 127.0.0.1:$port (console: $work/console.log)"; }
  t_ssh=$(($(date +%s) - t0))
  state=$(vm timeout 900 systemctl is-system-running --wait 2>/dev/null || true)
  t_up=$(($(date +%s) - t0))
  printf '%s %s %s %s\n' "$t_ssh" "$t_up" "$state" "$t_console" >"$work/$label.times"
  echo "     login prompt after ${t_console} s, SSH after ${t_ssh} s, systemd $state after ${t_up} s"
}

# converge_vm LOG TIMEOUT PLAYBOOK ARGS...: a playbook of the collection against the VM over SSH.
converge_vm() {
  local log=$1 limit=$2; shift 2
  cat >"$work/vm-connection.yml" <<EOF
# The VM, reached as the demo's admin over QEMU's forwarded port (written by scripts/vm-reboot.sh).
ansible_connection: ssh
ansible_host: 127.0.0.1
ansible_port: $port
ansible_user: demo
ansible_ssh_private_key_file: $PWD/$demo/demo_ed25519
ansible_ssh_common_args: -o UserKnownHostsFile=$PWD/$work/known_hosts -o StrictHostKeyChecking=accept-new
EOF
  timeout "$limit" "${playbook[@]}" "$@" -e @"$work/vm-connection.yml" >"$log" 2>&1
}

# --- 3. boot the VM and record the state before the reboot ----------------------------------------
say "3. booting the VM (QEMU TCG, 2 vCPU, 3 GiB; console in $work/console.log)"
: >"$work/console.log"
t_boot=$(date +%s)
# -display none + -daemonize: the same machine as -nographic, detached, its pid in qemu.pid.
qemu-system-x86_64 -accel tcg -m 3072 -smp 2 \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -append "root=/dev/vda rw console=ttyS0 net.ifnames=0" \
  -drive file="$work/disk.img",if=virtio,format=raw \
  -netdev user,id=n,hostfwd=tcp:127.0.0.1:$port-:22 -device virtio-net,netdev=n \
  -display none -serial file:"$work/console.log" -daemonize -pidfile "$work/qemu.pid"
wait_vm boot "$t_boot" 0
probe firstboot 3
python3 - "$work/firstboot.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"     {s['kernel']} ({s['virt']}); {s['startup'] or 'startup not finished'}")
print(f"     first boot: " + ", ".join(f"{u} {s['units'][u]['ActiveState']}/{s['units'][u]['SubState']}"
      f" ({s['units'][u].get('NRestarts') or 0} restarts)" for u in s["platform"][:1] + s["wanted"]
      if u in s["units"] and u.endswith(".service")))
PY

# PostgreSQL sizes its memory from the RAM the converge saw: the container saw the engine host's
# (shared_buffers = 25 % of it), more than this 3 GiB VM has, so the cluster cannot start on the first
# boot. As on a host moved to a smaller machine, the database role is converged again, on the VM.
say "   the database converged again for the VM's RAM (playbooks/postgresql.yml over SSH)"
t0=$SECONDS
converge_vm "$work/postgresql-vm.log" 900 playbooks/postgresql.yml ||
  { tail -n 40 "$work/postgresql-vm.log" >&2; die "playbooks/postgresql.yml into the VM ($work/postgresql-vm.log)"; }
echo "     playbooks/postgresql.yml: $(took "$t0")"; recap "$work/postgresql-vm.log"
echo 'grep -h "^# Memory\|^shared_buffers" /etc/postgresql/*/main/conf.d/50-botstack.conf' | vm_root | sed 's/^/     /'
# The app's units kept retrying meanwhile (StartLimitIntervalSec=0): they come up on their own.
for _ in $(seq 1 60); do
  vm 'systemctl is-active $(systemctl show -p Wants --value '"$app"'.target)' >/dev/null 2>&1 && break
  sleep 3
done
probe before
python3 - "$work/before.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"     {s['kernel']} ({s['virt']}); {s['startup']}")
print(f"     live slot {s['live']}; {s['target']} wants {' '.join(s['wanted'])}")
print(f"     {len(s['timers'])} active timers; failed units: {' '.join(s['failed']) or 'none'}")
PY

# off | done | failed | timeout: the kernel settings' part of the verdict (a timeout only skips it).
sysctl_state=off sysctl_note="skipped (--no-sysctl)"
if $sysctl; then
  # The demo inventory turns kernel settings off (a container shares the engine's kernel); the VM has
  # its own, so base (and Redis' one setting) are converged into it once more with them on.
  say "   kernel settings: base (and redis_sysctl) converged into the VM with base_sysctl_enabled=true"
  vm sudo -n sysctl -n kernel.kptr_restrict kernel.sysrq kernel.unprivileged_bpf_disabled vm.overcommit_memory \
    | paste -sd' ' | sed 's/^/     kernel defaults of kptr_restrict, sysrq, unprivileged_bpf_disabled, overcommit_memory: /'
  t0=$SECONDS rc=0
  # ~15 min at most for both: past that the part is skipped, not failed (TCG is slow on a busy machine).
  converge_vm "$work/base-sysctl.log" 840 playbooks/base.yml -e base_sysctl_enabled=true || rc=$?
  if ((rc == 0)); then
    converge_vm "$work/redis-sysctl.log" 120 playbooks/redis.yml --tags redis_sysctl -e redis_sysctl_enabled=true || rc=$?
  fi
  case $rc in
    0) sysctl_state=done sysctl_note="base converged into the VM in $(took "$t0")"
       recap "$work/base-sysctl.log"; recap "$work/redis-sysctl.log" ;;
    124) sysctl_state=timeout sysctl_note="skipped: the converge took over 15 min ($work/base-sysctl.log)" ;;
    *) sysctl_state=failed sysctl_note="the converge failed after $(took "$t0") ($work/base-sysctl.log, redis-sysctl.log)"
       tail -n 30 "$work/base-sysctl.log" >&2 ;;
  esac
  echo "     $sysctl_note"
  vm_close  # the converge may have restarted sshd
  probe before
fi

# --- 4. a database slow to come back, and the reboot ------------------------------------------------
say "4. PostgreSQL made slow to start (ExecStartPre=/bin/sleep $slow_db_seconds), then systemctl reboot"
vm_root <<EOF
mkdir -p /etc/systemd/system/postgresql@.service.d
printf '[Service]\nExecStartPre=/bin/sleep $slow_db_seconds\n' >/etc/systemd/system/postgresql@.service.d/50-slow-start.conf
systemctl daemon-reload
EOF
offset=$(stat -c %s "$work/console.log")
t_reboot=$(date +%s)
vm sudo -n systemctl reboot >/dev/null 2>&1 || true
vm_close
wait_vm reboot "$t_reboot" "$offset"
probe after
t_checked=$(($(date +%s) - t_reboot))
# The test's drop-in goes; the VM is disposable, but a --keep'd one should start at its normal pace.
echo 'rm -f /etc/systemd/system/postgresql@.service.d/50-slow-start.conf && systemctl daemon-reload' | vm_root || true

# --- the verdict -------------------------------------------------------------------------------------
say "results"
set +e
python3 - "$work" "$slow_db_seconds" "$t_checked" "$sysctl_state" "$sysctl_note" <<'PY'
import json, sys
work, slow, t_checked, sysctl_state, sysctl_note = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
sysctl_on = sysctl_state in ("done", "failed")
app = json.load(open(f"{work}/after.json"))["target"].removesuffix(".target")
f, b, a = (json.load(open(f"{work}/{n}.json")) for n in ("firstboot", "before", "after"))
boot, reboot = (open(f"{work}/{n}.times").read().split() for n in ("boot", "reboot"))
rows, failed = [], 0
def check(name, before, after, ok):
    global failed
    failed += not ok
    rows.append((name, str(before), str(after), "PASS" if ok else "FAIL"))
def state(s, unit):
    u = s["units"].get(unit, {})
    restarts = u.get("NRestarts", "0")
    return f"{u.get('ActiveState', '?')}/{u.get('SubState', '?')}" + (f" ({restarts} restarts)" if restarts not in ("", "0") else "")
def active(s, unit):
    return s["units"].get(unit, {}).get("ActiveState") == "active"
def mono(s, unit, prop):
    return int(s["units"].get(unit, {}).get(prop) or 0) / 1e6

check("live slot (/opt/*/current)", b["live"], a["live"], b["live"] == a["live"])
wanted = lambda s: [u for u in s["wanted"] if u.startswith(app + "-") and "@" in u]  # the app's units only
live_units = [u for u in wanted(a) if u.endswith(f"@{a['live']}.service")]
check(f"{a['target']} wants the live slot's units", " ".join(wanted(b)), " ".join(wanted(a)),
      bool(live_units) and wanted(a) == wanted(b) == live_units)
for unit in [a["target"]] + live_units:
    check(unit, state(b, unit), state(a, unit), active(b, unit) and active(a, unit))
app_failed = [u for u in a["app_units"] if a["units"].get(u, {}).get("ActiveState") == "failed"]
check("no app unit failed (start limit or otherwise)", "-", " ".join(app_failed) or "none", not app_failed)
others = [u for u in a["app_units"] if u not in live_units and active(a, u)]
rows.append(("(info) app units of other slots active", "-", " ".join(others) or "none", "-"))
for unit in [u for u in b["platform"] if active(b, u)]:
    check(unit, state(b, unit), state(a, unit), active(a, unit))
lost = [t for t in b["timers"] if not active(a, t)]
check(f"every timer active before ({len(b['timers'])}) active after", len(b["timers"]),
      f"{len(b['timers']) - len(lost)} active" + (f"; not: {' '.join(lost)}" if lost else ""), not lost)

pg = next((u for u in a["platform"] if u.startswith("postgresql@")), "postgresql@15-main.service")
pg_ready = mono(a, pg, "ActiveEnterTimestampMonotonic")
pg_took = pg_ready - mono(a, pg, "InactiveExitTimestampMonotonic")
check(f"{pg} slow start (ExecStartPre sleeps {slow}s)", "-", f"{pg_took:.1f} s from start to ready", pg_took >= slow)
api = next((u for u in live_units if "-api@" in u), live_units[0] if live_units else "")
for unit in live_units:
    # First start (InactiveExit: a restart does not pass through inactive), so a crash before the
    # database was up and a restart after it would not pass.
    started = mono(a, unit, "InactiveExitTimestampMonotonic")
    check(f"{unit.split('@')[0]} started after PostgreSQL was up", "-",
          f"+{started - pg_ready:.1f} s after it", started >= pg_ready > 0)
# The first boot, before the database was sized for the VM: the app kept retrying, never gave up.
first = [u for u in wanted(f) if u in f["units"]]
rows.append(("(info) first boot, PostgreSQL sized for the engine's RAM",
             f"{pg.split('.')[0]} {state(f, pg)}; " + ", ".join(f"{u.split('@')[0]} {state(f, u)}" for u in first), "-", "-"))
check("first boot: no app unit gave up (failed) while PostgreSQL was down",
      " ".join(u for u in f["app_units"] if f["units"].get(u, {}).get("ActiveState") == "failed") or "none failed", "-",
      not any(f["units"].get(u, {}).get("ActiveState") == "failed" for u in f["app_units"]))
health = lambda s: f"{s['health']['code']} {s['health']['body'][:60]}"
ok = lambda s: s["health"]["code"] == 200 and '"healthy"' in s["health"]["body"]
check("GET /health through nginx, TLS (on the VM)", health(b), health(a), ok(b) and ok(a))
rows.append(("(info) systemd state / failed units", f"{b['system']} / {' '.join(b['failed']) or 'none'}",
             f"{a['system']} / {' '.join(a['failed']) or 'none'}", "-"))
if sysctl_on:
    mism = lambda s: [k for k, v in s["sysctl"].items() if v["file"] != v["kernel"]]
    check("kernel = /etc/sysctl.d (90-botstack-hardening, 60-botstack-redis)",
          f"{len(b['sysctl']) - len(mism(b))}/{len(b['sysctl'])} keys", f"{len(a['sysctl']) - len(mism(a))}/{len(a['sysctl'])} keys"
          + (f"; differ: {' '.join(mism(a))}" if mism(a) else ""), bool(a["sysctl"]) and not mism(a) and not mism(b))

width = [max(len(r[i]) for r in rows + [("check", "before reboot", "after reboot", "")]) for i in range(3)]
line = lambda r: f"  {r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]:<{width[2]}}  {r[3]}"
print(line(("check", "before reboot", "after reboot", "")))
print("  " + "-" * (sum(width) + 10))
for r in rows:
    print(line(r))

ts = lambda s, u, p: s["units"].get(u, {}).get(p, "?")
print("\n  timestamps (VM clock)             before reboot                     after reboot")
print(f"  {pg + ' ActiveEnter':<33} {ts(b, pg, 'ActiveEnterTimestamp'):<33} {ts(a, pg, 'ActiveEnterTimestamp')}")
print(f"  {api.split('@')[0] + ' ExecMainStart':<33} {ts(b, api, 'ExecMainStartTimestamp'):<33} {ts(a, api, 'ExecMainStartTimestamp')}")
all_up = max([mono(a, u, "ActiveEnterTimestampMonotonic") for u in live_units + [a["target"], pg]] or [0])
print("\n  durations")
print(f"  first boot: login prompt {boot[3]} s, SSH {boot[0]} s, systemd {boot[2]} {boot[1]} s after QEMU started;"
      f" {b['startup']}")
print(f"  reboot:     login prompt {reboot[3]} s, SSH {reboot[0]} s, systemd {reboot[2]} {reboot[1]} s after"
      f" `systemctl reboot`; {a['startup']}")
print(f"              every app unit active {all_up:.1f} s after the kernel started (PostgreSQL ready at {pg_ready:.1f} s);"
      f" checks done {t_checked} s after the reboot command")
if sysctl_on:
    print(f"\n  kernel settings ({sysctl_note}): first boot (kernel default) -> after the converge -> after the reboot")
    for key, value in a["kernel_values"].items():
        print(f"  {key:<36} {f['kernel_values'].get(key)} -> {b['kernel_values'].get(key)} -> {value}")
else:
    print(f"\n  kernel settings: {sysctl_note}")
print(f"\n  {len(rows)} rows, {failed} FAIL: {'PASS' if not failed else 'FAIL'}")
sys.exit(1 if failed else 0)
PY
verdict=$?
set -e

# --- 5. clean up (the EXIT trap): VM off, container gone, disk removed; --keep keeps them ---------
if $keep; then
  say "kept: the VM runs (ssh ${ssh_opts[*]:0:4} demo@127.0.0.1; pid $(cat "$work/qemu.pid")), disk $work/disk.img"
else
  say "5. shutting the VM down, removing the container and the disk"
fi
echo "     wall time of the whole script: $(took "$t_script")"
exit "$verdict"
