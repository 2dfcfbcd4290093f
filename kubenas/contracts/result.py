"""The result record: what a child writes, exactly once, and the controller reads.

    {
      "apiVersion": "kubenas.dev/v1", "kind": "Result",
      "experiment": "quickstart", "trial_id": "quickstart-00017",
      "architecture": {...Architecture.to_dict()...},
      "status": "succeeded" | "failed",
      "reason": null | "ArchitectureError: layer_3 ...",
      "reward": 0.531441 | null,            # null exactly when failed
      "metrics": [{"epoch": 1, "train_loss": .., "train_acc": .., "val_acc": .., "seconds": ..}],
      "timings": {"started_at": "2026-...Z", "finished_at": "...", "train_seconds": 12.3,
                  "total_seconds": 14.0},
      "extra": {...},                         # free-form, e.g. params, device, attempt
      "cost": {"device": "cpu" | "cuda", "gpu_name": null | "NVIDIA H200", "gpu_count": 0,
               "wall_seconds": 14.2, "clock": "process"}   # optional: older records lack it
    }

``cost.wall_seconds`` runs from the child's start (its process, or what ``clock`` names) to
the result; GPU-seconds are that times ``gpu_count``, CPU-seconds that where no GPU was used.

It lives at ``<prefix>/results/<trial_id>.json`` and is written create-only, so a retried
pod or a re-run child can never overwrite (or double-report) a first result.

Valid rewards are finite numbers with ``abs(reward) <= REWARD_LIMIT`` (1e6): every reward
kubenas computes is far inside it (accuracy**3 in [0, 1], c/perplexity, table lookups); a
value outside is a broken child, and the record is refused like any other malformed one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

from kubenas.contracts.architecture import API_VERSION, Architecture
from kubenas.contracts.errors import ContractError
from kubenas.contracts.fields import is_int

KIND = "Result"
STATUSES = ("succeeded", "failed")
REWARD_LIMIT = 1e6
# What an unreadable record's trial "trained", when the trial's description is not at hand.
UNKNOWN_ARCHITECTURE = Architecture(space="unknown", spec={}, tokens=[])


def result_key(trial_id: str) -> str:
    """Storage key (relative to the experiment's prefix) of a trial's result record."""
    return f"results/{trial_id}.json"


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    val_acc: float
    train_acc: Optional[float] = None
    val_loss: Optional[float] = None
    seconds: Optional[float] = None
    extra: dict = field(default_factory=dict)


COST_DEVICES = ("cpu", "cuda")


@dataclass
class Cost:
    """What one trial used, as the child measured it."""
    device: str                     # one of COST_DEVICES: what it trained on
    wall_seconds: float             # from ``clock``'s start to the result
    gpu_count: int = 0              # GPUs it held (0 on a CPU)
    gpu_name: Optional[str] = None
    clock: str = "process"          # what started the clock: "process", or who set it

    @property
    def resource(self) -> str:
        """What the seconds are billed in: "GPU" or "CPU"."""
        return "GPU" if self.gpu_count else "CPU"

    @property
    def seconds(self) -> float:
        """GPU-seconds (wall x GPUs) on a GPU, CPU-seconds (wall) otherwise."""
        return self.wall_seconds * (self.gpu_count or 1)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "cost") -> "Cost":
        _check_cost(doc, where)
        return cls(**{k: doc[k] for k in _COST_TYPES if k in doc})


@dataclass
class ResultRecord:
    experiment: str
    trial_id: str
    architecture: Architecture
    status: str
    reward: Optional[float] = None
    reason: Optional[str] = None
    metrics: list = field(default_factory=list)  # list[EpochMetrics]
    timings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    cost: Optional[Cost] = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ContractError(f"result.status: must be one of {list(STATUSES)}, got {self.status!r}")
        if self.status == "succeeded":
            if not _is_number(self.reward) or not math.isfinite(float(self.reward)) \
                    or abs(float(self.reward)) > REWARD_LIMIT:
                raise ContractError(f"result.reward: a succeeded result needs a finite reward "
                                    f"within +-{REWARD_LIMIT:g}, got {self.reward!r}")
        else:
            if self.reward is not None:
                raise ContractError("result.reward: a failed result carries no reward")
            if not self.reason:
                raise ContractError("result.reason: a failed result must say why")

    @classmethod
    def unreadable(cls, trial_id: str, key: str, error: Exception,
                   architecture: Optional[Architecture] = None) -> "ResultRecord":
        """The failed result standing in for a record at ``key`` that cannot be read or is
        invalid: the trial the key names has failed, with the reason (never a crash, never a
        record skipped forever). ``architecture``: the trial's own, when the caller has it."""
        return cls(experiment=trial_id.rpartition("-")[0], trial_id=trial_id,
                   architecture=architecture or UNKNOWN_ARCHITECTURE, status="failed",
                   reason=f"unreadable result record {key}: {error}",
                   extra={"unreadable": True})

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def to_dict(self) -> dict:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "experiment": self.experiment,
            "trial_id": self.trial_id,
            "architecture": self.architecture.to_dict(),
            "status": self.status,
            "reward": self.reward,
            "reason": self.reason,
            "metrics": [asdict(m) if isinstance(m, EpochMetrics) else dict(m) for m in self.metrics],
            "timings": dict(self.timings),
            "extra": dict(self.extra),
            "cost": None if self.cost is None else asdict(self.cost),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False).encode()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "result") -> "ResultRecord":
        if not isinstance(doc, Mapping):
            raise ContractError(f"{where}: must be a mapping")
        if doc.get("kind", KIND) != KIND:
            raise ContractError(f"{where}.kind: must be {KIND!r}")
        for key in ("experiment", "trial_id", "architecture", "status"):
            if key not in doc:
                raise ContractError(f"{where}.{key}: is required")
        _check_types(doc, where)
        metrics = []
        for i, m in enumerate(doc.get("metrics") or []):
            try:
                metrics.append(EpochMetrics(**m))
            except TypeError as exc:
                raise ContractError(f"{where}.metrics[{i}]: {exc}") from exc
        return cls(
            experiment=doc["experiment"],
            trial_id=doc["trial_id"],
            architecture=Architecture.from_dict(doc["architecture"], f"{where}.architecture"),
            status=doc["status"],
            reward=None if doc.get("reward") is None else float(doc["reward"]),
            reason=doc.get("reason"),
            metrics=metrics,
            timings=dict(doc.get("timings") or {}),
            extra=dict(doc.get("extra") or {}),
            cost=None if doc.get("cost") is None else Cost.from_dict(doc["cost"], f"{where}.cost"),
        )

    @classmethod
    def from_json(cls, data: bytes | str, where: str = "result") -> "ResultRecord":
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ContractError(f"{where}: not valid JSON ({exc})") from exc
        return cls.from_dict(doc, where)


def _is_number(value: Any) -> bool:
    """Any JSON number (finiteness and range are checked with the message that says so)."""
    return is_int(value) or isinstance(value, float)


# field -> (accepted types, what to say); None is accepted where the field is optional
_FIELD_TYPES = {
    "experiment": ((str,), "a string", False),
    "trial_id": ((str,), "a string", False),
    "status": ((str,), "a string", False),
    "reason": ((str,), "a string or null", True),
    "metrics": ((list,), "a list", True),
    "timings": ((Mapping,), "a mapping", True),
    "extra": ((Mapping,), "a mapping", True),
    "cost": ((Mapping,), "a mapping", True),
}
# cost field -> (accepted types, what to say, optional); numbers are checked by _check_cost
_COST_TYPES = {
    "device": ((str,), f"one of {list(COST_DEVICES)}", False),
    "wall_seconds": ((int, float), "a number >= 0", False),
    "gpu_count": ((int,), "an integer >= 0", True),
    "gpu_name": ((str,), "a string or null", True),
    "clock": ((str,), "a string", True),
}


def _check_types(doc: Mapping[str, Any], where: str) -> None:
    """Wrong JSON types are a ContractError naming the field, never a TypeError later."""
    for key, (types, what, optional) in _FIELD_TYPES.items():
        value = doc.get(key)
        if value is None and optional:
            continue
        if not isinstance(value, types):
            raise ContractError(f"{where}.{key}: must be {what}, got {type(value).__name__}")
    reward = doc.get("reward")
    if reward is not None and not _is_number(reward):
        raise ContractError(f"{where}.reward: must be a number or null, "
                            f"got {type(reward).__name__}")
    if is_int(reward) and abs(reward) > REWARD_LIMIT:  # float() of a 400-digit int overflows
        raise ContractError(f"{where}.reward: must be within +-{REWARD_LIMIT:g}, got an integer "
                            f"beyond it")
    for i, m in enumerate(doc.get("metrics") or []):
        if not isinstance(m, Mapping):
            raise ContractError(f"{where}.metrics[{i}]: must be a mapping, got {type(m).__name__}")
        _check_metric(m, f"{where}.metrics[{i}]")


def _check_cost(doc: Any, where: str) -> None:
    """The cost's fields have their types; device is a known kind; counts and seconds are
    finite and not negative (they are summed into an experiment's totals)."""
    if not isinstance(doc, Mapping):
        raise ContractError(f"{where}: must be a mapping, got {type(doc).__name__}")
    for key, (types, what, optional) in _COST_TYPES.items():
        value = doc.get(key)
        if value is None and optional:
            continue
        ok = isinstance(value, types) and not isinstance(value, bool)
        if ok and key == "device":
            ok = value in COST_DEVICES
        if ok and key in ("wall_seconds", "gpu_count"):
            ok = _is_float(value) and math.isfinite(float(value)) and value >= 0
        if not ok:
            raise ContractError(f"{where}.{key}: must be {what}, got {value!r:.80}")


def empty_cost_totals() -> dict:
    """An experiment's cost before any result: trials counted, CPU- and GPU-seconds, and how
    many results carried no cost (older children, records the executor wrote for them)."""
    return {"trials": 0, "cpuSeconds": 0.0, "gpuSeconds": 0.0, "withoutCost": 0}


def add_cost(totals: dict, record: "ResultRecord") -> dict:
    """Count one result into ``totals`` (in place; also returned)."""
    totals["trials"] += 1
    if record.cost is None:
        totals["withoutCost"] += 1
    else:
        key = "gpuSeconds" if record.cost.gpu_count else "cpuSeconds"
        totals[key] = round(totals[key] + record.cost.seconds, 3)
    return totals


def cost_totals(records) -> dict:
    """The totals of ``records``."""
    totals = empty_cost_totals()
    for r in records:
        add_cost(totals, r)
    return totals


def cost_text(totals: Mapping[str, Any]) -> str:
    """The totals in words: "48 trials, 312.4 CPU-seconds (0 GPU-seconds)"."""
    text = (f"{totals['trials']} trials, {_seconds(totals['cpuSeconds'])} CPU-seconds "
            f"({_seconds(totals['gpuSeconds'])} GPU-seconds)")
    if totals.get("withoutCost"):
        text += f", {totals['withoutCost']} without a cost record"
    return text


def _seconds(value: float) -> str:
    return "0" if value == 0 else f"{value:.1f}"


def _check_metric(m: Mapping[str, Any], where: str) -> None:
    """Numbers where readers compute (best val_acc, plots); NaN is allowed: a diverged child
    reports it."""
    if not is_int(m.get("epoch")):
        raise ContractError(f"{where}.epoch: must be an integer, got {type(m.get('epoch')).__name__}")
    for key in ("train_loss", "val_acc", "train_acc", "val_loss", "seconds"):
        value = m.get(key)
        if (value is not None or key in ("train_loss", "val_acc")) and not _is_float(value):
            raise ContractError(f"{where}.{key}: must be a number, got {type(value).__name__}")
    if not isinstance(m.get("extra", {}), Mapping):
        raise ContractError(f"{where}.extra: must be a mapping")


def _is_float(value: Any) -> bool:
    """A number float() takes (any JSON number within float range, NaN included)."""
    return isinstance(value, float) or (is_int(value) and abs(value) <= 2**1023)
