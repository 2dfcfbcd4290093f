"""The ``enas_rnn`` supernet's training on Penn Treebank, and a path's reward.

``TokenWindows`` cuts a batchified id stream into ``bptt``-long windows; like ``Batches``
for images, a window is a pure function of the position (epoch, index), so a resumed run
sees the windows it would have seen. Each window starts from a zero state (no hidden state
crosses windows: nothing but the position to checkpoint; ENAS carries it, which helps its
perplexity a little). ``maxTokens`` caps the windows per epoch; successive epochs continue
through the stream. A path's reward is ENAS's ``rewardC / perplexity`` on one validation
window (the per-child search uses c / perplexity², §4.2).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kubenas.trainer.data.ptb import batchify, get_batch
from kubenas.trainer.enas.recurrent import set_lm_path


class TokenWindows:
    def __init__(self, ids: Tensor, batch_size: int, bptt: int,
                 max_tokens: Optional[int] = None) -> None:
        self.data = batchify(ids, batch_size)
        self.bptt = bptt
        self.starts = list(range(0, self.data.size(0) - 1, bptt))
        per_epoch = len(self.starts)
        if max_tokens is not None:
            per_epoch = max(1, min(per_epoch, max_tokens // (batch_size * bptt)))
        self.per_epoch = per_epoch

    def to(self, device) -> "TokenWindows":
        self.data = self.data.to(device)
        return self

    def __len__(self) -> int:
        return self.per_epoch

    def batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor]:
        s = self.starts[(epoch * self.per_epoch + index) % len(self.starts)]
        return get_batch(self.data, s, self.bptt)


def _loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    logits, _ = model.run(x, model.init_state(x.size(1)))
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def lm_shared_step(model: nn.Module, optimizer: torch.optim.Optimizer, spec: Mapping,
                   x: Tensor, y: Tensor, clip_norm: float) -> float:
    """One SGD step of the supernet language model on the cell ``spec``; the loss."""
    set_lm_path(model, spec)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = _loss(model, x, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def lm_path_reward(model: nn.Module, spec: Mapping, x: Tensor, y: Tensor,
                   reward_c: float) -> float:
    """``reward_c / perplexity`` of the cell ``spec`` on one window (0 if it diverged)."""
    set_lm_path(model, spec)
    model.eval()
    nll = float(_loss(model, x, y))
    return reward_c / math.exp(nll) if math.isfinite(nll) and nll < 700 else 0.0


def train_lm_part(model: nn.Module, optimizer: torch.optim.Optimizer, windows: TokenWindows,
                  epoch: int, start: int, stop: int, sample_spec: Callable[[], Mapping],
                  clip_norm: float) -> list[float]:
    """Shared-weight steps ``start``..``stop`` of ``epoch``, one freshly sampled cell each."""
    return [lm_shared_step(model, optimizer, sample_spec(), *windows.batch(epoch, i), clip_norm)
            for i in range(start, stop)]


__all__ = ["TokenWindows", "lm_path_reward", "lm_shared_step", "train_lm_part"]
