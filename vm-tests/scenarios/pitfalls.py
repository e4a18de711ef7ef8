# vm-test: {"nodes": {"machine": {"keepers": 3, "threshold": 2}}}
# The seed's pitfalls end in clear messages, never a silent hang.

start_all()

with subtest("bootstrap masked: Nexus starts, says it waits for bootstrap, health answers 501"):
    machine.succeed("systemctl mask --runtime spike-bootstrap.service")
    machine.succeed("systemctl stop spike-bootstrap.service || true")
    # Returns without hanging: READY=1 means listening with an SVID, not unsealed.
    machine.succeed("timeout 90 systemctl start spike-nexus.service")
    machine.wait_until_succeeds(
        "systemctl status spike-nexus.service | grep -q 'waiting for bootstrap'", timeout=60
    )
    code = machine.succeed(
        "spike-nexus health --socket /run/spike/nexus-health.sock --print-code || true"
    ).strip()
    assert code == "501", f"health code {code}"
    out = machine.fail("spike secret get a/b 2>&1")
    assert "not" in out.lower(), out
    machine.succeed("systemctl unmask --runtime spike-bootstrap.service")

with subtest("shuffled start order converges"):
    machine.succeed("systemctl stop spike.target spike-nexus.service 'spike-keeper@*' spire-agent.service")
    machine.succeed("systemctl start spike-nexus.service --no-block")
    machine.succeed("sleep 2; systemctl start spike-keeper@1.socket spike-keeper@2.socket spike-keeper@3.socket")
    machine.succeed("sleep 2; systemctl start spire-agent.service")
    machine.succeed("systemctl start spike-bootstrap.service --no-block")
    machine.wait_for_unit("spike-bootstrap.service", timeout=240)
    machine.succeed("systemctl start --no-block spike.target")
    machine.wait_for_unit("spike.target", timeout=240)

with subtest("a trust root missing from config names the rejected SPIFFE ID"):
    machine.succeed(
        "mkdir -p /run/systemd/system/spike-keeper@1.service.d",
        "printf '[Service]\\nEnvironment=SPIKE_TRUST_ROOT_NEXUS=elsewhere.example\\n' "
        "> /run/systemd/system/spike-keeper@1.service.d/trust.conf",
        "systemctl daemon-reload",
        "systemctl restart spike-keeper@1.service",
        "systemctl restart spike-nexus.service",
    )
    machine.wait_until_succeeds(
        "journalctl -u spike-keeper@1.service --since=-2min | grep 'spiffe://spike.internal/spike/nexus' | grep -qi reject",
        timeout=120,
    )
    machine.succeed("rm -r /run/systemd/system/spike-keeper@1.service.d", "systemctl daemon-reload")
