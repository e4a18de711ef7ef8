# Helpers shared by the services.spike.* modules (not a module itself).
{ lib, pkgs }:
let
  spikeLib = import ../nix/lib.nix;
  format = pkgs.formats.toml { };
  # The URL of a keeper_peers entry (a URL, or { url, spiffe_id }).
  peerUrl = p: if builtins.isString p then p else p.url or "(no url)";
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
  # `checkFilter`, a `sed -E` script, edits the copy that is checked (not the file installed):
  # for what only the target machine can tell, never the build sandbox (a TPM2, say).
  configFor =
    {
      name,
      bin,
      package,
      settings,
      configFile,
      check,
      checkFilter ? null,
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
      pkgs.runCommand "spike-${name}-checked.toml" { } (
        if checkFilter == null then
          ''
            ${package}/bin/${bin} check-config --config ${file}
            cp ${file} $out
          ''
        else
          ''
            sed -E ${lib.escapeShellArg checkFilter} ${file} > check.toml
            ${package}/bin/${bin} check-config --config check.toml
            cp ${file} $out
          ''
      )
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

  # A keeper_peers entry: a URL (keeper i must then present spiffe://<keeper root>/spike/keeper/<i>,
  # keeper_identity = "position") or { url, spiffe_id } pinning the URL to another ID.
  keeperPeerType = lib.types.either lib.types.str (lib.types.attrsOf lib.types.str);
  inherit peerUrl;

  # `keeper_identity`, shared by Nexus and Bootstrap.
  keeperIdentityOption = lib.mkOption {
    type = lib.types.enum [
      "position"
      "role"
    ];
    default = "position";
    description = ''
      The SPIFFE ID required of a keeper listed by URL alone, checked in the TLS handshake of
      every keeper call: `position` (keeper i must present
      `spiffe://<keeper trust root>/spike/keeper/<i>`, the ID services.spike.spire registers for
      spike-keeper@i) or `role` (any Keeper ID, as SPIKE does; warned about).
    '';
  };

  # Warnings shared by Nexus and Bootstrap: keepers accepted by role alone, threshold 1.
  keeperWarnings =
    prefix: settings:
    lib.optional ((settings.keeper_identity or "position") == "role") "${prefix}.keeper_identity = \"role\": any workload with a Keeper SVID answering at a keeper URL receives that keeper's shard; keep the default \"position\" or pin each URL with { url, spiffe_id }."
    ++ lib.optional ((settings.shamir_threshold or null) == 1) "${prefix}.shamir_threshold = 1: every keeper's shard alone is the whole root key, so one compromised keeper discloses every secret; use 2 or more (services.spike.shamir.threshold).";

  # Assertions shared by Nexus and Bootstrap: one shard per keeper and a threshold in range.
  shamirAssertions =
    prefix: settings:
    let
      peers = map peerUrl settings.keeper_peers;
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
