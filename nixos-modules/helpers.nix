# Helpers shared by the services.spike.* modules (not a module itself).
{ lib, pkgs }:
let
  spikeLib = import ../nix/lib.nix;
  format = pkgs.formats.toml { };
in
spikeLib
// {
  inherit format;

  # `settings.trust_roots`: one typed string per role, defaulting to the trust domain.
  trustRootsOption =
    {
      component,
      roles,
      trustDomain,
    }:
    lib.mkOption {
      description = ''
        Trust roots per role: comma-separated SPIFFE trust domains, each optionally with a path
        prefix (`example.org, example.org/tenant-a`). A peer has a role when its SPIFFE ID lies
        under one of the role's roots. See docs/config.md.
      '';
      default = { };
      type = lib.types.submodule {
        freeformType = format.type;
        options = lib.genAttrs roles (
          role:
          lib.mkOption {
            type = lib.types.str;
            default = trustDomain;
            defaultText = lib.literalExpression "config.services.spike.trustDomain";
            description = "Trust roots of the `${role}` role, as seen by ${component}.";
          }
        );
      };
    };

  # `configFile`, RFC 42's escape hatch.
  configFileOption =
    name:
    lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/etc/spike-local/${name}.toml";
      description = ''
        A ${name} configuration file to use instead of the one generated from
        `services.spike.${name}.settings` (which is then ignored). It is linked to
        /etc/spike/${name}.toml; when it is a Nix path it is checked at build time like the
        generated file.
      '';
    };

  checkConfigOption =
    bin:
    lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Run `${bin} check-config` on the configuration file at build time, so a configuration
        the daemon would refuse fails `nixos-rebuild` instead of the service.
      '';
    };

  ipAddressAllowOption =
    unit:
    lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "192.168.1.0/24" ];
      description = ''
        Added to `IPAddressAllow=` of ${unit}, which otherwise reaches only localhost
        (`IPAddressDeny=any`). List the addresses or networks of keepers on other hosts.
      '';
    };

  # The file a daemon reads: the user's configFile, or the TOML generated from settings;
  # either checked by the daemon's own `check-config` when it is available at build time.
  configFor =
    {
      name,
      bin,
      package,
      settings,
      configFile,
      check,
    }:
    let
      file =
        if configFile != null then
          configFile
        else
          format.generate "spike-${name}.toml" (lib.filterAttrsRecursive (_: v: v != null) settings);
      checkable =
        check
        && (configFile == null || builtins.isPath configFile || lib.isStorePath (toString configFile))
        && pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
    in
    if checkable then
      pkgs.runCommand "spike-${name}-checked.toml" { } ''
        ${package}/bin/${bin} check-config --config ${file}
        cp ${file} $out
      ''
    else
      file;

  # Assertions for the trust roots of one component.
  trustRootAssertions =
    prefix: roots:
    lib.concatMap (
      role:
      map (message: {
        assertion = false;
        inherit message;
      }) (spikeLib.trustRootProblems "${prefix}.${role}" roots.${role})
    ) (builtins.filter (r: builtins.isString roots.${r}) (builtins.attrNames roots));

  # Assertions shared by Nexus and Bootstrap: one shard per keeper and a threshold in range.
  shamirAssertions =
    prefix: settings:
    let
      peers = settings.keeper_peers;
      n = builtins.length peers;
    in
    [
      {
        assertion = settings.shamir_shares == n;
        message = "${prefix}.shamir_shares (${toString settings.shamir_shares}) must equal the number of ${prefix}.keeper_peers (${toString n}): one shard per keeper (services.spike.keeperPeers sets both).";
      }
      {
        assertion = settings.shamir_threshold >= 1 && settings.shamir_threshold <= settings.shamir_shares;
        message = "${prefix}.shamir_threshold (${toString settings.shamir_threshold}) must be between 1 and ${prefix}.shamir_shares (${toString settings.shamir_shares}).";
      }
      {
        assertion = lib.unique peers == peers;
        message = "${prefix}.keeper_peers lists a keeper twice: ${builtins.concatStringsSep ", " peers}.";
      }
    ];

  # The common part of every drop-in: where the SPIRE agent's Workload API is.
  spiffeEnvironment = agentSocket: { SPIFFE_ENDPOINT_SOCKET = "unix://${agentSocket}"; };
}
