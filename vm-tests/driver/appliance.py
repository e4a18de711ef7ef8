"""The README's appliance command: build what is missing, boot the whole SPIKE constellation in
an nspawn machine, wait for spike.target, store and read a secret, and say how to go on.

    scripts/appliance.sh up | status | recover DIR | restore DIR | shell | spike ARGS... | down | destroy

Exit status of `status` (and of `up` when it stops waiting): 0 unsealed and serving, 4 sealed
(the message names the way back), 3 Nexus or the machine unreachable, 1 other errors.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

EXIT_SEALED = 4
EXIT_UNREACHABLE = 3
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import nspawn  # noqa: E402

STATE = Path(os.environ.get("SPIKE_APPLIANCE_DIR", "/var/lib/spike-appliance"))
NAME = os.environ.get("SPIKE_APPLIANCE_NAME", "spike-appliance")


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
        print("appliance: not running; start it with: sudo scripts/appliance.sh up", file=sys.stderr)
        sys.exit(EXIT_UNREACHABLE)
    return m


def health(m: nspawn.Machine) -> dict:
    """Nexus's live health answer over its local socket, or {} when it does not answer."""
    import json
    r = m._nsenter(["spike-nexus", "health", "--socket", "/run/spike/nexus-health.sock"], timeout=20)
    if r.returncode != 0:
        return {}
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def explain(m: nspawn.Machine) -> str:
    """The live state of every unit, with the STATUS= of those running, and the way on."""
    lines = []
    for unit in ("spire-server.service", "spire-agent.service", "spike-nexus.service",
                 "spike-bootstrap.service", "spike-ready.service", "spike.target"):
        info = m.get_unit_info(unit)
        active = info.get("ActiveState", "")
        state = f"{active}/{info.get('SubState')}"
        if info.get("UnitFileState") == "masked" or info.get("LoadState") == "masked":
            state = "MASKED"
        # STATUS= of a unit that is not running is history, not state: show it only live.
        status = info.get("StatusText", "") if active in ("active", "activating", "reloading") else ""
        lines.append(f"  {unit:26} {state:22} {status}")
    text = "\n".join(lines)
    boot = m.get_unit_info("spike-bootstrap.service")
    if boot.get("LoadState") == "masked":
        text += ("\n  -> spike-bootstrap.service is masked: Nexus waits for a root key that nobody generates."
                 "\n     Unmask it (systemctl unmask spike-bootstrap.service) and start it"
                 " (systemctl start --no-block spike-bootstrap.service).")
    elif boot.get("ActiveState") == "failed":
        text += "\n  -> bootstrap failed; see: scripts/appliance.sh shell, then journalctl -u spike-bootstrap"
    return text


SEALED_WITH_DATA = """appliance: SPIKE Nexus is sealed: it has data, but no keeper holds a shard ({collected}/{threshold}).
  Keepers keep their shards in RAM only, so after a power cut or a reboot of the whole machine
  Nexus needs the recovery shards you exported while it was healthy. Restore it with:
    sudo scripts/appliance.sh restore DIR      # DIR holds spike.recovery.<id>.txt files
  (inside the machine: spike-operator restore DIR). See docs/operations.md, "A full power cut"."""


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
    sealed_since = None
    while True:
        info = m.get_unit_info("spike.target")
        if info.get("ActiveState") == "active":
            break
        now = explain(m)
        if now != last:
            print(now, file=sys.stderr, flush=True)
            last = now
        h = health(m)
        # Sealed with data and no keeper able to unseal it does not pass by waiting (a power
        # cut). Nexus itself decides that and names the way back in its STATUS=; say so after
        # a short grace instead of waiting out the deadline.
        nexus_status = m.get_unit_info("spike-nexus.service").get("StatusText", "")
        if h.get("sealed") and "spike-operator restore" in nexus_status:
            sealed_since = sealed_since or time.monotonic()
            if time.monotonic() - sealed_since > 10:
                print(SEALED_WITH_DATA.format(collected=h.get("shards_collected", 0),
                                              threshold=h.get("threshold", "?")), file=sys.stderr)
                return EXIT_SEALED
        elif h.get("store_error"):
            sealed_since = sealed_since or time.monotonic()
            if time.monotonic() - sealed_since > 30:
                print(f"appliance: SPIKE Nexus cannot open its store: {h['store_error']}\n"
                      "  It retries by itself once the cause is fixed (free space under /var/lib/spike-nexus;\n"
                      "  see journalctl -u spike-nexus inside: sudo scripts/appliance.sh shell).", file=sys.stderr)
                return EXIT_SEALED
        else:
            sealed_since = None
        if time.monotonic() > deadline:
            print("appliance: spike.target not reached after 300 s; the state above says what is missing",
                  file=sys.stderr)
            return EXIT_SEALED if h else EXIT_UNREACHABLE
        time.sleep(2)
    step(f"spike.target reached ({time.monotonic() - t0:.0f} s in all)")
    step("storing and reading a secret with `spike`")
    status, out = m.execute("spike secret put demo/hello greeting=hello-from-spike && "
                            "spike secret get demo/hello greeting")
    print(out, end="")
    if status != 0:
        print(f"appliance: the demo secret failed (exit {status}); see the message above and "
              "sudo scripts/appliance.sh status", file=sys.stderr)
        return status
    print(f"""
The SPIKE appliance is up. Export the recovery shards NOW and keep them offline, apart from
each other: keepers hold shards in RAM only, and after a power cut these files are the only
way back (docs/operations.md):
  sudo scripts/appliance.sh recover ~/spike-shards   # writes spike.recovery.<id>.txt, mode 0600
Next steps:
  sudo scripts/appliance.sh spike secret list      # run the spike CLI inside (as the superuser pilot)
  sudo scripts/appliance.sh shell                  # a root shell inside; try: systemctl status spike-nexus
  sudo scripts/appliance.sh status                 # live state (exit 0 unsealed, 4 sealed, 3 unreachable)
  sudo scripts/appliance.sh down                   # stop it (data stays under {STATE})
  sudo scripts/appliance.sh destroy                # stop it and delete its data
Inside, Nexus listens on :8553 (mutual TLS with SPIFFE IDs), health on /run/spike/nexus-health.sock.""")
    return 0


SHARD = re.compile(r"^spike:([0-9]+):[0-9a-f]{64}$")


def recover(dest: str) -> int:
    """Export the recovery shards from the running appliance into DIR on this host.

    DIR is created 0700 and each file 0600, with O_EXCL|O_NOFOLLOW so that nothing planted in
    DIR receives a shard; under sudo both are handed to the invoking user, who must move them
    off the host."""
    m = running()
    r = m._nsenter(["spike-operator", "recover", "-"], timeout=120)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        return r.returncode
    shards = r.stdout.split()
    if not shards or not all(SHARD.match(x) for x in shards):
        print("appliance: spike-operator recover returned something that is not a list of shards; "
              "nothing was written", file=sys.stderr)
        return 1
    out = Path(dest)
    if out.is_symlink():
        print(f"appliance: {out} is a symbolic link; name a directory", file=sys.stderr)
        return 1
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = out.stat()
    owner = int(os.environ.get("SUDO_UID", "0"))
    if st.st_uid not in (0, owner):
        print(f"appliance: {out} belongs to uid {st.st_uid}; name a directory you own", file=sys.stderr)
        return 1
    out.chmod(0o700)
    for f in out.glob("spike.recovery.*.txt"):
        f.unlink()
    for shard in shards:
        path = out / f"spike.recovery.{SHARD.match(shard).group(1)}.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(shard)
        if "SUDO_UID" in os.environ:
            os.chown(path, owner, int(os.environ.get("SUDO_GID", "0")))
    if "SUDO_UID" in os.environ:
        os.chown(out, owner, int(os.environ.get("SUDO_GID", "0")))
    step(f"wrote {len(shards)} recovery shards to {out} (mode 0600). Move them off this host and keep "
         "them offline, apart from each other.")
    return 0


def restore(src: str) -> int:
    """Feed the recovery shards in DIR on this host to the appliance's sealed Nexus."""
    m = running()
    files = sorted(Path(src).glob("spike.recovery.*.txt"))
    if not files:
        print(f"appliance: no spike.recovery.<id>.txt files in {src}", file=sys.stderr)
        return 1
    text = "".join(f.read_text().strip() + "\n" for f in files)
    r = m._nsenter(["spike-operator", "restore", "-"], timeout=300, input=text)
    sys.stderr.write(r.stderr)
    return r.returncode


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "up"
    if cmd == "up":
        return up()
    if cmd == "status":
        m = running()
        print(explain(m))
        status, out = m.execute("spike status 2>&1")
        print(out, end="")
        return status
    if cmd in ("recover", "restore"):
        if len(argv) != 2:
            print(f"usage: scripts/appliance.sh {cmd} DIR", file=sys.stderr)
            return 64
        return recover(argv[1]) if cmd == "recover" else restore(argv[1])
    if cmd == "shell":
        m = running()
        return subprocess.call(["nsenter", "-t", str(m.pid1), "-a", "/bin/bash", "-l"])
    if cmd == "spike":
        m = running()
        status, out = m.execute("spike " + " ".join(shlex.quote(a) for a in argv[1:]) + " 2>&1")
        print(out, end="")
        return status
    if cmd in ("down", "destroy"):
        # SIGTERM to systemd-nspawn halts the machine cleanly.
        subprocess.run(["pkill", "-TERM", "-f", f"systemd-nspawn.*-M {NAME} "], check=False)
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
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
    except (nspawn.MachineError, subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        # Never a traceback: name what failed and where to look.
        print(f"appliance: {e}\n  See: sudo scripts/appliance.sh status", file=sys.stderr)
        sys.exit(1)
