# NixOS VM test running vm-tests/scenarios/multi_host.py: keepers on separate hosts.
#
#   server    SPIRE server and agent, Nexus, Bootstrap, the `spike` CLI
#   keeper1   SPIRE agent + keeper 1 (shard 1)      keeper2, keeper3 likewise
#
# The keeper hosts are keeper-host.nix (the scenario joins each one's SPIRE agent itself). They
# are reached by name on the test network, at 8440 + N (the script's `# vm-test:` addresses are
# the nspawn bridge's).
{ lib, ... }:
let
  trustDomain = "spike.internal";
  keepers = [
    1
    2
    3
  ];
  host = i: "keeper${toString i}";
  port = i: 8440 + i;

  keeperNode =
    i:
    import ./keeper-host.nix {
      inherit trustDomain;
      keeperId = i;
      serverAddress = "server";
    };
in
{
  name = "spike-multi-host";

  defaults.imports = [ ../nixos-modules ];

  nodes = {
    server =
      { ... }:
      {
        services.spike = {
          inherit trustDomain;
          # The keepers' identities are registered by the scenario, under each keeper's node.
          spire.enable = true;
          keeperPeers = map (i: "https://${host i}:${toString (port i)}") keepers;
          shamir.threshold = 2;
          nexus = {
            enable = true;
            openFirewall = true;
            # Nexus and Bootstrap dial the keepers on the test network (vlan 1).
            ipAddressAllow = [ "192.168.1.0/24" ];
          };
          bootstrap.ipAddressAllow = [ "192.168.1.0/24" ];
        };
        services.spire.server = {
          openFirewall = true;
          settings.server.bind_address = "0.0.0.0";
        };
        virtualisation = {
          memorySize = 2048;
          cores = 2;
        };
      };
  }
  // lib.listToAttrs (map (i: lib.nameValuePair (host i) (keeperNode i)) keepers);

  inherit (import ./scenario-script.nix "multi_host") testScript;

  # See scenario.nix.
  skipTypeCheck = true;
  skipLint = true;
}
