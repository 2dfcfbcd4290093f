"""The controller: an LSTM that writes an architecture one decision at a time (§3.2, §3.4).

At every step of a space's plan the stacked LSTM cells read the previous step's output
token and produce a hidden state ``h_t`` (the top layer's output), which then decides:

* a ``categorical`` decision: softmax classifier ``key`` on ``h_t``; the chosen token's
  embedding (one table per key) is the next step's input. Classifiers and embeddings are
  shared by all decisions with the same key, so the curriculum can add layers without
  adding parameters.
* an ``anchor`` (skip connections of layer i): one sigmoid per earlier anchor j,
  ``P(j -> i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i))`` with h_j the hidden state at
  anchor j, each bit sampled independently and counted in log P.

  Anchor -> next input: ``anchor_embedding + mean(h_j for the selected j)`` (zero mean when
  none is selected). A categorical decision feeds back *what was chosen*; the analogue
  here is *which layers were chosen*, and their anchor states are the controller's own
  representation of those layers (ENAS feeds back the same sum, scaled by 1/(1+count)).
  The mean keeps the input's scale independent of how many layers were picked, and the
  learned embedding tells the next step that an anchor, not a token, came before it
  (the first layer's anchor selects nothing and would otherwise feed back zeros, the same
  input as the very first step). The LSTM state itself just continues.

The first step's input is zeros. Every weight — LSTM, classifiers, embeddings, attention,
anchor embedding — starts uniform in [-init_range, init_range] (0.08 in the paper), drawn
from a generator seeded by ``seed`` so two policies with the same seed are identical.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kubenas.controller.spaces.base import Action, Decision


def use_one_thread() -> None:
    """For a controller process: the policy is a 35-unit LSTM run one token at a time, whose
    ops are far too small for intra-op threads; with the default one thread per core, each
    op pays for waking the others (measured: 5x the CPU per sample on 2 cores)."""
    torch.set_num_threads(1)


class LSTMPolicy(nn.Module):
    def __init__(self, categorical_keys: Mapping[str, int], hidden_size: int = 35,
                 num_layers: int = 2, init_range: float = 0.08, seed: int = 0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        keys = sorted(categorical_keys)  # a fixed order, so the seeded init is reproducible
        self.lstm = nn.ModuleList(nn.LSTMCell(hidden_size, hidden_size) for _ in range(num_layers))
        self.classifiers = nn.ModuleDict({k: nn.Linear(hidden_size, categorical_keys[k]) for k in keys})
        self.embeddings = nn.ModuleDict({k: nn.Embedding(categorical_keys[k], hidden_size) for k in keys})
        self.w_prev = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_curr = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, 1, bias=False)
        self.anchor_embedding = nn.Parameter(torch.empty(hidden_size))
        gen = torch.Generator().manual_seed(seed)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range, generator=gen)

    # -- public API ----------------------------------------------------------------------
    def sample(self, plan: Sequence[Decision], generator: torch.Generator
               ) -> tuple[list[Action], torch.Tensor, torch.Tensor]:
        """Sample one architecture along ``plan``: (actions, log P(actions), entropy).

        Call under ``torch.no_grad()`` unless the returned tensors need a graph."""
        return self._walk(plan, None, generator)

    def log_prob(self, plan: Sequence[Decision], actions: Sequence[Action],
                 with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """log P(actions) under the current parameters (differentiable), and the summed
        entropy of the per-step distributions along that trajectory (a zero tensor when
        not ``with_entropy``: a third of the graph saved when no entropy bonus needs it)."""
        _, log_p, entropy = self._walk(plan, actions, None, with_entropy)
        return log_p, entropy

    # -- one pass over the plan ----------------------------------------------------------
    def _walk(self, plan, actions, generator, with_entropy: bool = True):
        """Sample (``actions`` None, drawing from ``generator``) or score ``actions`` along
        ``plan``: (actions taken, summed log P, summed entropy)."""
        if actions is not None and len(actions) != len(plan):
            raise ValueError(f"{len(actions)} actions for a plan of {len(plan)} decisions")
        zeros = torch.zeros(1, self.hidden_size)
        state = [(zeros, zeros) for _ in self.lstm]
        x = zeros
        anchor_h: list[torch.Tensor] = []     # h_j at each earlier anchor, (1, H)
        anchor_proj: list[torch.Tensor] = []  # W_prev h_j, computed once per anchor
        taken: list[Action] = []
        log_p = torch.zeros(())
        entropy = torch.zeros(())
        for t, d in enumerate(plan):
            for layer, cell in enumerate(self.lstm):
                state[layer] = cell(x, state[layer])
                x = state[layer][0]
            h = x
            given = None if actions is None else actions[t]
            if d.kind == "categorical":
                a, x, log_p, entropy = self._categorical(t, d, h, given, generator, log_p,
                                                         entropy, with_entropy)
            elif d.kind == "anchor":
                a, x, log_p, entropy = self._anchor(t, d, h, given, anchor_h, anchor_proj,
                                                    generator, log_p, entropy, with_entropy)
                anchor_h.append(h)
                anchor_proj.append(self.w_prev(h))
            else:
                raise ValueError(f"step {t}: unknown decision kind {d.kind!r}")
            taken.append(a)
        return taken, log_p, entropy

    # The two steps add their log P and entropy before building the next input, as one
    # function did: the autograd graph, and so every gradient, is the same to the bit.
    def _categorical(self, t, d, h, given, generator, log_p, entropy, with_entropy):
        """One token: softmax classifier ``d.key`` on ``h``. -> (token, next input, log_p and
        entropy with this step's added)."""
        logits = self.classifiers[d.key](h)[0]
        logp_all = F.log_softmax(logits, dim=-1)
        if given is None:
            a = int(torch.multinomial(logp_all.exp(), 1, generator=generator))
        else:
            a = int(given)
            if not 0 <= a < logits.numel():
                raise ValueError(f"step {t} ({d.key}): action {a} out of range")
        log_p = log_p + logp_all[a]
        if with_entropy:
            entropy = entropy - (logp_all.exp() * logp_all).sum()
        return a, self.embeddings[d.key].weight[a].unsqueeze(0), log_p, entropy

    def _anchor(self, t, d, h, given, anchor_h, anchor_proj, generator, log_p, entropy,
                with_entropy):
        """Layer ``d.layer``'s skip connections: one Bernoulli per earlier anchor. -> (bits,
        next input, log_p and entropy with this step's added)."""
        if d.layer != len(anchor_h):
            raise ValueError(f"step {t}: anchor of layer {d.layer} after "
                             f"{len(anchor_h)} anchors")
        x = self.anchor_embedding.unsqueeze(0)
        if not anchor_h:
            if given is not None and len(given) != 0:
                raise ValueError(f"step {t}: the first anchor takes no bits, got {given!r}")
            return (), x, log_p, entropy
        scores = self.v(torch.tanh(torch.cat(anchor_proj) + self.w_curr(h)))[:, 0]
        if given is None:
            bits = (torch.rand(scores.shape, generator=generator)
                    < torch.sigmoid(scores)).to(scores.dtype)
        else:
            if len(given) != len(anchor_h):
                raise ValueError(f"step {t}: anchor of layer {d.layer} needs "
                                 f"{len(anchor_h)} bits, got {len(given)}")
            bits = torch.tensor([float(b) for b in given])
        # log P(bits) = sum_j log sigmoid(+-score_j): one Bernoulli per earlier layer
        log_p = log_p + (bits * F.logsigmoid(scores) + (1 - bits) * F.logsigmoid(-scores)).sum()
        if with_entropy:
            p = torch.sigmoid(scores)
            entropy = entropy - (p * F.logsigmoid(scores) + (1 - p) * F.logsigmoid(-scores)).sum()
        taken = tuple(int(b) for b in bits.tolist())
        if bits.sum() > 0:
            x = x + (bits.unsqueeze(0) @ torch.cat(anchor_h)) / bits.sum()
        return taken, x, log_p, entropy
