"""The training loop for the language model (§4.2): truncated BPTT on a PTB id stream.

Plain SGD on the mean per-token cross entropy with gradient-norm clipping (the classic recipe
of Zaremba et al. and PyTorch's word_language_model: lr 20, clip 0.25); the learning rate is
divided by ``lrDecay`` after an epoch whose validation perplexity did not improve. The hidden
state is carried across ``bptt``-long windows (detached) and reset at each epoch.
``maxTokens`` caps the training tokens per epoch; successive epochs then continue through the
training stream where the previous one stopped (so a capped search still sees new text every
epoch). Validation uses ``evalBatchSize`` columns (10, the usual) and at most
``maxEvalTokens`` tokens.

A child that diverges (a non-finite loss or gradient, or a validation perplexity above
``divergencePerplexity``, by default the vocabulary size, i.e. worse than a uniform guess)
raises :class:`~kubenas.trainer.errors.Diverged`, a ``ChildFailure``: a *failed* result with
the reason, not a crash.

After every epoch ``on_epoch(state)`` receives a checkpoint dict; passing it back as
``resume=`` continues with the next epoch, from the same data cursor, learning rate and RNG
state.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from kubenas.contracts import EpochMetrics
from kubenas.trainer.builders.language_model import LanguageModel, detach_state
from kubenas.trainer.data.ptb import batchify, get_batch
from kubenas.trainer.errors import ChildFailure, Diverged
from kubenas.trainer.lm_config import LMConfig
from kubenas.trainer.train import child_failure, set_lr

log = logging.getLogger("kubenas.trainer")

CHECKPOINT_FORMAT = 1


def _perplexity(nll: float) -> float:
    return math.exp(nll) if nll < 700 else float("inf")


@torch.no_grad()
def evaluate(model, ids: Tensor, batch_size: int = 10, bptt: int = 35,
             max_tokens: Optional[int] = None) -> dict:
    """Mean NLL, perplexity and next-word accuracy on a 1-D id stream, state carried across
    ``bptt`` windows. ``model`` is a :class:`LanguageModel` or its TorchScript export."""
    device = next(model.parameters()).device
    if max_tokens is not None:
        ids = ids[:max_tokens + 1]
    data = batchify(ids, batch_size).to(device)
    was_training = model.training
    model.eval()
    state = model.init_state(batch_size)
    total, correct, count = 0.0, 0, 0
    for i in range(0, data.size(0) - 1, bptt):
        x, y = get_batch(data, i, bptt)
        logits, state = model.run(x, state)
        logits = logits.reshape(-1, logits.size(-1)).float()
        total += F.cross_entropy(logits, y.reshape(-1), reduction="sum").item()
        correct += (logits.argmax(-1) == y.reshape(-1)).sum().item()
        count += y.numel()
    model.train(was_training)
    nll = total / max(count, 1)
    return {"loss": nll, "perplexity": _perplexity(nll) if math.isfinite(nll) else float("inf"),
            "accuracy": correct / max(count, 1), "tokens": count}


@dataclass
class FitState:
    """Progress besides the tensors: what a resumed child continues from."""

    epoch: int = 0                      # epochs completed
    cursor: int = 0                     # next row of the batchified training stream
    lr: float = 0.0
    best_val_ppl: float = float("inf")
    best_epoch: int = 0
    steps: int = 0
    metrics: list = field(default_factory=list)  # list[EpochMetrics]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = [asdict(m) if isinstance(m, EpochMetrics) else dict(m) for m in self.metrics]
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "FitState":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["metrics"] = [m if isinstance(m, EpochMetrics) else EpochMetrics(**m)
                         for m in d.get("metrics", [])]
        return cls(**kw)


def train_epoch(model: LanguageModel, optimizer: torch.optim.Optimizer, data: Tensor, cfg: LMConfig,
                st: FitState) -> Tuple[float, float, int]:
    """One (``maxTokens``-capped) pass from ``st.cursor``; returns (mean loss, accuracy, tokens)."""
    model.train()
    state = model.init_state(data.size(1))
    full = (data.size(0) - 1) * data.size(1)
    limit = min(cfg.max_tokens, full) if cfg.max_tokens is not None else full
    if cfg.max_tokens is None:
        st.cursor = 0
    total, correct, tokens = 0.0, 0, 0
    params = [p for p in model.parameters() if p.requires_grad]
    where = lambda: f"epoch {st.epoch + 1}, step {st.steps + 1}"  # noqa: E731
    while tokens < limit:
        if st.cursor >= data.size(0) - 1:                # wrap around the training stream
            st.cursor = 0
            state = model.init_state(data.size(1))
        x, y = get_batch(data, st.cursor, cfg.bptt)
        state = detach_state(state)
        logits, state = model.run(x, state)
        logits = logits.reshape(-1, logits.size(-1))
        loss = F.cross_entropy(logits, y.reshape(-1))
        value = loss.item()
        if not math.isfinite(value):
            raise Diverged(f"training loss became {value} at {where()}", st.metrics)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm))
        if not math.isfinite(norm):
            raise Diverged(f"gradient norm became {norm} at {where()}", st.metrics)
        optimizer.step()
        st.cursor += x.size(0)
        st.steps += 1
        total += value * y.numel()
        correct += (logits.detach().argmax(-1) == y.reshape(-1)).sum().item()
        tokens += y.numel()
    return total / max(tokens, 1), correct / max(tokens, 1), tokens


def _resume(model: LanguageModel, optimizer: torch.optim.Optimizer, cfg: LMConfig,
            resume: Optional[Mapping]) -> Tuple[FitState, Optional[dict]]:
    """(progress, best-validation weights): fresh, or loaded from ``resume``."""
    if resume is None:
        return FitState(lr=cfg.learning_rate), None
    model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    st = FitState.from_dict(resume["fit_state"])
    if resume.get("rng") is not None:
        torch.set_rng_state(resume["rng"])
    log.info("resuming after epoch %d of %d", st.epoch, cfg.epochs)
    return st, resume.get("best_model")


def _check_divergence(val_ppl: float, limit: float, cfg: LMConfig, st: FitState) -> None:
    if not math.isfinite(val_ppl) or val_ppl > limit:
        raise Diverged(f"validation perplexity {val_ppl:.4g} after epoch "
                       f"{st.epoch + 1} exceeds {limit:.6g}"
                       + ("" if cfg.divergence_perplexity else " (a uniform guess)"),
                       st.metrics)


def _epoch(model: LanguageModel, optimizer: torch.optim.Optimizer, data: Tensor, corpus,
           cfg: LMConfig, st: FitState, limit: float) -> float:
    """Train one epoch and validate; record its metrics in ``st``; its validation perplexity."""
    t0 = time.perf_counter()
    loss, acc, tokens = train_epoch(model, optimizer, data, cfg, st)
    train_s = time.perf_counter() - t0
    val = evaluate(model, corpus.valid, cfg.eval_batch_size, cfg.bptt, cfg.max_eval_tokens)
    seconds = time.perf_counter() - t0
    _check_divergence(val["perplexity"], limit, cfg, st)
    st.epoch += 1
    metrics = EpochMetrics(
        epoch=st.epoch, train_loss=loss, val_acc=val["accuracy"], train_acc=acc,
        val_loss=val["loss"], seconds=round(seconds, 4),
        extra={"train_perplexity": _perplexity(loss), "val_perplexity": val["perplexity"],
               "lr": st.lr, "train_tokens": tokens, "val_tokens": val["tokens"],
               "train_seconds": round(train_s, 4),
               "tokens_per_second": round(tokens / max(train_s, 1e-9), 1)})
    st.metrics.append(metrics)
    log.info("epoch %d/%d train_ppl %.2f val_ppl %.2f lr %.4g (%.1fs, %.0f tok/s)",
             st.epoch, cfg.epochs, _perplexity(loss), val["perplexity"], st.lr, seconds,
             metrics.extra["tokens_per_second"])
    return val["perplexity"]


def _checkpoint(model: LanguageModel, optimizer: torch.optim.Optimizer, st: FitState,
                best_weights: Optional[dict]) -> dict:
    return {"format": CHECKPOINT_FORMAT, "epoch": st.epoch,
            "metrics": [asdict(m) for m in st.metrics],
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "best_model": best_weights, "fit_state": st.to_dict(),
            "rng": torch.get_rng_state()}


def fit(model: LanguageModel, corpus, cfg: LMConfig, resume: Optional[Mapping] = None,
        on_epoch: Optional[Callable[[dict], None]] = None) -> Tuple[FitState, dict]:
    """Train for the epochs ``resume`` has not done; return (progress, best-validation weights).

    ``resume`` is a dict ``on_epoch`` produced (``torch.load(weights_only=True)``-safe:
    ``epoch``, ``metrics``, ``model``, ``optimizer``, ``best_model``, ``fit_state``, ``rng``).
    Raises :class:`Diverged`; :class:`OutOfMemory` / :class:`TrainingError` like the image loop."""
    device = next(model.parameters()).device
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    st, best_weights = _resume(model, optimizer, cfg, resume)
    set_lr(optimizer, st.lr)
    data = batchify(corpus.train, cfg.batch_size).to(device)
    limit = cfg.divergence_perplexity or float(corpus.vocab_size)
    try:
        while st.epoch < cfg.epochs:
            val_ppl = _epoch(model, optimizer, data, corpus, cfg, st, limit)
            improved = val_ppl < st.best_val_ppl
            if improved:
                st.best_val_ppl, st.best_epoch = val_ppl, st.epoch
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if (not improved) if cfg.lr_decay_epoch is None else st.epoch >= cfg.lr_decay_epoch:
                st.lr /= cfg.lr_decay
                set_lr(optimizer, st.lr)
            if on_epoch is not None:
                on_epoch(_checkpoint(model, optimizer, st, best_weights))
    except ChildFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted into the architecture's fault or not
        failure = child_failure(exc, st.epoch, st.steps == 0, st.metrics)
        if failure is None:
            raise
        raise failure from exc
    return st, best_weights


__all__ = ["CHECKPOINT_FORMAT", "FitState", "evaluate", "fit", "train_epoch"]
