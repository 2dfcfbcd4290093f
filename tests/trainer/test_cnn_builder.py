"""The CNN builder follows §3.4's connection rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kubenas.contracts import Architecture
from kubenas.trainer.builders.cnn import build_cnn, count_parameters, plan_cnn
from kubenas.trainer.errors import ArchitectureError, TooLarge


def arch(*layers) -> Architecture:
    return Architecture.from_dict({"space": "cnn", "spec": {"layers": list(layers)}})


def capture(model):
    """Record each layer's op input (after concat/pad) and output, by layer name."""
    seen = {}
    for lay in model.layers:
        lay.op.register_forward_hook(
            lambda mod, args, out, name=lay.name: seen.__setitem__(name, (args[0], out)))
    return seen


def test_layer_without_inputs_takes_the_image(make_layer):
    a = arch(make_layer("a", [], filters=5), make_layer("b", ["input"], filters=4),
             make_layer("c", ["a"], filters=3))
    m = build_cnn(a, (3, 8, 8), 10).eval()
    seen = capture(m)
    x = torch.rand(2, 3, 8, 8)
    m(x)
    for name in ("a", "b"):
        conv = m.layers[[lay.name for lay in m.layers].index(name)].op[0]
        assert conv.in_channels == 3
        assert m.layers[[lay.name for lay in m.layers].index(name)].inputs == [0]
        # what the conv saw is the (normalised) image itself
        assert torch.equal(seen[name][0], x)  # default mean 0 / std 1


def test_multiple_inputs_are_concatenated_in_depth(make_layer):
    a = arch(make_layer("a", filters=5), make_layer("b", ["a"], filters=7),
             make_layer("c", ["a", "b", "input"], filters=4))
    m = build_cnn(a, (3, 8, 8), 10).eval()
    seen = capture(m)
    m(torch.rand(2, 3, 8, 8))
    c = m.layers[2]
    assert c.op[0].in_channels == 5 + 7 + 3
    x_in = seen["c"][0]
    assert x_in.shape == (2, 15, 8, 8)
    assert torch.equal(x_in[:, :5], seen["a"][1])
    assert torch.equal(x_in[:, 5:12], seen["b"][1])


def test_inputs_of_different_size_are_zero_padded_to_the_largest(make_layer):
    # a: stride 2 -> 4x4; p: maxpool 3x3 stride 3 of the 8x8 image -> 3x3; b: 8x8
    a = arch(make_layer("a", filters=5, sh=2, sw=2),
             make_layer("p", ["input"], kind="maxpool", fh=3, fw=3, sh=3, sw=3),
             make_layer("b", ["input"], filters=6),
             make_layer("c", ["a", "p", "b"], filters=4))
    m = build_cnn(a, (3, 8, 8), 10).eval()
    seen = capture(m)
    m(torch.rand(2, 3, 8, 8))
    a_out, p_out, b_out = seen["a"][1], seen["p"][1], seen["b"][1]
    assert a_out.shape[2:] == (4, 4) and p_out.shape[2:] == (3, 3) and b_out.shape[2:] == (8, 8)
    x_in = seen["c"][0]
    assert x_in.shape == (2, 5 + 3 + 6, 8, 8)
    assert m.layers[3].op[0].in_channels == 14
    assert torch.equal(x_in[:, :5, :4, :4], a_out)
    assert torch.count_nonzero(x_in[:, :5, 4:, :]) == 0 and torch.count_nonzero(x_in[:, :5, :, 4:]) == 0
    assert torch.equal(x_in[:, 5:8, :3, :3], p_out)
    assert torch.count_nonzero(x_in[:, 5:8, 3:, :]) == 0
    assert torch.equal(x_in[:, 8:], b_out)


def test_unused_outputs_feed_the_classifier_and_used_ones_do_not(make_layer):
    # a -> b, a -> c; b and c unused; d (stride 2, from the image) unused too
    a = arch(make_layer("a", filters=5), make_layer("b", ["a"], filters=6),
             make_layer("c", ["a"], filters=7), make_layer("d", [], filters=3, sh=2, sw=2))
    plan = plan_cnn(a, (1, 8, 8), 10)
    assert plan.outputs == [2, 3, 4]
    m = build_cnn(a, (1, 8, 8), 10).eval()
    assert m.classifier.in_features == 6 + 7 + 3  # not a's 5
    seen = capture(m)
    x = torch.rand(3, 1, 8, 8)
    feats = m.features(x)
    # the rule as the paper states it: zero-pad to the largest, concat, global average pool
    outs = [seen[n][1] for n in ("b", "c", "d")]
    padded = torch.cat([F.pad(o, [0, 8 - o.size(3), 0, 8 - o.size(2)]) for o in outs], 1)
    torch.testing.assert_close(feats, padded.mean(dim=(2, 3)))
    torch.testing.assert_close(m(x), m.classifier(padded.mean(dim=(2, 3))))


def test_every_conv_is_conv_batchnorm_relu_and_pools_pass_channels(make_layer):
    a = arch(make_layer("a", filters=5, fh=1, fw=7),
             make_layer("mp", ["a"], kind="maxpool", fh=2, fw=2, sh=2, sw=2),
             make_layer("ap", ["mp"], kind="avgpool", fh=3, fw=3, sh=2, sw=2),
             make_layer("b", ["ap"], filters=4, fh=5, fw=3, sh=1, sw=3))
    m = build_cnn(a, (3, 7, 9), 10)
    conv_layers = [lay for lay in m.layers if lay.kind == "conv"]
    assert len(conv_layers) == 2
    for lay in conv_layers:
        kinds = [type(mod) for mod in lay.op]
        assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert lay.op[0].bias is None
    assert m.layers[0].op[0].kernel_size == (1, 7)
    assert m.layers[3].op[0].stride == (1, 3)
    assert isinstance(m.layers[1].op[0], nn.MaxPool2d)
    assert isinstance(m.layers[2].op[0], nn.AvgPool2d)
    # 'same' sizes: ceil(in / stride), for odd and even kernels and rectangular strides
    plan = plan_cnn(a, (3, 7, 9), 10)
    assert [(s.channels, s.height, s.width) for s in plan.shapes] == [
        (5, 7, 9), (5, 4, 5), (5, 2, 3), (4, 2, 1)]
    seen = capture(m.eval())
    m(torch.rand(2, 3, 7, 9))
    for s in plan.shapes:
        assert tuple(seen[s.name][1].shape[1:]) == (s.channels, s.height, s.width)
    # relu output is non-negative
    assert (seen["a"][1] >= 0).all()


def test_parameter_count_matches_the_formula(make_layer):
    a = arch(make_layer("a", filters=24, fh=3, fw=5), make_layer("b", ["a"], filters=36, fh=1, fw=7),
             make_layer("c", ["a", "b"], filters=48, fh=7, fw=1))
    m = build_cnn(a, (3, 32, 32), 10)
    expected = (3 * 5 * 3 * 24 + 2 * 24) + (1 * 7 * 24 * 36 + 2 * 36) + \
        (7 * 1 * (24 + 36) * 48 + 2 * 48) + (48 * 10 + 10)
    assert count_parameters(m) == expected == plan_cnn(a, (3, 32, 32), 10).parameters


def test_too_many_parameters_is_refused_before_building(make_layer):
    a = arch(make_layer("a", filters=64, fh=7, fw=7), make_layer("b", ["a"], filters=64, fh=7, fw=7))
    with pytest.raises(TooLarge, match=r"parameters exceed maxParameters 1,000"):
        build_cnn(a, (3, 32, 32), 10, max_parameters=1000)


def test_unbuildable_descriptions_raise_architecture_error(make_layer):
    bad_input = Architecture(space="cnn", spec={"layers": [
        make_layer("a"), make_layer("b", ["nope"])]})
    with pytest.raises(ArchitectureError, match=r"layers\[1\]\.inputs\[0\].*'nope'"):
        build_cnn(bad_input, (1, 8, 8), 10)
    zero = Architecture(space="cnn", spec={"layers": [make_layer("a", filters=0)]})
    with pytest.raises(ArchitectureError, match=r"num_filters: must be an integer >= 1"):
        build_cnn(zero, (1, 8, 8), 10)
    with pytest.raises(ArchitectureError, match="space 'cnn'"):
        build_cnn(Architecture(space="rnn_cell", spec={}), (1, 8, 8), 10)


def test_normalisation_is_part_of_the_model(make_layer):
    a = arch(make_layer("a", filters=4))
    m = build_cnn(a, (2, 4, 4), 3, mean=[0.5, 0.25], std=[0.5, 0.25]).eval()
    seen = capture(m)
    x = torch.rand(1, 2, 4, 4)
    m(x)
    want = (x - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)
    torch.testing.assert_close(seen["a"][0], want)
