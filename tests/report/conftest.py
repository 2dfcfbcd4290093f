"""Small real searches for the report's tests: the real loop, strategy and store, children
that answer at once with a record a trained child would write (metrics, parameters, cost)."""

from __future__ import annotations

import dataclasses

import pytest

from kubenas.contracts import Cost, EpochMetrics, ResultRecord, TrialRequest, result_key
from kubenas.controller.instant import InstantExecutor, strategy_factory, token_reward
from kubenas.controller.loop import SearchLoop
from kubenas.controller.results import StoreResultSource
from kubenas.experiment import index_of, parse_experiment
from kubenas.storage.local import LocalStore

TRIALS = 24
FAILING = 5   # every fifth trial fails, as a child that could not be built would


class TrainedLikeExecutor(InstantExecutor):
    def submit(self, request: TrialRequest) -> None:
        tid, index = request.trial_id, index_of(request.trial_id)
        reward = token_reward(request.architecture.tokens)
        common = dict(experiment=tid.rpartition("-")[0], trial_id=tid,
                      architecture=request.architecture,
                      cost=Cost(device="cpu", wall_seconds=2.0 + index % 3))
        if index % FAILING == FAILING - 1:
            record = ResultRecord(status="failed", reason=f"<b>layer_2</b> too big in {tid}",
                                  **common)
        else:
            record = ResultRecord(status="succeeded", reward=reward, extra={"params": 1000 + index},
                                  metrics=[EpochMetrics(epoch=1, train_loss=1.0, val_acc=reward)],
                                  timings={"train_seconds": 1.5}, **common)
        self.store.put_new(result_key(tid), record.to_json())


def run_search(store, name: str, strategy: str):
    """A finished search of TRIALS trials by ``strategy`` in ``store``."""
    exp = parse_experiment({"metadata": {"name": name}, "spec": {
        "search": {"space": "cnn", "strategy": strategy, "seed": 3, "spaceOptions": {
            "filterHeights": [1, 3, 5], "filterWidths": [1, 3], "numFilters": [8, 16],
            "curriculum": {"startLayers": 4, "stepLayers": 0, "everySamples": 1,
                           "maxLayers": 4}}},
        "budget": {"maxTrials": TRIALS}}})
    SearchLoop(exp, strategy_factory(exp), TrainedLikeExecutor(store, 2),
               StoreResultSource(store), store, poll_interval=0).run()
    return store


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """(workdir of a REINFORCE search, workdir of a random search of the same space)."""
    root = tmp_path_factory.mktemp("runs")
    run_search(LocalStore(root / "tiny" / "store"), "tiny", "reinforce")
    run_search(LocalStore(root / "tiny-random" / "store"), "tiny-random", "random")
    return root / "tiny", root / "tiny-random"
