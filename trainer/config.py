"""The ``trainer`` section of an experiment: validated, with the paper's §4.1 defaults.

    trainer:
      dataset: {name: digits, path: null}   # digits | fashion_mnist | cifar10 | ptb
      epochs: 5
      batchSize: 64
      learningRate: 0.1                     # SGD, Nesterov momentum 0.9, weight decay 1e-4
      momentum: 0.9
      nesterov: true
      weightDecay: 0.0001
      lrSchedule: cosine                    # cosine | step (x0.1 at 50% and 75%) | constant
      rewardWindow: 5                       # reward = max(val_acc of the last 5 epochs) ** 3
      rewardExponent: 3
      validationSize: 0.1                   # fraction in (0, 1) or an absolute count
      maxParameters: 5000000                # null: no limit
      augment: true                         # padded random crop (+ flip where the data allow)
      cropPadding: null                     # null: the dataset's default (digits 1, others 4)
      horizontalFlip: null                  # null: the dataset's default (not for digits)
      evalBatchSize: 512
      channelsLast: true                    # NHWC activations (~25% faster training on CPU)
      seed: 0
      device: auto                          # auto | cpu | cuda | cuda:N
      numThreads: null                      # torch CPU threads; null: torch's default
      saveModel: true                       # store models/<trial>.pt (TorchScript): best_model.pt
      options: {}                           # free-form, for a space's own trainer (e.g. the LM)

``TrainerConfig.from_dict(d, where="trainer")`` raises ``ContractError`` naming the field,
e.g. ``trainer.epochs: must be a positive integer, got 0``. Unknown keys are errors too
(a typo must not silently fall back to a default); space-specific settings go in ``options``.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Union

from kubenas.contracts import ContractError

DATASETS = ("digits", "fashion_mnist", "cifar10", "ptb")
LR_SCHEDULES = ("cosine", "step", "constant")

# camelCase key -> dataclass field
_FIELDS = {
    "dataset": "dataset",
    "epochs": "epochs",
    "batchSize": "batch_size",
    "evalBatchSize": "eval_batch_size",
    "channelsLast": "channels_last",
    "learningRate": "learning_rate",
    "momentum": "momentum",
    "nesterov": "nesterov",
    "weightDecay": "weight_decay",
    "lrSchedule": "lr_schedule",
    "rewardWindow": "reward_window",
    "rewardExponent": "reward_exponent",
    "validationSize": "validation_size",
    "maxParameters": "max_parameters",
    "augment": "augment",
    "cropPadding": "crop_padding",
    "horizontalFlip": "horizontal_flip",
    "seed": "seed",
    "device": "device",
    "numThreads": "num_threads",
    "saveModel": "save_model",
    "options": "options",
}


def _fail(where: str, msg: str) -> None:
    raise ContractError(f"{where}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _pos_int(v: Any, where: str) -> int:
    if not (_is_int(v) and v > 0):
        _fail(where, f"must be a positive integer, got {v!r}")
    return v


def _nonneg_int(v: Any, where: str) -> int:
    if not (_is_int(v) and v >= 0):
        _fail(where, f"must be a non-negative integer, got {v!r}")
    return v


def _nonneg_num(v: Any, where: str) -> float:
    if not (_is_num(v) and v >= 0):
        _fail(where, f"must be a non-negative number, got {v!r}")
    return float(v)


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        _fail(where, f"must be true or false, got {v!r}")
    return v


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "digits"
    path: Optional[str] = None

    @classmethod
    def from_value(cls, value: Any, where: str) -> "DatasetConfig":
        if isinstance(value, str):  # shorthand: dataset: cifar10
            value = {"name": value}
        if not isinstance(value, Mapping):
            _fail(where, f"must be a mapping like {{name: digits}}, got {value!r}")
        unknown = sorted(set(value) - {"name", "path"})
        if unknown:
            _fail(f"{where}.{unknown[0]}", "unknown field (known: name, path)")
        name = value.get("name", "digits")
        if name not in DATASETS:
            _fail(f"{where}.name", f"must be one of {list(DATASETS)}, got {name!r}")
        path = value.get("path")
        if path is not None and not (isinstance(path, str) and path):
            _fail(f"{where}.path", f"must be a non-empty string or null, got {path!r}")
        return cls(name=name, path=path)


@dataclass(frozen=True)
class TrainerConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 512
    channels_last: bool = True
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"
    reward_window: int = 5
    reward_exponent: float = 3.0
    validation_size: Union[float, int] = 0.1
    max_parameters: Optional[int] = 5_000_000
    augment: bool = True
    crop_padding: Optional[int] = None
    horizontal_flip: Optional[bool] = None
    seed: int = 0
    device: str = "auto"
    num_threads: Optional[int] = None
    save_model: bool = True
    options: dict = field(default_factory=dict)

    # -- parsing -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Optional[Mapping], where: str = "trainer") -> "TrainerConfig":
        if d is None:
            d = {}
        if isinstance(d, TrainerConfig):
            return d
        if not isinstance(d, Mapping):
            _fail(where, f"must be a mapping, got {type(d).__name__}")
        for key in d:
            if key not in _FIELDS:
                hint = difflib.get_close_matches(str(key), list(_FIELDS), n=1)
                _fail(f"{where}.{key}", "unknown field"
                      + (f" (did you mean {hint[0]!r}?)" if hint else
                         f" (known: {', '.join(_FIELDS)}; put space-specific settings in options)"))
        kw: dict[str, Any] = {}
        w = lambda k: f"{where}.{k}"  # noqa: E731
        if "dataset" in d:
            kw["dataset"] = DatasetConfig.from_value(d["dataset"], w("dataset"))
        for key in ("epochs", "batchSize", "evalBatchSize", "rewardWindow"):
            if key in d:
                kw[_FIELDS[key]] = _pos_int(d[key], w(key))
        for key in ("learningRate", "rewardExponent"):
            if key in d:
                v = d[key]
                if not (_is_num(v) and v > 0):
                    _fail(w(key), f"must be a positive number, got {v!r}")
                kw[_FIELDS[key]] = float(v)
        if "momentum" in d:
            v = d["momentum"]
            if not (_is_num(v) and 0 <= v < 1):
                _fail(w("momentum"), f"must be a number in [0, 1), got {v!r}")
            kw["momentum"] = float(v)
        if "weightDecay" in d:
            kw["weight_decay"] = _nonneg_num(d["weightDecay"], w("weightDecay"))
        for key in ("nesterov", "augment", "saveModel", "channelsLast"):
            if key in d:
                kw[_FIELDS[key]] = _bool(d[key], w(key))
        if "lrSchedule" in d:
            if d["lrSchedule"] not in LR_SCHEDULES:
                _fail(w("lrSchedule"), f"must be one of {list(LR_SCHEDULES)}, got {d['lrSchedule']!r}")
            kw["lr_schedule"] = d["lrSchedule"]
        if "validationSize" in d:
            v = d["validationSize"]
            if _is_int(v) and v >= 1:
                kw["validation_size"] = v
            elif isinstance(v, float) and 0 < v < 1:
                kw["validation_size"] = v
            else:
                _fail(w("validationSize"),
                      f"must be a fraction in (0, 1) or a positive count of examples, got {v!r}")
        if "maxParameters" in d:
            v = d["maxParameters"]
            kw["max_parameters"] = None if v is None else _pos_int(v, w("maxParameters"))
        if "cropPadding" in d:
            v = d["cropPadding"]
            kw["crop_padding"] = None if v is None else _nonneg_int(v, w("cropPadding"))
        if "horizontalFlip" in d:
            v = d["horizontalFlip"]
            kw["horizontal_flip"] = None if v is None else _bool(v, w("horizontalFlip"))
        if "seed" in d:
            kw["seed"] = _nonneg_int(d["seed"], w("seed"))
        if "device" in d:
            v = d["device"]
            ok = isinstance(v, str) and (v in ("auto", "cpu", "cuda") or
                                         (v.startswith("cuda:") and v[5:].isdigit()))
            if not ok:
                _fail(w("device"), f"must be auto, cpu, cuda or cuda:N, got {v!r}")
            kw["device"] = v
        if "numThreads" in d:
            v = d["numThreads"]
            kw["num_threads"] = None if v is None else _pos_int(v, w("numThreads"))
        if "options" in d:
            v = d["options"]
            if not isinstance(v, Mapping):
                _fail(w("options"), f"must be a mapping, got {v!r}")
            kw["options"] = copy.deepcopy(dict(v))
        cfg = cls(**kw)
        if cfg.nesterov and cfg.momentum <= 0:
            _fail(w("nesterov"), "Nesterov momentum needs momentum > 0 (set nesterov: false)")
        return cfg

    def to_dict(self) -> dict:
        """The camelCase document (``from_dict(to_dict())`` round-trips)."""
        out: dict[str, Any] = {}
        for key, attr in _FIELDS.items():
            value = getattr(self, attr)
            out[key] = asdict(value) if isinstance(value, DatasetConfig) else copy.deepcopy(value)
        return out


def validate_trainer_config(d: Optional[Mapping], space: str = "cnn",
                            where: str = "trainer") -> dict:
    """Validate an experiment's ``trainer`` section for ``space`` before anything starts;
    return it (a plain JSON-able copy) for the children. Errors name the field.

    cnn (and nasbench201, whose trials never train): ``TrainerConfig``; rnn_cell: the
    language model's own config (``kubenas.trainer.lm.LMConfig``, imported lazily)."""
    if d is None:
        d = {}
    if space == "rnn_cell":
        try:
            from kubenas.trainer.lm import LMConfig
        except ImportError as exc:
            raise ContractError(f"{where}: the rnn_cell trainer is not available in this "
                                f"build ({exc})") from None
        LMConfig.from_dict(d, where=where)
        return copy.deepcopy(dict(d))
    cfg = TrainerConfig.from_dict(d, where=where)
    if space == "cnn":
        require_image_dataset(cfg, where)
    return copy.deepcopy(dict(d))


def require_image_dataset(cfg: TrainerConfig, where: str = "trainer") -> None:
    if cfg.dataset.name == "ptb":
        _fail(f"{where}.dataset.name", "'ptb' is the language-model dataset; the cnn space "
              "needs an image dataset (digits, fashion_mnist, cifar10)")
