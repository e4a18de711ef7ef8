# services.spike.bootstrap: the one-shot that generates the root key, seeds the keepers and
# verifies Nexus (spike-bootstrap.service, pulled in by spike.target). It is idempotent: a
# done-marker in its state directory and Nexus's own health keep it from re-keying.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.spike;
  bcfg = cfg.bootstrap;
  h = import ./helpers.nix { inherit lib pkgs; };
  prefix = "services.spike.bootstrap.settings";
  nexusPort =
    let
      p = h.listenPort cfg.nexus.settings.listen;
    in
    if p == null then "8553" else p;
  file = h.configFor {
    name = "bootstrap";
    bin = "spike-bootstrap";
    inherit (cfg) package;
    inherit (bcfg) settings configFile;
    check = bcfg.checkConfig;
  };
in
{
  meta.maintainers = [ ];

  options.services.spike.bootstrap = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = cfg.nexus.enable && cfg.nexus.settings.backend_store != "memory";
      defaultText = lib.literalExpression ''config.services.spike.nexus.enable && config.services.spike.nexus.settings.backend_store != "memory"'';
      description = ''
        Whether to run SPIKE Bootstrap on this host (it belongs beside Nexus; the `memory`
        backend needs none). When Nexus runs here and this is off, spike-bootstrap.service is
        masked. With several Nexus instances sharing one PostgreSQL store (docs/ha.md),
        bootstrap runs once for the cluster: keep it on one Nexus host and set this to `false`
        on every other.
      '';
    };

    settings = lib.mkOption {
      default = { };
      description = ''
        Bootstrap configuration, rendered to /etc/spike/bootstrap.toml. Every key and its
        default is in docs/config.md and config-examples/bootstrap-full.toml.
      '';
      type = lib.types.submodule {
        freeformType = h.format.type;
        options = {
          nexus_api_url = lib.mkOption {
            type = lib.types.str;
            default = "https://127.0.0.1:${nexusPort}";
            defaultText = lib.literalMD "`https://127.0.0.1:<port of services.spike.nexus.settings.listen>`";
            description = "Nexus base URL.";
          };
          keeper_peers = lib.mkOption {
            type = lib.types.listOf h.keeperPeerType;
            default = cfg.keeperPeers;
            defaultText = lib.literalExpression "config.services.spike.keeperPeers";
            description = "Keeper base URLs in shard order, exactly as Nexus's (entries may be `{ url, spiffe_id }`).";
          };
          keeper_identity = h.keeperIdentityOption;
          shamir_shares = lib.mkOption {
            type = lib.types.ints.unsigned;
            default = cfg.shamir.shares;
            defaultText = lib.literalExpression "config.services.spike.shamir.shares";
            description = "Total shards; must equal the number of keepers.";
          };
          shamir_threshold = lib.mkOption {
            type = lib.types.ints.unsigned;
            default = cfg.shamir.threshold;
            defaultText = lib.literalExpression "config.services.spike.shamir.threshold";
            description = "Shards needed to rebuild the root key.";
          };
          backend_store = lib.mkOption {
            type = lib.types.enum [
              "sqlite"
              "lite"
              "memory"
              "postgres"
            ];
            default = cfg.nexus.settings.backend_store;
            defaultText = lib.literalExpression "config.services.spike.nexus.settings.backend_store";
            description = "Nexus's backend; `memory` has nothing to bootstrap.";
          };
          trust_roots = h.trustRootsOption {
            component = "Bootstrap";
            roles = [
              "nexus"
              "keeper"
              "bootstrap"
            ];
            inherit (cfg) trustDomain;
          };
        };
      };
    };

    configFile = h.configFileOption "bootstrap";
    checkConfig = h.checkConfigOption "spike-bootstrap";
    ipAddressAllow = h.ipAddressAllowOption "spike-bootstrap.service";
  };

  config = lib.mkMerge [
    (lib.mkIf bcfg.enable {
      environment.etc."spike/bootstrap.toml".source = file;

      systemd.services.spike-bootstrap = {
        environment = h.spiffeEnvironment cfg.spire.agentSocket;
        serviceConfig = lib.mkIf (bcfg.ipAddressAllow != [ ]) { IPAddressAllow = bcfg.ipAddressAllow; };
      };

      warnings = lib.optionals (bcfg.configFile == null && bcfg.settings.backend_store != "memory") (
        h.keeperWarnings prefix bcfg.settings
      );

      assertions =
        lib.optionals (bcfg.configFile == null && bcfg.settings.backend_store != "memory") (
          h.shamirAssertions prefix bcfg.settings
        )
        ++ lib.optionals (bcfg.configFile == null) (
          h.trustRootAssertions "${prefix}.trust_roots" bcfg.settings.trust_roots
        )
        ++ lib.optionals (cfg.nexus.enable && bcfg.configFile == null && cfg.nexus.configFile == null) [
          {
            assertion =
              bcfg.settings.keeper_peers == cfg.nexus.settings.keeper_peers
              && bcfg.settings.shamir_shares == cfg.nexus.settings.shamir_shares
              && bcfg.settings.shamir_threshold == cfg.nexus.settings.shamir_threshold
              && bcfg.settings.keeper_identity == cfg.nexus.settings.keeper_identity;
            message = "services.spike.bootstrap.settings.{keeper_peers,keeper_identity,shamir_shares,shamir_threshold} must equal services.spike.nexus.settings.{keeper_peers,keeper_identity,shamir_shares,shamir_threshold}: Nexus reads the shards Bootstrap hands out (set services.spike.keeperPeers and services.spike.shamir instead of either).";
          }
        ];
    })
    (lib.mkIf (cfg.nexus.enable && !bcfg.enable) {
      # spike.target wants spike-bootstrap.service; without a configuration it must not run.
      systemd.services.spike-bootstrap.enable = false;
    })
  ];
}
