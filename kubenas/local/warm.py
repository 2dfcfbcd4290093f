"""The executor's end of the warm worker (``kubenas.local.zygote``): start it, ask it for a
child, learn each child's exit code, shut it down.

A child is a grandchild of ``kubenas run``; the zygote reaps it and reports the code, which
``WarmChild.poll`` returns like ``subprocess.Popen.poll`` (negative: killed by that signal).
If the zygote itself dies, its children die with it (PDEATHSIG) and every child it had not
reported is given ``-SIGKILL`` with a note in its log; the next spawn starts a fresh zygote.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from kubenas.local.zygote import SHUTDOWN_GRACE_SECONDS, die_with_parent

START_TIMEOUT_SECONDS = 300.0  # imports on a loaded 2-core machine: seconds, rarely a minute


class ZygoteError(RuntimeError):
    """The warm worker could not start or answer."""


class Zygote:
    def __init__(self, env: dict, log_path: Path, preload: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_path = Path(log_path)
        self.preload = preload
        self.proc: Optional[subprocess.Popen] = None
        self.buffer = b""
        self.exits: dict[int, int] = {}        # pid -> exit code, once reaped
        self.live: dict[int, Path] = {}        # pid -> its log, not yet reaped
        self.spawned: dict[str, int] = {}      # trial id -> pid, answers not yet collected
        self.errors: dict[str, str] = {}       # trial id -> why the fork failed

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "kubenas.local.zygote"]
        for name in self.preload:
            cmd += ["--preload", name]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=self.env, preexec_fn=die_with_parent)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buffer = b""

    def _send(self, message: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # it died; the next collect says so
            pass

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "spawned":
            self.spawned[event["id"]] = event["pid"]
        elif kind == "exited":
            self.live.pop(event["pid"], None)
            self.exits[event["pid"]] = int(event["code"])
        elif kind == "error":
            self.errors[event["id"]] = event.get("message", "fork failed")

    def _lost(self) -> None:
        """The zygote is gone: its children died with it."""
        code = self.proc.wait()
        for pid, log_path in self.live.items():
            with open(log_path, "a") as log:
                log.write(f"\nkubenas: the warm worker (zygote, pid {self.proc.pid}) died with "
                          f"code {code}; this child died with it\n")
            self.exits[pid] = -signal.SIGKILL
        self.live.clear()
        self.proc = None

    def collect(self) -> None:
        """Read every event the zygote has sent so far (never blocks)."""
        if self.proc is None:
            return
        while True:
            try:
                data = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                return
            if not data:
                self._lost()
                return
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self._handle(json.loads(line))

    def _wait_readable(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ZygoteError(f"the warm worker did not answer within {START_TIMEOUT_SECONDS:.0f}"
                              f" s (see {self.log_path})")
        select.select([self.proc.stdout], [], [], left)

    def spawn(self, trial_id: str, argv: list[str], log_path: Path) -> int:
        """Fork a child running ``kubenas <argv>`` with its output in ``log_path``; its pid.
        A zygote found dead (idle or mid-request) is replaced once."""
        self.collect()   # notice a zygote that died while it had nothing to report
        for _ in range(2):
            if self.proc is None:
                self.start()
            pid = self._request_spawn(trial_id, argv, log_path)
            if pid is not None:
                return pid
        raise ZygoteError(f"the warm worker exited before starting {trial_id} (see "
                          f"{self.log_path}; `kubenas run --cold-children` does without it)")

    def _request_spawn(self, trial_id: str, argv: list[str], log_path: Path) -> Optional[int]:
        """The child's pid, or None if the zygote died before answering."""
        self._send({"op": "spawn", "id": trial_id, "argv": argv, "log": str(log_path)})
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while trial_id not in self.spawned:
            if self.proc is None:
                return None
            if trial_id in self.errors:
                raise ZygoteError(f"{trial_id}: fork failed: {self.errors.pop(trial_id)}")
            self._wait_readable(deadline)
            self.collect()
        pid = self.spawned.pop(trial_id)
        if pid not in self.exits:
            self.live[pid] = Path(log_path)
        return pid

    def signal(self, pid: int, sig: int) -> None:
        if self.proc is not None and pid in self.live:
            self._send({"op": "signal", "pid": pid, "signal": int(sig)})

    def close(self) -> None:
        """End of input: the zygote stops its children (SIGTERM, then SIGKILL) and exits."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=SHUTDOWN_GRACE_SECONDS + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.collect()
        self.proc = None


class WarmChild:
    """A forked child, with the slice of ``subprocess.Popen`` the executor uses."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid

    def poll(self) -> Optional[int]:
        self.zygote.collect()
        return self.zygote.exits.get(self.pid)

    def terminate(self) -> None:
        self.zygote.signal(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        self.zygote.signal(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.02)
        return self.zygote.exits[self.pid]
