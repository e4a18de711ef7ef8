"""Steps the multi-host scenarios share, for both test drivers.

vm-tests/run puts `join_keeper_hosts` in each scenario's namespace; for the NixOS tests,
vm-tests/prelude.nix prepends this file to the scenario script. It uses only the driver API
the scenarios use (`succeed`, `wait_for_unit`).
"""


def join_keeper_hosts(server, keepers, trust_domain: str = "spike.internal") -> None:
    """Join the SPIRE agent of each keeper host to the server and register its keeper.

    Keeper host i gets a join token for `spiffe://TD/node/keeper<i>` and the server's bundle;
    the server gets an entry `spiffe://TD/spike/keeper/<i>` for `spike-keeper@<i>.service`
    under that node (what docs/operations.md asks of an operator who adds a keeper host)."""
    sock = "-socketPath /run/spire/server/private/api.sock"
    server.wait_for_unit("spire-server.service", timeout=120)
    bundle = server.succeed(f"spire-server bundle show {sock}")
    for i, k in enumerate(keepers, 1):
        node = f"spiffe://{trust_domain}/node/keeper{i}"
        token = server.succeed(
            f"spire-server token generate {sock} -ttl 600 -spiffeID {node} | sed -n 's/^Token: //p'"
        ).strip()
        server.succeed(
            f"spire-server entry create {sock} -parentID {node} "
            f"-spiffeID spiffe://{trust_domain}/spike/keeper/{i} -selector systemd:id:spike-keeper@{i}.service"
        )
        k.succeed(
            "install -d -m 0700 /run/spire-agent-join /var/lib/spire-agent",
            f"printf %s {token} > /run/spire-agent-join/token",
            f"cat > /var/lib/spire-agent/bootstrap-bundle.pem <<'PEM'\n{bundle}\nPEM",
            "systemctl reset-failed spire-agent.service; systemctl restart spire-agent.service",
        )
        k.wait_for_unit("spire-agent.service", timeout=120)


def join_nexus_host(server, host, name: str, trust_domain: str = "spike.internal") -> None:
    """Join the SPIRE agent of another Nexus host (docs/ha.md, "Adding a Nexus instance").

    As for a keeper host: a join token for `spiffe://TD/node/<name>` and the server's bundle.
    Under that node the server registers what spike-register registers on the server host for
    its own Nexus: Nexus (`systemd:id:spike-nexus.service`), the superuser CLI (`unix:uid:0`)
    and the operator's recover and restore units."""
    sock = "-socketPath /run/spire/server/private/api.sock"
    server.wait_for_unit("spire-server.service", timeout=120)
    bundle = server.succeed(f"spire-server bundle show {sock}")
    node = f"spiffe://{trust_domain}/node/{name}"
    token = server.succeed(
        f"spire-server token generate {sock} -ttl 600 -spiffeID {node} | sed -n 's/^Token: //p'"
    ).strip()
    for spiffe_id, selector in (
        ("spike/nexus", "systemd:id:spike-nexus.service"),
        ("spike/pilot/role/superuser", "unix:uid:0"),
        ("spike/pilot/role/recover", "systemd:id:spike-recover.service"),
        ("spike/pilot/role/restore", "systemd:id:spike-restore.service"),
    ):
        server.succeed(
            f"spire-server entry create {sock} -parentID {node} -spiffeID spiffe://{trust_domain}/{spiffe_id} "
            f"-selector {selector} -x509SVIDTTL 3600"
        )
    host.succeed(
        "install -d -m 0700 /run/spire-agent-join /var/lib/spire-agent",
        f"printf %s {token} > /run/spire-agent-join/token",
        f"cat > /var/lib/spire-agent/bootstrap-bundle.pem <<'PEM'\n{bundle}\nPEM",
        "systemctl reset-failed spire-agent.service; systemctl restart spire-agent.service",
    )
    host.wait_for_unit("spire-agent.service", timeout=120)
