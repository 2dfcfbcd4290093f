"""The ENAS macro space: plan layout, decode/encode round trip, option checks."""

import random
import re

import pytest

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts.architecture import ENAS_OPS
from kubenas.controller.spaces import make_space


def test_plan_is_anchor_then_op_per_layer_at_a_fixed_depth():
    space = make_space("enas_macro", {"layers": 4})
    plan = space.plan(0)
    assert [d.key for d in plan] == ["anchor", "op"] * 4
    assert [d.layer for d in plan if d.kind == "anchor"] == [0, 1, 2, 3]
    assert space.plan(10 ** 6) == plan  # no curriculum: the supernet's depth is fixed
    assert space.categorical_keys() == {"op": len(ENAS_OPS)}


def test_decode_names_ops_and_skips_and_encode_inverts_it():
    space = make_space("enas_macro", {"layers": 3, "poolingAt": [1]})
    plan = space.plan()
    actions = [(), 0, (1,), 4, (1, 0), 3]
    arch = space.decode(plan, actions)
    assert arch.spec == {"channels": 16, "pooling_at": [1], "layers": [
        {"name": "layer_1", "op": "conv3x3", "skips": []},
        {"name": "layer_2", "op": "maxpool3x3", "skips": ["layer_1"]},
        {"name": "layer_3", "op": "sep_conv5x5", "skips": ["layer_1"]}]}
    again = Architecture.from_dict(arch.to_dict())  # the contract validates the spec
    assert space.encode(again) == (plan, actions)


def test_random_samples_round_trip():
    space = make_space("enas_macro", {"layers": 5, "ops": ["conv3x3", "avgpool3x3"]})
    rng = random.Random(0)
    for _ in range(20):
        actions = space.random_actions(space.plan(), rng)
        assert space.encode(space.decode(space.plan(), actions))[1] == actions


@pytest.mark.parametrize("options, field", [({"ops": ["conv7x7"]}, "ops[0]"),
                                            ({"layers": 0}, "layers"),
                                            ({"ops": ["conv3x3"], "skipConnections": False}, "")])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ContractError, match=re.escape(f"spec.search.spaceOptions{'.' + field if field else ''}")):
        make_space("enas_macro", options)


def test_contract_refuses_a_skip_to_a_later_layer():
    spec = {"channels": 8, "pooling_at": [], "layers": [
        {"name": "layer_1", "op": "conv3x3", "skips": ["layer_2"]},
        {"name": "layer_2", "op": "conv3x3", "skips": []}]}
    with pytest.raises(ContractError, match=r"layers\[0\].skips"):
        Architecture.from_dict({"space": "enas_macro", "spec": spec})


def test_without_skip_connections_only_ops_are_decided():
    space = make_space("enas_macro", {"layers": 3, "skipConnections": False,
                                      "ops": ["conv3x3", "maxpool3x3"]})
    plan = space.plan()
    assert [d.key for d in plan] == ["op"] * 3
    arch = space.decode(plan, [1, 0, 1])
    assert [(l["op"], l["skips"]) for l in arch.spec["layers"]] == [
        ("maxpool3x3", []), ("conv3x3", []), ("maxpool3x3", [])]
    assert space.encode(arch) == (plan, [1, 0, 1])
