#!/usr/bin/env bash
# Offline inputs for the python role's scenarios and benchmark, from this machine:
#   <out>/pyenv.git.tar.gz   a bare mirror of the local pyenv checkout, tagged v<its version>
#   <out>/Python-X.Y.Z.tar.gz  CPython source from Debian's source package (python3.X orig
#                              tarball: the same bytes as python.org's Python-X.Y.Z.tgz,
#                              checked against pyenv's own checksum)
# Usage: scripts/python-offline-sources.sh 3.11.2 [/var/cache/botstack/python-build]
set -euo pipefail

version=${1:?usage: $0 CPYTHON_VERSION [OUT_DIR]}
out=${2:-/var/cache/botstack/python-build}
say() { printf '[python-sources] %s\n' "$*" >&2; }

pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
[[ -x $pyenv_root/bin/pyenv ]] || { say "no pyenv checkout at $pyenv_root"; exit 1; }
mkdir -p "$out"

# pyenv mirror, tagged like the upstream release the checkout is.
tag="v$("$pyenv_root/bin/pyenv" --version | awk '{print $2}')"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet --bare "$pyenv_root" "$work/pyenv.git"
git -C "$work/pyenv.git" tag -f "$tag" HEAD >/dev/null
tar -C "$work" -czf "$work/pyenv.git.tar.gz" pyenv.git
mv -f "$work/pyenv.git.tar.gz" "$out/pyenv.git.tar.gz"
say "pyenv mirror $out/pyenv.git.tar.gz ($tag)"

# CPython source, verified against the checksum pyenv would verify.
definition="$pyenv_root/plugins/python-build/share/python-build/$version"
[[ -f $definition ]] || { say "pyenv knows no CPython $version"; exit 1; }
want=$(grep -o "Python-$version\.tgz#[0-9a-f]*" "$definition" | cut -d'#' -f2)
archive="$out/Python-$version.tar.gz"
if [[ -f $archive ]] && [[ $(sha256sum "$archive" | cut -d' ' -f1) == "$want" ]]; then
    say "CPython $archive already in place"
    exit 0
fi
. /etc/os-release
minor=${version%.*}
mkdir -p "$work/lists/partial" "$work/cache" "$work/src"
cat >"$work/sources.list" <<LIST
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $VERSION_CODENAME main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security $VERSION_CODENAME-security main
LIST
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${apt_private[@]}" -qq update
# Only the orig tarball matters; a missing .dsc on a mirror is not fatal.
(cd "$work/src" && apt-get "${apt_private[@]}" -qq source --download-only "python$minor" >/dev/null 2>&1) || true
orig="$work/src/python${minor}_${version}.orig.tar.gz"
[[ -f $orig ]] || { say "Debian's python$minor source is not CPython $version"; exit 1; }
got=$(sha256sum "$orig" | cut -d' ' -f1)
[[ $got == "$want" ]] || { say "checksum $got differs from pyenv's $want"; exit 1; }
mv -f "$orig" "$archive"
say "CPython $archive (sha256 $got, pyenv's checksum)"
