"""The ``enas_macro`` networks: the shared-weight supernet and a standalone child.

Both are built from the same pieces, as ``trainer/builders/cnn.py`` builds a CNN child:

* a fixed stem — per-channel normalisation (the training split's mean/std as buffers, so
  the model takes float images in [0, 1]), then conv3x3 -> BN -> ReLU to ``channels``;
* per layer one op (``make_op``; every op keeps channels and spatial size) reading the
  previous layer; its output is averaged with the layer's skips (a larger map is average-
  pooled to this layer's size first; the mean keeps the scale independent of the number
  of skips); a fixed 2x2 max-pool follows the layers in ``pooling_at``;
* global average pooling -> linear.

``Supernet`` holds one op module per (layer, op) and runs whichever path a spec names;
``EnasChild`` holds one per layer. ``Supernet.extract(spec)`` is the child with the
path's weights: their outputs are equal (tests/trainer/test_enas_supernet.py).

Batch norm in the supernet never tracks running statistics: one set of running means
shared by every path would describe none of them, so every forward normalises with the
batch's own statistics (as ENAS does). A child for retraining tracks them as usual.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kubenas.contracts import Architecture
from kubenas.contracts.architecture import ENAS_OPS
from kubenas.trainer.enas import validated_spec
from kubenas.trainer.errors import ArchitectureError


def _conv_bn_relu(cin: int, cout: int, k: int, track: bool, groups: int = 1) -> list:
    return [nn.Conv2d(cin, cout, k, 1, k // 2, bias=False, groups=groups),
            nn.BatchNorm2d(cout, track_running_stats=track), nn.ReLU()]


def make_op(op: str, channels: int, track_stats: bool = True) -> nn.Module:
    """One ENAS op on ``channels`` maps; output size = input size."""
    c = channels
    if op in ("conv3x3", "conv5x5"):
        return nn.Sequential(*_conv_bn_relu(c, c, int(op[-1]), track_stats))
    if op in ("sep_conv3x3", "sep_conv5x5"):  # depthwise kxk, pointwise 1x1, BN, ReLU
        k = int(op[-1])
        return nn.Sequential(nn.Conv2d(c, c, k, 1, k // 2, bias=False, groups=c),
                             *_conv_bn_relu(c, c, 1, track_stats))
    if op == "maxpool3x3":
        return nn.MaxPool2d(3, 1, 1)
    if op == "avgpool3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    raise ArchitectureError(f"enas_macro: unknown op {op!r} (known: {list(ENAS_OPS)})")


def skip_indices(spec: Mapping) -> list[list[int]]:
    """Per layer, the 0-based indices of its skips."""
    return [[int(s.split("_")[1]) - 1 for s in layer.get("skips", [])] for layer in spec["layers"]]


class _Body(nn.Module):
    """Stem and head shared by the supernet and the child; ``run`` walks the layers."""

    def __init__(self, in_channels: int, channels: int, num_classes: int,
                 mean: Sequence[float], std: Sequence[float], track_stats: bool) -> None:
        super().__init__()
        c = in_channels
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, c, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor([float(s) for s in std]).view(1, c, 1, 1))
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, channels, 3, track_stats))
        self.head = nn.Linear(channels, num_classes)

    def run(self, images: Tensor, ops: Sequence[nn.Module], skips: Sequence[Sequence[int]],
            pooling_at: Sequence[int]) -> Tensor:
        x = self.stem((images - self.mean) * self.inv_std)
        outs: list[Tensor] = []
        for i, op in enumerate(ops):
            y = op(x)
            if skips[i]:
                parts = [y] + [_fit(outs[j], y) for j in skips[i]]
                y = torch.stack(parts).mean(0)
            if i + 1 in pooling_at:
                y = F.max_pool2d(y, 2, 2, ceil_mode=True)
            outs.append(y)
            x = y
        return self.head(x.mean(dim=(2, 3)))


def _fit(x: Tensor, like: Tensor) -> Tensor:
    """``x`` average-pooled to ``like``'s spatial size (a skip from before a pool)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.adaptive_avg_pool2d(x, like.shape[-2:])


class Supernet(_Body):
    """Every (layer, op) of the space with its own parameters; ``forward(images, spec)``
    runs the path ``spec`` names (an ``enas_macro`` architecture spec)."""

    def __init__(self, layers: int, channels: int, ops: Sequence[str], input_shape: Sequence[int],
                 num_classes: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(int(input_shape[0]), channels, num_classes, mean, std, track_stats=False)
        self.channels = channels
        self.op_names = tuple(ops)
        self.layers = nn.ModuleList(
            nn.ModuleDict({op: make_op(op, channels, track_stats=False) for op in ops})
            for _ in range(layers))

    def forward(self, images: Tensor, spec: Mapping) -> Tensor:
        self._check(spec)
        ops = [self.layers[i][layer["op"]] for i, layer in enumerate(spec["layers"])]
        return self.run(images, ops, skip_indices(spec), spec.get("pooling_at", []))

    def _check(self, spec: Mapping) -> None:
        if len(spec["layers"]) != len(self.layers) or spec["channels"] != self.channels:
            raise ArchitectureError(f"enas_macro: a path of {len(spec['layers'])} layers x "
                                    f"{spec['channels']} channels through a supernet of "
                                    f"{len(self.layers)} x {self.channels}")
        for layer in spec["layers"]:
            if layer["op"] not in self.op_names:
                raise ArchitectureError(f"enas_macro: op {layer['op']!r} is not in this supernet")

    def extract(self, spec: Mapping) -> "EnasChild":
        """The standalone child of ``spec`` holding this path's weights (copies)."""
        self._check(spec)
        child = EnasChild(spec, self.mean.shape[1], self.head.out_features,
                          self.mean.flatten().tolist(), (1.0 / self.inv_std).flatten().tolist(),
                          track_stats=False)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("layers.")}
        for i, layer in enumerate(spec["layers"]):
            for k, v in self.layers[i][layer["op"]].state_dict().items():
                state[f"layers.{i}.{k}"] = v
        child.load_state_dict({k: v.clone() for k, v in state.items()})
        return child


class EnasChild(_Body):
    """One architecture of the space as a network of its own (for retraining)."""

    def __init__(self, spec: Mapping, in_channels: int, num_classes: int,
                 mean: Sequence[float], std: Sequence[float], track_stats: bool = True) -> None:
        super().__init__(in_channels, int(spec["channels"]), num_classes, mean, std, track_stats)
        self.layers = nn.ModuleList(make_op(layer["op"], int(spec["channels"]), track_stats)
                                    for layer in spec["layers"])
        self.skips = skip_indices(spec)
        self.pooling_at = list(spec.get("pooling_at", []))

    def forward(self, images: Tensor) -> Tensor:
        return self.run(images, list(self.layers), self.skips, self.pooling_at)


def build_supernet(space_options: Mapping, input_shape: Sequence[int], num_classes: int,
                   mean: Sequence[float], std: Sequence[float]) -> Supernet:
    """The supernet of an ``enas_macro`` space given its resolved options (``space.options()``)."""
    return Supernet(int(space_options["layers"]), int(space_options["channels"]),
                    space_options["ops"], input_shape, num_classes, mean, std)


def build_enas_child(architecture: Architecture | Mapping, input_shape: Sequence[int],
                     num_classes: int, mean: Sequence[float], std: Sequence[float]) -> EnasChild:
    """A fresh standalone child of ``architecture`` (retraining from scratch)."""
    spec = validated_spec(architecture, "enas_macro")
    return EnasChild(spec, int(input_shape[0]), num_classes, mean, std)


__all__ = ["EnasChild", "Supernet", "build_enas_child", "build_supernet", "make_op", "skip_indices"]
