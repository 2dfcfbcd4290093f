"""A trial the executor can never run (TrialRefused: a Trial of its name left by an earlier
Experiment) becomes a failed result with the executor's reason: applied once, never credited
with the other trial's result, and the search still reaches its budget.

Real LocalStore; InstantExecutor writes each result the moment a trial is submitted."""

from __future__ import annotations

import json

from kubenas.contracts import ResultRecord, TrialRefused, TrialRequest, result_key
from kubenas.controller.instant import InstantExecutor, cnn_reinforce_experiment, strategy_factory
from kubenas.controller.loop import SearchLoop
from kubenas.controller.results import StoreResultSource
from kubenas.storage.local import LocalStore


class RefusesSome(InstantExecutor):
    def __init__(self, store, slots, refuse):
        super().__init__(store, slots)
        self.refuse, self.refused = set(refuse), []

    def submit(self, request: TrialRequest) -> None:
        if request.trial_id in self.refuse:
            self.refused.append(request.trial_id)
            raise TrialRefused(f"trial {request.trial_id}: left by an earlier Experiment")
        super().submit(request)


def test_a_refused_trial_is_a_failed_result_with_the_reason_and_the_search_goes_on(tmp_path):
    store = LocalStore(tmp_path)
    exp = cnn_reinforce_experiment("exp", 6, layers=3)
    executor = RefusesSome(store, 2, refuse={"exp-00001", "exp-00004"})
    summary = SearchLoop(exp, strategy_factory(exp), executor, StoreResultSource(store), store,
                         poll_interval=0).run()
    assert summary["applied"] == 6 and summary["failed"] == 2 and summary["succeeded"] == 4
    assert executor.refused == ["exp-00001", "exp-00004"], "refused once each, not retried"
    record = ResultRecord.from_json(store.get(result_key("exp-00001")))
    assert record.status == "failed"
    assert record.reason == "trial exp-00001: left by an earlier Experiment"
    sampled = json.loads(store.get("trials/exp-00001.json"))["architecture"]
    assert record.architecture.to_dict() == sampled, "the failure is the sample's own"
