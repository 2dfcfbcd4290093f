"""Children that finish the moment they are submitted, through the real result path.

``InstantExecutor.submit`` writes the trial's result record create-only to
``results/<trial_id>.json`` as a child would, with a reward that is a pure function of the
architecture's tokens. With ``StoreResultSource`` it drives the search loop at full speed
against a real store: what is left is the controller's own cost per result (state writes,
listings, reads), which ``benchmarks/controller_cost.py`` measures and the tests bound.
``corrupt`` names trial indices whose record is written broken instead (bad JSON types),
to exercise "an unreadable record is a failed result".
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from kubenas.contracts import Executor, ResultRecord, TrialRequest, result_key
from kubenas.controller.spaces import make_space
from kubenas.controller.strategies import make_strategy
from kubenas.experiment import Experiment, index_of, parse_experiment
from kubenas.storage import AlreadyExists, ObjectStore

# A record every field of which has the wrong type: it must become a failed result.
CORRUPT_RECORD = b'{"experiment": 1, "trial_id": "x", "architecture": {}, "status": "ok", ' \
                 b'"reward": [1], "timings": 5}'


def token_reward(tokens: Iterable) -> float:
    """A deterministic reward in [0, 1) from an architecture's tokens."""
    flat = [int(b) for t in tokens for b in (t if isinstance(t, (list, tuple)) else [t])]
    return (sum((i + 1) * v for i, v in enumerate(flat)) % 997) / 997.0


class InstantExecutor(Executor):
    def __init__(self, store: ObjectStore, slots: int, corrupt: Iterable[int] = ()) -> None:
        self.store, self.slots, self.corrupt = store, slots, set(corrupt)
        self.submits = 0

    def free_slots(self, pool: Optional[str] = None) -> int:
        return self.slots

    def submit(self, request: TrialRequest) -> None:
        self.submits += 1
        tid = request.trial_id
        if index_of(tid) in self.corrupt:
            data = CORRUPT_RECORD
        else:
            data = ResultRecord(experiment=tid.rpartition("-")[0], trial_id=tid,
                                architecture=request.architecture, status="succeeded",
                                reward=token_reward(request.architecture.tokens)).to_json()
        try:
            self.store.put_new(result_key(tid), data)
        except AlreadyExists:
            pass  # a re-submission after a resume: the first result stands


def cnn_reinforce_experiment(name: str, trials: int, layers: int = 15,
                             seed: int = 0) -> Experiment:
    """The paper's CNN space at a fixed depth (no curriculum: every trial costs the same)
    searched by REINFORCE with its defaults."""
    return parse_experiment({"metadata": {"name": name}, "spec": {
        "search": {"space": "cnn", "strategy": "reinforce", "seed": seed, "spaceOptions": {
            "curriculum": {"startLayers": layers, "stepLayers": 0, "everySamples": 1,
                           "maxLayers": layers}}},
        "budget": {"maxTrials": trials}}})


def strategy_factory(exp: Experiment) -> Callable:
    def factory():
        return make_strategy(exp.strategy, make_space(exp.space, exp.space_options),
                             exp.strategy_options, exp.seed)
    return factory
