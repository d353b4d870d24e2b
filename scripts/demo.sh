#!/usr/bin/env bash
# make demo: a throwaway local systemd container becomes the whole platform (site.yml with
# inventories/demo): hardened host, PostgreSQL, Redis, Python, the sample bot platform
# (examples/botapp) under systemd, nginx with TLS, Prometheus + Alertmanager. A second run must change nothing. Then it
# shows the bot answering and ships a new release under a request loop (blue/green).
# The host stays up afterwards; `make clean` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$PWD/.collections:$PWD"
export NO_COLOR=1 ANSIBLE_NOCOLOR=1
name=botstack-demo
site=demo.botstack.test
work=.cache/demo
vault=(--vault-password-file inventories/demo/vault-password.txt)
mkdir -p "$work"

say() { printf '\n[demo] %s\n' "$*"; }
recap() { grep -A1 'PLAY RECAP' "$1" | tail -n1 | sed 's/^/       /'; }
secret() { ansible-vault view "${vault[@]}" inventories/demo/group_vars/all/vault.yml | awk -v k="$1:" '$1 == k {print $2}'; }

[[ -f "$work/demo_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C demo@botstack -f "$work/demo_ed25519"
# The app's versions as a CI would ship them: one archive per tag of its repository.
examples/botapp/build-repo.py "$work/botapp.git" \
  --archive "v1:$work/botapp-v1.tar.gz" --archive "v2:$work/botapp-v2.tar.gz" >/dev/null

say "starting a fresh systemd container (molecule scenario demo)"
molecule destroy -s demo >/dev/null 2>&1 || true
molecule create -s demo >"$work/create.log" 2>&1 || { tail -n 30 "$work/create.log"; exit 1; }
for _ in $(seq 1 30); do
  state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
  [[ "$state" == running || "$state" == degraded ]] && break
  sleep 1
done
# Container-only: Debian's redis unit uses ProtectProc=invisible, which needs a user
# namespace a container cannot create (real hosts keep the unit as it is).
docker exec "$name" sh -c 'mkdir -p /etc/systemd/system/redis-server.service.d &&
  printf "[Service]\nProtectProc=default\n" > /etc/systemd/system/redis-server.service.d/10-container.conf'

playbook=(ansible-playbook -i inventories/demo "${vault[@]}")
say "converging site.yml: hardening, PostgreSQL, Redis, Python, the bot (v1), nginx, monitoring"
t0=$SECONDS
"${playbook[@]}" site.yml >"$work/converge.log" 2>&1 || { tail -n 40 "$work/converge.log"; exit 1; }
converge_s=$((SECONDS - t0)); recap "$work/converge.log"

say "second run (must change nothing)"
t0=$SECONDS
"${playbook[@]}" site.yml >"$work/idempotence.log" 2>&1 || { tail -n 40 "$work/idempotence.log"; exit 1; }
second_s=$((SECONDS - t0)); recap "$work/idempotence.log"
grep -A1 'PLAY RECAP' "$work/idempotence.log" | tail -n1 | grep -q 'changed=0' || { echo "[demo] second run changed something"; exit 1; }
echo "       first converge ${converge_s} s, second run ${second_s} s"

address=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$name")
say "the bot, through nginx over TLS (https://$site on $address)"
python - "$address" "$site" "$(secret vault_telegram_webhook_secret)" <<'PY'
import json, random, sys, time, requests, urllib3
urllib3.disable_warnings()
ip, site, secret = sys.argv[1:]
base, headers = f"https://{ip}", {"Host": site}
health = requests.get(base + "/health", headers=headers, verify=False, timeout=10)
print(f"  GET /health -> {health.status_code} {json.dumps(health.json())}")
update_id = random.randint(1, 10**9)
update = {"update_id": update_id, "message": {"chat": {"id": 42}, "text": "hello bot"}}
hook = requests.post(base + "/webhook/telegram", json=update, verify=False, timeout=10,
                     headers={**headers, "X-Telegram-Bot-Api-Secret-Token": secret})
print(f"  POST /webhook/telegram (secret token) -> {hook.status_code} {hook.json()}")
bad = requests.post(base + "/webhook/telegram", json=update, verify=False, timeout=10,
                    headers={**headers, "X-Telegram-Bot-Api-Secret-Token": "wrong"})
print(f"  POST /webhook/telegram (wrong token)  -> {bad.status_code}")
for _ in range(40):
    state = requests.get(f"{base}/api/updates/{update_id}", headers=headers, verify=False, timeout=10).json()
    if state["processed_at"]:
        break
    time.sleep(0.25)
print(f"  the worker ran its task: reply {state['reply']!r} at {state['processed_at']}")
PY

say "shipping v2 (new dependency, new column) under a request loop: blue/green, health-gated"
python - "$address" "$site" "${playbook[*]}" <<'PY'
import subprocess, sys, time
sys.path.insert(0, "molecule")
from traffic import Traffic
ip, site, playbook = sys.argv[1:]
started = time.monotonic()
with Traffic(f"https://{ip}", site, rate=10, slow_every=2, slow_seconds=3) as traffic:
    result = subprocess.run(playbook.split() + ["playbooks/deploy.yml", "-e", "deploy_version=v2"],
                            capture_output=True, text=True)
    took = time.monotonic() - started
open(".cache/demo/deploy-v2.log", "w").write(result.stdout + result.stderr)
if result.returncode != 0:
    print(result.stdout[-3000:])
    sys.exit(1)
report = traffic.report
print(f"  deploy took {took:.1f} s; {report.total} requests during it ({report.slow_total} slow ones in flight"
      f" at the switch): {report.failed} failed; versions served {dict(report.versions)}")
PY

say "what runs where"
docker exec "$name" sh -c 'echo "  releases:"; for r in /opt/botstack/releases/*/.release.json; do
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(\"   \", m[\"id\"], m[\"status\"])" "$r"; done
  echo "  live: $(readlink /opt/botstack/current) -> $(readlink -f /opt/botstack/current | xargs basename)"
  echo "  processes:"; systemctl list-units --plain --no-legend "botstack-*@*" | awk "{print \"    \" \$1, \$4}"
  echo "  last deploy: $(tail -n1 /opt/botstack/deploy.log)"'
echo "  timers:"; docker exec "$name" systemctl list-timers --no-pager --no-legend | awk '{print "   ", $(NF-1)}' | sort -u

say "monitoring (Prometheus, Alertmanager and the probes on the host's loopback)"
docker exec "$name" python3 -c '
import json, urllib.request
def api(path):
    return json.load(urllib.request.urlopen("http://127.0.0.1:9090/api/v1/" + path, timeout=10))["data"]
targets = api("targets")["activeTargets"]
up = sorted({t["labels"]["job"] for t in targets if t["health"] == "up"})
print("  targets up: %d of %d (%s)" % (sum(t["health"] == "up" for t in targets), len(targets), ", ".join(up)))
rules = [r for g in api("rules")["groups"] for r in g["rules"]]
firing = sorted({r["name"] for r in rules if r["state"] == "firing"})
print("  alert rules: %d loaded; firing: %s" % (len(rules), ", ".join(firing) or "none"))'
echo "  the last deploy, as node_exporter exports it:"
docker exec "$name" sh -c 'grep -h "^botstack_deploy_release_info" /var/lib/prometheus/node-exporter/*.prom' | sed 's/^/    /'

say "the host around it"
echo "  firewall:"; docker exec "$name" ufw status | sed -n '5,20p' | sed 's/^/    /'
printf '  ssh offers: '
ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -o PreferredAuthentications=none "root@$address" true 2>&1 | grep -o 'Permission denied.*' || true
printf '  admin key login: '
ssh -q -o LogLevel=ERROR -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
  -i "$work/demo_ed25519" "demo@$address" 'echo "ok as $(id -un), sudo -> $(sudo -n id -un)"' 2>/dev/null
printf '  postgresql as bot over TLS: '
docker exec -e PGPASSWORD="$(secret vault_db_bot_password)" "$name" psql -XAtq \
  "host=localhost user=bot dbname=botstack sslmode=require" \
  -c "SELECT 'ssl=' || ssl || ' ' || version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
printf '  redis without auth: '; docker exec "$name" redis-cli ping | head -n1
printf '  redis app user FLUSHALL: '
docker exec "$name" redis-cli --user bot --pass "$(secret vault_redis_bot_password)" --no-auth-warning flushall | head -n1
printf '  app units, systemd-analyze security: '
docker exec "$name" sh -c 'for u in botstack-api@blue botstack-worker@blue botstack-scheduler@blue botstack-migrate@blue; do
  systemd-analyze security "$u.service" | tail -n1 | sed "s/.*for \(.*\)\.service: \([0-9.]*\).*/\1 \2/"; done' | paste -sd' '

say "done; the demo host stays up (logs in $work/)"
echo "  curl -sk https://$address/health -H 'Host: $site'  ·  docker exec -it $name bash  ·  tear down: make clean"
echo "  alerts: docker exec $name python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:9090/api/v1/alerts\").read().decode())'"
