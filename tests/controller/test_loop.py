"""The update loop against a scripted executor: ordering, exactly-once, resume, replicas."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Optional

import pytest

from kubenas.contracts import Architecture, Executor, ResultRecord, TrialRequest, result_key
from kubenas.controller.loop import STATE_KEY, SearchLoop, architecture_digest
from kubenas.controller.results import StoreResultSource
from kubenas.controller.strategies.base import Feedback, Proposal, Strategy
from kubenas.experiment import parse_experiment
from kubenas.storage import PreconditionFailed, StorageError
from kubenas.storage.local import LocalStore

ARCH = Architecture(space="nasbench201", tokens=[0] * 6, spec={"edges": {
    e: "conv_3x3" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}})


class CountingStrategy(Strategy):
    """Records every tell; its whole state is a dict, like a real strategy's."""

    name = "random"

    def __init__(self) -> None:
        self.asked = 0
        self.told: dict[str, Optional[float]] = {}

    def ask(self) -> Proposal:
        self.asked += 1
        return Proposal(index=self.asked - 1, architecture=ARCH, policy_version=len(self.told))

    def tell(self, index: int, reward):
        if str(index) in self.told:
            raise ValueError(f"index {index} told twice")
        self.told[str(index)] = reward
        return Feedback(index=index, applied=reward is not None)

    def state_dict(self) -> dict:
        return {"asked": self.asked, "told": dict(self.told)}

    def load_state_dict(self, state: dict) -> None:
        self.asked, self.told = state["asked"], dict(state["told"])


class ShuffledExecutor(Executor):
    """Finishes submitted trials in a random order, writing their records to the store."""

    def __init__(self, store, slots: int, seed: int = 0, fail_every: int = 0) -> None:
        self.store, self.slots, self.rng = store, slots, random.Random(seed)
        self.running: list[TrialRequest] = []
        self.submits: list[str] = []
        self.fail_every = fail_every
        self.hold = False  # True: nothing finishes (children still training)

    def free_slots(self, pool=None) -> int:
        if self.hold:
            return self.slots - len(self.running)
        # Finish a random subset of what runs, in random order, before answering.
        self.rng.shuffle(self.running)
        k = self.rng.randint(0, min(1, len(self.running)))  # at most one finishes per look
        for req in self.running[:k]:
            self.finish(req)
        self.running = self.running[k:]
        return self.slots - len(self.running)

    def finish(self, req: TrialRequest) -> None:
        n = int(req.trial_id.rsplit("-", 1)[1])
        failed = self.fail_every and n % self.fail_every == 0
        rec = ResultRecord(experiment="exp", trial_id=req.trial_id, architecture=req.architecture,
                           status="failed" if failed else "succeeded",
                           reward=None if failed else n / 100.0,
                           reason="boom" if failed else None)
        self.store.put_new(result_key(req.trial_id), rec.to_json())

    def submit(self, request: TrialRequest) -> None:
        self.submits.append(request.trial_id)
        if request.trial_id not in {r.trial_id for r in self.running}:
            self.running.append(request)

    def in_flight(self) -> set[str]:
        return {r.trial_id for r in self.running}


def _exp(max_trials=20):
    return parse_experiment({"metadata": {"name": "exp"}, "spec": {
        "search": {"space": "nasbench201", "strategy": "random"},
        "budget": {"maxTrials": max_trials}}})


def test_out_of_order_results_each_applied_exactly_once(tmp_path):
    store = LocalStore(tmp_path)
    ex = ShuffledExecutor(store, slots=4, seed=1, fail_every=7)
    loop = SearchLoop(_exp(20), CountingStrategy, ex, StoreResultSource(store), store, poll_interval=0)
    summary = loop.run()
    assert summary["applied"] == 20 and summary["sampled"] == 20
    assert sorted(map(int, loop.strategy.told)) == list(range(20))
    assert summary["failed"] == 3  # trials 0, 7, 14
    assert summary["bestReward"] == pytest.approx(0.19)
    # The persisted state is the same as the in-memory one.
    state = json.loads(store.get(STATE_KEY))
    assert state["counts"]["applied"] == 20 and state["strategy"]["told"] == loop.strategy.told
    assert state["appliedRanges"] == [[0, 20]] and state["pending"] == {}
    # one create-only document per sample and per applied result
    assert store.list("trials/") == [f"trials/exp-{i:05d}.json" for i in range(20)]
    assert store.list("applied/") == [f"applied/exp-{i:05d}.json" for i in range(20)]


def test_killed_controller_resumes_without_loss_or_double_count(tmp_path):
    store = LocalStore(tmp_path)
    ex = ShuffledExecutor(store, slots=3, seed=2)
    first = SearchLoop(_exp(12), CountingStrategy, ex, StoreResultSource(store), store, poll_interval=0)
    while len(first.applied) < 5:  # run part way, then "kill" it
        first.fill()
        first.collect()
    ex.hold = True
    first.fill()  # killed while a batch is training
    in_flight_before = set(ex.in_flight())
    assert in_flight_before, "some trials must be in flight when killed"
    del first
    # A new process: same store, a fresh executor that knows nothing of what ran.
    ex2 = ShuffledExecutor(store, slots=3, seed=3)
    second = SearchLoop(_exp(12), CountingStrategy, ex2, StoreResultSource(store), store, poll_interval=0)
    assert len(second.applied) >= 5
    summary = second.run()
    assert summary["applied"] == 12
    assert sorted(map(int, second.strategy.told)) == list(range(12))
    # Unfinished trials were re-submitted (idempotently), not re-sampled under new ids.
    assert in_flight_before <= set(ex2.submits)


def test_two_replicas_share_one_state_with_compare_and_swap(tmp_path):
    store = LocalStore(tmp_path)
    loops = [SearchLoop(_exp(30), CountingStrategy, ShuffledExecutor(store, slots=2, seed=s),
                        StoreResultSource(store), store, replica=f"r{s}", poll_interval=0,
                        shared=True) for s in range(2)]
    errors = []

    def drive(loop):
        try:
            loop.run()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(lp,)) for lp in loops]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    state = json.loads(store.get(STATE_KEY))
    assert state["nextIndex"] == 30 and state["counts"]["applied"] == 30
    assert len(store.list("trials/")) == 30 and len(store.list("applied/")) == 30
    assert sorted(map(int, state["strategy"]["told"])) == list(range(30))
    details = [json.loads(store.get(k)) for k in store.list("applied/")]
    assert {a["replica"] for a in details} <= {"r0", "r1"}


def test_state_of_another_experiment_is_refused(tmp_path):
    store = LocalStore(tmp_path)
    store.put(STATE_KEY, json.dumps({"experiment": "other", "strategyName": "random"}).encode())
    with pytest.raises(RuntimeError, match="belongs to experiment 'other'"):
        SearchLoop(_exp(), CountingStrategy, ShuffledExecutor(store, 1), StoreResultSource(store), store)


class FlakyStore(LocalStore):
    """A LocalStore whose next state writes / reads can be made to misbehave:
    ``lost_answers``: that many state writes land but answer 412 (a retried PUT whose first
    attempt went through); ``outage``: that many state writes and then reads raise StorageError."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.lost_answers = 0
        self.outage = 0

    def put_if_match(self, key, data, etag):
        if key == STATE_KEY and self.outage:
            self.outage -= 1
            raise StorageError("connection refused")
        new = super().put_if_match(key, data, etag)
        if key == STATE_KEY and self.lost_answers:
            self.lost_answers -= 1
            raise PreconditionFailed("412 on the retry of a write that landed")
        return new

    def get_with_etag(self, key):
        if key == STATE_KEY and self.outage:
            self.outage -= 1
            raise StorageError("connection refused")
        return super().get_with_etag(key)


def test_resume_submits_a_sample_whose_submission_never_happened(tmp_path):
    store = LocalStore(tmp_path)
    ex = ShuffledExecutor(store, slots=2, seed=4)
    first = SearchLoop(_exp(6), CountingStrategy, ex, StoreResultSource(store), store, poll_interval=0)
    [(tid, _)] = first._transact(lambda: first._sample_round(1))  # committed... and killed
    assert tid == "exp-00000" and ex.submits == []
    ex2 = ShuffledExecutor(store, slots=2, seed=5)
    second = SearchLoop(_exp(6), CountingStrategy, ex2, StoreResultSource(store), store, poll_interval=0)
    while not second.done():                       # the in-cluster controller drives step()
        second.step()
    assert ex2.submits[0] == "exp-00000"
    assert sorted(second.applied) == [f"exp-{i:05d}" for i in range(6)]


def test_a_state_write_whose_answer_was_lost_does_not_strand_its_sample(tmp_path):
    store = FlakyStore(tmp_path)
    ex = ShuffledExecutor(store, slots=2, seed=6)
    loop = SearchLoop(_exp(8), CountingStrategy, ex, StoreResultSource(store), store, poll_interval=0)
    store.lost_answers = 1      # the first sample lands, the loop believes it lost a race
    summary = loop.run(deadline=time.monotonic() + 10)
    assert summary["applied"] == 8
    assert sorted(map(int, loop.strategy.told)) == list(range(8))
    assert sorted(set(ex.submits)) == [f"exp-{i:05d}" for i in range(8)]


def test_a_store_outage_is_ridden_out_even_while_reloading(tmp_path):
    store = FlakyStore(tmp_path)
    ex = ShuffledExecutor(store, slots=2, seed=7)
    loop = SearchLoop(_exp(8), CountingStrategy, ex, StoreResultSource(store), store, poll_interval=0)
    loop.fill()
    store.outage = 4            # a write fails, then the reloads after it fail too
    summary = loop.run(deadline=time.monotonic() + 10)
    assert store.outage == 0 and summary["applied"] == 8
    assert sorted(map(int, loop.strategy.told)) == list(range(8))


class InstantExecutor(Executor):
    """Children that are done the moment they are submitted: a slot is never busy."""

    def __init__(self, store, slots: int) -> None:
        self.store, self.slots = store, slots

    def free_slots(self, pool=None) -> int:
        return self.slots

    def submit(self, request: TrialRequest) -> None:
        n = int(request.trial_id.rsplit("-", 1)[1])
        self.store.put_new(result_key(request.trial_id), ResultRecord(
            experiment="exp", trial_id=request.trial_id, architecture=request.architecture,
            status="succeeded", reward=n / 100.0).to_json())


def test_fast_children_do_not_starve_the_policy_of_results(tmp_path):
    store = LocalStore(tmp_path)
    loop = SearchLoop(_exp(12), CountingStrategy, InstantExecutor(store, 3),
                      StoreResultSource(store), store, poll_interval=0)
    loop.run()
    # each round samples into the 3 free slots, then applies what finished meanwhile: no
    # sample comes from a policy more than one round behind
    versions = [s["policyVersion"] for _, s in sorted(loop.sampled.items())]
    assert versions == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9, 9, 9]


OTHER = Architecture(space="nasbench201", tokens=[1] * 6, spec={"edges": {
    e: "skip_connect" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}})


class StaleExecutor(ShuffledExecutor):
    """Trial ``stale`` finishes with a record describing another architecture (a child of an
    adopted Trial of a re-created Experiment), and the best reward of all."""

    stale = "exp-00002"

    def finish(self, req: TrialRequest) -> None:
        if req.trial_id != self.stale:
            return super().finish(req)
        self.store.put_new(result_key(req.trial_id), ResultRecord(
            experiment="exp", trial_id=req.trial_id, architecture=OTHER, status="succeeded",
            reward=0.99).to_json())


def test_a_result_describing_another_architecture_is_a_failed_result_applied_once(tmp_path):
    store = LocalStore(tmp_path)
    loop = SearchLoop(_exp(8), CountingStrategy, StaleExecutor(store, slots=3, seed=8),
                      StoreResultSource(store), store, poll_interval=0)
    summary = loop.run(deadline=time.monotonic() + 10)
    assert summary["applied"] == 8 and summary["failed"] == 1
    assert summary["bestTrial"] != "exp-00002" and summary["bestReward"] == pytest.approx(0.07)
    assert loop.strategy.told["2"] is None, "the strategy is told a failure, not 0.99"
    doc = json.loads(store.get("applied/exp-00002.json"))
    assert doc["status"] == "failed" and doc["reward"] is None
    assert doc["reason"].startswith("architecture mismatch: result for trial exp-00002 describes "
                                    f"nasbench201 {architecture_digest(OTHER)} (tokens [1, 1,")
    assert f"sampled nasbench201 {architecture_digest(ARCH)} (tokens [0, 0," in doc["reason"]
    assert doc["reason"].endswith("the record said succeeded, reward 0.99")
    # A restarted controller finds it applied: never applied (or counted) a second time.
    again = SearchLoop(_exp(8), CountingStrategy, ShuffledExecutor(store, slots=3),
                       StoreResultSource(store), store, poll_interval=0)
    assert again.run(deadline=time.monotonic() + 10) == summary


def test_a_sample_without_a_digest_is_compared_with_its_trials_document(tmp_path):
    store = LocalStore(tmp_path)
    loop = SearchLoop(_exp(2), CountingStrategy, ShuffledExecutor(store, slots=2),
                      StoreResultSource(store), store, poll_interval=0)
    loop._transact(lambda: loop._sample_round(2))
    for meta in loop.pending.values():     # as sampled by a kubenas that kept no digest
        del meta["architectureDigest"]
    same, other = (ResultRecord(experiment="exp", trial_id=f"exp-0000{i}", architecture=a,
                                status="succeeded", reward=0.5) for i, a in ((0, ARCH), (1, OTHER)))
    assert loop._credited(same, loop.pending["exp-00000"]) is same
    refused = loop._credited(other, loop.pending["exp-00001"])
    assert refused.status == "failed" and refused.architecture == ARCH
    assert "architecture mismatch: result for trial exp-00001" in refused.reason


def test_the_final_outputs_count_results_as_the_search_applied_them(tmp_path):
    store = LocalStore(tmp_path)
    loop = SearchLoop(_exp(8), CountingStrategy, StaleExecutor(store, slots=3, seed=8),
                      StoreResultSource(store), store, poll_interval=0)
    loop.run(deadline=time.monotonic() + 10)
    store.put_new(result_key("exp-00099"), ResultRecord(     # a trial this search never sampled
        experiment="exp", trial_id="exp-00099", architecture=ARCH, status="succeeded",
        reward=0.5).to_json())
    records = {r.trial_id: r for r in loop.credited(StoreResultSource(store).all())}
    assert sorted(records) == [f"exp-{i:05d}" for i in range(8)]
    assert records["exp-00002"].status == "failed" and records["exp-00002"].architecture == ARCH
    assert records["exp-00002"].reason.startswith("architecture mismatch: ")
    assert max((r for r in records.values() if r.succeeded), key=lambda r: r.reward).trial_id == "exp-00007"
