"""The search summary's cost: each applied result's cost counted once, with its application,
across a resume; results without a cost (or applied before costs were kept) say so."""

from __future__ import annotations

import dataclasses
import json

from kubenas.contracts import Cost, ResultRecord, TrialRequest, result_key
from kubenas.contracts.result import cost_totals
from kubenas.controller.instant import InstantExecutor, cnn_reinforce_experiment, strategy_factory
from kubenas.controller.loop import STATE_KEY, SearchLoop
from kubenas.controller.results import StoreResultSource
from kubenas.experiment import index_of
from kubenas.storage.local import LocalStore


class CostedExecutor(InstantExecutor):
    """Every trial's record costs 1 + index CPU-seconds; every third one ran on 2 GPUs and one
    in five carries no cost at all."""

    def submit(self, request: TrialRequest) -> None:
        super().submit(request)
        key, index = result_key(request.trial_id), index_of(request.trial_id)
        record = ResultRecord.from_json(self.store.get(key))
        if index % 5 != 4:
            gpus = 2 if index % 3 == 0 else 0
            record = dataclasses.replace(record, cost=Cost(
                device="cuda" if gpus else "cpu", wall_seconds=1.0 + index, gpu_count=gpus))
        self.store.delete(key)
        self.store.put_new(key, record.to_json())


def _loop(store, exp, executor) -> SearchLoop:
    return SearchLoop(exp, strategy_factory(exp), executor, StoreResultSource(store), store,
                      poll_interval=0)


def test_summary_totals_each_result_once_across_a_resume(tmp_path):
    store = LocalStore(tmp_path)
    exp = cnn_reinforce_experiment("exp", 10, layers=3)
    first = _loop(store, exp, CostedExecutor(store, 2))
    while first.summary()["applied"] < 4:
        first.step()
    second = _loop(store, exp, CostedExecutor(store, 2))   # a restarted controller
    summary = second.run()
    records = StoreResultSource(store).all()
    assert len(records) == 10
    assert summary["cost"] == cost_totals(records)
    # 0..9: GPU (x2) at 0, 3, 6, 9; none at 4, 9 -> 2*(1+4+7) GPU-s, 2+3+6+8+9 CPU-s
    assert summary["cost"] == {"trials": 10, "cpuSeconds": 28.0, "gpuSeconds": 24.0,
                               "withoutCost": 2}


def test_results_applied_before_costs_were_kept_count_as_without_one(tmp_path):
    store = LocalStore(tmp_path)
    exp = cnn_reinforce_experiment("exp", 3, layers=3)
    loop = _loop(store, exp, CostedExecutor(store, 1))
    loop.step()
    state = json.loads(store.get(STATE_KEY))
    applied = state["counts"]["applied"]
    assert applied >= 1
    del state["cost"]             # the state as a kubenas without cost accounting wrote it
    store.put(STATE_KEY, json.dumps(state).encode())
    summary = _loop(store, exp, CostedExecutor(store, 1)).run()
    assert summary["cost"]["trials"] == 3 and summary["cost"]["withoutCost"] == applied
