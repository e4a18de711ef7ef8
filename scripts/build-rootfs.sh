#!/usr/bin/env bash
# Build (once) and cache a minimal Debian 12 root filesystem with systemd, for the nspawn
# appliance machines. Prints the path of the root on stdout; progress goes to stderr.
#
# Cache: ${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}/rootfs/bookworm-<package-list hash>
# Needs root, debootstrap and systemd-container (scripts/install-deps.sh --appliance installs them).
set -euo pipefail

MIRROR="${SPIKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates"
CACHE="${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}"
key="$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-12)"
ROOT="$CACHE/rootfs/bookworm-$key"

if [[ -f "$ROOT/.complete" ]]; then
  echo "$ROOT"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "build-rootfs: must run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build-rootfs: debootstrap missing (scripts/install-deps.sh --appliance)" >&2; exit 1; }

echo "build-rootfs: debootstrap bookworm into $ROOT (about a minute)" >&2
rm -rf "$ROOT.tmp"
mkdir -p "$(dirname "$ROOT")"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOT.tmp" "$MIRROR" >&2
# A machine-id is generated on each boot of the ephemeral copies.
: > "$ROOT.tmp/etc/machine-id"
# No getty on the console: the machines are driven through nsenter.
ln -sf /dev/null "$ROOT.tmp/etc/systemd/system/console-getty.service"
touch "$ROOT.tmp/.complete"
rm -rf "$ROOT"
mv "$ROOT.tmp" "$ROOT"
echo "build-rootfs: done" >&2
echo "$ROOT"
