# The SPIRE agent of a VM test host that the scenario joins itself (keeper-host.nix, and
# ha.nix's second Nexus host), with the appliance's paths so the scenario sees one layout.
#
# The scenario generates a join token on the server, writes it to
# /run/spire-agent-join/token and the server's bundle to
# /var/lib/spire-agent/bootstrap-bundle.pem, then restarts the agent. Until then the agent
# fails at start and keeps retrying.
{ trustDomain, serverAddress }:
{ pkgs, ... }:
{
  services.spire.agent = {
    enable = true;
    settings = {
      agent = {
        trust_domain = trustDomain;
        server_address = serverAddress;
        data_dir = "/var/lib/spire-agent";
        # The appliance's path, as on the server, so the scenario sees one layout.
        socket_path = "/run/spire-agent/public/api.sock";
        trust_bundle_path = "/var/lib/spire-agent/bootstrap-bundle.pem";
        # Expanded by `spire-agent -expandEnv` from the scenario's token (token.env below).
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

  # Until the scenario hands it a token and a bundle, the agent fails at start: keep retrying
  # instead of giving up at the start limit.
  systemd.services.spire-agent = {
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
}
