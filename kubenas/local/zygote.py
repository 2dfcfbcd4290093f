"""The warm worker ("zygote"): one process that has torch and the trainer imported and forks
one child per trial, so a child starts in milliseconds instead of paying 3-6 s of interpreter
and torch start-up.

    python -m kubenas.local.zygote [--preload MODULE ...]

It speaks JSON lines on stdin/stdout (``kubenas.local.warm.Zygote`` is the other end):

    -> {"op": "spawn", "id": TRIAL, "argv": ["train-child", ...], "log": PATH}
    <- {"event": "spawned", "id": TRIAL, "pid": PID}
    -> {"op": "signal", "pid": PID, "signal": 15}       # only a child not yet reaped
    <- {"event": "exited", "pid": PID, "code": CODE}     # CODE < 0: killed by signal -CODE
    <- {"event": "error", "id": TRIAL, "message": ...}   # the fork itself failed

End of stdin shuts it down: live children get SIGTERM, then SIGKILL after a grace period.

A forked child runs ``kubenas.cli.main(argv)`` -- the same entry point as the cold
``python -m kubenas train-child`` -- with stdout and stderr in its log, and exits with its
return code. Fork after import is safe only while the zygote has one thread: it imports,
never runs a torch op (thread pools start on the first one), and the child sets its own
thread count. The zygote dies with ``kubenas run`` and every child with the zygote.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import random
import select
import signal
import sys
import time
import traceback
from typing import Optional

_PR_SET_PDEATHSIG = 1
SHUTDOWN_GRACE_SECONDS = 10.0

# What a child needs and would otherwise import itself: torch, the trainer, the CLI, the
# local store, scikit-learn's digits; and torch._dynamo, which the first optimizer a process
# builds imports (~2 s). Optional ones may be missing from a build.
PRELOAD = ("torch", "torch.optim", "kubenas.cli", "kubenas.trainer.child",
           "kubenas.trainer.export", "kubenas.trainer.data", "kubenas.trainer.data.digits",
           "kubenas.storage.local")
OPTIONAL_PRELOAD = ("torch._dynamo", "sklearn.datasets", "kubenas.trainer.lm_child")


def die_with_parent() -> None:  # pragma: no cover - runs in a freshly started process
    # A killed `kubenas run` must not leave orphan children racing the resumed run.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def thread_count() -> int:
    """Threads of this process (Linux): fork is only safe at 1."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def preload(extra: tuple[str, ...] = ()) -> None:
    for name in PRELOAD + tuple(extra):
        importlib.import_module(name)
    for name in OPTIONAL_PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    threads = thread_count()
    if threads != 1:
        raise RuntimeError(f"zygote: {threads} threads after imports; fork would be unsafe")


# -- the child, after fork ------------------------------------------------------------------

def _child_exit_code(code) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _reset_child_process(log_path: str, close_fds: list[int], zygote_pid: int) -> None:
    die_with_parent()
    if os.getppid() != zygote_pid:  # the zygote died between fork and prctl
        os._exit(1)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has
    for fd in close_fds:
        os.close(fd)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    # Every child must not share the zygote's random streams (a cold child seeds afresh).
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))


def run_child(argv: list[str], log_path: str, close_fds: list[int], zygote_pid: int) -> None:
    """The forked child: run ``kubenas <argv>`` as the cold child would, then exit."""
    code = 1
    try:
        _reset_child_process(log_path, close_fds, zygote_pid)
        from kubenas.cli import main

        code = _child_exit_code(main(list(argv)))
    except SystemExit as exc:
        code = _child_exit_code(exc.code)
    except BaseException:  # noqa: BLE001 - whatever it was, it goes in the log and the code
        traceback.print_exc()
        code = 1
    finally:
        try:
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# -- the zygote's loop ----------------------------------------------------------------------

class _Server:
    def __init__(self, proto_in: int, proto_out: int, wake_r: int, wake_w: int) -> None:
        self.proto_in, self.proto_out = proto_in, proto_out
        self.wake_r, self.wake_w = wake_r, wake_w
        self.children: set[int] = set()
        self.buffer = b""

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.proto_out, data):]

    def spawn(self, request: dict) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            self.send({"event": "error", "id": request.get("id"), "message": str(exc)})
            return
        if pid == 0:  # pragma: no cover - the child; coverage cannot follow os._exit
            run_child(request["argv"], request["log"],
                      [self.proto_in, self.proto_out, self.wake_r, self.wake_w], os.getppid())
        self.children.add(pid)
        self.send({"event": "spawned", "id": request.get("id"), "pid": pid})

    def signal(self, request: dict) -> None:
        pid = int(request["pid"])
        if pid in self.children:  # never a reaped (possibly reused) pid
            try:
                os.kill(pid, int(request["signal"]))
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"event": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def handle(self, line: bytes) -> None:
        request = json.loads(line)
        op = request.get("op")
        if op == "spawn":
            self.spawn(request)
        elif op == "signal":
            self.signal(request)
        else:
            print(f"zygote: unknown op {op!r}", file=sys.stderr, flush=True)

    def read_requests(self) -> bool:
        """Handle every complete request line; False at end of input."""
        data = os.read(self.proto_in, 65536)
        if not data:
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.handle(line)
        return True

    def shutdown(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in list(self.children):
                self.signal({"pid": pid, "signal": sig})
            deadline = time.monotonic() + wait
            while self.children and time.monotonic() < deadline:
                self.reap()
                time.sleep(0.02)

    def serve(self) -> None:
        while True:
            ready, _, _ = select.select([self.proto_in, self.wake_r], [], [])
            if self.wake_r in ready:
                try:
                    os.read(self.wake_r, 4096)
                except BlockingIOError:
                    pass
            self.reap()
            if self.proto_in in ready and not self.read_requests():
                self.shutdown()
                return


def _protocol_fds() -> tuple[int, int]:
    """Keep stdin/stdout for the protocol only: fd 0 reads /dev/null and fd 1 writes where
    stderr goes (the zygote's log), so a stray print cannot corrupt a message."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)
    os.dup2(2, 1)
    return proto_in, proto_out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kubenas.local.zygote")
    p.add_argument("--preload", action="append", default=[], help="one more module to import")
    args = p.parse_args(argv)
    proto_in, proto_out = _protocol_fds()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for `kubenas run`; it closes us
    preload(tuple(args.preload))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select via the wakeup fd
    signal.set_wakeup_fd(wake_w)
    server = _Server(proto_in, proto_out, wake_r, wake_w)
    server.send({"event": "ready", "pid": os.getpid()})
    server.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
