# A VM test node with a TPM2 (`"tpm": true` in a scenario's `# vm-test:` line): swtpm through
# `virtualisation.tpm`, its state kept across crashes and restarts of the VM as the nspawn
# driver's swtpm per machine (with the same dictionary-attack parameters), tpm2-tools, and an
# emulated firmware that measures into PCR 7 at every boot.
#
# The nspawn driver's firmware is `machine.tpm_boot_measurements` (vm-tests/driver/nspawn.py):
# before systemd starts, it extends PCR 7 with sha256 of a text ("secure-boot-db-v1"), and a
# scenario emulates a firmware update by changing the text and power-cycling. A QEMU reset
# clears the PCRs, so here the text lives on the VM's disk instead: a scenario whose machine
# has no `tpm_boot_measurements` writes the text to /var/lib/vm-test-firmware/pcr7 (and syncs)
# before it power-cycles, and vm-test-firmware.service extends PCR 7 with sha256 of the file's
# text early at every boot, before sysinit.target and so before every keeper's sealing unit.
# The node ships the file with "secure-boot-db-v1" (created only if missing), so the first
# boot measures that already, as the nspawn scenarios set it before their first boot.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  pcr7 = "/var/lib/vm-test-firmware/pcr7";
  keepers = config.services.spike.keepers;
in
{
  virtualisation.tpm = {
    enable = true;
    # Run by the VM's start script against swtpm before every boot. A power cut after a
    # DA-protected key was used (every TPM2 credential decryption) counts as one failed try,
    # and swtpm's defaults (3 tries, one forgiven per 1000 s) would lock the keepers' TPM2 keys
    # out at a scenario's third crash(): the parameters of a provisioned PC TPM instead, those
    # of the nspawn driver (TPM_DA_MAX_TRIES, TPM_DA_RECOVERY_S in vm-tests/driver/nspawn.py).
    provisioning = "tpm2_dictionarylockout --setup-parameters --max-tries=32 --recovery-time=600 --lockout-recovery-time=600";
  };

  environment.systemPackages = [ pkgs.tpm2-tools ];

  systemd.tmpfiles.rules = [
    "d /var/lib/vm-test-firmware 0755 root root - -"
    # `f`: written only when the file does not exist, so a scenario's "update" stays.
    "f ${pcr7} 0644 root root - secure-boot-db-v1"
  ];

  systemd.services.vm-test-firmware = {
    description = "VM test: emulated firmware measuring ${pcr7} into TPM2 PCR 7";
    wantedBy = [ "sysinit.target" ];
    # The TPM2 with its driver (tpm2.target, pulled in by systemd's tpm2-generator when the
    # firmware announces one; the device itself, in case it is not), the file in place
    # (created by systemd-tmpfiles-setup on the first boot), and before anything that seals.
    wants = [ "dev-tpmrm0.device" ];
    after = [
      "dev-tpmrm0.device"
      "tpm2.target"
      "local-fs.target"
      "systemd-tmpfiles-setup.service"
    ];
    before = [
      "sysinit.target"
      "shutdown.target"
    ]
    ++ lib.optionals keepers.enable (
      map (i: "spike-keeper-sealing@${toString i}.service") keepers.instances
    );
    conflicts = [ "shutdown.target" ];
    unitConfig = {
      DefaultDependencies = false;
      ConditionPathExists = pcr7;
    };
    path = [
      pkgs.coreutils
      pkgs.tpm2-tools
    ];
    environment.TPM2TOOLS_TCTI = "device:/dev/tpmrm0";
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      # The text as the nspawn driver hashes it: `$(cat ...)` drops trailing newlines, so a
      # file written with `echo` measures the same as one written with `printf %s`.
      ExecStart = pkgs.writeShellScript "vm-test-firmware" ''
        set -eu
        text=$(cat ${pcr7})
        digest=$(printf %s "$text" | sha256sum | cut -c1-64)
        tpm2_pcrextend "7:sha256=$digest"
        echo "vm-test-firmware: PCR 7 extended with sha256($text) = $digest"
      '';
    };
  };
}
