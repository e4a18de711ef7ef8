# vm-test: {"nodes": {"machine": {"keepers": 3, "threshold": 2, "small_fs": {"path": "/var/lib/private/spike-nexus", "size_kib": 8192}}}}
# A full disk is a state, not a mystery. Nexus's state directory is a small filesystem (ext4
# with 1 KiB blocks where the host has loop devices, where a full disk once crashed Nexus with
# SIGBUS in a restart loop). It is filled during a write loop: no acknowledged write is lost,
# reads keep working, every message names the cause, a restart on the full disk neither
# crashes nor strands Nexus in systemd's start limit, and writes resume by themselves once
# space is freed.

STATE = "/var/lib/private/spike-nexus"
FILLER = f"{STATE}/filler"

start_all()
machine.wait_for_unit("spike.target", timeout=300)
machine.succeed("spike secret put full/before v=kept")


def journal_since(cursor_file, unit="spike-nexus.service"):
    return machine.succeed(f"journalctl -o cat -u {unit} --after-cursor=\"$(cat {cursor_file})\" || true")


with subtest("the disk fills during a write loop; acknowledged writes stay, reads work, the cause is named"):
    machine.succeed("journalctl -n0 --show-cursor -q | sed -n 's/^-- cursor: //p' > /var/tmp/cursor")
    # Leave a little room, then write until a put fails.
    machine.succeed(f"dd if=/dev/zero of={FILLER} bs=1k 2>/dev/null || true")
    machine.succeed(f"truncate -s -64K {FILLER}")
    machine.succeed(
        "for i in $(seq 1 400); do "
        "  spike secret put full/k$i v=$i$(head -c 600 /dev/zero | tr '\\0' x) >/dev/null 2>/var/tmp/put.err "
        "    || { echo $i > /var/tmp/failed_at; break; }; echo $i >> /var/tmp/acked; done; test -s /var/tmp/failed_at"
    )
    acked = machine.succeed("cat /var/tmp/acked 2>/dev/null || true").split()
    assert acked, "no write was acknowledged before the disk filled: the loop did not exercise a filling disk"
    log(f"MEASURE disk full: {len(acked)} writes acknowledged before the first refused one")
    err = machine.succeed("cat /var/tmp/put.err")
    assert "disk is full" in err, f"the CLI does not name the full disk: {err}"
    assert "Failed to connect" not in err, err
    # The refused write did not happen: it never appears later.
    machine.fail("spike secret get full/k$(cat /var/tmp/failed_at) v")
    # Reads keep working, including every acknowledged write.
    assert machine.succeed("spike secret get full/before v").strip() == "kept"
    machine.succeed("for i in $(cat /var/tmp/acked); do spike secret get full/k$i v | grep -q \"^$i\" || exit 1; done")
    journal = journal_since("/var/tmp/cursor")
    assert "disk is full" in journal, f"the journal MESSAGE does not name the cause:\n{journal[-2000:]}"

with subtest("a restart on the full disk neither crashes nor strands Nexus"):
    # Leave no room at all.
    machine.succeed(f"dd if=/dev/zero of={STATE}/filler2 bs=1k 2>/dev/null || true")
    machine.succeed("journalctl -n0 --show-cursor -q | sed -n 's/^-- cursor: //p' > /var/tmp/cursor2")
    machine.succeed("systemctl restart spike-nexus.service || true")
    # Either it serves reads again (unsealed from the keepers), or it is up and sealed and names
    # the store error; never SIGBUS, never a failed unit in the start limit.
    machine.wait_until_succeeds(
        "spike-nexus health --socket /run/spike/nexus-health.sock | grep -Eq '\"sealed\":false|store_error'",
        timeout=90)
    health = machine.succeed("spike-nexus health --socket /run/spike/nexus-health.sock")
    log(f"health after a restart on the full disk: {health.strip()}")
    journal = journal_since("/var/tmp/cursor2")
    for bad in ("SIGBUS", "Bus error", "core-dump", "dumped core", "start-limit-hit", "Start request repeated too quickly"):
        assert bad not in journal, f"{bad!r} in the journal after a restart on a full disk:\n{journal[-3000:]}"
    machine.fail("systemctl is-failed --quiet spike-nexus.service")
    if '"sealed":false' in health.replace(" ", ""):
        assert machine.succeed("spike secret get full/before v").strip() == "kept"
        machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
    else:
        # Sealed because the store cannot be opened: every signal names the cause.
        machine.fail("systemctl is-active --quiet spike.target")
        status, out = machine.execute("spike status 2>&1")
        assert status == 4 and "store" in out, f"spike status ({status}): {out}"
        assert "not initialized" not in out, out
        out = machine.succeed("systemctl show -p StatusText --value spike-nexus.service")
        assert "store" in out, f"STATUS does not name the store error: {out}"

with subtest("space is freed: writes resume by themselves and spike.target is active"):
    machine.succeed(f"rm -f {FILLER} {STATE}/filler2")
    machine.wait_until_succeeds("spike secret put full/after v=resumed", timeout=60)
    assert machine.succeed("spike secret get full/after v").strip() == "resumed"
    assert machine.succeed("spike secret get full/before v").strip() == "kept"
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
    machine.succeed("spike status")

with subtest("a store that cannot be opened is a named state, and Nexus gets out of it by itself"):
    # The same path a full disk at start takes when SQLite cannot open the database: forced
    # here by taking the file's permissions away from Nexus's user.
    machine.succeed("systemctl stop spike-nexus.service")
    machine.succeed(f"chmod 000 {STATE}/spike.db")
    machine.succeed("systemctl start spike-nexus.service")
    machine.wait_until_succeeds(
        "spike-nexus health --socket /run/spike/nexus-health.sock | grep -q store_error", timeout=60)
    machine.fail("systemctl is-active --quiet spike.target")
    status, out = machine.execute("spike status 2>&1")
    assert status == 4 and "cannot open its store" in out, f"spike status ({status}): {out}"
    assert "not initialized" not in out, out
    status, out = machine.execute("spike secret get full/before v 2>&1")
    assert status == 4 and "cannot open its store" in out, f"a read ({status}): {out}"
    machine.wait_until_succeeds(
        "systemctl show -p StatusText --value spike-nexus.service | grep -q 'cannot open the store'", timeout=30)
    machine.succeed(f"chmod 600 {STATE}/spike.db")
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=90)
    assert machine.succeed("spike secret get full/after v").strip() == "resumed"
