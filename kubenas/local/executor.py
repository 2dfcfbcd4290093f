"""Children as local processes: each trial runs ``kubenas train-child`` in its own process.

The same command the Kubernetes Jobs run, so the embedded run exercises the real child
path (argument parsing, result record, create-only write) rather than a shortcut.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from kubenas.contracts import ResultRecord, result_key
from kubenas.controller.interfaces import Executor, TrialRequest
from kubenas.storage import AlreadyExists, ObjectStore

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # A killed `kubenas run` must not leave orphan children racing the resumed run.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class _Running:
    trial_id: str
    request: TrialRequest
    proc: subprocess.Popen
    log_path: Path
    started: float


class ProcessExecutor(Executor):
    def __init__(self, experiment: str, trainer_config: dict, store: ObjectStore, workdir: Path,
                 parallelism: int = 1, cache_dir: Optional[Path] = None,
                 extra_env: Optional[dict] = None) -> None:
        self.experiment = experiment
        self.trainer_config = trainer_config
        self.store = store
        self.workdir = Path(workdir)
        self.parallelism = parallelism
        self.cache_dir = cache_dir or self.workdir / "cache"
        self.extra_env = extra_env or {}
        self.running: dict[str, _Running] = {}

    def _trial_dir(self, tid: str) -> Path:
        d = self.workdir / "trials" / tid
        d.mkdir(parents=True, exist_ok=True)
        return d

    def submit(self, request: TrialRequest) -> None:
        tid = request.trial_id
        if tid in self.running:
            return
        d = self._trial_dir(tid)
        (d / "architecture.json").write_text(request.architecture.to_json(indent=1))
        (d / "trainer.json").write_text(json.dumps(self.trainer_config, indent=1))
        cmd = [sys.executable, "-m", "kubenas", "train-child",
               "--experiment", self.experiment, "--trial-id", tid,
               "--architecture-file", str(d / "architecture.json"),
               "--trainer-config-file", str(d / "trainer.json"),
               "--store", self.store.url(), "--cache-dir", str(self.cache_dir)]
        env = dict(os.environ, **self.extra_env)
        # Children share 2 cores with each other: one intra-op thread each avoids thrashing.
        env.setdefault("OMP_NUM_THREADS", "1")
        log_path = d / "child.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_parent)
        self.running[tid] = _Running(tid, request, proc, log_path, time.monotonic())

    def _reap(self) -> None:
        for tid, run in list(self.running.items()):
            code = run.proc.poll()
            if code is None:
                continue
            del self.running[tid]
            if code != 0 and not self.store.exists(result_key(tid)):
                self._write_crash_result(run, code)

    def _write_crash_result(self, run: _Running, code: int) -> None:
        """A child that died without reporting still gets a (failed) result, so the search
        never waits for it forever; create-only, so a real result always wins."""
        tail = run.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        reason = f"child process exited with code {code}" + (f": {' | '.join(tail)}" if tail else "")
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
