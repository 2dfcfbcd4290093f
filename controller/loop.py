"""The update loop: sample while there is room, apply results as they arrive, persist everything.

The controller's state — the strategy (policy, optimizer, baseline, pending samples' actions,
RNG), the counters, the samples not yet applied and the applied set (index ranges) — is one
JSON object in the store (``controller/state.json``), written with compare-and-swap once per
fill round and once per collect. Its size follows what is in flight, not the experiment's
size. Per-trial documents go to create-only objects: ``trials/<id>.json`` (the sample) and
``applied/<id>.json`` (how its result was applied). They are committed inside the state first
(its ``outbox``) and written after the commit; a document leaves the outbox in a later commit
once it is known to be stored. So:

* a killed controller resumes exactly where its last write left it: sampled trials that have
  no result yet are re-submitted (submission is idempotent by trial id), nothing is lost, and
  per-trial documents committed but not yet written are written on load;
* a result is applied at most once, because "applied" is recorded in the same atomic write
  as the parameter update it caused, and its ``applied/`` document is create-only (a crash or
  a lost race can only re-write the same committed bytes, never a second version);
* K replicas (the paper's §3.3 scheme) can share one policy: a replica whose write loses
  the race backs off, reloads the winner's state and redoes only its own step on top of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from kubenas.contracts import (Architecture, Executor, ResultRecord, ResultSource, TrialRefused,
                               TrialRequest, result_key)
from kubenas.contracts.names import ANNOTATION_RESUME_FROM
from kubenas.contracts.result import add_cost, empty_cost_totals
from kubenas.controller.ledger import AppliedView, IndexSet, SampledView, TrialIds
from kubenas.controller.results import applied_key, trial_key
from kubenas.controller.strategies.base import Strategy
from kubenas.experiment import Experiment, trial_id
from kubenas.storage import AlreadyExists, ObjectStore, PreconditionFailed, StorageError
from kubenas.storage.base import NotFound

log = logging.getLogger("kubenas.controller")

STATE_KEY = "controller/state.json"
STATE_VERSION = 2
CAS_BACKOFF_BASE = 0.005   # seconds; doubled per consecutive lost race, full jitter
CAS_BACKOFF_CAP = 1.0
# Samples per state write: their architectures (~3 KB each for a 15-layer CNN) ride in the
# state's outbox until written, so a burst of 800 free slots is cut into a few commits
# rather than making one state of 2.5 MB.
MAX_SAMPLES_PER_COMMIT = 200


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _canonical(architecture: Architecture) -> str:
    return json.dumps(architecture.to_dict(), sort_keys=True, separators=(",", ":"))


def architecture_digest(architecture: Architecture) -> str:
    """Fingerprint of the canonical form: a pending sample carries it, so a result's
    architecture is checked without reading the sample's ``trials/`` document."""
    return hashlib.sha256(_canonical(architecture).encode()).hexdigest()[:16]


def _describe(architecture: Architecture) -> str:
    tokens = architecture.tokens
    shown = f"{tokens[:16]}"[:-1] + (", ...]" if len(tokens) > 16 else "]")
    return f"{architecture.space} {architecture_digest(architecture)} (tokens {shown})"


def read_ledger(store: ObjectStore) -> dict:
    """The search's whole record as one dict, for reports and tests: the state's fields plus
    ``sampled`` (trial_id -> its ``trials/`` document) and ``applied`` (trial_id -> its
    ``applied/`` document) — the maps the state itself held before version 2. Reads one
    object per trial: not for the loop."""
    state = json.loads(store.get(STATE_KEY))
    name, outbox = state["experiment"], state.get("outbox") or {}

    def documents(key_of: Callable[[str], str], indices) -> dict:
        tids = [trial_id(name, index) for index in indices]
        stored = [key_of(t) for t in tids if key_of(t) not in outbox]
        fetched = dict(zip(stored, store.get_many(stored)))
        missing = [k for k, data in fetched.items() if data is None]
        if missing:
            raise NotFound(f"{missing[0]} (and {len(missing) - 1} more): in the state, not stored")
        return {t: outbox[k] if k in outbox else json.loads(fetched[k])
                for t, k in ((t, key_of(t)) for t in tids)}

    return {**state, "sampled": documents(trial_key, range(state["nextIndex"])),
            "applied": documents(applied_key, IndexSet(state["appliedRanges"]))}


class StateOwned(RuntimeError):
    """The stored state belongs to another Experiment (another namespace or UID)."""


def _owner_record(owner: dict) -> dict:
    return {k: owner.get(k) for k in ("namespace", "name", "uid")}


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
                 checkpoint: bool = True, owner: Optional[dict] = None) -> None:
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
        # no resume; nothing is written to the store (per-trial documents stay in memory).
        self.checkpoint = checkpoint
        # owner: the cluster object this search belongs to ({namespace, name, uid,
        # resumeFrom}); recorded in the state, which another UID may not resume (StateOwned).
        # None (kubenas run): no owner is checked or recorded.
        self.owner = owner
        self.strategy: Strategy = strategy_factory()
        self.state: dict = {}
        self.etag: Optional[str] = None
        self.applied_set = IndexSet()
        self._stale = False      # a store error left the in-memory state in doubt: reload
        self._resubmit = True    # (re)loaded: sampled trials may never have been submitted
        self._resumed = False    # submit_pending has run once (the resume)
        self._submitted: set = set()   # trial ids this process submitted, not yet applied
        self._prefetched: dict = {}    # trials/ key -> bytes or None, read at once (credited)
        self._load(initial=True)

    # -- persistence -----------------------------------------------------------------------
    def _fresh_state(self) -> dict:
        state = {"version": STATE_VERSION, "experiment": self.experiment.name,
                 "strategyName": self.experiment.strategy, "strategy": None,
                 "nextIndex": 0, "counts": {"applied": 0, "succeeded": 0, "failed": 0},
                 "appliedRanges": [], "best": None, "pending": {}, "outbox": {},
                 "updatedAt": _now()}
        if self.owner is not None:
            state["owner"] = _owner_record(self.owner)
        return state

    def _check_owner(self, state: dict) -> None:
        """A state another Experiment (another UID) wrote is refused unless this one asked
        to resume exactly that UID; a state without an owner (written by ``kubenas run`` or
        before owners were recorded) is taken over. Either way this owner is recorded."""
        if self.owner is None:
            return
        theirs = state.get("owner") or {}
        if theirs.get("uid") not in (None, self.owner.get("uid"), self.owner.get("resumeFrom")):
            raise StateOwned(
                f"{self.store.url()}/{STATE_KEY} belongs to Experiment "
                f"{theirs.get('namespace')}/{theirs.get('name')} (uid {theirs.get('uid')}), not "
                f"this one (uid {self.owner.get('uid')}): a re-created Experiment starts fresh "
                f"under its own storage prefix; to continue that state, annotate this "
                f"Experiment {ANNOTATION_RESUME_FROM}={theirs.get('uid')}")
        if theirs.get("uid") != self.owner.get("uid"):
            if theirs.get("uid"):
                log.info("%s: resuming the state of uid %s as uid %s", self.store.url(),
                         theirs.get("uid"), self.owner.get("uid"))
            state["owner"] = {**_owner_record(self.owner), "resumedFrom": theirs.get("uid")}

    def _check(self, state: dict) -> None:
        where = f"{self.store.url()}/{STATE_KEY}"
        if state.get("experiment") != self.experiment.name:
            raise RuntimeError(f"{where} belongs to experiment "
                               f"{state.get('experiment')!r}, not {self.experiment.name!r}")
        if state.get("version") != STATE_VERSION:
            raise RuntimeError(
                f"{where}: state format version {state.get('version')!r}, this kubenas reads "
                f"version {STATE_VERSION} (per-trial objects, compact applied set); finish "
                "that experiment with the kubenas that started it, or start a new experiment "
                "name or work dir")
        if state.get("strategyName") != self.experiment.strategy:
            raise RuntimeError(f"{STATE_KEY}: state was written by strategy "
                               f"{state.get('strategyName')!r}; this experiment asks for "
                               f"{self.experiment.strategy!r}. Use a new experiment name or work dir.")

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
            self.applied_set = IndexSet()
            return
        state = json.loads(data)
        self._check(state)
        self._check_owner(state)
        self.strategy = self.strategy_factory()
        if state.get("strategy") is not None:
            self.strategy.load_state_dict(state["strategy"])
        self.state, self.etag = state, etag
        self.applied_set = IndexSet(state["appliedRanges"])
        self._submitted &= set(state["pending"])
        if initial:
            self.on_event(LoopEvent("resumed", info={"sampled": state["nextIndex"],
                                                     "applied": len(self.applied_set)}))
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        """Write the committed per-trial documents (create-only: a second write of the same
        committed document finds it there, which is as good). Each one written leaves the
        outbox in the next commit."""
        if not self.checkpoint:
            return
        outbox = self.state["outbox"]
        for key in sorted(outbox):
            try:
                self.store.put_new(key, _encode(outbox[key]))
            except AlreadyExists:
                pass
            del outbox[key]

    def _backoff(self, lost: int) -> None:
        time.sleep(random.uniform(0, min(CAS_BACKOFF_CAP, CAS_BACKOFF_BASE * 2 ** lost)))

    def _transact(self, step: Callable[[], object]) -> object:
        """Run ``step`` (which mutates self.strategy / self.state) and persist it with CAS.

        On a lost race, back off (jittered, exponential), reload the winning state and run
        ``step`` again on top of it."""
        lost = 0
        while True:
            out = step()
            if not self.checkpoint:
                return out
            self.state["strategy"] = self.strategy.state_dict()
            self.state["appliedRanges"] = self.applied_set.ranges()
            self.state["updatedAt"] = _now()
            try:
                self.etag = self.store.put_if_match(STATE_KEY, _encode(self.state), self.etag)
            except PreconditionFailed:
                self.on_event(LoopEvent("conflict"))
                self._backoff(lost)
                lost += 1
                self._load()
                continue
            self._flush_outbox()
            return out

    # -- what the state holds --------------------------------------------------------------
    def _local_doc(self, key: str) -> Optional[dict]:
        return self.state["outbox"].get(key)

    @property
    def sampled(self) -> SampledView:
        """trial_id -> its ``trials/`` document, for every sampled trial (read on access)."""
        return SampledView(lambda: self.state["nextIndex"], self.experiment.name, trial_key,
                           self._local_doc, self.store.get)

    @property
    def applied(self) -> AppliedView:
        """trial_id -> its ``applied/`` document, for every applied result (read on access)."""
        return AppliedView(lambda: self.applied_set, self.experiment.name, applied_key,
                           self._local_doc, self.store.get)

    @property
    def pending(self) -> dict:
        """Sampled trials without an applied result: trial_id -> sampling metadata."""
        return self.state["pending"]

    def done(self) -> bool:
        return len(self.applied_set) >= self.experiment.max_trials

    # -- sampling ----------------------------------------------------------------------------
    def _sample_round(self, count: int) -> list[tuple[str, Architecture]]:
        samples = []
        for _ in range(count):
            index = self.state["nextIndex"]
            if index >= self.experiment.max_trials:
                break
            proposal = self.strategy.ask()
            self.state["nextIndex"] = index + 1
            tid = trial_id(self.experiment.name, index)
            meta = {"index": index, "strategyIndex": proposal.index,
                    "policyVersion": proposal.policy_version, "sampledAt": _now(),
                    "replica": self.replica,
                    "architectureDigest": architecture_digest(proposal.architecture)}
            self.pending[tid] = meta
            self.state["outbox"][trial_key(tid)] = {
                "trial_id": tid, **meta, "architecture": proposal.architecture.to_dict()}
            samples.append((tid, proposal.architecture))
        return samples

    def _architecture(self, tid: str) -> Architecture:
        doc = self._local_doc(trial_key(tid))
        if doc is None:
            data = self._prefetched.get(trial_key(tid))
            doc = json.loads(data if data is not None else self.store.get(trial_key(tid)))
        return Architecture.from_dict(doc["architecture"], trial_key(tid))

    def submit_pending(self) -> int:
        """Submit the sampled trials without an applied result that this process has not
        submitted: the first time (a resume) all of them, idempotently; later (after a
        reload) only this replica's own, i.e. a sample whose write landed although its answer
        was lost, so that replicas never start each other's trials."""
        resuming, self._resumed = not self._resumed, True
        in_flight = self.executor.in_flight()
        n = 0
        for tid, meta in sorted(self.pending.items()):
            if tid in self._submitted:
                continue
            if not resuming and meta.get("replica") != self.replica:
                continue
            if tid in in_flight:
                self._submitted.add(tid)
                continue
            self._submit(tid, self._architecture(tid))
            n += 1
        return n

    def _submit(self, tid: str, architecture: Architecture) -> None:
        try:
            self.executor.submit(TrialRequest(trial_id=tid, architecture=architecture))
        except TrialRefused as exc:
            self._record_refused(tid, architecture, str(exc))
        self._submitted.add(tid)

    def _record_refused(self, tid: str, architecture: Architecture, reason: str) -> None:
        """The trial can never run: its failed result (create-only: a record already there
        decides), found and applied like any other."""
        log.error("%s: counted as a failed trial", reason)
        record = ResultRecord(experiment=self.experiment.name, trial_id=tid,
                              architecture=architecture, status="failed", reason=reason,
                              timings={"finished_at": _now()},
                              extra={"writtenBy": "kubenas-controller"})
        try:
            self.store.put_new(result_key(tid), record.to_json())
        except AlreadyExists:
            pass

    def fill(self) -> int:
        """Sample and submit into the slots free now, as far as the budget allows: one
        transaction for the whole round (per ``MAX_SAMPLES_PER_COMMIT``).

        Only the slots free when it starts: were it to go on while slots keep freeing up,
        children that finish faster than a sample is written would have it sample the whole
        budget from the first policy before a single result is applied."""
        free = min(self.executor.free_slots(),
                   self.experiment.max_trials - self.state["nextIndex"])
        asked = sampled = 0
        while asked < free:
            count = min(free - asked, MAX_SAMPLES_PER_COMMIT)
            asked += count
            samples = self._transact(lambda: self._sample_round(count))
            for tid, architecture in samples:
                self._submit(tid, architecture)
                self.on_event(LoopEvent("sampled", trial_id=tid))
            sampled += len(samples)
            if len(samples) < count:  # the budget ran out (another replica sampled too)
                break
        return sampled

    # -- applying results --------------------------------------------------------------------
    def _record_applied(self, r: ResultRecord, meta: dict, fb) -> dict:
        counts = self.state["counts"]
        counts["applied"] += 1
        counts["succeeded" if r.succeeded else "failed"] += 1
        add_cost(self.state.setdefault("cost", empty_cost_totals()), r)
        best = self.state["best"]
        if r.succeeded and (best is None or r.reward > best["reward"]):
            self.state["best"] = {"trial": r.trial_id, "reward": r.reward,
                                  "architecture": r.architecture.to_dict()}
        self.applied_set.add(meta["index"])
        del self.pending[r.trial_id]
        self._submitted.discard(r.trial_id)
        detail = {"trial_id": r.trial_id, "index": meta["index"], "status": r.status,
                  "reward": r.reward, "reason": r.reason, "staleness": fb.staleness,
                  "logRatio": fb.info.get("log_ratio"), "stepped": fb.stepped,
                  "policyVersion": meta.get("policyVersion"), "appliedAt": _now(),
                  "replica": self.replica}
        self.state["outbox"][applied_key(r.trial_id)] = detail
        return detail

    def _matches_sample(self, r: ResultRecord, meta: dict) -> bool:
        digest = meta.get("architectureDigest")
        if digest is not None:
            return architecture_digest(r.architecture) == digest
        # sampled by a kubenas that kept no digest: compare with the trials/ document
        return _canonical(r.architecture) == _canonical(self._architecture(r.trial_id))

    def _credited(self, r: ResultRecord, meta: dict) -> ResultRecord:
        """The result as it counts for its sample: a record describing another architecture
        (a stale result under a reused prefix, a Trial adopted by a re-created Experiment)
        is a failed result naming both, never a reward credited to the wrong sample."""
        if r.extra.get("unreadable") or self._matches_sample(r, meta):
            return r   # an unreadable record is failed already; its architecture a stand-in
        sampled = self._architecture(r.trial_id)
        said = f"{r.status}" + (f": {r.reason}" if r.reason else f", reward {r.reward!r}")
        reason = (f"architecture mismatch: result for trial {r.trial_id} describes "
                  f"{_describe(r.architecture)}, sampled {_describe(sampled)}; the record "
                  f"said {said[:500]}")
        log.error("%s", reason)
        return ResultRecord(experiment=r.experiment, trial_id=r.trial_id, architecture=sampled,
                            status="failed", reason=reason, timings=r.timings,
                            extra={**r.extra, "architectureMismatch": True}, cost=r.cost)

    def credited(self, records: list[ResultRecord]) -> list[ResultRecord]:
        """The records as the search counted them, for the final outputs (leaderboard, best
        model): one describing another architecture than its sample is the failed result it
        was applied as; one for a trial this search never sampled is left out. Reads each
        trial's ``trials/`` document (all at once): for the end of a search, not the loop."""
        keys = [trial_key(r.trial_id) for r in records]
        self._prefetched = dict(zip(keys, self.store.get_many(keys)))
        out = []
        try:
            for r in records:
                try:
                    out.append(self._credited(r, {}))
                except NotFound:
                    continue
        finally:
            self._prefetched = {}
        return out

    def _apply(self, results: list[ResultRecord]) -> list[LoopEvent]:
        events = []
        for r in results:
            meta = self.pending.get(r.trial_id)
            if meta is None:
                continue  # already applied (by another replica?) or not this experiment's
            r = self._credited(r, meta)
            fb = self.strategy.tell(meta["strategyIndex"], r.reward if r.succeeded else None)
            detail = self._record_applied(r, meta, fb)
            events.append(LoopEvent("applied", trial_id=r.trial_id, reward=r.reward,
                                    status=r.status, info={
                                        "staleness": fb.staleness, "stepped": fb.stepped,
                                        "logRatio": detail["logRatio"],
                                        "reason": r.reason}))
        return events

    def _listing_start(self) -> Optional[str]:
        """Every result below the lowest unapplied index is applied: list after it."""
        lowest = self.applied_set.lowest_missing()
        return result_key(trial_id(self.experiment.name, lowest - 1)) if lowest > 0 else None

    def collect(self, timeout: float = 0.0) -> int:
        known = TrialIds(self.experiment.name, self.applied_set)
        new = self.results.poll(known, timeout=timeout, start_after=self._listing_start())
        new = [r for r in new if r.trial_id in self.pending]
        if not new:
            return 0
        # Inside the transaction the pending set is re-checked, so a result that another
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
                                   f"{len(self.applied_set)}/{self.experiment.max_trials} results")
            self.step(timeout=self.poll_interval)
        self.on_event(LoopEvent("done", info=self.summary()))
        return self.summary()

    def _refresh_if_shared(self) -> None:
        """With several replicas, pick up others' progress (new samples, applied results)."""
        if not self.shared:
            return
        try:
            etag = self.store.head(STATE_KEY)   # HEAD: no body unless it changed
        except NotFound:
            return
        if etag != self.etag:
            self._load()

    def summary(self) -> dict:
        counts, best = self.state["counts"], self.state["best"] or {}
        return {
            "experiment": self.experiment.name,
            "sampled": self.state["nextIndex"], "applied": counts["applied"],
            "succeeded": counts["succeeded"], "failed": counts["failed"],
            "bestTrial": best.get("trial"),
            "bestReward": best.get("reward"),
            "bestArchitecture": best.get("architecture"),
            "cost": self._cost_summary(),
        }

    def _cost_summary(self) -> dict:
        """The applied results' cost, counted once each with their application; results
        applied by a kubenas that kept no cost count as without one."""
        cost = dict(self.state.get("cost") or empty_cost_totals())
        applied = self.state["counts"]["applied"]
        cost["withoutCost"] += applied - cost["trials"]
        cost["trials"] = applied
        return cost
