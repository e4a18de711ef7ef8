# vm-test: {"bridge": true, "nodes": {"server": {"address": "10.77.0.10/24", "keepers": 3, "threshold": 2, "install": ["--role", "server", "--keeper-peers", "https://10.77.0.11:8443,https://10.77.0.12:8443,https://10.77.0.13:8443", "--allow-net", "10.77.0.0/24"]}, "keeper1": {"address": "10.77.0.11/24", "install": ["--role", "keeper", "--keeper-id", "1", "--server-address", "10.77.0.10"]}, "keeper2": {"address": "10.77.0.12/24", "install": ["--role", "keeper", "--keeper-id", "2", "--server-address", "10.77.0.10"]}, "keeper3": {"address": "10.77.0.13/24", "install": ["--role", "keeper", "--keeper-id", "3", "--server-address", "10.77.0.10"]}}}
# Several hosts: keepers on their own machines on a private bridge. With one keeper cut off,
# Nexus still unseals; with shares - threshold + 1 cut off, it stays sealed and says so.
keepers = [keeper1, keeper2, keeper3]

start_all()

with subtest("each keeper host's SPIRE agent joins the server"):
    join_keeper_hosts(server, keepers)

with subtest("the constellation comes up across hosts"):
    server.wait_for_unit("spike.target", timeout=300)
    server.succeed("spike secret put shared/db password=across-hosts")
    for i, k in enumerate(keepers, 1):
        k.wait_for_unit(f"spike-keeper@{i}.service", timeout=60)


def nexus_status():
    return server.succeed("systemctl show -p StatusText --value spike-nexus.service").strip()


with subtest("one keeper cut off: Nexus still unseals after a restart"):
    keeper3.block()
    server.succeed("systemctl restart spike-nexus.service")
    server.wait_until_succeeds("spike-nexus health --print-code | grep -qx 200", timeout=120)
    assert server.succeed("spike secret get shared/db password").strip() == "across-hosts"

with subtest("shares - threshold + 1 keepers cut off: sealed, and the status says so"):
    keeper2.block()
    server.succeed("systemctl restart spike-nexus.service")
    server.wait_until_succeeds(
        "systemctl show -p StatusText --value spike-nexus.service | grep -q 'sealed: 1/2 shards'", timeout=120
    )
    code = server.succeed("spike-nexus health --print-code || true").strip()
    assert code == "503", f"health {code}, status {nexus_status()}"
    server.fail("spike secret get shared/db password")

with subtest("keepers reachable again: Nexus unseals by itself"):
    keeper2.unblock()
    keeper3.unblock()
    server.wait_until_succeeds("spike-nexus health --print-code | grep -qx 200", timeout=180)
    assert server.succeed("spike secret get shared/db password").strip() == "across-hosts"
