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
      "extra": {...}                          # free-form, e.g. params, device, attempt
    }

It lives at ``<prefix>/results/<trial_id>.json`` and is written create-only, so a retried
pod or a re-run child can never overwrite (or double-report) a first result.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

from kubenas.contracts.architecture import API_VERSION, Architecture
from kubenas.contracts.errors import ContractError

KIND = "Result"
STATUSES = ("succeeded", "failed")


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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ContractError(f"result.status: must be one of {list(STATUSES)}, got {self.status!r}")
        if self.status == "succeeded":
            if self.reward is None or not math.isfinite(float(self.reward)):
                raise ContractError(f"result.reward: a succeeded result needs a finite reward, got {self.reward!r}")
        else:
            if self.reward is not None:
                raise ContractError("result.reward: a failed result carries no reward")
            if not self.reason:
                raise ContractError("result.reason: a failed result must say why")

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
        metrics = []
        for i, m in enumerate(doc.get("metrics") or []):
            try:
                metrics.append(EpochMetrics(**m))
            except TypeError as exc:
                raise ContractError(f"{where}.metrics[{i}]: {exc}") from exc
        return cls(
            experiment=str(doc["experiment"]),
            trial_id=str(doc["trial_id"]),
            architecture=Architecture.from_dict(doc["architecture"], f"{where}.architecture"),
            status=doc["status"],
            reward=None if doc.get("reward") is None else float(doc["reward"]),
            reason=doc.get("reason"),
            metrics=metrics,
            timings=dict(doc.get("timings") or {}),
            extra=dict(doc.get("extra") or {}),
        )

    @classmethod
    def from_json(cls, data: bytes | str, where: str = "result") -> "ResultRecord":
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{where}: not valid JSON ({exc})") from exc
        return cls.from_dict(doc, where)
