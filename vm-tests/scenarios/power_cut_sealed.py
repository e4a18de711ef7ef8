# vm-test: {"nodes": {"machine": {"keepers": 3, "threshold": 2, "tpm": true, "install": ["--shard-sealing", "tpm2", "--shard-sealing-pcrs", "7"]}}}
# Power cut with shard sealing on (tpm2, bound to PCR 7; an emulated TPM2, swtpm, whose PCR 7
# the driver's "firmware" measures at every boot). The keepers seal their shards, nothing of a
# shard is on the disk in plaintext, and after a power cut mid-write spike.target comes back
# with no operator action and every acknowledged write is readable. Then a "firmware update"
# changes PCR 7: every seal stops opening, the journals say why, the old files are kept, Nexus
# is sealed and says so; one restore (the runbook's, as written) brings back unattended
# reboots under the new PCR state.
import time

SEALED = "/var/lib/private/spike-keeper/{i}/shard.sealed"
CRED = "/var/lib/spike-sealing/keeper-{i}/key.cred"


def sealed_digest(i: int) -> str:
    return machine.succeed(f"sha256sum {SEALED.format(i=i)} | cut -c1-64").strip()


def no_shard_in_plaintext_on_disk() -> None:
    # Each keeper's shard is the recovery shard of the same id (docs/protocol.md); look for its
    # 32 raw bytes in every file on the machine's disk.
    machine.succeed(
        "for f in /root/spike-shards/spike.recovery.*.txt; do "
        "  pat=$(cut -d: -f3 $f | sed 's/../\\\\x&/g'); "
        "  if LC_ALL=C grep -rlaP \"$pat\" /var /etc /root /tmp /usr/local 2>/dev/null; then "
        "    echo \"shard $f in plaintext in the files above\" >&2; exit 1; fi; "
        "done"
    )


def boot_after_power_cut() -> float:
    machine.crash()
    t = time.monotonic()
    machine.start()
    return t


if hasattr(machine, "tpm_boot_measurements"):
    # The emulated firmware measures the Secure Boot db into PCR 7 at every boot.
    machine.tpm_boot_measurements = [(7, "secure-boot-db-v1")]
start_all()
machine.wait_for_unit("spike.target", timeout=300)

with subtest("each keeper seals its shard under its own TPM2-sealed key; no shard in plaintext on the disk"):
    for i in (1, 2, 3):
        machine.wait_until_succeeds(f"test -s {SEALED.format(i=i)}", timeout=60)
        assert machine.succeed(f"cat {CRED.format(i=i)}.params").strip() == "with-key=tpm2 tpm2-pcrs=7"
        # The keeper runs as its dynamic user with no TPM access and no root; the key came
        # from systemd (LoadCredentialEncrypted=).
        info = machine.get_unit_info(f"spike-keeper@{i}.service")
        assert info["DynamicUser"] == "yes", info["DynamicUser"]
        assert "shard-sealing-key" in info.get("LoadCredentialEncrypted", ""), info.get("LoadCredentialEncrypted")
    machine.succeed(runbook("sealing-status"))
    machine.succeed(runbook("export-shards"))
    no_shard_in_plaintext_on_disk()

with subtest("power cut mid-write, sealing on: spike.target comes back with no operator action"):
    machine.succeed("spike secret put sealed/first v=0")
    machine.succeed(
        "systemd-run --unit=writer --service-type=exec /bin/sh -c "
        "'i=0; while :; do i=$((i+1)); spike secret put sealed/k$i v=$i >/dev/null 2>&1 && echo $i >> /var/tmp/acked; done'"
    )
    machine.wait_until_succeeds("test $(wc -l < /var/tmp/acked) -ge 15", timeout=120)
    t = boot_after_power_cut()
    machine.wait_for_unit("spike.target", timeout=180)
    log(f"MEASURE sealing tpm2 (PCR 7): boot to spike.target after a power cut: {time.monotonic() - t:.1f} s")
    for i in (1, 2, 3):
        machine.succeed(f"journalctl -b -u spike-keeper@{i}.service --no-pager | grep -q 'restored the shard from its sealed file'")
    acked = machine.succeed("cat /var/tmp/acked").split()
    machine.succeed(
        "for i in $(cat /var/tmp/acked); do "
        "  test \"$(spike secret get sealed/k$i v)\" = \"$i\" || { echo \"lost sealed/k$i\" >&2; exit 1; }; "
        "done"
    )
    assert machine.succeed("spike secret get sealed/first v").strip() == "0"
    log(f"MEASURE sealing tpm2: {len(acked)} acknowledged writes, all readable")

with subtest("a firmware update changes PCR 7: no seal opens, the journals say why, Nexus is sealed and says so"):
    before = {i: sealed_digest(i) for i in (1, 2, 3)}
    if hasattr(machine, "tpm_boot_measurements"):
        machine.tpm_boot_measurements = [(7, "secure-boot-db-v2")]
    else:  # NixOS test: measure something else into PCR 7 before the keepers start again
        machine.succeed("tpm2_pcrextend 7:sha256=$(echo -n secure-boot-db-v2 | sha256sum | cut -c1-64)")
    boot_after_power_cut()
    machine.wait_for_unit("spike-nexus.service", timeout=120)
    machine.wait_until_succeeds(
        "spike-nexus health --socket /run/spike/nexus-health.sock | grep -q '\"has_data\":true'", timeout=60)
    machine.wait_until_succeeds(
        "systemctl show -p StatusText --value spike-nexus.service | grep -q 'spike-operator restore'", timeout=120)
    status, out = machine.execute("spike status 2>&1")
    assert status == 4, f"spike status exits {status} when sealed, not 4: {out}"
    for i in (1, 2, 3):
        sealing = machine.succeed(f"journalctl -b -u spike-keeper-sealing@{i}.service --no-pager")
        assert "does not decrypt on this machine" in sealing and "PCR state changed" in sealing, sealing
        machine.succeed(f"ls {CRED.format(i=i)}.undecryptable-*")
        machine.wait_until_succeeds(
            f"journalctl -b -u spike-keeper@{i}.service --no-pager | grep -q 'the sealing key was replaced'", timeout=60)
        # Kept for forensics: untouched until a new shard arrives.
        assert sealed_digest(i) == before[i], f"keeper {i}'s sealed file changed while it was empty"

with subtest("one restore, as the runbook writes it, and reboots are unattended again under the new PCR state"):
    machine.succeed(runbook("power-cut-restore"))
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
    for i in (1, 2, 3):
        # Nexus re-seeds every keeper; each seals the shard under its new key.
        machine.wait_until_succeeds(f"test \"$(sha256sum {SEALED.format(i=i)} | cut -c1-64)\" != {before[i]}", timeout=60)
    t = boot_after_power_cut()
    machine.wait_for_unit("spike.target", timeout=180)
    log(f"MEASURE sealing tpm2 (PCR 7), new PCR state: boot to spike.target after a power cut: {time.monotonic() - t:.1f} s")
    assert machine.succeed("spike secret get sealed/first v").strip() == "0"
    no_shard_in_plaintext_on_disk()

with subtest("the keeper unit needs no TPM and no root: its exposure stays within budget"):
    out = machine.succeed("systemd-analyze security --no-pager spike-keeper@1.service | tail -1")
    log(f"MEASURE exposure spike-keeper@1.service with sealing on: {out.strip()}")
    machine.succeed("systemd-analyze security --no-pager --threshold=5 spike-keeper@1.service >/dev/null")
    out = machine.succeed("systemd-analyze security --no-pager spike-keeper-sealing@1.service | tail -1")
    log(f"MEASURE exposure spike-keeper-sealing@1.service: {out.strip()}")
