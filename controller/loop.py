"""The update loop: sample while there is room, apply results as they arrive, persist everything.

The controller's whole state — the strategy (policy, optimizer, baseline, pending samples,
RNG), the sample log and the set of applied results — is one JSON object in the store,
written with compare-and-swap after every step. So:

* a killed controller resumes exactly where its last write left it: sampled trials that have
  no result yet are re-submitted (submission is idempotent by trial id), nothing is lost;
* a result is applied at most once, because "applied" is recorded in the same atomic write
  as the parameter update it caused;
* K replicas (the paper's §3.3 scheme) can share one policy: a replica whose write loses
  the race reloads the winner's state and redoes only its own step on top of it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from kubenas.contracts import Architecture, ResultRecord
from kubenas.controller.interfaces import Executor, ResultSource, TrialRequest
from kubenas.controller.strategies.base import Strategy
from kubenas.experiment import Experiment, trial_id
from kubenas.storage import ObjectStore, PreconditionFailed, StorageError
from kubenas.storage.base import NotFound

log = logging.getLogger("kubenas.controller")

STATE_KEY = "controller/state.json"
STATE_VERSION = 1


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LoopEvent:
    """Something the loop did, for progress bars, logs and metrics."""
    kind: str                      # "sampled" | "applied" | "resumed" | "conflict" | "done"
    trial_id: Optional[str] = None
    reward: Optional[float] = None
    status: Optional[str] = None
    info: dict = field(default_factory=dict)


class SearchLoop:
    """Runs one experiment's search against an executor and a result source.

    ``strategy_factory()`` makes a fresh strategy (same space, options and seed every time);
    its state is then loaded from the store when there is one.
    """

    def __init__(self, experiment: Experiment, strategy_factory: Callable[[], Strategy],
                 executor: Executor, results: ResultSource, store: ObjectStore,
                 replica: str = "0", on_event: Optional[Callable[[LoopEvent], None]] = None,
                 poll_interval: float = 0.5, shared: bool = False,
                 checkpoint: bool = True) -> None:
        self.experiment = experiment
        self.strategy_factory = strategy_factory
        self.executor = executor
        self.results = results
        self.store = store
        self.replica = replica
        self.on_event = on_event or (lambda e: None)
        self.poll_interval = poll_interval
        self.shared = shared
        # checkpoint=False: an in-process simulation (the NAS-Bench-201 benchmark) that needs
        # no resume; skips serialising the whole strategy after every step.
        self.checkpoint = checkpoint
        self.strategy: Strategy = strategy_factory()
        self.state: dict = {}
        self.etag: Optional[str] = None
        self._stale = False      # a store error left the in-memory state in doubt: reload
        self._resubmit = True    # (re)loaded: sampled trials may never have been submitted
        self._resumed = False    # submit_pending has run once (the resume)
        self._submitted: set = set()   # trial ids this process has submitted
        self._load(initial=True)

    # -- persistence -----------------------------------------------------------------------
    def _fresh_state(self) -> dict:
        return {"version": STATE_VERSION, "experiment": self.experiment.name,
                "strategyName": self.experiment.strategy, "strategy": None,
                "nextIndex": 0, "sampled": {}, "applied": {}, "updatedAt": _now()}

    def _load(self, initial: bool = False) -> None:
        # Whatever was loaded may hold samples whose submission never happened (a killed
        # controller, another replica between its write and its submit, a write whose answer
        # was lost): the next step() re-submits them.
        self._resubmit = True
        try:
            data, etag = self.store.get_with_etag(STATE_KEY)
        except NotFound:
            self.state, self.etag = self._fresh_state(), None
            self.strategy = self.strategy_factory()
            return
        state = json.loads(data)
        if state.get("experiment") != self.experiment.name:
            raise RuntimeError(f"{self.store.url()}/{STATE_KEY} belongs to experiment "
                               f"{state.get('experiment')!r}, not {self.experiment.name!r}")
        if state.get("strategyName") != self.experiment.strategy:
            raise RuntimeError(f"{STATE_KEY}: state was written by strategy "
                               f"{state.get('strategyName')!r}; this experiment asks for "
                               f"{self.experiment.strategy!r}. Use a new experiment name or work dir.")
        self.strategy = self.strategy_factory()
        if state.get("strategy") is not None:
            self.strategy.load_state_dict(state["strategy"])
        self.state, self.etag = state, etag
        if initial:
            self.on_event(LoopEvent("resumed", info={"sampled": len(state["sampled"]),
                                                     "applied": len(state["applied"])}))

    def _transact(self, step: Callable[[], object]) -> object:
        """Run ``step`` (which mutates self.strategy / self.state) and persist it with CAS.

        On a lost race, reload the winning state and run ``step`` again on top of it."""
        while True:
            out = step()
            if not self.checkpoint:
                return out
            self.state["strategy"] = self.strategy.state_dict()
            self.state["updatedAt"] = _now()
            data = json.dumps(self.state, separators=(",", ":")).encode()
            try:
                self.etag = self.store.put_if_match(STATE_KEY, data, self.etag)
                return out
            except PreconditionFailed:
                self.on_event(LoopEvent("conflict"))
                self._load()

    # -- the three steps ---------------------------------------------------------------------
    @property
    def sampled(self) -> dict:
        return self.state["sampled"]

    @property
    def applied(self) -> dict:
        return self.state["applied"]

    def done(self) -> bool:
        return len(self.applied) >= self.experiment.max_trials

    def _sample_one(self) -> Optional[str]:
        if self.state["nextIndex"] >= self.experiment.max_trials:
            return None
        proposal = self.strategy.ask()
        index = self.state["nextIndex"]
        self.state["nextIndex"] = index + 1
        tid = trial_id(self.experiment.name, index)
        self.sampled[tid] = {"index": index, "strategyIndex": proposal.index,
                             "architecture": proposal.architecture.to_dict(),
                             "policyVersion": proposal.policy_version,
                             "sampledAt": _now(), "replica": self.replica}
        return tid

    def submit_pending(self) -> int:
        """Submit the sampled trials without an applied result that this process has not
        submitted: the first time (a resume) all of them, idempotently; later (after a
        reload) only this replica's own, i.e. a sample whose write landed although its answer
        was lost, so that replicas never start each other's trials."""
        resuming, self._resumed = not self._resumed, True
        n = 0
        for tid, rec in sorted(self.sampled.items()):
            if tid in self.applied or tid in self._submitted:
                continue
            if not resuming and rec.get("replica") != self.replica:
                continue
            if tid in self.executor.in_flight():
                self._submitted.add(tid)
                continue
            self._submit(tid, rec)
            n += 1
        return n

    def _submit(self, tid: str, rec: dict) -> None:
        arch = Architecture.from_dict(rec["architecture"])
        self.executor.submit(TrialRequest(trial_id=tid, architecture=arch))
        self._submitted.add(tid)

    def fill(self) -> int:
        """Sample and submit into the slots free now, as far as the budget allows.

        Only the slots free when it starts: were it to go on while slots keep freeing up,
        children that finish faster than a sample is written would have it sample the whole
        budget from the first policy before a single result is applied."""
        n = 0
        for _ in range(max(0, self.executor.free_slots())):
            tid = self._transact(self._sample_one)
            if tid is None:
                break
            self._submit(tid, self.sampled[tid])
            self.on_event(LoopEvent("sampled", trial_id=tid))
            n += 1
        return n

    def _apply(self, results: list[ResultRecord]) -> list[LoopEvent]:
        events = []
        for r in results:
            rec = self.sampled.get(r.trial_id)
            if rec is None or r.trial_id in self.applied:
                continue  # not ours (another experiment's prefix?) or already applied
            fb = self.strategy.tell(rec["strategyIndex"], r.reward if r.succeeded else None)
            self.applied[r.trial_id] = {
                "status": r.status, "reward": r.reward, "reason": r.reason,
                "staleness": fb.staleness, "stepped": fb.stepped, "appliedAt": _now(),
                "replica": self.replica}
            events.append(LoopEvent("applied", trial_id=r.trial_id, reward=r.reward,
                                    status=r.status, info={"staleness": fb.staleness,
                                                           "stepped": fb.stepped}))
        return events

    def collect(self, timeout: float = 0.0) -> int:
        new = self.results.poll(set(self.applied), timeout=timeout)
        new = [r for r in new if r.trial_id in self.sampled and r.trial_id not in self.applied]
        if not new:
            return 0
        # Inside the transaction the applied set is re-checked, so a result that another
        # replica applied while we were polling is skipped rather than counted twice.
        events = self._transact(lambda: self._apply(new))
        for e in events:
            self.on_event(e)
        return len(events)

    # -- driver ------------------------------------------------------------------------------
    def step(self, timeout: float = 0.0) -> int:
        """One round: re-submit what a (re)load found unsubmitted, sample into free slots,
        apply new results (waiting up to ``timeout`` for some). Returns how many were applied.

        The store being unreachable is ridden out: nothing is lost (all state is in the store
        and the children keep training); the step ends and the next one starts from the last
        committed state."""
        try:
            if self._stale:
                self._load()
                self._stale = False
            if self._resubmit:
                self._resubmit = False
                # Apply what finished while we were away before re-submitting the rest, so a
                # trial whose result is already in the store is never started again.
                self.collect()
                self.submit_pending()
            self.fill()
            applied = self.collect(timeout=timeout)
            if applied == 0:
                self._refresh_if_shared()
            return applied
        except StorageError as exc:
            log.warning("storage unavailable, retrying: %s", exc)
            self._stale = True
            time.sleep(min(5.0, max(self.poll_interval * 4, 0.1)))
            return 0

    def run(self, deadline: Optional[float] = None) -> dict:
        while not self.done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"experiment {self.experiment.name}: deadline reached with "
                                   f"{len(self.applied)}/{self.experiment.max_trials} results")
            self.step(timeout=self.poll_interval)
        self.on_event(LoopEvent("done", info=self.summary()))
        return self.summary()

    def _refresh_if_shared(self) -> None:
        """With several replicas, pick up others' progress (new samples, applied results)."""
        if not self.shared:
            return
        try:
            _, etag = self.store.get_with_etag(STATE_KEY)
        except NotFound:
            return
        if etag != self.etag:
            self._load()

    def summary(self) -> dict:
        succeeded = {t: a for t, a in self.applied.items() if a["status"] == "succeeded"}
        best = max(succeeded, key=lambda t: succeeded[t]["reward"], default=None)
        return {
            "experiment": self.experiment.name,
            "sampled": len(self.sampled), "applied": len(self.applied),
            "succeeded": len(succeeded), "failed": len(self.applied) - len(succeeded),
            "bestTrial": best,
            "bestReward": succeeded[best]["reward"] if best else None,
            "bestArchitecture": self.sampled[best]["architecture"] if best else None,
        }
