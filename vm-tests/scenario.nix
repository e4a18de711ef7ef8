# A NixOS VM test that runs vm-tests/scenarios/<name>.py, the same script the nspawn runner
# (vm-tests/run) executes. The machines come from the script's first line,
#   # vm-test: {"nodes": {"machine": {"keepers": 3, "threshold": 2}}}
# each one a single-host appliance (appliance-node.nix). A node's "install" arguments (those the
# nspawn runner passes to scripts/install.sh) may set `--shard-sealing MODE` and
# `--shard-sealing-pcrs 7+11`, which become services.spike.keepers.shardSealing{,Pcrs}, and
# `"tpm": true` gives it a TPM2 (tpm-node.nix). Scenarios with hosts of several roles
# (`--role server|keeper`) have a .nix of their own (multi_host.nix, sealing_hosts.nix).
# Used by <name>.nix beside this file.
name:
{ lib, ... }:
let
  spikeLib = import ../nix/lib.nix;
  inherit (import ./scenario-script.nix name) spec testScript;
in
{
  name = "spike-${lib.replaceStrings [ "_" ] [ "-" ] name}";

  defaults.imports = [ ../nixos-modules ];

  nodes = lib.mapAttrs (
    _: node:
    assert lib.assertMsg (
      spikeLib.installArg "--role" "all" (node.install or [ ]) == "all"
    ) "vm-tests/scenario.nix: scenario ${name} has hosts with a --role; give it a .nix like multi_host.nix";
    import ./appliance-node.nix {
      keepers = node.keepers or 3;
      threshold = node.threshold or 2;
      shardSealing = spikeLib.installArg "--shard-sealing" "off" (node.install or [ ]);
      shardSealingPcrs = spikeLib.parsePcrs (
        spikeLib.installArg "--shard-sealing-pcrs" "" (node.install or [ ])
      );
      tpm = node.tpm or false;
    }
  ) spec.nodes;

  inherit testScript;

  # The scripts are shared with vm-tests/driver (which is not typed like the NixOS driver) and
  # rebind `log` in the prelude: skip the NixOS driver's mypy and pyflakes passes.
  skipTypeCheck = true;
  skipLint = true;
}
