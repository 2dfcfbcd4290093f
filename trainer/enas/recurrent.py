"""The ``enas_rnn`` cell (Pham et al. 2018, §2.2): a layer for the language model, and the
shared-weight supernet of every cell in the space.

Node 1: c = σ(W_c [x_t, h_{t-1}]), s_1 = c ⊙ act_1(W_h [x_t, h_{t-1}]) + (1 − c) ⊙ h_{t-1};
node k > 1, reading node j: c = σ(W^c_{jk} s_j), s_k = c ⊙ act_k(W^h_{jk} s_j) + (1 − c) ⊙ s_j
(ENAS's highway connections); h_t = the mean of the loose ends.

``EnasRnnLayer`` (a child's) holds one (gate, candidate) matrix per node k > 1, for its
edge from its input; ``EnasRnnSupernet`` one per edge j < k, and runs whichever path
``set_path`` names. A child extracted from the supernet (``extract``) has the
path's weights under the same parameter names, so their outputs are equal
(tests/trainer/test_enas_recurrent.py). The layer's state is the language model's ``(h, c)``
pair; this cell has no memory cell, so ``c`` is carried unchanged.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from kubenas.trainer.enas import validated_spec
from kubenas.trainer.errors import ArchitectureError

ACTIVATION_CODES = {"tanh": 0, "relu": 1, "identity": 2, "sigmoid": 3}
Path = Tuple[Tuple[int, ...], Tuple[str, ...]]   # per node: its input (-1: x_t, h_{t-1}), activation


def _act(code: int, z: Tensor) -> Tensor:
    # codes: ACTIVATION_CODES (literal ints so that TorchScript can compile this)
    if code == 0:
        return torch.tanh(z)
    if code == 1:
        return torch.relu(z)
    if code == 2:
        return z
    return torch.sigmoid(z)


def _node(projected: Tensor, s_j: Tensor, code: int) -> Tensor:
    """Node k from its input's state ``s_j`` and that state through its edge."""
    c, z = projected.chunk(2, 1)
    c = torch.sigmoid(c)
    return c * _act(code, z) + (1 - c) * s_j


def enas_rnn_spec(architecture) -> Mapping:
    """The validated spec of an ``enas_rnn`` Architecture, its dict form, or a bare spec."""
    return validated_spec(architecture, "enas_rnn")


def cell_path(architecture) -> Path:
    nodes = enas_rnn_spec(architecture)["nodes"]
    inputs = tuple(-1 if i == 0 else int(n["input"].split("_")[1]) - 1 for i, n in enumerate(nodes))
    return inputs, tuple(n["activation"] for n in nodes)


class _Cell(nn.Module):
    """What the child's layer and the supernet's share: node 1's weights, the time loop."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool) -> None:
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.first = nn.Linear(input_size + hidden_size, 2 * hidden_size, bias=bias)

    def _first(self, x: Tensor, h: Tensor, code: int) -> Tensor:
        c, z = self.first(torch.cat([x, h], 1)).chunk(2, 1)
        c = torch.sigmoid(c)
        return c * _act(code, z) + (1 - c) * h

    def step(self, x: Tensor, h: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, inputs: Tensor, state: Tuple[Tensor, Tensor],
                h_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        h, c = state
        outputs: List[Tensor] = []
        for x_t in inputs.unbind(0):
            h_in = h if h_mask is None else h * h_mask
            h = self.step(x_t, h_in)
            outputs.append(h)
        return torch.stack(outputs, 0), (h, c)


class EnasRnnLayer(_Cell):
    """One cell of the space unrolled over ``(time, batch, input_size)``: node k's edge is
    ``edges[k - 1]`` (TorchScript compiles it: the child exports as ``final_model.pt``)."""

    def __init__(self, architecture, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias)
        inputs, acts = cell_path(architecture)
        self.inputs: List[int] = list(inputs)
        self.codes: List[int] = [ACTIVATION_CODES[a] for a in acts]
        read = set(inputs[1:])
        self.loose: List[int] = [k for k in range(len(inputs)) if k not in read]
        self.edges = nn.ModuleList(nn.Linear(hidden_size, 2 * hidden_size, bias=False)
                                   for _ in inputs[1:])

    def step(self, x: Tensor, h: Tensor) -> Tensor:
        s = [self._first(x, h, self.codes[0])]
        k = 1
        for edge in self.edges:
            s_j = s[self.inputs[k]]
            s.append(_node(edge(s_j), s_j, self.codes[k]))
            k += 1
        out = [s[i] for i in self.loose]
        return torch.stack(out).mean(0)


class EnasRnnSupernet(_Cell):
    """Every edge j < k of a ``nodes``-node cell (``edges["j_k"]``); runs ``self.path``."""

    def __init__(self, nodes: int, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias)
        self.nodes = int(nodes)
        self.edges = nn.ModuleDict({f"{j}_{k}": nn.Linear(hidden_size, 2 * hidden_size, bias=False)
                                    for k in range(1, nodes) for j in range(k)})
        self.path: Optional[Path] = None

    def set_path(self, path: Path) -> None:
        if len(path[0]) != self.nodes:
            raise ArchitectureError(f"enas_rnn: a cell of {len(path[0])} nodes through a "
                                    f"supernet of {self.nodes}")
        self.path = path

    def step(self, x: Tensor, h: Tensor) -> Tensor:
        if self.path is None:
            raise ArchitectureError("enas_rnn: the supernet runs a path; set_path() first")
        inputs, acts = self.path
        s = [self._first(x, h, ACTIVATION_CODES[acts[0]])]
        for k in range(1, len(inputs)):
            s_j = s[inputs[k]]
            s.append(_node(self.edges[f"{inputs[k]}_{k}"](s_j), s_j, ACTIVATION_CODES[acts[k]]))
        read = set(inputs[1:])
        return torch.stack([s[k] for k in range(len(s)) if k not in read]).mean(0)


def set_lm_path(model: nn.Module, spec) -> None:
    """Point every layer of a supernet language model at the cell ``spec``."""
    path = cell_path(spec)
    for layer in model.rnns:
        layer.set_path(path)


def extract(supernet_lm: nn.Module, architecture, make_child) -> nn.Module:
    """The child language model ``make_child(architecture)`` holding the supernet's weights
    for the path ``architecture`` (copies): node k's edge from its input j is the
    supernet's ``edges.j_k``."""
    inputs, _ = cell_path(architecture)
    child = make_child(architecture)
    state = supernet_lm.state_dict()
    rename = {f"edges.{k - 1}.": f"edges.{j}_{k}." for k, j in enumerate(inputs) if k > 0}
    out = {}
    for key in child.state_dict():
        src = key
        for old, new in rename.items():
            if f".{old}" in key:
                src = key.replace(f".{old}", f".{new}")
        out[key] = state[src].clone()
    child.load_state_dict(out)
    return child


__all__ = ["EnasRnnLayer", "EnasRnnSupernet", "cell_path", "enas_rnn_spec", "extract", "set_lm_path"]
