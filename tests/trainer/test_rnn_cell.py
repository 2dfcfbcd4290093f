"""Fidelity of the §3.5 recurrent cell: Figure 5, an LSTM, the published NASCell, random trees.

Each reference below is written the long way (one weight matrix per leaf, explicit formulas);
the weights are copied out of the module's fused matrices, and the outputs must agree."""

from __future__ import annotations

import random

import pytest
import torch
from torch.overrides import TorchFunctionMode

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts.architecture import RNN_ACTIVATIONS, RNN_COMBINES
from kubenas.trainer.builders.rnn_cell import (RNNTreeCell, RNNTreeLayer, figure5_cell,
                                               lstm_cell, nas_cell)

torch.set_num_threads(1)
DT = torch.float64
sig, tanh, relu = torch.sigmoid, torch.tanh, torch.relu


def _layer(arch, I, H, bias, seed=0):
    torch.manual_seed(seed)
    layer = RNNTreeLayer(arch, I, H, bias=bias).to(DT)
    for p in layer.parameters():  # a wider init than default, so every nonlinearity matters
        torch.nn.init.uniform_(p, -0.6, 0.6)
    return layer


def _leaves(layer):
    """Per-leaf weights copied out of the fused matrices: [(W_i, U_i, bx_i, bh_i)]."""
    out = []
    for i in range(layer.cell.base):
        W, U, bx, bh = layer.cell.leaf_weights(i)
        z = torch.zeros(W.shape[0], dtype=DT)
        out.append((W.detach().clone(), U.detach().clone(),
                    z if bx is None else bx.detach().clone(), z if bh is None else bh.detach().clone()))
    return out


def _inputs(T, N, I, H, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, I, generator=g, dtype=DT)
    h0 = torch.randn(N, H, generator=g, dtype=DT) * 0.5
    c0 = torch.randn(N, H, generator=g, dtype=DT) * 0.5
    return x, h0, c0


def _run_reference(step, x, h, c):
    hs = []
    for t in range(x.shape[0]):
        h, c = step(x[t], h, c)
        hs.append(h)
    return torch.stack(hs), h, c


def _check(layer, step, T=6, N=3, I=5, H=4):
    x, h0, c0 = _inputs(T, N, I, H)
    with torch.no_grad():
        out, (h, c) = layer(x, (h0, c0))
    ref_out, ref_h, ref_c = _run_reference(step, x, h0, c0)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, ref_h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c, ref_c, rtol=1e-10, atol=1e-12)
    assert out.abs().max() > 1e-3 and c.abs().max() > 1e-3  # not a trivially-zero comparison


# -- Figure 5 --------------------------------------------------------------------------------

def test_figure5_spec_is_the_papers_example():
    spec = figure5_cell().spec
    assert spec["nodes"][0] == {"combine": "add", "activation": "tanh"}        # tree index 0
    assert spec["nodes"][1] == {"combine": "elem_mult", "activation": "relu"}  # tree index 1
    assert spec["nodes"][2] == {"combine": "elem_mult", "activation": "sigmoid"}
    assert spec["cell_inject"] == {"node": 0, "combine": "add", "activation": "relu"}
    assert spec["cell_index"] == 1


def test_figure5_matches_the_formulas_of_section_3_5():
    I, H = 5, 4
    layer = _layer(figure5_cell(), I, H, bias=False)
    (W1, W2, _, _), (W3, W4, _, _) = _leaves(layer)

    def step(x, h, c):
        a0 = tanh(x @ W1.T + h @ W2.T)                  # a0 = tanh(W1 x + W2 h)
        a1 = relu((x @ W3.T) * (h @ W4.T))              # a1 = ReLU((W3 x) ⊙ (W4 h))
        a0_new = relu(a0 + c)                           # a0_new = ReLU(a0 + c_{t-1})
        a2 = sig(a0_new * a1)                           # a2 = sigmoid(a0_new ⊙ a1)
        c_t = (x @ W3.T) * (h @ W4.T)                   # c_t = (W3 x) ⊙ (W4 h)
        return a2, c_t                                  # h_t = a2

    _check(layer, step, I=I, H=H)


# -- LSTM ------------------------------------------------------------------------------------

def test_lstm_cell_matches_explicit_lstm_and_torch_lstm():
    I, H = 5, 4
    layer = _layer(lstm_cell(), I, H, bias=True)
    L = _leaves(layer)
    W = lambda *ks: sum(L[k][0] for k in ks)     # noqa: E731
    U = lambda *ks: sum(L[k][1] for k in ks)     # noqa: E731
    b = lambda *ks: sum(L[k][2] + L[k][3] for k in ks)  # noqa: E731
    gates = {"i": (2,), "f": (0, 1), "g": (3,), "o": (4, 5, 6, 7)}

    def step(x, h, c):
        pre = {n: x @ W(*ks).T + h @ U(*ks).T + b(*ks) for n, ks in gates.items()}
        i, f, g, o = sig(pre["i"]), sig(pre["f"]), tanh(pre["g"]), sig(pre["o"])
        c_t = f * c + i * g
        return o * tanh(c_t), c_t

    _check(layer, step, I=I, H=H)

    # ... and the same weights in torch.nn.LSTM (gate order i, f, g, o).
    lstm = torch.nn.LSTM(I, H).to(DT)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.cat([W(*gates[n]) for n in "ifgo"]))
        lstm.weight_hh_l0.copy_(torch.cat([U(*gates[n]) for n in "ifgo"]))
        lstm.bias_ih_l0.copy_(torch.cat([sum(L[k][2] for k in gates[n]) for n in "ifgo"]))
        lstm.bias_hh_l0.copy_(torch.cat([sum(L[k][3] for k in gates[n]) for n in "ifgo"]))
        x, h0, c0 = _inputs(6, 3, I, H)
        out, (h, c) = layer(x, (h0, c0))
        ref, (rh, rc) = lstm(x, (h0[None], c0[None]))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c, rc[0], rtol=1e-10, atol=1e-12)


# -- NASCell ---------------------------------------------------------------------------------

def test_nascell_matches_the_published_equations():
    I, H = 5, 4
    layer = _layer(nas_cell(), I, H, bias=False)
    L = _leaves(layer)

    def step(x, h, c):
        X = [x @ L[i][0].T for i in range(8)]
        M = [h @ L[i][1].T for i in range(8)]
        a0 = sig(X[0] + M[0])
        a1 = relu(X[1] + M[1])
        a2 = sig(X[2] + M[2])
        a3 = relu(X[3] * M[3])
        a4 = tanh(X[4] + M[4])
        a5 = sig(X[5] + M[5])
        a6 = tanh(X[6] + M[6])
        a7 = sig(X[7] + M[7])
        b0 = tanh(a0 * a1)
        b1 = tanh(a2 + a3)
        b2 = tanh(a4 * a5)
        b3 = sig(a6 + a7)
        b0 = tanh(b0 + c)           # cell inject
        e0 = b0 * b1                # identity; c_t = e0
        e1 = tanh(b2 + b3)
        return tanh(e0 * e1), e0

    _check(layer, step, I=I, H=H)


# -- every tree: a recursive reference on random specs ------------------------------------------

def _random_spec(rng, base):
    pick = lambda: {"combine": rng.choice(RNN_COMBINES), "activation": rng.choice(RNN_ACTIVATIONS)}  # noqa: E731
    n = 2 * base - 1
    return {"base": base, "nodes": [pick() for _ in range(n)],
            "cell_inject": dict(node=rng.randrange(n - 1), **pick()),
            "cell_index": rng.randrange(n - 1)}


ACT = {"identity": lambda v: v, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
       "relu": torch.relu, "sin": torch.sin}
COMB = {"add": torch.add, "elem_mult": torch.mul, "max": torch.maximum}


def _recursive_reference(spec, L):
    base, nodes = spec["base"], spec["nodes"]
    inj, idx = spec["cell_inject"], spec["cell_index"]

    def step(x, h, c):
        pre, out = {}, {}

        def value(n):  # output of node n as its parent sees it
            if n < base:
                W, U, bx, bh = L[n]
                p = COMB[nodes[n]["combine"]](x @ W.T + bx, h @ U.T + bh)
            else:
                p = COMB[nodes[n]["combine"]](value(2 * (n - base)), value(2 * (n - base) + 1))
            pre[n] = p
            o = ACT[nodes[n]["activation"]](p)
            if n == inj["node"]:
                o = ACT[inj["activation"]](COMB[inj["combine"]](o, c))
            out[n] = o
            return o

        h_t = value(2 * base - 2)
        return h_t, pre[idx]

    return step


@pytest.mark.parametrize("base", [2, 4, 8])
@pytest.mark.parametrize("bias", [False, True])
def test_random_trees_match_a_recursive_reference(base, bias):
    rng = random.Random(1000 * base + bias)
    for trial in range(12):
        spec = _random_spec(rng, base)
        layer = _layer(Architecture(space="rnn_cell", spec=spec), 3, 4, bias=bias, seed=trial)
        # relu/identity/max cells can be large; a short sequence keeps magnitudes comparable.
        x, h0, c0 = _inputs(3, 2, 3, 4, seed=trial)
        with torch.no_grad():
            out, (h, c) = layer(x, (h0, c0))
        ref, rh, rc = _run_reference(_recursive_reference(spec, _leaves(layer)), x, h0, c0)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10, msg=lambda m: f"{spec}\n{m}")
        torch.testing.assert_close(c, rc, rtol=1e-9, atol=1e-10, msg=lambda m: f"{spec}\n{m}")


def test_inject_and_index_on_the_same_node_take_the_pre_activation_before_injection():
    spec = {"base": 2, "nodes": [{"combine": "add", "activation": "tanh"}] * 3,
            "cell_inject": {"node": 0, "combine": "add", "activation": "identity"}, "cell_index": 0}
    layer = _layer(Architecture(space="rnn_cell", spec=spec), 3, 4, bias=False)
    (W0, U0, _, _), (W1, U1, _, _) = _leaves(layer)

    def step(x, h, c):
        p0 = x @ W0.T + h @ U0.T
        a0 = tanh(p0) + c
        a1 = tanh(x @ W1.T + h @ U1.T)
        return tanh(a0 + a1), p0

    _check(layer, step, I=3, H=4)


# -- structure ---------------------------------------------------------------------------------

class _CountLinear(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.nn.functional.linear, torch.matmul, torch.mm, torch.addmm, torch.Tensor.matmul,
                    torch.Tensor.__matmul__, torch.bmm):
            self.calls.append(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("make", [nas_cell, lstm_cell, figure5_cell])
def test_one_x_projection_and_one_h_projection(make):
    I, H, T, N = 7, 6, 5, 3
    layer = RNNTreeLayer(make(), I, H, bias=True)
    base = layer.cell.base
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"cell.x_proj.weight": (base * H, I), "cell.x_proj.bias": (base * H,),
                      "cell.h_proj.weight": (base * H, H), "cell.h_proj.bias": (base * H,)}
    x = torch.randn(T, N, I)
    with _CountLinear() as counter:
        layer(x, layer.init_state(N))
    # the whole sequence's input projection once, then one h-projection per time step
    assert counter.calls == [(T, N, I)] + [(N, H)] * T


def test_gradients_flow_to_every_leaf():
    layer = RNNTreeLayer(nas_cell(), 5, 4)
    x = torch.randn(4, 2, 5)
    out, _ = layer(x, layer.init_state(2))
    out.sum().backward()
    for i in range(8):
        W, U, _, _ = layer.cell.leaf_weights(i)
        s = layer.cell.leaf_slot[i] * 4
        assert layer.cell.x_proj.weight.grad[s:s + 4].abs().sum() > 0
        assert layer.cell.h_proj.weight.grad[s:s + 4].abs().sum() > 0


def test_rejects_bad_specs_with_the_field_named():
    spec = dict(figure5_cell().spec, cell_index=2)  # the root may not be the cell index
    with pytest.raises(ContractError, match=r"cell_index"):
        RNNTreeCell(spec, 3, 4)
    with pytest.raises(ContractError, match=r"space"):
        RNNTreeCell(Architecture(space="cnn", spec={"layers": []}), 3, 4)
