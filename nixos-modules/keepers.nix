# services.spike.keepers: the shard holders. Keeper N is the template instance
# spike-keeper@N (socket and service shipped in the package), listening on basePort + N.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.spike;
  kcfg = cfg.keepers;
  h = import ./helpers.nix { inherit lib pkgs; };
  prefix = "services.spike.keepers.settings";
  file = h.configFor {
    name = "keeper";
    bin = "spike-keeper";
    inherit (cfg) package;
    inherit (kcfg) settings configFile;
    check = kcfg.checkConfig;
  };
  forEach =
    f: lib.listToAttrs (map (i: lib.nameValuePair "spike-keeper@${toString i}" (f i)) kcfg.instances);
in
{
  options.services.spike.keepers = {
    enable = lib.mkEnableOption "SPIKE keepers on this host, one spike-keeper@N per entry of `instances`";

    instances = lib.mkOption {
      type = lib.types.listOf lib.types.ints.positive;
      default = [
        1
        2
        3
      ];
      example = lib.literalExpression "lib.range 1 5";
      description = ''
        The keepers that run on this host. Keeper N holds shard N, is the unit
        spike-keeper@N.service (socket-activated by spike-keeper@N.socket) and has the SPIFFE ID
        `spiffe://<trustDomain>/spike/keeper/N`.
      '';
    };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        The address keeper sockets listen on. Keep loopback when Nexus runs on this host; use a
        routable address (and `openFirewall`) when it runs elsewhere.
      '';
    };

    basePort = lib.mkOption {
      type = lib.types.port;
      default = 8440;
      description = "Keeper N listens on port basePort + N (8441, 8442, ...).";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the keepers' ports in the firewall (for a Nexus on another host).";
    };

    settings = lib.mkOption {
      default = { };
      description = ''
        Keeper configuration, shared by every instance and rendered to /etc/spike/keeper.toml.
        Every key and its default is in docs/config.md and config-examples/keeper-full.toml.
        `listen` is ignored: each instance gets its socket from spike-keeper@N.socket.
      '';
      type = lib.types.submodule {
        freeformType = h.format.type;
        options = {
          log_level = lib.mkOption {
            type = lib.types.enum [
              "DEBUG"
              "INFO"
              "WARN"
              "ERROR"
            ];
            default = "INFO";
            description = "Log level.";
          };
          trust_roots = h.trustRootsOption {
            component = "the keepers";
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

    configFile = h.configFileOption "keeper";
    checkConfig = h.checkConfigOption "spike-keeper";
  };

  config = lib.mkIf kcfg.enable {
    environment.etc."spike/keeper.toml".source = file;

    # Template instances have no unit file of their own: a full unit generated for
    # spike-keeper@N would shadow the template, so these must be drop-ins.
    systemd.sockets = forEach (i: {
      overrideStrategy = "asDropin";
      wantedBy = [ "sockets.target" ];
      listenStreams = [
        ""
        (h.hostPort kcfg.listenAddress (h.keeperPort kcfg.basePort i))
      ];
    });

    systemd.services = forEach (_: {
      overrideStrategy = "asDropin";
      # Never restarted by `nixos-rebuild switch`: a keeper holds its shard in memory only, so a
      # restart empties it until Nexus re-seeds it, and restarting several at once can leave
      # fewer than the threshold holding shards. Restart keepers one at a time, deliberately.
      restartIfChanged = false;
      environment = h.spiffeEnvironment cfg.spire.agentSocket;
    });

    networking.firewall.allowedTCPPorts = lib.mkIf kcfg.openFirewall (
      map (h.keeperPort kcfg.basePort) kcfg.instances
    );

    assertions = [
      {
        assertion = lib.unique kcfg.instances == kcfg.instances;
        message = "services.spike.keepers.instances lists a keeper twice.";
      }
      {
        assertion = lib.all (i: h.keeperPort kcfg.basePort i <= 65535) kcfg.instances;
        message = "services.spike.keepers.basePort + the largest of services.spike.keepers.instances must be a port (<= 65535).";
      }
    ]
    ++ lib.optionals (kcfg.configFile == null) (
      h.trustRootAssertions "${prefix}.trust_roots" kcfg.settings.trust_roots
    );
  };
}
