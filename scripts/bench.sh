#!/usr/bin/env bash
# Performance measurements of docs/benchmarks.md (issue 7), written as JSON/text under one
# results directory, with a markdown-ready summary at the end.
#
#   scripts/bench.sh                 criterion micro-benchmarks, load scenarios (3 runs each,
#                                    medians), restart-time, scale at 1k and 100k secrets
#   scripts/bench.sh --with-1m       also the 1M-secret scale test (populating takes minutes)
#   scripts/bench.sh --quick         1 run per load scenario, 3 s each, no 100k scale
#   scripts/bench.sh --no-criterion  skip the micro-benchmarks
#
# Environment: OUT (results dir, default target/bench-results/<UTC time>), DURATION (seconds
# per load run, default 10), CONNECTIONS (default 16), SCALE_DIR (where scale databases are
# built; default a temp dir on the build disk; they are deleted afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

with_1m=0 quick=0 criterion=1
for arg in "$@"; do
  case "$arg" in
    --with-1m) with_1m=1 ;;
    --quick) quick=1 ;;
    --no-criterion) criterion=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 64 ;;
  esac
done

OUT=${OUT:-target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
RUNS=3
if [ "$quick" = 1 ]; then RUNS=1; DURATION=3; fi
mkdir -p "$OUT"
command -v jq >/dev/null || { echo "bench.sh needs jq" >&2; exit 1; }

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(grep -m1 MemTotal /proc/meminfo | awk '{print $2" kB"}')"
  echo "rustc: $(rustc --version)"
} | tee "$OUT/machine.txt"

cargo build --release -p spike-bench
BENCH=target/release/spike-bench

if [ "$criterion" = 1 ]; then
  echo "== criterion micro-benchmarks"
  for spec in "spike-crypto crypto" "spike-nexus policy" "spike-proto json"; do
    set -- $spec
    cargo bench -p "$1" --bench "$2" -- --warm-up-time 1 --measurement-time 3 --noplot \
      2>&1 | tee "$OUT/criterion-$2.txt" | grep -E '^[a-z].*|time:' || true
  done
fi

# median of a jq expression over JSON files
median() { # expr files...
  local expr=$1; shift
  jq -s "[.[] | $expr] | sort | .[(length - 1) / 2 | floor]" "$@"
}

echo "== load scenarios (in-process selftest, memory backend unless noted; $RUNS x ${DURATION}s, $CONNECTIONS connections)"
scenario() { # name, then selftest args
  local name=$1; shift
  for i in $(seq 1 "$RUNS"); do
    "$BENCH" selftest --quiet --json --duration "${DURATION}s" --connections "$CONNECTIONS" "$@" \
      > "$OUT/load-$name-$i.json"
  done
  local files=("$OUT"/load-"$name"-*.json)
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" \
    "$(median .throughput_rps "${files[@]}" | xargs printf '%.0f')" \
    "$(median .latency.p50_us "${files[@]}")" \
    "$(median .latency.p99_us "${files[@]}")" \
    "$(median .latency.p999_us "${files[@]}")" \
    "$(median '.server_rss_kib / 1024 | floor' "${files[@]}")" | tee -a "$OUT/summary.md"
}
echo "| scenario | req/s | p50 us | p99 us | p99.9 us | RSS MiB |" | tee -a "$OUT/summary.md"
echo "|---|---|---|---|---|---|" | tee -a "$OUT/summary.md"
scenario get-keepalive --workload get --secrets 1000
scenario get-new-conn --workload get --secrets 1000 --no-keepalive
scenario put-keepalive --workload put --secrets 1000
scenario mix-keepalive --workload mix --secrets 1000
scenario encrypt-keepalive --workload encrypt --value-size 64
scenario get-sqlite-keepalive --backend sqlite --workload get --secrets 1000
scenario put-sqlite-keepalive --backend sqlite --workload put --secrets 1000
scenario mix-sqlite-keepalive --backend sqlite --workload mix --secrets 1000

echo "== restart time (5 keepers, threshold 3, sqlite)"
"$BENCH" restart-time --keepers 5 --threshold 3 --restarts 5 --json > "$OUT/restart-time.json"
jq -c '{median_ms, max_ms, restart_ms}' "$OUT/restart-time.json" | tee -a "$OUT/summary.md"

echo "== scale (sqlite, get, ${DURATION}s, $CONNECTIONS connections)"
sizes=(1000)
[ "$quick" = 1 ] || sizes+=(100000)
[ "$with_1m" = 1 ] && sizes+=(1000000)
echo "| secrets | populate s | startup ms (median of 3) | get req/s | get p99 us | RSS unsealed MiB | RSS after load MiB | DB MiB |" | tee -a "$OUT/summary.md"
echo "|---|---|---|---|---|---|---|---|" | tee -a "$OUT/summary.md"
for n in "${sizes[@]}"; do
  dir=$(mktemp -d "${SCALE_DIR:-${TMPDIR:-/tmp}}/spike-scale-XXXXXX")
  "$BENCH" scale --data-dir "$dir/data" --secrets "$n" --starts 3 --quiet --json \
    --duration "${DURATION}s" --connections "$CONNECTIONS" > "$OUT/scale-$n.json"
  rm -rf "$dir"
  jq -r '"| \(.secrets) | \(.populate_secs * 10 | round / 10) | \(.startup_median_ms * 10 | round / 10) | \(.load.throughput_rps | round) | \(.load.latency.p99_us) | \(.rss_unsealed_kib / 1024 | round) | \(.rss_after_load_kib / 1024 | round) | \(.db_bytes / 1048576 | round) |"' \
    "$OUT/scale-$n.json" | tee -a "$OUT/summary.md"
done

echo "results in $OUT"
