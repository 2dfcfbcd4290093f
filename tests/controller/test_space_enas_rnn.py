"""ENAS's recurrent cell space: plan layout, decode/encode round trip, option and spec checks."""

import random

import pytest

from kubenas.contracts import Architecture, ContractError
from kubenas.controller.spaces import make_space
from kubenas.controller.strategies import make_strategy


def test_each_node_after_the_first_picks_an_earlier_node_then_an_activation():
    space = make_space("enas_rnn", {"nodes": 4})
    plan = space.plan(0)
    assert [d.key for d in plan] == ["activation", "input_2", "activation", "input_3",
                                     "activation", "input_4", "activation"]
    assert [len(d.choices) for d in plan if d.key.startswith("input")] == [1, 2, 3]
    assert space.categorical_keys() == {"input_2": 1, "input_3": 2, "input_4": 3, "activation": 4}
    assert space.plan(10 ** 6) == plan


def test_decode_names_inputs_and_activations_and_encode_inverts_it():
    space = make_space("enas_rnn", {"nodes": 3})
    plan = space.plan()
    arch = space.decode(plan, [0, 0, 1, 1, 3])
    assert arch.spec == {"nodes": [
        {"name": "node_1", "activation": "tanh"},
        {"name": "node_2", "input": "node_1", "activation": "relu"},
        {"name": "node_3", "input": "node_2", "activation": "sigmoid"}]}
    rng = random.Random(0)
    for _ in range(50):
        actions = space.random_actions(plan, rng)
        a = space.decode(plan, actions)
        assert space.encode(Architecture.from_dict(a.to_dict())) == (plan, actions)


def test_bad_options_and_specs_are_refused_naming_the_field():
    with pytest.raises(ContractError, match=r"spec\.search\.spaceOptions\.nodes"):
        make_space("enas_rnn", {"nodes": 0})
    with pytest.raises(ContractError, match=r"spec\.search\.spaceOptions\.activations"):
        make_space("enas_rnn", {"activations": ["tanh", "gelu"]})
    bad = {"nodes": [{"name": "node_1", "activation": "tanh"},
                     {"name": "node_2", "input": "node_2", "activation": "tanh"}]}
    with pytest.raises(ContractError, match=r"architecture\.spec\.nodes\[1\]\.input"):
        Architecture.from_dict({"space": "enas_rnn", "spec": bad})


def test_the_enas_strategy_runs_on_it_and_not_on_a_per_child_space():
    strategy = make_strategy("enas", make_space("enas_rnn", {"nodes": 5}), {}, seed=0)
    proposal = strategy.ask()
    assert proposal.architecture.space == "enas_rnn"
    assert len(strategy.sample_child().spec["nodes"]) == 5
    with pytest.raises(ContractError, match=r"enas_macro or enas_rnn, not in 'cnn'"):
        make_strategy("enas", make_space("cnn"), {}, seed=0)
