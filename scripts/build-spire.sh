#!/usr/bin/env bash
# Build spire-server and spire-agent from the Go module proxy and cache them outside the repo.
#
# Usage: scripts/build-spire.sh            # prints the bin directory on stdout
# Cache: ${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}/spire/<version>/bin
# The binaries are rebuilt only when missing. Progress goes to stderr.
set -euo pipefail

SPIRE_VERSION="${SPIRE_VERSION:-v1.13.3}"
CACHE="${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}"
OUT="$CACHE/spire/$SPIRE_VERSION/bin"

if [[ -x "$OUT/spire-server" && -x "$OUT/spire-agent" ]]; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "build-spire: Go is required (https://go.dev/dl)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "build-spire: building SPIRE $SPIRE_VERSION from the Go module proxy (first build takes several minutes)" >&2
cd "$work"
go mod init spike-spire-build >/dev/null 2>&1
for cmd in spire-server spire-agent; do
  echo "build-spire: go get -tool github.com/spiffe/spire/cmd/$cmd@$SPIRE_VERSION" >&2
  go get -tool "github.com/spiffe/spire/cmd/$cmd@$SPIRE_VERSION" >&2
done
mkdir -p "$OUT.tmp"
for cmd in spire-server spire-agent; do
  echo "build-spire: compiling $cmd" >&2
  GOBIN="$OUT.tmp" go install "github.com/spiffe/spire/cmd/$cmd" >&2
done
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "build-spire: done: $OUT" >&2
echo "$OUT"
