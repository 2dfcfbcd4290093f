"""Training the supernet's shared weights, and scoring a path on a validation minibatch.

Batches are a pure function of the data position (epoch, batch index): each epoch's order
is a permutation seeded by (seed, epoch), so a run resumed from a checkpoint that records
the position sees exactly the batches it would have seen (no generator state to save).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kubenas.trainer.data import ImageSplit
from kubenas.trainer.data.augment import to_float
from kubenas.trainer.train import batch_starts


class Batches:
    """Minibatches of ``split``: ``batch(epoch, index)``; ``len(self)`` per epoch."""

    def __init__(self, split: ImageSplit, batch_size: int, seed: int) -> None:
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.starts = batch_starts(len(split), batch_size)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.split), generator=gen)
        s = self.starts[index % len(self.starts)]
        take = order[s:s + self.batch_size].to(self.split.images.device)
        return to_float(self.split.images[take]), self.split.labels[take]


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Per-epoch cosine decay from ``base`` (a function of the position: nothing to save)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def shared_step(supernet: nn.Module, optimizer: torch.optim.Optimizer, spec: Mapping,
                images: Tensor, labels: Tensor, grad_clip: float | None = 5.0) -> float:
    """One SGD step on the path ``spec`` (only its weights get gradients); the batch loss."""
    supernet.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(supernet(images, spec), labels)
    loss.backward()
    if grad_clip is not None:  # ENAS clips the shared weights' gradient norm at 5
        nn.utils.clip_grad_norm_(supernet.parameters(), grad_clip)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def path_accuracy(supernet: nn.Module, spec: Mapping, images: Tensor, labels: Tensor) -> float:
    """Accuracy of the path ``spec`` on one batch: the policy's reward."""
    supernet.train()  # batch statistics: the supernet keeps no running ones
    return float((supernet(images, spec).argmax(1) == labels).float().mean())


def train_epoch_part(supernet: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches,
                     epoch: int, start: int, stop: int, sample_spec: Callable[[], Mapping]
                     ) -> list[float]:
    """Shared-weight steps ``start``..``stop`` of ``epoch``, one freshly sampled path each."""
    return [shared_step(supernet, optimizer, sample_spec(), *batches.batch(epoch, i))
            for i in range(start, stop)]
