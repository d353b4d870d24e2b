#!/usr/bin/env bash
# make demo: converge site.yml onto a throwaway local systemd container, run it
# again to show it is idempotent, then report what the host now looks like.
# KEEP=1 keeps the container for a look around (docker exec -it botstack-demo bash).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$PWD/.collections:$PWD"
export NO_COLOR=1 ANSIBLE_NOCOLOR=1
name=botstack-demo
work=.cache/demo
mkdir -p "$work"

say() { printf '\n[demo] %s\n' "$*"; }
cleanup() { [[ "${KEEP:-0}" == 1 ]] || molecule destroy -s demo >/dev/null 2>&1 || true; }
trap cleanup EXIT

[[ -f "$work/demo_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C demo@botstack -f "$work/demo_ed25519"

say "starting a fresh systemd container (molecule scenario demo)"
molecule destroy -s demo >/dev/null 2>&1 || true
molecule create -s demo >"$work/create.log" 2>&1 || { tail -n 30 "$work/create.log"; exit 1; }
for _ in $(seq 1 30); do
  state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
  [[ "$state" == running || "$state" == degraded ]] && break
  sleep 1
done

# Container-only: Debian's redis unit uses ProtectProc=invisible, which needs a
# user namespace a container cannot create (real hosts keep the unit as is).
docker exec "$name" sh -c 'mkdir -p /etc/systemd/system/redis-server.service.d &&
  printf "[Service]\nProtectProc=default\n" > /etc/systemd/system/redis-server.service.d/10-container.conf'

playbook=(ansible-playbook site.yml -i inventories/demo --vault-password-file inventories/demo/vault-password.txt)
recap() { grep -A1 'PLAY RECAP' "$1" | tail -n1 | sed 's/^/       /'; }

say "converging site.yml (inventories/demo)"
t0=$SECONDS
"${playbook[@]}" >"$work/converge.log" 2>&1 || { tail -n 40 "$work/converge.log"; exit 1; }
converge_s=$((SECONDS - t0)); recap "$work/converge.log"

say "second run (must change nothing)"
t0=$SECONDS
"${playbook[@]}" >"$work/idempotence.log" 2>&1 || { tail -n 40 "$work/idempotence.log"; exit 1; }
second_s=$((SECONDS - t0)); recap "$work/idempotence.log"
grep -A1 'PLAY RECAP' "$work/idempotence.log" | tail -n1 | grep -q 'changed=0' || { echo "[demo] second run changed something"; exit 1; }

address=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$name")
say "what the host looks like now ($address)"
echo "  first converge: ${converge_s} s, second run: ${second_s} s, 0 changed"
echo "  firewall:"; docker exec "$name" ufw status | sed -n '1p;5,20p' | sed 's/^/    /'
printf '  ssh offers: '
ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -o PreferredAuthentications=none "root@$address" true 2>&1 | grep -o 'Permission denied.*' || true
printf '  admin key login: '
ssh -q -o LogLevel=ERROR -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
  -i "$work/demo_ed25519" "demo@$address" 'echo "ok as $(id -un), sudo -> $(sudo -n id -un)"' 2>/dev/null
printf '  services (ssh fail2ban postgresql redis): '
docker exec "$name" systemctl is-active ssh fail2ban postgresql@15-main redis-server | paste -sd' '
db_pass=$(ansible-vault view --vault-password-file inventories/demo/vault-password.txt inventories/demo/group_vars/all/vault.yml |
  awk '/vault_db_bot_password/ {print $2}')
printf '  postgresql as bot over TLS: '
docker exec -e PGPASSWORD="$db_pass" "$name" psql -XAtq "host=localhost user=bot dbname=botstack sslmode=require" \
  -c "SELECT 'ssl=' || ssl || ' ' || version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
ops_pass=$(ansible-vault view --vault-password-file inventories/demo/vault-password.txt inventories/demo/group_vars/all/vault.yml |
  awk '/vault_redis_ops_password/ {print $2}')
bot_pass=$(ansible-vault view --vault-password-file inventories/demo/vault-password.txt inventories/demo/group_vars/all/vault.yml |
  awk '/vault_redis_bot_password/ {print $2}')
printf '  redis without auth: '; docker exec "$name" redis-cli ping | head -n1
printf '  redis ops user: '; docker exec "$name" redis-cli --user ops --pass "$ops_pass" --no-auth-warning ping
printf '  redis app user FLUSHALL: '; docker exec "$name" redis-cli --user bot --pass "$bot_pass" --no-auth-warning flushall | head -n1
printf '  python: '
docker exec "$name" sh -c 'echo "$(python3 --version) (system provider), $(/opt/botstack/python-tools/bin/uv --version),'\
' venv store $(stat -c "%n %a %U" /opt/botstack/venvs)"'
printf '  nginx: '
python - "$address" <<'PY'
import sys, requests, urllib3
urllib3.disable_warnings()
ip = sys.argv[1]
plain = requests.get(f"http://{ip}/", headers={"Host": "demo.botstack.test"}, allow_redirects=False, timeout=10)
tls = requests.get(f"https://{ip}/", headers={"Host": "demo.botstack.test"}, verify=False, timeout=10)
print(f"http -> {plain.status_code} {plain.headers.get('Location')}; https -> {tls.status_code}"
      f" (no app deployed yet), HSTS {tls.headers.get('Strict-Transport-Security')!r},"
      f" CSP {tls.headers.get('Content-Security-Policy')!r}")
PY
say "done; logs in $work/ (KEEP=1 keeps the container)"
