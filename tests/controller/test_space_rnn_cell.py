"""The recurrent-cell tree space (§3.5): plan layout, Figure 5, NASCell, round trips."""

import random

import pytest

from kubenas.contracts import Architecture, ContractError
from kubenas.controller.spaces import make_space
from kubenas.controller.spaces.rnn_cell import RnnCellSpace

# Figure 5 of the paper (base 2).
FIGURE_5 = {
    "base": 2,
    "nodes": [{"combine": "add", "activation": "tanh"},
              {"combine": "elem_mult", "activation": "relu"},
              {"combine": "elem_mult", "activation": "sigmoid"}],
    "cell_inject": {"node": 0, "combine": "add", "activation": "relu"},
    "cell_index": 1,
}


def _nascell():
    """tf.contrib.rnn.NASCell, from /work/shared/docs/nascell.md (base 8)."""
    leaves = [("add", "sigmoid"), ("add", "relu"), ("add", "sigmoid"), ("elem_mult", "relu"),
              ("add", "tanh"), ("add", "sigmoid"), ("add", "tanh"), ("add", "sigmoid")]
    second = [("elem_mult", "tanh"), ("add", "tanh"), ("elem_mult", "tanh"), ("add", "sigmoid")]
    third = [("elem_mult", "identity"), ("add", "tanh")]
    root = [("elem_mult", "tanh")]
    nodes = [{"combine": c, "activation": a} for c, a in leaves + second + third + root]
    return {"base": 8, "nodes": nodes,
            "cell_inject": {"node": 8, "combine": "add", "activation": "tanh"},  # into b0
            "cell_index": 12}                                                   # c_t = e0


def test_paper_plan_layout():
    space = RnnCellSpace()
    plan = space.plan(0)
    assert len(plan) == 2 * 15 + 3 + 1
    assert [d.key for d in plan[:4]] == ["combine", "activation", "combine", "activation"]
    assert [d.key for d in plan[-4:]] == ["inject_node", "inject_combine", "inject_activation",
                                          "cell_index"]
    assert plan[0].choices == ("add", "elem_mult")
    assert plan[1].choices == ("identity", "tanh", "sigmoid", "relu")
    assert plan[-1].choices == tuple(range(14))  # any node but the root
    assert space.categorical_keys() == {"combine": 2, "activation": 4, "inject_node": 14,
                                        "inject_combine": 2, "inject_activation": 4,
                                        "cell_index": 14}
    assert space.plan(10 ** 6) == plan  # no curriculum


@pytest.mark.parametrize("spec", [FIGURE_5, _nascell()], ids=["figure5", "nascell"])
def test_paper_cells_encode_and_decode(spec):
    arch = Architecture.from_dict({"space": "rnn_cell", "spec": spec})
    space = RnnCellSpace({"base": spec["base"]})
    plan, actions = space.encode(arch)
    again = space.decode(plan, actions)
    assert again.spec == spec
    Architecture.from_dict(again.to_dict())


def test_figure5_tokens():
    space = RnnCellSpace({"base": 2})
    plan, actions = space.encode(Architecture(space="rnn_cell", spec=FIGURE_5))
    # (add, tanh) (elem_mult, relu) (elem_mult, sigmoid) | inject: node 0, add, relu | index 1
    assert actions == [0, 1, 1, 3, 1, 2, 0, 0, 3, 1]
    assert space.decode(plan, actions).tokens == actions


@pytest.mark.parametrize("opts", [{}, {"base": 2}, {"base": 4, "combines": ["add", "elem_mult", "max"],
                                                     "activations": ["tanh", "relu", "sin"]},
                                  {"base": 2, "combines": ["add"]}])
def test_random_cells_round_trip(opts):
    space = RnnCellSpace(opts)
    rng = random.Random(0)
    for _ in range(20):
        plan = space.plan(0)
        actions = space.random_actions(plan, rng)
        arch = space.decode(plan, actions)
        Architecture.from_dict(arch.to_dict())
        assert space.encode(arch) == (plan, actions)


def test_single_choice_lists_are_constants():
    space = RnnCellSpace({"base": 2, "combines": ["add"]})
    assert "combine" not in space.categorical_keys()
    assert len(space.plan(0)) == 3 + 2 + 1
    arch = space.decode(space.plan(0), [0] * 6)
    assert {n["combine"] for n in arch.spec["nodes"]} == {"add"}
    assert arch.spec["cell_inject"]["combine"] == "add"


def test_encode_rejects_what_the_space_cannot_express():
    with pytest.raises(ContractError, match="base"):
        RnnCellSpace({"base": 8}).encode(Architecture(space="rnn_cell", spec=FIGURE_5))
    spec = dict(FIGURE_5, nodes=[dict(n) for n in FIGURE_5["nodes"]])
    spec["nodes"][1]["activation"] = "sin"
    with pytest.raises(ContractError, match=r"nodes\[1\]\.activation"):
        RnnCellSpace({"base": 2}).encode(Architecture(space="rnn_cell", spec=spec))


@pytest.mark.parametrize("opts, where", [
    ({"base": 3}, "search.spaceOptions.base"),
    ({"combines": ["add", "concat"]}, r"search.spaceOptions.combines\[1\]"),
    ({"activation": ["tanh"]}, "search.spaceOptions.activation: unknown option"),
    ({"activations": ["tanh", "tanh"]}, "distinct"),
])
def test_bad_options_name_the_field(opts, where):
    with pytest.raises(ContractError, match=where):
        make_space("rnn_cell", opts)
