#!/usr/bin/env bash
# Check the Nix code where there is no Nix store, nixpkgs or KVM (CI, these machines):
#   1. every .nix file parses (nix-instantiate --parse);
#   2. nix/lib.nix's pure helpers give the expected values (nix/lib-tests.nix);
#   3. optional: with SPIKE_NIXPKGS_LIB pointing at a checkout of nixpkgs or nixpkgs.lib (a
#      directory holding lib/), the NixOS modules and the VM tests' nodes are evaluated under
#      lib.evalModules and checked (nix/module-tests.nix), and the stand-in for NixOS in
#      nix/eval-modules.nix must reject what nixpkgs' types reject, with the module system's
#      message (nix/eval-strictness-tests.nix).
# A full nixosSystem and the VM test drivers against a nixpkgs checkout: scripts/eval-nixos.sh
# (needs a Nix store; not run here).
# `nix build` and `nix flake check` (the package, clippy, fmt, the VM tests) need real Nix.
#
# Installs Debian's nix-bin when nix-instantiate is missing (needs root and apt).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
say() { echo "check-nix: $*" >&2; }

if ! command -v nix-instantiate >/dev/null; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    say "nix-instantiate is missing; install nix-bin (apt-get install nix-bin) or Nix"
    exit 1
  fi
  say "installing nix-bin"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin >/dev/null; }
fi

# Evaluation only: nothing here may build, fetch or write to a store.
export NIX_PATH=""
nix_eval() { nix-instantiate --eval --strict --readonly-mode "$@"; }

failed=0
mapfile -d '' files < <(git ls-files -z --cached --others --exclude-standard -- '*.nix' 2>/dev/null \
  || find . -name '*.nix' -not -path './target/*' -print0)
((${#files[@]})) || { say "no .nix files found"; exit 1; }
for f in "${files[@]}"; do
  [[ -e "$f" ]] || continue
  if ! nix-instantiate --parse "$f" >/dev/null; then
    say "parse error: $f"
    failed=1
  fi
done
say "${#files[@]} .nix files checked with nix-instantiate --parse"
# scripts/eval-nixos.sh's expression is not in a .nix file.
scripts/eval-nixos.sh --parse || failed=1

# A test file evaluates to the list of failed cases; anything but [] is a failure.
run_tests() { # label, nix-instantiate args...
  local label="$1" out
  shift
  if ! out="$(nix_eval "$@" 2>&1)"; then
    say "$label: evaluation failed:"
    echo "$out" >&2
    failed=1
  elif [[ "$out" != "[ ]" ]]; then
    say "$label: failed cases (actual vs expected):"
    echo "$out" >&2
    failed=1
  else
    say "$label: all cases pass"
  fi
}
run_tests "nix/lib-tests.nix" nix/lib-tests.nix

# Each configuration named by `--argstr part names` must fail to evaluate
# (`--argstr part reject:NAME`), and its error must contain `message:NAME`.
run_rejects() { # label, nix-instantiate args...
  local label="$1" names name msg out n=0
  shift
  if ! names="$(nix_eval "$@" --argstr part names --json 2>&1)"; then
    say "$label: evaluation failed:"
    echo "$names" >&2
    failed=1
    return
  fi
  names="${names//[\[\]\",]/ }"
  for name in $names; do
    if ! msg="$(nix_eval "$@" --argstr part "message:$name" 2>&1)"; then
      say "$label: $name: no message:"
      echo "$msg" >&2
      failed=1
      continue
    fi
    msg="${msg#\"}"
    msg="${msg%\"}"
    msg="${msg//\\\"/\"}"
    if out="$(nix_eval "$@" --argstr part "reject:$name" 2>&1)"; then
      say "$label: $name evaluated; expected an error containing: $msg"
      failed=1
    elif [[ "$out" != *"$msg"* ]]; then
      say "$label: $name failed, but not with: $msg"
      echo "$out" >&2
      failed=1
    else
      n=$((n + 1))
    fi
  done
  say "$label: $n rejected configurations fail with the expected message"
}

if [[ -n "${SPIKE_NIXPKGS_LIB:-}" ]]; then
  libdir="$(cd "$SPIKE_NIXPKGS_LIB" && pwd)/lib"
  [[ -f "$libdir/default.nix" ]] || { say "SPIKE_NIXPKGS_LIB=$SPIKE_NIXPKGS_LIB has no lib/default.nix"; exit 1; }
  run_tests "nix/module-tests.nix" nix/module-tests.nix --arg lib "import $libdir"
  run_tests "nix/eval-strictness-tests.nix" nix/eval-strictness-tests.nix --arg lib "import $libdir"
  run_rejects "nix/eval-strictness-tests.nix" nix/eval-strictness-tests.nix --arg lib "import $libdir"
else
  say "SPIKE_NIXPKGS_LIB is not set: skipping the module evaluation (nix/module-tests.nix, nix/eval-strictness-tests.nix)"
fi

if ((failed)); then
  say "FAILED"
  exit 1
fi
say "OK"
