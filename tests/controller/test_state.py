"""The controller state at scale: flat size, per-trial objects, crash windows, old versions.

Driven by ``InstantExecutor`` (results written to a real LocalStore the moment a trial is
submitted) and ``StoreResultSource``: the whole result path, no training."""

from __future__ import annotations

import json

import pytest

from kubenas.controller.instant import InstantExecutor, cnn_reinforce_experiment, strategy_factory
from kubenas.controller.ledger import IndexSet
from kubenas.controller.loop import STATE_KEY, STATE_VERSION, SearchLoop
from kubenas.controller.results import StoreResultSource
from kubenas.storage.local import LocalStore


def _loop(store, exp, slots=20, corrupt=()):
    ex = InstantExecutor(store, slots, corrupt=corrupt)
    return SearchLoop(exp, strategy_factory(exp), ex, StoreResultSource(store), store,
                      poll_interval=0)


def test_state_size_does_not_grow_with_the_number_of_trials(tmp_path):
    sizes = {}
    for n in (100, 1000):
        store = LocalStore(tmp_path / str(n))
        summary = _loop(store, cnn_reinforce_experiment("exp", n, layers=6), slots=50).run()
        assert summary["applied"] == n
        sizes[n] = len(store.get(STATE_KEY))
        assert len(store.list("trials/")) == n and len(store.list("applied/")) == n
    assert sizes[1000] <= 2_000_000
    assert abs(sizes[1000] - sizes[100]) < 2_000, sizes   # flat: no per-trial entries
    state = json.loads(store.get(STATE_KEY))
    assert state["appliedRanges"] == [[0, 1000]] and state["pending"] == {}
    # the last batch's documents stay in the state until the next commit; they are stored
    assert all(store.exists(k) for k in state["outbox"])


def test_each_applied_document_says_how_its_result_was_applied(tmp_path):
    store = LocalStore(tmp_path)
    loop = _loop(store, cnn_reinforce_experiment("exp", 30, layers=4), slots=10)
    summary = loop.run()
    docs = [json.loads(store.get(k)) for k in store.list("applied/")]
    assert [d["trial_id"] for d in docs] == [f"exp-{i:05d}" for i in range(30)]
    assert all(d["status"] == "succeeded" and d["replica"] == "0" for d in docs)
    # samples made before the last policy steps are stale; their log-ratio is kept
    stale = [d for d in docs if d["staleness"] > 0]
    assert stale and all(isinstance(d["logRatio"], float) for d in docs)
    assert sum(d["stepped"] for d in docs) == loop.strategy.version == 30  # m = G = 1
    best = max(docs, key=lambda d: d["reward"])
    assert (summary["bestTrial"], summary["bestReward"]) == (best["trial_id"], best["reward"])
    assert summary["bestArchitecture"] == json.loads(
        store.get(f"trials/{best['trial_id']}.json"))["architecture"]
    # the mapping views read the same documents
    assert loop.applied[best["trial_id"]] == best and len(loop.sampled) == 30


class Killed(BaseException):
    """The process dies here (not an error anything may catch)."""


class KillOnNthWrite(LocalStore):
    """Dies on the ``nth`` create-only write of a key under ``prefix``."""

    def __init__(self, root, prefix, nth):
        super().__init__(root)
        self.prefix, self.nth, self.seen = prefix, nth, 0

    def put_new(self, key, data):
        if key.startswith(self.prefix):
            self.seen += 1
            if self.seen == self.nth:
                raise Killed(key)
        return super().put_new(key, data)


@pytest.mark.parametrize("prefix", ["trials/", "applied/"])
def test_a_kill_between_the_commit_and_its_documents_loses_nothing(tmp_path, prefix):
    """The state committed a batch; the controller died writing the batch's per-trial
    documents. The next one writes them from the state, applies every result once."""
    exp = cnn_reinforce_experiment("exp", 40, layers=4)
    first = _loop(KillOnNthWrite(tmp_path, prefix, 15), exp, slots=8, corrupt=[5, 17])
    with pytest.raises(Killed):
        first.run()
    committed = json.loads(LocalStore(tmp_path).get(STATE_KEY))
    assert committed["outbox"], "the kill must leave committed documents unwritten"

    store = LocalStore(tmp_path)
    second = _loop(store, exp, slots=8, corrupt=[5, 17])
    assert all(store.exists(k) for k in committed["outbox"])  # written on load
    summary = second.run()
    assert summary["applied"] == 40 and summary["failed"] == 2
    assert len(store.list("trials/")) == 40 and len(store.list("applied/")) == 40
    # optimizer steps = succeeded rewards / (m*G): no result told twice or lost
    assert second.strategy.version == summary["succeeded"] == 38
    failed = [json.loads(store.get(f"applied/exp-{i:05d}.json")) for i in (5, 17)]
    assert all(d["status"] == "failed" and "unreadable result record" in d["reason"]
               for d in failed)


def test_a_state_write_that_never_landed_leaves_no_trial_documents(tmp_path):
    class RefusingState(LocalStore):
        def put_if_match(self, key, data, etag):
            raise Killed(key)

    exp = cnn_reinforce_experiment("exp", 10, layers=4)
    with pytest.raises(Killed):
        _loop(RefusingState(tmp_path), exp).run()
    assert LocalStore(tmp_path).list() == []


def test_a_state_of_another_version_is_refused_with_what_to_do(tmp_path):
    store = LocalStore(tmp_path)
    store.put(STATE_KEY, json.dumps({"version": 1, "experiment": "exp",
                                     "strategyName": "reinforce", "sampled": {}}).encode())
    with pytest.raises(RuntimeError, match=rf"version 1, this kubenas reads version "
                                           rf"{STATE_VERSION}.*new experiment name"):
        _loop(store, cnn_reinforce_experiment("exp", 10, layers=4))


def test_index_set_keeps_ranges_merged():
    s = IndexSet()
    for i in (3, 1, 0, 5, 2, 4, 9):
        s.add(i)
    assert s.ranges() == [[0, 6], [9, 10]] and len(s) == 7
    assert s.lowest_missing() == 6 and 9 in s and 7 not in s and "3" not in s
    assert list(IndexSet(s.ranges())) == [0, 1, 2, 3, 4, 5, 9]
    s.add(3)
    assert len(s) == 7
    assert IndexSet().lowest_missing() == 0 and IndexSet([[2, 4]]).lowest_missing() == 0
    with pytest.raises(ValueError, match="sorted and disjoint"):
        IndexSet([[0, 3], [2, 5]])


def test_a_replica_that_loses_the_race_redoes_its_round_on_the_winners_state(tmp_path):
    store = LocalStore(tmp_path)
    exp = cnn_reinforce_experiment("exp", 24, layers=4)
    a, b = (SearchLoop(exp, strategy_factory(exp), InstantExecutor(store, 4),
                       StoreResultSource(store), store, replica=r, poll_interval=0, shared=True)
            for r in ("a", "b"))
    events = []
    b.on_event = events.append
    assert a.fill() == 4                  # a commits samples 0-3; b still holds the empty state
    assert b.fill() == 4                  # b's write loses, it reloads and samples 4-7
    assert [e.kind for e in events][:1] == ["conflict"]
    assert sorted(b.pending) == [f"exp-{i:05d}" for i in range(8)]
    owners = {json.loads(store.get(f"trials/exp-{i:05d}.json"))["replica"] for i in range(8)}
    assert owners == {"a", "b"}
    while not (a.done() and b.done()):
        a.step()
        b.step()
    summary = b.summary()
    assert summary["applied"] == 24 and len(store.list("applied/")) == 24
    # every reward told once: 24 optimizer steps in the committed state (m = G = 1)
    assert json.loads(store.get(STATE_KEY))["strategy"]["version"] == 24
