#!/usr/bin/env bash
# Build go-bench and cache it outside the repository.
#
# Usage: tools/go-bench/build.sh    # prints the binary's path on stdout (progress on stderr)
#
# Cache: ${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}/go-bench/<hash>/go-bench, where <hash> is a
# hash of this directory's Go sources, go.mod and go.sum, so editing them rebuilds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SPIKE_CACHE_DIR:-$HOME/.cache/spike-rs}"

command -v go >/dev/null || { echo "go-bench/build: Go is required (https://go.dev/dl)" >&2; exit 1; }

src_hash="$(cd "$here" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort |
  xargs sha256sum | sha256sum | cut -c1-12)"
OUT="$CACHE/go-bench/$src_hash"
if [[ ! -x "$OUT/go-bench" ]]; then
  mkdir -p "$OUT"
  echo "go-bench/build: building into $OUT" >&2
  start=$SECONDS
  (cd "$here" && CGO_ENABLED=0 go build -trimpath -o "$OUT/go-bench.tmp" .) >&2
  mv "$OUT/go-bench.tmp" "$OUT/go-bench"
  echo "go-bench/build: built in $((SECONDS - start)) s" >&2
fi
echo "$OUT/go-bench"
