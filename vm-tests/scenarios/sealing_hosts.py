# vm-test: {"bridge": true, "nodes": {"server": {"address": "10.78.0.10/24", "keepers": 3, "threshold": 2, "install": ["--role", "server", "--keeper-peers", "https://10.78.0.11:8443,https://10.78.0.12:8443,https://10.78.0.13:8443", "--allow-net", "10.78.0.0/24"]}, "keeper1": {"address": "10.78.0.11/24", "install": ["--role", "keeper", "--keeper-id", "1", "--server-address", "10.78.0.10", "--shard-sealing", "host"]}, "keeper2": {"address": "10.78.0.12/24", "tpm": true, "install": ["--role", "keeper", "--keeper-id", "2", "--server-address", "10.78.0.10", "--shard-sealing", "tpm2"]}, "keeper3": {"address": "10.78.0.13/24", "tpm": true, "install": ["--role", "keeper", "--keeper-id", "3", "--server-address", "10.78.0.10", "--shard-sealing", "host+tpm2"]}, "thief": {"address": "10.78.0.20/24", "tpm": true, "install": ["--role", "keeper", "--keeper-id", "1", "--server-address", "10.78.0.10", "--shard-sealing", "host+tpm2"]}}}
# Shard sealing across hosts: each keeper host seals its own keeper (host, tpm2 and host+tpm2,
# one mode per host; the TPM2s are swtpm), and no host holds the threshold. Every machine is
# cut at once and booted again: spike.target comes back on the server with no operator
# action. A copy of keeper 1's state directory and sealing key on another machine does not
# decrypt there, the journals say so, and no shard is in plaintext on any disk.
import time

keepers = [keeper1, keeper2, keeper3]
MODES = {1: "with-key=host", 2: "with-key=tpm2 tpm2-pcrs=systemd-default",
         3: "with-key=host+tpm2 tpm2-pcrs=systemd-default"}
STATE = "var/lib/private/spike-keeper/{i} var/lib/spike-sealing/keeper-{i}"

start_all()

with subtest("each keeper host's SPIRE agent joins the server"):
    join_keeper_hosts(server, keepers)

with subtest("the constellation comes up; each host seals its own keeper in its own mode"):
    server.wait_for_unit("spike.target", timeout=300)
    server.succeed("spike secret put shared/db password=across-hosts")
    for i, k in enumerate(keepers, 1):
        k.wait_until_succeeds(f"test -s /var/lib/private/spike-keeper/{i}/shard.sealed", timeout=60)
        assert k.succeed(f"cat /var/lib/spike-sealing/keeper-{i}/key.cred.params").strip() == MODES[i]
    server.succeed(runbook("export-shards"))
    shards = {i: server.succeed(f"cut -d: -f3 /root/spike-shards/spike.recovery.{i}.txt").strip() for i in (1, 2, 3)}

with subtest("every host cut at once: spike.target comes back with no operator action"):
    for m in machines:
        m.crash()
    t = time.monotonic()
    for m in machines:
        m.start()
    server.wait_for_unit("spike.target", timeout=300)
    log(f"MEASURE sealing across hosts (host, tpm2, host+tpm2): boot to spike.target after all hosts lost power: {time.monotonic() - t:.1f} s")
    assert server.succeed("spike secret get shared/db password").strip() == "across-hosts"
    for i, k in enumerate(keepers, 1):
        # Keepers are socket-activated, and Nexus unseals from the first threshold of them: a
        # keeper may still be starting (its TPM2 unseal) when spike.target is reached.
        k.wait_until_succeeds(
            f"journalctl -b -u spike-keeper@{i}.service --no-pager | grep -q 'restored the shard from its sealed file'",
            timeout=60)

with subtest("keeper 1's state directory and sealing key copied to another machine do not decrypt there"):
    archive = keeper1.succeed(f"tar -C / -czf - {STATE.format(i=1)} | base64 -w0").strip()
    thief.succeed(
        "systemctl stop spike-keeper@1.socket spike-keeper@1.service",
        f"echo {archive} | base64 -d | tar -C / -xzf -",
        "sha256sum /var/lib/private/spike-keeper/1/shard.sealed > /root/copied.sha256",
        # This machine's agent never joined (it is masked here, so the keeper does not wait
        # for it): the keeper then waits for an SVID in vain, but it reads its sealed shard
        # first, and its sealing unit runs before it.
        "systemctl mask --runtime --now spire-agent.service",
        "systemctl start --no-block spike-keeper@1.service",
    )
    thief.wait_until_succeeds(
        "journalctl -u spike-keeper-sealing@1.service --no-pager | grep -q 'does not decrypt on this machine'", timeout=60)
    out = thief.succeed("journalctl -u spike-keeper-sealing@1.service --no-pager")
    assert "another machine" in out, out
    thief.succeed("ls /var/lib/spike-sealing/keeper-1/key.cred.undecryptable-*")
    thief.wait_until_succeeds(
        "journalctl -u spike-keeper@1.service --no-pager | grep -q 'the sealing key was replaced'", timeout=60)
    # Kept as it was, for forensics.
    thief.succeed("sha256sum -c /root/copied.sha256")

# Prints every file under the given directories that holds one of the shards in $SHARDS (hex,
# space-separated) as raw bytes, and exits 1 if there is one. perl reads each file whole, so a
# shard is found whatever bytes it holds (grep, line by line, would miss one with a newline).
SCAN = (
    "find {dirs} -xdev -type f -size -64M -print0 2>/dev/null | xargs -0 -r perl -e '"
    "my @p = map {{ pack(\"H*\", $_) }} split / /, $ENV{{SHARDS}}; my $hit = 0; "
    "for my $f (@ARGV) {{ open(my $h, \"<:raw\", $f) or next; local $/; my $d = <$h>; "
    "for (@p) {{ if (index($d, $_) >= 0) {{ print \"$f\\n\"; $hit = 1 }} }} }} exit $hit' "
    "&& echo none"
)

with subtest("no shard is in plaintext on any machine's disk"):
    env = f"export SHARDS='{' '.join(shards.values())}'"
    # First, the scan finds a shard where one is (a control file, removed again).
    server.succeed(f"perl -e 'print pack(\"H*\", $ARGV[0])' {shards[2]} > /var/tmp/control")
    out = server.execute(f"{env}; {SCAN.format(dirs='/var/tmp')}")[1]
    assert out.split() == ["/var/tmp/control"], f"the scan does not find a shard: {out!r}"
    server.succeed("rm /var/tmp/control")
    for m in [server, *keepers, thief]:
        out = m.succeed(f"{env}; {SCAN.format(dirs='/var /etc /root /tmp /usr/local')}")
        assert out.split() == ["none"], f"{m.name}: a shard in plaintext on the disk: {out}"
    # The keepers hold them: the cut did not lose them.
    assert server.succeed("spike secret get shared/db password").strip() == "across-hosts"
