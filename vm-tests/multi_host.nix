# NixOS VM test running vm-tests/scenarios/multi_host.py: keepers on separate hosts.
#
#   server    SPIRE server and agent, Nexus, Bootstrap, the `spike` CLI
#   keeper1   SPIRE agent + keeper 1 (shard 1)      keeper2, keeper3 likewise
#
# As in the nspawn run, the scenario joins each keeper host's agent itself: it generates a join
# token on the server (node spiffe://spike.internal/node/keeperN), registers keeper N under that
# node, and writes the token to /run/spire-agent-join/token and the server's bundle to
# /var/lib/spire-agent/bootstrap-bundle.pem on the keeper host, then restarts its agent. The
# keeper hosts' agents therefore use the appliance's paths.
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

  # Until the scenario hands it a token and a bundle, a keeper host's agent fails at start:
  # keep retrying instead of giving up at the start limit.
  patientAgent = pkgs: {
    serviceConfig = {
      RestartSec = "2s";
      # The scenario writes the bare token (as for the appliance's credential); turn it into the
      # environment that `-expandEnv` reads. EnvironmentFile= is read when ExecStart spawns.
      ExecStartPre = [
        "+${pkgs.writeShellScript "spike-vm-join-token" ''
          if [ -s /run/spire-agent-join/token ]; then
            printf 'SPIRE_JOIN_TOKEN=%s\n' "$(cat /run/spire-agent-join/token)" > /run/spire-agent-join/token.env
            chmod 0600 /run/spire-agent-join/token.env
          fi
        ''}"
      ];
      EnvironmentFile = "-/run/spire-agent-join/token.env";
      # The scenario writes the bundle into /var/lib/spire-agent as root; as the agent's state
      # directory it is handed to the agent's user at every start.
      StateDirectory = [ "spire-agent" ];
    };
    unitConfig.StartLimitIntervalSec = 0;
  };

  keeperNode =
    i:
    { pkgs, ... }:
    {
      services.spike = {
        inherit trustDomain;
        keepers = {
          enable = true;
          instances = [ i ];
          listenAddress = "0.0.0.0";
          openFirewall = true;
        };
      };
      services.spire.agent = {
        enable = true;
        settings = {
          agent = {
            trust_domain = trustDomain;
            server_address = "server";
            data_dir = "/var/lib/spire-agent";
            # The appliance's path, as on the server, so the scenario sees one layout.
            socket_path = "/run/spire-agent/public/api.sock";
            trust_bundle_path = "/var/lib/spire-agent/bootstrap-bundle.pem";
            # Expanded by `spire-agent -expandEnv` from the scenario's token.env.
            join_token = "$SPIRE_JOIN_TOKEN";
          };
          plugins = {
            KeyManager.disk.plugin_data.directory = "/var/lib/spire-agent";
            NodeAttestor.join_token.plugin_data = { };
            WorkloadAttestor.systemd.plugin_data = { };
            WorkloadAttestor.unix.plugin_data = { };
          };
        };
      };
      systemd.services.spire-agent = patientAgent pkgs;
      virtualisation.memorySize = 1024;
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

  testScript = import ./prelude.nix + builtins.readFile ./scenarios/multi_host.py;

  # See scenario.nix.
  skipTypeCheck = true;
  skipLint = true;
}
