"""The recurrent child's network (§4.2): a word-level language model built around a searched
cell, from an ``rnn_cell`` architecture and an :class:`~kubenas.trainer.lm_config.LMConfig`.

Model: embedding -> ``layers`` x the cell's layer (:class:`~kubenas.trainer.builders.rnn_cell.
RNNTreeLayer` for an ``rnn_cell`` architecture, :class:`~kubenas.trainer.enas.recurrent.
EnasRnnLayer` for an ``enas_rnn`` one) -> linear decoder over the vocabulary, with the
regularisers of §4.2:

* ``embeddingDropout``: drops whole word types from the embedding matrix (Gal & Ghahramani);
* ``dropout``: variational ("locked") dropout on every layer's input and on the last layer's
  output, one mask per batch of sequences shared by all time steps;
* ``recurrentDropout``: a mask on h_{t-1} where it enters the recurrence, shared by all steps;
* ``tieWeights``: the decoder shares the embedding matrix (needs embeddingSize == hiddenSize).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kubenas.contracts import Architecture, ContractError
from kubenas.trainer.builders.rnn_cell import RNNTreeLayer, parse_cell
from kubenas.trainer.errors import ArchitectureError, TooLarge
from kubenas.trainer.lm_config import LMConfig

State = List[Tuple[Tensor, Tensor]]


def _locked_mask(like: Tensor, shape: List[int], p: float) -> Tensor:
    return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)


class LanguageModel(nn.Module):
    """Embedding -> ``layers`` recurrent tree-cell layers -> decoder.

    ``run(tokens, state)`` -> ``(logits, state)`` is what training and evaluation use;
    ``forward(tokens)`` starts from a zero state and returns the logits only (the export form:
    ``torch.jit.script`` works on it, ``run`` is exported alongside)."""

    def __init__(self, architecture, vocab_size: int, embedding_size: int = 64, hidden_size: int = 64,
                 layers: int = 2, dropout: float = 0.0, embedding_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, tie_weights: bool = False, cell_bias: bool = True,
                 init_range: float = 0.1,
                 make_layer: Optional[Callable[[int, int], nn.Module]] = None) -> None:
        super().__init__()
        if tie_weights and embedding_size != hidden_size:
            raise ValueError("tied weights need embedding_size == hidden_size")
        self.vocab_size = int(vocab_size)
        self.embedding_size = int(embedding_size)
        self.hidden_size = int(hidden_size)
        self.dropout = float(dropout)
        self.embedding_dropout = float(embedding_dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.encoder = nn.Embedding(vocab_size, embedding_size)
        make_layer = make_layer or (lambda n_in, n_hidden: cell_layer(architecture, n_in, n_hidden,
                                                                      cell_bias))
        self.rnns = nn.ModuleList([make_layer(embedding_size if i == 0 else hidden_size, hidden_size)
                                   for i in range(layers)])
        self.decoder = nn.Linear(hidden_size, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight

    @classmethod
    def from_config(cls, architecture, vocab_size: int, cfg: LMConfig,
                    make_layer: Optional[Callable[[int, int], nn.Module]] = None) -> "LanguageModel":
        return cls(architecture, vocab_size, cfg.embedding_size, cfg.hidden_size, cfg.layers,
                   cfg.dropout, cfg.embedding_dropout, cfg.recurrent_dropout, cfg.tie_weights,
                   cfg.cell_bias, cfg.init_range, make_layer)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix counts once

    @torch.jit.export
    def init_state(self, batch: int) -> List[Tuple[Tensor, Tensor]]:
        w = self.decoder.weight
        return [(w.new_zeros(batch, self.hidden_size), w.new_zeros(batch, self.hidden_size))
                for _ in range(len(self.rnns))]

    def _embed(self, tokens: Tensor) -> Tensor:
        weight = self.encoder.weight
        if self.training and self.embedding_dropout > 0:  # drop word types, not single tokens
            weight = weight * _locked_mask(weight, [weight.size(0), 1], self.embedding_dropout)
        return F.embedding(tokens, weight)

    @torch.jit.export
    def run(self, tokens: Tensor, state: List[Tuple[Tensor, Tensor]]
            ) -> Tuple[Tensor, List[Tuple[Tensor, Tensor]]]:
        """``tokens`` ``(time, batch)`` -> logits ``(time, batch, vocab)`` and the next state."""
        x = self._embed(tokens)
        N = tokens.size(1)
        drop = self.training and self.dropout > 0
        new_state: List[Tuple[Tensor, Tensor]] = []
        for i, rnn in enumerate(self.rnns):
            if drop:
                x = x * _locked_mask(x, [1, N, x.size(2)], self.dropout)
            h_mask: Optional[Tensor] = None
            if self.training and self.recurrent_dropout > 0:
                h_mask = _locked_mask(x, [N, self.hidden_size], self.recurrent_dropout)
            x, st = rnn(x, state[i], h_mask)
            new_state.append(st)
        if drop:
            x = x * _locked_mask(x, [1, N, x.size(2)], self.dropout)
        return self.decoder(x), new_state

    def forward(self, tokens: Tensor) -> Tensor:
        return self.run(tokens, self.init_state(tokens.size(1)))[0]


def detach_state(state: State) -> State:
    return [(h.detach(), c.detach()) for h, c in state]


def _space(architecture) -> Optional[str]:
    if isinstance(architecture, Architecture):
        return architecture.space
    return architecture.get("space") if isinstance(architecture, dict) else None


def cell_layer(architecture, input_size: int, hidden_size: int, bias: bool) -> nn.Module:
    """The recurrent layer of ``architecture``'s cell (by its space; a bare spec: rnn_cell)."""
    if _space(architecture) == "enas_rnn":
        from kubenas.trainer.enas.recurrent import EnasRnnLayer
        return EnasRnnLayer(architecture, input_size, hidden_size, bias)
    return RNNTreeLayer(architecture, input_size, hidden_size, bias=bias)


def build_language_model(architecture, vocab_size: int, cfg: LMConfig) -> LanguageModel:
    """The model, or :class:`ArchitectureError` / :class:`TooLarge` (both failed results)."""
    try:
        if _space(architecture) == "enas_rnn":
            from kubenas.trainer.enas.recurrent import enas_rnn_spec
            enas_rnn_spec(architecture)
        else:
            parse_cell(architecture)
    except ContractError as exc:
        raise ArchitectureError(str(exc)) from exc
    model = LanguageModel.from_config(architecture, vocab_size, cfg)
    n = model.num_parameters()
    if cfg.max_parameters is not None and n > cfg.max_parameters:
        raise TooLarge(f"{n:,} parameters exceed maxParameters={cfg.max_parameters:,}")
    return model


def build_lm_supernet(nodes: int, vocab_size: int, cfg: LMConfig) -> LanguageModel:
    """The language model whose layers are ``enas_rnn`` supernets of ``nodes`` nodes (every
    edge j < k): ``kubenas.trainer.enas.recurrent.set_lm_path`` picks the cell to run."""
    from kubenas.trainer.enas.recurrent import EnasRnnSupernet
    return LanguageModel.from_config(None, vocab_size, cfg, make_layer=lambda n_in, n_hidden:
                                     EnasRnnSupernet(nodes, n_in, n_hidden, bias=cfg.cell_bias))


__all__ = ["LanguageModel", "State", "build_language_model", "build_lm_supernet", "cell_layer",
           "detach_state"]
