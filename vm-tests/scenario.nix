# A NixOS VM test that runs vm-tests/scenarios/<name>.py, the same script the nspawn runner
# (vm-tests/run) executes. The machines come from the script's first line,
#   # vm-test: {"nodes": {"machine": {"keepers": 3, "threshold": 2}}}
# each one a single-host appliance (appliance-node.nix). A node's "install" arguments (those the
# nspawn runner passes to scripts/install.sh) may set `--shard-sealing MODE` and
# `--shard-sealing-pcrs 7+11`, which become services.spike.keepers.shardSealing{,Pcrs}.
# Used by <name>.nix beside this file.
name:
{ lib, ... }:
let
  spikeLib = import ../nix/lib.nix;
  script = builtins.readFile (./scenarios + "/${name}.py");
  firstLine = builtins.head (lib.splitString "\n" script);
  spec =
    if lib.hasPrefix "# vm-test:" firstLine then
      builtins.fromJSON (lib.removePrefix "# vm-test:" firstLine)
    else
      {
        nodes.machine = { };
      };
in
{
  name = "spike-${lib.replaceStrings [ "_" ] [ "-" ] name}";

  defaults.imports = [ ../nixos-modules ];

  nodes = lib.mapAttrs (
    _: node:
    import ./appliance-node.nix {
      keepers = node.keepers or 3;
      threshold = node.threshold or 2;
      shardSealing = spikeLib.installArg "--shard-sealing" "off" (node.install or [ ]);
      shardSealingPcrs = spikeLib.parsePcrs (
        spikeLib.installArg "--shard-sealing-pcrs" "" (node.install or [ ])
      );
    }
  ) spec.nodes;

  # The runbook's commands come from docs/operations.md itself (vm-tests/driver/runbook.py).
  testScript =
    import ./prelude.nix
    + builtins.readFile ./driver/runbook.py
    + "\nrunbook = loader(${
      builtins.toJSON (builtins.readFile ../docs/operations.md + builtins.readFile ../docs/compatibility.md)
    })\n\n"
    + script;

  # The scripts are shared with vm-tests/driver (which is not typed like the NixOS driver) and
  # rebind `log` in the prelude: skip the NixOS driver's mypy and pyflakes passes.
  skipTypeCheck = true;
  skipLint = true;
}
