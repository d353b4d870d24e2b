#!/usr/bin/env bash
# Build the execution environment (ee/execution-environment.yml) with ansible-builder, offline:
# the collection and its dependencies go in as tarballs (ee/requirements.yml), built here from
# this checkout and from the collections `make setup` installed, into ee/collections/.
#   scripts/ee.sh [tag]        default tag botstack-ee:latest
# Behind a TLS-intercepting proxy, pip inside the build needs its CA: PIP_CERT (a path inside the
# build, e.g. /etc/ssl/certs/ca-certificates.crt of a base image that trusts it) is passed through,
# and so is PIP_INDEX_URL (a package mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
tag=${1:-botstack-ee:latest}
context=.cache/ee
rm -rf "$context" ee/collections && mkdir -p ee/collections
stage=$(mktemp -d) && trap 'rm -rf "$stage"' EXIT

ansible-galaxy collection build --force --output-path "$stage" . >/dev/null
cp "$stage"/botstack-deploy-*.tar.gz ee/collections/botstack-deploy.tar.gz

# The dependencies and theirs, packed from the installed collections.
python scripts/collection-artifacts.py ee/collections ee/requirements.yml

build_args=()
[[ -n "${PIP_CERT:-}" ]] && build_args+=(--build-arg "PIP_CERT=$PIP_CERT")
[[ -n "${PIP_INDEX_URL:-}" ]] && build_args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
ansible-builder build -f ee/execution-environment.yml --context "$context" --container-runtime docker \
  --tag "$tag" "${build_args[@]}" -v 2
