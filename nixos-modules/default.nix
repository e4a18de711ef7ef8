# services.spike: SPIKE (the SPIFFE-native secrets manager) as NixOS services, RFC 42 style.
#
#   services.spike.trustDomain, .keeperPeers, .shamir   shared by every part
#   services.spike.spire       SPIRE server/agent wiring and identity registration  (spire.nix)
#   services.spike.nexus       the secret store                                     (nexus.nix)
#   services.spike.keepers     the shard holders, one spike-keeper@N per shard      (keepers.nix)
#   services.spike.bootstrap   the one-shot root key generation                     (bootstrap.nix)
#   services.spike.pilot       the `spike` CLI and /etc/spike/pilot.toml            (pilot.nix)
#
# The systemd units are the ones shipped in the package (units/ of the source tree) through
# systemd.packages; the modules add drop-ins only (overrideStrategy = "asDropin" for template
# instances such as spike-keeper@1), never copies of the units.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.spike;
  h = import ./helpers.nix { inherit lib pkgs; };
  anyEnabled = cfg.nexus.enable || cfg.keepers.enable || cfg.bootstrap.enable || cfg.pilot.enable;
  needsKeepers =
    (cfg.nexus.enable && cfg.nexus.settings.backend_store != "memory")
    || (cfg.bootstrap.enable && cfg.bootstrap.settings.backend_store != "memory");
in
{
  # nixpkgs' module convention; no maintainers are listed yet (the same in every module here).
  meta.maintainers = [ ];

  imports = [
    ./spire.nix
    ./nexus.nix
    ./keepers.nix
    ./bootstrap.nix
    ./pilot.nix
  ];

  options.services.spike = {
    # Declared as `lib.mkPackageOption pkgs "spike-rs" { }` would (type, defaultText,
    # description), with a fallback: SPIKE is not in nixpkgs, so without this flake's overlay
    # there is no pkgs.spike-rs, and mkPackageOption's default would throw.
    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.spike-rs or (pkgs.callPackage ../nix/package.nix { });
      defaultText = lib.literalExpression "pkgs.spike-rs";
      description = ''
        The spike-rs package to use: the four binaries and the systemd units. Without this
        flake's overlay, which provides `pkgs.spike-rs`, it is built from this source tree
        (nix/package.nix).
      '';
    };

    trustDomain = lib.mkOption {
      type = lib.types.strMatching "[a-z0-9._-]+";
      example = "example.org";
      description = ''
        The SPIFFE trust domain of SPIKE's identities. It is the default of every
        `settings.trust_roots.*` and, with `services.spike.spire.enable`, the trust domain of the
        local SPIRE server and agent. It has no default on purpose: a trust root that does not
        match the identities SPIRE issues rejects every peer.
      '';
    };

    keeperPeers = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default =
        if cfg.keepers.enable then
          h.localKeeperPeers {
            inherit (cfg.keepers) instances basePort;
            host = h.dialHost cfg.keepers.listenAddress;
          }
        else
          [ ];
      defaultText = lib.literalMD "the URLs of this host's keepers (`services.spike.keepers.instances`), else `[ ]`";
      example = [
        "https://keeper1.example.org:8441"
        "https://keeper2.example.org:8442"
        "https://keeper3.example.org:8443"
      ];
      description = ''
        Keeper base URLs in shard order (position N holds shard N), the default of
        `keeper_peers` for both Nexus and Bootstrap, which must agree.
      '';
    };

    shamir = {
      shares = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = builtins.length cfg.keeperPeers;
        defaultText = lib.literalExpression "builtins.length config.services.spike.keeperPeers";
        description = "Number of root key shards, one per keeper (Nexus and Bootstrap `shamir_shares`).";
      };
      threshold = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = h.majority cfg.shamir.shares;
        defaultText = lib.literalMD "a majority of `shares` (2 of 3, 3 of 5)";
        description = "Shards needed to rebuild the root key (Nexus and Bootstrap `shamir_threshold`).";
      };
    };
  };

  config = lib.mkIf anyEnabled {
    environment.systemPackages = [ cfg.package ];
    systemd.packages = [ cfg.package ];

    assertions = lib.optionals needsKeepers [
      {
        assertion = cfg.shamir.shares == builtins.length cfg.keeperPeers;
        message = "services.spike.shamir.shares (${toString cfg.shamir.shares}) must equal the number of services.spike.keeperPeers (${toString (builtins.length cfg.keeperPeers)}): one shard per keeper.";
      }
      {
        assertion = cfg.shamir.threshold >= 1 && cfg.shamir.threshold <= cfg.shamir.shares;
        message = "services.spike.shamir.threshold (${toString cfg.shamir.threshold}) must be between 1 and services.spike.shamir.shares (${toString cfg.shamir.shares}).";
      }
    ];
  };
}
