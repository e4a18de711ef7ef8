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

Beyond the NixOS API (nspawn-only; a scenario that uses them runs only here):

    machine.copy_to(other, path[, target])    copy a path of this machine's root into another's
                                              (a state directory carried to another machine)

Emulated TPM2 (`Machine(..., tpm=True)`, `"tpm": true` in a scenario's `# vm-test:` node):
each machine gets its own swtpm. Its persistent state (seeds, NV, the EK) lives in
`<machine dir>/tpm`, manufactured once by `swtpm_setup` (dictionary-attack lockout after 32
failures, see _tpm_da_setup); every `start()` runs a fresh `swtpm socket ... --flags
startup-clear`, so like a real TPM after a power cycle the PCRs are back to zero while the
seeds survive. `crash()` kills swtpm with the machine (power loss: the TPM counts one DA
failure, as a real one does), `shutdown()` sends TPM2_Shutdown and stops it after the machine
halted, `cleanup()` always kills it. A small resource manager (TpmResourceManager, below: the
part of /dev/tpmrm0 that systemd 252 needs) listens on sockets bind-mounted at /run/swtpm, and
`SYSTEMD_TPM2_DEVICE=swtpm:path=/run/swtpm/sock` is set both in PID 1's environment
(LoadCredentialEncrypted= is decrypted in the manager's forked child, which sees the manager's
environment, not the unit's; without it: "Failed to initialize TCTI context: tcti:IO
failure") and, through `DefaultEnvironment=` in /etc/systemd/system.conf.d/vm-test-tpm.conf,
in every service's (`systemd-creds encrypt --with-key=tpm2` in a unit or a command). The root
needs the libtss2 libraries systemd dlopens (scripts/build-rootfs.sh). There is no
/dev/tpmrm0, so `systemd-creds has-tpm2` says "partial" (-firmware -driver +system -subsystem)
and exits 11. systemd 252 binds `--with-key=tpm2` to PCR 7 unless told otherwise.

    machine.tpm_pcrextend(pcr, data)          extend PCR `pcr` (sha256 bank) with sha256(data) now,
                                              from the host, as software on a running system
                                              would; the next start() resets it
    machine.tpm_boot_measurements             list of (pcr, data) that the "firmware" extends at
                                              every start(), before the machine boots: replace it
                                              to emulate a firmware or Secure Boot db update
    machine.tpm_clear()                       TPM2_Clear through the platform hierarchy (a clear
                                              from the firmware setup): new storage seed, so
                                              every TPM2-sealed credential is lost; the machine
                                              may be running or stopped
    machine.tpm_replace()                     a new TPM (manufactured again); machine stopped
    machine.tpm_pcrread(pcr)                  the PCR's sha256 value ("0x..."); TPM powered
    machine.tpm_lockout_counter()             the DA failure count; TPM powered
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PATH_IN_MACHINE = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where a machine with an emulated TPM finds swtpm's sockets, and how systemd reaches it.
TPM_DIR_IN_MACHINE = "/run/swtpm"
TPM2_DEVICE = f"swtpm:path={TPM_DIR_IN_MACHINE}/sock"
# Dictionary-attack lockout: 32 failed tries, one forgiven every 10 minutes (see _tpm_da_setup).
TPM_DA_MAX_TRIES = 32
TPM_DA_RECOVERY_S = 600
# sun_path holds 108 bytes, the terminating NUL included.
_SUN_PATH_MAX = 107
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class MachineError(AssertionError):
    pass


class Machine:
    def __init__(self, name: str, rootfs: Path, workdir: Path, *, bridge: str | None = None,
                 address: str | None = None, prepare=None, tpm: bool = False) -> None:
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
        self.tpm = tpm
        self.tpm_state = self.dir / "tpm"
        self.tpm_boot_measurements: list[tuple[int, str]] = []
        self._tpm_rundir: Path | None = None
        self._tpm_needs_da_setup = False
        self._tpm_procs: list[subprocess.Popen] = []

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
        if self.tpm:
            self._tpm_start()
            self._tpm_machine_config()
            args += [f"--bind={self._tpm_run_dir() / 'machine'}:{TPM_DIR_IN_MACHINE}",
                     f"--setenv=SYSTEMD_TPM2_DEVICE={TPM2_DEVICE}"]
        console = open(self.dir / "console.log", "ab")
        log(f"{self.name}: booting")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                                     start_new_session=True)
        self.pid1 = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._tpm_kill()
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
            self._tpm_stop()
            return
        log(f"{self.name}: shutdown")
        self.proc.send_signal(signal.SIGTERM)
        if not self._wait_exit(60):
            self.proc.kill()
            self._wait_exit(10)
        self.booted = False
        self._tpm_stop()

    def crash(self) -> None:
        """Power loss: kill the whole machine without a shutdown (its swtpm too)."""
        if self.proc is None or self.proc.poll() is not None:
            self._tpm_kill()
            return
        log(f"{self.name}: crash (SIGKILL)")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.pid1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        self._wait_exit(30)
        self._tpm_kill()
        # Let the kernel tear down the PID namespace before a restart.
        time.sleep(0.5)
        self.booted = False

    def reboot(self) -> None:
        self.shutdown()
        self.start()

    def cleanup(self) -> None:
        self.crash()
        self._tpm_kill()
        with contextlib.suppress(Exception):
            if os.path.ismount(self.root):
                subprocess.run(["umount", "-l", str(self.root)], check=False)
        if self._tpm_rundir is not None and not self._tpm_rundir.is_relative_to(self.dir):
            shutil.rmtree(self._tpm_rundir, ignore_errors=True)
            self._tpm_rundir = None

    # -- emulated TPM2 (swtpm) ---------------------------------------------------------------

    def _tpm_require(self) -> None:
        if not self.tpm:
            raise MachineError(f"{self.name}: no emulated TPM (construct the machine with tpm=True)")

    def _tpm_manufacture(self, overwrite: bool = False) -> None:
        """Create the TPM's persistent state, as its vendor would (EK + certificates, sha256 PCRs)."""
        if not overwrite and (self.tpm_state / "tpm2-00.permall").exists():
            return
        self.tpm_state.mkdir(parents=True, exist_ok=True)
        args = ["swtpm_setup", "--tpm2", "--tpmstate", str(self.tpm_state), "--create-ek-cert",
                "--create-platform-cert", "--pcr-banks", "sha256", "--logfile", str(self.dir / "swtpm_setup.log")]
        if overwrite:
            args.append("--overwrite")
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise MachineError(f"{self.name}: swtpm_setup failed ({r.returncode}): {r.stderr.strip()}; "
                               f"see {self.dir / 'swtpm_setup.log'} (scripts/install-deps.sh --appliance)")
        self._tpm_needs_da_setup = True

    def _tpm_da_setup(self) -> None:
        """Dictionary-attack parameters of a provisioned PC TPM rather than swtpm's 3 tries.

        A power cut after a DA-protected key was used (every TPM2 credential decryption) counts
        as one failed try; with swtpm's defaults (3 tries, 1000 s to forgive one) the third
        crash() of a machine would lock its TPM2 credentials out ("TPM2 device is in dictionary
        attack lockout mode.")."""
        self._tpm_tool("tpm2_dictionarylockout", "--setup-parameters", f"--max-tries={TPM_DA_MAX_TRIES}",
                       f"--recovery-time={TPM_DA_RECOVERY_S}", f"--lockout-recovery-time={TPM_DA_RECOVERY_S}")
        self._tpm_needs_da_setup = False

    def _tpm_run_dir(self) -> Path:
        """Host directory of the TPM's sockets: `machine/` (bind-mounted at /run/swtpm, the
        resource manager's) and `backend/` (swtpm's own, host side only)."""
        if self._tpm_rundir is None:
            d = self.dir / "swtpm"
            if len(str(d / "backend" / "sock.ctrl")) > _SUN_PATH_MAX:
                # A deep work directory: keep the sockets in a short private directory instead.
                d = Path(tempfile.mkdtemp(prefix=f"spike-swtpm-{self.name[:20]}-", dir="/run"))
            for sub in ("machine", "backend"):
                (d / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            self._tpm_rundir = d
        return self._tpm_rundir

    @property
    def _tpm_backend(self) -> Path:
        return self._tpm_run_dir() / "backend" / "sock"

    def _tpm_running(self) -> bool:
        return bool(self._tpm_procs) and all(p.poll() is None for p in self._tpm_procs)

    def _tpm_start(self) -> None:
        """Power on the TPM: a fresh swtpm on the persistent state (PCRs at zero), the resource
        manager in front of it, then the "firmware" measurements."""
        self._tpm_manufacture()
        self._tpm_kill()
        d = self._tpm_run_dir()
        backend, listen = self._tpm_backend, d / "machine"
        for p in (backend, Path(f"{backend}.ctrl"), listen / "sock", listen / "sock.ctrl"):
            p.unlink(missing_ok=True)
        # swtpm logs a line per command ("Data client disconnected"): a log of its own.
        with open(self.dir / "swtpm.log", "ab") as out:
            self._tpm_procs.append(subprocess.Popen(
                ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.tpm_state}",
                 "--server", f"type=unixio,path={backend}", "--ctrl", f"type=unixio,path={backend}.ctrl",
                 "--flags", "startup-clear"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True))
        self._tpm_wait_for(backend, Path(f"{backend}.ctrl"))
        with open(self.dir / "tpm-resource-manager.log", "ab") as out:
            self._tpm_procs.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "tpm-resource-manager", str(backend), str(listen),
                 str(self._tpm_procs[0].pid)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True))
        self._tpm_wait_for(listen / "sock", listen / "sock.ctrl")
        if self._tpm_needs_da_setup:
            self._tpm_da_setup()
        for pcr, data in self.tpm_boot_measurements:
            self._tpm_extend(pcr, data)

    def _tpm_wait_for(self, *sockets: Path) -> None:
        deadline = time.monotonic() + 10
        while not all(s.is_socket() for s in sockets):
            if not self._tpm_running() or time.monotonic() > deadline:
                self._tpm_kill()
                raise MachineError(f"{self.name}: the emulated TPM did not start; see {self.dir}/*.log")
            time.sleep(0.02)

    def _tpm_stop(self) -> None:
        """Orderly power off of the TPM (after the machine halted): TPM2_Shutdown(CLEAR) first,
        as Linux sends it on a clean poweroff or reboot; without it the TPM counts a DA failure."""
        if self._tpm_running():
            try:
                self._tpm_tool("tpm2_shutdown", "--clear")
            except MachineError as e:
                log(f"{self.name}: {e}")
        for p in reversed(self._tpm_procs):
            if p.poll() is None:
                p.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=10)
        self._tpm_kill()

    def _tpm_kill(self) -> None:
        """Power loss for the TPM."""
        for p in self._tpm_procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(timeout=30)
        self._tpm_procs = []

    def _tpm_machine_config(self) -> None:
        """Every service of the machine reaches the TPM through SYSTEMD_TPM2_DEVICE."""
        conf = self.root / "etc/systemd/system.conf.d/vm-test-tpm.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("# vm-tests/driver/nspawn.py: the machine's emulated TPM2 (swtpm)\n"
                        f"[Manager]\nDefaultEnvironment=SYSTEMD_TPM2_DEVICE={TPM2_DEVICE}\n")

    def _tpm_tool(self, *argv: str) -> str:
        # Straight to swtpm: these commands use no session or transient object.
        env = dict(os.environ, TPM2TOOLS_TCTI=f"swtpm:path={self._tpm_backend}")
        r = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise MachineError(f"{self.name}: {' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def _tpm_extend(self, pcr: int, data: str) -> None:
        if not 0 <= pcr <= 23:
            raise MachineError(f"{self.name}: no PCR {pcr} (0..23)")
        digest = hashlib.sha256(data.encode()).hexdigest()
        self._tpm_tool("tpm2_pcrextend", f"{pcr}:sha256={digest}")

    def tpm_pcrextend(self, pcr: int, data: str) -> None:
        """Extend PCR `pcr` (sha256 bank) with sha256(data), now; the TPM must be powered (started).

        The value lasts until the next start(), as on a real TPM. For a change that every boot
        sees (a firmware update), set tpm_boot_measurements instead."""
        self._tpm_require()
        if not self._tpm_running():
            raise MachineError(f"{self.name}: tpm_pcrextend needs the machine (and its TPM) running")
        log(f"{self.name}: TPM: extend PCR {pcr} with sha256({data!r})")
        self._tpm_extend(pcr, data)

    def tpm_pcrread(self, pcr: int) -> str:
        """The sha256 value of PCR `pcr` as tpm2_pcrread prints it (0x...); the TPM must be powered."""
        self._tpm_require()
        if not self._tpm_running():
            raise MachineError(f"{self.name}: tpm_pcrread needs the machine (and its TPM) running")
        out = self._tpm_tool("tpm2_pcrread", f"sha256:{pcr}")
        return out.strip().splitlines()[-1].split(":", 1)[1].strip()

    def tpm_lockout_counter(self) -> int:
        """The TPM's dictionary-attack failure count (TPM2_PT_LOCKOUT_COUNTER); TPM powered."""
        self._tpm_require()
        if not self._tpm_running():
            raise MachineError(f"{self.name}: tpm_lockout_counter needs the machine (and its TPM) running")
        for line in self._tpm_tool("tpm2_getcap", "properties-variable").splitlines():
            if line.strip().startswith("TPM2_PT_LOCKOUT_COUNTER:"):
                return int(line.split(":", 1)[1], 0)
        raise MachineError(f"{self.name}: no TPM2_PT_LOCKOUT_COUNTER in tpm2_getcap's output")

    def tpm_clear(self) -> None:
        """TPM2_Clear through the platform hierarchy, as the firmware setup does: a new storage
        seed, so everything sealed to this TPM before no longer loads. Running or stopped."""
        self._tpm_require()
        log(f"{self.name}: TPM: clear")
        powered = self._tpm_running()
        if not powered:
            self._tpm_start()
        try:
            self._tpm_tool("tpm2_clear", "-c", "p")
            self._tpm_da_setup()
        finally:
            if not powered:
                self._tpm_stop()

    def tpm_replace(self) -> None:
        """A new TPM in the same machine: its state is manufactured again (machine stopped)."""
        self._tpm_require()
        if self.proc is not None and self.proc.poll() is None:
            raise MachineError(f"{self.name}: tpm_replace needs the machine stopped")
        log(f"{self.name}: TPM: replaced")
        self._tpm_kill()
        self._tpm_manufacture(overwrite=True)

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

    def copy_to(self, other: Machine, path: str, target: str | None = None) -> None:
        """Copy `path` of this machine's root to `target` (default: the same path) in `other`'s.

        A file replaces the target; a directory's content is copied into the target directory.
        Owners, modes and times are kept. Both roots must be mounted (started once)."""
        src = self.root / path.lstrip("/")
        if not src.exists() and not src.is_symlink():
            raise MachineError(f"{self.name}: {path} does not exist")
        dst = other.root / (target or path).lstrip("/")
        log(f"{self.name}: copy {path} to {other.name}:{target or path}")
        if src.is_dir() and not src.is_symlink():
            # The directory's content, into an existing directory or a new one (not nested).
            dst.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", "--", f"{src}/.", str(dst)], check=True)
            shutil.copystat(src, dst)
            os.chown(dst, src.stat().st_uid, src.stat().st_gid)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", "--", str(src), str(dst)], check=True)

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


# -- a resource manager in front of swtpm ---------------------------------------------------

_TPM_ST_NO_SESSIONS = 0x8001
_TPM_CC_FLUSH_CONTEXT = 0x165
_TPM_CC_GET_CAPABILITY = 0x17A
_TPM_CAP_HANDLES = 0x1
# Loaded sessions (HMAC and policy), saved sessions, transient objects: what a client can
# leave in the TPM.
_TPM_HANDLE_RANGES = (0x02000000, 0x03000000, 0x80000000)


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv_tpm_message(sock: socket.socket) -> bytes | None:
    """One TPM command or response: a 10-byte header (tag, size, code), then size - 10 bytes."""
    header = _recv_exactly(sock, 10)
    if header is None:
        return None
    size = struct.unpack(">I", header[2:6])[0]
    if size < 10 or size > 1 << 16:
        return None
    body = _recv_exactly(sock, size - 10) if size > 10 else b""
    return None if body is None else header + body


def _process_identity(pid: int) -> tuple[int, int, str] | None:
    """(pid, start time, executable): changes when the process exits or calls exec."""
    try:
        start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        return (pid, start, os.readlink(f"/proc/{pid}/exe"))
    except (OSError, ValueError, IndexError):
        return None


class TpmResourceManager:
    """What the kernel's /dev/tpmrm0 does for a real TPM, for one swtpm: clean up after clients.

    A TPM holds three loaded sessions and three transient objects. Through /dev/tpmrm0 the
    kernel flushes what a process left behind when it closes the device, and swaps contexts
    between processes. swtpm has no such layer, and systemd 252 leaves one session loaded
    after every TPM2 decryption (systemd-creds decrypt, LoadCredentialEncrypted=): the fourth
    decryption after a power-on fails with "Failed to open session in TPM: tpm:warn(2.0): out
    of memory for session contexts". This proxy sits between the machine (the sockets in
    `listen_dir`, named as the swtpm TCTI expects: sock, sock.ctrl) and swtpm (`backend`,
    process `swtpm_pid`: the proxy exits with it):

    - one client process uses the TPM at a time (the swtpm TCTI connects once per command; the
      peer's PID comes from SO_PEERCRED); another one waits until it exited or called exec
      (PID 1's forked child decrypts LoadCredentialEncrypted= and then execs the service),
      or has sent nothing for IDLE_TAKEOVER seconds;
    - at each hand-over (the first client's included) every loaded or saved session and
      transient object is flushed.

    Control-channel connections (sock.ctrl) are forwarded as they are."""

    IDLE_TAKEOVER = 5.0

    def __init__(self, backend: Path, listen_dir: Path, swtpm_pid: int) -> None:
        self.backend = Path(backend)
        self.listen_dir = Path(listen_dir)
        self.swtpm = _process_identity(swtpm_pid)
        self._cond = threading.Condition()
        self._owner: tuple | None = None
        self._last_command = 0.0

    def serve_forever(self) -> None:
        commands = self._listen(self.listen_dir / "sock")
        ctrl = self._listen(self.listen_dir / "sock.ctrl")
        threading.Thread(target=self._accept_loop, args=(ctrl, self._serve_ctrl), daemon=True).start()
        threading.Thread(target=self._accept_loop, args=(commands, self._serve_command), daemon=True).start()
        # Power goes with swtpm's: whoever killed it (crash(), a cleanup by pattern) ends this too.
        while self.swtpm is not None and _process_identity(self.swtpm[0]) == self.swtpm:
            time.sleep(0.5)
        self._log("swtpm is gone; exiting")

    @staticmethod
    def _listen(path: Path) -> socket.socket:
        path.unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        os.chmod(path, 0o660)
        s.listen(64)
        return s

    @staticmethod
    def _accept_loop(listener: socket.socket, serve) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    def _log(self, msg: str) -> None:
        print(f"tpm-resource-manager: {msg}", file=sys.stderr, flush=True)

    def _transact(self, command: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.backend))
            s.sendall(command)
            response = _recv_tpm_message(s)
        if response is None:
            raise OSError("swtpm closed the connection")
        return response

    def _flush_all(self, reason: str) -> None:
        flushed = []
        for first in _TPM_HANDLE_RANGES:
            cmd = struct.pack(">HIIIII", _TPM_ST_NO_SESSIONS, 22, _TPM_CC_GET_CAPABILITY, _TPM_CAP_HANDLES, first, 64)
            r = self._transact(cmd)
            if struct.unpack(">I", r[6:10])[0] != 0 or len(r) < 19:
                self._log(f"GetCapability(handles {first:#010x}) failed: {r[6:10].hex()}")
                continue
            count = struct.unpack(">I", r[15:19])[0]
            # Loaded sessions come back as 0x02 (HMAC) and 0x03 (policy) handles.
            for (h,) in struct.iter_unpack(">I", r[19:19 + 4 * count]):
                if f"{h:#010x}" in (f.split()[0] for f in flushed):
                    continue
                fr = self._transact(struct.pack(">HIII", _TPM_ST_NO_SESSIONS, 14, _TPM_CC_FLUSH_CONTEXT, h))
                flushed.append(f"{h:#010x}" + ("" if fr[6:10] == b"\0\0\0\0" else f" (failed: {fr[6:10].hex()})"))
        if flushed:
            self._log(f"{reason}: flushed {', '.join(flushed)}")

    def _serve_command(self, conn: socket.socket) -> None:
        with conn:
            try:
                command = _recv_tpm_message(conn)
                if command is None:
                    return
                pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))[0]
                me = _process_identity(pid) or (pid, -1, "")
                with self._cond:
                    while self._owner != me:
                        if self._owner is None:
                            self._flush_all("first client")
                        elif _process_identity(self._owner[0]) != self._owner:
                            self._flush_all(f"PID {self._owner[0]} exited or called exec")
                        elif time.monotonic() - self._last_command > self.IDLE_TAKEOVER:
                            self._flush_all(f"PID {self._owner[0]} idle for {self.IDLE_TAKEOVER:.0f} s")
                        else:
                            self._cond.wait(0.01)
                            continue
                        self._owner = me
                    response = self._transact(command)
                    self._last_command = time.monotonic()
                    self._cond.notify_all()
                conn.sendall(response)
            except OSError as e:
                self._log(f"command: {e}")

    def _serve_ctrl(self, conn: socket.socket) -> None:
        with conn, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
            try:
                up.connect(f"{self.backend}.ctrl")
                pair = {conn: up, up: conn}
                while True:
                    ready, _, _ = select.select(list(pair), [], [], 60)
                    if not ready:
                        return
                    for s in ready:
                        data = s.recv(4096)
                        if not data:
                            return
                        pair[s].sendall(data)
            except OSError as e:
                self._log(f"control channel: {e}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "tpm-resource-manager":
        TpmResourceManager(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])).serve_forever()
    else:
        print(f"usage: {sys.argv[0]} tpm-resource-manager SWTPM_SOCKET LISTEN_DIR SWTPM_PID", file=sys.stderr)
        sys.exit(64)
