# services.spike.nexus: the secret store (spike-nexus.service, spike-nexus.socket,
# spike-nexus-health.socket) and spike.target, which is reached once Nexus is unsealed.
#
# With `settings.backend_store = "postgres"` (docs/ha.md) the store is a PostgreSQL database that
# several Nexus instances may share: `postgres.enableLocal` runs it on this host (nixpkgs'
# services.postgresql, peer authentication on the unix socket), `postgres.connectionFile` names
# a remote one. Either way Nexus reads the connection string from the systemd credential
# `settings.postgres.credential` (`LoadCredential=`), never from its argv or environment.
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

  pcfg = ncfg.postgres;
  pgPrefix = "services.spike.nexus.postgres";
  # Whether a PostgreSQL database is configured here (either way), and whether Nexus is told to
  # use one (with `configFile`, only the file knows).
  pgWired = pcfg.enableLocal || pcfg.connectionFile != null;
  pgBackend = ncfg.configFile == null && ncfg.settings.backend_store == "postgres";
  # The systemd credential Nexus reads the connection string from ($CREDENTIALS_DIRECTORY/<name>).
  credential = if ncfg.settings.postgres == null then "nexus-db" else ncfg.settings.postgres.credential;
  # The local database: its name is the role's, and the role is Nexus's OS user (DynamicUser,
  # named after the unit), which peer authentication on the unix socket maps to it.
  localName = "spike-nexus";
  localPort = config.services.postgresql.settings.port or 5432;
  # Holds no password (peer authentication), so the Nix store is fine for it.
  localConnection = pkgs.writeText "spike-nexus-db.conninfo" "host=/run/postgresql port=${toString localPort} dbname=${localName} user=${localName} sslmode=disable application_name=spike-nexus";
  connectionProblem = h.secretPathProblem "${pgPrefix}.connectionFile" pcfg.connectionFile;
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
              "postgres"
            ];
            default = if pgWired then "postgres" else "sqlite";
            defaultText = lib.literalMD "`\"postgres\"` when `services.spike.nexus.postgres.enableLocal` or `.connectionFile` is set, else `\"sqlite\"`";
            description = "`sqlite`: encrypted database; `lite`: encryption as a service; `memory`: nothing persisted, no keepers; `postgres`: encrypted records in a PostgreSQL database that several Nexus instances may share (docs/ha.md; set `services.spike.nexus.postgres`).";
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
          postgres = lib.mkOption {
            default = null;
            description = ''
              The `[postgres]` table of nexus.toml (docs/ha.md), set when `backend_store` is
              `postgres`; its keys below, with null meaning Nexus's default.
            '';
            type = lib.types.nullOr (
              lib.types.submodule {
                freeformType = h.format.type;
                options = {
                  credential = lib.mkOption {
                    type = lib.types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.@-]*";
                    default = "nexus-db";
                    description = ''
                      The systemd credential Nexus reads the libpq-style connection string from
                      (`$CREDENTIALS_DIRECTORY/<credential>`). The module loads it into
                      spike-nexus.service (`LoadCredential=<credential>:…`) from the file of
                      `services.spike.nexus.postgres.connectionFile`, or the one it writes for
                      `services.spike.nexus.postgres.enableLocal`.
                    '';
                  };
                  ca_file = lib.mkOption {
                    type = lib.types.nullOr lib.types.path;
                    default = pcfg.caFile;
                    defaultText = lib.literalExpression "config.services.spike.nexus.postgres.caFile";
                    description = "CA bundle that verifies the database server's certificate and host name; set it through `services.spike.nexus.postgres.caFile`.";
                  };
                  pool_size = lib.mkOption {
                    type = lib.types.nullOr lib.types.ints.positive;
                    default = null;
                    example = 16;
                    description = "Connections per Nexus instance (null: Nexus's default, 16). Size `max_connections` of the server for every instance together.";
                  };
                  timeout = lib.mkOption {
                    type = lib.types.nullOr lib.types.str;
                    default = null;
                    example = "5s";
                    description = "Connect and statement timeout, a Go duration (null: Nexus's default, `5s`); a request that needs the database longer answers 503.";
                  };
                };
              }
            );
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

    postgres = {
      enableLocal = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = ''
          Keep Nexus's store in a PostgreSQL server on this host: enables nixpkgs'
          `services.postgresql` with the database and role `${localName}` (the role owns the
          database; Nexus creates its tables itself), peer authentication for that role on
          the unix socket, and hands Nexus the connection string
          `host=/run/postgresql … dbname=${localName} user=${localName} sslmode=disable` as
          the credential `settings.postgres.credential` (it holds no password). Nexus's
          DynamicUser is named `${localName}` after its unit, and NixOS resolves it
          (nss-systemd), so peer authentication maps it to the role. spike-nexus.service
          is ordered after postgresql.service and wants it; it does not require it, so a
          restart of PostgreSQL leaves Nexus (and its root key) running: it answers 503
          meanwhile and reconnects by itself.
          This is one host; for several Nexus instances on one store use
          `connectionFile` with a server of their own (docs/ha.md).
        '';
      };

      connectionFile = lib.mkOption {
        type = lib.types.nullOr (lib.types.either lib.types.str lib.types.path);
        default = null;
        example = "/etc/spike/nexus-db.conninfo";
        description = ''
          A file holding the libpq-style (keyword/value) connection string of a PostgreSQL
          server elsewhere, e.g. `host=db1,db2 port=5432,5432 dbname=spike user=spike_nexus
          password=… sslmode=verify-full target_session_attrs=read-write` (the keys Nexus
          accepts: docs/ha.md). It holds a password: it is passed with
          `LoadCredential=<settings.postgres.credential>:<file>`, so it may be readable by
          root alone (0600), and must not be in the Nix store (an assertion refuses a store
          path or a Nix path literal). It is read when Nexus starts, not at evaluation, and
          Nexus does not restart on `nixos-rebuild switch`: restart it after changing the file.
          TCP hosts need `caFile`; unix-socket hosts (`host=/…`) do not, and the two may not
          be mixed.
        '';
      };

      caFile = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        example = "/etc/spike/postgres-ca.pem";
        description = ''
          The CA bundle that verifies the PostgreSQL server's certificate, host name included
          (`sslmode=require` and `verify-full` both verify). Rendered as
          `settings.postgres.ca_file`. Required when the connection string names TCP hosts,
          which the module cannot see (the file is read at start): Nexus refuses to start
          without it. It is public: a Nix path is copied to the store; a string path must
          be readable by Nexus's dynamic user (e.g. 0644) and outside /home.
        '';
      };

      allowedAddresses = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [
          "10.0.5.11"
          "10.0.5.12"
        ];
        description = ''
          The database servers' addresses or networks, added to `IPAddressAllow=` of
          spike-nexus.service, which otherwise reaches only localhost and the addresses of
          `services.spike.nexus.ipAddressAllow` (`IPAddressDeny=any`). List every host of the
          connection string (primary and standbys). A DNS server that is not on localhost
          must be allowed too when the hosts are names.
        '';
      };
    };
  };

  config = lib.mkIf ncfg.enable {
    environment.etc."spike/nexus.toml".source = file;
    # The [postgres] table exists only with the postgres backend (with its defaults filled in).
    services.spike.nexus.settings.postgres = lib.mkIf (ncfg.settings.backend_store == "postgres") { };

    services.postgresql = lib.mkIf pcfg.enableLocal {
      enable = true;
      ensureDatabases = [ localName ];
      ensureUsers = [
        {
          name = localName;
          ensureDBOwnership = true;
        }
      ];
      # Before nixpkgs' defaults (which also allow it, through `local all all peer`): only on
      # the unix socket, only this database, only the OS user of the same name.
      authentication = "local ${localName} ${localName} peer";
    };
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
      # Wants, not Requires: Requires= would stop or restart Nexus with every stop or restart of
      # PostgreSQL (and drop the root key); Nexus answers 503 meanwhile and reconnects by itself.
      # postgresql-setup.service creates the role and database (nixpkgs since 25.11).
      wants = lib.mkIf pcfg.enableLocal [
        "postgresql.service"
        "postgresql-setup.service"
      ];
      after = lib.mkIf pcfg.enableLocal [
        "postgresql.service"
        "postgresql-setup.service"
      ];
      serviceConfig = lib.mkMerge [
        (lib.mkIf (ncfg.ipAddressAllow != [ ] || pcfg.allowedAddresses != [ ]) {
          IPAddressAllow = ncfg.ipAddressAllow ++ pcfg.allowedAddresses;
        })
        (lib.mkIf pcfg.enableLocal { LoadCredential = [ "${credential}:${localConnection}" ]; })
        (lib.mkIf (pcfg.connectionFile != null && connectionProblem == null) {
          LoadCredential = [ "${credential}:${pcfg.connectionFile}" ];
        })
      ];
    };

    networking.firewall.allowedTCPPorts = lib.mkIf (ncfg.openFirewall && port != null) [
      (lib.toInt port)
    ];

    warnings =
      lib.optionals (ncfg.configFile == null && ncfg.settings.backend_store != "memory") (
        h.keeperWarnings prefix ncfg.settings
      )
      ++ lib.optional (
        pcfg.connectionFile != null && pcfg.caFile == null && (ncfg.settings.postgres.ca_file or null) == null
      ) "${pgPrefix}.connectionFile (${toString pcfg.connectionFile}) is read by Nexus at start, not at evaluation, so its hosts cannot be checked here: if it names TCP hosts, Nexus refuses to start without ${pgPrefix}.caFile (the CA that verifies the server); only unix-socket hosts (host=/...) need none."
      ++ lib.optional (
        pcfg.enableLocal && pcfg.caFile != null
      ) "${pgPrefix}.caFile is set, but ${pgPrefix}.enableLocal connects over the unix socket, which has no TLS: the CA is not used.";

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
        {
          assertion = connectionProblem == null;
          message = toString connectionProblem;
        }
        {
          assertion = !(pcfg.enableLocal && pcfg.connectionFile != null);
          message = "${pgPrefix}.enableLocal and ${pgPrefix}.connectionFile are both set: Nexus uses one database, either PostgreSQL on this host (enableLocal) or the server the connection file names (connectionFile); unset one.";
        }
        {
          assertion = !pgBackend || pgWired;
          message = "${prefix}.backend_store = \"postgres\" needs a database: set ${pgPrefix}.enableLocal = true (PostgreSQL on this host) or ${pgPrefix}.connectionFile (the connection string of a server elsewhere, docs/ha.md).";
        }
        {
          assertion = ncfg.configFile != null || !pgWired || ncfg.settings.backend_store == "postgres";
          message = "${pgPrefix}.${
            if pcfg.enableLocal then "enableLocal" else "connectionFile"
          } is set, but ${prefix}.backend_store is \"${ncfg.settings.backend_store}\": set it to \"postgres\" (its default once a PostgreSQL database is configured), or unset ${pgPrefix}.";
        }
      ];
  };
}
