# vm-tests/scenarios/<name>.py as a NixOS VM test needs it, shared by scenario.nix and the
# multi-host tests (multi_host.nix, sealing_hosts.nix):
#   spec        the script's first line, `# vm-test: {"nodes": {...}}`, parsed (the machines the
#               nspawn runner creates; one single-host appliance `machine` without it);
#   testScript  the script behind the prelude and the runbook's loader, as the nspawn runner
#               runs it: the runbook's commands come from docs/operations.md itself
#               (vm-tests/driver/runbook.py).
name:
let
  lines = builtins.filter builtins.isString (builtins.split "\n" script);
  script = builtins.readFile (./scenarios + "/${name}.py");
  firstLine = builtins.head lines;
  marker = "# vm-test:";
  hasSpec = builtins.substring 0 (builtins.stringLength marker) firstLine == marker;
in
{
  spec =
    if hasSpec then
      builtins.fromJSON (
        builtins.substring (builtins.stringLength marker) (builtins.stringLength firstLine) firstLine
      )
    else
      {
        nodes.machine = { };
      };

  testScript =
    import ./prelude.nix
    + builtins.readFile ./driver/runbook.py
    + builtins.readFile ./driver/hosts.py
    + "\nrunbook = loader(${
      builtins.toJSON (builtins.readFile ../docs/operations.md + builtins.readFile ../docs/compatibility.md)
    })\n\n"
    + script;
}
