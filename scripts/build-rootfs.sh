#!/usr/bin/env bash
# Build (once) and cache a minimal Debian 12 root filesystem with systemd, for the nspawn
# appliance machines. Prints the path of the root on stdout; progress goes to stderr.
#
# Cache: ${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}/rootfs/bookworm-<package-list hash>
# Needs root, debootstrap and systemd-container (scripts/install-deps.sh --appliance installs them).
set -euo pipefail

MIRROR="${SPIKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The libtss2 libraries are the ones systemd 252 dlopens for TPM2 (systemd-creds
# --with-key=tpm2, LoadCredentialEncrypted=); libtss2-tcti-swtpm0 is the TCTI it loads for
# SYSTEMD_TPM2_DEVICE=swtpm:path=... (the machines' emulated TPM, vm-tests/driver/nspawn.py).
PACKAGES="systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates"
PACKAGES+=",libtss2-esys-3.0.2-0,libtss2-rc0,libtss2-mu0,libtss2-tcti-swtpm0"
# The ha scenario's database host (install.sh --role database: PostgreSQL 15 from Debian, with
# openssl for its test certificate) and load balancer (units/etc/haproxy/spike-nexus.cfg).
PACKAGES+=",postgresql-15,openssl,haproxy"
# Bump RECIPE when the steps below change, so every machine rebuilds its cached root.
RECIPE=3
CACHE="${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}"
key="$(printf '%s|%s' "$PACKAGES" "$RECIPE" | sha256sum | cut -c1-12)"
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
# debootstrap writes no /etc/hosts: without it `localhost` does not resolve inside the
# machines (the CLI's default URL is https://localhost:8553). These are Debian's defaults.
cat > "$ROOT.tmp/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
HOSTS
# The Debian packages create and enable what would conflict with install.sh's roles: a
# PostgreSQL cluster 15/main on :5432 and haproxy with its sample configuration. No cluster
# is created by default (install.sh --role database creates its own), and both services are
# enabled only by the roles that use them.
chroot "$ROOT.tmp" pg_dropcluster 15 main >&2 || true
sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' "$ROOT.tmp/etc/postgresql-common/createcluster.conf"
grep -q '^create_main_cluster = false' "$ROOT.tmp/etc/postgresql-common/createcluster.conf" \
  || echo 'create_main_cluster = false' >> "$ROOT.tmp/etc/postgresql-common/createcluster.conf"
systemctl --root="$ROOT.tmp" disable postgresql.service haproxy.service >/dev/null 2>&1 || true
# No getty on the console: the machines are driven through nsenter.
ln -sf /dev/null "$ROOT.tmp/etc/systemd/system/console-getty.service"
touch "$ROOT.tmp/.complete"
rm -rf "$ROOT"
mv "$ROOT.tmp" "$ROOT"
echo "build-rootfs: done" >&2
echo "$ROOT"
