#!/usr/bin/env bash
# SQLite beside PostgreSQL with one and with two Nexus instances, in one run (docs/benchmarks.md,
# "Backends side by side"). Each configuration runs in-process (spike-bench selftest: three
# keepers, Nexus unsealed from them, the Pilot superuser's mTLS load); PostgreSQL is a throwaway
# durable cluster (fsync on, synchronous_commit on) on a unix socket, started per run by the
# benchmark under a dedicated user (as the tests do). Configurations alternate within each
# round, and the table gives the median (min-max) of the rounds.
#
#   scripts/bench-backends.sh            3 rounds x 10 s, 16 connections
# Environment: OUT (default target/bench-results/backends-<UTC time>), RUNS (3), DURATION
# (seconds, 10), CONNECTIONS (16), SECRETS (1000).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,12p' "$0"; exit 0 ;; "") ;; *) echo "unknown argument: $1" >&2; exit 64 ;; esac
command -v jq >/dev/null || { echo "bench-backends.sh needs jq" >&2; exit 1; }

OUT=${OUT:-target/bench-results/backends-$(date -u +%Y%m%dT%H%M%SZ)}
RUNS=${RUNS:-3} DURATION=${DURATION:-10} CONNECTIONS=${CONNECTIONS:-16} SECRETS=${SECRETS:-1000}
mkdir -p "$OUT"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  echo "postgres: $(psql --version 2>/dev/null || echo unknown)"
} | tee "$OUT/machine.txt"
cargo build --release -p spike-bench
BENCH=target/release/spike-bench

configs=("sqlite:--backend sqlite" "postgres-1:--backend postgres --instances 1" "postgres-2:--backend postgres --instances 2")
workloads=(get put)
for round in $(seq 1 "$RUNS"); do
  for workload in "${workloads[@]}"; do
    for entry in "${configs[@]}"; do
      name=${entry%%:*} args=${entry#*:}
      echo "round $round: $name $workload" >&2
      # shellcheck disable=SC2086 # args is a word list by design
      "$BENCH" selftest --quiet --json $args --workload "$workload" --secrets "$SECRETS" \
        --duration "${DURATION}s" --connections "$CONNECTIONS" > "$OUT/$name-$workload-$round.json"
    done
  done
done

# median (min-max) of a jq expression over JSON files
spread() { # expr files...
  local expr=$1; shift
  jq -rs "[.[] | $expr] | sort | \"\\(.[(length - 1) / 2 | floor] | round) (\\(.[0] | round)-\\(.[-1] | round))\"" "$@"
}
{
  echo "| backend | workload | req/s | p50 ms | p99 ms | errors |"
  echo "|---|---|---|---|---|---|"
  for workload in "${workloads[@]}"; do
    for entry in "${configs[@]}"; do
      name=${entry%%:*}
      files=("$OUT/$name-$workload"-*.json)
      printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$workload" \
        "$(spread .throughput_rps "${files[@]}")" \
        "$(jq -rs '[.[] | .latency.p50_us] | sort | .[(length - 1) / 2 | floor] / 1000 | . * 100 | round / 100' "${files[@]}")" \
        "$(jq -rs '[.[] | .latency.p99_us] | sort | .[(length - 1) / 2 | floor] / 1000 | . * 100 | round / 100' "${files[@]}")" \
        "$(jq -s '[.[] | .errors] | add' "${files[@]}")"
    done
  done
} | tee "$OUT/summary.md"
echo "results in $OUT" >&2
