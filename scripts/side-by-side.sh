#!/usr/bin/env bash
# Side by side with SPIKE's Go Nexus (issue 7): one SPIRE server + agent, a Go cluster
# (keepers, Nexus on sqlite, bootstrap) and one of ours, the same spike-bench loads against
# each (alternating, medians of RUNS), the RSS of each Nexus, the restart-to-ready time, and
# optionally the RSS after 100k secrets. Prints a markdown table with the ratios ours/Go.
#
#   sudo SPIKE_GO_BIN_DIR=DIR scripts/side-by-side.sh [options]
#
#   --runs N            runs per scenario and implementation (default 3; median reported)
#   --duration S        seconds per load run (default 10)
#   --connections N     concurrent connections (default 16)
#   --secrets N         secrets the get/put loads address (default 1000)
#   --keepers N         keepers per cluster (default 3)
#   --threshold N       shards needed (default 2)
#   --restarts N        Nexus restarts to time (default 5)
#   --only LIST         only these load scenarios (comma-separated: get-keepalive,
#                       get-new-connection, put, mix-90-10, encrypt)
#   --skip-load         only start, restart and (with --with-100k) scale
#   --with-100k         also populate 100,000 secrets through the API and report RSS
#   --populate-cap S    give up populating after S seconds per Nexus (default 900)
#   --count-syncs       one more put run per Nexus under `perf stat`, counting its
#                       fsync/fdatasync calls (needs perf with syscall tracepoints)
#
# SPIKE_GO_BIN_DIR must hold SPIKE's Go binaries `nexus`, `keeper` and `bootstrap` (0.8.x).
# This script does not fetch or build them. To obtain them: `go install` from the Go module
# proxy when it serves github.com/spiffe/spike (e.g. GOBIN=DIR go install
# github.com/spiffe/spike/app/nexus/cmd@v0.8.x, then rename `cmd` to `nexus`; same for keeper
# and bootstrap; cgo and a C compiler are needed for mattn/go-sqlite3), or build
# `./app/{nexus,keeper,bootstrap}/cmd` from a checkout of github.com/spiffe/spike at v0.8.x.
#
# Also needed: root (every daemon runs under its own system user so that each gets exactly
# one SVID: SPIKE's Go processes take the first SVID the agent returns), setpriv, curl, jq,
# SPIRE binaries (SPIKE_SPIRE_BIN, default: what scripts/build-spire.sh prints), and our
# release binaries (RS_BIN_DIR; when unset, `cargo build --release` into target/release).
# Results: OUT (default target/side-by-side/<UTC time>): one JSON per load run, logs, and
# summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3 duration=10 connections=16 secrets=1000 keepers=3 threshold=2 restarts=5
only="" skip_load=0 with_100k=0 populate_cap=900 count_syncs=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift ;;
    --duration) duration=$2; shift ;;
    --connections) connections=$2; shift ;;
    --secrets) secrets=$2; shift ;;
    --keepers) keepers=$2; shift ;;
    --threshold) threshold=$2; shift ;;
    --restarts) restarts=$2; shift ;;
    --only) only=$2; shift ;;
    --skip-load) skip_load=1 ;;
    --with-100k) with_100k=1 ;;
    --populate-cap) populate_cap=$2; shift ;;
    --count-syncs) count_syncs=1 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 64 ;;
  esac
  shift
done

die() { echo "side-by-side: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (it creates system users and drops to them)"
for tool in setpriv curl jq useradd userdel; do
  command -v "$tool" >/dev/null || die "needs $tool"
done

GO_BIN=${SPIKE_GO_BIN_DIR:-}
if [ -z "$GO_BIN" ] || [ ! -x "$GO_BIN/nexus" ] || [ ! -x "$GO_BIN/keeper" ] || [ ! -x "$GO_BIN/bootstrap" ]; then
  cat >&2 <<'EOF'
side-by-side: set SPIKE_GO_BIN_DIR to a directory with SPIKE's Go binaries nexus, keeper and
bootstrap (v0.8.x). Obtain them with `go install` from the Go module proxy when it serves
github.com/spiffe/spike, or build them from a checkout of github.com/spiffe/spike at v0.8.x:
  go build -o DIR/nexus ./app/nexus/cmd   (likewise keeper and bootstrap; needs cgo + gcc)
EOF
  exit 1
fi
[ "$count_syncs" = 0 ] || command -v perf >/dev/null || die "--count-syncs needs perf"
SPIRE_BIN=${SPIKE_SPIRE_BIN:-$(scripts/build-spire.sh)}
[ -x "$SPIRE_BIN/spire-server" ] && [ -x "$SPIRE_BIN/spire-agent" ] || die "no SPIRE in $SPIRE_BIN"
RS_BIN=${RS_BIN_DIR:-target/release}
if [ -z "${RS_BIN_DIR:-}" ]; then
  cargo build --release -p spike-nexus -p spike-keeper -p spike-bootstrap -p spike-bench
fi
for b in spike-nexus spike-keeper spike-bootstrap spike-bench; do
  [ -x "$RS_BIN/$b" ] || die "missing $RS_BIN/$b"
done

OUT=${OUT:-target/side-by-side/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T=$(mktemp -d /tmp/spike-sbs.XXXXXX)
chmod 755 "$T"
TD=spike.ist
GO_PORT=18553 RS_PORT=28553 GO_KPORT=18440 RS_KPORT=28440

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
median() { # jq expression, files...
  local expr=$1; shift
  jq -s "[.[] | $expr] | sort | .[(length - 1) / 2 | floor]" "$@"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(grep -m1 MemTotal /proc/meminfo | awk '{print $2" kB"}')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "go nexus: $GO_BIN/nexus ($(sha256sum "$GO_BIN/nexus" | cut -c1-12))"
  echo "keepers: $keepers, threshold $threshold; runs $runs x ${duration}s, $connections connections"
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
for impl in go rs; do
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
register spike/pilot/role/superuser 0   # spike-bench and the readiness probe run as root
for impl in go rs; do
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
BENCH="$RS_BIN/spike-bench"

peers() { # base port
  local out="" i
  for i in $(seq 1 "$keepers"); do out+="${out:+,}https://127.0.0.1:$(( $1 + i ))"; done
  echo "$out"
}
GO_PEERS=$(peers $GO_KPORT)
RS_PEERS=$(peers $RS_KPORT)
for impl in go rs; do
  for r in "${roles[@]}"; do
    u="spikebench-$impl-$r"
    install -d -o "$u" -g "$u" -m 700 "$T/home-$u"
  done
done
install -d -o spikebench-go-nexus -g spikebench-go-nexus -m 700 "$T/go-nexus-data"
install -d -o spikebench-rs-nexus -g spikebench-rs-nexus -m 700 "$T/rs-nexus-data" "$T/rs-nexus-run"
install -d -o spikebench-rs-bootstrap -g spikebench-rs-bootstrap -m 700 "$T/rs-bootstrap-state"
cat > "$T/rs-nexus.toml" <<EOF
health_socket = "$T/rs-nexus-run/health.sock"
metrics_listen = ""
EOF
chmod 644 "$T/rs-nexus.toml"
SHAMIR=(SPIKE_NEXUS_SHAMIR_SHARES="$keepers" SPIKE_NEXUS_SHAMIR_THRESHOLD="$threshold")

start_keepers() { # impl
  local impl=$1 i port
  for i in $(seq 1 "$keepers"); do
    if [ "$impl" = go ]; then port=$(( GO_KPORT + i )); else port=$(( RS_KPORT + i )); fi
    ENV=(SPIKE_KEEPER_TLS_PORT="127.0.0.1:$port")
    if [ "$impl" = go ]; then
      run_as "spikebench-go-keeper$i" "$T/go-keeper$i.log" "$T/bin/keeper"
    else
      run_as "spikebench-rs-keeper$i" "$T/rs-keeper$i.log" "$T/bin/spike-keeper"
    fi
    pids+=("$LAST_PID")
  done
}
start_nexus() { # impl; sets GO_PID / RS_PID
  if [ "$1" = go ]; then
    ENV=(SPIKE_NEXUS_TLS_PORT="127.0.0.1:$GO_PORT" SPIKE_NEXUS_KEEPER_PEERS="$GO_PEERS"
      "${SHAMIR[@]}" SPIKE_NEXUS_BACKEND_STORE=sqlite SPIKE_NEXUS_DATA_DIR="$T/go-nexus-data")
    run_as spikebench-go-nexus "$T/go-nexus.log" "$T/bin/nexus"
    GO_PID=$LAST_PID
    pids+=("$GO_PID")
  else
    ENV=(SPIKE_NEXUS_TLS_PORT="127.0.0.1:$RS_PORT" SPIKE_NEXUS_KEEPER_PEERS="$RS_PEERS"
      "${SHAMIR[@]}" SPIKE_NEXUS_BACKEND_STORE=sqlite SPIKE_NEXUS_DATA_DIR="$T/rs-nexus-data")
    run_as spikebench-rs-nexus "$T/rs-nexus.log" "$T/bin/spike-nexus" --config "$T/rs-nexus.toml"
    RS_PID=$LAST_PID
    pids+=("$RS_PID")
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
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --unix-socket "$T/rs-nexus-run/health.sock" \
    http://localhost/v1/sys/health)" = 200 ]
}
wait_for() { # seconds, command...
  local limit=$(( $(now_ms) + $1 * 1000 )); shift
  until "$@"; do
    [ "$(now_ms)" -lt "$limit" ] || return 1
    sleep 0.01
  done
}

echo "== starting both clusters"
start_keepers go
start_keepers rs
sleep 0.5
start_nexus go
start_nexus rs
ENV=(SPIKE_NEXUS_API_URL="https://127.0.0.1:$GO_PORT" SPIKE_NEXUS_KEEPER_PEERS="$GO_PEERS"
  "${SHAMIR[@]}" SPIKE_NEXUS_BACKEND_STORE=sqlite)
run_as spikebench-go-bootstrap "$T/go-bootstrap.log" "$T/bin/bootstrap" -init
go_boot=$LAST_PID
ENV=(SPIKE_NEXUS_API_URL="https://127.0.0.1:$RS_PORT" SPIKE_NEXUS_KEEPER_PEERS="$RS_PEERS"
  "${SHAMIR[@]}" SPIKE_NEXUS_BACKEND_STORE=sqlite STATE_DIRECTORY="$T/rs-bootstrap-state")
run_as spikebench-rs-bootstrap "$T/rs-bootstrap.log" "$T/bin/spike-bootstrap" --init
rs_boot=$LAST_PID
wait_for 180 put_ok $GO_PORT || die "Go Nexus never accepted a put (logs in $OUT)"
echo "Go Nexus (pid $GO_PID) ready: secret put succeeds"
wait_for 180 health_ok || die "our Nexus never became healthy (logs in $OUT)"
wait_for 30 put_ok $RS_PORT || die "our Nexus never accepted a put (logs in $OUT)"
echo "our Nexus (pid $RS_PID) ready: health 200, secret put succeeds"
wait "$go_boot" || echo "warning: Go bootstrap exited non-zero" >&2
wait "$rs_boot" || echo "warning: our bootstrap exited non-zero" >&2
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
echo "idle RSS: ours $(rss_kib "$RS_PID") KiB, Go $(rss_kib "$GO_PID") KiB" | tee -a "$OUT/machine.txt"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime
bench() { # impl, out file, bench args...; adds server_cpu_ms (CPU time Nexus used in the run)
  local impl=$1 out=$2; shift 2
  local port=$RS_PORT pid=$RS_PID c0 c1
  if [ "$impl" = go ]; then port=$GO_PORT pid=$GO_PID; fi
  c0=$(cpu_ticks "$pid")
  SPIFFE_ENDPOINT_SOCKET="unix://$SOCK" "$BENCH" --url "https://127.0.0.1:$port" \
    --server-pid "$pid" --connections "$connections" --quiet --json "$@" > "$out.tmp"
  c1=$(cpu_ticks "$pid")
  jq --argjson ms "$(( (c1 - c0) * 1000 / $(getconf CLK_TCK) ))" '. + {server_cpu_ms: $ms}' \
    "$out.tmp" > "$out"
  rm -f "$out.tmp"
}

summary="$OUT/summary.md"
: > "$summary"
if [ "$skip_load" = 0 ]; then
  echo "== populating $secrets secrets in each Nexus"
  for impl in rs go; do
    bench "$impl" "$OUT/populate-$impl.json" --workload get --secrets "$secrets" --duration 1s
  done
  scenarios=(
    "get-keepalive|--workload get --keepalive"
    "get-new-connection|--workload get --no-keepalive"
    "put|--workload put"
    "mix-90-10|--workload mix"
    "encrypt|--workload encrypt"
  )
  if [ -n "$only" ]; then
    kept=()
    for s in "${scenarios[@]}"; do
      case ",$only," in *",${s%%|*},"*) kept+=("$s") ;; esac
    done
    [ "${#kept[@]}" -gt 0 ] || die "--only $only names no scenario"
    scenarios=("${kept[@]}")
  fi
  for s in "${scenarios[@]}"; do
    name=${s%%|*}
    read -r -a args <<<"${s#*|}"
    for i in $(seq 1 "$runs"); do
      order="rs go"
      [ $(( i % 2 )) = 0 ] && order="go rs"
      for impl in $order; do
        echo "-- $name run $i: $impl (load $(cut -d' ' -f1 /proc/loadavg))"
        bench "$impl" "$OUT/load-$name-$impl-$i.json" "${args[@]}" --no-populate \
          --secrets "$secrets" --duration "${duration}s"
      done
    done
  done
  {
    echo "| Scenario | ours req/s | Go req/s | ours/Go | ours p50 | Go p50 | ours p99 | Go p99 | p99 ours/Go | Nexus CPU per request ours / Go | ours RSS | Go RSS | errors ours/Go |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  } >> "$summary"
  for s in "${scenarios[@]}"; do
    name=${s%%|*}
    rs=("$OUT"/load-"$name"-rs-*.json) go=("$OUT"/load-"$name"-go-*.json)
    rs_rps=$(median .throughput_rps "${rs[@]}") go_rps=$(median .throughput_rps "${go[@]}")
    rs_p50=$(median .latency.p50_us "${rs[@]}") go_p50=$(median .latency.p50_us "${go[@]}")
    rs_p99=$(median .latency.p99_us "${rs[@]}") go_p99=$(median .latency.p99_us "${go[@]}")
    rs_rss=$(median '.server_rss_kib / 1024' "${rs[@]}") go_rss=$(median '.server_rss_kib / 1024' "${go[@]}")
    rs_err=$(jq -s 'map(.errors) | add' "${rs[@]}") go_err=$(jq -s 'map(.errors) | add' "${go[@]}")
    cpu='.server_cpu_ms * 1000 / ([.requests, 1] | max)'   # microseconds of Nexus CPU per request
    rs_cpu=$(median "$cpu" "${rs[@]}") go_cpu=$(median "$cpu" "${go[@]}")
    awk -v n="$name" -v a="$rs_rps" -v b="$go_rps" -v c="$rs_p50" -v d="$go_p50" -v e="$rs_p99" \
      -v f="$go_p99" -v g="$rs_rss" -v h="$go_rss" -v x="$rs_err" -v y="$go_err" \
      -v u="$rs_cpu" -v v="$go_cpu" 'BEGIN {
        printf "| %s | %.0f | %.0f | **%.2fx** | %.2f ms | %.2f ms | %.2f ms | %.2f ms | **%.2fx** | %.0f / %.0f µs (%.2fx) | %.1f MiB | %.1f MiB | %d / %d |\n",
          n, a, b, (b > 0 ? a / b : 0), c / 1000, d / 1000, e / 1000, f / 1000,
          (f > 0 ? e / f : 0), u, v, (v > 0 ? u / v : 0), g, h, x, y }' >> "$summary"
  done
  {
    echo
    echo "Per-run req/s (ours | Go):"
    for s in "${scenarios[@]}"; do
      name=${s%%|*}
      echo "- $name: $(jq -s -c 'map(.throughput_rps | floor)' "$OUT"/load-"$name"-rs-*.json) | $(jq -s -c 'map(.throughput_rps | floor)' "$OUT"/load-"$name"-go-*.json)"
    done
  } >> "$summary"
fi

if [ "$count_syncs" = 1 ] && [ "$skip_load" = 0 ]; then
  echo "== fsync/fdatasync calls during a put run"
  echo >> "$summary"
  for impl in rs go; do
    label=ours pid=$RS_PID
    if [ "$impl" = go ]; then label=Go pid=$GO_PID; fi
    # system-wide recording, counted by process id (threads started later are included)
    perf record -q -a -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync \
      -o "$T/syncs-$impl.data" -- sleep $(( duration + 1 )) 2>/dev/null &
    perf_pid=$!
    bench "$impl" "$OUT/syncs-put-$impl.json" --workload put --no-populate --secrets "$secrets" \
      --duration "${duration}s"
    wait "$perf_pid" || true
    syncs=$(perf script -i "$T/syncs-$impl.data" -F pid 2>/dev/null | awk -v p="$pid" '$1 == p' | wc -l)
    puts=$(jq .requests "$OUT/syncs-put-$impl.json")
    awk -v l="$label" -v s="$syncs" -v p="$puts" 'BEGIN {
      printf "- %s: %d puts, %d fsync+fdatasync calls (%.2f per put)\n", l, p, s, (p > 0 ? s / p : 0) }' \
      | tee -a "$summary"
  done
fi

echo "== restart to ready ($restarts restarts each)"
put_ok $RS_PORT && put_ok $GO_PORT || die "could not write the probe secret"
: > "$OUT/restart.txt"
for i in $(seq 1 "$restarts"); do
  for impl in rs go; do
    if [ "$impl" = rs ]; then
      stop_pid "$RS_PID"
      t0=$(now_ms); start_nexus rs
      t1="" t2=""
      # one loop for both probes, so that the get time is not delayed by the health phase
      while [ -z "$t2" ]; do
        if [ -z "$t1" ] && health_ok; then t1=$(now_ms); fi
        if get_ok $RS_PORT; then t2=$(now_ms); [ -n "$t1" ] || t1=$t2; fi
        [ $(( $(now_ms) - t0 )) -lt 120000 ] || die "our Nexus did not come back"
        sleep 0.01
      done
      echo "rs $i health_ms $(( t1 - t0 )) get_ms $(( t2 - t0 ))" | tee -a "$OUT/restart.txt"
    else
      stop_pid "$GO_PID"
      t0=$(now_ms); start_nexus go
      wait_for 300 get_ok $GO_PORT || die "Go Nexus did not come back"
      t2=$(now_ms)
      echo "go $i get_ms $(( t2 - t0 ))" | tee -a "$OUT/restart.txt"
    fi
  done
done
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
rs_h=$(awk '$1 == "rs" {print $4}' "$OUT/restart.txt" | med)
rs_g=$(awk '$1 == "rs" {print $6}' "$OUT/restart.txt" | med)
go_g=$(awk '$1 == "go" {print $4}' "$OUT/restart.txt" | med)
{
  echo
  echo "Restart to ready, $keepers keepers, threshold $threshold (process start -> ready; median of $restarts):"
  echo "- ours: health 200 after ${rs_h} ms, first secret get after ${rs_g} ms"
  echo "- Go: first secret get after ${go_g} ms"
  echo "- each: $(tr '\n' ';' < "$OUT/restart.txt")"
} >> "$summary"

if [ "$with_100k" = 1 ]; then
  echo "== 100k secrets in each Nexus (cap ${populate_cap}s each)"
  {
    echo
    echo "| 100k secrets | populate through the API | RSS after a 10 s get load |"
    echo "|---|---|---|"
  } >> "$summary"
  for impl in rs go; do
    label=ours pid=$RS_PID
    if [ "$impl" = go ]; then label=Go pid=$GO_PID; fi
    t0=$(now_ms)
    if timeout "$populate_cap" env SPIFFE_ENDPOINT_SOCKET="unix://$SOCK" "$BENCH" \
      --url "https://127.0.0.1:$([ "$impl" = go ] && echo $GO_PORT || echo $RS_PORT)" \
      --connections "$connections" --quiet --json --workload get --secrets 100000 \
      --duration 1s > "$OUT/populate100k-$impl.json"; then
      took="$(( ($(now_ms) - t0) / 1000 )) s"
      bench "$impl" "$OUT/scale100k-$impl.json" --workload get --no-populate --secrets 100000 \
        --duration "${duration}s"
      rss=$(jq '.server_rss_kib / 1024 * 10 | floor / 10' "$OUT/scale100k-$impl.json")
    else
      took="capped at ${populate_cap} s (incomplete)"
      rss="$(( $(rss_kib "$pid") / 1024 )) (at the cap)"
    fi
    echo "| $label | $took | $rss MiB |" | tee -a "$summary"
  done
fi

echo
echo "== summary ($OUT/summary.md)"
cat "$summary"
