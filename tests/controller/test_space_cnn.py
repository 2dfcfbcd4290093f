"""The CNN macro space: choice lists, plan layout, curriculum, pooling, decode/encode."""

import random

import pytest

from kubenas.contracts import Architecture, ContractError
from kubenas.controller.spaces import make_space
from kubenas.controller.spaces.base import flatten_actions, unflatten_tokens
from kubenas.controller.spaces.cnn import CnnSpace


def test_paper_choice_lists_and_layer_order():
    space = CnnSpace()
    assert space.categorical_keys() == {"filter_height": 4, "filter_width": 4, "num_filters": 4}
    plan = space.plan(0)
    assert [d.key for d in plan[:8]] == ["anchor", "filter_height", "filter_width", "num_filters"] * 2
    by_key = {d.key: d.choices for d in plan if d.kind == "categorical"}
    assert by_key == {"filter_height": (1, 3, 5, 7), "filter_width": (1, 3, 5, 7),
                      "num_filters": (24, 36, 48, 64)}
    assert [d.layer for d in plan if d.kind == "anchor"] == [0, 1, 2, 3, 4, 5]


def test_strides_become_decisions_only_with_several_choices():
    space = CnnSpace({"strides": [1, 2, 3]})
    assert [d.key for d in space.plan(0)[:6]] == [
        "anchor", "filter_height", "filter_width", "stride_height", "stride_width", "num_filters"]
    assert space.categorical_keys()["stride_height"] == 3
    assert len(space.plan(0)) == 6 * 6


@pytest.mark.parametrize("num_sampled, depth", [(0, 6), (1599, 6), (1600, 8), (3199, 8),
                                                (3200, 10), (8000, 15), (10 ** 6, 15)])
def test_depth_curriculum(num_sampled, depth):
    space = CnnSpace()
    plan = space.plan(num_sampled)
    assert sum(d.kind == "anchor" for d in plan) == depth
    assert len(plan) == 4 * depth


def test_curriculum_is_configurable():
    space = CnnSpace({"curriculum": {"startLayers": 2, "stepLayers": 3, "everySamples": 10,
                                     "maxLayers": 7}})
    assert [space.depth(n) for n in (0, 9, 10, 20, 30, 1000)] == [2, 2, 5, 7, 7, 7]


def _random_arch(space, n=0, seed=0):
    plan = space.plan(n)
    actions = space.random_actions(plan, random.Random(seed))
    return plan, actions, space.decode(plan, actions)


@pytest.mark.parametrize("opts", [{}, {"strides": [1, 2, 3]}, {"poolingAt": [2, 4]},
                                  {"skipConnections": False, "poolingAt": [3]},
                                  {"numFilters": [6, 12, 24, 36], "poolKernel": 3}])
def test_decode_validates_and_encode_inverts(opts):
    space = CnnSpace(opts)
    for seed in range(20):
        plan, actions, arch = _random_arch(space, n=1600 * (seed % 3), seed=seed)
        Architecture.from_dict(arch.to_dict())  # the contract's own validator
        assert arch.tokens == flatten_actions(actions)
        assert unflatten_tokens(plan, arch.tokens) == actions
        plan2, actions2 = space.encode(arch)
        assert plan2 == plan and actions2 == actions
        assert space.decode(plan2, actions2).to_dict() == arch.to_dict()


def test_inputs_follow_the_anchor_bits():
    space = CnnSpace({"curriculum": {"startLayers": 4, "stepLayers": 0, "everySamples": 1,
                                     "maxLayers": 4}})
    plan = space.plan(0)
    acts = []
    bits = [(), (0,), (1, 1), (0, 0, 1)]
    for i in range(4):
        acts += [bits[i], 3, 0, 1]   # height 7, width 1, 36 filters
    layers = space.decode(plan, acts).spec["layers"]
    assert [l["inputs"] for l in layers] == [["input"], ["input"], ["layer_1", "layer_2"], ["layer_3"]]
    assert layers[0] == {"name": "layer_1", "type": "conv", "inputs": ["input"], "filter_height": 7,
                         "filter_width": 1, "stride_height": 1, "stride_width": 1, "num_filters": 36}


def test_pools_follow_their_layers_and_replace_them_downstream():
    space = CnnSpace({"poolingAt": [2, 5], "poolKernel": 3, "poolStride": 2,
                      "curriculum": {"startLayers": 4, "stepLayers": 0, "everySamples": 1,
                                     "maxLayers": 4}})
    plan = space.plan(0)
    acts = []
    bits = [(), (1,), (1, 1), (1, 1, 1)]
    for i in range(4):
        acts += [bits[i], 0, 0, 0]
    layers = space.decode(plan, acts).spec["layers"]
    assert [l["name"] for l in layers] == ["layer_1", "layer_2", "pool_1", "layer_3", "layer_4"]
    assert layers[2] == {"name": "pool_1", "type": "maxpool", "inputs": ["layer_2"],
                         "filter_height": 3, "filter_width": 3, "stride_height": 2, "stride_width": 2}
    assert layers[3]["inputs"] == ["layer_1", "pool_1"]
    assert layers[4]["inputs"] == ["layer_1", "pool_1", "layer_3"]
    # at depth 4 the pool after layer 5 does not exist
    assert sum(l["type"] == "maxpool" for l in layers) == 1


def test_without_skip_connections_layers_form_a_chain():
    space = CnnSpace({"skipConnections": False})
    plan = space.plan(0)
    assert all(d.kind == "categorical" for d in plan) and len(plan) == 18
    layers = space.decode(plan, [0] * 18).spec["layers"]
    assert [l["inputs"] for l in layers] == [["input"]] + [[f"layer_{i}"] for i in range(1, 6)]


def test_encode_rejects_what_the_space_cannot_express():
    space = CnnSpace()
    _, _, arch = _random_arch(space)
    doc = arch.to_dict()
    doc["spec"]["layers"][0]["filter_height"] = 2
    with pytest.raises(ContractError, match=r"layers\[0\]\.filter_height"):
        space.encode(Architecture.from_dict(doc))
    doc = arch.to_dict()
    doc["spec"]["layers"][1]["stride_height"] = 2
    with pytest.raises(ContractError, match="stride_height"):
        space.encode(Architecture.from_dict(doc))
    doc = arch.to_dict()
    doc["spec"]["layers"][2]["inputs"] = ["input", "layer_1"]
    with pytest.raises(ContractError, match="inputs"):
        space.encode(Architecture.from_dict(doc))
    with pytest.raises(ContractError, match="space"):
        space.encode(Architecture(space="rnn_cell", spec={}))


def test_encode_accepts_empty_inputs_as_the_image():
    space = CnnSpace()
    plan, actions, arch = _random_arch(space)
    doc = arch.to_dict()
    for l in doc["spec"]["layers"]:
        if l["inputs"] == ["input"]:
            l["inputs"] = []
    assert space.encode(Architecture.from_dict(doc)) == (plan, actions)


@pytest.mark.parametrize("opts, where", [
    ({"filterHeigths": [1]}, "search.spaceOptions.filterHeigths: unknown option"),
    ({"numFilters": [24, 0]}, r"search.spaceOptions.numFilters\[1\]"),
    ({"strides": []}, "search.spaceOptions.strides"),
    ({"filterWidths": "3"}, "search.spaceOptions.filterWidths: must be a list"),
    ({"curriculum": {"maxLayer": 3}}, "search.spaceOptions.curriculum.maxLayer: unknown option"),
    ({"curriculum": {"startLayers": 8, "maxLayers": 4}}, "curriculum.maxLayers"),
    ({"skipConnections": "yes"}, "skipConnections"),
])
def test_bad_options_name_the_field(opts, where):
    with pytest.raises(ContractError, match=where):
        make_space("cnn", opts)
