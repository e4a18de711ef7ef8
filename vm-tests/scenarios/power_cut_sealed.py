# vm-test: {"nodes": {"host": {"keepers": 3, "threshold": 2, "install": ["--shard-sealing", "host"]}, "tpm2": {"keepers": 3, "threshold": 2, "tpm": true, "install": ["--shard-sealing", "tpm2", "--shard-sealing-pcrs", "7"]}, "host_tpm2": {"keepers": 3, "threshold": 2, "tpm": true, "install": ["--shard-sealing", "host+tpm2"]}}}
# Power cut with shard sealing on, one appliance per mode: host, tpm2 bound to PCR 7, and
# host+tpm2 (the TPM2s are swtpm, whose PCR 7 the driver's "firmware" measures at every boot).
# The keepers seal their shards, and after a power cut mid-write spike.target comes back with
# no operator action and every acknowledged write is readable. Then, on the tpm2 appliance, a
# "firmware update" changes PCR 7: every seal stops opening, the journals say why, the old
# files are kept, Nexus is sealed and says so; one restore (the runbook's, as written) brings
# back unattended reboots under the new PCR state. Last, the runbook's start-over (a new root
# key) replaces every sealed file, and a stale sealed shard of the old key, back on one
# keeper, never makes Nexus use the old key.
import time

SEALED = "/var/lib/private/spike-keeper/{i}/shard.sealed"
CRED = "/var/lib/spike-sealing/keeper-{i}/key.cred"
# host_tpm2 names no PCRs: systemd-creds' own default applies (PCR 7 on systemd 252).
MODES = {host: "with-key=host", tpm2: "with-key=tpm2 tpm2-pcrs=7",
         host_tpm2: "with-key=host+tpm2 tpm2-pcrs=systemd-default"}
TPM_MACHINES = (tpm2, host_tpm2)
machine = tpm2


def sealed_digest(i: int, m=machine) -> str:
    return m.succeed(f"sha256sum {SEALED.format(i=i)} | cut -c1-64").strip()


def boot_after_power_cut(m=machine) -> float:
    m.crash()
    t = time.monotonic()
    m.start()
    return t


for m in MODES:
    if m is not host and hasattr(m, "tpm_boot_measurements"):
        # The emulated firmware measures the Secure Boot db into PCR 7 at every boot.
        m.tpm_boot_measurements = [(7, "secure-boot-db-v1")]
start_all()
for m in MODES:
    m.wait_for_unit("spike.target", timeout=300)

with subtest("each keeper seals its shard under a key of its own that systemd seals to the machine"):
    for m, params in MODES.items():
        for i in (1, 2, 3):
            m.wait_until_succeeds(f"test -s {SEALED.format(i=i)}", timeout=60)
            assert m.succeed(f"cat {CRED.format(i=i)}.params").strip() == params
            # The keeper runs as its dynamic user with no TPM access and no root; the key came
            # from systemd (LoadCredentialEncrypted=).
            assert m.get_unit_info(f"spike-keeper@{i}.service")["DynamicUser"] == "yes"
            m.succeed(f"systemctl cat spike-keeper@{i}.service | grep -qx "
                      "'LoadCredentialEncrypted=shard-sealing-key:/var/lib/spike-sealing/keeper-%i/key.cred'")
        m.succeed(runbook("sealing-status"))
        m.succeed(runbook("export-shards"))

with subtest("power cut mid-write, sealing on: spike.target comes back with no operator action"):
    for m, params in MODES.items():
        m.succeed("spike secret put sealed/first v=0")
        m.succeed(
            "systemd-run --unit=writer --service-type=exec --setenv=PATH=\"$PATH\" /bin/sh -c "
            "'i=0; while :; do i=$((i+1)); spike secret put sealed/k$i v=$i >/dev/null 2>&1 && echo $i >> /var/tmp/acked; done'"
        )
        m.wait_until_succeeds("test $(wc -l < /var/tmp/acked) -ge 15", timeout=120)
        t = boot_after_power_cut(m)
        m.wait_for_unit("spike.target", timeout=180)
        log(f"MEASURE sealing {params}: boot to spike.target after a power cut: {time.monotonic() - t:.1f} s")
        for i in (1, 2, 3):
            # Keepers are socket-activated, and Nexus unseals from the first threshold of them:
            # a keeper may still be starting when spike.target is reached.
            m.wait_until_succeeds(
                f"journalctl -b -u spike-keeper@{i}.service --no-pager | grep -q 'restored the shard from its sealed file'",
                timeout=60)
        acked = m.succeed("cat /var/tmp/acked").split()
        m.succeed(
            "for i in $(cat /var/tmp/acked); do "
            "  test \"$(spike secret get sealed/k$i v)\" = \"$i\" || { echo \"lost sealed/k$i\" >&2; exit 1; }; "
            "done"
        )
        assert m.succeed("spike secret get sealed/first v").strip() == "0"
        log(f"MEASURE sealing {params}: {len(acked)} acknowledged writes, all readable")

def firmware(m, measurement: str) -> None:
    """The firmware measures `measurement` into PCR 7 from the next boot on."""
    if hasattr(m, "tpm_boot_measurements"):
        m.tpm_boot_measurements = [(7, measurement)]
    else:  # NixOS test: vm-test-firmware.service measures this file's text at every boot
        m.succeed(f"printf %s {measurement} > /var/lib/vm-test-firmware/pcr7 && sync")


with subtest("a firmware update changes PCR 7: no seal opens, the journals say why, Nexus is sealed and says so"):
    before = {}
    for m in TPM_MACHINES:
        before[m] = {i: sealed_digest(i, m) for i in (1, 2, 3)}
        firmware(m, "secure-boot-db-v2")
        boot_after_power_cut(m)
    for m in TPM_MACHINES:
        m.wait_for_unit("spike-nexus.service", timeout=120)
        m.wait_until_succeeds(
            "spike-nexus health --socket /run/spike/nexus-health.sock | grep -q '\"has_data\":true'", timeout=60)
        m.wait_until_succeeds(
            "systemctl show -p StatusText --value spike-nexus.service | grep -q 'spike-operator restore'", timeout=120)
        status, out = m.execute("spike status 2>&1")
        assert status == 4, f"{m.name}: spike status exits {status} when sealed, not 4: {out}"
        for i in (1, 2, 3):
            sealing = m.succeed(f"journalctl -b -u spike-keeper-sealing@{i}.service --no-pager")
            assert "does not decrypt on this machine" in sealing and "PCR state changed" in sealing, sealing
            m.succeed(f"ls {CRED.format(i=i)}.undecryptable-*")
            m.wait_until_succeeds(
                f"journalctl -b -u spike-keeper@{i}.service --no-pager | grep -q 'the sealing key was replaced'", timeout=60)
            # Kept for forensics: untouched until a new shard arrives.
            assert sealed_digest(i, m) == before[m][i], f"{m.name}: keeper {i}'s sealed file changed while it was empty"
            assert "does not open" in m.succeed(f"systemctl show -p StatusText --value spike-keeper@{i}.service")

with subtest("one restore, as the runbook writes it, and reboots are unattended again under the new PCR state"):
    for m in TPM_MACHINES:
        m.succeed(runbook("power-cut-restore"))
        m.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
        for i in (1, 2, 3):
            # Nexus re-seeds every keeper; each seals the shard under its new key, and says so.
            m.wait_until_succeeds(
                f"test \"$(sha256sum {SEALED.format(i=i)} | cut -c1-64)\" != {before[m][i]}", timeout=60)
            m.wait_until_succeeds(
                f"systemctl show -p StatusText --value spike-keeper@{i}.service | grep -q 'holding a shard (also sealed'",
                timeout=30)
        t = boot_after_power_cut(m)
        m.wait_for_unit("spike.target", timeout=180)
        log(f"MEASURE sealing {MODES[m]}, new PCR state: boot to spike.target after a power cut: {time.monotonic() - t:.1f} s")
        assert m.succeed("spike secret get sealed/first v").strip() == "0"

with subtest("the keeper unit needs no TPM and no root: its exposure stays within budget"):
    out = machine.succeed("systemd-analyze security --no-pager spike-keeper@1.service | tail -1")
    log(f"MEASURE exposure spike-keeper@1.service with sealing on: {out.strip()}")
    machine.succeed("systemd-analyze security --no-pager --threshold=5 spike-keeper@1.service >/dev/null")
    out = machine.succeed("systemd-analyze security --no-pager spike-keeper-sealing@1.service | tail -1")
    log(f"MEASURE exposure spike-keeper-sealing@1.service: {out.strip()}")
    # Root with the TPM and the host key, but no network, no other device, a read-only system.
    machine.succeed("systemd-analyze security --no-pager --threshold=15 spike-keeper-sealing@1.service >/dev/null")

with subtest("start over with a new root key: every sealed file is replaced, and a stale one never makes Nexus use the old key"):
    old = machine.succeed("cat /root/spike-shards/spike.recovery.3.txt").strip()
    machine.succeed(
        "install -d -m 0700 /root/stale3",
        "cp -a /var/lib/private/spike-keeper/3 /root/stale3/state",
        "cp -a /var/lib/spike-sealing/keeper-3 /root/stale3/sealing",
    )
    before = {i: sealed_digest(i) for i in (1, 2, 3)}
    machine.succeed(runbook("start-over"))
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=180)
    for i in (1, 2, 3):
        machine.wait_until_succeeds(f"test -s {SEALED.format(i=i)}", timeout=60)
        assert sealed_digest(i) != before[i], f"keeper {i} kept its old sealed file"
    machine.fail("spike secret get sealed/first v")
    machine.succeed("spike secret put rekeyed/k v=new-key", "rm -r /root/spike-shards", runbook("export-shards"))
    assert machine.succeed("cat /root/spike-shards/spike.recovery.3.txt").strip() != old
    # Keeper 3's old sealed state comes back (a host restored from an old backup), then a
    # power cut.
    machine.succeed(
        "systemctl stop spike-keeper@3.socket spike-keeper@3.service",
        "rm -rf /var/lib/private/spike-keeper/3 /var/lib/spike-sealing/keeper-3",
        "cp -a /root/stale3/state /var/lib/private/spike-keeper/3",
        "cp -a /root/stale3/sealing /var/lib/spike-sealing/keeper-3",
    )
    boot_after_power_cut()
    machine.wait_until_succeeds(
        "journalctl -b -u spike-keeper@3.service --no-pager | grep -q 'restored the shard from its sealed file'", timeout=120)
    machine.wait_until_succeeds(
        "spike-nexus health --socket /run/spike/nexus-health.sock | grep -q '\"keepers_disagree\":\"[^\"]*keeper 3'", timeout=120)
    # Never the old key: Nexus either stays sealed or unseals with the key its key check
    # confirms, and then the new key's secret reads back.
    status, out = machine.execute("spike secret get rekeyed/k v")
    assert status == 4 or out.strip() == "new-key", f"exit {status}: {out!r}"
    log(f"stale keeper 3 after the power cut: spike secret get exits {status}")
    machine.succeed(runbook("sealing-clear-keeper"))
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=120)
    assert machine.succeed("spike secret get rekeyed/k v").strip() == "new-key"
    machine.wait_until_succeeds(
        "spike-nexus health --socket /run/spike/nexus-health.sock | grep -vq '\"keepers_disagree\":\"'", timeout=120)

