# vm-test: {"nodes": {"machine": {"keepers": 3, "threshold": 2}}}
# Hardening: exposure scores, no core dumps, no key or secret value in the journal or the
# database file, and one unit cannot read another's state.
start_all()
machine.wait_for_unit("spike.target", timeout=300)

with subtest("systemd-analyze security exposure is within budget"):
    # --threshold is on the 0-100 scale: 15 = 1.5, 5 = 0.5, 20 = 2.0.
    for unit, threshold in (("spike-nexus.service", 15), ("spike-keeper@1.service", 5),
                            ("spike-bootstrap.service", 20)):
        out = machine.succeed(f"systemd-analyze security --no-pager {unit} | tail -1")
        log(f"MEASURE exposure {unit}: {out.strip()}")
        machine.succeed(f"systemd-analyze security --no-pager --threshold={threshold} {unit} >/dev/null")

with subtest("no core dumps"):
    for unit in ("spike-nexus.service", "spike-keeper@1.service"):
        assert machine.get_unit_info(unit)["LimitCORE"] == "0", unit
        pid = machine.succeed(f"systemctl show -p MainPID --value {unit}").strip()
        # PR_SET_DUMPABLE=0 makes the kernel hand /proc/<pid>/ to root instead of the unit's user.
        owner = machine.succeed(f"stat -c %u /proc/{pid}/environ").strip()
        assert owner == "0", f"{unit}: /proc/{pid} owned by {owner}: the process is dumpable"
    pid = machine.succeed("systemctl show -p MainPID --value spike-keeper@1.service").strip()
    machine.succeed(f"kill -SEGV {pid}")
    machine.wait_until_succeeds("systemctl is-active spike-keeper@1.service", timeout=60)
    machine.fail("ls /var/lib/systemd/coredump/* 2>/dev/null | grep -q .")
    machine.fail("find / -xdev -name 'core*' -newer /etc/spike/nexus.toml -type f 2>/dev/null | grep -q .")

with subtest("a secret value given on standard input or in a file never reaches a command line"):
    # `spike secret put PATH KEY=VALUE` puts VALUE in /proc/<pid>/cmdline, readable by every
    # local user; the safe forms are KEY=- (standard input) and KEY=@FILE. The value is decoded
    # inside the machine, and a `spike secret put` blocked reading its standard input (a FIFO
    # fed 15 s later) shows only `canary=-` in its command line.
    machine.succeed("rm -f /tmp/put.fifo /tmp/put.rc /tmp/put.out && mkfifo -m 600 /tmp/put.fifo")
    # Each command runs in a transient unit that is stopped (its processes killed) when the
    # command returns, so the writer and the reader run in transient units of their own.
    machine.succeed(
        "systemd-run --quiet --collect --unit=spike-canary-feed --setenv=PATH=$PATH "
        "sh -c '{ sleep 15; echo VkFMVUUtM2YxYzlhN2UtY2FuYXJ5 | base64 -d; } > /tmp/put.fifo'"
    )
    machine.succeed(
        "systemd-run --quiet --collect --unit=spike-canary-put --setenv=PATH=$PATH "
        "--setenv=HOME=/root sh -c 'spike secret put canary/path canary=- < /tmp/put.fifo "
        "> /tmp/put.out 2>&1; echo $? > /tmp/put.rc'"
    )
    machine.wait_until_succeeds(
        "for p in $(pgrep -f 'secret put canary/path'); do tr '\\0' ' ' < /proc/$p/cmdline; echo; done"
        " | grep -q 'secret put canary/path canary=- *$'",
        timeout=12,
    )
    cmdlines = machine.succeed(
        "for p in $(pgrep -f 'secret put canary/path'); do tr '\\0' ' ' < /proc/$p/cmdline; echo; done"
    )
    log(f"command lines while spike reads its standard input: {cmdlines!r}")
    assert "VALUE-3f1c9a7e-canary" not in cmdlines, cmdlines
    machine.wait_until_succeeds("test -s /tmp/put.rc", timeout=60)
    rc = machine.succeed("cat /tmp/put.rc").strip()
    assert rc == "0", machine.succeed("cat /tmp/put.out")
    assert machine.succeed("spike secret get canary/path canary").strip() == "VALUE-3f1c9a7e-canary"
    # KEY=@FILE: the value is the file's exact content.
    machine.succeed(
        "umask 077; echo VkFMVUUtM2YxYzlhN2UtY2FuYXJ5 | base64 -d > /root/canary.txt; "
        "spike secret put canary/file canary=@/root/canary.txt; rm /root/canary.txt"
    )
    assert machine.succeed("spike secret get canary/file canary").strip() == "VALUE-3f1c9a7e-canary"
    # Negative: standard input cannot feed two values; refused before anything is read or sent.
    out = machine.fail("echo x | spike secret put canary/two a=- b=- 2>&1")
    assert "more than one value reads standard input" in out, out
    machine.fail("spike secret get canary/two a")

with subtest("the root key and secret values never reach the journal or the database file"):
    machine.fail("journalctl --no-pager | grep -q 'VALUE-3f1c9a7e-canary'")
    machine.fail("grep -rqa 'VALUE-3f1c9a7e-canary' /var/lib/private/spike-nexus/")
    machine.fail("grep -rqa 'canary/path' /var/lib/private/spike-nexus/")
    # The recovery shards are the root key in another form; they must not be logged either.
    machine.fail("journalctl --no-pager | grep -Eq 'spike:[0-9]+:[0-9a-f]{64}'")

with subtest("one unit cannot read another's state"):
    machine.fail(
        "systemd-run --wait --pipe -q -p DynamicUser=yes -p ProtectSystem=strict "
        "cat /var/lib/private/spike-nexus/spike.db > /dev/null"
    )
    machine.fail(
        "systemd-run --wait --pipe -q -p DynamicUser=yes ls /var/lib/private/spike-bootstrap/"
    )
    machine.succeed("test $(stat -c %a /var/lib/private) = 700")
