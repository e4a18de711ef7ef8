#!/usr/bin/env bash
# Run every test of the project: formatting, lints, docs, dependency policy, unit and
# integration tests, the Go-vector cross checks and the real-SPIRE mutual-TLS test.
#
# Usage: scripts/test.sh            (from anywhere; builds SPIRE into the cache when missing)
# Env:   SPIKE_CACHE_DIR            cache for SPIRE binaries and tools (default ~/.cache/spike-rs)
#        SPIKE_TEST_SKIP_DENY=1     skip cargo-deny (it is installed into ~/.cargo/bin when missing)
#        SPIKE_TEST_SKIP_APPLIANCE=1  skip the nspawn appliance scenarios (they need root)
#        SPIKE_TEST_ABUSE=0         skip the abuse smoke (spike-bench abuse --smoke)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
t0=$SECONDS

step "toolchain: $(cargo --version)"
# Machines differ in their free disk: a full run from a clean clone takes about 8 GB under
# target/ (debug, release and doc builds; measured) plus the machine roots under /var/tmp and
# the caches. Say so up front instead of failing later with "No space left on device" in the
# middle of a compile.
free_gb=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
if ((free_gb < 12)); then
  echo "warning: only ${free_gb} GB free here; a full run needs about 12 GB (target/, /var/tmp, caches)" >&2
fi
command -v go >/dev/null || { echo "Go is required for the SPIRE build and the Go vector cross-check" >&2; exit 1; }

step "SPIRE binaries (built from the Go module proxy when missing)"
spire_t0=$SECONDS
SPIKE_SPIRE_BIN="$(scripts/build-spire.sh)"
export SPIKE_SPIRE_BIN
export SPIKE_REQUIRE_SPIRE=1
# The Go SDK compatibility program must build and pass (SPIKE's Go CLI is optional: the Go
# module proxy does not serve it; see compat/README.md).
export SPIKE_REQUIRE_GO_COMPAT=1
echo "SPIRE ready in $((SECONDS - spire_t0)) s: $SPIKE_SPIRE_BIN" >&2

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

if [[ "${SPIKE_TEST_SKIP_DENY:-0}" != 1 ]]; then
  step "cargo deny check bans licenses sources"
  if ! command -v cargo-deny >/dev/null; then
    echo "installing cargo-deny 0.20.2 (once)" >&2
    cargo install --locked cargo-deny@0.20.2
  fi
  # Advisories need the RustSec database from GitHub, which is not reachable from CI
  # machines here; run `cargo deny check advisories` where it is (see CONTRIBUTING.md).
  cargo deny --log-level error check bans licenses sources
fi

step "cargo test (workspace, including real SPIRE and the Go SDK compatibility run)"
cargo test --workspace --locked

# The abuse smoke (docs/benchmarks.md#holding-under-attack-spike-bench-abuse): idle TCP,
# slow handshakes, slow bodies, a no-policy mTLS flood, a health-socket flood and 4 MiB bodies
# against a spike-nexus child process, each while a superuser get must succeed within 1 s
# (about 60 s). SPIKE_TEST_ABUSE=0 skips it.
if [[ "${SPIKE_TEST_ABUSE:-1}" == 1 ]]; then
  step "abuse smoke (spike-bench abuse --smoke)"
  # The release build: what ships, and what the scenarios below build anyway.
  cargo build --release --locked -p spike-nexus -p spike-bench
  "${CARGO_TARGET_DIR:-target}/release/spike-bench" abuse --smoke \
    --nexus-bin "${CARGO_TARGET_DIR:-target}/release/spike-nexus"
else
  echo "abuse smoke skipped (SPIKE_TEST_ABUSE=0)" >&2
fi

step "Nix: every .nix file parses; pure Nix tests (scripts/check-nix.sh)"
scripts/check-nix.sh

if [[ "${SPIKE_TEST_SKIP_APPLIANCE:-0}" == 1 ]]; then
  echo "appliance scenarios skipped (SPIKE_TEST_SKIP_APPLIANCE=1)" >&2
elif [[ $(id -u) -ne 0 ]]; then
  echo "the appliance scenarios need root (systemd-nspawn); rerun as root or set SPIKE_TEST_SKIP_APPLIANCE=1" >&2
  exit 1
else
  step "appliance scenarios: real SPIRE and systemd in nspawn machines (vm-tests/run)"
  vm-tests/run
  # Hosts differ in their cgroup layout (v1, hybrid, v2), and nspawn gives its machines the
  # host's. A hybrid host can give them the other two as well: run the scenarios that kill,
  # stop and restart units under those too, so that a call that depends on the layout fails
  # here and not on the next machine.
  if [[ "$(stat -fc %T /sys/fs/cgroup)" == tmpfs && "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" == cgroup2fs ]]; then
    for unified in 0 1; do
      step "scenarios with the machines on cgroup $([[ $unified == 1 ]] && echo v2 || echo v1) (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=$unified)"
      SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=$unified vm-tests/run restarts power_cut
    done
  fi
  step "the README's appliance command, power cut and host-side restore (vm-tests/appliance-test)"
  vm-tests/appliance-test
fi

echo >&2
echo "all tests passed in $((SECONDS - t0)) s" >&2
