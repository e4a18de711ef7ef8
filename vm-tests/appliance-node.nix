# One SPIKE appliance host: SPIRE server and agent, `keepers` keepers, Nexus, Bootstrap and the
# `spike` CLI, as `services.spike` configures them (the settings a user of the module writes).
# With shard sealing that may use a TPM2, the VM gets one (swtpm, kept across reboots and
# crashes of the VM, as the nspawn runner's swtpm per machine).
{
  keepers ? 3,
  threshold ? 2,
  shardSealing ? "off",
  shardSealingPcrs ? [ ],
}:
{ lib, ... }:
{
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
  }
  // lib.optionalAttrs (lib.elem shardSealing [
    "tpm2"
    "host+tpm2"
    "auto"
  ]) { tpm.enable = true; };
}
