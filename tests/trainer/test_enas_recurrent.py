"""The enas_rnn supernet language model: a path's output is a standalone child's with the
same weights; a step trains only the path's edges; the child exports as TorchScript."""

import random

import pytest
import torch

from kubenas.controller.spaces import make_space
from kubenas.trainer.builders.language_model import build_language_model, build_lm_supernet
from kubenas.trainer.enas.language import lm_shared_step
from kubenas.trainer.enas.recurrent import extract, set_lm_path
from kubenas.trainer.errors import ArchitectureError
from kubenas.trainer.lm_config import LMConfig

CFG = LMConfig(embedding_size=12, hidden_size=12, layers=2, dropout=0.0, recurrent_dropout=0.0,
               tie_weights=True)
SPACE = make_space("enas_rnn", {"nodes": 5})


def _cells(n, seed=0):
    rng, plan = random.Random(seed), SPACE.plan()
    return [SPACE.decode(plan, SPACE.random_actions(plan, rng)) for _ in range(n)]


def _child(arch):
    return build_language_model(arch, 50, CFG)


def test_a_path_equals_the_standalone_child_with_its_weights():
    torch.manual_seed(0)
    net = build_lm_supernet(5, 50, CFG).eval()
    tokens = torch.randint(0, 50, (6, 3))
    outs = []
    for arch in _cells(6):
        set_lm_path(net, arch)
        child = extract(net, arch, _child).eval()
        assert torch.allclose(net(tokens), child(tokens), atol=1e-6)
        assert child.num_parameters() < net.num_parameters()
        outs.append(child(tokens))
    assert not all(torch.allclose(outs[0], o, atol=1e-4) for o in outs[1:])  # paths differ


def test_a_step_moves_only_the_paths_edges():
    torch.manual_seed(0)
    net = build_lm_supernet(5, 50, CFG)
    arch = _cells(1, seed=3)[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    tokens = torch.randint(0, 50, (7, 4))
    lm_shared_step(net, opt, arch.spec, tokens[:-1], tokens[1:], clip_norm=5.0)
    used = {f"{int(n['input'].split('_')[1]) - 1}_{k}" for k, n in enumerate(arch.spec["nodes"]) if k}
    for key, value in net.state_dict().items():
        if ".edges." in key:
            edge = key.split(".edges.")[1].split(".")[0]
            assert torch.equal(value, before[key]) == (edge not in used), key
        else:
            assert not torch.equal(value, before[key]), key   # embedding, node 1, decoder


def test_the_child_scripts_and_a_wrong_cell_is_refused():
    arch = _cells(1)[0]
    child = _child(arch).eval()
    tokens = torch.randint(0, 50, (5, 2))
    assert torch.allclose(torch.jit.script(child)(tokens), child(tokens), atol=1e-6)
    net = build_lm_supernet(3, 50, CFG)
    with pytest.raises(ArchitectureError, match="a cell of 5 nodes through a supernet of 3"):
        set_lm_path(net, arch)
    with pytest.raises(ArchitectureError, match=r"architecture\.spec\.nodes\[0\]\.activation"):
        build_language_model({"space": "enas_rnn", "spec": {"nodes": [
            {"name": "node_1", "activation": "gelu"}]}}, 50, CFG)
