# Evaluates nixos-modules/ with lib.evalModules where only nixpkgs' `lib` is at hand (no
# nixpkgs, no NixOS): the NixOS options the modules touch are declared here with the same
# names and merge behaviour, and `pkgs` is a stand-in whose builders return placeholder paths.
# A misspelt systemd option, a type error or a failed assertion shows up here.
# Used by nix/module-tests.nix (scripts/check-nix.sh runs it when SPIKE_NIXPKGS_LIB is set).
{
  lib,
  configuration,
  # Replaces parts of the stand-in pkgs (e.g. writeShellScript, to read a generated script).
  pkgsOverrides ? { },
}:
let
  inherit (lib) mkOption types;

  stubPath = name: "/nix/store/00000000000000000000000000000000-${name}";

  pkgs = {
    formats.toml = _: {
      type = types.attrsOf types.anything;
      generate = name: _value: stubPath name;
    };
    runCommand = name: _env: _script: stubPath name;
    writeShellScript = name: _text: stubPath name;
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
    };
  };

  # nixpkgs' services.spire.{server,agent}: the options SPIKE's modules set or read.
  # (only the server module has openFirewall)
  spireOptions =
    section: socketDefault: topExtra: extra:
    topExtra
    // {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      package = mkOption {
        type = types.anything;
        default = pkgs.spire;
      };
      settings = mkOption {
        default = { };
        type = types.submodule {
          freeformType = types.attrsOf types.anything;
          options.${section} = {
            trust_domain = mkOption { type = types.str; };
            socket_path = mkOption {
              type = types.str;
              default = socketDefault;
            };
          }
          // extra;
          options.plugins = mkOption {
            type = types.attrsOf types.anything;
            default = { };
          };
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
      environment.etc = mkOption {
        default = { };
        type = types.attrsOf (types.submodule { options.source = mkOption { type = types.path; }; });
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
      services.spire.server = spireOptions "server" "/run/spire/server/private/api.sock" {
        openFirewall = mkOption {
          type = types.bool;
          default = false;
        };
      } {
        bind_address = mkOption {
          type = types.str;
          default = "[::]";
        };
        bind_port = mkOption {
          type = types.port;
          default = 8081;
        };
      };
      services.spire.agent = spireOptions "agent" "/run/spire/agent/public/api.sock" { } {
        server_address = mkOption { type = types.str; };
        server_port = mkOption {
          type = types.port;
          default = 8081;
        };
      };
    };
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
in
{
  inherit config pkgs;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  inherit (config) warnings;
}
