# The README's quick start (one box: SPIRE, keepers, Nexus) as a NixOS configuration, the one
# base that nix/module-tests.nix, nix/eval-strictness-tests.nix and scripts/eval-nixos.sh
# evaluate. `keepers`: how many; `threshold`: services.spike.shamir.threshold, or null for the
# module's default (a majority of the keepers).
{ lib }:
{
  keepers ? 5,
  threshold ? null,
}:
{
  services.spike = {
    trustDomain = "example.org";
    spire.enable = true;
    keepers = {
      enable = true;
      instances = lib.range 1 keepers;
    };
    nexus.enable = true;
  }
  // lib.optionalAttrs (threshold != null) { shamir.threshold = threshold; };
}
