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
    # --kill-whom=main: signalling the whole cgroup fails inside nspawn on hosts with a hybrid
    # cgroup layout ("Failed to send signal SIGKILL to auxiliary processes: Input/output
    # error"); Nexus is one process, so the main process is all there is to kill.
    left = machine.get_unit_info("spike.target")["InactiveEnterTimestampMonotonic"]
    machine.succeed("systemctl kill --kill-whom=main -s KILL spike-nexus.service")
    # spike.target went down (it may be back already: Nexus restarts and unseals in seconds).
    machine.wait_until_succeeds(
        f"test \"$(systemctl show -p InactiveEnterTimestampMonotonic --value spike.target)\" != {left}", timeout=30)
    machine.wait_until_succeeds("systemctl is-active spike-nexus.service", timeout=60)
    unsealed()
    assert machine.succeed("spike secret get apps/a/db password").strip() == "first-value"

with subtest("a restarted keeper is re-seeded (the runbook's keeper-restart, as written)"):
    since = machine.succeed("date +%s").strip()
    machine.succeed(runbook("keeper-restart"))
    # Nexus probes every keeper and re-seeds one at once when it answers that it has no shard;
    # the periodic sync catches anything else. The keeper's journal records the contribution.
    machine.wait_until_succeeds(
        f"journalctl -u spike-keeper@2.service --since=@{since} | grep -qi 'shard stored'", timeout=120
    )

with subtest("the runbook's stop-start and backup: Nexus unseals again by itself"):
    machine.succeed(runbook("stop-start"))
    unsealed()
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
    machine.succeed(runbook("backup"))
    machine.succeed("test -s \"$(ls -d /root/spike-backup/*/spike.db | head -n1)\"")
    unsealed()
    machine.wait_until_succeeds("systemctl is-active --quiet spike.target", timeout=60)
    # Reading the state as the runbook does: every command of it succeeds when healthy.
    machine.succeed(runbook("state"))
    assert machine.succeed("spike secret get apps/a/db password").strip() == "first-value"

with subtest("keepers down to the threshold: Nexus still unseals after its own restart"):
    machine.succeed("systemctl stop spike-keeper@3.socket spike-keeper@3.service")
    machine.succeed("systemctl restart spike-nexus.service")
    unsealed()
    assert machine.succeed("spike secret get apps/a/db password").strip() == "first-value"
    machine.succeed("systemctl start spike-keeper@3.socket")

with subtest("operator recover writes the shards (spike-operator, the identities spike-register provisions)"):
    machine.wait_until_succeeds("spike-operator recover /var/tmp/recover", timeout=60)
    machine.succeed("test $(ls /var/tmp/recover/spike.recovery.*.txt | wc -l) -eq 3")
    machine.succeed("test $(stat -c %a /var/tmp/recover/spike.recovery.1.txt) = 600")

with subtest("every keeper and Nexus gone: sealed; a restore with the recovery shards unseals"):
    machine.succeed(
        "systemctl stop spike-nexus.service spike-keeper@1.service spike-keeper@2.service spike-keeper@3.service"
    )
    machine.succeed("systemctl start spike-nexus.service")
    machine.wait_until_succeeds("spike status --format json | grep -q '\"sealed\": *true'", timeout=60)
    machine.fail("spike secret get apps/a/db password")
    machine.succeed("mkdir -p /var/tmp/two && cp /var/tmp/recover/spike.recovery.1.txt "
                    "/var/tmp/recover/spike.recovery.2.txt /var/tmp/two/")
    machine.succeed("spike-operator restore /var/tmp/two")
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
    machine.succeed("cat /var/tmp/recover/spike.recovery.3.txt /var/tmp/recover/spike.recovery.2.txt "
                    "| spike-operator restore -")
    unsealed()
    assert machine.succeed("spike secret get apps/a/db password").strip() == "first-value"
    machine.wait_for_unit("spike.target", timeout=120)
