"""The CNN child of §3.4: an architecture description -> a TorchScript-able ``nn.Module``.

Connection rules (Zoph & Le 2017, §3.4):

* each ``conv`` layer is conv (no bias) -> batch norm -> ReLU; odd kernels use 'same'
  padding (output size ceil(in / stride)); even kernels are padded TF-'SAME' style;
  filters may be rectangular and strides differ per axis;
* ``maxpool`` / ``avgpool`` layers pool their input with the same 'same' padding rule
  (channels pass through);
* a layer with several inputs concatenates them in depth; inputs of different spatial size
  are zero-padded (bottom/right) to the largest height and width first;
* a layer with no input takes the image;
* every layer output that no later layer consumes is concatenated (zero-padded likewise)
  and globally average-pooled before the linear classifier.

The network starts with a fixed per-channel normalisation (the training split's mean and
std as buffers), so the exported model takes images as float tensors in [0, 1].

Zero-padding a map to H x W before global average pooling equals its plain spatial mean
scaled by (h * w) / (H * W); the head computes it that way instead of materialising the
padded concatenation (``tests/trainer/test_cnn_builder.py`` checks the equivalence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts.architecture import validate_cnn
from kubenas.trainer.errors import ArchitectureError, TooLarge
from kubenas.trainer.export import export_torchscript  # noqa: F401 - re-exported for callers


# -- static shape inference --------------------------------------------------------------

def _out_size(size: int, stride: int) -> int:
    return -(-size // stride)  # 'same': ceil(size / stride)


@dataclass(frozen=True)
class LayerShape:
    name: str
    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class CnnPlan:
    """What ``build_cnn`` will build: per-layer input indices and shapes, the outputs."""

    in_shape: tuple               # (C, H, W) of the image
    inputs: list                  # per layer: indices into [image, layer_1, ...]
    shapes: list                  # per layer: LayerShape
    outputs: list                 # indices (1-based, into the same list) of unused layers
    parameters: int               # exact count of the module's trainable parameters


def plan_cnn(architecture: Architecture | dict, input_shape: Sequence[int],
             num_classes: int) -> CnnPlan:
    """Validate the description and infer every layer's shape and the parameter count,
    without allocating anything. Raises ``ArchitectureError`` naming the layer."""
    spec = architecture.spec if isinstance(architecture, Architecture) else architecture
    if isinstance(architecture, Architecture) and architecture.space != "cnn":
        raise ArchitectureError(f"architecture.space: the CNN builder needs space 'cnn', "
                                f"got {architecture.space!r}")
    try:
        validate_cnn(spec, "architecture.spec")
    except ContractError as exc:
        raise ArchitectureError(str(exc)) from None
    c0, h0, w0 = (int(v) for v in input_shape)
    index = {"input": 0}
    shapes = [LayerShape("input", c0, h0, w0)]
    inputs: list[list[int]] = []
    used: set[int] = set()
    params = 0
    for layer in spec["layers"]:
        src = [index[s] for s in layer.get("inputs", [])] or [0]
        used.update(src)
        cin = sum(shapes[i].channels for i in src)
        hin = max(shapes[i].height for i in src)
        win = max(shapes[i].width for i in src)
        sh, sw = layer.get("stride_height", 1), layer.get("stride_width", 1)
        kh, kw = layer["filter_height"], layer["filter_width"]
        if layer.get("type", "conv") == "conv":
            cout = layer["num_filters"]
            params += kh * kw * cin * cout + 2 * cout  # conv (no bias) + BN affine
        else:
            cout = cin
        index[layer["name"]] = len(shapes)
        inputs.append(src)
        shapes.append(LayerShape(layer["name"], cout, _out_size(hin, sh), _out_size(win, sw)))
    outputs = [i for i in range(1, len(shapes)) if i not in used]
    feat = sum(shapes[i].channels for i in outputs)
    params += feat * num_classes + num_classes
    return CnnPlan(in_shape=(c0, h0, w0), inputs=inputs, shapes=shapes[1:], outputs=outputs,
                   parameters=params)


# -- modules ------------------------------------------------------------------------------

def concat_padded(xs: List[Tensor]) -> Tensor:
    """Concatenate NCHW maps in depth, zero-padding each (bottom/right) to the largest H, W."""
    if len(xs) == 1:
        return xs[0]
    h = max([x.size(2) for x in xs])
    w = max([x.size(3) for x in xs])
    padded: List[Tensor] = []
    for x in xs:
        if x.size(2) != h or x.size(3) != w:
            x = F.pad(x, [0, w - x.size(3), 0, h - x.size(2)])
        padded.append(x)
    return torch.cat(padded, 1)


def _same_pad(x: Tensor, kh: int, kw: int, sh: int, sw: int, value: float) -> Tensor:
    """TF 'SAME' padding for even kernels (asymmetric: the extra row/column at the end)."""
    ih, iw = x.size(2), x.size(3)
    ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
    pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=value)


class CnnLayer(nn.Module):
    """One layer: gathers its inputs from the list of earlier outputs, then conv/pool."""

    def __init__(self, layer: dict, inputs: List[int], in_channels: int,
                 bn_epsilon: float = 1e-5) -> None:
        super().__init__()
        self.name = str(layer["name"])
        self.kind = str(layer.get("type", "conv"))
        self.inputs: List[int] = list(inputs)
        kh, kw = int(layer["filter_height"]), int(layer["filter_width"])
        sh, sw = int(layer.get("stride_height", 1)), int(layer.get("stride_width", 1))
        self.kh, self.kw, self.sh, self.sw = kh, kw, sh, sw
        # Odd kernels: symmetric built-in padding k//2 gives 'same' sizes for any stride.
        # Even kernels: an explicit asymmetric pad in forward (self.pre_pad).
        self.pre_pad = kh % 2 == 0 or kw % 2 == 0
        pad = (0, 0) if self.pre_pad else (kh // 2, kw // 2)
        self.pad_value = float("-inf") if self.kind == "maxpool" else 0.0
        if self.kind == "conv":
            cout = int(layer["num_filters"])
            self.op = nn.Sequential(
                nn.Conv2d(in_channels, cout, (kh, kw), (sh, sw), pad, bias=False),
                nn.BatchNorm2d(cout, eps=bn_epsilon),
                nn.ReLU(inplace=True),
            )
        elif self.kind == "maxpool":
            self.op = nn.Sequential(nn.MaxPool2d((kh, kw), (sh, sw), pad))
        elif self.kind == "avgpool":
            self.op = nn.Sequential(nn.AvgPool2d((kh, kw), (sh, sw), pad,
                                                 count_include_pad=False))
        else:  # validate_cnn rejects this already
            raise ArchitectureError(f"layer {self.name}: unknown type {self.kind!r}")

    def forward(self, outs: List[Tensor]) -> Tensor:
        xs: List[Tensor] = []
        for i in self.inputs:
            xs.append(outs[i])
        x = concat_padded(xs)
        if self.pre_pad:
            x = _same_pad(x, self.kh, self.kw, self.sh, self.sw, self.pad_value)
        return self.op(x)


class CnnChild(nn.Module):
    """The child network. ``forward(images)`` takes float NCHW images in [0, 1]."""

    def __init__(self, plan: CnnPlan, layers: list, num_classes: int,
                 mean: Sequence[float], std: Sequence[float], bn_epsilon: float = 1e-5) -> None:
        super().__init__()
        c = plan.in_shape[0]
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, c, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor([float(s) for s in std]).view(1, c, 1, 1))
        in_ch = [plan.in_shape[0]] + [s.channels for s in plan.shapes]
        self.layers = nn.ModuleList(
            CnnLayer(layer, src, sum(in_ch[i] for i in src), bn_epsilon)
            for layer, src in zip(layers, plan.inputs))
        self.outputs: List[int] = list(plan.outputs)
        self.classifier = nn.Linear(sum(in_ch[i] for i in plan.outputs), num_classes)

    def features(self, images: Tensor) -> Tensor:
        """The classifier's input: the unused outputs, zero-padded to a common size,
        concatenated and globally average-pooled -> (N, sum of their channels)."""
        outs: List[Tensor] = [(images - self.mean) * self.inv_std]
        for layer in self.layers:
            outs.append(layer(outs))
        h = max([outs[i].size(2) for i in self.outputs])
        w = max([outs[i].size(3) for i in self.outputs])
        pooled: List[Tensor] = []
        for i in self.outputs:
            x = outs[i]
            scale = float(x.size(2) * x.size(3)) / float(h * w)
            pooled.append(x.mean(dim=[2, 3]) * scale)
        return torch.cat(pooled, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_cnn(architecture: Architecture | dict, input_shape: Sequence[int], num_classes: int,
              mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
              max_parameters: Optional[int] = None, bn_epsilon: float = 1e-5,
              width_multiplier: float = 1.0) -> CnnChild:
    """Build the child network for images of ``input_shape`` = (C, H, W).

    ``architecture``: an ``Architecture`` of space "cnn" or its ``spec`` mapping.
    ``mean``/``std``: per-channel normalisation baked into the model (default 0 / 1).
    Raises ``ArchitectureError`` (unbuildable) or ``TooLarge`` (more than
    ``max_parameters``, checked before any weight is allocated). ``width_multiplier``
    scales every conv layer's filters (rounded, at least 1)."""
    if width_multiplier != 1.0:
        architecture = widened(architecture, width_multiplier)
    plan = plan_cnn(architecture, input_shape, num_classes)
    if max_parameters is not None and plan.parameters > max_parameters:
        raise TooLarge(f"{plan.parameters:,} parameters exceed maxParameters "
                       f"{max_parameters:,}")
    spec = architecture.spec if isinstance(architecture, Architecture) else architecture
    c = plan.in_shape[0]
    model = CnnChild(plan, list(spec["layers"]), num_classes,
                     mean if mean is not None else [0.0] * c,
                     std if std is not None else [1.0] * c, bn_epsilon)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    assert count_parameters(model) == plan.parameters, "plan_cnn's count is out of date"
    return model


def widened(architecture: Architecture | dict, multiplier: float) -> dict:
    """The architecture's spec with every conv layer's ``num_filters`` times ``multiplier``."""
    spec = architecture.spec if isinstance(architecture, Architecture) else architecture
    layers = [dict(layer, num_filters=max(1, int(round(layer["num_filters"] * multiplier))))
              if layer.get("type", "conv") == "conv" else dict(layer)
              for layer in spec["layers"]]
    return {**spec, "layers": layers}


def describe(plan: CnnPlan) -> str:
    """One line per layer: name, input indices, output shape (for logs)."""
    rows = [f"input {plan.in_shape}"]
    for src, s in zip(plan.inputs, plan.shapes):
        rows.append(f"{s.name} <- {src} -> ({s.channels}, {s.height}, {s.width})")
    rows.append(f"classifier <- {plan.outputs}; {plan.parameters:,} parameters")
    return "\n".join(rows)


__all__ = ["CnnChild", "CnnLayer", "CnnPlan", "LayerShape", "build_cnn", "concat_padded",
           "count_parameters", "describe", "export_torchscript", "plan_cnn"]
