# vm-test: {"nodes": {"machine": {"keepers": 3, "threshold": 2}}}
# Restarts: Nexus killed with -9 comes back unsealed from the keepers with its data; a
# restarted keeper is re-seeded; with keepers down to the threshold Nexus still unseals; with
# every keeper and Nexus gone it stays sealed until an operator restore; a full reboot does not
# re-key, and the documented way back to unsealed works.

HEALTH = "spike status --format json"


def unsealed():
    machine.wait_until_succeeds("spike status --format json | grep -q '\"sealed\": *false'", timeout=120)


start_all()
machine.wait_for_unit("spike.target", timeout=300)
machine.succeed("spike secret put apps/a/db password=first-value")

with subtest("Nexus killed with -9 comes back unsealed with its data"):
    machine.succeed("systemctl kill -s KILL spike-nexus.service")
    machine.wait_until_succeeds("systemctl is-active spike-nexus.service", timeout=60)
    unsealed()
    assert machine.succeed("spike secret get apps/a/db password").strip() == "first-value"

with subtest("a restarted keeper is re-seeded"):
    since = machine.succeed("date +%s").strip()
    machine.succeed("systemctl restart spike-keeper@2.service")
    # Nexus probes every keeper and re-seeds one at once when it answers that it has no shard;
    # the periodic sync catches anything else. The keeper's journal records the contribution.
    machine.wait_until_succeeds(
        f"journalctl -u spike-keeper@2.service --since=@{since} | grep -qi 'shard stored'", timeout=120
    )

with subtest("keepers down to the threshold: Nexus still unseals after its own restart"):
    machine.succeed("systemctl stop spike-keeper@3.socket spike-keeper@3.service")
    machine.succeed("systemctl restart spike-nexus.service")
    unsealed()
    assert machine.succeed("spike secret get apps/a/db password").strip() == "first-value"
    machine.succeed("systemctl start spike-keeper@3.socket")

with subtest("operator recover writes the shards"):
    machine.succeed(
        "spire-server entry create -socketPath /run/spire-server/private/api.sock "
        "-parentID spiffe://spike.internal/node/local "
        "-spiffeID spiffe://spike.internal/spike/pilot/role/recover -selector unix:uid:4001 >/dev/null",
        "spire-server entry create -socketPath /run/spire-server/private/api.sock "
        "-parentID spiffe://spike.internal/node/local "
        "-spiffeID spiffe://spike.internal/spike/pilot/role/restore -selector unix:uid:4002 >/dev/null",
        "install -d -o 4001 -m 0700 /var/tmp/recover",
    )
    machine.wait_until_succeeds(
        "setpriv --reuid=4001 --regid=4001 --clear-groups env SPIKE_PILOT_RECOVERY_DIR=/var/tmp/recover "
        "spike operator recover", timeout=60)
    machine.succeed("test $(ls /var/tmp/recover/recover/spike.recovery.*.txt | wc -l) -eq 3")
    machine.succeed("test $(stat -c %a /var/tmp/recover/recover/spike.recovery.1.txt) = 600")

with subtest("every keeper and Nexus gone: sealed; a restore with the recovery shards unseals"):
    machine.succeed(
        "systemctl stop spike-nexus.service spike-keeper@1.service spike-keeper@2.service spike-keeper@3.service"
    )
    machine.succeed("systemctl start spike-nexus.service")
    machine.wait_until_succeeds("spike status --format json | grep -q '\"sealed\": *true'", timeout=60)
    machine.fail("spike secret get apps/a/db password")
    for i in (1, 2):
        machine.wait_until_succeeds(
            f"setpriv --reuid=4002 --regid=4002 --clear-groups spike operator restore "
            f"< /var/tmp/recover/recover/spike.recovery.{i}.txt", timeout=60)
    unsealed()
    assert machine.succeed("spike secret get apps/a/db password").strip() == "first-value"

with subtest("a full reboot does not re-key; restore brings it back"):
    machine.succeed("cat /var/lib/spike-bootstrap/bootstrap.done")
    machine.shutdown()
    machine.start()
    machine.wait_for_unit("spike-nexus.service", timeout=120)
    # Keepers hold their shards in RAM only, so after a whole-machine reboot Nexus is sealed
    # and bootstrap must NOT generate a new root key (that would orphan the data).
    machine.wait_until_succeeds("spike status --format json | grep -q '\"sealed\": *true'", timeout=60)
    machine.succeed("systemctl show -p ActiveState spike-bootstrap.service | grep -qv failed")
    machine.succeed("systemctl status spike-nexus | grep -q 'sealed'")
    for i in (2, 3):
        machine.wait_until_succeeds(
            f"setpriv --reuid=4002 --regid=4002 --clear-groups spike operator restore "
            f"< /var/tmp/recover/recover/spike.recovery.{i}.txt", timeout=60)
    unsealed()
    assert machine.succeed("spike secret get apps/a/db password").strip() == "first-value"
    machine.wait_for_unit("spike.target", timeout=120)
