"""A simulated cluster that answers trials from the NAS-Bench-201 table instead of training.

``TableExecutor`` is both the ``Executor`` and the ``ResultSource`` of the search loop.
A submitted NAS-Bench-201 cell "trains" for the table's training time on one of ``workers``
simulated workers; its reward is the validation accuracy of **one training seed drawn at
random** from the seeds the table holds for that cell (so it is as noisy as a real child's
would be), shaped like the trainer's reward::

    reward = (val_acc / 100) ** rewardExponent

(the trainer's ``rewardWindow`` does not apply: the table holds only the final accuracy).

Time is simulated: a clock that only ``poll`` advances. Each submitted trial finishes at
``clock_at_submit + train_time``; results wait in a priority queue keyed by that finish time
and come out in finish-time order (ties: submission order). ``poll`` returns every finished
result the caller does not yet know; when there is none it jumps the clock to the next finish
time. With ``workers > 1`` the loop therefore sees what a cluster gives it: while one child
trains, others finish and free slots are refilled from a policy that has moved on (stale
samples), and results arrive out of submission order.

Everything is deterministic given ``seed`` and the order of calls.
"""

from __future__ import annotations

import datetime as _dt
import heapq
from typing import Optional

import numpy as np

from benchmarks.nasbench201.table import NB201Table, load_table
from kubenas.contracts import Executor, ResultRecord, ResultSource, TrialRequest
from kubenas.controller.spaces.nasbench201 import table_index

#: where simulated time 0 sits on the calendar (for the ISO timestamps of the records)
SIM_EPOCH = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)


def shape_reward(val_acc_percent: float, exponent: float = 1.0) -> float:
    """The trainer's reward shaping: accuracy as a fraction, raised to ``exponent``."""
    return float((val_acc_percent / 100.0) ** exponent)


def _iso(seconds: float) -> str:
    t = SIM_EPOCH + _dt.timedelta(seconds=float(seconds))
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TableExecutor(Executor, ResultSource):
    """Answers NAS-Bench-201 trials from the table on ``workers`` simulated workers.

    Args:
        table: an ``NB201Table`` or a dataset name (``cifar10`` | ``cifar100`` | ``imagenet``).
        workers: children training at once (the loop's parallelism).
        seed: seeds the draw of the training seed per trial.
        reward_exponent: the trainer's ``rewardExponent``.
        experiment: the ``experiment`` field of the result records.
    """

    def __init__(self, table: NB201Table | str = "cifar10", workers: int = 1, seed: int = 0,
                 reward_exponent: float = 3.0, experiment: str = "nasbench201-sim"):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.table = load_table(table) if isinstance(table, str) else table
        self.workers = int(workers)
        self.reward_exponent = float(reward_exponent)
        self.experiment = experiment
        # own stream, decorrelated from a strategy seeded with the same integer
        self._rng = np.random.default_rng([0x201, int(seed)])
        self.clock = 0.0                    # simulated seconds
        self._seq = 0                       # submission counter: the tie-breaker
        self._queue: list[tuple[float, int, ResultRecord]] = []   # (finish, seq, record)
        self._running: set[str] = set()
        self._submitted: set[str] = set()
        self._finished: dict[str, ResultRecord] = {}   # finished, not yet seen in `known`
        self.busy_seconds = 0.0             # simulated compute charged so far
        self.table_indices: dict[str, int] = {}   # trial id -> table cell index
        self.table_seeds: dict[str, int] = {}     # trial id -> training seed drawn
        self._drawn: dict[int, set[int]] = {}     # cell index -> training seeds drawn so far

    # -- Executor ------------------------------------------------------------------------
    def free_slots(self, pool: Optional[str] = None) -> int:
        return self.workers - len(self._running)

    def in_flight(self) -> set[str]:
        return set(self._running)

    def draw_seed(self, index: int, fresh: bool = False) -> int:
        """A training seed of cell ``index``, uniform. ``fresh``: uniform among the seeds not
        drawn yet for this cell (a re-evaluation's "second seed"); all seeds when none is left."""
        seeds = range(int(self.table.n_seeds[index]))
        if fresh:
            unseen = [k for k in seeds if k not in self._drawn.get(index, ())]
            seeds = unseen or seeds
        return int(seeds[int(self._rng.integers(len(seeds)))])

    def drawn_seeds(self, index: int) -> frozenset:
        """The training seeds of cell ``index`` this executor has drawn (submitted)."""
        return frozenset(self._drawn.get(index, ()))

    def submit(self, request: TrialRequest, fresh_seed: bool = False) -> None:
        """Start ``request``'s child. ``fresh_seed``: draw a seed this cell has not had yet
        (re-evaluating a candidate) instead of any of its seeds."""
        if request.trial_id in self._submitted:
            return                          # idempotent: never a second child
        if self.free_slots() <= 0:
            raise RuntimeError(f"no free worker for {request.trial_id} "
                               f"({self.workers} busy); check free_slots() first")
        index = table_index(request.architecture)
        seed = self.draw_seed(index, fresh=fresh_seed)
        acc, seconds = self.table.lookup(index, seed)
        start, finish = self.clock, self.clock + seconds
        record = ResultRecord(
            experiment=self.experiment,
            trial_id=request.trial_id,
            architecture=request.architecture,
            status="succeeded",
            reward=shape_reward(acc, self.reward_exponent),
            timings={"started_at": _iso(start), "finished_at": _iso(finish),
                     "train_seconds": seconds, "total_seconds": seconds,
                     "simulated": True, "sim_start": start, "sim_finish": finish},
            extra={"simulated": True, "dataset": self.table.dataset, "table_index": index,
                   "table_seed": seed, "val_acc": acc / 100.0,
                   "model_size_mb": float(self.table.model_size[index])},
        )
        heapq.heappush(self._queue, (finish, self._seq, record))
        self._seq += 1
        self._submitted.add(request.trial_id)
        self._running.add(request.trial_id)
        self.table_indices[request.trial_id] = index
        self.table_seeds[request.trial_id] = seed
        self._drawn.setdefault(index, set()).add(seed)
        self.busy_seconds += seconds

    def table_index(self, trial_id: str) -> int:
        """The table cell index of a submitted trial."""
        return self.table_indices[trial_id]

    # -- ResultSource --------------------------------------------------------------------
    def poll(self, known, timeout: float = 0.0, start_after=None) -> list[ResultRecord]:
        """Finished results not in ``known``, in finish-time order. When none is waiting,
        the clock jumps to the next finish time (``timeout`` is irrelevant: no real
        waiting happens). Returns ``[]`` only when nothing is in flight."""
        for tid in [t for t in self._finished if t in known]:
            del self._finished[tid]
        if not self._finished and self._queue:
            self.clock = max(self.clock, self._queue[0][0])
        while self._queue and self._queue[0][0] <= self.clock:
            _, _, record = heapq.heappop(self._queue)
            self._running.discard(record.trial_id)
            self._finished[record.trial_id] = record
        return [r for t, r in self._finished.items() if t not in known]

    def close(self) -> None:
        self._queue.clear()
        self._running.clear()
