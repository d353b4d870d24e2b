#!/usr/bin/env bash
# Run one job the way AWX does: ansible-runner in the execution environment, the private data
# directory mounted at /runner (project, inventory, credentials, extra vars).
#   run-job.sh IDENT PLAYBOOK [EXTRA_VARS_JSON] [ANSIBLE_PLAYBOOK_ARGS...]
# prints the job's stdout and exits with its status.
set -euo pipefail
ident=$1 playbook=$2 extravars=${3:-"{}"}
shift $(( $# < 3 ? $# : 3 ))
runner="$MOLECULE_EPHEMERAL_DIRECTORY/runner"
printf '%s\n' "$extravars" > "$runner/env/extravars"
# The vault credential and the job's options (check mode, diff), as AWX hands them over.
printf '%s\n' "--vault-password-file /runner/env/vault-password --become $*" > "$runner/env/cmdline"
rm -rf "$runner/artifacts/$ident"
docker run --rm --user 1000 -v "$runner:/runner" "${BOTSTACK_EE_IMAGE:-botstack-ee:test}" \
  ansible-runner run /runner -p "$playbook" --ident "$ident" --inventory /runner/project/inventories/ee-job
