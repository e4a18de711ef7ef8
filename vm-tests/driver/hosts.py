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
