# vm-test: {"nodes": {"machine": {"keepers": 3, "threshold": 2}}}
# Power cut: the recovery shards are exported while healthy (as docs/operations.md says), the
# whole machine is killed mid-write (SIGKILL to every process, PID 1 included) and booted
# again. Nexus is then sealed with its data, and every readiness signal and message says so
# and names the way back; the runbook's restore, run as written, unseals it; every
# acknowledged write is readable; spike.target comes back by itself. Also measures how fast
# spike.target follows Nexus down and up.
import time

start_all()
machine.wait_for_unit("spike.target", timeout=300)

with subtest("spike.target follows Nexus: inactive when it stops, active again by itself"):
    machine.succeed("spike secret put power/first v=0")
    t = time.monotonic()
    machine.succeed("systemctl stop spike-nexus.service")
    machine.wait_until_fails("systemctl is-active --quiet spike.target", timeout=30)
    log(f"MEASURE spike.target inactive after `systemctl stop spike-nexus`: {time.monotonic() - t:.1f} s")
    machine.fail("systemctl is-active --quiet spike-ready.service")
    status, _ = machine.execute("spike status")
    assert status == 3, f"spike status with Nexus stopped exits {status}, not 3 (unreachable)"
    t = time.monotonic()
    machine.succeed("systemctl start spike-nexus.service")
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
    log(f"MEASURE spike.target active again after `systemctl start spike-nexus`: {time.monotonic() - t:.1f} s")
    machine.succeed("spike status")

with subtest("the recovery shards are exported while healthy, as the runbook writes it"):
    machine.succeed(runbook("export-shards"))
    machine.succeed("test $(ls /root/spike-shards/spike.recovery.*.txt | wc -l) -eq 3")
    machine.succeed("test $(stat -c %a /root/spike-shards) = 700")
    machine.succeed("test $(stat -c %a /root/spike-shards/spike.recovery.1.txt) = 600")
    machine.succeed("grep -Eq '^spike:1:[0-9a-f]{64}$' /root/spike-shards/spike.recovery.1.txt")
    # Only root's transient units hold the recover identity: an ordinary user is refused.
    machine.fail("setpriv --reuid=4242 --regid=4242 --clear-groups spike operator recover")

with subtest("power cut mid-write"):
    # Every put the CLI acknowledged is appended to /var/tmp/acked (the host's page cache keeps
    # it across the crash: only the machine's processes die).
    machine.succeed(
        "systemd-run --unit=writer --service-type=exec --setenv=PATH=\"$PATH\" /bin/sh -c "
        "'i=0; while :; do i=$((i+1)); spike secret put power/k$i v=$i >/dev/null 2>&1 && echo $i >> /var/tmp/acked; done'"
    )
    machine.wait_until_succeeds("test $(wc -l < /var/tmp/acked) -ge 15", timeout=120)
    machine.crash()
    machine.start()

with subtest("after the power cut: sealed with data, and every signal says so and names the way back"):
    machine.wait_for_unit("spike-nexus.service", timeout=120)
    machine.wait_until_succeeds(
        "spike-nexus health --socket /run/spike/nexus-health.sock | grep -q '\"has_data\":true'", timeout=60)
    # Keepers hold shards in RAM only: none survived. Bootstrap must not re-key.
    machine.succeed("test -e /var/lib/spike-bootstrap/bootstrap.done")
    machine.fail("systemctl is-failed --quiet spike-bootstrap.service")
    machine.fail("systemctl is-active --quiet spike.target")
    machine.fail("systemctl is-active --quiet spike-ready.service")
    status, out = machine.execute("spike status 2>&1")
    assert status == 4, f"spike status exits {status} when sealed, not 4: {out}"
    assert "spike-operator restore" in out and "not initialized" not in out, out
    status, out = machine.execute("spike secret get power/first v 2>&1")
    assert status == 4, f"a read on a sealed Nexus exits {status}, not 4: {out}"
    assert "spike-operator restore" in out and "not initialized" not in out, out
    machine.wait_until_succeeds(
        "systemctl show -p StatusText --value spike-nexus.service | grep -q 'spike-operator restore'", timeout=60)
    out = machine.succeed("systemctl show -p StatusText --value spike-nexus.service")
    assert "bootstrap" not in out, out

with subtest("the runbook's restore, run as written, unseals Nexus; spike.target comes back by itself"):
    t = time.monotonic()
    machine.succeed(runbook("power-cut-restore"))
    machine.succeed("spike status")
    log(f"MEASURE power cut: restore command to unsealed: {time.monotonic() - t:.1f} s")
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
    log(f"MEASURE power cut: restore command to spike.target active: {time.monotonic() - t:.1f} s")
    # The shards travelled through pipes: never in the journal (command lines included).
    machine.fail("journalctl --no-pager | grep -Eq 'spike:[0-9]+:[0-9a-f]{64}'")

with subtest("every acknowledged write is readable"):
    acked = machine.succeed("cat /var/tmp/acked").split()
    assert len(acked) >= 15, acked
    machine.succeed(
        "for i in $(cat /var/tmp/acked); do "
        "  test \"$(spike secret get power/k$i v)\" = \"$i\" || { echo \"lost power/k$i\" >&2; exit 1; }; "
        "done"
    )
    assert machine.succeed("spike secret get power/first v").strip() == "0"
    log(f"MEASURE power cut: {len(acked)} acknowledged writes, all readable")

with subtest("the keepers hold their shards again: a Nexus restart unseals without the operator"):
    machine.succeed("systemctl restart spike-nexus.service")
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
