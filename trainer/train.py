"""The training loop for image classifiers (§4.1): SGD with Nesterov momentum.

Defaults (``TrainerConfig``): lr 0.1, momentum 0.9, Nesterov, weight decay 1e-4, a
per-step cosine schedule (or step: x0.1 at 50% and 75% of the epochs, or constant).
Data stays in memory on the training device; batches are cut from a seeded permutation
and augmented as tensors. Each epoch's shuffling and augmentation draw from a generator
seeded by (seed, epoch), so a run resumed after epoch k sees exactly the batches an
uninterrupted run would.

After every epoch ``on_epoch(state)`` receives a checkpoint dict (``state["epoch"]``
epochs done, model/optimizer state dicts, the metrics so far); passing that dict back as
``resume=`` continues with the next epoch.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from kubenas.contracts import EpochMetrics
from kubenas.trainer.config import TrainerConfig
from kubenas.trainer.data.augment import BatchAugment, to_float
from kubenas.trainer.data.base import ImageSplit
from kubenas.trainer.errors import ChildFailure, OutOfMemory, TrainingError

log = logging.getLogger("kubenas.trainer")

CHECKPOINT_FORMAT = 1


@dataclass
class TrainOutcome:
    """What a space's trainer returns to ``train_child`` on success."""

    metrics: list                       # list[EpochMetrics], one per epoch, in order
    reward: float
    extra: dict = field(default_factory=dict)
    model: Optional[nn.Module] = None   # for saveModel / export
    example_input: Optional[torch.Tensor] = None


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device: {name!r} asked for, but CUDA is not available")
    return torch.device(name)


def make_optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate,
                           momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)


def lr_at(config: TrainerConfig, step: int, total_steps: int, epoch: int) -> float:
    """Learning rate of global ``step`` (0-based) in 0-based ``epoch``."""
    base = config.learning_rate
    if config.lr_decay_epoch is not None and epoch >= config.lr_decay_epoch:
        base *= 0.1
    if config.lr_schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * step / max(total_steps, 1)))
    if config.lr_schedule == "step":
        passed = sum(epoch >= m for m in (config.epochs * 0.5, config.epochs * 0.75))
        return base * 0.1 ** passed
    return base


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Batch offsets for ``n`` examples; a trailing batch of one (which batch norm cannot
    normalise when a layer's maps are 1x1) is dropped."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or
                                              "can't allocate memory" in text)


@torch.inference_mode()
def evaluate(model: nn.Module, data: ImageSplit, batch_size: int = 512,
             memory_format: torch.memory_format = torch.contiguous_format) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``data`` (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=data.images.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.images.device)
    for s in range(0, len(data), batch_size):
        x, y = data.images[s:s + batch_size], data.labels[s:s + batch_size]
        logits = model(to_float(x, memory_format))
        loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(len(data), 1)
    return loss.item() / n, correct.item() / n


def child_failure(exc: BaseException, epoch: int, first_step: bool,
                  metrics: list) -> Optional[ChildFailure]:
    """The architecture's fault ``exc`` (raised in 0-based ``epoch``) is, or None: running out
    of memory, or the very first training step failing (a shape or kernel error)."""
    if is_oom(exc):
        return OutOfMemory(f"epoch {epoch + 1}: {type(exc).__name__}: {_first_line(exc)}", metrics)
    if first_step:
        return TrainingError(f"the first training step failed: {type(exc).__name__}: "
                             f"{_first_line(exc)}", metrics)
    return None


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class _Batches:
    """What every epoch of one ``fit`` cuts its batches from, and the steps taken so far."""

    train: ImageSplit
    starts: list[int]
    augment: BatchAugment
    memory_format: torch.memory_format
    steps_done: int = 0     # still 0 when an error comes: the very first step failed


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, resume: Optional[dict],
            config: TrainerConfig) -> tuple[list[EpochMetrics], int]:
    """Load ``resume`` (a checkpoint ``on_epoch`` received) if given: (metrics, epochs done)."""
    if resume is None:
        return [], 0
    model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    log.info("resuming after epoch %d of %d", int(resume["epoch"]), config.epochs)
    return [EpochMetrics(**m) for m in resume["metrics"]], int(resume["epoch"])


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: _Batches,
                 config: TrainerConfig, epoch: int, device: torch.device
                 ) -> tuple[float, float, int, float]:
    """One pass in 0-based ``epoch``'s seeded order: (mean loss, accuracy, examples, last lr)."""
    n, starts = len(batches.train), batches.starts
    total_steps = config.epochs * len(starts)
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).to(device)
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    lr = config.learning_rate
    for i, s in enumerate(starts):
        idx = perm[s:s + config.batch_size]
        x = batches.augment(batches.train.images[idx], gen, batches.memory_format)
        y = batches.train.labels[idx]
        lr = lr_at(config, epoch * len(starts) + i, total_steps, epoch)
        set_lr(optimizer, lr)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        batches.steps_done += 1
        loss_sum += loss.detach().double() * len(idx)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(idx)
    return loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1), seen, lr


def _epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: _Batches, val: ImageSplit,
           config: TrainerConfig, epoch: int, device: torch.device) -> EpochMetrics:
    """Train 0-based ``epoch`` and validate: its metrics (logged)."""
    t0 = time.perf_counter()
    train_loss, train_acc, seen, lr = _train_epoch(model, optimizer, batches, config, epoch, device)
    t_train = time.perf_counter() - t0
    val_loss, val_acc = evaluate(model, val, config.eval_batch_size, batches.memory_format)
    seconds = time.perf_counter() - t0
    m = EpochMetrics(epoch=epoch + 1, train_loss=train_loss, val_acc=val_acc,
                     train_acc=train_acc, val_loss=val_loss, seconds=round(seconds, 4),
                     extra={"lr": lr, "train_seconds": round(t_train, 4),
                            "images_per_second": round(seen / max(t_train, 1e-9), 1)})
    log.info("epoch %d/%d train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f "
             "(%.1fs, %.0f img/s)", epoch + 1, config.epochs, train_loss, train_acc,
             val_loss, val_acc, seconds, m.extra["images_per_second"])
    return m


def fit(model: nn.Module, train: ImageSplit, val: ImageSplit, config: TrainerConfig, *,
        augment: Optional[BatchAugment] = None, device: Optional[torch.device] = None,
        resume: Optional[dict] = None,
        on_epoch: Optional[Callable[[dict], None]] = None) -> list[EpochMetrics]:
    """Train ``model`` for ``config.epochs`` epochs; return one EpochMetrics per epoch.

    Raises ``OutOfMemory`` when memory runs out and ``TrainingError`` when the very first
    step fails (both ``ChildFailure``: the architecture's fault); other errors propagate."""
    device = device or next(model.parameters()).device
    # NHWC activations: mkldnn/cuDNN convolutions run faster on them (measured ~25% per
    # training step on CPU, see benchmarks/trainer_throughput.py); the maths is unchanged.
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt)
    train, val = train.to(device), val.to(device)
    optimizer = make_optimizer(model, config)
    metrics, start_epoch = _resume(model, optimizer, resume, config)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    batches = _Batches(train, batch_starts(len(train), config.batch_size),
                       augment or BatchAugment(), fmt)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            metrics.append(_epoch(model, optimizer, batches, val, config, epoch, device))
            if on_epoch is not None:
                on_epoch({"format": CHECKPOINT_FORMAT, "epoch": epoch + 1,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "metrics": [asdict(x) for x in metrics]})
    except ChildFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted into the architecture's fault or not
        failure = child_failure(exc, epoch, batches.steps_done == 0 and not metrics, metrics)
        if failure is None:
            raise
        if isinstance(failure, OutOfMemory) and device.type == "cuda":
            torch.cuda.empty_cache()
        raise failure from exc
    return metrics


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else ""
