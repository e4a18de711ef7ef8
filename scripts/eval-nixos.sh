#!/usr/bin/env bash
# Evaluate this repository's NixOS side against a real nixpkgs checkout, for anyone with Nix:
#
#   scripts/eval-nixos.sh /path/to/nixpkgs      (SPIKE_EVAL_SYSTEM=aarch64-linux for another system)
#   scripts/eval-nixos.sh --parse               (only parse the Nix expression used below)
#
# What it checks, one OK/FAIL line each; the exit status is 1 if any check fails:
#   - nixosSystem: nixpkgs/nixos/lib/eval-config.nix with nixos-modules/ imported and a minimal
#     host (services.spike with a trust domain, SPIRE, 5 keepers, Nexus; boot loader and root
#     file system stubs) instantiates `config.system.build.toplevel` (its .drv is written);
#   - for every VM test vm-tests/NAME.nix that has a vm-tests/scenarios/NAME.py (those
#     flake.nix turns into checks), built as flake.nix builds it (pkgs.testers.runNixOSTest,
#     the SPIKE package of nix/package.nix): each node's `system.build.toplevel` and the
#     test driver instantiate.
# Instantiating evaluates every NixOS option the modules set against nixpkgs' real
# declarations (the modules' assertions included), and writes derivations to the local store.
# It builds nothing: the SPIKE package, the VMs and the tests are not built or run (that is
# `nix build .#checks.<system>.vm-<name>`, which needs KVM), so a unit that would fail at boot
# is not caught here. It needs a Nix store (nix-instantiate writing .drv files) and no flakes.
#
# Not run in CI: CI machines have no Nix store and no full nixpkgs. CI runs
# scripts/check-nix.sh, which evaluates the modules under a stand-in for NixOS
# (nix/eval-modules.nix). Nothing from the nixpkgs checkout is copied into this repository.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
say() { echo "eval-nixos: $*" >&2; }

# `what` selects one check: "toplevel", "nodes:TEST" (the node names, to --eval),
# "node:TEST:NODE" or "driver:TEST".
# shellcheck disable=SC2016 # Nix, not shell
expr='
{ nixpkgsDir, repoDir, system, what }:
let
  pkgs = import nixpkgsDir {
    inherit system;
    config = { };
    overlays = [ ];
  };
  inherit (pkgs) lib;
  # As flake.nix builds it (packages.<system>.default).
  spike = pkgs.callPackage (repoDir + "/nix/package.nix") { buildId = "eval-nixos"; };

  host = import (nixpkgsDir + "/nixos/lib/eval-config.nix") {
    inherit system;
    modules = [
      (repoDir + "/nixos-modules")
      {
        # Stubs a real host has: enough to evaluate system.build.toplevel.
        boot.loader.grub.enable = false;
        fileSystems."/" = {
          device = "/dev/disk/by-label/nixos";
          fsType = "ext4";
        };
        system.stateVersion = lib.trivial.release;
        services.spike.package = spike;
      }
      # The README quick start: one box, 5 keepers, threshold 3.
      (import (repoDir + "/nix/quick-start.nix") { inherit lib; } { threshold = 3; })
    ];
  };

  # As flake.nix checks.<system>.vm-<name> builds it.
  vmTest =
    name:
    pkgs.testers.runNixOSTest {
      imports = [ (repoDir + "/vm-tests/${name}.nix") ];
      defaults.services.spike.package = spike;
    };

  parts = lib.splitString ":" what;
  kind = builtins.head parts;
  arg = builtins.elemAt parts;
in
if what == "toplevel" then
  host.config.system.build.toplevel
else if kind == "nodes" then
  builtins.attrNames (vmTest (arg 1)).config.nodes
else if kind == "node" then
  (vmTest (arg 1)).config.nodes.${arg 2}.system.build.toplevel
else if kind == "driver" then
  (vmTest (arg 1)).driver
else
  throw "eval-nixos: unknown check ${what}"
'

if [[ "${1:-}" == "--parse" ]]; then
  if nix-instantiate --parse --expr "$expr" >/dev/null; then
    say "the Nix expression parses"
    exit 0
  fi
  exit 1
fi

if [[ $# -ne 1 || ! -f "$1/nixos/lib/eval-config.nix" || ! -f "$1/default.nix" ]]; then
  say "usage: $0 /path/to/nixpkgs   (a full nixpkgs checkout: nixos/lib/eval-config.nix, default.nix)"
  exit 64
fi
command -v nix-instantiate >/dev/null || { say "nix-instantiate is missing: install Nix"; exit 1; }
nixpkgs="$(cd "$1" && pwd)"
system="${SPIKE_EVAL_SYSTEM:-$(nix-instantiate --eval --expr builtins.currentSystem | tr -d '"')}"
# Only the given checkout: no channel, no NIX_PATH entry, no flake registry.
export NIX_PATH="nixpkgs=$nixpkgs"
args=(--expr "$expr" --argstr nixpkgsDir "$nixpkgs" --argstr repoDir "$here" --argstr system "$system")
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT
failed=0
n=0

check() { # label, what
  local label="$1" what="$2" out
  n=$((n + 1))
  if out="$(nix-instantiate "${args[@]}" --argstr what "$what" 2>"$log/err")"; then
    echo "OK    $label  $out"
  else
    echo "FAIL  $label"
    sed 's/^/      /' "$log/err"
    failed=1
  fi
}

say "nixpkgs $nixpkgs ($(git -C "$nixpkgs" rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")), system $system"
check "nixosSystem: system.build.toplevel" toplevel

tests=0
for f in "$here"/vm-tests/*.nix; do
  name="$(basename "$f" .nix)"
  [[ -f "$here/vm-tests/scenarios/$name.py" ]] || continue # a helper, not a test
  tests=$((tests + 1))
  if ! nodes="$(nix-instantiate --eval --strict --json "${args[@]}" --argstr what "nodes:$name" 2>"$log/err")"; then
    n=$((n + 1))
    echo "FAIL  vm-tests/$name.nix: nodes"
    sed 's/^/      /' "$log/err"
    failed=1
    continue
  fi
  for node in ${nodes//[\[\]\",]/ }; do
    check "vm-tests/$name.nix: node $node: system.build.toplevel" "node:$name:$node"
  done
  check "vm-tests/$name.nix: driver" "driver:$name"
done
((tests)) || { say "no VM tests found under vm-tests/"; failed=1; }

if ((failed)); then
  say "FAILED ($n checks)"
  exit 1
fi
say "OK: $n checks ($tests VM tests)"
