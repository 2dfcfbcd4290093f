"""Children as local processes: each trial runs ``kubenas train-child`` in its own process.

The same command the Kubernetes Jobs run, so the embedded run exercises the real child
path (argument parsing, result record, create-only write) rather than a shortcut.

Warm (the default): a zygote (``kubenas.local.zygote``) with torch and the trainer imported
forks each child, which then runs that command's entry point, ``kubenas.cli.main``; no child
pays interpreter and torch start-up. Cold (``warm=False``, or ``KUBENAS_LOCAL_CHILDREN=cold``
as the default): a fresh ``python -m kubenas train-child`` per trial. Either way a child is a
process of its own: a crash, an OOM kill or any non-zero exit without a result becomes a
failed record with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

from kubenas.contracts import Executor, ResultRecord, TrialRequest, result_key
from kubenas.local.warm import WarmChild, Zygote
from kubenas.local.zygote import die_with_parent
from kubenas.storage import AlreadyExists, ObjectStore


CHILDREN_ENV = "KUBENAS_LOCAL_CHILDREN"   # "warm" (default) or "cold"


def warm_by_default() -> bool:
    """Whether children fork from the warm worker unless told otherwise."""
    raw = os.environ.get(CHILDREN_ENV, "warm").strip().lower() or "warm"
    if raw not in ("warm", "cold"):
        raise ValueError(f"{CHILDREN_ENV}: 'warm' or 'cold', got {raw!r}")
    return raw == "warm"


def exit_reason(code: int) -> str:
    """What a child's exit code says, in words (negative: the signal that killed it)."""
    if code >= 0:
        return f"child process exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL \
        else ""
    return f"child process was killed by {name}{hint}"


@dataclass
class _Running:
    trial_id: str
    request: TrialRequest
    proc: Union[subprocess.Popen, WarmChild]
    log_path: Path
    started: float


class ProcessExecutor(Executor):
    def __init__(self, experiment: str, trainer_config: dict, store: ObjectStore, workdir: Path,
                 parallelism: int = 1, cache_dir: Optional[Path] = None,
                 extra_env: Optional[dict] = None, warm: Optional[bool] = None) -> None:
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise ValueError(f"parallelism: must be a whole number >= 1, got {parallelism!r}")
        self.experiment = experiment
        self.trainer_config = trainer_config
        self.store = store
        self.workdir = Path(workdir)
        self.parallelism = parallelism
        self.cache_dir = cache_dir or self.workdir / "cache"
        self.extra_env = extra_env or {}
        self.warm = warm_by_default() if warm is None else bool(warm)
        self.running: dict[str, _Running] = {}
        self.wall_seconds: dict[str, float] = {}   # trial id -> submit to reaped exit
        self.zygote: Optional[Zygote] = None

    def _trial_dir(self, tid: str) -> Path:
        d = self.workdir / "trials" / tid
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _child_env(self) -> dict:
        env = dict(os.environ, **self.extra_env)
        # Children share 2 cores with each other: one intra-op thread each avoids thrashing.
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def _child_argv(self, tid: str, d: Path) -> list[str]:
        """``kubenas`` arguments of a child: what a cold one is started with and what a warm
        one hands ``kubenas.cli.main``."""
        return ["train-child", "--experiment", self.experiment, "--trial-id", tid,
                "--architecture-file", str(d / "architecture.json"),
                "--trainer-config-file", str(d / "trainer.json"),
                "--store", self.store.url(), "--cache-dir", str(self.cache_dir)]

    def _start_warm(self, tid: str, argv: list[str], log_path: Path) -> WarmChild:
        if self.zygote is None:
            preload = ("kubenas.storage.s3",) if self.store.url().startswith("s3://") else ()
            self.zygote = Zygote(self._child_env(), self.workdir / "zygote.log", preload)
        return WarmChild(self.zygote, self.zygote.spawn(tid, argv, log_path))

    def _start_cold(self, argv: list[str], log_path: Path) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "kubenas", *argv], stdout=log,
                                    stderr=subprocess.STDOUT, env=self._child_env(),
                                    preexec_fn=die_with_parent)

    def submit(self, request: TrialRequest) -> None:
        tid = request.trial_id
        if tid in self.running:
            return
        d = self._trial_dir(tid)
        (d / "architecture.json").write_text(request.architecture.to_json(indent=1))
        (d / "trainer.json").write_text(json.dumps(request.trainer_config(self.trainer_config),
                                                   indent=1))
        argv = self._child_argv(tid, d)
        log_path = d / "child.log"
        started = time.monotonic()
        proc = self._start_warm(tid, argv, log_path) if self.warm \
            else self._start_cold(argv, log_path)
        self.running[tid] = _Running(tid, request, proc, log_path, started)

    def child_pids(self) -> dict[str, int]:
        """Trial id -> pid of its running child."""
        return {tid: run.proc.pid for tid, run in self.running.items()}

    def _reap(self) -> None:
        for tid, run in list(self.running.items()):
            code = run.proc.poll()
            if code is None:
                continue
            del self.running[tid]
            self.wall_seconds[tid] = round(time.monotonic() - run.started, 3)
            if code != 0 and not self.store.exists(result_key(tid)):
                self._write_crash_result(run, code)

    def _write_crash_result(self, run: _Running, code: int) -> None:
        """A child that died without reporting still gets a (failed) result, so the search
        never waits for it forever; create-only, so a real result always wins."""
        tail = run.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        reason = exit_reason(code) + (f": {' | '.join(tail)}" if tail else "")
        now = datetime.now(timezone.utc).isoformat()
        record = ResultRecord(experiment=self.experiment, trial_id=run.trial_id,
                              architecture=run.request.architecture, status="failed",
                              reason=reason[:2000], timings={"finished_at": now},
                              extra={"exit_code": code})
        try:
            self.store.put_new(result_key(run.trial_id), record.to_json())
        except AlreadyExists:
            pass

    def free_slots(self, pool: Optional[str] = None) -> int:
        self._reap()
        return max(0, self.parallelism - len(self.running))

    def in_flight(self) -> set[str]:
        self._reap()
        return set(self.running)

    def close(self) -> None:
        for run in self.running.values():
            if run.proc.poll() is None:
                run.proc.terminate()
        for run in self.running.values():
            try:
                run.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                run.proc.kill()
        self.running.clear()
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
