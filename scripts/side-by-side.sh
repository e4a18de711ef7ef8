#!/usr/bin/env bash
# Side by side with SPIKE's Go Nexus (issues 7 and 15): one SPIRE server + agent, our cluster
# and one or two of SPIKE's Go clusters (keepers, Nexus on sqlite, bootstrap): SPIKE's Nexus
# with its default journal settings (WAL, synchronous=NORMAL: commits are not fsynced) and/or
# durable (SPIKE_NEXUS_DB_JOURNAL_MODE='WAL&_sync=FULL': one fsync per commit, like ours).
# The same loads, from our Rust client (spike-bench) and/or a neutral Go one
# (tools/go-bench), against each Nexus, alternating; medians and spreads of RUNS; the CPU
# per request and RSS (anonymous / file-mapped) of each Nexus; restart-to-ready times; and
# optionally the RSS after 100k secrets over fresh clusters.
#
#   sudo SPIKE_GO_BIN_DIR=DIR scripts/side-by-side.sh [options]
#
#   --spike-mode M      default | durable | both (default both): which Go Nexus(es) to run
#   --client C          rust | go | both (default both): spike-bench and/or tools/go-bench
#   --runs N            runs per scenario, client and Nexus (default 3)
#   --duration S        seconds per load run (default 10)
#   --connections N     concurrent connections (default 16)
#   --secrets N         secrets the get/put-versions loads address (default 1000)
#   --keepers N         keepers per cluster (default 3)
#   --threshold N       shards needed (default 2)
#   --restarts N        Nexus restarts to time (default 5)
#   --only LIST         only these load scenarios (comma-separated: get-keepalive,
#                       get-new-connection, put-fresh, put-versions, mix-90-10, encrypt;
#                       `put` is put-versions; encrypt is driven by the Rust client only)
#   --skip-load         only start, restart and (with --with-100k) scale
#   --with-100k         also, over fresh clusters (--scale-runs times), populate
#                       --scale-secrets secrets through the API, run a get load, report RSS
#   --scale-secrets N   secrets for --with-100k (default 100000)
#   --scale-runs N      fresh clusters for --with-100k (default 3)
#   --populate-cap S    give up populating after S seconds per Nexus (default 900)
#   --count-syncs       one more put-versions run per Nexus under `perf record`, counting
#                       its fsync/fdatasync calls (needs perf with syscall tracepoints)
#
# SPIKE_GO_BIN_DIR must hold SPIKE's Go binaries `nexus`, `keeper` and `bootstrap` (0.8.x),
# and may hold a file VERSION naming them. This script does not fetch or build SPIKE: build
# `./app/{nexus,keeper,bootstrap}/cmd` from a checkout of github.com/spiffe/spike at v0.8.x
# (cgo and a C compiler are needed for mattn/go-sqlite3), outside this repository.
#
# Also needed: root (every daemon runs under its own system user so that each gets exactly
# one SVID: SPIKE's Go processes take the first SVID the agent returns), setpriv, curl, jq,
# SPIRE binaries (SPIKE_SPIRE_BIN, default: what scripts/build-spire.sh prints), our release
# binaries (RS_BIN_DIR; when unset, `cargo build --release` into target/release), and with
# `--client go|both` Go to build tools/go-bench (or GO_BENCH=path to its binary).
# Results: OUT (default target/side-by-side/<UTC time>): runs/*.json (one per load run),
# results.tsv (one line per run), summary.json (medians, minima, maxima), summary.md, logs.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3 duration=10 connections=16 secrets=1000 keepers=3 threshold=2 restarts=5
only="" skip_load=0 with_100k=0 populate_cap=900 count_syncs=0
spike_mode=both client=both scale_secrets=100000 scale_runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --spike-mode) spike_mode=$2; shift ;;
    --client) client=$2; shift ;;
    --runs) runs=$2; shift ;;
    --duration) duration=${2%s}; shift ;;
    --connections) connections=$2; shift ;;
    --secrets) secrets=$2; shift ;;
    --keepers) keepers=$2; shift ;;
    --threshold) threshold=$2; shift ;;
    --restarts) restarts=$2; shift ;;
    --only) only=$2; shift ;;
    --skip-load) skip_load=1 ;;
    --with-100k) with_100k=1 ;;
    --scale-secrets) scale_secrets=$2; shift ;;
    --scale-runs) scale_runs=$2; shift ;;
    --populate-cap) populate_cap=$2; shift ;;
    --count-syncs) count_syncs=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 64 ;;
  esac
  shift
done

die() { echo "side-by-side: $*" >&2; exit 1; }
case "$spike_mode" in
  default) GO_IMPLS=(gdef) ;;
  durable) GO_IMPLS=(gdur) ;;
  both) GO_IMPLS=(gdef gdur) ;;
  *) die "--spike-mode must be default, durable or both" ;;
esac
case "$client" in
  rust) CLIENTS=(rust) ;;
  go) CLIENTS=(go) ;;
  both) CLIENTS=(rust go) ;;
  *) die "--client must be rust, go or both" ;;
esac
IMPLS=(rs "${GO_IMPLS[@]}")
label() { case "$1" in rs) echo ours ;; gdef) echo spike-default ;; gdur) echo spike-durable ;; esac; }

[ "$(id -u)" = 0 ] || die "must run as root (it creates system users and drops to them)"
for tool in setpriv curl jq useradd userdel; do
  command -v "$tool" >/dev/null || die "needs $tool"
done

GO_BIN=${SPIKE_GO_BIN_DIR:-}
if [ -z "$GO_BIN" ] || [ ! -x "$GO_BIN/nexus" ] || [ ! -x "$GO_BIN/keeper" ] || [ ! -x "$GO_BIN/bootstrap" ]; then
  cat >&2 <<'EOF'
side-by-side: set SPIKE_GO_BIN_DIR to a directory with SPIKE's Go binaries nexus, keeper and
bootstrap (v0.8.x), built outside this repository from a checkout of
github.com/spiffe/spike at v0.8.x (the Go module proxy does not serve it):
  go build -o DIR/nexus ./app/nexus/cmd   (likewise keeper and bootstrap; needs cgo + gcc)
EOF
  exit 1
fi
[ "$count_syncs" = 0 ] || command -v perf >/dev/null || die "--count-syncs needs perf"
SPIRE_BIN=${SPIKE_SPIRE_BIN:-$(scripts/build-spire.sh)}
{ [ -x "$SPIRE_BIN/spire-server" ] && [ -x "$SPIRE_BIN/spire-agent" ]; } || die "no SPIRE in $SPIRE_BIN"
RS_BIN=${RS_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
if [ -z "${RS_BIN_DIR:-}" ]; then
  cargo build --release -p spike-nexus -p spike-keeper -p spike-bootstrap -p spike-bench
fi
for b in spike-nexus spike-keeper spike-bootstrap spike-bench; do
  [ -x "$RS_BIN/$b" ] || die "missing $RS_BIN/$b"
done
BENCH="$RS_BIN/spike-bench"
GOBENCH=""
if [[ " ${CLIENTS[*]} " = *" go "* ]]; then
  GOBENCH=${GO_BENCH:-$(tools/go-bench/build.sh)}
  [ -x "$GOBENCH" ] || die "no go-bench at $GOBENCH"
fi

OUT=${OUT:-target/side-by-side/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/runs"
OUT=$(cd "$OUT" && pwd)
T=$(mktemp -d /tmp/spike-sbs.XXXXXX)
chmod 755 "$T"
TD=spike.ist
CLK_TCK=$(getconf CLK_TCK)
declare -A PORT KPORT NEXUS_PID KEEPER_PIDS PEERS
PORT=([rs]=28553 [gdef]=18553 [gdur]=38553)
KPORT=([rs]=28440 [gdef]=18440 [gdur]=38440)

pids=()         # every daemon we started
created_users=()
spire_server_pid="" spire_agent_pid=""
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$spire_agent_pid" ] && kill "$spire_agent_pid" 2>/dev/null
  [ -n "$spire_server_pid" ] && kill "$spire_server_pid" 2>/dev/null
  sleep 0.5
  for p in "${pids[@]}" $spire_agent_pid $spire_server_pid; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  for u in "${created_users[@]}"; do userdel "$u" 2>/dev/null; done
  cp "$T"/*.log "$OUT"/ 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(grep -m1 MemTotal /proc/meminfo | awk '{print $2" kB"}')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "go nexus: $GO_BIN/nexus ($(sha256sum "$GO_BIN/nexus" | cut -c1-12))$( [ -f "$GO_BIN/VERSION" ] && echo "; $(head -n1 "$GO_BIN/VERSION")")"
  echo "servers: ${IMPLS[*]} (rs = ours, gdef = SPIKE default journal, gdur = SPIKE WAL&_sync=FULL); clients: ${CLIENTS[*]}"
  echo "keepers: $keepers, threshold $threshold; runs $runs x ${duration}s, $connections connections, $secrets secrets"
} | tee "$OUT/machine.txt"

# ---- users: one per process, so each gets exactly one SVID
uid_of() { id -u "$1"; }
ensure_user() {
  local u=$1
  if ! id "$u" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
    created_users+=("$u")
  fi
}
roles=(nexus bootstrap)
for i in $(seq 1 "$keepers"); do roles+=("keeper$i"); done
for impl in "${IMPLS[@]}"; do
  for r in "${roles[@]}"; do ensure_user "spikebench-$impl-$r"; done
done

# ---- SPIRE
mkdir -p "$T/spire"
chmod 755 "$T/spire"
spire_port=$(( 20000 + RANDOM % 10000 ))
cat > "$T/spire/server.conf" <<EOF
server {
    bind_address = "127.0.0.1"
    bind_port = "$spire_port"
    socket_path = "$T/spire/server.sock"
    trust_domain = "$TD"
    data_dir = "$T/spire/server-data"
    log_level = "WARN"
    default_x509_svid_ttl = "1h"
}
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3"
        connection_string = "$T/spire/server-data/datastore.sqlite3" } }
    KeyManager "memory" { plugin_data {} }
    NodeAttestor "join_token" { plugin_data {} }
}
EOF
cat > "$T/spire/agent.conf" <<EOF
agent {
    data_dir = "$T/spire/agent-data"
    log_level = "WARN"
    server_address = "127.0.0.1"
    server_port = "$spire_port"
    socket_path = "$T/spire/agent.sock"
    trust_bundle_path = "$T/spire/bundle.pem"
    trust_domain = "$TD"
}
plugins {
    KeyManager "memory" { plugin_data {} }
    NodeAttestor "join_token" { plugin_data {} }
    WorkloadAttestor "unix" { plugin_data {} }
}
EOF
SS="$T/spire/server.sock"
SOCK="$T/spire/agent.sock"
"$SPIRE_BIN/spire-server" run -config "$T/spire/server.conf" </dev/null >/dev/null 2>"$T/spire-server.log" &
spire_server_pid=$!
for _ in $(seq 150); do
  "$SPIRE_BIN/spire-server" healthcheck -socketPath "$SS" >/dev/null 2>&1 && break
  sleep 0.2
done
"$SPIRE_BIN/spire-server" bundle show -socketPath "$SS" > "$T/spire/bundle.pem"
token=$("$SPIRE_BIN/spire-server" token generate -socketPath "$SS" -ttl 600 | sed -n 's/^Token: //p')
[ -n "$token" ] || die "no join token"
parent="spiffe://$TD/spire/agent/join_token/$token"
"$SPIRE_BIN/spire-agent" run -config "$T/spire/agent.conf" -joinToken "$token" \
  </dev/null >/dev/null 2>"$T/spire-agent.log" &
spire_agent_pid=$!
for _ in $(seq 150); do
  "$SPIRE_BIN/spire-agent" healthcheck -socketPath "$SOCK" >/dev/null 2>&1 && break
  sleep 0.2
done
register() { # spiffe path, uid
  "$SPIRE_BIN/spire-server" entry create -socketPath "$SS" -parentID "$parent" \
    -spiffeID "spiffe://$TD/$1" -selector "unix:uid:$2" >/dev/null
}
register spike/pilot/role/superuser 0   # the load generators and the probes run as root
for impl in "${IMPLS[@]}"; do
  register spike/nexus "$(uid_of "spikebench-$impl-nexus")"
  register spike/bootstrap "$(uid_of "spikebench-$impl-bootstrap")"
  for i in $(seq 1 "$keepers"); do
    # One ID per keeper (SPIKE accepts any spike/keeper/...; ours pins keeper i to .../keeper/<i>).
    register "spike/keeper/$i" "$(uid_of "spikebench-$impl-keeper$i")"
  done
done
echo "== SPIRE up; waiting for the pilot SVID"
mkdir -p "$T/pilot"
for _ in $(seq 120); do
  "$SPIRE_BIN/spire-agent" api fetch x509 -socketPath "$SOCK" -write "$T/pilot" >/dev/null 2>&1 && break
  sleep 0.5
done
[ -s "$T/pilot/svid.0.pem" ] || die "no pilot SVID (see $OUT/spire-agent.log)"
chmod 777 "$SOCK"   # every daemon user must be able to connect

# ---- launching daemons
# run_as USER LOG BINARY ARGS... (environment: the ENV array); the pid goes to LAST_PID
run_as() {
  local user=$1 log=$2; shift 2
  setpriv --reuid="$user" --regid="$user" --clear-groups \
    env -i PATH=/usr/bin:/bin HOME="$T/home-$user" USER="$user" \
    SPIFFE_ENDPOINT_SOCKET="unix://$SOCK" "${ENV[@]}" "$@" </dev/null >>"$log" 2>&1 &
  LAST_PID=$!
}
mkdir -p "$T/bin"
cp "$GO_BIN/nexus" "$GO_BIN/keeper" "$GO_BIN/bootstrap" "$T/bin/"
for b in spike-nexus spike-keeper spike-bootstrap; do cp "$RS_BIN/$b" "$T/bin/"; done
chmod 755 "$T/bin" "$T/bin"/*

for impl in "${IMPLS[@]}"; do
  p=""
  for i in $(seq 1 "$keepers"); do p+="${p:+,}https://127.0.0.1:$(( KPORT[$impl] + i ))"; done
  PEERS[$impl]=$p
done
SHAMIR=(SPIKE_NEXUS_SHAMIR_SHARES="$keepers" SPIKE_NEXUS_SHAMIR_THRESHOLD="$threshold")
# What makes SPIKE's Nexus durable: its DSN is "<db>?_journal_mode=$SPIKE_NEXUS_DB_JOURNAL_MODE
# &_busy_timeout=...", so this value adds mattn/go-sqlite3's `_sync=FULL` (PRAGMA
# synchronous=FULL). Unset, the mode is "WAL" and mattn/go-sqlite3 sets synchronous=NORMAL.
DURABLE_JOURNAL='WAL&_sync=FULL'

fresh_dirs() { # impl: empty data, home and state directories
  local impl=$1 r u
  for r in "${roles[@]}"; do
    u="spikebench-$impl-$r"
    rm -rf "$T/home-$u"
    install -d -o "$u" -g "$u" -m 700 "$T/home-$u"
  done
  rm -rf "${T:?}/${impl:?}"
  install -d -m 755 "$T/$impl"
  install -d -o "spikebench-$impl-nexus" -g "spikebench-$impl-nexus" -m 700 "$T/$impl/data" "$T/$impl/run"
  install -d -o "spikebench-$impl-bootstrap" -g "spikebench-$impl-bootstrap" -m 700 "$T/$impl/bstate"
  if [ "$impl" = rs ]; then
    printf 'health_socket = "%s"\nmetrics_listen = ""\n' "$T/rs/run/health.sock" > "$T/rs/nexus.toml"
    chmod 644 "$T/rs/nexus.toml"
  fi
}
start_keepers() { # impl
  local impl=$1 i bin=keeper
  [ "$impl" = rs ] && bin=spike-keeper
  KEEPER_PIDS[$impl]=""
  for i in $(seq 1 "$keepers"); do
    ENV=(SPIKE_KEEPER_TLS_PORT="127.0.0.1:$(( KPORT[$impl] + i ))")
    run_as "spikebench-$impl-keeper$i" "$T/$impl-keeper$i.log" "$T/bin/$bin"
    pids+=("$LAST_PID")
    KEEPER_PIDS[$impl]+=" $LAST_PID"
  done
}
start_nexus() { # impl; sets NEXUS_PID[impl]
  local impl=$1
  ENV=(SPIKE_NEXUS_TLS_PORT="127.0.0.1:${PORT[$impl]}" SPIKE_NEXUS_KEEPER_PEERS="${PEERS[$impl]}"
    "${SHAMIR[@]}" SPIKE_NEXUS_BACKEND_STORE=sqlite SPIKE_NEXUS_DATA_DIR="$T/$impl/data")
  case "$impl" in
    rs) run_as spikebench-rs-nexus "$T/rs-nexus.log" "$T/bin/spike-nexus" --config "$T/rs/nexus.toml" ;;
    gdef) run_as spikebench-gdef-nexus "$T/gdef-nexus.log" "$T/bin/nexus" ;;
    gdur) ENV+=(SPIKE_NEXUS_DB_JOURNAL_MODE="$DURABLE_JOURNAL")
      run_as spikebench-gdur-nexus "$T/gdur-nexus.log" "$T/bin/nexus" ;;
  esac
  NEXUS_PID[$impl]=$LAST_PID
  pids+=("$LAST_PID")
}
start_bootstrap() { # impl; the pid goes to LAST_PID
  local impl=$1
  ENV=(SPIKE_NEXUS_API_URL="https://127.0.0.1:${PORT[$impl]}" SPIKE_NEXUS_KEEPER_PEERS="${PEERS[$impl]}"
    "${SHAMIR[@]}" SPIKE_NEXUS_BACKEND_STORE=sqlite)
  if [ "$impl" = rs ]; then
    ENV+=(STATE_DIRECTORY="$T/rs/bstate")
    run_as spikebench-rs-bootstrap "$T/rs-bootstrap.log" "$T/bin/spike-bootstrap" --init
  else
    run_as "spikebench-$impl-bootstrap" "$T/$impl-bootstrap.log" "$T/bin/bootstrap" -init
  fi
}
stop_pid() { # pid (a child of ours): SIGTERM, SIGKILL after 10 s, reap
  kill "$1" 2>/dev/null || true
  for _ in $(seq 200); do
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in ''|Z*) break ;; esac
    sleep 0.05
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_cluster() { # impl
  local p
  stop_pid "${NEXUS_PID[$1]}"
  for p in ${KEEPER_PIDS[$1]}; do stop_pid "$p"; done
}

# probes (as root = the Pilot superuser; -k: the SVID has no DNS SAN, mTLS still authenticates us)
CURL=(curl -s -o /dev/null -w '%{http_code}' -k --max-time 2
  --cert "$T/pilot/svid.0.pem" --key "$T/pilot/svid.0.key")
get_ok() { # port
  [ "$("${CURL[@]}" -X POST "https://127.0.0.1:$1/v1/store/secrets?action=get" \
    -d '{"path":"sbs/ready","version":0}')" = 200 ]
}
put_ok() { # port
  [ "$("${CURL[@]}" -X POST "https://127.0.0.1:$1/v1/store/secrets" \
    -d '{"path":"sbs/ready","values":{"k":"v"}}')" = 200 ]
}
health_ok() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --unix-socket "$T/rs/run/health.sock" \
    http://localhost/v1/sys/health)" = 200 ]
}
wait_for() { # seconds, command...
  local limit=$(( $(now_ms) + $1 * 1000 )); shift
  until "$@"; do
    [ "$(now_ms)" -lt "$limit" ] || return 1
    sleep 0.01
  done
}
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }   # pid, field
rss_json() { # pid: {"server_rss_kib", "rss_anon_kib", "rss_file_kib"}
  jq -n --argjson a "$(status_kib "$1" VmRSS)" --argjson b "$(status_kib "$1" RssAnon)" \
    --argjson c "$(status_kib "$1" RssFile)" '{server_rss_kib: $a, rss_anon_kib: $b, rss_file_kib: $c}'
}

# start_clusters: every cluster from empty directories, all at once; waits until each is ready
# and records its idle RSS in $OUT/idle-<impl>-<tag>.json
start_clusters() { # tag
  local impl boot=()
  for impl in "${IMPLS[@]}"; do fresh_dirs "$impl"; start_keepers "$impl"; done
  sleep 0.5
  for impl in "${IMPLS[@]}"; do start_nexus "$impl"; done
  for impl in "${IMPLS[@]}"; do start_bootstrap "$impl"; boot+=("$LAST_PID"); done
  for impl in "${IMPLS[@]}"; do
    if [ "$impl" = rs ]; then
      wait_for 180 health_ok || die "our Nexus never became healthy (logs in $OUT)"
    fi
    wait_for 180 put_ok "${PORT[$impl]}" || die "$(label "$impl") Nexus never accepted a put (logs in $OUT)"
    echo "$(label "$impl") Nexus (pid ${NEXUS_PID[$impl]}) ready: secret put succeeds"
  done
  for i in "${!IMPLS[@]}"; do
    wait "${boot[$i]}" || echo "warning: $(label "${IMPLS[$i]}") bootstrap exited non-zero" >&2
  done
  for impl in "${IMPLS[@]}"; do
    rss_json "${NEXUS_PID[$impl]}" | jq --arg s "$(label "$impl")" --arg t "$1" '. + {server: $s, tag: $t}' \
      > "$OUT/idle-$impl-$1.json"
  done
  echo "idle RSS (KiB): $(for impl in "${IMPLS[@]}"; do echo -n "$(label "$impl") $(status_kib "${NEXUS_PID[$impl]}" VmRSS); "; done)" \
    | tee -a "$OUT/machine.txt"
}

cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }   # utime + stime
# drive CLIENT IMPL WORKLOAD KEEPALIVE SECRETS DURATION_S POPULATE OUT: one load run; OUT gets
# the client's JSON plus the Nexus CPU time and RSS measured here, the same way for both clients.
drive() {
  local cl=$1 impl=$2 wl=$3 ka=$4 n=$5 dur=$6 pop=$7 out=$8
  local pid=${NEXUS_PID[$impl]} url="https://127.0.0.1:${PORT[$impl]}" c0 c1 args=() tmo=()
  [ -z "${DRIVE_TIMEOUT:-}" ] || tmo=(timeout "$DRIVE_TIMEOUT")
  [ "$ka" = 1 ] || args+=(--no-keepalive)
  [ "$pop" = 1 ] || args+=(--no-populate)
  c0=$(cpu_ticks "$pid")
  if [ "$cl" = rust ]; then
    [ "$wl" = put-versions ] && wl=put
    SPIFFE_ENDPOINT_SOCKET="unix://$SOCK" "${tmo[@]}" "$BENCH" --url "$url" --server-pid "$pid" \
      --connections "$connections" --quiet --json --workload "$wl" --secrets "$n" \
      --duration "${dur}s" "${args[@]}" > "$out.tmp" || return 1
  else
    SPIFFE_ENDPOINT_SOCKET="unix://$SOCK" "${tmo[@]}" "$GOBENCH" --url "$url" \
      --server-id "spiffe://$TD/spike/nexus" --connections "$connections" --json \
      --workload "$wl" --secrets "$n" --duration "${dur}s" "${args[@]}" > "$out.tmp" || return 1
  fi
  c1=$(cpu_ticks "$pid")
  jq --argjson ms "$(( (c1 - c0) * 1000 / CLK_TCK ))" --argjson rss "$(rss_json "$pid")" \
    --arg c "$cl" --arg s "$(label "$impl")" '. + {client: $c, server: $s, server_cpu_ms: $ms,
      server_cpu_us_per_request: ($ms * 1000 / ([.requests, 1] | max))} + $rss' "$out.tmp" > "$out"
  rm -f "$out.tmp"
}
rotated() { # i: IMPLS rotated by i (run 1: ours first), so that each server takes each slot
  local n=${#IMPLS[@]} k
  for k in $(seq 0 $(( n - 1 ))); do echo -n "${IMPLS[$(( (k + $1 - 1) % n ))]} "; done
}

echo "== starting the clusters: ${IMPLS[*]}"
start_clusters initial

# ---- loads
ALL_SCENARIOS=(
  "get-keepalive|get|1"
  "get-new-connection|get|0"
  "put-fresh|put-fresh|1"
  "put-versions|put-versions|1"
  "mix-90-10|mix|1"
  "encrypt|encrypt|1"
)
scenarios=()
for s in "${ALL_SCENARIOS[@]}"; do
  if [ -z "$only" ]; then scenarios+=("$s"); continue; fi
  o=",$only,"
  case "${o//,put,/,put-versions,}" in *",${s%%|*},"*) scenarios+=("$s") ;; esac
done
[ "${#scenarios[@]}" -gt 0 ] || die "--only $only names no scenario"
if [ "$skip_load" = 0 ]; then
  echo "== populating $secrets secrets in each Nexus"
  for impl in "${IMPLS[@]}"; do
    drive "${CLIENTS[0]}" "$impl" get 1 "$secrets" 1 1 "$OUT/populate-$impl.json"
  done
  for s in "${scenarios[@]}"; do
    IFS='|' read -r name wl ka <<<"$s"
    for i in $(seq 1 "$runs"); do
      for cl in "${CLIENTS[@]}"; do
        [ "$wl" = encrypt ] && [ "$cl" = go ] && continue
        for impl in $(rotated "$i"); do
          echo "-- $name run $i: $cl client -> $(label "$impl") (load $(cut -d' ' -f1 /proc/loadavg))"
          drive "$cl" "$impl" "$wl" "$ka" "$secrets" "$duration" 0 "$OUT/runs/$name.$cl.$impl.$i.json"
          jq --arg n "$name" --argjson i "$i" '. + {scenario: $n, run: $i}' \
            "$OUT/runs/$name.$cl.$impl.$i.json" > "$T/run.json" && mv "$T/run.json" "$OUT/runs/$name.$cl.$impl.$i.json"
        done
      done
    done
  done
fi

if [ "$count_syncs" = 1 ] && [ "$skip_load" = 0 ]; then
  echo "== fsync/fdatasync calls during a put-versions run"
  for impl in "${IMPLS[@]}"; do
    pid=${NEXUS_PID[$impl]}
    # system-wide recording, counted by process id (threads started later are included)
    perf record -q -a -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync \
      -o "$T/syncs-$impl.data" -- sleep $(( duration + 1 )) 2>/dev/null &
    perf_pid=$!
    drive "${CLIENTS[0]}" "$impl" put-versions 1 "$secrets" "$duration" 0 "$OUT/syncs-put-$impl.json"
    wait "$perf_pid" || true
    syncs=$(perf script -i "$T/syncs-$impl.data" -F pid 2>/dev/null | awk -v p="$pid" '$1 == p' | wc -l)
    jq --argjson s "$syncs" '. + {syncs: $s}' "$OUT/syncs-put-$impl.json" > "$T/s.json" \
      && mv "$T/s.json" "$OUT/syncs-put-$impl.json"
    echo "$(label "$impl"): $(jq .requests "$OUT/syncs-put-$impl.json") puts, $syncs fsync+fdatasync calls"
  done
fi

echo "== restart to ready ($restarts restarts each)"
for impl in "${IMPLS[@]}"; do put_ok "${PORT[$impl]}" || die "could not write the probe secret"; done
: > "$OUT/restart.txt"
for i in $(seq 1 "$restarts"); do
  for impl in $(rotated "$i"); do
    stop_pid "${NEXUS_PID[$impl]}"
    t0=$(now_ms); start_nexus "$impl"
    if [ "$impl" = rs ]; then
      t1="" t2=""
      # one loop for both probes, so that the get time is not delayed by the health phase
      while [ -z "$t2" ]; do
        if [ -z "$t1" ] && health_ok; then t1=$(now_ms); fi
        if get_ok "${PORT[rs]}"; then t2=$(now_ms); [ -n "$t1" ] || t1=$t2; fi
        [ $(( $(now_ms) - t0 )) -lt 120000 ] || die "our Nexus did not come back"
        sleep 0.01
      done
      echo "rs $i health_ms $(( t1 - t0 )) get_ms $(( t2 - t0 ))" | tee -a "$OUT/restart.txt"
    else
      wait_for 300 get_ok "${PORT[$impl]}" || die "$(label "$impl") Nexus did not come back"
      echo "$impl $i get_ms $(( $(now_ms) - t0 ))" | tee -a "$OUT/restart.txt"
    fi
  done
done

if [ "$with_100k" = 1 ]; then
  echo "== $scale_secrets secrets, $scale_runs fresh clusters (cap ${populate_cap}s per populate)"
  mkdir -p "$OUT/scale"
  for r in $(seq 1 "$scale_runs"); do
    for impl in "${IMPLS[@]}"; do stop_cluster "$impl"; done
    start_clusters "scale$r"
    for impl in $(rotated "$r"); do
      out="$OUT/scale/$impl.$r.json"
      t0=$(now_ms)
      # the client writes the secrets, then runs a 1 s get (not counted); capped as a whole
      if DRIVE_TIMEOUT=$populate_cap drive "${CLIENTS[0]}" "$impl" get 1 "$scale_secrets" 1 1 "$out.populate"; then
        took=$(jq --argjson ms $(( $(now_ms) - t0 )) '$ms - .elapsed_secs * 1000 | floor' "$out.populate")
        drive "${CLIENTS[0]}" "$impl" get 1 "$scale_secrets" "$duration" 0 "$out"
        jq --argjson ms "$took" --argjson r "$r" '. + {populate_ms: $ms, complete: true, round: $r}' "$out" > "$T/s.json"
      else
        jq -n --argjson rss "$(rss_json "${NEXUS_PID[$impl]}")" --arg s "$(label "$impl")" \
          --argjson ms $(( $(now_ms) - t0 )) --argjson r "$r" --argjson n "$scale_secrets" \
          '{server: $s, secrets: $n, populate_ms: $ms, complete: false, round: $r} + $rss' > "$T/s.json"
      fi
      mv "$T/s.json" "$out"
      # where the memory goes (ours: spike-bench rss; /proc/PID/smaps by mapping)
      [ "$impl" != rs ] || "$BENCH" rss --pid "${NEXUS_PID[$impl]}" > "$OUT/scale/rs.$r.smaps" 2>/dev/null || true
      echo "$(label "$impl") round $r: $(jq -c '{populate_ms, complete, server_rss_kib, rss_anon_kib, rss_file_kib}' "$out")"
    done
  done
fi

# ---- summaries: results.tsv (one line per run), summary.json, summary.md
{
  printf 'scenario\tclient\tserver\trun\treq_per_s\tp50_us\tp99_us\tp999_us\terrors\tserver_cpu_us_per_req\tvmrss_kib\trss_anon_kib\trss_file_kib\n'
  if compgen -G "$OUT/runs/*.json" >/dev/null; then
    jq -s -r 'sort_by(.scenario, .client, .server, .run)[] | [.scenario, .client, .server, .run,
      (.throughput_rps | floor), .latency.p50_us, .latency.p99_us, .latency.p999_us, .errors,
      (.server_cpu_us_per_request | floor), .server_rss_kib, .rss_anon_kib, .rss_file_kib] | @tsv' \
      "$OUT"/runs/*.json
  fi
} > "$OUT/results.tsv"

order_json=$(printf '%s\n' "${scenarios[@]}" | cut -d'|' -f1 | jq -R . | jq -s -c .)
restart_json=$(awk '{printf "{\"server\":\"%s\",\"run\":%s", $1, $2; for (i = 3; i < NF; i += 2) printf ",\"%s\":%s", $i, $(i+1); print "}"}' \
  "$OUT/restart.txt" | jq -s -c 'map(.server |= ({rs: "ours", gdef: "spike-default", gdur: "spike-durable"}[.]))')
jsons() { find "$1" -maxdepth 1 -name "$2" -exec cat {} + 2>/dev/null || true; }   # dir, pattern
jq -n --argjson order "$order_json" --slurpfile loads <(jsons "$OUT/runs" '*.json') \
  --slurpfile idle <(jsons "$OUT" 'idle-*.json') --slurpfile scale <(jsons "$OUT/scale" '*.json') \
  --slurpfile syncs <(jsons "$OUT" 'syncs-put-*.json') --argjson restarts "$restart_json" \
  --arg machine "$(cat "$OUT/machine.txt")" '
  def stat(f): [.[] | f | select(. != null)] | sort
    | if length == 0 then null else {median: .[(length - 1) / 2 | floor], min: .[0], max: .[-1], runs: .} end;
  {
    machine: $machine,
    loads: [$loads | group_by(.scenario, .client, .server)[] | {
      scenario: .[0].scenario, client: .[0].client, server: .[0].server, runs: length,
      errors: (map(.errors) | add), first_error: (map(.first_error | select(. != null)) | first),
      req_per_s: stat(.throughput_rps), p50_us: stat(.latency.p50_us), p99_us: stat(.latency.p99_us),
      p999_us: stat(.latency.p999_us), server_cpu_us_per_request: stat(.server_cpu_us_per_request),
      vmrss_kib: stat(.server_rss_kib), rss_anon_kib: stat(.rss_anon_kib), rss_file_kib: stat(.rss_file_kib)
    }] | sort_by((.scenario as $s | $order | index($s)), .client != "rust", .server),
    idle_rss: [$idle | group_by(.server)[] | {server: .[0].server, fresh_starts: length,
      vmrss_kib: stat(.server_rss_kib), rss_anon_kib: stat(.rss_anon_kib), rss_file_kib: stat(.rss_file_kib)}],
    restart_ms: [$restarts | group_by(.server)[] | {server: .[0].server, restarts: length,
      health_ms: stat(.health_ms), get_ms: stat(.get_ms)}],
    scale: [$scale | group_by(.server)[] | {server: .[0].server, rounds: length,
      secrets: (map(.secrets | select(. != null)) | first), complete: (map(.complete) | all),
      populate_ms: stat(.populate_ms), vmrss_kib: stat(.server_rss_kib),
      rss_anon_kib: stat(.rss_anon_kib), rss_file_kib: stat(.rss_file_kib)}],
    syncs: [$syncs[] | {server, puts: .requests, syncs, per_put: (.syncs / ([.requests, 1] | max))}]
  }' > "$OUT/summary.json"

jq -r '
  def r(n): if . == null then "–" else (. * pow(10; n) | round) / pow(10; n) | tostring end;
  def ms: if . == null then null else . / 1000 end;
  def mib: if . == null then null else . / 1024 end;
  def spread(f; n): if . == null then "–" else "\(.median | f | r(n)) (\(.min | f | r(n))–\(.max | f | r(n)))" end;
  def id: .;
  def ratio(a; b): if a == null or b == null or b == 0 then "–" else "\(a / b | r(2))×" end;
  (if (.loads | length) > 0 then
  "## Loads (median (min–max) of each run)\n",
  "| Scenario | client | server | req/s | p50 ms | p99 ms | p99.9 ms | Nexus CPU µs/req | RssAnon MiB | RssFile MiB | errors |",
  "|---|---|---|---|---|---|---|---|---|---|---|",
  (.loads[] | "| \(.scenario) | \(.client) | \(.server) | \(.req_per_s | spread(id; 0)) | \(.p50_us | spread(ms; 2)) | \(.p99_us | spread(ms; 2)) | \(.p999_us | spread(ms; 2)) | \(.server_cpu_us_per_request | spread(id; 0)) | \(.rss_anon_kib | spread(mib; 1)) | \(.rss_file_kib | spread(mib; 1)) | \(.errors) |"),
  "",
  "## Ratios, ours / SPIKE (medians; req/s > 1 and p99, CPU < 1 favour ours)\n",
  "| Scenario | client | vs | req/s | p99 | Nexus CPU/req |",
  "|---|---|---|---|---|---|",
  (.loads | group_by(.scenario, .client) | sort_by((.[0].scenario as $s | $order | index($s)), .[0].client != "rust") | .[]
    | (map(select(.server == "ours")) | first) as $o
    | .[] | select(.server != "ours" and $o != null)
    | "| \(.scenario) | \(.client) | \(.server) | \(ratio($o.req_per_s.median; .req_per_s.median)) | \(ratio($o.p99_us.median; .p99_us.median)) | \(ratio($o.server_cpu_us_per_request.median; .server_cpu_us_per_request.median)) |"),
  ""
  else empty end),
  "## Idle RSS right after bootstrap (median (min–max) over fresh starts)\n",
  "| server | fresh starts | VmRSS MiB | RssAnon MiB | RssFile MiB |",
  "|---|---|---|---|---|",
  (.idle_rss[] | "| \(.server) | \(.fresh_starts) | \(.vmrss_kib | spread(mib; 1)) | \(.rss_anon_kib | spread(mib; 1)) | \(.rss_file_kib | spread(mib; 1)) |"),
  "",
  "## Restart to ready (process start -> first 200; median (min–max))\n",
  "| server | restarts | health 200 ms | first secret get ms |",
  "|---|---|---|---|",
  (.restart_ms[] | "| \(.server) | \(.restarts) | \(.health_ms | spread(id; 0)) | \(.get_ms | spread(id; 0)) |"),
  (if (.scale | length) > 0 then
    "", "## Scale: fresh cluster, secrets populated through the API, then a get load (median (min–max) over rounds)\n",
    "| server | rounds | secrets | all complete | populate s | VmRSS MiB | RssAnon MiB | RssFile MiB |",
    "|---|---|---|---|---|---|---|---|",
    (.scale[] | "| \(.server) | \(.rounds) | \(.secrets // "–") | \(.complete) | \(.populate_ms | spread(ms; 1)) | \(.vmrss_kib | spread(mib; 1)) | \(.rss_anon_kib | spread(mib; 1)) | \(.rss_file_kib | spread(mib; 1)) |")
  else empty end),
  (if (.syncs | length) > 0 then
    "", "## fsync + fdatasync calls during a put-versions run\n",
    "| server | puts | syncs | per put |", "|---|---|---|---|",
    (.syncs[] | "| \(.server) | \(.puts) | \(.syncs) | \(.per_put | r(2)) |")
  else empty end),
  "", "## Machine\n", "```", .machine, "```"
' --argjson order "$order_json" "$OUT/summary.json" > "$OUT/summary.md"

echo
echo "== summary ($OUT/summary.md; machine-readable: summary.json, results.tsv)"
cat "$OUT/summary.md"
