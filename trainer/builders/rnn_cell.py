"""The recurrent cell of §3.5, built from an ``rnn_cell`` architecture spec.

The spec (``kubenas.contracts.architecture``) labels a complete binary tree whose ``base``
leaves each see one projection of the input and one of the previous output:

    leaf i (0 <= i < base):        pre_i = combine_i(W_i x_t, U_i h_{t-1}),  out_i = act_i(pre_i)
    node base+k (internal):        pre   = combine(out_{2k}, out_{2k+1}),    out   = act(pre)
    root (node 2*base-2):          h_t   = out_root

and two memory-cell decisions:

    cell_inject {node j, combine, activation}:
        out_j <- act_inj(combine_inj(out_j, c_{t-1}))     (what j's parent sees; Figure 5's a0_new)
    cell_index  m:
        c_t = pre_m                                       (node m's output *before* its activation,
                                                          and before any injection at m)

Internal nodes have no parameters (§3.5). Every leaf's ``W_i x_t`` comes out of one matrix
product (``x_proj``: ``input_size -> base*hidden``) and every ``U_i h_{t-1}`` out of another
(``h_proj``: ``hidden -> base*hidden``). :class:`RNNTreeLayer` applies ``x_proj`` to the whole
sequence in one matmul before the time loop, so a time step costs one matmul (``h_proj``) plus
the element-wise tree.

Inside the fused matrices the leaves are laid out grouped by their (combine, activation) label, so
a run of leaves with the same label is combined and activated with one element-wise op each.
:meth:`RNNTreeCell.leaf_weights` returns the (W_i, U_i, b_i^x, b_i^h) of leaf ``i`` in spec order,
whatever the layout.

Biases: with ``bias=True`` both projections carry a bias (like ``torch.nn.LSTM``'s ``b_ih`` and
``b_hh``); the published NASCell and the paper's Figure 5 have none (``bias=False``).

The code sticks to what TorchScript accepts (int codes, typed lists, no closures), so
``torch.jit.script(layer)`` works where TorchScript is still available; nothing depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts.architecture import RNN_ACTIVATIONS, RNN_COMBINES, validate_rnn_cell

COMBINE_CODES = {name: i for i, name in enumerate(RNN_COMBINES)}        # add, elem_mult, max
ACTIVATION_CODES = {name: i for i, name in enumerate(RNN_ACTIVATIONS)}  # identity, tanh, ...

assert list(COMBINE_CODES) == ["add", "elem_mult", "max"]  # _combine's literal codes
assert list(ACTIVATION_CODES) == ["identity", "tanh", "sigmoid", "relu", "sin"]  # _activate's


@dataclass(frozen=True)
class CellPlan:
    """A validated rnn_cell spec as integer codes."""

    base: int
    combine: Tuple[int, ...]        # per node, tree order (leaves first)
    activation: Tuple[int, ...]
    inject_node: int
    inject_combine: int
    inject_activation: int
    cell_index: int

    @property
    def num_nodes(self) -> int:
        return 2 * self.base - 1

    @property
    def root(self) -> int:
        return self.num_nodes - 1

    def children(self, node: int) -> Tuple[int, int]:
        k = node - self.base
        return 2 * k, 2 * k + 1


def cell_spec(architecture) -> dict:
    """The rnn_cell spec of ``architecture``: an :class:`Architecture`, its dict form, or a bare spec."""
    if isinstance(architecture, Architecture):
        if architecture.space != "rnn_cell":
            raise ContractError(f"architecture.space: the recurrent cell builder needs 'rnn_cell', "
                                f"got {architecture.space!r}")
        return architecture.spec
    if isinstance(architecture, Mapping) and "spec" in architecture:
        return cell_spec(Architecture.from_dict(architecture))
    if isinstance(architecture, Mapping):
        return dict(architecture)
    raise ContractError(f"architecture: expected an rnn_cell Architecture or spec, got "
                        f"{type(architecture).__name__}")


def parse_cell(architecture, where: str = "architecture.spec") -> CellPlan:
    spec = cell_spec(architecture)
    validate_rnn_cell(spec, where)
    nodes = spec["nodes"]
    inj = spec["cell_inject"]
    return CellPlan(
        base=int(spec["base"]),
        combine=tuple(COMBINE_CODES[n["combine"]] for n in nodes),
        activation=tuple(ACTIVATION_CODES[n["activation"]] for n in nodes),
        inject_node=int(inj["node"]),
        inject_combine=COMBINE_CODES[inj["combine"]],
        inject_activation=ACTIVATION_CODES[inj["activation"]],
        cell_index=int(spec["cell_index"]),
    )


def _combine(code: int, a: Tensor, b: Tensor) -> Tensor:
    # codes: COMBINE_CODES (literal ints so that TorchScript can compile this)
    if code == 0:      # add
        return a + b
    if code == 1:      # elem_mult
        return a * b
    return torch.maximum(a, b)  # max


def _activate(code: int, x: Tensor) -> Tensor:
    # codes: ACTIVATION_CODES
    if code == 1:      # tanh
        return torch.tanh(x)
    if code == 2:      # sigmoid
        return torch.sigmoid(x)
    if code == 3:      # relu
        return torch.relu(x)
    if code == 4:      # sin
        return torch.sin(x)
    return x           # identity


class RNNTreeCell(nn.Module):
    """One step of the searched cell. State is ``(h, c)``, both ``(batch, hidden_size)``."""

    def __init__(self, architecture, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        plan = parse_cell(architecture)
        self.plan = plan
        self.base = plan.base
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        B, H = plan.base, self.hidden_size
        # The two fused projections: every leaf's W_i x_t, every leaf's U_i h_{t-1}.
        self.x_proj = nn.Linear(self.input_size, B * H, bias=bias)
        self.h_proj = nn.Linear(H, B * H, bias=bias)

        # Leaf layout in the fused matrices: grouped by (combine, activation), spec order within.
        order = sorted(range(B), key=lambda i: (plan.combine[i], plan.activation[i], i))
        self.leaf_order: List[int] = list(order)                 # slot -> leaf
        self.leaf_slot: List[int] = [order.index(i) for i in range(B)]  # leaf -> slot
        groups: List[Tuple[int, int, int, int]] = []             # (combine, act, first slot, end)
        for slot, leaf in enumerate(order):
            label = (plan.combine[leaf], plan.activation[leaf])
            if groups and (groups[-1][0], groups[-1][1]) == label:
                c, a, s, _ = groups[-1]
                groups[-1] = (c, a, s, slot + 1)
            else:
                groups.append((label[0], label[1], slot, slot + 1))
        self.leaf_groups: List[Tuple[int, int, int, int]] = groups
        self.group_sizes: List[int] = [(e - st) * H for _, _, st, e in groups]
        # Where the cell index sits if it is a leaf: (group, position in group), else (-1, -1).
        self.index_group: int = -1
        self.index_pos: int = -1
        for g, (_, _, st, e) in enumerate(groups):
            for slot in range(st, e):
                if order[slot] == plan.cell_index:
                    self.index_group, self.index_pos = g, slot - st
        # Internal nodes in tree order: (node, left child, right child, combine, activation).
        self.internal: List[Tuple[int, int, int, int, int]] = [
            (n,) + plan.children(n) + (plan.combine[n], plan.activation[n])
            for n in range(B, plan.num_nodes)]
        self.num_nodes: int = plan.num_nodes
        self.inject_node: int = plan.inject_node
        self.inject_combine: int = plan.inject_combine
        self.inject_activation: int = plan.inject_activation
        self.cell_index: int = plan.cell_index

    # -- parameters --------------------------------------------------------------------------
    def leaf_weights(self, leaf: int) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """Views of (W_leaf, U_leaf, x-bias, h-bias) inside the fused matrices (spec leaf order)."""
        H = self.hidden_size
        s = self.leaf_slot[leaf] * H
        bx = None if self.x_proj.bias is None else self.x_proj.bias[s:s + H]
        bh = None if self.h_proj.bias is None else self.h_proj.bias[s:s + H]
        return self.x_proj.weight[s:s + H], self.h_proj.weight[s:s + H], bx, bh

    def reset_parameters(self, init_range: float) -> None:
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)

    # -- computation -------------------------------------------------------------------------
    def project_inputs(self, x: Tensor) -> Tensor:
        """``W_i x`` for every leaf at once; ``x`` is ``(..., input_size)``."""
        return self.x_proj(x)

    def step(self, xp: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
        """One time step from the precomputed input projection ``xp`` ``(batch, base*hidden)``.

        ``h`` is the (possibly dropout-masked) previous output fed to the recurrence.
        Tensors are cut with ``split`` (not slicing), whose backward is one concatenation."""
        H = self.hidden_size
        hp = self.h_proj(h)
        outs: List[Tensor] = [xp for _ in range(self.num_nodes)]  # placeholders
        c_new = c
        if len(self.leaf_groups) == 1:
            xs, hs = [xp], [hp]
        else:
            xs, hs = xp.split(self.group_sizes, 1), hp.split(self.group_sizes, 1)
        for g, group in enumerate(self.leaf_groups):
            comb, act, s, e = group
            pre = _combine(comb, xs[g], hs[g])
            out = _activate(act, pre)
            if e - s == 1:
                outs[self.leaf_order[s]] = out
            else:
                for k, piece in enumerate(out.split(H, 1)):
                    outs[self.leaf_order[s + k]] = piece
            if g == self.index_group:
                c_new = pre if e - s == 1 else pre.split(H, 1)[self.index_pos]
        if self.inject_node < self.base:
            j = self.inject_node
            outs[j] = _activate(self.inject_activation, _combine(self.inject_combine, outs[j], c))
        for node in self.internal:
            n, left, right, comb, act = node
            pre = _combine(comb, outs[left], outs[right])
            if n == self.cell_index:
                c_new = pre
            out = _activate(act, pre)
            if n == self.inject_node:
                out = _activate(self.inject_activation, _combine(self.inject_combine, out, c))
            outs[n] = out
        return outs[self.num_nodes - 1], c_new

    def forward(self, x: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """One step from the raw input ``x`` ``(batch, input_size)``; returns ``(h_t, (h_t, c_t))``."""
        h, c = self.step(self.x_proj(x), state[0], state[1])
        return h, (h, c)

    def extra_repr(self) -> str:
        return f"base={self.base}, input_size={self.input_size}, hidden_size={self.hidden_size}"


class RNNTreeLayer(nn.Module):
    """The cell unrolled over a sequence ``(time, batch, input_size)``.

    The input projection of the whole sequence is one matmul before the time loop.
    ``h_mask`` (``(batch, hidden)``, or None) multiplies h_{t-1} where it enters the
    recurrence, the same mask at every step (variational recurrent dropout, Gal & Ghahramani);
    the state carried forward is the unmasked h_t.
    """

    def __init__(self, architecture, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.cell = RNNTreeCell(architecture, input_size, hidden_size, bias=bias)
        self.hidden_size = int(hidden_size)

    def init_state(self, batch: int) -> Tuple[Tensor, Tensor]:
        w = self.cell.h_proj.weight
        return w.new_zeros(batch, self.hidden_size), w.new_zeros(batch, self.hidden_size)

    def forward(self, inputs: Tensor, state: Tuple[Tensor, Tensor],
                h_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        xp = self.cell.project_inputs(inputs)  # (T, N, base*hidden): one matmul
        h, c = state
        outputs: List[Tensor] = []
        for xp_t in xp.unbind(0):              # unbind: one stacked gradient, not T copies
            h_in = h if h_mask is None else h * h_mask
            h, c = self.cell.step(xp_t, h_in, c)
            outputs.append(h)
        return torch.stack(outputs, 0), (h, c)


# -- well-known cells in the space ---------------------------------------------------------------

def _node(combine: str, activation: str) -> dict:
    return {"combine": combine, "activation": activation}


def figure5_cell() -> Architecture:
    """The paper's Figure 5 example (base 2)."""
    return Architecture(space="rnn_cell", spec={
        "base": 2,
        "nodes": [_node("add", "tanh"), _node("elem_mult", "relu"), _node("elem_mult", "sigmoid")],
        "cell_inject": {"node": 0, "combine": "add", "activation": "relu"},
        "cell_index": 1,
    })


def nas_cell() -> Architecture:
    """The published NASCell (base 8; ``tf.contrib.rnn.NASCell``, /work/shared/docs/nascell.md)."""
    return Architecture(space="rnn_cell", spec={
        "base": 8,
        "nodes": [
            _node("add", "sigmoid"), _node("add", "relu"), _node("add", "sigmoid"),
            _node("elem_mult", "relu"), _node("add", "tanh"), _node("add", "sigmoid"),
            _node("add", "tanh"), _node("add", "sigmoid"),                 # a0..a7 (leaves)
            _node("elem_mult", "tanh"), _node("add", "tanh"),
            _node("elem_mult", "tanh"), _node("add", "sigmoid"),           # b0..b3 (nodes 8..11)
            _node("elem_mult", "identity"), _node("add", "tanh"),          # e0, e1 (nodes 12, 13)
            _node("elem_mult", "tanh"),                                    # root: h_t (node 14)
        ],
        "cell_inject": {"node": 8, "combine": "add", "activation": "tanh"},  # b0' = tanh(b0 + c)
        "cell_index": 12,                                                    # c_t = e0
    })


def lstm_cell() -> Architecture:
    """An LSTM, exactly, in the base-8 tree (the smallest base that can hold it).

        f = σ(l0 + l1)            node 8, with l0, l1 identity(add) leaves   (W_f = W_0 + W_1)
        f ⊙ c_{t-1}               cell inject at node 8: elem_mult, identity
        i ⊙ g                     node 9 = elem_mult(l2 = σ(..), l3 = tanh(..)), identity
        c_t = f⊙c_{t-1} + i⊙g     node 12: add, pre-activation -> cell index 12
        tanh(c_t)                 node 12's activation
        o = σ(l4 + l5 + l6 + l7)  nodes 10, 11 identity(add), node 13 sigmoid(add)
        h_t = tanh(c_t) ⊙ o       root: elem_mult, identity

    The gates f and o are over-parameterised sums of leaf projections (same function class
    as an LSTM, more weights); base 2 and 4 cannot express an LSTM.
    """
    return Architecture(space="rnn_cell", spec={
        "base": 8,
        "nodes": [
            _node("add", "identity"), _node("add", "identity"),            # f parts
            _node("add", "sigmoid"), _node("add", "tanh"),                 # i, g
            _node("add", "identity"), _node("add", "identity"),
            _node("add", "identity"), _node("add", "identity"),            # o parts
            _node("add", "sigmoid"),                                       # 8: f
            _node("elem_mult", "identity"),                                # 9: i ⊙ g
            _node("add", "identity"), _node("add", "identity"),            # 10, 11: o parts
            _node("add", "tanh"),                                          # 12: tanh(c_t)
            _node("add", "sigmoid"),                                       # 13: o
            _node("elem_mult", "identity"),                                # 14: h_t
        ],
        "cell_inject": {"node": 8, "combine": "elem_mult", "activation": "identity"},
        "cell_index": 12,
    })


NAMED_CELLS = {"figure5": figure5_cell, "nascell": nas_cell, "lstm": lstm_cell}


def build_layer(architecture, input_size: int, hidden_size: int, bias: bool = True) -> RNNTreeLayer:
    return RNNTreeLayer(architecture, input_size, hidden_size, bias=bias)
