"""Small process helpers shared by the dev environment: free ports, detached daemons that are
stopped by PID (and only by the PID we recorded), readiness waits that name the component."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


class DevEnvError(RuntimeError):
    """A component of the dev environment failed to start or stop."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct currently-free TCP ports on 127.0.0.1 (held open together while picking)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
            socks.append(s)
            if port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def venv_bin() -> Path:
    """The bin folder of the project's virtual environment (or of the running interpreter)."""
    env = os.environ.get("KUBENAS_VENV")
    if env:
        return Path(env) / "bin"
    repo_venv = REPO_ROOT / ".venv" / "bin"
    if (repo_venv / "python").exists():
        return repo_venv
    import sys

    return Path(sys.executable).parent


def find_binary(name: str, extra_dirs: Sequence[Path] = ()) -> Optional[str]:
    for d in extra_dirs:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    import shutil

    return shutil.which(name)


def _proc_starttime(pid: int) -> Optional[str]:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks): with the PID it names one
    process for good, so a recycled PID is never mistaken for ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may hold spaces or parentheses: split after the last ')'
    rest = stat.rsplit(")", 1)[1].split()
    if rest[0] == "Z":  # zombie: as good as gone
        return None
    return rest[19]


def log_tail(path: Optional[Path | str], lines: int = 25) -> str:
    if not path:
        return "(no log)"
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(log {path} does not exist)"
    return "\n".join(text[-lines:]) or "(log is empty)"


class Daemon:
    """A detached background process (own session) that we started and will stop by PID."""

    def __init__(self, name: str, pid: int, starttime: Optional[str], log: Optional[str],
                 argv: Optional[list[str]] = None) -> None:
        self.name = name
        self.pid = pid
        self.starttime = starttime
        self.log = log
        self.argv = argv or []
        self._popen: Optional[subprocess.Popen] = None

    @classmethod
    def spawn(cls, name: str, argv: list[str], log: Path, env: Optional[dict] = None,
              cwd: Optional[Path] = None) -> "Daemon":
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            try:
                popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         cwd=str(cwd) if cwd else None, start_new_session=True)
            except OSError as exc:
                raise DevEnvError(f"{name}: cannot start {argv[0]}: {exc}") from exc
        d = cls(name, popen.pid, _proc_starttime(popen.pid), str(log), list(argv))
        d._popen = popen
        return d

    def to_dict(self) -> dict:
        return {"pid": self.pid, "starttime": self.starttime, "log": self.log, "argv": self.argv}

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "Daemon":
        return cls(name, int(d["pid"]), d.get("starttime"), d.get("log"), d.get("argv"))

    def alive(self) -> bool:
        if self._popen is not None and self._popen.poll() is not None:
            return False
        st = _proc_starttime(self.pid)
        return st is not None and (self.starttime is None or st == self.starttime)

    def exit_code(self) -> Optional[int]:
        return self._popen.poll() if self._popen is not None else None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM this PID (only it), wait, then SIGKILL. Safe to call when already gone."""
        if not self.alive():
            self._reap()
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap()
            if not self.alive():
                return
            time.sleep(0.1)
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(50):
                self._reap()
                if not self.alive():
                    break
                time.sleep(0.1)

    def _reap(self) -> None:
        if self._popen is not None:
            self._popen.poll()

    def failure(self, what: str) -> DevEnvError:
        code = self.exit_code()
        state = f"exited with code {code}" if code is not None else (
            "is running" if self.alive() else "is not running")
        return DevEnvError(f"{self.name} {what} ({state}); last lines of {self.log}:\n"
                           f"{log_tail(self.log)}")


def wait_until(check: Callable[[], bool], daemon: Optional[Daemon], what: str,
               timeout: float, interval: float = 0.2) -> None:
    """Poll ``check`` until true; fail early when ``daemon`` dies, with its log tail."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - readiness probes fail in many ways
            last_exc = exc
        if daemon is not None and not daemon.alive():
            raise daemon.failure(f"died before {what}")
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            if daemon is not None:
                raise daemon.failure(f"not {what} after {timeout:.0f}s{detail}")
            raise DevEnvError(f"not {what} after {timeout:.0f}s{detail}")
        time.sleep(interval)
