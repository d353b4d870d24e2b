#!/usr/bin/env bash
# Runs the test stages in order, one summary line each, and stops at the first
# failure (later stages are reported as skipped). Full logs: .cache/test-logs/.
# Usage: scripts/test.sh [lint|syntax|unit|sanity|build|molecule ...]
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$PWD/.collections:$PWD"
export NO_COLOR=1 ANSIBLE_NOCOLOR=1 PY_COLORS=0
logs=.cache/test-logs
mkdir -p "$logs"

# Scenario order: fastest and most foundational first, so failures come early.
default_scenarios=(modules python_system python redis nginx postgresql base)
read -r -a scenarios <<< "${SCENARIOS:-${default_scenarios[*]}}"

stage_lint() {
  yamllint --strict . &&
  ansible-lint --profile production --offline &&
  python scripts/role-docs.py --check
}

stage_syntax() {
  ansible-playbook site.yml -i inventories/production --syntax-check &&
  for playbook in playbooks/*.yml; do
    ansible-playbook "$playbook" -i inventories/production --syntax-check || return 1
  done
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
  local out
  out=$(mktemp -d)
  # Install as a user would: dependencies present, this checkout not on the path.
  ansible-galaxy collection build --force --output-path "$out" . &&
  tar -tzf "$out"/botstack-deploy-*.tar.gz | sed -n '1,400p' | grep -E '^(molecule|scripts|ansible_collections|\.)' && return 1
  ANSIBLE_COLLECTIONS_PATH="$out/installed:$PWD/.collections" \
    ansible-galaxy collection install --offline -p "$out/installed" "$out"/botstack-deploy-*.tar.gz &&
  ANSIBLE_COLLECTIONS_PATH="$out/installed:$PWD/.collections" ansible-galaxy collection list botstack.deploy &&
  ANSIBLE_COLLECTIONS_PATH="$out/installed:$PWD/.collections" ansible-doc -t role botstack.deploy.base >/dev/null
  local rc=$?
  rm -rf "$out"
  return "$rc"
}

stage_molecule() {
  molecule test -s "$1"
}

passed=0 failed=0 skipped=0
run_stage() {
  local name=$1; shift
  local log="$logs/${name//[^a-z0-9_-]/_}.log" t0=$SECONDS rc
  if ((failed)); then
    printf '[test] %-22s SKIP\n' "$name"; skipped=$((skipped + 1)); return
  fi
  "$@" >"$log" 2>&1; rc=$?
  if ((rc == 0)); then
    passed=$((passed + 1))
    printf '[test] %-22s PASS  %4d s\n' "$name" $((SECONDS - t0))
  else
    failed=$((failed + 1))
    printf '[test] %-22s FAIL  %4d s  (log: %s)\n' "$name" $((SECONDS - t0)) "$log"
    tail -n 60 "$log" | sed 's/^/    | /'
  fi
}

stages=("$@")
((${#stages[@]})) || stages=(lint syntax unit sanity build molecule)
t_all=$SECONDS
for stage in "${stages[@]}"; do
  case "$stage" in
    molecule) for s in "${scenarios[@]}"; do run_stage "molecule:$s" stage_molecule "$s"; done ;;
    lint|syntax|unit|sanity|build) run_stage "$stage" "stage_$stage" ;;
    *) echo "unknown stage: $stage" >&2; exit 2 ;;
  esac
done
echo "[test] wall time $((SECONDS - t_all)) s"
echo "test: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
