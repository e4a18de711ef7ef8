# services.spike.nexus: the secret store (spike-nexus.service, spike-nexus.socket,
# spike-nexus-health.socket) and spike.target, which is reached once Nexus is unsealed.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.spike;
  ncfg = cfg.nexus;
  h = import ./helpers.nix { inherit lib pkgs; };
  prefix = "services.spike.nexus.settings";
  defaultListen = ":8553";
  defaultMetricsListen = "127.0.0.1:9553";
  metricsListen = ncfg.settings.metrics_listen or defaultMetricsListen;
  file = h.configFor {
    name = "nexus";
    bin = "spike-nexus";
    inherit (cfg) package;
    inherit (ncfg) settings configFile;
    check = ncfg.checkConfig;
  };
  port = h.listenPort ncfg.settings.listen;
  # The `memory` backend has no keepers: the shard keys are left to the daemon's defaults.
  unlessMemory = v: if ncfg.settings.backend_store == "memory" then null else v;
in
{
  meta.maintainers = [ ];

  options.services.spike.nexus = {
    enable = lib.mkEnableOption "SPIKE Nexus, the secret store, and spike.target";

    settings = lib.mkOption {
      default = { };
      description = ''
        Nexus configuration, rendered to /etc/spike/nexus.toml. Every key and its default is
        in docs/config.md and config-examples/nexus-full.toml; the keys below are typed, the
        rest is passed through. SPIKE_* environment variables of the unit override the file.
      '';
      type = lib.types.submodule {
        freeformType = h.format.type;
        options = {
          listen = lib.mkOption {
            type = lib.types.str;
            default = defaultListen;
            description = ''
              The mTLS API address (Go syntax: `:8553`, `10.0.0.1:8553`). The API socket comes
              from spike-nexus.socket; a value other than `${defaultListen}` also changes that
              socket's `ListenStream=`.
            '';
          };
          backend_store = lib.mkOption {
            type = lib.types.enum [
              "sqlite"
              "lite"
              "memory"
            ];
            default = "sqlite";
            description = "`sqlite`: encrypted database; `lite`: encryption as a service; `memory`: nothing persisted, no keepers.";
          };
          keeper_peers = lib.mkOption {
            type = lib.types.nullOr (lib.types.listOf h.keeperPeerType);
            default = unlessMemory cfg.keeperPeers;
            defaultText = lib.literalMD "`config.services.spike.keeperPeers` (unset with the `memory` backend)";
            description = "Keeper base URLs in shard order; an entry may be `{ url, spiffe_id }` to pin the URL to an ID other than `…/spike/keeper/<position>`.";
          };
          keeper_identity = h.keeperIdentityOption;
          shamir_shares = lib.mkOption {
            type = lib.types.nullOr lib.types.ints.unsigned;
            default = unlessMemory cfg.shamir.shares;
            defaultText = lib.literalMD "`config.services.spike.shamir.shares` (unset with the `memory` backend)";
            description = "Total shards, one per keeper.";
          };
          shamir_threshold = lib.mkOption {
            type = lib.types.nullOr lib.types.ints.unsigned;
            default = unlessMemory cfg.shamir.threshold;
            defaultText = lib.literalMD "`config.services.spike.shamir.threshold` (unset with the `memory` backend)";
            description = "Shards needed to rebuild the root key.";
          };
          log_level = lib.mkOption {
            type = lib.types.enum [
              "DEBUG"
              "INFO"
              "WARN"
              "ERROR"
            ];
            default = "INFO";
            description = "Log level (`RUST_LOG` in the unit's environment overrides it).";
          };
          trust_roots = h.trustRootsOption {
            component = "Nexus";
            roles = [
              "nexus"
              "keeper"
              "bootstrap"
              "pilot"
              "lite_workload"
            ];
            inherit (cfg) trustDomain;
          };
        };
      };
    };

    configFile = h.configFileOption "nexus";
    checkConfig = h.checkConfigOption "spike-nexus";
    ipAddressAllow = h.ipAddressAllowOption "spike-nexus.service";

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the Nexus API port in the firewall (for workloads and operators on other hosts).";
    };
  };

  config = lib.mkIf ncfg.enable {
    environment.etc."spike/nexus.toml".source = file;
    # Served on the fd of spike-nexus-health.socket (the path spike-ready.service and
    # spike-ready-trigger.service poll).
    services.spike.nexus.settings.health_socket = lib.mkDefault "/run/spike/nexus-health.sock";

    # The appliance: SPIRE, keepers and Nexus, bootstrap, then ready (units/spike.target).
    systemd.targets.spike.wantedBy = [ "multi-user.target" ];

    systemd.sockets.spike-nexus = {
      wantedBy = [ "sockets.target" ];
      listenStreams = lib.mkIf (ncfg.settings.listen != defaultListen) [
        ""
        (h.goListenToSystemd ncfg.settings.listen)
      ];
      # The unit binds the API to loopback (BindToDevice=lo); serving other hosts resets it.
      socketConfig = lib.mkIf (ncfg.openFirewall || ncfg.settings.listen != defaultListen) {
        BindToDevice = "";
      };
    };
    systemd.sockets.spike-nexus-health.wantedBy = [ "sockets.target" ];
    systemd.sockets.spike-nexus-metrics = {
      wantedBy = [ "sockets.target" ];
      listenStreams = lib.mkIf (metricsListen != defaultMetricsListen && metricsListen != "") [
        ""
        (h.goListenToSystemd metricsListen)
      ];
    };
    # Who may read the health socket (SocketGroup= of spike-nexus-health.socket; the
    # readiness units join it with SupplementaryGroups=).
    users.groups.spike-health = { };
    # Readiness (ARCHITECTURE.md): spike-ready-trigger.service pokes this socket whenever Nexus
    # is unsealed, which starts spike-ready.service and, through it, spike.target.
    systemd.sockets.spike-ready.wantedBy = [ "sockets.target" ];

    systemd.services.spike-nexus = {
      # Never restarted by `nixos-rebuild switch`: a restart drops the root key held in memory,
      # and Nexus must then recover it from the keepers (or, with fewer than the threshold
      # holding shards, wait for an operator restore). Restart it deliberately instead.
      restartIfChanged = false;
      environment = h.spiffeEnvironment cfg.spire.agentSocket;
      serviceConfig = lib.mkIf (ncfg.ipAddressAllow != [ ]) { IPAddressAllow = ncfg.ipAddressAllow; };
    };

    networking.firewall.allowedTCPPorts = lib.mkIf (ncfg.openFirewall && port != null) [
      (lib.toInt port)
    ];

    warnings = lib.optionals (ncfg.configFile == null && ncfg.settings.backend_store != "memory") (
      h.keeperWarnings prefix ncfg.settings
    );

    assertions =
      lib.optionals (ncfg.configFile == null && ncfg.settings.backend_store != "memory") (
        h.shamirAssertions prefix ncfg.settings
      )
      ++ lib.optionals (ncfg.configFile == null) (
        h.trustRootAssertions "${prefix}.trust_roots" ncfg.settings.trust_roots
      )
      ++ [
        {
          assertion = ncfg.configFile != null || port != null;
          message = "${prefix}.listen (${ncfg.settings.listen}) must end in :PORT.";
        }
      ];
  };
}
