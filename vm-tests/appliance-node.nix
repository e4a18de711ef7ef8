# One SPIKE appliance host: SPIRE server and agent, `keepers` keepers, Nexus, Bootstrap and the
# `spike` CLI, as `services.spike` configures them (the settings a user of the module writes).
# With `tpm` (by default when the sealing mode may use a TPM2), the VM gets one, with the
# emulated boot-time PCR 7 measurement of tpm-node.nix.
{
  keepers ? 3,
  threshold ? 2,
  shardSealing ? "off",
  shardSealingPcrs ? [ ],
  tpm ? builtins.elem shardSealing [
    "tpm2"
    "host+tpm2"
    "auto"
  ],
}:
{ lib, ... }:
{
  imports = lib.optional tpm ./tpm-node.nix;

  services.spike = {
    # The trust domain the scenario scripts use (spiffe://spike.internal/...).
    trustDomain = "spike.internal";
    spire.enable = true;
    keepers = {
      enable = true;
      instances = lib.range 1 keepers;
      inherit shardSealing shardSealingPcrs;
    };
    shamir.threshold = threshold;
    nexus.enable = true;
  };

  virtualisation = {
    memorySize = 2048;
    cores = 2;
  };
}
