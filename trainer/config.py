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
      bnEpsilon: 0.00001                    # batch norm epsilon
      lrDecayEpoch: null                    # lr x0.1 from this epoch on (on top of lrSchedule)
      widthMultiplier: 1.0                  # every conv layer's filters x this (spec.final.sizes)

``TrainerConfig.from_dict(d, where="trainer")`` raises ``ContractError`` naming the field,
e.g. ``trainer.epochs: must be a positive integer, got 0``. Unknown keys are errors too
(a typo must not silently fall back to a default); space-specific settings go in ``options``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Union

from kubenas.contracts import ContractError
from kubenas.contracts import fields as F
from kubenas.contracts import names
from kubenas.contracts.names import DATASETS
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
    "bnEpsilon": "bn_epsilon",
    "lrDecayEpoch": "lr_decay_epoch",
    "widthMultiplier": "width_multiplier",
}


# Upper bounds of the counts: far above any sensible child, low enough that a typo is refused
# before a child allocates or loops for it.
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_THREADS = 1_024
MAX_PARAMETERS = 10**12
MAX_EXAMPLES = 10**9
MAX_PADDING = 64
MAX_SEED = 2**32 - 1
MAX_LEARNING_RATE = 1000.0  # the LM's SGD runs at ~20; far beyond, every child diverges
MAX_REWARD_EXPONENT = 100.0


def _optional(check):
    """``check`` that also accepts null (the field's "use the default")."""
    return lambda v, w: None if v is None else check(v, w)


def _device(v: Any, where: str) -> str:
    ok = isinstance(v, str) and (v in ("auto", "cpu", "cuda") or
                                 (v.startswith("cuda:") and v[5:].isdigit()))
    if not ok:
        F.fail(where, f"must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


def _validation_size(v: Any, where: str) -> Union[float, int]:
    if F.is_int(v) and 1 <= v <= MAX_EXAMPLES:
        return v
    if isinstance(v, float) and 0 < v < 1:
        return v
    F.fail(where, f"must be a fraction in (0, 1) or a positive count of examples "
                  f"(at most {MAX_EXAMPLES}), got {v!r}")


def _options(v: Any, where: str) -> dict:
    if not isinstance(v, Mapping):
        F.fail(where, f"must be a mapping, got {v!r}")
    return copy.deepcopy(dict(v))


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "digits"
    path: Optional[str] = None

    @classmethod
    def from_value(cls, value: Any, where: str) -> "DatasetConfig":
        if isinstance(value, str):  # shorthand: dataset: cifar10 (an error names the shorthand)
            return cls(name=F.choice(value, DATASETS, where))
        if not isinstance(value, Mapping):
            F.fail(where, f"must be a mapping like {{name: digits}}, got {value!r}")
        F.refuse_unknown(value, ("name", "path"), where)
        name = F.choice(value.get("name", "digits"), DATASETS, f"{where}.name")
        path = value.get("path")
        if path is not None:
            F.string(path, f"{where}.path", what="a non-empty string or null")
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
    bn_epsilon: float = 1e-5                  # batch norm's epsilon (a final-phase grid axis)
    lr_decay_epoch: Optional[int] = None      # lr x0.1 from this (0-based) epoch on, on top of lrSchedule
    width_multiplier: float = 1.0             # every conv layer's filters x this (final sizes)

    # -- parsing -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Optional[Mapping], where: str = "trainer") -> "TrainerConfig":
        if isinstance(d, TrainerConfig):
            return d
        d = F.mapping(d, where)
        F.refuse_unknown(d, _FIELDS, where,
                         extra_hint="; put space-specific settings in options")
        kw = {_FIELDS[key]: _CHECKS[key](value, F.child(where, key)) for key, value in d.items()}
        cfg = cls(**kw)
        if cfg.nesterov and cfg.momentum <= 0:
            F.fail(F.child(where, "nesterov"),
                   "Nesterov momentum needs momentum > 0 (set nesterov: false)")
        return cfg

    def to_dict(self) -> dict:
        """The camelCase document (``from_dict(to_dict())`` round-trips)."""
        out: dict[str, Any] = {}
        for key, attr in _FIELDS.items():
            value = getattr(self, attr)
            out[key] = asdict(value) if isinstance(value, DatasetConfig) else copy.deepcopy(value)
        return out


def _count(high: int, low: int = 1):
    return lambda v, w: F.integer(v, w, low, high)


def _positive(high: float):
    return lambda v, w: F.number(v, w, minimum=0, maximum=high, min_exclusive=True)


# camelCase key -> check(value, where) -> the dataclass field's value
_CHECKS = {
    "dataset": DatasetConfig.from_value,
    "epochs": _count(MAX_EPOCHS),
    "batchSize": _count(MAX_BATCH),
    "evalBatchSize": _count(MAX_BATCH),
    "channelsLast": F.boolean,
    "learningRate": _positive(MAX_LEARNING_RATE),
    "momentum": lambda v, w: F.number(v, w, minimum=0, maximum=1, max_exclusive=True),
    "nesterov": F.boolean,
    "weightDecay": lambda v, w: F.number(v, w, minimum=0),
    "lrSchedule": lambda v, w: F.choice(v, LR_SCHEDULES, w),
    "rewardWindow": _count(MAX_EPOCHS),
    "rewardExponent": _positive(MAX_REWARD_EXPONENT),
    "validationSize": _validation_size,
    "maxParameters": _optional(_count(MAX_PARAMETERS)),
    "augment": F.boolean,
    "cropPadding": _optional(_count(MAX_PADDING, low=0)),
    "horizontalFlip": _optional(F.boolean),
    "seed": _count(MAX_SEED, low=0),
    "device": _device,
    "numThreads": _optional(_count(MAX_THREADS)),
    "saveModel": F.boolean,
    "options": _options,
    "bnEpsilon": lambda v, w: F.number(v, w, minimum=0, maximum=1, min_exclusive=True),
    "lrDecayEpoch": _optional(_count(MAX_EPOCHS)),
    "widthMultiplier": lambda v, w: F.number(v, w, minimum=0, maximum=16, min_exclusive=True),
}
assert set(_CHECKS) == set(_FIELDS)


def validate_trainer_config(d: Optional[Mapping], space: str = "cnn",
                            where: str = "trainer") -> dict:
    """Validate an experiment's ``trainer`` section for ``space`` before anything starts;
    return it (a plain JSON-able copy) for the children. Errors name the field.

    cnn (and nasbench201, whose trials never train): ``TrainerConfig``; rnn_cell: the
    language model's own config (``kubenas.trainer.lm_config.LMConfig``, imported lazily)."""
    if d is None:
        d = {}
    if space in names.LM_SPACES:
        try:
            from kubenas.trainer.lm_config import LMConfig
        except ImportError as exc:
            raise ContractError(f"{where}: the rnn_cell trainer is not available in this "
                                f"build ({exc})") from None
        LMConfig.from_dict(d, where=where)
        return copy.deepcopy(dict(d))
    cfg = TrainerConfig.from_dict(d, where=where)
    if space in ("cnn", "enas_macro"):
        require_image_dataset(cfg, where)
    return copy.deepcopy(dict(d))


def require_image_dataset(cfg: TrainerConfig, where: str = "trainer") -> None:
    if cfg.dataset.name == "ptb":
        F.fail(f"{where}.dataset.name", "'ptb' is the language-model dataset; the cnn space "
              "needs an image dataset (digits, fashion_mnist, cifar10)")
