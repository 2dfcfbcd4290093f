"""One test shape for every strategy (as NNI's test_sanity): each runs asynchronously on
toy spaces, is deterministic given its seed, resumes exactly from a JSON checkpoint, and
improves on a toy reward."""

import json
import random
import statistics

import pytest
import torch

from kubenas.contracts import Architecture
from kubenas.controller.spaces import make_space
from kubenas.controller.strategies import make_strategy

STRATEGIES = {
    "reinforce": {"learningRate": 0.02},
    "random": {},
    "evolution": {"populationSize": 8, "sampleSize": 3},
}
SPACES = {
    # a growing CNN (the plan changes every 10 samples) with a pool and strides
    "cnn": {"strides": [1, 2], "poolingAt": [2],
            "curriculum": {"startLayers": 2, "stepLayers": 1, "everySamples": 10, "maxLayers": 4}},
    "rnn_cell": {"base": 2},
}


def _reward(arch):
    """Toy reward, any space: a deterministic function of the architecture."""
    return (sum(arch.tokens) % 7) / 7


class Driver:
    """Keeps ``in_flight`` proposals outstanding and answers them in a random order;
    every seventh result is a failure."""

    def __init__(self, strategy, seed=0, in_flight=4):
        self.s, self.rng, self.in_flight = strategy, random.Random(seed), in_flight
        self.outstanding = []
        self.log = []

    def run(self, asks, tells):
        for _ in range(tells):
            while len(self.outstanding) < self.in_flight and asks > 0:
                p = self.s.ask()
                asks -= 1
                self.outstanding.append(p)
                self.log.append(("ask", p.index, p.architecture.to_json(), p.policy_version))
            if not self.outstanding:
                break
            p = self.outstanding.pop(self.rng.randrange(len(self.outstanding)))
            reward = None if p.index % 7 == 3 else _reward(p.architecture)
            fb = self.s.tell(p.index, reward)
            self.log.append(("tell", fb.index, fb.applied, fb.stepped, fb.staleness))
        return self


def _params(strategy):
    policy = getattr(strategy, "policy", None)
    return None if policy is None else [p.detach().clone() for p in policy.parameters()]


@pytest.fixture(params=sorted(STRATEGIES))
def strategy_name(request):
    return request.param


@pytest.fixture(params=sorted(SPACES))
def space_name(request):
    return request.param


def _make(strategy_name, space_name, seed=0):
    return make_strategy(strategy_name, make_space(space_name, SPACES[space_name]),
                         STRATEGIES[strategy_name], seed)


def test_sanity(strategy_name, space_name):
    s = _make(strategy_name, space_name)
    d = Driver(s).run(asks=30, tells=27)
    asks = [e for e in d.log if e[0] == "ask"]
    assert [e[1] for e in asks] == list(range(30))
    for e in asks:
        arch = Architecture.from_json(e[2])
        assert arch.space == space_name
    tells = [e for e in d.log if e[0] == "tell"]
    assert all(e[2] == (e[1] % 7 != 3) for e in tells)  # failures are not applied
    # telling an index twice raises; an index never asked is reported, not applied
    with pytest.raises(ValueError):
        s.tell(tells[0][1], 0.5)
    assert not s.tell(10 ** 6, 0.5).applied
    assert len(json.dumps(s.state_dict())) > 0


def test_deterministic_given_seed(strategy_name, space_name):
    a = Driver(_make(strategy_name, space_name, seed=1)).run(asks=25, tells=25).log
    b = Driver(_make(strategy_name, space_name, seed=1)).run(asks=25, tells=25).log
    c = Driver(_make(strategy_name, space_name, seed=2)).run(asks=25, tells=25).log
    assert a == b
    assert a != c


def test_checkpoint_round_trip_continues_exactly(strategy_name, space_name):
    original = Driver(_make(strategy_name, space_name, seed=3)).run(asks=17, tells=12)
    assert original.outstanding  # results still in flight at the checkpoint
    state = json.loads(json.dumps(original.s.state_dict()))

    # A fresh process: same experiment file (so the same seed), state from the store.
    restored_strategy = _make(strategy_name, space_name, seed=3)
    restored_strategy.load_state_dict(state)
    restored = Driver(restored_strategy)
    restored.outstanding = list(original.outstanding)
    restored.rng.setstate(original.rng.getstate())

    original.log.clear()
    original.run(asks=20, tells=24)
    restored.run(asks=20, tells=24)
    assert restored.log == original.log
    a, b = _params(original.s), _params(restored.s)
    if a is not None:
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert json.dumps(original.s.state_dict()) == json.dumps(restored.s.state_dict())


def test_restoring_overrides_the_seed(strategy_name, space_name):
    # The RNG state is part of the checkpoint: a strategy built with another seed continues
    # the original's stream after loading.
    original = Driver(_make(strategy_name, space_name, seed=4)).run(asks=8, tells=6)
    other = _make(strategy_name, space_name, seed=5)
    other.load_state_dict(json.loads(json.dumps(original.s.state_dict())))
    assert other.ask().architecture == original.s.ask().architecture


# -- learning a toy reward ---------------------------------------------------------------

TOY_SPACE = {"curriculum": {"startLayers": 3, "stepLayers": 0, "everySamples": 1, "maxLayers": 3}}
TOY_OPTIONS = {"reinforce": {"learningRate": 0.005},
               "evolution": {"populationSize": 20, "sampleSize": 5},
               "random": {}}


def _toy_run(name, seed, h, n=150):
    s = make_strategy(name, make_space("cnn", TOY_SPACE), TOY_OPTIONS[name], seed)
    rewards = []
    outstanding = []
    for _ in range(n):  # two in flight: every result arrives one sample late
        outstanding.append(s.ask())
        if len(outstanding) == 2:
            p = outstanding.pop(0)
            rewards.append(h.frac_height7(p.architecture))
            s.tell(p.index, rewards[-1])
    return rewards


def test_strategies_on_a_toy_reward(h):
    """reward = fraction of layers with filter height 7 (uniform: 0.25)."""
    seeds = range(3)
    runs = {name: [_toy_run(name, seed, h) for seed in seeds] for name in TOY_OPTIONS}
    first = {k: statistics.mean(statistics.mean(r[:30]) for r in v) for k, v in runs.items()}
    last = {k: statistics.mean(statistics.mean(r[-50:]) for r in v) for k, v in runs.items()}
    print("first 30:", first, "last 50:", last)
    # random stays at the uniform rate; the learners climb well above where they started
    assert abs(last["random"] - 0.25) < 0.1
    assert last["reinforce"] > first["reinforce"] + 0.3
    assert last["evolution"] > first["evolution"] + 0.2
    assert last["reinforce"] > last["random"] + 0.4
