#!/usr/bin/env bash
# Runs the test stages, one summary line each. With no arguments (`make test`) the stages run in
# three workers side by side, taking stages from two queues (docs/testing.md); a failure in any skips what is
# left. With arguments they run one after another in the order given. TEST_KEEP_GOING=1 runs every stage even
# after a failure (the whole picture in one run). Full logs: .cache/test-logs/; where each scenario's time
# went (every test, wait and playbook run): .cache/test-logs/timings.log.
# Usage: scripts/test.sh [lint|syntax|unit|sanity|build|controller|molecule|molecule:<scenario> ...]
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$PWD/.collections:$PWD"
export NO_COLOR=1 ANSIBLE_NOCOLOR=1 PY_COLORS=0
logs=.cache/test-logs
mkdir -p "$logs"
rm -f "$logs"/.failed "$logs"/.results "$logs"/.queue-* "$logs"/timings.log

# Scenario order for `make molecule`: fastest and most foundational first, so failures come early.
default_scenarios=(modules python_system python redis nginx postgresql bootstrap backup base deploy ownapp multihost ee)
read -r -a scenarios <<< "${SCENARIOS:-${default_scenarios[*]}}"
# `make test`: three workers side by side, taking stages from two queues (seconds in docs/testing.md). The
# whole-stack scenarios ("heavy") run two at a time while the role scenarios run: the two cores are busy
# throughout, so a third whole-stack scenario only slows the other two. Worker 1 runs the static stages first
# (a lint error stops everything early), then the role scenarios ("light"); workers 2 and 3 the heavy ones,
# longest first. A worker whose queue is empty takes from the other.
static_stages=(lint syntax unit sanity build controller)
heavy=(molecule:deploy molecule:backup molecule:multihost molecule:ee molecule:ownapp)
light=(molecule:modules molecule:python_system molecule:redis molecule:postgresql molecule:nginx molecule:python
       molecule:bootstrap molecule:base)

stage_lint() {
  yamllint --strict . &&
  ansible-lint --profile production --offline &&
  python scripts/role-docs.py --check &&
  python scripts/job-templates.py --check
}

stage_syntax() {
  # One run parses every playbook (each is named in the output; the first that fails stops it).
  ansible-playbook site.yml playbooks/*.yml -i inventories/production --syntax-check
}

stage_unit() {
  local rc
  python -m pytest -q -p no:cacheprovider tests/unit; rc=$?
  # pytest exits 5 when nothing was collected: that is a failure here.
  return "$rc"
}

stage_sanity() {
  if ! compgen -G "plugins/modules/*.py" >/dev/null; then
    echo "no modules yet"; return 0
  fi
  # ansible-test needs a real ansible_collections/<ns>/<name> tree outside this
  # git checkout (not a symlink): copy the files git knows about into one.
  local work tree pyver rc
  work=$(mktemp -d) tree="$work/ansible_collections/botstack/deploy"
  mkdir -p "$tree"
  git ls-files -co --exclude-standard -z | grep -zv '^ansible_collections' | xargs -0 tar -cf - | tar -xf - -C "$tree"
  pyver=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  (cd "$tree" && ansible-test sanity --color no --python "$pyver" plugins/); rc=$?
  rm -rf "$work"
  return "$rc"
}

stage_build() {
  # Install as a user would, into a clean path holding only the collections galaxy.yml declares,
  # then run every role's validation from there (a missing dependency fails it).
  local out rc=0 deps dep
  out=$(mktemp -d)
  ansible-galaxy collection build --force --output-path "$out" . || { rm -rf "$out"; return 1; }
  local listing
  listing=$(tar -tzf "$out"/botstack-deploy-*.tar.gz)
  if grep -E '(^|/)(inventories|molecule|scripts|ansible_collections|examples)/|(^|/)\.|vault|password|\.(pem|key)$' <<< "$listing"; then
    echo "the tarball holds files a collection must not ship (above)"; rm -rf "$out"; return 1
  fi
  # The declared collections and what they depend on in turn (their MANIFEST.json).
  deps=$(python - <<'PY'
import json, pathlib, yaml
todo, seen = list(yaml.safe_load(open("galaxy.yml"))["dependencies"]), []
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.append(name)
    manifest = pathlib.Path(".collections/ansible_collections", *name.split(".")) / "MANIFEST.json"
    todo += list(json.loads(manifest.read_text())["collection_info"].get("dependencies") or {})
print(" ".join(seen))
PY
)
  mkdir -p "$out/clean/ansible_collections"
  for dep in $deps; do
    mkdir -p "$out/clean/ansible_collections/${dep%%.*}"
    cp -r ".collections/ansible_collections/${dep%%.*}/${dep#*.}" "$out/clean/ansible_collections/${dep%%.*}/"
  done
  (
    export ANSIBLE_COLLECTIONS_PATH="$out/clean" ANSIBLE_ROLES_PATH="$out/none"
    cd "$out" &&
    ansible-galaxy collection install --offline -p "$out/clean" "$out"/botstack-deploy-*.tar.gz &&
    ansible-galaxy collection list botstack.deploy &&
    ansible-doc -t role botstack.deploy.deploy >/dev/null &&
    ansible-doc -t module botstack.deploy.release >/dev/null &&
    ansible-playbook -i localhost, --check "$OLDPWD/tests/build/validate-roles.yml" \
      -e ansible_python_interpreter="$(command -v python)"
  ) || rc=1
  rm -rf "$out"
  return "$rc"
}

stage_controller() {
  # A deploy-only controller as docs/controller.md sets one up: a new venv from requirements/controller.txt
  # (no dev tools), the collection from its tarball into the default path of a new home, then the
  # collection's own playbooks from there: a new vault for an inventory, the syntax of the release flow,
  # every role's validation.
  local out rc=0 python
  out=$(mktemp -d)
  python=$(python -c 'import sys; print(sys._base_executable)')
  ansible-galaxy collection build --force --output-path "$out" . >/dev/null || { rm -rf "$out"; return 1; }
  mkdir -p "$out/home" && cp -r inventories/production "$out/inventory" && rm -f "$out/inventory/group_vars/all/vault.yml"
  (umask 077 && openssl rand -base64 32 > "$out/vault-pass")
  (
    set -e
    "$python" -m venv "$out/venv"
    # The "ansible" wheel is large and already on this machine (scripts/setup.sh): no second download.
    "$out/venv/bin/pip" install --quiet --find-links .cache/wheels -r requirements/controller.txt 2>&1 |
      grep -v 'is ignored: it is neither' || true
    cd "$out"
    env -i HOME="$out/home" PATH="$out/venv/bin:/usr/bin:/bin" LANG=C.UTF-8 bash -euc '
      ansible-galaxy collection install --offline botstack-deploy-*.tar.gz
      ansible-galaxy collection list botstack.deploy
      ansible-playbook -i localhost, botstack.deploy.secrets -e new_vault_inventory=inventory \
        -e new_vault_password_file=vault-pass
      ansible-vault view --vault-password-file vault-pass inventory/group_vars/all/vault.yml | grep -q "^vault_db_bot_password: "
      ansible-playbook -i inventory botstack.deploy.site --syntax-check --vault-password-file vault-pass
      ansible-playbook -i inventory botstack.deploy.deploy --syntax-check --vault-password-file vault-pass
      ansible-playbook -i localhost, --check "$0" -e ansible_python_interpreter="$(command -v python)"
    ' "$OLDPWD/tests/build/validate-roles.yml"
  ) || rc=1
  rm -rf "$out"
  return "$rc"
}

stage_molecule() {
  # A lane other than the first gets its own apt archive: apt locks the archive while it
  # downloads, and the archive is shared by every container of a lane.
  local env_file=()
  [[ -n "${LANE_ENV_FILE:-}" ]] && env_file=(--env-file "$LANE_ENV_FILE")
  # Each line stamped with the epoch second, so that phase_times can tell where the time went.
  molecule "${env_file[@]}" test -s "$1" 2>&1 | while IFS= read -r line || [[ -n $line ]]; do printf '%(%s)T %s\n' -1 "$line"; done
}

# "converge 210, idempotence 95, verify 694" from a molecule log's stamped phase lines.
phase_times() {
  awk '/\] Executing$/ { match($0, /> [a-z_]+\]/); phase = substr($0, RSTART + 2, RLENGTH - 3); start[phase] = $1 }
       /\] Executed: / { match($0, /> [a-z_]+\]/); phase = substr($0, RSTART + 2, RLENGTH - 3)
                         if (phase in start && phase != "destroy") { out = out sep phase " " $1 - start[phase]; sep = ", " } }
       END { if (out != "") printf "  (%s)", out }' "$1"
}

# pytest's own totals ("== 23 passed, 1 skipped in 4.2s ==") from a stage's log: "passed failed skipped".
count_checks() {
  local line p f e k
  line=$(grep -E '[0-9]+ (passed|failed|errors?)[, ].*in [0-9.]+s' "$1" | tail -n1)
  p=$(grep -oE '[0-9]+ passed' <<< "$line" | cut -d' ' -f1)
  f=$(grep -oE '[0-9]+ failed' <<< "$line" | cut -d' ' -f1)
  e=$(grep -oE '[0-9]+ errors?' <<< "$line" | cut -d' ' -f1)
  k=$(grep -oE '[0-9]+ skipped' <<< "$line" | cut -d' ' -f1)
  echo "${p:-0} $(( ${f:-0} + ${e:-0} )) ${k:-0}"
}

# One stage: a summary line now, and "name result seconds log passed failed skipped" in .results.
run_stage() {
  local name=$1; shift
  local log="$logs/${name//[^a-z0-9_-]/_}.log" t0=$SECONDS rc
  if [[ -e "$logs/.failed" && -z "${TEST_KEEP_GOING:-}" ]]; then
    printf '[test] %-22s SKIP\n' "$name"
    echo "$name SKIP 0 - 0 0 0" >> "$logs/.results"; return
  fi
  "$@" >"$log" 2>&1; rc=$?
  if ((rc == 0)); then
    printf '[test] %-22s PASS  %4d s%s\n' "$name" $((SECONDS - t0)) "$(phase_times "$log")"
    echo "$name PASS $((SECONDS - t0)) $log $(count_checks "$log")" >> "$logs/.results"
  else
    touch "$logs/.failed"
    printf '[test] %-22s FAIL  %4d s  (log: %s)\n' "$name" $((SECONDS - t0)) "$log"
    echo "$name FAIL $((SECONDS - t0)) $log $(count_checks "$log")" >> "$logs/.results"
  fi
}

run_list() {
  local stage
  for stage in "$@"; do
    case "$stage" in
      molecule) for s in "${scenarios[@]}"; do run_stage "molecule:$s" stage_molecule "$s"; done ;;
      molecule:*) run_stage "$stage" stage_molecule "${stage#molecule:}" ;;
      lint|syntax|unit|sanity|build|controller) run_stage "$stage" "stage_$stage" ;;
      *) echo "unknown stage: $stage" >&2; return 2 ;;
    esac
  done
}

# The next stage of queue $1 (empty when none is left), taken under a lock.
next_stage() {
  local fd
  exec {fd}>"$logs/.queue.lock"
  flock "$fd"
  head -n 1 "$logs/.queue-$1"
  sed -i 1d "$logs/.queue-$1"
  exec {fd}>&-
}

# Worker: the stages given after "--", then stages from queue $1, then from queue $2, until none is left.
run_worker() {
  local first=$1 second=$2 stage
  shift 2
  [[ "${1:-}" == "--" ]] && shift
  run_list "$@"
  while stage=$(next_stage "$first") && [[ -n "$stage" ]] || stage=$(next_stage "$second") && [[ -n "$stage" ]]; do
    run_list "$stage"
  done
}

t_all=$SECONDS
if (($#)); then
  run_list "$@" || exit 2
else
  # Each worker has its own apt archive (apt locks it while downloading); the others start as hard links to
  # worker 1's, so a warm machine downloads nothing twice.
  archives=/var/cache/botstack/apt-archives
  for lane in lane2 lane3; do
    mkdir -p "$archives-$lane/partial"
    find "$archives" -maxdepth 1 -name '*.deb' -exec cp -aln {} "$archives-$lane/" \; 2>/dev/null
    sed "s#$archives#$archives-$lane#g" .env.yml > ".cache/env-$lane.yml"
  done
  printf '%s\n' "${heavy[@]}" > "$logs/.queue-heavy"
  printf '%s\n' "${light[@]}" > "$logs/.queue-light"
  run_worker light heavy -- "${static_stages[@]}" &
  LANE_ENV_FILE=.cache/env-lane2.yml run_worker heavy light &
  LANE_ENV_FILE=.cache/env-lane3.yml run_worker heavy light &
  wait
fi

passed=0 failed=0 skipped=0 checks_passed=0 checks_failed=0 checks_skipped=0 failed_rows=()
while read -r name result seconds log p f k; do
  case "$result" in
    PASS) passed=$((passed + 1)) ;;
    FAIL) failed=$((failed + 1)) failed_rows+=("$name $seconds $log") ;;
    SKIP) skipped=$((skipped + 1)) ;;
  esac
  checks_passed=$((checks_passed + p)) checks_failed=$((checks_failed + f)) checks_skipped=$((checks_skipped + k))
done < <(cat "$logs/.results" 2>/dev/null)
wall=$((SECONDS - t_all))
# The budget: each stage's seconds and share of the serial total, slowest first. A run over the budget says so
# in its summary line, loudly; with TEST_BUDGET_STRICT=1 it also fails (the tests themselves passed).
budget=${TEST_BUDGET_SECONDS:-3600}
echo "[test] budget: stage, seconds, share of the $(awk '{s += $3} END {print s}' "$logs/.results" 2>/dev/null) s run serially"
sort -k3,3nr "$logs/.results" 2>/dev/null | awk '{rows[NR] = $0; total += $3} END {
  for (i = 1; i <= NR; i++) { split(rows[i], f, " "); printf "[test]   %-22s %5d s  %4.1f %%\n", f[1], f[3], total ? 100 * f[3] / total : 0 } }'
# What failed comes last, where a reader of the output's end (a CI page) sees it: each failed stage's log tail,
# then its failing checks and errors in a few lines.
for row in "${failed_rows[@]}"; do
  read -r name seconds log <<< "$row"
  printf '\n[test] %s failed after %d s; the end of %s:\n' "$name" "$seconds" "$log"
  tail -n 60 "$log" | sed 's/^/    | /'
done
for row in "${failed_rows[@]}"; do
  read -r name seconds log <<< "$row"
  echo "[test] FAILED $name after $seconds s ($log):"
  grep -E '^([0-9]+ )?(FAILED |ERROR |\[ERROR\]: |CRITICAL |fatal: |failed: )' "$log" | grep -v 'FAILED - RETRYING' | sed -E 's/^[0-9]+ //' | cut -c1-300 | tail -n 8 |
    sed 's/^/[test]   /'
done
echo "[test] wall time ${wall} s (budget ${budget} s)"
echo "[test] checks (pytest): $checks_passed passed, $checks_failed failed, $checks_skipped skipped"
over=0
if ((wall > budget)); then
  over=1
  echo "[test] OVER BUDGET: the stages took ${wall} s, the budget is ${budget} s - make the slowest stages above cheaper"
fi
echo "test: $passed passed, $failed failed, $skipped skipped; checks: $checks_passed passed, $checks_failed failed, $checks_skipped skipped$( ((over)) && echo "; OVER BUDGET ${wall}/${budget} s")"
((failed == 0 && passed > 0 && (over == 0 || ${TEST_BUDGET_STRICT:-0} == 0)))
