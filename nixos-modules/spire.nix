# services.spike.spire: SPIKE's identities come from SPIRE. This module reuses nixpkgs'
# services.spire.server and services.spire.agent (nixos/modules/services/security/spire/) and adds
#   - `enable`: a SPIRE server and agent on this host for the trust domain, the agent joined to
#     the server with a one-time token (the single-host appliance);
#   - registration of SPIKE's workload identities with systemd selectors
#     (systemd:id:spike-nexus.service, ...), a drop-in on the packaged spike-register.service;
#   - `agentJoinTokenFile`: a join token for an agent whose server is on another host.
#
# With `enable`, nixpkgs' spire-server runs as the static user and group spire-server instead of
# nixpkgs' DynamicUser: SPIRE makes its admin socket 0770 (pkg/server/endpoints/
# endpoints_posix.go, restrictLocalAddr) in a directory it creates 0750, so only that user and
# group reach it. The setup units that use the admin API (spike-register and
# spike-spire-agent-join) run as root with an empty capability bounding set and join that group
# (SupplementaryGroups=) rather than get CAP_DAC_OVERRIDE. The Debian units run SPIRE the same
# way (units/spire-server.service).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.spike;
  scfg = cfg.spire;
  h = import ./helpers.nix { inherit lib pkgs; };
  spireServer = config.services.spire.server;
  spireAgent = config.services.spire.agent;
  anyEnabled = cfg.nexus.enable || cfg.keepers.enable || cfg.bootstrap.enable || cfg.pilot.enable;

  # nixpkgs' socket paths (spire/server.nix, spire/agent.nix), the defaults when SPIRE is not
  # enabled on this host through services.spire.
  defaultServerSocket = "/run/spire/server/private/api.sock";
  defaultAgentSocket = "/run/spire/agent/public/api.sock";

  # The static user and group of spire-server (and of its admin socket).
  serverGroup = "spire-server";

  # Where the agent keeps agent-data.json: its data_dir, with nixpkgs' default
  # "$STATE_DIRECTORY" (StateDirectory = "spire/agent") spelt out for ConditionPathExists=.
  agentStateDirectory = "/var/lib/spire/agent";
  agentDataDir = lib.replaceStrings [ "\${STATE_DIRECTORY}" "$STATE_DIRECTORY" ] [
    agentStateDirectory
    agentStateDirectory
  ] (spireAgent.settings.agent.data_dir or "$STATE_DIRECTORY");

  # RuntimeDirectory= entries for a socket outside nixpkgs' own /run/spire/{server,agent}.
  extraRuntimeDirs =
    socket: if lib.hasPrefix "/run/spire/" socket then [ ] else h.runtimeDirsFor socket;

  spireBin = "${spireServer.package}/bin/spire-server";

  # Readiness as on Debian (units/spire-server.service, units/spire-agent.service): nixpkgs'
  # units are Type=simple, so without this `After=spire-server.service` only waits for a fork.
  # Run as ExecStartPost=: the unit is active once the API socket answers the health check.
  healthcheck =
    {
      name,
      bin,
      socket,
      hint ? "",
    }:
    pkgs.writeShellScript "${name}-healthcheck" ''
      # ${name}: ready once its API socket at ${socket} answers the health check (60 s at most).
      for _ in $(${pkgs.coreutils}/bin/seq 1 300); do
        ${bin} healthcheck -socketPath ${lib.escapeShellArg socket} >/dev/null 2>&1 && exit 0
        ${pkgs.coreutils}/bin/sleep 0.2
      done
      echo "${name}: not healthy after 60 s (healthcheck -socketPath ${socket})${hint}" >&2
      exit 1
    '';

  entryType = lib.types.submodule {
    options = {
      spiffeId = lib.mkOption {
        type = lib.types.strMatching "spiffe://.+";
        description = "The SPIFFE ID to issue.";
      };
      parentId = lib.mkOption {
        type = lib.types.strMatching "spiffe://.+";
        description = "The SPIFFE ID of the agent (or node alias) the workload runs under.";
      };
      selector = lib.mkOption {
        type = lib.types.str;
        example = "systemd:id:spike-nexus.service";
        description = "The workload selector (`type:key:value`).";
      };
    };
  };

  waitForServer = ''
    for _ in $(seq 1 300); do
      "$SERVER" healthcheck -socketPath "$SOCK" >/dev/null 2>&1 && break
      sleep 0.2
    done
    "$SERVER" healthcheck -socketPath "$SOCK" >/dev/null || {
      echo "spire-server at $SOCK is not healthy after 60 s" >&2
      exit 1
    }
  '';

  registerScript = pkgs.writeShellScript "spike-register" ''
    # Register SPIKE's identities with the SPIRE server, idempotently (safe on every boot).
    set -eu
    SERVER=${lib.escapeShellArg spireBin}
    SOCK=${lib.escapeShellArg scfg.serverSocket}
    ${waitForServer}
    register() { # spiffe-id parent-id selector
      if "$SERVER" entry show -socketPath "$SOCK" -spiffeID "$1" -parentID "$2" -selector "$3" 2>/dev/null \
          | grep -q "Entry ID"; then
        echo "spike-register: $1 ($3, under $2) already registered"
      else
        "$SERVER" entry create -socketPath "$SOCK" -parentID "$2" -spiffeID "$1" -selector "$3" \
          -x509SVIDTTL 3600 >/dev/null
        echo "spike-register: registered $1 ($3, under $2)"
      fi
    }
    ${h.registerCalls (scfg.registrations ++ scfg.extraRegistrations)}
  '';

  joinScript = pkgs.writeShellScript "spike-spire-agent-join" ''
    # Give the local SPIRE agent the server's trust bundle and a one-time join token.
    set -eu
    SERVER=${lib.escapeShellArg spireBin}
    SOCK=${lib.escapeShellArg scfg.serverSocket}
    ${waitForServer}
    "$SERVER" bundle show -socketPath "$SOCK" > "$STATE_DIRECTORY/bundle.pem.tmp"
    mv "$STATE_DIRECTORY/bundle.pem.tmp" "$STATE_DIRECTORY/bundle.pem"
    token=$("$SERVER" token generate -socketPath "$SOCK" -ttl 600 \
      -spiffeID ${lib.escapeShellArg scfg.parentId} | sed -n 's/^Token: //p')
    [ -n "$token" ] || { echo "spike-spire-agent-join: no token from spire-server" >&2; exit 1; }
    printf 'SPIKE_SPIRE_JOIN_TOKEN=%s\n' "$token" > "$RUNTIME_DIRECTORY/token.env"
    echo "spike-spire-agent-join: agent token issued for ${scfg.parentId}"
  '';
in
{
  meta.maintainers = [ ];

  options.services.spike.spire = {
    enable = lib.mkEnableOption ''
      a SPIRE server and agent on this host for `services.spike.trustDomain` (nixpkgs'
      `services.spire.server` and `services.spire.agent`, with nixpkgs' socket paths),
      the agent joined to the server once with a one-time token named
      `services.spike.spire.parentId`. spire-server then runs as the static user and group
      `spire-server` (not nixpkgs' `DynamicUser`), and the units that use its admin socket
      join that group. Both SPIRE units get a health check (`ExecStartPost=`), so units
      ordered after them start once the API answers. The server's and the agent's
      `KeyManager.disk` are defaults of the whole `KeyManager`: a KeyManager of your own
      (e.g. nixpkgs' example `KeyManager.memory`) replaces it rather than adding a second one;
      the same holds for the SQLite `DataStore.sql.plugin_data`.
      This is the single-host appliance; with several hosts, enable it on the Nexus host and
      configure the other hosts' agents with `services.spire.agent`'';

    agentSocket = lib.mkOption {
      type = lib.types.str;
      default = if spireAgent.enable then spireAgent.settings.agent.socket_path else defaultAgentSocket;
      defaultText = lib.literalMD "`services.spire.agent.settings.agent.socket_path` when the agent is enabled here, else nixpkgs' default `${defaultAgentSocket}`";
      description = "The SPIRE agent's Workload API socket SPIKE's daemons and the CLI use (`SPIFFE_ENDPOINT_SOCKET`).";
    };

    serverSocket = lib.mkOption {
      type = lib.types.str;
      default =
        if spireServer.enable then spireServer.settings.server.socket_path else defaultServerSocket;
      defaultText = lib.literalMD "`services.spire.server.settings.server.socket_path` when the server is enabled here, else nixpkgs' default `${defaultServerSocket}`";
      description = "The SPIRE server's admin API socket, used to register identities.";
    };

    parentId = lib.mkOption {
      type = lib.types.strMatching "spiffe://.+";
      default = "spiffe://${cfg.trustDomain}/node/local";
      defaultText = lib.literalExpression ''"spiffe://''${config.services.spike.trustDomain}/node/local"'';
      description = ''
        The SPIFFE ID of this host's agent node: named by the join token of
        `services.spike.spire.enable`, and the parent of this host's registrations.
      '';
    };

    register = lib.mkOption {
      type = lib.types.bool;
      default = spireServer.enable;
      defaultText = lib.literalExpression "config.services.spire.server.enable";
      description = ''
        Register SPIKE's identities with the SPIRE server on this host at boot
        (spike-register.service). Without it the unit is masked, and the identities must be
        registered where the server runs.
      '';
    };

    superuserUids = lib.mkOption {
      type = lib.types.listOf lib.types.ints.unsigned;
      default = [ 0 ];
      description = ''
        Unix uids whose `spike` CLI gets the Pilot superuser identity
        (`spiffe://<trustDomain>/spike/pilot/role/superuser`, selector `unix:uid:<uid>`).
      '';
    };

    registrations = lib.mkOption {
      type = lib.types.listOf entryType;
      default = h.registrations {
        trustDomain = cfg.trustDomain;
        inherit (scfg) parentId superuserUids;
        nexus = cfg.nexus.enable;
        bootstrap = cfg.bootstrap.enable;
        keepers = lib.optionals cfg.keepers.enable cfg.keepers.instances;
      };
      defaultText = lib.literalMD "the Nexus, Bootstrap, keepers and superuser enabled on this host, under `parentId`";
      description = "The entries spike-register.service creates (when `register` is on).";
    };

    extraRegistrations = lib.mkOption {
      type = lib.types.listOf entryType;
      default = [ ];
      example = lib.literalExpression ''
        [ {
          spiffeId = "spiffe://example.org/spike/keeper/2";
          parentId = "spiffe://example.org/spire/agent/x509pop/cn/keeper2";
          selector = "systemd:id:spike-keeper@2.service";
        } ]
      '';
      description = "More entries to register, e.g. keepers on hosts whose agents join this server.";
    };

    agentJoinTokenFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/keys/spire-join-token";
      description = ''
        A file holding a join token (`spire-server token generate`) for this host's SPIRE agent
        when its server runs elsewhere. It is a secret: it is passed with `LoadCredential=` and
        must not be in the Nix store. The token is used once; the agent keeps its own SVID.
      '';
    };
  };

  config = lib.mkMerge [
    (lib.mkIf scfg.enable {
      services.spire.server = {
        enable = true;
        settings = {
          server = {
            trust_domain = cfg.trustDomain;
            bind_address = lib.mkDefault "127.0.0.1";
          };
          plugins = {
            DataStore.sql.plugin_data = lib.mkDefault {
              database_type = "sqlite3";
              connection_string = "$STATE_DIRECTORY/datastore.sqlite3";
            };
            # The whole KeyManager at default priority: a user's KeyManager (e.g. nixpkgs'
            # example KeyManager.memory) replaces it instead of adding a second one.
            KeyManager = lib.mkDefault { disk.plugin_data.keys_path = "$STATE_DIRECTORY/keys.json"; };
            NodeAttestor.join_token.plugin_data = { };
          };
        };
      };
      services.spire.agent = {
        enable = true;
        settings = {
          agent = {
            trust_domain = cfg.trustDomain;
            server_address = lib.mkDefault "127.0.0.1";
            server_port = lib.mkDefault spireServer.settings.server.bind_port;
            trust_bundle_path = lib.mkDefault "/var/lib/spike-spire-agent-join/bundle.pem";
            # Expanded by `spire-agent -expandEnv` from the one-time file the join unit writes;
            # empty once the agent has its own SVID (the join unit is then skipped).
            join_token = lib.mkDefault "$SPIKE_SPIRE_JOIN_TOKEN";
          };
          plugins = {
            KeyManager = lib.mkDefault { disk.plugin_data.directory = "$STATE_DIRECTORY"; };
            NodeAttestor.join_token.plugin_data = { };
            # SPIKE's daemons: selector systemd:id:<unit>. The CLI: selector unix:uid:<uid>.
            WorkloadAttestor.systemd.plugin_data = { };
            WorkloadAttestor.unix.plugin_data = { };
          };
        };
      };

      # nixpkgs runs spire-server with DynamicUser = true; its admin socket would then be
      # closed to the setup units (see the top of this file).
      users.users.spire-server = {
        isSystemUser = true;
        group = serverGroup;
        description = "SPIRE server";
      };
      users.groups.${serverGroup} = { };
      systemd.services.spire-server.serviceConfig = {
        DynamicUser = lib.mkForce false;
        User = "spire-server";
        Group = serverGroup;
        ExecStartPost = [
          (healthcheck {
            name = "spire-server";
            bin = spireBin;
            socket = spireServer.settings.server.socket_path;
          })
        ];
      };

      systemd.services.spike-spire-agent-join = {
        description = "SPIKE: join the local SPIRE agent to the local SPIRE server";
        after = [ "spire-server.service" ];
        requires = [ "spire-server.service" ];
        before = [ "spire-agent.service" ];
        # Skipped once the agent has attested: SPIRE 1.13 then keeps its SVID in agent-data.json
        # in its data_dir (nixpkgs' default "$STATE_DIRECTORY" is /var/lib/spire/agent).
        unitConfig.ConditionPathExists = "!${agentDataDir}/agent-data.json";
        path = [
          pkgs.coreutils
          pkgs.gnused
        ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = joinScript;
          # The bundle is public (the agent user reads it); the token file is not.
          StateDirectory = "spike-spire-agent-join";
          StateDirectoryMode = "0755";
          RuntimeDirectory = "spike-spire-agent-join";
          RuntimeDirectoryMode = "0700";
          RuntimeDirectoryPreserve = true;
          UMask = "0022";
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          PrivateNetwork = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectControlGroups = true;
          RestrictAddressFamilies = "AF_UNIX";
          CapabilityBoundingSet = "";
          # The admin socket is 0770 spire-server:spire-server: the group, not a capability.
          SupplementaryGroups = [ serverGroup ];
          SystemCallFilter = "@system-service";
        };
      };
      systemd.services.spire-agent = {
        wants = [ "spike-spire-agent-join.service" ];
        after = [
          "spire-server.service"
          "spike-spire-agent-join.service"
        ];
        serviceConfig = {
          EnvironmentFile = "-/run/spike-spire-agent-join/token.env";
          ExecStartPost = [
            (healthcheck {
              name = "spire-agent";
              bin = "${spireAgent.package}/bin/spire-agent";
              socket = spireAgent.settings.agent.socket_path;
              hint = "; check its join token and the server";
            })
          ];
        };
      };
    })

    # Sockets set outside nixpkgs' /run/spire/{server,agent} (e.g. the Debian appliance's old
    # /run/spire-agent/public) need runtime directories of their own.
    (lib.mkIf (spireServer.enable && extraRuntimeDirs spireServer.settings.server.socket_path != [ ]) {
      systemd.services.spire-server.serviceConfig.RuntimeDirectory = extraRuntimeDirs spireServer.settings.server.socket_path;
    })
    (lib.mkIf (spireAgent.enable && extraRuntimeDirs spireAgent.settings.agent.socket_path != [ ]) {
      systemd.services.spire-agent.serviceConfig.RuntimeDirectory = extraRuntimeDirs spireAgent.settings.agent.socket_path;
    })

    (lib.mkIf (scfg.agentJoinTokenFile != null) {
      services.spire.agent.settings.agent.join_token_file = "\${CREDENTIALS_DIRECTORY}/spike-spire-join-token";
      systemd.services.spire-agent.serviceConfig.LoadCredential = [
        "spike-spire-join-token:${scfg.agentJoinTokenFile}"
      ];
    })

    (lib.mkIf (anyEnabled && scfg.register) {
      # The packaged unit (units/spike-register.service) runs units/libexec/spike-register for
      # the Debian layout; here the entries come from services.spike.spire.registrations.
      systemd.services.spike-register = {
        path = [
          pkgs.coreutils
          pkgs.gnugrep
        ];
        serviceConfig = {
          ExecStart = [
            ""
            "${registerScript}"
          ];
          # The admin socket is 0770 spire-server:spire-server (see the top of this file).
          SupplementaryGroups = lib.mkIf scfg.enable [ serverGroup ];
        };
      };
    })
    (lib.mkIf (anyEnabled && !scfg.register) {
      # Keepers and Nexus want spike-register.service; without a SPIRE server here it is masked.
      systemd.services.spike-register.enable = false;
    })

    (lib.mkIf anyEnabled {
      # Debian's spike-spire-join.service (units/libexec/spire-join) is neither in the package
      # nor ordered against here: on NixOS the agent is joined by spike-spire-agent-join.service
      # above, or by `agentJoinTokenFile`; only install.sh orders spike-register after it.

      assertions =
        let
          problem = h.secretPathProblem "services.spike.spire.agentJoinTokenFile" scfg.agentJoinTokenFile;
        in
        [
          {
            assertion = problem == null;
            message = toString problem;
          }
          {
            assertion = scfg.enable -> !(scfg.agentJoinTokenFile != null);
            message = "services.spike.spire.agentJoinTokenFile is for an agent joining a SPIRE server on another host; services.spike.spire.enable joins the local agent by itself.";
          }
          {
            assertion = scfg.enable -> lib.hasPrefix "/" agentDataDir && !(lib.hasInfix "$" agentDataDir);
            message = "services.spire.agent.settings.agent.data_dir (${agentDataDir}) must be an absolute path, or \"$STATE_DIRECTORY\", when services.spike.spire.enable is set: spike-spire-agent-join.service is skipped when agent-data.json exists there.";
          }
          {
            assertion = scfg.enable -> config.services.spire.server.settings.server.trust_domain == cfg.trustDomain;
            message = "services.spire.server.settings.server.trust_domain must equal services.spike.trustDomain (${cfg.trustDomain}) when services.spike.spire.enable is set.";
          }
        ];
      warnings = lib.optional (
        spireAgent.enable && spireAgent.settings.agent.trust_domain != cfg.trustDomain
      ) "services.spire.agent.settings.agent.trust_domain (${spireAgent.settings.agent.trust_domain}) differs from services.spike.trustDomain (${cfg.trustDomain}): SPIKE's trust roots default to the latter, so peers may be rejected."
      # A server enabled with services.spire.server alone keeps nixpkgs' DynamicUser: its admin
      # socket (0770, that user's) refuses spike-register, which has no capabilities.
      ++ lib.optional (
        scfg.register
        && spireServer.enable
        && !scfg.enable
        && (config.systemd.services.spire-server.serviceConfig.DynamicUser or false)
      ) "services.spike.spire.register is set, but spire-server runs with DynamicUser (nixpkgs' services.spire.server): its admin socket is 0770 for that user only, so spike-register.service, which has no capabilities, cannot reach it. Set services.spike.spire.enable (a static user and group spire-server, spike-register in that group), or give spire-server a static group and add it to systemd.services.spike-register.serviceConfig.SupplementaryGroups.";
    })
  ];
}
