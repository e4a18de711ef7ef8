#!/usr/bin/env bash
# Build the Go compatibility clients and cache them outside the repository.
#
# Usage: compat/build.sh        # prints the bin directory on stdout (progress on stderr)
#
# Cache: ${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}/compat/<version>/bin, where <version> names
# the SDK version plus a hash of this directory's Go sources, so editing them rebuilds.
# Contents:
#   sdk-client  compat/sdk-client on github.com/spiffe/spike-sdk-go (always; failure = exit 1)
#   spike       SPIKE's Go CLI (github.com/spiffe/spike/app/spike/cmd), only when the Go module
#               proxy serves github.com/spiffe/spike. When it does not, the file
#               spike-cli.unavailable says why, and the proxy is asked again after a day.
# Binaries are rebuilt only when missing.
#
# Environment:
#   SPIKE_CACHE_DIR         cache root (default $HOME/.cache/spike-rs)
#   SPIKE_GO_CLI_VERSIONS   Go CLI versions to try, newest first (default "v0.8.2 v0.8.1 v0.8.0")
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SDK_VERSION="$(awk '$1 == "require" && $2 == "github.com/spiffe/spike-sdk-go" { print $3 }' "$here/go.mod")"
CLI_VERSIONS="${SPIKE_GO_CLI_VERSIONS:-v0.8.2 v0.8.1 v0.8.0}"
CACHE="${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}"

command -v go >/dev/null || { echo "compat/build: Go is required (https://go.dev/dl)" >&2; exit 1; }
[[ -n "$SDK_VERSION" ]] || { echo "compat/build: no spike-sdk-go requirement in go.mod" >&2; exit 1; }

src_hash="$(cd "$here" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort |
  xargs sha256sum | sha256sum | cut -c1-12)"
OUT="$CACHE/compat/sdk-$SDK_VERSION-$src_hash/bin"
mkdir -p "$OUT"

# --- the SDK client
if [[ ! -x "$OUT/sdk-client" ]]; then
  echo "compat/build: building sdk-client on spike-sdk-go $SDK_VERSION" >&2
  start=$SECONDS
  (cd "$here" && go build -trimpath -o "$OUT/sdk-client.tmp" ./sdk-client) >&2
  mv "$OUT/sdk-client.tmp" "$OUT/sdk-client"
  echo "compat/build: sdk-client built in $((SECONDS - start)) s" >&2
fi

# --- SPIKE's Go CLI, when the module proxy serves it
marker="$OUT/spike-cli.unavailable"
if [[ ! -x "$OUT/spike" ]] && ! [[ -f "$marker" && -z "$(find "$marker" -mmin +1440)" ]]; then
  rm -f "$marker"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  built=""
  reasons=""
  for v in $CLI_VERSIONS; do
    echo "compat/build: trying SPIKE's Go CLI github.com/spiffe/spike@$v" >&2
    rm -rf "$work/m" && mkdir -p "$work/m"
    if ! (cd "$work/m" && go mod init spike-compat-cli >/dev/null 2>&1 &&
      go get -tool "github.com/spiffe/spike/app/spike/cmd@$v") >"$work/log" 2>&1; then
      reasons+="$v: $(grep -m1 -E 'Forbidden|not found|error|unknown' "$work/log" || tail -n1 "$work/log")"$'\n'
      continue
    fi
    start=$SECONDS
    if (cd "$work/m" && go build -trimpath -o "$OUT/spike.tmp" github.com/spiffe/spike/app/spike/cmd) >&2; then
      mv "$OUT/spike.tmp" "$OUT/spike"
      echo "$v" >"$OUT/spike.version"
      echo "compat/build: Go CLI $v built in $((SECONDS - start)) s" >&2
      built=$v
      break
    fi
    reasons+="$v: build failed"$'\n'
  done
  if [[ -z "$built" ]]; then
    printf 'The Go module proxy did not serve SPIKE'"'"'s Go CLI (%s):\n%s' "$CLI_VERSIONS" "$reasons" >"$marker"
    echo "compat/build: SPIKE's Go CLI is not available; only sdk-client was built" >&2
  fi
fi

echo "$OUT"
