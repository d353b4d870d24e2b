#!/usr/bin/env bash
# Build (or reuse) the local systemd test image for one Debian suite.
# No registry is reachable, so the image is made with debootstrap and cached
# under a tag derived from the suite, the package list and this script.
# Usage: scripts/build-test-image.sh [SUITE]   (prints the image name)
set -euo pipefail

suite="${1:-${BOTSTACK_TEST_SUITE:-bookworm}}"
packages="systemd,systemd-sysv,dbus,python3,python3-apt,openssh-server,sudo,iproute2,ca-certificates,procps,locales"
mirror="${BOTSTACK_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  # Use the mirror the machine's own apt sources name (deb822 or one-line).
  mirror=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -v security | head -n1 | tr -d ' ' || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

extra_ca_dir=/usr/local/share/ca-certificates
ca_sum=$(cat "$extra_ca_dir"/*.crt 2>/dev/null | sha256sum | cut -c1-8)
cache_hook="$(dirname "$0")/test-image/zipimport_bytecode_cache.py"
tag=$(printf '%s\n' "$suite" "$packages" "$ca_sum" "$(cat "$0" "$cache_hook")" | sha256sum | cut -c1-12)
image="botstack-systemd-${suite}:${tag}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

root=$(mktemp -d /var/tmp/botstack-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "building $image from $mirror (debootstrap $suite)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >&2

# Hosts behind a TLS-intercepting proxy trust it through extra CA certificates;
# the test hosts need the same trust to reach PyPI.
if compgen -G "$extra_ca_dir/*.crt" >/dev/null; then
  cp "$extra_ca_dir"/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >&2
fi

# Every container must get its own identity and host keys.
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
# Like a cloud image's first boot: generate missing host keys before sshd starts.
mkdir -p "$root/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' > "$root/etc/systemd/system/ssh.service.d/10-first-boot-host-keys.conf"
# Ansible's modules run with this python3 on every task: keep the bytecode zipimport would compile again
# each time (scripts/test-image/zipimport_bytecode_cache.py; docs/testing.md).
install -d -m 0755 "$root/var/cache/zipimport-bytecode"
install -m 0644 "$cache_hook" "$root/usr/lib/python3/dist-packages/zipimport_bytecode_cache.py"
echo "import zipimport_bytecode_cache" > "$root/usr/lib/python3/dist-packages/zipimport_bytecode_cache.pth"
# Prime the package lists so converges skip one cold download.
chroot "$root" apt-get update -qq >&2 || true
# Keep downloaded .debs: scenarios share /var/cache/apt/archives with the host.
rm -f "$root/etc/apt/apt.conf.d/docker-clean"
chroot "$root" apt-get clean

tar -C "$root" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' - "$image" >&2
docker tag "$image" "botstack-systemd-${suite}:latest"
echo "$image"
