"""The README's appliance command: build what is missing, boot the whole SPIKE constellation in
an nspawn machine, wait for spike.target, store and read a secret, and say how to go on.

    scripts/appliance.sh up | status | shell | spike ARGS... | down | destroy
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import nspawn  # noqa: E402

STATE = Path(os.environ.get("SPIKE_APPLIANCE_DIR", "/var/lib/spike-appliance"))
NAME = "spike-appliance"


def step(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def run(*args: str, **kw) -> str:
    return subprocess.run(args, check=True, text=True, stdout=subprocess.PIPE, **kw).stdout.strip()


def machine(rootfs: Path | None = None, spire: Path | None = None) -> nspawn.Machine:
    def prepare(m: nspawn.Machine) -> None:
        if (m.root / "usr/local/bin/spike-nexus").exists() and not os.environ.get("SPIKE_APPLIANCE_REINSTALL"):
            return
        step("installing SPIKE into the machine (scripts/install.sh --root ...)")
        subprocess.run([str(REPO / "scripts/install.sh"), "--root", str(m.root), "--from",
                        str(REPO / "target/release"), "--spire-from", str(spire)], check=True)
    m = nspawn.Machine(NAME, rootfs or Path("/nonexistent"), STATE, prepare=prepare)
    pidfile = STATE / "pid1"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        if Path(f"/proc/{pid}/comm").exists() and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
            m.pid1 = pid
            m.booted = True
    return m


def running() -> nspawn.Machine:
    m = machine()
    if not m.booted:
        sys.exit("appliance: not running; start it with: sudo scripts/appliance.sh up")
    return m


def explain(m: nspawn.Machine) -> str:
    """What the appliance is waiting for, in one paragraph."""
    lines = []
    for unit in ("spire-server.service", "spire-agent.service", "spike-nexus.service",
                 "spike-bootstrap.service", "spike-ready.service"):
        info = m.get_unit_info(unit)
        state = f"{info.get('ActiveState')}/{info.get('SubState')}"
        if info.get("UnitFileState") == "masked" or info.get("LoadState") == "masked":
            state = "MASKED"
        status = info.get("StatusText", "")
        lines.append(f"  {unit:26} {state:22} {status}")
    text = "\n".join(lines)
    boot = m.get_unit_info("spike-bootstrap.service")
    if boot.get("LoadState") == "masked":
        text += ("\n  -> spike-bootstrap.service is masked: Nexus waits for a root key that nobody generates."
                 "\n     Unmask it (systemctl unmask spike-bootstrap.service) and start spike.target.")
    elif boot.get("ActiveState") == "failed":
        text += "\n  -> bootstrap failed; see: scripts/appliance.sh shell, then journalctl -u spike-bootstrap"
    return text


def up() -> int:
    if os.geteuid() != 0:
        sys.exit("appliance: must run as root (systemd-nspawn, overlay mounts)")
    t0 = time.monotonic()
    step("host packages (scripts/install-deps.sh --appliance)")
    subprocess.run([str(REPO / "scripts/install-deps.sh"), "--appliance"], check=True)
    step("building the SPIKE binaries (cargo build --release; a few minutes the first time)")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "spike-nexus", "-p", "spike-keeper",
                    "-p", "spike-bootstrap", "-p", "spike-pilot"], check=True, cwd=REPO)
    step("SPIRE v1.13.3 (built from the Go module proxy when missing; several minutes the first time)")
    spire = Path(run(str(REPO / "scripts/build-spire.sh")))
    step("Debian 12 root filesystem (debootstrap when missing; about a minute)")
    rootfs = Path(run(str(REPO / "scripts/build-rootfs.sh")))
    m = machine(rootfs, spire)
    if not m.booted:
        step(f"booting the appliance machine '{NAME}' (state under {STATE})")
        m.start()
        (STATE / "pid1").write_text(str(m.pid1))
    step("waiting for spike.target: SPIRE -> keepers + Nexus -> bootstrap -> unsealed")
    deadline = time.monotonic() + 300
    last = ""
    while True:
        info = m.get_unit_info("spike.target")
        if info.get("ActiveState") == "active":
            break
        now = explain(m)
        if now != last:
            print(now, file=sys.stderr, flush=True)
            last = now
        if time.monotonic() > deadline:
            print("appliance: spike.target not reached after 300 s; the state above says what is missing",
                  file=sys.stderr)
            return 1
        time.sleep(2)
    step(f"spike.target reached ({time.monotonic() - t0:.0f} s in all)")
    step("storing and reading a secret with `spike`")
    print(m.succeed("spike secret put demo/hello greeting=hello-from-spike && "
                    "spike secret get demo/hello greeting"), end="")
    print(f"""
The SPIKE appliance is up. Next steps:
  sudo scripts/appliance.sh spike secret list      # run the spike CLI inside (as the superuser pilot)
  sudo scripts/appliance.sh shell                  # a root shell inside; try: systemctl status spike-nexus
  sudo scripts/appliance.sh status                 # unit states and seal status
  sudo scripts/appliance.sh down                   # stop it (data stays under {STATE})
  sudo scripts/appliance.sh destroy                # stop it and delete its data
Inside, Nexus listens on :8553 (mutual TLS with SPIFFE IDs), health on /run/spike/nexus-health.sock.""")
    return 0


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "up"
    if cmd == "up":
        return up()
    if cmd == "status":
        m = running()
        print(explain(m))
        print(m.succeed("spike status || true"), end="")
        return 0
    if cmd == "shell":
        m = running()
        return subprocess.call(["nsenter", "-t", str(m.pid1), "-a", "/bin/bash", "-l"])
    if cmd == "spike":
        m = running()
        status, out = m.execute("spike " + " ".join(__import__("shlex").quote(a) for a in argv[1:]))
        print(out, end="")
        return status
    if cmd in ("down", "destroy"):
        m = running() if (STATE / "pid1").exists() else machine()
        # SIGTERM to systemd-nspawn halts the machine cleanly.
        subprocess.run(["pkill", "-TERM", "-f", f"systemd-nspawn.*-M {NAME}"], check=False)
        time.sleep(3)
        subprocess.run(["umount", "-l", str(STATE / NAME / "root")], check=False)
        (STATE / "pid1").unlink(missing_ok=True)
        if cmd == "destroy":
            subprocess.run(["rm", "-rf", str(STATE)], check=True)
            step(f"removed {STATE}")
        else:
            step(f"stopped; data kept under {STATE}")
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
