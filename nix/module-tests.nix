# Tests of nixos-modules/ under lib.evalModules (see nix/eval-modules.nix), with nixpkgs' lib
# from a checkout of nixpkgs or nixpkgs.lib:
#   nix-instantiate --eval --strict nix/module-tests.nix --arg lib 'import /path/to/nixpkgs.lib/lib'
# Evaluates to the list of failures ([] when every case passes).
{ lib }:
let
  evalWith =
    args:
    import ./eval-modules.nix (
      args
      // {
        inherit lib;
        configuration.imports = [ args.configuration ];
      }
    );
  eval = configuration: evalWith { inherit configuration; };
  case = name: actual: expected: { inherit name actual expected; };
  has = sub: msgs: lib.any (lib.hasInfix sub) msgs;

  quickStart = import ./quick-start.nix { inherit lib; };
  # The README's quick start: one box, 5 keepers, threshold 3.
  box = eval (quickStart { threshold = 3; });
  c = box.config;
  peers = map (p: "https://127.0.0.1:${toString p}") (lib.range 8441 8445);

  bad = extra: (eval (lib.recursiveUpdate (quickStart { }) extra)).failedAssertions;

  # The quick start (3 keepers) with something changed, evaluated.
  boxWith = extra: eval (lib.recursiveUpdate (quickStart { keepers = 3; }) extra);
  # Whether evaluating `v` throws (a type error, a read-only option set twice).
  throws = v: !(builtins.tryEval (builtins.deepSeq v v)).success;

  # Shard sealing: off (the quick start), host+tpm2 bound to PCR 7, host.
  sealedBoth = boxWith {
    services.spike.keepers = {
      shardSealing = "host+tpm2";
      shardSealingPcrs = [ 7 ];
    };
  };
  sb = sealedBoth.config;
  sealedHost = (boxWith { services.spike.keepers.shardSealing = "host"; }).config;
  sealedAuto = (boxWith { services.spike.keepers.shardSealing = "auto"; }).config;
  sealedNode = vmNode (import ../vm-tests/appliance-node.nix {
    shardSealing = "tpm2";
    shardSealingPcrs = [ 7 ];
  });
  # The build-time check's script, for a keeper.toml with shard_sealing = "tpm2".
  tpmCheckScript = (evalWith {
    configuration.services.spike = {
      trustDomain = "example.org";
      keepers = {
        enable = true;
        shardSealing = "tpm2";
      };
    };
    pkgsOverrides.runCommand = _name: _env: script: "/" + script;
  }).config.environment.etc."spike/keeper.toml".source;
  # As install.sh's drop-in writes them: %i is the instance.
  credential = "shard-sealing-key:/var/lib/spike-sealing/keeper-%i/key.cred";
  sealingOf = conf: i: lib.filterAttrs (n: _: lib.elem n [
    "StateDirectory"
    "StateDirectoryMode"
    "LoadCredentialEncrypted"
  ]) conf.systemd.services."spike-keeper@${toString i}".serviceConfig;

  warned = extra: (eval (lib.recursiveUpdate (quickStart { }) extra)).warnings;

  keeperHost = eval {
    services.spike = {
      trustDomain = "example.org";
      keepers = {
        enable = true;
        instances = [ 2 ];
        listenAddress = "0.0.0.0";
        openFirewall = true;
      };
    };
    services.spire.agent = {
      enable = true;
      settings.agent = {
        trust_domain = "example.org";
        server_address = "server";
      };
    };
  };
  k = keeperHost.config;

  moved = (eval {
    services.spike = {
      trustDomain = "example.org";
      spire.enable = true;
      keepers.enable = true;
      nexus = {
        enable = true;
        settings.listen = "127.0.0.1:9000";
      };
      bootstrap.enable = false;
    };
  }).config;

  memory = eval {
    services.spike = {
      trustDomain = "example.org";
      nexus = {
        enable = true;
        settings.backend_store = "memory";
      };
    };
  };

  # The nodes of the VM tests (vm-tests/*.nix), with the stand-in pkgs of eval-modules.nix.
  stubPkgs = (eval { }).pkgs;
  vmNode = node: eval node;
  scenarioNodes = (import ../vm-tests/scenario.nix "fresh_boot" { inherit lib; }).nodes;
  multiHost = import ../vm-tests/multi_host.nix {
    inherit lib;
    pkgs = stubPkgs;
  };
  multiServer = (vmNode multiHost.nodes.server).config;
  multiKeeper = (vmNode multiHost.nodes.keeper2).config;

  # power_cut_sealed: one appliance per sealing mode, a TPM2 on two of them.
  sealedScenario = (import ../vm-tests/scenario.nix "power_cut_sealed" { inherit lib; }).nodes;
  pcsTpm = (vmNode sealedScenario.tpm2).config;
  pcsHost = (vmNode sealedScenario.host).config;
  firmware = pcsTpm.systemd.services.vm-test-firmware;
  # The firmware's script, as written (writeShellScript returns its text here).
  firmwareScript = (evalWith {
    configuration = sealedScenario.host_tpm2;
    pkgsOverrides.writeShellScript = _name: text: "/" + text;
  }).config.systemd.services.vm-test-firmware.serviceConfig.ExecStart;

  # sealing_hosts: a server, three keeper hosts in three modes, and the thief.
  sealingHosts = import ../vm-tests/sealing_hosts.nix { inherit lib; };
  sh = lib.mapAttrs (_: vmNode) sealingHosts.nodes;
  shKeepers = [
    "keeper1"
    "keeper2"
    "keeper3"
    "thief"
  ];
  shOf = f: map (n: f sh.${n}.config) shKeepers;

  # A keeper.toml the module cannot read (a string path) and one it can (a Nix path).
  stringFile = boxWith { services.spike.keepers.configFile = "/etc/spike-local/keeper.toml"; };
  stringFileSealed = boxWith {
    services.spike.keepers = {
      configFile = "/etc/spike-local/keeper.toml";
      shardSealing = "host";
    };
  };
  pathFile = boxWith { services.spike.keepers.configFile = ../config-examples/keeper-full.toml; };
  removeRules = [
    "R /var/lib/spike-sealing - - - - -"
    "R /var/lib/private/spike-keeper - - - - -"
    "R /var/lib/spike-keeper - - - - -"
  ];

  # nixpkgs' spire/server.nix sets DynamicUser = true; the module must win over it.
  nixpkgsServer = boxWith { systemd.services.spire-server.serviceConfig.DynamicUser = true; };
  # The quick start with its generated scripts as text (writeShellScript returns it here).
  scriptsOf =
    configuration:
    (evalWith {
      configuration = lib.recursiveUpdate (quickStart { keepers = 3; }) configuration;
      pkgsOverrides.writeShellScript = _name: text: "/" + text;
    }).config;
  scripts = scriptsOf { };
  movedSockets = scriptsOf {
    services.spire.server.settings.server.socket_path = "/run/spire-server.sock";
    services.spire.agent.settings.agent.socket_path = "/run/spire-agent.sock";
  };
  # nixpkgs' example plugins for both (spire/server.nix, spire/agent.nix).
  memoryKeys = boxWith {
    services.spire.server.settings.plugins.KeyManager.memory.plugin_data = { };
    services.spire.agent.settings.plugins.KeyManager.memory.plugin_data = { };
  };

  moduleFiles = map (f: ../nixos-modules + "/${f}.nix") [
    "default"
    "spire"
    "nexus"
    "keepers"
    "bootstrap"
    "pilot"
  ];
  # The options of services.spike.*, sub-options of submodules included (not evaluated: the
  # module system's check is off, so no configuration is needed).
  specOptions =
    (lib.evalModules {
      modules = [
        ../nixos-modules
        { _module.check = false; }
      ];
      specialArgs.pkgs = stubPkgs;
    }).options;
  allOptions =
    opts:
    lib.concatMap (
      o: [ o ] ++ allOptions (o.type.getSubOptions o.loc)
    ) (lib.collect lib.isOption opts);
  undescribed = map (o: lib.showOption o.loc) (
    builtins.filter (o: (o.description or null) == null) (allOptions specOptions.services.spike)
  );

  # PostgreSQL (docs/ha.md): the quick start (3 keepers) with a local or a remote database.
  # `writeText` and the TOML generator return their input as text here, so the connection
  # string and the rendered nexus.toml can be read.
  pgEval =
    extra:
    evalWith {
      configuration = lib.recursiveUpdate (quickStart { keepers = 3; }) (
        lib.recursiveUpdate { services.spike.nexus.checkConfig = false; } extra
      );
      pkgsOverrides = {
        writeText = _name: text: "/" + text;
        formats = stubPkgs.formats // {
          toml = _: {
            inherit (stubPkgs.formats.toml { }) type;
            generate = _name: value: "/" + builtins.toJSON value;
          };
        };
      };
    };
  # nexus.toml as generated (JSON here), and the value of LoadCredential=.
  nexusToml = e: builtins.fromJSON (lib.removePrefix "/" e.config.environment.etc."spike/nexus.toml".source);
  credentialOf = e: e.config.systemd.services.spike-nexus.serviceConfig.LoadCredential or null;
  pgLocal = pgEval { services.spike.nexus.postgres.enableLocal = true; };
  pgRemote = pgEval {
    services.spike.nexus = {
      postgres = {
        connectionFile = "/etc/spike/nexus-db.conninfo";
        caFile = "/etc/spike/postgres-ca.pem";
        allowedAddresses = [
          "10.0.5.11"
          "10.0.5.12"
        ];
      };
      ipAddressAllow = [ "10.0.1.0/24" ];
      settings.postgres = {
        pool_size = 32;
        timeout = "3s";
      };
    };
  };
  pgBad = extra: (pgEval extra).failedAssertions;
  pgWarned = extra: (pgEval extra).warnings;
  # ha.nix: the VM test's nodes (the scenario ha.py is another part's; only the nodes here).
  ha = import ../vm-tests/ha.nix {
    inherit lib;
    pkgs = stubPkgs;
  };
  haNodes = lib.mapAttrs (_: vmNode) ha.nodes;
  haNexus = map (n: haNodes.${n}.config) [
    "nexus1"
    "nexus2"
  ];
  haDb = haNodes.db.config;

  mismatch = bad {
    services.spike.bootstrap.settings.shamir_threshold = 2;
  };

  cases = [
    (case "quick start: no failed assertions" box.failedAssertions [ ])
    (case "quick start: no warnings" box.warnings [ ])
    (case "nexus keeper_peers" c.services.spike.nexus.settings.keeper_peers peers)
    (case "nexus shares" c.services.spike.nexus.settings.shamir_shares 5)
    (case "nexus threshold" c.services.spike.nexus.settings.shamir_threshold 3)
    (case "keepers pinned by position" [
      c.services.spike.nexus.settings.keeper_identity
      c.services.spike.bootstrap.settings.keeper_identity
    ] [ "position" "position" ])
    (case "threshold 1 warned" (has "services.spike.nexus.settings.shamir_threshold = 1" (warned { services.spike.shamir.threshold = 1; })) true)
    (case "threshold 1 warned for bootstrap" (has "services.spike.bootstrap.settings.shamir_threshold = 1" (warned { services.spike.shamir.threshold = 1; })) true)
    (case "role-only keepers warned" (has "services.spike.nexus.settings.keeper_identity = \"role\"" (warned { services.spike.nexus.settings.keeper_identity = "role"; services.spike.bootstrap.settings.keeper_identity = "role"; })) true)
    (case "bootstrap agrees" (with c.services.spike.bootstrap.settings; [
      keeper_peers
      shamir_shares
      shamir_threshold
      nexus_api_url
    ]) [
      peers
      5
      3
      "https://127.0.0.1:8553"
    ])
    (case "trust roots default to the trust domain" c.services.spike.nexus.settings.trust_roots {
      nexus = "example.org";
      keeper = "example.org";
      bootstrap = "example.org";
      pilot = "example.org";
      lite_workload = "example.org";
    })
    (case "config files in /etc/spike" (builtins.attrNames c.environment.etc) [
      "spike/bootstrap.toml"
      "spike/keeper.toml"
      "spike/nexus.toml"
      "spike/pilot.toml"
    ])
    (case "configs are checked at build time" c.environment.etc."spike/nexus.toml".source
      "/nix/store/00000000000000000000000000000000-spike-nexus-checked.toml"
    )
    (case "units come from the package" (map toString c.systemd.packages) [ "/nix/store/00000000000000000000000000000000-spike-rs" ])
    (case "spike.target enabled" c.systemd.targets.spike.wantedBy [ "multi-user.target" ])
    (case "nexus not restarted by switch" c.systemd.services.spike-nexus.restartIfChanged false)
    (case "keepers not restarted by switch" (map (i: c.systemd.services."spike-keeper@${toString i}".restartIfChanged) (lib.range 1 5)) (lib.genList (_: false) 5))
    (case "keeper instances are drop-ins" (lib.unique (map (i: [
      c.systemd.services."spike-keeper@${toString i}".overrideStrategy
      c.systemd.sockets."spike-keeper@${toString i}".overrideStrategy
    ]) (lib.range 1 5))) [ [ "asDropin" "asDropin" ] ])
    (case "keeper 5 socket" c.systemd.sockets."spike-keeper@5".listenStreams [
      ""
      "127.0.0.1:8445"
    ])
    (case "nexus socket unchanged" c.systemd.sockets.spike-nexus.listenStreams [ ])
    (case "nexus socket stays on loopback" c.systemd.sockets.spike-nexus.socketConfig { })
    (case "metrics socket unchanged" c.systemd.sockets.spike-nexus-metrics.listenStreams [ ])
    (case "health socket group" (c.users.groups ? spike-health) true)
    (case "workload API socket: nixpkgs' agent socket" c.systemd.services.spike-nexus.environment.SPIFFE_ENDPOINT_SOCKET "unix:///run/spire/agent/public/api.sock")
    (case "pilot endpoint" c.services.spike.pilot.settings.spiffe_endpoint_socket "unix:///run/spire/agent/public/api.sock")
    (case "spire server at nixpkgs' socket path" [
      c.services.spire.server.settings.server.socket_path
      c.services.spike.spire.serverSocket
    ] [ "/run/spire/server/private/api.sock" "/run/spire/server/private/api.sock" ])
    (case "spire sockets in nixpkgs' runtime dirs: none added" [
      (c.systemd.services.spire-server.serviceConfig ? RuntimeDirectory)
      (c.systemd.services.spire-agent.serviceConfig ? RuntimeDirectory)
    ] [ false false ])
    (case "agent joined once" c.systemd.services.spire-agent.serviceConfig.EnvironmentFile "-/run/spike-spire-agent-join/token.env")
    (case "registrations" (map (e: e.selector) c.services.spike.spire.registrations) ([
      "systemd:id:spike-nexus.service"
      "systemd:id:spike-bootstrap.service"
    ] ++ map (i: "systemd:id:spike-keeper@${toString i}.service") (lib.range 1 5) ++ [
      "unix:uid:0"
      "systemd:id:spike-recover.service"
      "systemd:id:spike-restore.service"
    ]))
    (case "registration parent" (lib.unique (map (e: e.parentId) c.services.spike.spire.registrations)) [ "spiffe://example.org/node/local" ])
    (case "spike-register replaced by a drop-in" (builtins.length c.systemd.services.spike-register.serviceConfig.ExecStart) 2)

    (case "spire-server: static user and group, not nixpkgs' DynamicUser" (with nixpkgsServer.config; [
      (lib.filterAttrs (n: _: lib.elem n [ "DynamicUser" "User" "Group" ]) systemd.services.spire-server.serviceConfig)
      users.users.spire-server
      (users.groups ? spire-server)
    ]) [
      {
        DynamicUser = false;
        User = "spire-server";
        Group = "spire-server";
      }
      {
        isSystemUser = true;
        group = "spire-server";
        description = "SPIRE server";
      }
      true
    ])
    (case "admin socket users: the group, no capabilities" (map (u: with c.systemd.services.${u}.serviceConfig; [
      SupplementaryGroups
      (c.systemd.services.${u}.serviceConfig.CapabilityBoundingSet or "(the packaged unit's: empty)")
    ]) [ "spike-register" "spike-spire-agent-join" ]) [
      [ [ "spire-server" ] "(the packaged unit's: empty)" ]
      [ [ "spire-server" ] "" ]
    ])
    (case "admin socket users: nixpkgs' server alone (DynamicUser) is warned about" (has "spire-server runs with DynamicUser (nixpkgs' services.spire.server)" (eval {
      services.spike = {
        trustDomain = "example.org";
        nexus = {
          enable = true;
          settings.backend_store = "memory";
        };
      };
      services.spire.server = {
        enable = true;
        settings.server.trust_domain = "example.org";
      };
      systemd.services.spire-server.serviceConfig.DynamicUser = true;
    }).warnings) true)
    (case "admin socket users: not warned when the module runs the server" nixpkgsServer.warnings [ ])
    (case "admin socket users: no group without the module's server" (k.systemd.services.spike-register.serviceConfig ? SupplementaryGroups) false)
    (case "readiness: spire-server health check on its socket" (lib.all (l: lib.hasInfix l (lib.head scripts.systemd.services.spire-server.serviceConfig.ExecStartPost)) [
      "$(/nix/store/00000000000000000000000000000000-coreutils/bin/seq 1 300)"
      "/nix/store/00000000000000000000000000000000-spire/bin/spire-server healthcheck -socketPath /run/spire/server/private/api.sock >/dev/null 2>&1 && exit 0"
      "sleep 0.2"
      "spire-server: not healthy after 60 s"
      "exit 1"
    ]) true)
    (case "readiness: spire-agent health check on its socket" (lib.all (l: lib.hasInfix l (lib.head scripts.systemd.services.spire-agent.serviceConfig.ExecStartPost)) [
      "/nix/store/00000000000000000000000000000000-spire/bin/spire-agent healthcheck -socketPath /run/spire/agent/public/api.sock >/dev/null 2>&1 && exit 0"
      "spire-agent: not healthy after 60 s"
    ]) true)
    (case "readiness: health checks follow the configured sockets" (map (u: lib.hasInfix "-socketPath /run/${u}.sock >" (lib.head movedSockets.systemd.services.${u}.serviceConfig.ExecStartPost)) [
      "spire-server"
      "spire-agent"
    ]) [ true true ])
    (case "readiness: no health checks on units the module did not enable" (k.systemd.services ? spire-agent) false)
    (case "join skipped once attested: nixpkgs' state directory" c.systemd.services.spike-spire-agent-join.unitConfig.ConditionPathExists "!/var/lib/spire/agent/agent-data.json")
    (case "join skipped once attested: the agent's data_dir" (map (d: (boxWith { services.spire.agent.settings.agent.data_dir = d; }).config.systemd.services.spike-spire-agent-join.unitConfig.ConditionPathExists) [
      "/srv/spire-agent"
      "\${STATE_DIRECTORY}/data"
    ]) [
      "!/srv/spire-agent/agent-data.json"
      "!/var/lib/spire/agent/data/agent-data.json"
    ])
    (case "join: a data_dir it cannot resolve is refused" (has "services.spire.agent.settings.agent.data_dir ($HOME/spire) must be an absolute path" (boxWith { services.spire.agent.settings.agent.data_dir = "$HOME/spire"; }).failedAssertions) true)
    (case "Debian's spike-spire-join: neither declared nor ordered against on NixOS" [
      (c.systemd.services ? spike-spire-join)
      (k.systemd.services ? spike-spire-join)
      (lib.any (u: lib.hasInfix "spike-spire-join" u) (c.systemd.services.spike-register.after or [ ]))
    ] [ false false false ])
    (case "KeyManager: disk by default" [
      c.services.spire.server.settings.plugins.KeyManager
      c.services.spire.agent.settings.plugins.KeyManager
    ] [
      { disk.plugin_data.keys_path = "$STATE_DIRECTORY/keys.json"; }
      { disk.plugin_data.directory = "$STATE_DIRECTORY"; }
    ])
    (case "KeyManager: nixpkgs' example memory replaces disk" (with memoryKeys.config.services.spire; [
      server.settings.plugins.KeyManager
      agent.settings.plugins.KeyManager
    ]) [
      { memory.plugin_data = { }; }
      { memory.plugin_data = { }; }
    ])
    (case "KeyManager: memory evaluates" memoryKeys.failedAssertions [ ])
    (case "module conventions: meta.maintainers in every module" (map (f: (import f {
      inherit lib;
      config = { };
      pkgs = stubPkgs;
    }).meta.maintainers or "missing") moduleFiles) (map (_: [ ]) moduleFiles))
    (case "module conventions: every option has a description" undescribed [ ])
    (case "module conventions: the package option as mkPackageOption declares it" (with specOptions.services.spike.package; [
      type.name
      defaultText
    ]) [
      "package"
      (lib.literalExpression "pkgs.spike-rs")
    ])

    (case "shares vs keepers" (has "services.spike.shamir.shares (4) must equal the number of services.spike.keeperPeers (5)" (bad { services.spike.shamir.shares = 4; })) true)
    (case "nexus shares vs peers" (has "services.spike.nexus.settings.shamir_shares (4) must equal the number of services.spike.nexus.settings.keeper_peers (5)" (bad { services.spike.nexus.settings.shamir_shares = 4; })) true)
    (case "threshold range" (has "services.spike.shamir.threshold (6) must be between 1 and services.spike.shamir.shares (5)" (bad { services.spike.shamir.threshold = 6; })) true)
    (case "threshold zero" (has "services.spike.nexus.settings.shamir_threshold (0) must be between 1" (bad { services.spike.nexus.settings.shamir_threshold = 0; })) true)
    (case "trust root empty element" (bad { services.spike.nexus.settings.trust_roots.keeper = "a.org,"; }) [
      "services.spike.nexus.settings.trust_roots.keeper (\"a.org,\") has an empty element"
    ])
    (case "trust root spiffe id" (has "services.spike.keepers.settings.trust_roots.nexus" (bad { services.spike.keepers.settings.trust_roots.nexus = "spiffe://a.org/spike/nexus"; })) true)
    (case "secret in the store" (has "services.spike.spire.agentJoinTokenFile (/nix/store/x-token) is in the Nix store" (bad { services.spike.spire.agentJoinTokenFile = "/nix/store/x-token"; })) true)
    (case "bootstrap vs nexus" (has "services.spike.bootstrap.settings.{keeper_peers,keeper_identity,shamir_shares,shamir_threshold} must equal" mismatch) true)
    (case "duplicate keeper" (has "keeper_peers lists a keeper twice" (bad { services.spike.keeperPeers = [ "https://a:1" "https://a:1" ]; services.spike.shamir.shares = 2; })) true)

    (case "keeper host: socket on every address" k.systemd.sockets."spike-keeper@2".listenStreams [
      ""
      "0.0.0.0:8442"
    ])
    (case "keeper host: firewall" k.networking.firewall.allowedTCPPorts [ 8442 ])
    (case "keeper host: registration masked" k.systemd.services.spike-register.enable false)
    (case "keeper host: no appliance target" (k.systemd.targets ? spike) false)
    (case "keeper host: no nexus config" (builtins.attrNames k.environment.etc) [ "spike/keeper.toml" ])
    (case "keeper host: nixpkgs' agent socket" k.systemd.services."spike-keeper@2".environment.SPIFFE_ENDPOINT_SOCKET "unix:///run/spire/agent/public/api.sock")
    (case "keeper host: no extra runtime dirs" (k.systemd.services ? spire-agent) false)
    (case "keeper host: assertions" keeperHost.failedAssertions [ ])

    (case "sealing off: keeper.toml" (with c.services.spike.keepers.settings; [
      shard_sealing
      shard_sealing_pcrs
    ]) [
      "off"
      [ ]
    ])
    (case "sealing off: no credential, no state directory" (map (sealingOf c) (lib.range 1 5)) (lib.genList (_: { }) 5))
    (case "sealing off: no sealing unit" (lib.any (i: c.systemd.services ? "spike-keeper-sealing@${toString i}") (lib.range 1 5)) false)
    (case "sealing off: no dependency" (lib.unique (map (i: with c.systemd.services."spike-keeper@${toString i}"; requires ++ after) (lib.range 1 5))) [ [ ] ])
    (case "sealing off: TPM left alone" c.security.tpm2.enable false)
    (case "sealing off: earlier sealed shards removed" c.systemd.tmpfiles.rules [
      "R /var/lib/spike-sealing - - - - -"
      "R /var/lib/private/spike-keeper - - - - -"
      "R /var/lib/spike-keeper - - - - -"
    ])

    (case "sealing host+tpm2: assertions" sealedBoth.failedAssertions [ ])
    (case "sealing host+tpm2: no warnings" sealedBoth.warnings [ ])
    (case "sealing host+tpm2: keeper.toml" (with sb.services.spike.keepers.settings; [
      shard_sealing
      shard_sealing_pcrs
    ]) [
      "host+tpm2"
      [ 7 ]
    ])
    (case "sealing host+tpm2: credential and state directory" (map (sealingOf sb) [ 1 3 ]) (lib.genList (_: {
      StateDirectory = "spike-keeper/%i";
      StateDirectoryMode = "0700";
      LoadCredentialEncrypted = credential;
    }) 2))
    (case "sealing host+tpm2: keeper 2 requires its sealing unit, after it" (with sb.systemd.services."spike-keeper@2"; {
      inherit requires after;
    }) {
      requires = [ "spike-keeper-sealing@2.service" ];
      after = [ "spike-keeper-sealing@2.service" ];
    })
    (case "sealing host+tpm2: sealing units are drop-ins after the TPM" (map (i: with sb.systemd.services."spike-keeper-sealing@${toString i}"; [
      overrideStrategy
      after
    ]) [ 1 2 3 ]) (lib.genList (_: [ "asDropin" [ "tpm2.target" ] ]) 3))
    (case "sealing host+tpm2: keepers stay drop-ins, not restarted by switch" (with sb.systemd.services."spike-keeper@1"; [
      overrideStrategy
      restartIfChanged
    ]) [ "asDropin" false ])
    (case "sealing host+tpm2: TPM2 enabled" sb.security.tpm2.enable true)
    (case "sealing host+tpm2: sealed shards kept" sb.systemd.tmpfiles.rules [ ])
    (case "sealing tpm2: checked at build time as auto (the TPM2 is the target's)" (lib.hasInfix ''
      sed -E 's/^([[:space:]]*shard_sealing[[:space:]]*=[[:space:]]*)"(tpm2|host\+tpm2)"/\1"auto"/' /nix/store/00000000000000000000000000000000-spike-keeper.toml > check.toml
      /nix/store/00000000000000000000000000000000-spike-rs/bin/spike-keeper check-config --config check.toml
      cp /nix/store/00000000000000000000000000000000-spike-keeper.toml $out
    '' tpmCheckScript) true)
    (case "sealing host: credential" (sealingOf sealedHost 2).LoadCredentialEncrypted credential)
    (case "sealing host: no TPM" [
      sealedHost.security.tpm2.enable
      sealedHost.systemd.services."spike-keeper-sealing@2".overrideStrategy
      sealedHost.systemd.services."spike-keeper-sealing@2".after
    ] [ false "asDropin" [ ] ])
    (case "sealing auto: waits for a TPM2, does not require one" [
      sealedAuto.systemd.services."spike-keeper-sealing@1".after
      sealedAuto.security.tpm2.enable
    ] [ [ "tpm2.target" ] false ])
    (case "sealing host: PCRs refused" (has "services.spike.keepers.shardSealingPcrs ([7]) binds to TPM2 PCRs, but services.spike.keepers.shardSealing = \"host\"" (boxWith {
      services.spike.keepers = {
        shardSealing = "host";
        shardSealingPcrs = [ 7 ];
      };
    }).failedAssertions) true)
    (case "sealing off: PCRs refused" (has "services.spike.keepers.shardSealing = \"off\" uses no TPM2" (boxWith { services.spike.keepers.shardSealingPcrs = [ 7 ]; }).failedAssertions) true)
    (case "sealing: PCR 24 refused" (throws (boxWith {
      services.spike.keepers = {
        shardSealing = "tpm2";
        shardSealingPcrs = [ 24 ];
      };
    }).config.services.spike.keepers.shardSealingPcrs) true)
    (case "sealing: unknown mode refused" (throws (boxWith { services.spike.keepers.shardSealing = "tpm"; }).config.services.spike.keepers.shardSealing) true)
    (case "sealing: one value (settings.shard_sealing is read-only)" (throws (boxWith { services.spike.keepers.settings.shard_sealing = "host"; }).config.services.spike.keepers.settings.shard_sealing) true)
    (case "sealing: configFile must agree" (has "services.spike.keepers.configFile (${toString ../config-examples/keeper-full.toml}) has shard_sealing = \"off\", but services.spike.keepers.shardSealing = \"tpm2\"" (boxWith {
      services.spike.keepers = {
        shardSealing = "tpm2";
        configFile = ../config-examples/keeper-full.toml;
      };
    }).failedAssertions) true)
    (case "sealing: configFile that agrees" (boxWith { services.spike.keepers.configFile = ../config-examples/keeper-full.toml; }).failedAssertions [ ])
    (case "vm test node with sealing: evaluates" sealedNode.failedAssertions [ ])
    (case "vm test node with sealing: a TPM2 in the VM" [
      sealedNode.config.virtualisation.tpm.enable
      sealedNode.config.services.spike.keepers.settings.shard_sealing_pcrs
    ] [ true [ 7 ] ])

    (case "sealing: configFile as a string is warned about" (has "services.spike.keepers.configFile (/etc/spike-local/keeper.toml) is not a Nix path, so its shard_sealing cannot be read at evaluation: services.spike.keepers.shardSealing (\"off\") must equal it" stringFile.warnings) true)
    (case "sealing: configFile as a string, sealing on, warned too" (has "services.spike.keepers.shardSealing (\"host\") must equal it" stringFileSealed.warnings) true)
    (case "sealing: configFile as a string, off: sealed state not removed" stringFile.config.systemd.tmpfiles.rules [ ])
    (case "sealing: configFile as a string: evaluates" stringFile.failedAssertions [ ])
    (case "sealing: configFile as a Nix path, off: not warned, sealed state removed" [
      pathFile.warnings
      pathFile.config.systemd.tmpfiles.rules
    ] [ [ ] removeRules ])
    (case "sealing: PCRs option says what empty means" (with (lib.evalModules {
      modules = [ ../nixos-modules/keepers.nix { _module.check = false; } ];
      specialArgs.pkgs = stubPkgs;
    }).options.services.spike.keepers; [
      (lib.hasInfix "systemd 252 (Debian 12) binds PCR 7" shardSealingPcrs.description)
      (lib.hasInfix "Default: none" shardSealingPcrs.description)
      (lib.hasInfix "key.cred.params" shardSealing.description)
    ]) [ true false true ])

    (case "vm test power_cut_sealed: nodes" (builtins.attrNames sealedScenario) [
      "host"
      "host_tpm2"
      "tpm2"
    ])
    (case "vm test power_cut_sealed: nodes evaluate" (lib.concatMap (n: (vmNode n).failedAssertions) (builtins.attrValues sealedScenario)) [ ])
    (case "vm test power_cut_sealed: modes and TPM2s" (map (n: with (vmNode sealedScenario.${n}).config; [
      services.spike.keepers.shardSealing
      services.spike.keepers.shardSealingPcrs
      (virtualisation.tpm.enable or false)
      (systemd.services ? vm-test-firmware)
      (lib.elem stubPkgs.tpm2-tools environment.systemPackages)
    ]) [ "host" "tpm2" "host_tpm2" ]) [
      [ "host" [ ] false false false ]
      [ "tpm2" [ 7 ] true true true ]
      [ "host+tpm2" [ ] true true true ]
    ])
    (case "vm test power_cut_sealed: firmware measures before sysinit and every sealing unit" (with firmware; {
      inherit wantedBy before conflicts;
      inherit (unitConfig) DefaultDependencies ConditionPathExists;
      inherit (serviceConfig) Type;
    }) {
      wantedBy = [ "sysinit.target" ];
      before = [
        "sysinit.target"
        "shutdown.target"
        "spike-keeper-sealing@1.service"
        "spike-keeper-sealing@2.service"
        "spike-keeper-sealing@3.service"
      ];
      conflicts = [ "shutdown.target" ];
      DefaultDependencies = false;
      ConditionPathExists = "/var/lib/vm-test-firmware/pcr7";
      Type = "oneshot";
    })
    (case "vm test power_cut_sealed: firmware after the TPM2 and the file" (lib.all (u: lib.elem u firmware.after) [
      "tpm2.target"
      "dev-tpmrm0.device"
      "systemd-tmpfiles-setup.service"
    ]) true)
    (case "vm test power_cut_sealed: the first boot measures v1" (lib.elem "f /var/lib/vm-test-firmware/pcr7 0644 root root - secure-boot-db-v1" pcsTpm.systemd.tmpfiles.rules) true)
    (case "vm test power_cut_sealed: firmware extends PCR 7 with sha256 of the file's text" (lib.all (l: lib.hasInfix l firmwareScript) [
      "text=$(cat /var/lib/vm-test-firmware/pcr7)"
      "digest=$(printf %s \"$text\" | sha256sum | cut -c1-64)"
      "tpm2_pcrextend \"7:sha256=$digest\""
    ]) true)
    (case "vm test power_cut_sealed: the TPM2 forgives power cuts as the nspawn driver's (32 tries)" (lib.hasInfix "tpm2_dictionarylockout --setup-parameters --max-tries=32 " pcsTpm.virtualisation.tpm.provisioning) true)
    (case "vm test power_cut_sealed: firmware reaches the TPM2 directly" firmware.environment.TPM2TOOLS_TCTI "device:/dev/tpmrm0")
    (case "vm test power_cut_sealed: no firmware without a TPM2" [
      (pcsHost.systemd.services ? vm-test-firmware)
      pcsHost.systemd.tmpfiles.rules
    ] [ false [ ] ])

    (case "vm test sealing_hosts: nodes" (builtins.attrNames sh) [
      "keeper1"
      "keeper2"
      "keeper3"
      "server"
      "thief"
    ])
    (case "vm test sealing_hosts: nodes evaluate" (lib.concatMap (n: n.failedAssertions) (builtins.attrValues sh)) [ ])
    (case "vm test sealing_hosts: the server has Nexus and no keeper" (with sh.server.config.services.spike; [
      nexus.enable
      keepers.enable
      spire.enable
    ]) [ true false true ])
    (case "vm test sealing_hosts: remote keepers" sh.server.config.services.spike.nexus.settings.keeper_peers [
      "https://10.78.0.11:8443"
      "https://10.78.0.12:8443"
      "https://10.78.0.13:8443"
    ])
    (case "vm test sealing_hosts: nexus and bootstrap may dial the keepers (--allow-net)" (with sh.server.config.systemd.services; [
      spike-nexus.serviceConfig.IPAddressAllow
      spike-bootstrap.serviceConfig.IPAddressAllow
    ]) [ [ "10.78.0.0/24" ] [ "10.78.0.0/24" ] ])
    (case "vm test sealing_hosts: threshold 2 of 3" (with sh.server.config.services.spike.nexus.settings; [
      shamir_shares
      shamir_threshold
    ]) [ 3 2 ])
    (case "vm test sealing_hosts: keepers registered by the scenario, not the module" (map (e: e.spiffeId) sh.server.config.services.spike.spire.registrations) [
      "spiffe://spike.internal/spike/nexus"
      "spiffe://spike.internal/spike/bootstrap"
      "spiffe://spike.internal/spike/pilot/role/superuser"
      "spiffe://spike.internal/spike/pilot/role/recover"
      "spiffe://spike.internal/spike/pilot/role/restore"
    ])
    (case "vm test sealing_hosts: one keeper per host, in its own mode" (shOf (c: with c.services.spike.keepers; [
      enable
      instances
      settings.shard_sealing
      (c.virtualisation.tpm.enable or false)
    ])) [
      [ true [ 1 ] "host" false ]
      [ true [ 2 ] "tpm2" true ]
      [ true [ 3 ] "host+tpm2" true ]
      [ true [ 1 ] "host+tpm2" true ]
    ])
    (case "vm test sealing_hosts: sealing units only where sealing" (shOf (c: lib.attrNames (lib.filterAttrs (n: _: lib.hasPrefix "spike-keeper-sealing@" n) c.systemd.services))) [
      [ "spike-keeper-sealing@1" ]
      [ "spike-keeper-sealing@2" ]
      [ "spike-keeper-sealing@3" ]
      [ "spike-keeper-sealing@1" ]
    ])
    (case "vm test sealing_hosts: each keeper on :8443 (install.sh --role keeper), reachable" (shOf (c: [
      (lib.last c.systemd.sockets."spike-keeper@${toString (builtins.head c.services.spike.keepers.instances)}".listenStreams)
      c.networking.firewall.allowedTCPPorts
    ])) (lib.genList (_: [ "0.0.0.0:8443" [ 8443 ] ]) 4))
    (case "vm test sealing_hosts: agents point at the server (--server-address)" (shOf (c: c.services.spire.agent.settings.agent.server_address)) (lib.genList (_: "10.78.0.10") 4))
    (case "vm test sealing_hosts: keeper agents read the scenario's token" (shOf (c: c.systemd.services.spire-agent.serviceConfig.EnvironmentFile)) (lib.genList (_: "-/run/spire-agent-join/token.env") 4))
    (case "vm test sealing_hosts: addresses of the script" (map (n: sh.${n}.config.networking.interfaces.eth1.ipv4.addresses) [ "server" "keeper2" "thief" ]) [
      [ { address = "10.78.0.10"; prefixLength = 24; } ]
      [ { address = "10.78.0.12"; prefixLength = 24; } ]
      [ { address = "10.78.0.20"; prefixLength = 24; } ]
    ])
    (case "vm test sealing_hosts: perl for the plaintext scan" (lib.all (n: lib.elem stubPkgs.perl n.config.environment.systemPackages) (builtins.attrValues sh)) true)
    (case "vm test sealing_hosts: runbook in the test script" (lib.hasInfix "runbook = loader(" sealingHosts.testScript) true)

    (case "memory backend: assertions" memory.failedAssertions [ ])
    (case "memory backend: no keeper keys" (with memory.config.services.spike.nexus.settings; [
      keeper_peers
      shamir_shares
      shamir_threshold
    ]) [
      null
      null
      null
    ])
    (case "memory backend: no bootstrap" memory.config.systemd.services.spike-bootstrap.enable false)

    (case "vm test fresh_boot: one node" (builtins.attrNames scenarioNodes) [ "machine" ])
    (case "vm test fresh_boot: node evaluates" (vmNode scenarioNodes.machine).failedAssertions [ ])
    (case "vm test fresh_boot: 3 keepers, threshold 2" (with (vmNode scenarioNodes.machine).config.services.spike.nexus.settings; [
      shamir_shares
      shamir_threshold
    ]) [
      3
      2
    ])
    (case "vm test multi_host: nodes" (builtins.attrNames multiHost.nodes) [
      "keeper1"
      "keeper2"
      "keeper3"
      "server"
    ])
    (case "vm test multi_host: nodes evaluate" (lib.concatMap (n: (vmNode n).failedAssertions) (builtins.attrValues multiHost.nodes)) [ ])
    (case "vm test multi_host: remote keepers" multiServer.services.spike.nexus.settings.keeper_peers [
      "https://keeper1:8441"
      "https://keeper2:8442"
      "https://keeper3:8443"
    ])
    (case "vm test multi_host: keepers registered by the scenario, not the module" (map (e: e.spiffeId) (multiServer.services.spike.spire.registrations ++ multiServer.services.spike.spire.extraRegistrations)) [
      "spiffe://spike.internal/spike/nexus"
      "spiffe://spike.internal/spike/bootstrap"
      "spiffe://spike.internal/spike/pilot/role/superuser"
      "spiffe://spike.internal/spike/pilot/role/recover"
      "spiffe://spike.internal/spike/pilot/role/restore"
    ])
    (case "vm test multi_host: keeper agent reads the scenario's token" multiKeeper.systemd.services.spire-agent.serviceConfig.EnvironmentFile "-/run/spire-agent-join/token.env")
    (case "vm test multi_host: nexus may dial the keepers" multiServer.systemd.services.spike-nexus.serviceConfig.IPAddressAllow [ "192.168.1.0/24" ])
    (case "vm test multi_host: keeper socket" multiKeeper.systemd.sockets."spike-keeper@2".listenStreams [ "" "0.0.0.0:8442" ])
    (case "vm test multi_host: keeper agent socket" multiKeeper.systemd.services."spike-keeper@2".environment.SPIFFE_ENDPOINT_SOCKET "unix:///run/spire-agent/public/api.sock")
    (case "vm test multi_host: keeper agent runtime dirs" multiKeeper.systemd.services.spire-agent.serviceConfig.RuntimeDirectory [
      "spire-agent"
      "spire-agent/public"
    ])

    (case "postgres local: evaluates, no warnings" [
      pgLocal.failedAssertions
      pgLocal.warnings
    ] [ [ ] [ ] ])
    (case "postgres local: the backend follows the option (Nexus and Bootstrap)" [
      pgLocal.config.services.spike.nexus.settings.backend_store
      pgLocal.config.services.spike.bootstrap.settings.backend_store
    ] [ "postgres" "postgres" ])
    (case "postgres local: services.postgresql with Nexus's database and role" (with pgLocal.config.services.postgresql; {
      inherit enable ensureDatabases;
      users = map (u: { inherit (u) name ensureDBOwnership; }) ensureUsers;
    }) {
      enable = true;
      ensureDatabases = [ "spike-nexus" ];
      users = [
        {
          name = "spike-nexus";
          ensureDBOwnership = true;
        }
      ];
    })
    (case "postgres local: peer authentication on the unix socket" (lib.splitString "\n" pgLocal.config.services.postgresql.authentication) [ "local spike-nexus spike-nexus peer" ])
    (case "postgres local: the connection string, as a credential" (credentialOf pgLocal) [
      "nexus-db:/host=/run/postgresql port=5432 dbname=spike-nexus user=spike-nexus sslmode=disable application_name=spike-nexus"
    ])
    (case "postgres local: the connection string follows the server's port" (credentialOf (pgEval {
      services.spike.nexus.postgres.enableLocal = true;
      services.postgresql.settings.port = 5433;
    })) [
      "nexus-db:/host=/run/postgresql port=5433 dbname=spike-nexus user=spike-nexus sslmode=disable application_name=spike-nexus"
    ])
    (case "postgres local: the connection string file is in the store (it holds no password)" (lib.hasPrefix "nexus-db:/nix/store/" (lib.head (credentialOf (boxWith { services.spike.nexus.postgres.enableLocal = true; })))) true)
    (case "postgres local: Nexus after PostgreSQL and its setup, wanting them, not requiring them" (with pgLocal.config.systemd.services.spike-nexus; {
      inherit after wants requires;
    }) {
      after = [ "postgresql.service" "postgresql-setup.service" ];
      wants = [ "postgresql.service" "postgresql-setup.service" ];
      requires = [ ];
    })
    (case "postgres local: nexus.toml" (with nexusToml pgLocal; [
      backend_store
      postgres
    ]) [
      "postgres"
      { credential = "nexus-db"; }
    ])
    (case "postgres local: IP allow-list unchanged" (pgLocal.config.systemd.services.spike-nexus.serviceConfig ? IPAddressAllow) false)
    (case "postgres local: Nexus still not restarted by switch" pgLocal.config.systemd.services.spike-nexus.restartIfChanged false)
    (case "postgres local: a CA is warned about (a unix socket has no TLS)" (has "services.spike.nexus.postgres.caFile is set, but services.spike.nexus.postgres.enableLocal connects over the unix socket" (pgWarned {
      services.spike.nexus.postgres = {
        enableLocal = true;
        caFile = "/etc/spike/postgres-ca.pem";
      };
    })) true)
    (case "postgres local: another credential name" (credentialOf (pgEval {
      services.spike.nexus.postgres.enableLocal = true;
      services.spike.nexus.settings.postgres.credential = "db";
    })) [
      "db:/host=/run/postgresql port=5432 dbname=spike-nexus user=spike-nexus sslmode=disable application_name=spike-nexus"
    ])

    (case "postgres remote: evaluates, no warnings" [
      pgRemote.failedAssertions
      pgRemote.warnings
    ] [ [ ] [ ] ])
    (case "postgres remote: the connection file, as a credential" (credentialOf pgRemote) [ "nexus-db:/etc/spike/nexus-db.conninfo" ])
    (case "postgres remote: nexus.toml" (with nexusToml pgRemote; [
      backend_store
      postgres
    ]) [
      "postgres"
      {
        credential = "nexus-db";
        ca_file = "/etc/spike/postgres-ca.pem";
        pool_size = 32;
        timeout = "3s";
      }
    ])
    (case "postgres remote: Nexus may dial the keepers' and the database's addresses" pgRemote.config.systemd.services.spike-nexus.serviceConfig.IPAddressAllow [
      "10.0.1.0/24"
      "10.0.5.11"
      "10.0.5.12"
    ])
    (case "postgres remote: no local PostgreSQL, no ordering on it" [
      pgRemote.config.services.postgresql.enable
      pgRemote.config.systemd.services.spike-nexus.after
    ] [ false [ ] ])
    (case "postgres remote: without a CA, warned (TCP hosts need one; the file is not read here)" (has "services.spike.nexus.postgres.connectionFile (/etc/spike/nexus-db.conninfo) is read by Nexus at start, not at evaluation, so its hosts cannot be checked here: if it names TCP hosts, Nexus refuses to start without services.spike.nexus.postgres.caFile" (pgWarned {
      services.spike.nexus.postgres.connectionFile = "/etc/spike/nexus-db.conninfo";
    })) true)
    (case "postgres remote: a store path refused" (has "services.spike.nexus.postgres.connectionFile (/nix/store/00000000000000000000000000000000-db.conninfo) is in the Nix store, which every local user can read" (pgBad {
      services.spike.nexus.postgres.connectionFile = "/nix/store/00000000000000000000000000000000-db.conninfo";
    })) true)
    (case "postgres remote: a Nix path literal refused (it would be copied to the store)" (has "services.spike.nexus.postgres.connectionFile is a Nix path literal" (pgBad {
      services.spike.nexus.postgres.connectionFile = ../config-examples/nexus-full.toml;
    })) true)
    (case "postgres remote: a Nix path literal is not loaded as a credential" (credentialOf (pgEval {
      services.spike.nexus.postgres.connectionFile = ../config-examples/nexus-full.toml;
    })) null)
    (case "postgres remote: a relative path refused" (has "services.spike.nexus.postgres.connectionFile (nexus-db.conninfo) must be an absolute path" (pgBad {
      services.spike.nexus.postgres.connectionFile = "nexus-db.conninfo";
    })) true)

    (case "postgres: both a local and a remote database refused" (has "services.spike.nexus.postgres.enableLocal and services.spike.nexus.postgres.connectionFile are both set" (pgBad {
      services.spike.nexus.postgres = {
        enableLocal = true;
        connectionFile = "/etc/spike/nexus-db.conninfo";
      };
    })) true)
    (case "postgres: the backend without a database refused" (has "services.spike.nexus.settings.backend_store = \"postgres\" needs a database: set services.spike.nexus.postgres.enableLocal = true (PostgreSQL on this host) or services.spike.nexus.postgres.connectionFile" (pgBad {
      services.spike.nexus.settings.backend_store = "postgres";
    })) true)
    (case "postgres: a database with another backend refused" (has "services.spike.nexus.postgres.enableLocal is set, but services.spike.nexus.settings.backend_store is \"sqlite\"" (pgBad {
      services.spike.nexus.postgres.enableLocal = true;
      services.spike.nexus.settings.backend_store = "sqlite";
    })) true)
    (case "postgres: with configFile, the file decides the backend" (pgBad {
      services.spike.nexus.postgres.connectionFile = "/etc/spike/nexus-db.conninfo";
      services.spike.nexus.postgres.caFile = "/etc/spike/postgres-ca.pem";
      services.spike.nexus.settings.backend_store = "sqlite";
      services.spike.nexus.configFile = "/etc/spike-local/nexus.toml";
    }) [ ])
    (case "postgres: a pool of 0 refused" (throws (pgEval {
      services.spike.nexus.postgres.enableLocal = true;
      services.spike.nexus.settings.postgres.pool_size = 0;
    }).config.services.spike.nexus.settings.postgres.pool_size) true)
    (case "postgres: no [postgres] table with another backend" [
      c.services.spike.nexus.settings.postgres
      (nexusToml (pgEval { }) ? postgres)
      (pgEval { }).config.services.postgresql.enable
    ] [ null false false ])
    (case "postgres: a second Nexus host runs no bootstrap" (with (pgEval {
      services.spike.nexus.postgres.connectionFile = "/etc/spike/nexus-db.conninfo";
      services.spike.nexus.postgres.caFile = "/etc/spike/postgres-ca.pem";
      services.spike.bootstrap.enable = false;
    }).config; [
      systemd.services.spike-bootstrap.enable
      (lib.any (e: lib.hasSuffix "/spike/bootstrap" e.spiffeId) services.spike.spire.registrations)
    ]) [ false false ])

    (case "vm test ha: nodes" (builtins.attrNames ha.nodes) [
      "db"
      "keeper1"
      "keeper2"
      "keeper3"
      "nexus1"
      "nexus2"
    ])
    (case "vm test ha: nodes evaluate" (lib.concatMap (n: n.failedAssertions) (builtins.attrValues haNodes)) [ ])
    (case "vm test ha: no warnings" (lib.concatMap (n: n.warnings) (builtins.attrValues haNodes)) [ ])
    (case "vm test ha: both Nexus on the shared database, one bootstrap" (map (c: [
      c.services.spike.nexus.settings.backend_store
      c.services.spike.nexus.postgres.connectionFile
      c.services.spike.nexus.settings.postgres.ca_file
      c.services.spike.bootstrap.enable
      (credentialOf { config = c; })
    ]) haNexus) [
      [ "postgres" "/etc/spike/nexus-db.conninfo" "/etc/spike/postgres-ca.pem" true [ "nexus-db:/etc/spike/nexus-db.conninfo" ] ]
      [ "postgres" "/etc/spike/nexus-db.conninfo" "/etc/spike/postgres-ca.pem" false [ "nexus-db:/etc/spike/nexus-db.conninfo" ] ]
    ])
    (case "vm test ha: the connection file is root's alone" (map (c: c.environment.etc."spike/nexus-db.conninfo".mode) haNexus) [ "0400" "0400" ])
    (case "vm test ha: the connection string: both servers, the primary first, verified TLS" (map (c: c.environment.etc."spike/nexus-db.conninfo".text) haNexus) (lib.genList (_: "host=db,db port=5432,5433 dbname=spike-nexus user=spike-nexus password=vm-test-only sslmode=verify-full target_session_attrs=read-write application_name=spike-nexus connect_timeout=5") 2))
    (case "vm test ha: Nexus may dial the keepers and the database (vlan 1)" (map (c: c.systemd.services.spike-nexus.serviceConfig.IPAddressAllow) haNexus) [
      [ "192.168.1.0/24" ]
      [ "192.168.1.0/24" ]
    ])
    (case "vm test ha: the same keepers on both Nexus" (map (c: c.services.spike.nexus.settings.keeper_peers) haNexus) (lib.genList (_: [
      "https://keeper1:8441"
      "https://keeper2:8442"
      "https://keeper3:8443"
    ]) 2))
    (case "vm test ha: SPIRE server on nexus1, an agent of its own on nexus2" (map (c: [
      c.services.spike.spire.enable
      c.services.spire.agent.enable
      c.services.spire.agent.settings.agent.server_address
    ]) haNexus) [
      [ true true "127.0.0.1" ]
      [ false true "nexus1" ]
    ])
    (case "vm test ha: the database: primary over TLS, a synchronous standby beside it" (with haDb; [
      services.postgresql.enable
      services.postgresql.enableTCPIP
      services.postgresql.settings.ssl
      services.postgresql.settings.synchronous_standby_names
      (systemd.services ? postgresql-standby)
      networking.firewall.allowedTCPPorts
    ]) [ true true true "standby1" true [ 5432 5433 ] ])
    (case "vm test ha: the database: the Nexus role owns its database" (map (u: { inherit (u) name ensureDBOwnership; }) haDb.services.postgresql.ensureUsers) [
      {
        name = "spike-nexus";
        ensureDBOwnership = true;
      }
    ])

    (case "moved nexus: socket" moved.systemd.sockets.spike-nexus.listenStreams [
      ""
      "127.0.0.1:9000"
    ])
    (case "moved nexus: off loopback" moved.systemd.sockets.spike-nexus.socketConfig { BindToDevice = ""; })
    (case "moved nexus: pilot url" moved.services.spike.pilot.settings.nexus_url "https://127.0.0.1:9000")
    (case "bootstrap off: masked" moved.systemd.services.spike-bootstrap.enable false)
    (case "bootstrap off: not registered" (map (e: e.spiffeId) moved.services.spike.spire.registrations) [
      "spiffe://example.org/spike/nexus"
      "spiffe://example.org/spike/keeper/1"
      "spiffe://example.org/spike/keeper/2"
      "spiffe://example.org/spike/keeper/3"
      "spiffe://example.org/spike/pilot/role/superuser"
      "spiffe://example.org/spike/pilot/role/recover"
      "spiffe://example.org/spike/pilot/role/restore"
    ])
  ];
in
map (c: { inherit (c) name actual expected; }) (builtins.filter (c: c.actual != c.expected) cases)
