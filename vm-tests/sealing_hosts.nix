# NixOS VM test running vm-tests/scenarios/sealing_hosts.py: shard sealing across hosts. The
# machines are those of the script's `# vm-test:` line, each with the role its install
# arguments give it (scripts/install.sh --role), as the nspawn runner installs them:
#
#   server    --role server: SPIRE server and agent, Nexus, Bootstrap, the `spike` CLI; its
#             keepers are --keeper-peers, and Nexus and Bootstrap may dial --allow-net
#   keeperN   --role keeper --keeper-id N: keeper-host.nix, keeper N on :8443 (install.sh's
#             port for a keeper host) sealing with --shard-sealing, a TPM2 with "tpm": true
#   thief     a keeper host for keeper 1 (host+tpm2, a TPM2) that the scenario never joins
#             to SPIRE: the machine a copy of keeper 1's state directory is taken to
#
# Every node is on the test network (vlan 1, the nspawn run's bridge) with its "address" as
# well as the test driver's 192.168.1.N, so --keeper-peers and --server-address work as given.
{ lib, ... }:
let
  spikeLib = import ../nix/lib.nix;
  name = "sealing_hosts";
  inherit (import ./scenario-script.nix name) spec testScript;
  trustDomain = "spike.internal";
  # install.sh --role keeper: keeper N listens on 0.0.0.0:8443, whatever N.
  keeperHostPort = 8443;

  arg =
    node: flag: default:
    spikeLib.installArg flag default (node.install or [ ]);
  nonEmpty = s: lib.optional (s != "") s;

  serverNode = node: {
    services.spike = {
      inherit trustDomain;
      # The keepers' identities are registered by the scenario, under each keeper's node.
      spire.enable = true;
      keeperPeers = lib.concatMap (lib.splitString ",") (nonEmpty (arg node "--keeper-peers" ""));
      shamir.threshold = node.threshold or 2;
      nexus = {
        enable = true;
        openFirewall = true;
        ipAddressAllow = nonEmpty (arg node "--allow-net" "");
      };
      bootstrap.ipAddressAllow = nonEmpty (arg node "--allow-net" "");
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

  keeperNode =
    node:
    import ./keeper-host.nix {
      inherit trustDomain;
      keeperId = lib.toInt (arg node "--keeper-id" "1");
      serverAddress = arg node "--server-address" "server";
      port = keeperHostPort;
      shardSealing = arg node "--shard-sealing" "off";
      shardSealingPcrs = spikeLib.parsePcrs (arg node "--shard-sealing-pcrs" "");
      tpm = node.tpm or false;
    };

  # "10.78.0.11/24" on eth1, the interface on vlan 1.
  addressOn =
    cidr:
    let
      parts = lib.splitString "/" cidr;
    in
    {
      networking.interfaces.eth1.ipv4.addresses = [
        {
          address = builtins.head parts;
          prefixLength = lib.toInt (builtins.elemAt parts 1);
        }
      ];
    };

  nodeFor =
    nodeName: node:
    let
      role = arg node "--role" "all";
    in
    { pkgs, ... }:
    {
      imports = [
        (
          if role == "server" then
            serverNode node
          else if role == "keeper" then
            keeperNode node
          else
            throw "vm-tests/sealing_hosts.nix: node ${nodeName} has --role ${role}; only server and keeper hosts are supported here"
        )
      ]
      ++ lib.optional (node ? address) (addressOn node.address);
      # The scenario looks for the shards in every file with perl.
      environment.systemPackages = [ pkgs.perl ];
    };
in
{
  name = "spike-sealing-hosts";

  defaults.imports = [ ../nixos-modules ];

  nodes = lib.mapAttrs nodeFor spec.nodes;

  inherit testScript;

  # See scenario.nix.
  skipTypeCheck = true;
  skipLint = true;
}
