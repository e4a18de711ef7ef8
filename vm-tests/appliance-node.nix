# One SPIKE appliance host: SPIRE server and agent, `keepers` keepers, Nexus, Bootstrap and the
# `spike` CLI, as `services.spike` configures them (the settings a user of the module writes).
{
  keepers ? 3,
  threshold ? 2,
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
    };
    shamir.threshold = threshold;
    nexus.enable = true;
  };

  virtualisation = {
    memorySize = 2048;
    cores = 2;
  };
}
