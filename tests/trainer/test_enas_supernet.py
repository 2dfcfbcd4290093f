"""The enas_macro supernet: a path's output is a standalone child's with the same weights;
a step trains only the path's parameters; a child for retraining builds from scratch."""

import pytest
import torch

from kubenas.contracts.architecture import ENAS_OPS
from kubenas.trainer.enas.networks import Supernet, build_enas_child
from kubenas.trainer.enas.shared import shared_step
from kubenas.trainer.errors import ArchitectureError

SPEC = {"channels": 6, "pooling_at": [2], "layers": [
    {"name": "layer_1", "op": "sep_conv5x5", "skips": []},
    {"name": "layer_2", "op": "conv3x3", "skips": ["layer_1"]},
    {"name": "layer_3", "op": "avgpool3x3", "skips": ["layer_1", "layer_2"]},
    {"name": "layer_4", "op": "conv5x5", "skips": []}]}


def _supernet():
    torch.manual_seed(0)
    return Supernet(4, 6, ENAS_OPS, (1, 8, 8), 10, [0.3], [0.2])


def test_a_path_equals_the_standalone_child_with_its_weights():
    net = _supernet()
    images = torch.rand(5, 1, 8, 8)
    child = net.extract(SPEC)
    assert torch.allclose(net(images, SPEC), child(images), atol=1e-6)
    # the child holds one op per layer: fewer parameters than the supernet
    assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in net.parameters())
    other = {**SPEC, "layers": [{**SPEC["layers"][0], "op": "conv3x3"}] + SPEC["layers"][1:]}
    assert not torch.allclose(net(images, other), child(images), atol=1e-4)


def test_a_step_moves_only_the_paths_weights():
    net = _supernet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    shared_step(net, opt, SPEC, torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    moved = {k.split(".")[2] for k, v in net.state_dict().items()
             if k.startswith("layers.") and not torch.equal(v, before[k])}
    assert moved == {"sep_conv5x5", "conv3x3", "conv5x5"}  # avgpool has no weights
    assert not torch.equal(net.head.weight, before["head.weight"])


def test_wrong_paths_are_refused():
    net = _supernet()
    with pytest.raises(ArchitectureError, match="supernet of 4 x 6"):
        net(torch.rand(2, 1, 8, 8), {**SPEC, "layers": SPEC["layers"][:3]})
    with pytest.raises(ArchitectureError, match=r"layers\[0\].op"):
        build_enas_child({**SPEC, "pooling_at": [], "layers": [{"name": "layer_1", "op": "conv9x9"}]},
                         (1, 8, 8), 10, [0.0], [1.0])


def test_a_fresh_child_trains_with_running_statistics():
    child = build_enas_child(SPEC, (1, 8, 8), 10, [0.0], [1.0])
    child.train()
    child(torch.rand(4, 1, 8, 8))
    child.eval()
    assert child(torch.rand(3, 1, 8, 8)).shape == (3, 10)
