#!/usr/bin/env bash
# Install the host packages the project's tests need (Debian 12). Idempotent.
set -euo pipefail
need=()
for pkg in ca-certificates build-essential pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "install-deps: Rust (rustup) is required" >&2; exit 1; }
command -v go >/dev/null || { echo "install-deps: Go >= 1.24 is required" >&2; exit 1; }
