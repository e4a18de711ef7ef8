# Evaluates nixos-modules/ with lib.evalModules where only nixpkgs' `lib` is at hand (no
# nixpkgs, no NixOS): the NixOS options the modules touch are declared here with the same
# names and merge behaviour, and `pkgs` is a stand-in whose builders return placeholder paths.
# A misspelt systemd option, a type error or a failed assertion shows up here.
# Used by nix/module-tests.nix and nix/eval-strictness-tests.nix (scripts/check-nix.sh runs
# both when SPIKE_NIXPKGS_LIB is set).
#
# Where nixpkgs types a value, the stand-in takes the same type, so it rejects what nixpkgs
# rejects (nix/eval-strictness-tests.nix shows each case):
#   - pkgs.formats.toml's type is nixpkgs' `lib.types.toml` (pkgs/pkgs-lib/formats/toml): a
#     TOML value, with no null;
#   - pkgs.formats.hcl1's (SPIRE's settings) is the JSON format's type, `lib.types.json`
#     (pkgs/pkgs-lib/formats/hcl1): null allowed, and dropped before the file is written;
#   - services.spire.{server,agent}.settings copy the option tree of nixpkgs'
#     nixos/modules/services/security/spire/{server,agent}.nix, including
#     plugins.NodeAttestor.join_token.plugin_data: freeform on the server, `submodule { }`
#     (no key at all) on the agent;
#   - services.postgresql restates the options of nixpkgs'
#     nixos/modules/services/databases/postgresql.nix that SPIKE's modules and VM tests set,
#     with nixpkgs' types (ensureUsers.*.ensureDBOwnership, `authentication` as lines, the
#     freeform `settings` with a typed `port`) and its assertion that a user owning a database
#     has it in ensureDatabases.
# A full NixOS evaluation against a nixpkgs checkout is scripts/eval-nixos.sh.
{
  lib,
  configuration,
  # Replaces parts of the stand-in pkgs (e.g. writeShellScript, to read a generated script).
  pkgsOverrides ? { },
}:
let
  inherit (lib) mkOption types;

  stubPath = name: "/nix/store/00000000000000000000000000000000-${name}";

  # nixpkgs' `lib.types.serializableValueWith`, for a lib that predates it (lib/types.nix):
  # bool, int, float, str, path, and attribute sets and lists of these; null only if nullable.
  serializableValue =
    typeName: nullable:
    let
      base = types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        (types.attrsOf valueType)
        (types.listOf valueType)
      ];
      valueType = (if nullable then types.nullOr base else base) // {
        description = "${typeName} value";
      };
    in
    valueType;
  tomlValue = types.toml or (serializableValue "TOML" false);
  jsonValue = types.json or (serializableValue "JSON" true);

  pkgs = {
    formats.toml = _: {
      type = tomlValue;
      # Forces the value, as nixpkgs' generate does (builtins.toJSON, structured attrs).
      generate = name: value: builtins.deepSeq value (stubPath name);
    };
    # SPIRE's HCL: nixpkgs writes it as JSON, so the type is the JSON format's.
    formats.hcl1 = _: {
      type = jsonValue;
      generate = name: value: builtins.deepSeq value (stubPath name);
    };
    # Builders force what they are given, as instantiating the derivation would.
    runCommand =
      name: env: script:
      builtins.deepSeq [
        env
        script
      ] (stubPath name);
    writeShellScript = name: text: builtins.deepSeq text (stubPath name);
    callPackage = _: _: stubPath "spike-rs";
    stdenv = {
      buildPlatform.canExecute = _: true;
      hostPlatform = { };
    };
    spire = stubPath "spire";
    coreutils = stubPath "coreutils";
    gnused = stubPath "gnused";
    gnugrep = stubPath "gnugrep";
    openssl = stubPath "openssl";
    perl = stubPath "perl";
    postgresql = stubPath "postgresql";
    writeText = name: text: builtins.deepSeq text (stubPath name);
    tpm2-tools = stubPath "tpm2-tools";
  }
  // pkgsOverrides;

  # systemd's option values as NixOS merges them: lists from several definitions concatenate
  # (so a drop-in can add RuntimeDirectory= entries), single values must agree.
  unitOption = types.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (d: builtins.isList d.value) defs' then
        lib.concatMap (d: lib.toList d.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };
  strList = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  unit = types.submodule {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = strList;
      requiredBy = strList;
      wants = strList;
      requires = strList;
      after = strList;
      before = strList;
      conflicts = strList;
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      overrideStrategy = mkOption {
        type = types.enum [
          "asDropinIfExists"
          "asDropin"
        ];
        default = "asDropinIfExists";
      };
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
      path = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      socketConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      listenStreams = strList;
      # Shell fragments of a unit (NixOS joins several definitions with newlines).
      preStart = mkOption {
        type = types.lines;
        default = "";
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
    };
  };

  # nixpkgs' services.postgresql (nixos/modules/services/databases/postgresql.nix): the options
  # set here, with its types; the units it writes are left out.
  postgresqlOptions = {
    enable = mkOption {
      type = types.bool;
      default = false;
    };
    package = mkOption {
      type = types.anything;
      default = pkgs.postgresql;
    };
    enableTCPIP = mkOption {
      type = types.bool;
      default = false;
    };
    authentication = mkOption {
      type = types.lines;
      default = "";
    };
    identMap = mkOption {
      type = types.lines;
      default = "";
    };
    initialScript = mkOption {
      type = types.nullOr types.path;
      default = null;
    };
    ensureDatabases = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    ensureUsers = mkOption {
      default = [ ];
      type = types.listOf (
        types.submodule {
          options = {
            name = mkOption { type = types.str; };
            ensureDBOwnership = mkOption {
              type = types.bool;
              default = false;
            };
            ensureClauses = mkOption {
              type = types.attrsOf (types.nullOr types.bool);
              default = { };
            };
          };
        }
      );
    };
    settings = mkOption {
      default = { };
      type = types.submodule {
        freeformType = types.attrsOf (
          types.oneOf [
            types.bool
            types.float
            types.int
            types.str
          ]
        );
        options.port = mkOption {
          type = types.port;
          default = 5432;
        };
      };
    };
  };

  # nixpkgs' services.spire.{server,agent} (nixos/modules/services/security/spire/): the
  # option tree of `settings` as declared there, `enable`, `package` and the server's
  # `openFirewall`. `configFile`/`expandEnv` and the units nixpkgs writes are left out.
  hcl1 = pkgs.formats.hcl1 { };
  spireOption =
    name: extra:
    {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      package = mkOption {
        type = types.anything;
        default = pkgs.spire;
      };
      # As nixpkgs writes it: the settings without their nulls, through hcl1.
      configFile = mkOption {
        type = types.path;
        default = hcl1.generate "${name}.conf" (
          lib.filterAttrsRecursive (_: v: v != null) config.services.spire.${name}.settings
        );
      };
      expandEnv = mkOption {
        type = types.bool;
        default = true;
      };
    }
    // extra;
  # plugins: freeform, with NodeAttestor.join_token typed; its plugin_data is `pluginData`.
  spirePlugins =
    pluginData:
    mkOption {
      default = { };
      type = types.submodule {
        freeformType = hcl1.type;
        options.NodeAttestor = mkOption {
          default = { };
          type = types.submodule {
            freeformType = hcl1.type;
            options.join_token = mkOption {
              default = null;
              type = types.nullOr (
                types.submodule {
                  freeformType = hcl1.type;
                  options.plugin_data = mkOption {
                    type = pluginData;
                    default = { };
                  };
                }
              );
            };
          };
        };
      };
    };
  spireServerOptions = spireOption "server" {
    openFirewall = mkOption {
      type = types.bool;
      default = false;
    };
    settings = mkOption {
      type = types.submodule {
        freeformType = hcl1.type;
        options.server = {
          trust_domain = mkOption { type = types.str; };
          data_dir = mkOption {
            type = types.str;
            default = "$STATE_DIRECTORY";
          };
          socket_path = mkOption {
            type = types.str;
            default = "/run/spire/server/private/api.sock";
          };
          bind_address = mkOption {
            type = types.str;
            default = "[::]";
          };
          bind_port = mkOption {
            type = types.port;
            default = 8081;
          };
        };
        # The server's join_token plugin_data is freeform.
        options.plugins = spirePlugins hcl1.type;
      };
    };
  };
  spireAgentOptions = spireOption "agent" {
    settings = mkOption {
      type = types.submodule {
        freeformType = hcl1.type;
        options.agent = {
          trust_domain = mkOption { type = types.str; };
          data_dir = mkOption {
            type = types.str;
            default = "$STATE_DIRECTORY";
          };
          server_address = mkOption { type = types.str; };
          server_port = mkOption {
            type = types.port;
            default = 8081;
          };
          socket_path = mkOption {
            type = types.path;
            default = "/run/spire/agent/public/api.sock";
          };
          join_token = mkOption {
            type = types.nullOr types.str;
            default = null;
          };
          join_token_file = mkOption {
            type = types.nullOr types.str;
            default = null;
          };
        };
        # The agent's join_token plugin_data takes no key: the token comes from
        # agent.join_token or the -joinToken flag.
        options.plugins = spirePlugins (types.submodule { });
      };
    };
  };

  nixosStandIns = {
    options = {
      assertions = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
      # nixpkgs' environment.etc (nixos/modules/system/etc/etc.nix): `text` or `source`, `mode`.
      environment.etc = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule (
            { name, config, ... }:
            {
              options.text = mkOption {
                type = types.nullOr types.lines;
                default = null;
              };
              options.source = mkOption { type = types.path; };
              options.mode = mkOption {
                type = types.str;
                default = "symlink";
              };
              config.source = lib.mkIf (config.text != null) (
                lib.mkDefault (pkgs.writeText (baseNameOf name) config.text)
              );
            }
          )
        );
      };
      systemd.packages = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
      systemd.services = mkOption {
        type = types.attrsOf unit;
        default = { };
      };
      systemd.sockets = mkOption {
        type = types.attrsOf unit;
        default = { };
      };
      systemd.targets = mkOption {
        type = types.attrsOf unit;
        default = { };
      };
      systemd.tmpfiles.rules = strList;
      security.tpm2.enable = mkOption {
        type = types.bool;
        default = false;
      };
      # Set by the VM tests' nodes (vm-tests/*.nix); not looked into here.
      virtualisation = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      # nixpkgs' meta.maintainers (nixos/modules/misc/meta.nix).
      meta.maintainers = mkOption {
        type = types.listOf types.raw;
        default = [ ];
      };
      # nixpkgs' users.users (nixos/modules/config/users-groups.nix): the attributes SPIKE's
      # modules set.
      users.users = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule {
            options.isSystemUser = mkOption {
              type = types.bool;
              default = false;
            };
            options.group = mkOption {
              type = types.str;
              default = "";
            };
            options.description = mkOption {
              type = types.str;
              default = "";
            };
          }
        );
      };
      # nixpkgs' users.groups: the attributes SPIKE's modules set.
      users.groups = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule {
            options.gid = mkOption {
              type = types.nullOr types.int;
              default = null;
            };
            options.members = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
          }
        );
      };
      # Set by the VM tests' nodes (an address beside the test driver's); not looked into here.
      networking.interfaces = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      services.spire.server = spireServerOptions;
      services.spire.agent = spireAgentOptions;
      services.postgresql = postgresqlOptions;
    };
    # nixpkgs' assertion: a user owning a database has it in ensureDatabases.
    config.assertions = map (u: {
      assertion = u.ensureDBOwnership -> lib.elem u.name config.services.postgresql.ensureDatabases;
      message = "services.postgresql.ensureUsers: ${u.name} has ensureDBOwnership, but no database of that name is in services.postgresql.ensureDatabases.";
    }) config.services.postgresql.ensureUsers;
  };

  evaluated = lib.evalModules {
    modules = [
      nixosStandIns
      ../nixos-modules
      configuration
      { _module.args.pkgs = pkgs; }
    ];
  };
  inherit (evaluated) config;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  # What building system.build.toplevel forces once the assertions hold: the units and every
  # file rendered from settings (generate forces its value). A value nixpkgs' types reject
  # throws here, as it would fail a nixos-rebuild.
  rendered = [
    config.environment.etc
    config.systemd.services
    config.systemd.sockets
    config.systemd.targets
    (lib.optional config.services.spire.server.enable config.services.spire.server.configFile)
    (lib.optional config.services.spire.agent.enable config.services.spire.agent.configFile)
  ];
in
{
  inherit config pkgs;
  # As NixOS does: failed assertions are reported first; with none, the system is rendered.
  failedAssertions = if failed != [ ] then failed else builtins.deepSeq rendered [ ];
  inherit (config) warnings;
}
