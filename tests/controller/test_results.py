"""Reading results: broken records become failed results once; polls touch only what is new."""

from __future__ import annotations

import json

import pytest

from kubenas.contracts import Architecture, ContractError, ResultRecord, result_key
from kubenas.contracts.result import REWARD_LIMIT, UNKNOWN_ARCHITECTURE
from kubenas.controller.instant import InstantExecutor, cnn_reinforce_experiment, strategy_factory
from kubenas.controller.ledger import IndexSet, TrialIds
from kubenas.controller.loop import SearchLoop
from kubenas.controller.results import StoreResultSource, trial_key
from kubenas.storage.local import LocalStore

ARCH = Architecture(space="nasbench201", tokens=[0] * 6, spec={"edges": {
    e: "conv_3x3" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}})


def _record(tid, **fields) -> bytes:
    doc = ResultRecord(experiment="exp", trial_id=tid, architecture=ARCH, status="succeeded",
                       reward=0.5).to_dict()
    doc.update(fields)
    return json.dumps(doc).encode()


BROKEN = {
    "reward_is_a_list": _record("exp-00000", reward=[1]),
    "timings_is_a_number": _record("exp-00001", timings=5),
    "truncated": _record("exp-00002")[:40],
    "reward_not_finite": _record("exp-00003").replace(b'"reward": 0.5', b'"reward": NaN'),
    "reward_absurd": _record("exp-00004", reward=1e308),
    "reward_is_a_bool": _record("exp-00005", reward=True),
    "metrics_are_numbers": _record("exp-00006", metrics=[1, 2]),
    "status_unknown": _record("exp-00007", status="done"),
    "other_trial_inside": _record("exp-00099"),
    "not_utf8": b"\xff\xfe{",
    "not_a_mapping": b"[1, 2]",
    "extra_is_a_string": _record("exp-00011", extra="x"),
}


def test_every_kind_of_broken_record_is_a_failed_result_for_its_key(tmp_path):
    store = LocalStore(tmp_path)
    keys = {}
    for i, (name, data) in enumerate(BROKEN.items()):
        keys[f"exp-{i:05d}"] = name
        store.put_new(result_key(f"exp-{i:05d}"), data)
    store.put_new(trial_key("exp-00000"), json.dumps({"architecture": ARCH.to_dict()}).encode())
    got = {r.trial_id: r for r in StoreResultSource(store).poll(set())}
    assert sorted(got) == sorted(keys)
    for tid, r in got.items():
        assert r.status == "failed" and r.reward is None, keys[tid]
        assert r.reason.startswith(f"unreadable result record results/{tid}.json: "), r.reason
    assert "reward: must be a number" in got["exp-00000"].reason
    assert "timings: must be a mapping" in got["exp-00001"].reason
    assert "not valid JSON" in got["exp-00002"].reason
    assert f"within +-{REWARD_LIMIT:g}" in got["exp-00004"].reason
    # the architecture comes from the trial's own document when there is one
    assert got["exp-00000"].architecture == ARCH
    assert got["exp-00001"].architecture == UNKNOWN_ARCHITECTURE


def test_the_contract_refuses_wrong_types_with_the_field_named():
    with pytest.raises(ContractError, match=r"result\.reward: must be a number or null, got list"):
        ResultRecord.from_json(_record("t", reward=[1]))
    with pytest.raises(ContractError, match=r"result\.timings: must be a mapping, got int"):
        ResultRecord.from_json(_record("t", timings=5))
    with pytest.raises(ContractError, match="within"):
        ResultRecord.from_json(_record("t", reward=-2e6))
    assert ResultRecord.from_json(_record("t", reward=REWARD_LIMIT)).reward == REWARD_LIMIT
    assert ResultRecord.from_json(_record("t", reward=1)).reward == 1.0  # an int is a number


def test_corrupted_records_are_applied_once_as_failures_and_the_search_finishes(tmp_path):
    store = LocalStore(tmp_path)
    exp = cnn_reinforce_experiment("exp", 30, layers=4)
    corrupt = [0, 7, 8, 29]
    loop = SearchLoop(exp, strategy_factory(exp), InstantExecutor(store, 6, corrupt=corrupt),
                      StoreResultSource(store), store, poll_interval=0)
    events = []
    loop.on_event = events.append
    summary = loop.run()
    assert summary["applied"] == 30 and summary["failed"] == 4
    failed = sorted(e.trial_id for e in events if e.kind == "applied" and e.status == "failed")
    assert failed == [f"exp-{i:05d}" for i in corrupt]          # each once
    assert all("unreadable result record" in e.info["reason"]
               for e in events if e.status == "failed")
    assert loop.strategy.version == 26                           # no gradient from failures


class CountingStore(LocalStore):
    def __init__(self, root):
        super().__init__(root)
        self.gets, self.listings = [], []

    def get_with_etag(self, key):
        self.gets.append(key)
        return super().get_with_etag(key)

    def list(self, prefix="", start_after=None):
        keys = super().list(prefix, start_after)
        self.listings.append((prefix, start_after, len(keys)))
        return keys


def test_the_loop_lists_after_what_is_applied_and_reads_each_record_once(tmp_path):
    store = CountingStore(tmp_path)
    exp = cnn_reinforce_experiment("exp", 60, layers=4)
    SearchLoop(exp, strategy_factory(exp), InstantExecutor(store, 5), StoreResultSource(store),
               store, poll_interval=0).run()
    result_gets = [k for k in store.gets if k.startswith("results/")]
    assert sorted(result_gets) == [result_key(f"exp-{i:05d}") for i in range(60)]
    listings = [(after, n) for prefix, after, n in store.listings if prefix == "results/"]
    assert listings[0] == (None, 0)
    # once results are applied, a poll starts after the last of the contiguous prefix and
    # sees only the round in flight: never more than the 5 slots
    assert all(n <= 5 for _, n in listings)
    assert (result_key("exp-00054"), 5) in listings


def test_a_poll_forgets_records_once_they_are_known_applied(tmp_path):
    store = LocalStore(tmp_path)
    for i in range(4):
        store.put_new(result_key(f"exp-{i:05d}"), _record(f"exp-{i:05d}"))
    source = StoreResultSource(store)
    assert len(source.poll(set())) == 4
    applied = IndexSet([[0, 3]])
    assert [r.trial_id for r in source.poll(TrialIds("exp", applied))] == ["exp-00003"]
    assert list(source._waiting) == ["exp-00003"]   # memory follows what is in flight


def test_the_operator_reads_a_broken_record_as_the_same_failed_result(tmp_path):
    # the operator ends the Trial on it (Failed, with the reason) instead of requeueing it
    # forever as unreadable; the controller applies the same failure
    from kubenas.operator.results import read_result

    store = LocalStore(tmp_path)
    assert read_result(store, "exp-00000") is None
    store.put_new(result_key("exp-00000"), BROKEN["reward_is_a_list"])
    store.put_new(result_key("exp-00001"), _record("exp-00001"))
    got = read_result(store, "exp-00000", architecture=ARCH.to_dict())
    assert got.status == "failed" and got.architecture == ARCH
    assert got.reason == StoreResultSource(store).poll(set())[0].reason
    assert read_result(store, "exp-00001").reward == 0.5
