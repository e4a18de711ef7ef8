#!/usr/bin/env bash
# Install the host packages the project's tests need (Debian 12). Idempotent.
# Usage: scripts/install-deps.sh [--appliance]
set -euo pipefail
# --appliance adds what the nspawn machines need (systemd-nspawn, debootstrap, ip) and the
# emulated TPM2 each machine may get (swtpm, swtpm_setup, tpm2_pcrextend and the swtpm TCTI
# that tpm2-tools loads to reach swtpm's socket).
# postgresql-15 (+ its client) is the real server spike-testkit's PostgreSQL harness starts
# with initdb in a temporary directory; every run of the tests needs it.
pkgs=(ca-certificates build-essential pkg-config postgresql-15 postgresql-client-15)
[[ "${1:-}" == --appliance ]] && pkgs+=(systemd-container debootstrap iproute2 util-linux
                                        swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0)
need=()
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  # The tests start their own throwaway clusters; keep Debian from creating and starting a
  # system-wide cluster on :5432 when postgresql-common is installed (an existing file wins;
  # postgresql-common installs this file through ucf, which UCF_FORCE_CONFFOLD tells to keep it).
  createcluster=/etc/postgresql-common/createcluster.conf
  if [[ ! -e $createcluster ]]; then
    mkdir -p "${createcluster%/*}"
    echo "create_main_cluster = false" >"$createcluster"
  fi
  echo "install-deps: apt-get install ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "install-deps: Rust (rustup) is required" >&2; exit 1; }
command -v go >/dev/null || { echo "install-deps: Go >= 1.24 is required" >&2; exit 1; }
