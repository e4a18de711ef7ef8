# A keeper-only host of a multi-host VM test (multi_host.nix, sealing_hosts.nix): keeper
# `keeperId` listening on every address at `port`, under a SPIRE agent of its own whose server
# is at `serverAddress`, with shard sealing `shardSealing` and, with `tpm`, a TPM2
# (tpm-node.nix).
#
# As in the nspawn run, the scenario joins the agent itself: it generates a join token on the
# server (node spiffe://<trustDomain>/node/keeperN), registers the keeper under that node, and
# writes the token to /run/spire-agent-join/token and the server's bundle to
# /var/lib/spire-agent/bootstrap-bundle.pem on this host, then restarts the agent. The agent
# therefore uses the appliance's paths. A host the scenario never joins keeps an agent that
# fails and retries (sealing_hosts.nix's thief).
{
  trustDomain,
  keeperId,
  serverAddress,
  port ? 8440 + keeperId,
  shardSealing ? "off",
  shardSealingPcrs ? [ ],
  tpm ? false,
}:
{ lib, ... }:
{
  imports = [
    (import ./joined-agent.nix { inherit trustDomain serverAddress; })
  ]
  ++ lib.optional tpm ./tpm-node.nix;

  services.spike = {
    inherit trustDomain;
    keepers = {
      enable = true;
      instances = [ keeperId ];
      listenAddress = "0.0.0.0";
      # Keeper N listens on basePort + N.
      basePort = port - keeperId;
      openFirewall = true;
      inherit shardSealing shardSealingPcrs;
    };
  };

  virtualisation.memorySize = 1024;
}
