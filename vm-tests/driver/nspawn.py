"""A small nspawn-backed implementation of the NixOS test-driver API.

Scenario scripts in ../scenarios use only this subset, so the same script runs here (systemd in
systemd-nspawn machines on a cached Debian root) and in `pkgs.testers.runNixOSTest`:

    start_all(), subtest(name), machine.start(), machine.shutdown(), machine.crash(),
    machine.wait_for_unit(unit), machine.succeed(cmd), machine.fail(cmd), machine.execute(cmd),
    machine.wait_until_succeeds(cmd), machine.wait_until_fails(cmd), machine.systemctl(args),
    machine.get_unit_info(unit), machine.block(), machine.unblock(), machine.log(msg)

Commands run inside the machine as root in a transient systemd unit (`systemd-run --pipe
--wait`), as the NixOS backdoor shell runs them inside a unit: SPIRE's workload attestors
see an ordinary process.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

PATH_IN_MACHINE = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class MachineError(AssertionError):
    pass


class Machine:
    def __init__(self, name: str, rootfs: Path, workdir: Path, *, bridge: str | None = None,
                 address: str | None = None, prepare=None) -> None:
        self.name = name
        self.rootfs = Path(rootfs)
        self.dir = Path(workdir) / name
        self.root = self.dir / "root"
        self.bridge = bridge
        self.address = address
        self._prepare = prepare
        self._prepared = False
        self.proc: subprocess.Popen | None = None
        self.pid1: int | None = None
        self.booted = False

    # -- lifecycle ---------------------------------------------------------------------------

    def _mount(self) -> None:
        if os.path.ismount(self.root):
            return
        for d in ("upper", "work", "root"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.rootfs},upperdir={self.dir/'upper'},workdir={self.dir/'work'}",
                        str(self.root)], check=True)

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self._mount()
        if not self._prepared and self._prepare is not None:
            self._prepare(self)
        self._prepared = True
        args = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-D", str(self.root),
                "-M", self.name, "--boot"]
        if self.bridge:
            args += [f"--network-bridge={self.bridge}"]
        else:
            args += ["--private-network"]
        console = open(self.dir / "console.log", "ab")
        log(f"{self.name}: booting")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                                     start_new_session=True)
        self.pid1 = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MachineError(f"{self.name}: nspawn exited ({self.proc.returncode}); see {self.dir/'console.log'}")
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
            for k in kids:
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{k}/comm").read_text().strip() == "systemd":
                        self.pid1 = int(k)
            if self.pid1:
                break
            time.sleep(0.1)
        if not self.pid1:
            raise MachineError(f"{self.name}: no systemd PID 1 after 60 s")
        # Wait until the manager answers on its private bus.
        for _ in range(600):
            r = self._nsenter(["systemctl", "is-system-running"], timeout=10)
            if r.stdout.strip() in ("running", "degraded", "starting"):
                break
            time.sleep(0.1)
        self.booted = True
        log(f"{self.name}: up")

    def _wait_exit(self, timeout: float) -> bool:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def shutdown(self) -> None:
        """Clean shutdown: SIGTERM to nspawn halts the machine through systemd."""
        if self.proc is None or self.proc.poll() is not None:
            return
        log(f"{self.name}: shutdown")
        self.proc.send_signal(signal.SIGTERM)
        if not self._wait_exit(60):
            self.proc.kill()
            self._wait_exit(10)
        self.booted = False

    def crash(self) -> None:
        """Power loss: kill the whole machine without a shutdown."""
        if self.proc is None or self.proc.poll() is not None:
            return
        log(f"{self.name}: crash (SIGKILL)")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.pid1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        self._wait_exit(30)
        # Let the kernel tear down the PID namespace before a restart.
        time.sleep(0.5)
        self.booted = False

    def reboot(self) -> None:
        self.shutdown()
        self.start()

    def cleanup(self) -> None:
        self.crash()
        with contextlib.suppress(Exception):
            if os.path.ismount(self.root):
                subprocess.run(["umount", "-l", str(self.root)], check=False)

    # -- commands ----------------------------------------------------------------------------

    def _nsenter(self, argv: list[str], timeout: float = 120, input: bytes | None = None):
        if not self.pid1:
            raise MachineError(f"{self.name}: not running")
        cmd = ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", f"PATH={PATH_IN_MACHINE}",
               "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)

    def execute(self, command: str, check_return: bool = True, timeout: float | None = 900):
        """Run `command` with /bin/sh inside the machine; returns (status, stdout).

        stderr is logged, not returned, like the NixOS driver."""
        # A fixed description keeps the command line (which may carry test secrets) out of
        # the machine's journal, as the NixOS backdoor shell does.
        argv = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--description=vm-test command",
                "--service-type=exec", "-p", "StandardInput=null",
                f"--setenv=PATH={PATH_IN_MACHINE}", "--setenv=HOME=/root",
                # systemd expands ${NAME} in ExecStart= (with the transient unit's environment,
                # `${CREDENTIALS_DIRECTORY}` became "") and turns "$$" into "$": double every "$"
                # so /bin/sh gets the command as written, as in the NixOS driver.
                "/bin/sh", "-c", command.replace("$", "$$")]
        try:
            r = self._nsenter(argv, timeout=timeout or 900)
        except subprocess.TimeoutExpired as e:
            raise MachineError(f"{self.name}: command timed out after {timeout}s: {command}") from e
        if r.stderr.strip():
            for line in r.stderr.rstrip().splitlines()[-40:]:
                log(f"{self.name} stderr: {line}")
        return r.returncode, r.stdout

    def succeed(self, *commands: str, timeout: float | None = None) -> str:
        out = ""
        for c in commands:
            log(f"{self.name}: must succeed: {c}")
            status, o = self.execute(c, timeout=timeout)
            if status != 0:
                log(f"{self.name}: output: {o}")
                raise MachineError(f"{self.name}: command `{c}` failed (exit code {status})")
            out += o
        return out

    def fail(self, *commands: str, timeout: float | None = None) -> str:
        out = ""
        for c in commands:
            log(f"{self.name}: must fail: {c}")
            status, o = self.execute(c, timeout=timeout)
            if status == 0:
                raise MachineError(f"{self.name}: command `{c}` unexpectedly succeeded")
            out += o
        return out

    def wait_until_succeeds(self, command: str, timeout: int = 900) -> str:
        log(f"{self.name}: wait until succeeds: {command}")
        deadline = time.monotonic() + timeout
        while True:
            status, out = self.execute(command, timeout=timeout)
            if status == 0:
                return out
            if time.monotonic() > deadline:
                raise MachineError(f"{self.name}: `{command}` did not succeed within {timeout}s; last output: {out}")
            time.sleep(1)

    def wait_until_fails(self, command: str, timeout: int = 900) -> str:
        log(f"{self.name}: wait until fails: {command}")
        deadline = time.monotonic() + timeout
        while True:
            status, out = self.execute(command, timeout=timeout)
            if status != 0:
                return out
            if time.monotonic() > deadline:
                raise MachineError(f"{self.name}: `{command}` did not fail within {timeout}s")
            time.sleep(1)

    def systemctl(self, q: str, user: str | None = None):
        return self.execute(f"systemctl {q}")

    def get_unit_info(self, unit: str, user: str | None = None) -> dict[str, str]:
        r = self._nsenter(["systemctl", "--no-pager", "show", unit])
        if r.returncode != 0:
            raise MachineError(f"{self.name}: systemctl show {unit}: {r.stderr}")
        info = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            info[k] = v
        return info

    def wait_for_unit(self, unit: str, user: str | None = None, timeout: int = 900) -> None:
        log(f"{self.name}: waiting for unit {unit}")
        deadline = time.monotonic() + timeout
        while True:
            info = self.get_unit_info(unit)
            state = info.get("ActiveState")
            if state == "active":
                return
            if state == "failed":
                journal = self._nsenter(["journalctl", "--no-pager", "-n", "40", "-u", unit]).stdout
                raise MachineError(f"{self.name}: unit {unit} failed:\n{journal}")
            if state == "inactive" and info.get("LoadState") == "not-found":
                raise MachineError(f"{self.name}: unit {unit} does not exist")
            if time.monotonic() > deadline:
                status = self._nsenter(["systemctl", "--no-pager", "status", unit]).stdout
                raise MachineError(f"{self.name}: unit {unit} not active within {timeout}s ({state}):\n{status}")
            time.sleep(0.2)

    def wait_for_open_port(self, port: int, addr: str = "localhost", timeout: int = 900) -> None:
        self.wait_until_succeeds(f"ss -Htln 'sport = :{port}' | grep -q LISTEN", timeout=timeout)

    def block(self) -> None:
        """Cut the machine off the network (the bridge link goes down)."""
        log(f"{self.name}: block network")
        self._nsenter(["ip", "link", "set", "host0", "down"])

    def unblock(self) -> None:
        log(f"{self.name}: unblock network")
        self._nsenter(["ip", "link", "set", "host0", "up"])
        if self.address:
            self._nsenter(["ip", "addr", "replace", self.address, "dev", "host0"])

    def log(self, msg: str) -> None:
        log(f"{self.name}: {msg}")

    def copy_from_host(self, source: str, target: str) -> None:
        dst = self.root / target.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", source, str(dst)], check=True)

    def journal(self, unit: str | None = None, lines: int = 200) -> str:
        argv = ["journalctl", "--no-pager", "-n", str(lines)]
        if unit:
            argv += ["-u", unit]
        return self._nsenter(argv).stdout


@contextlib.contextmanager
def subtest(name: str):
    log(f"subtest: {name}")
    t = time.monotonic()
    try:
        yield
    except Exception:
        log(f"subtest FAILED: {name}")
        raise
    log(f"subtest ok: {name} ({time.monotonic() - t:.1f}s)")
