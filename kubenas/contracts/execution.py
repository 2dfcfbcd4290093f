"""What the search loop talks to: an executor that launches trials, a source of results.

A contract, like the architecture description and the result record: the controller room's
search loop calls these, the operator room and the ground floor implement them.
Implementations: ``kubenas.local.executor.ProcessExecutor`` (children as local processes),
``kubenas.operator.executor.KubernetesExecutor`` (Trial objects -> Jobs),
``kubenas.controller.results.StoreResultSource`` (result records in the store) and, outside
the product, ``benchmarks.nasbench201.simulated.TableExecutor`` (NAS-Bench-201 lookups,
simulated time).
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass, field
from typing import Container, Optional

from kubenas.contracts.architecture import Architecture
from kubenas.contracts.result import ResultRecord


@dataclass(frozen=True)
class TrialRequest:
    """One sampled architecture to train. ``trial_id`` is unique within the experiment and
    is the idempotency key: submitting the same id twice must not start a second child."""

    trial_id: str
    architecture: Architecture
    pool: Optional[str] = None
    labels: dict = field(default_factory=dict)
    # Trainer settings of this trial over the experiment's (the final phase's grid points and
    # retrain); empty for a search trial.
    trainer: dict = field(default_factory=dict)

    def trainer_config(self, base: dict) -> dict:
        """The experiment's trainer section with this trial's settings over it; a key the
        section gives under ``options`` (the language model's way) is set there."""
        out = copy.deepcopy(dict(base or {}))
        options = out.get("options") if isinstance(out.get("options"), dict) else {}
        for key, value in self.trainer.items():
            (options if key in options else out)[key] = copy.deepcopy(value)
        return out


class TrialRefused(Exception):
    """``Executor.submit`` cannot run this trial, now or ever (an object of its name already
    exists and is not this sample). The loop records a failed result with this message as
    the reason, so the search goes on and the trial is never credited with another's result."""


class Executor(abc.ABC):
    @abc.abstractmethod
    def free_slots(self, pool: Optional[str] = None) -> int:
        """How many more trials may be submitted now (to ``pool``, or in all)."""

    @abc.abstractmethod
    def submit(self, request: TrialRequest) -> None:
        """Start training ``request`` (idempotent by trial_id); raise TrialRefused if it
        can never run."""

    def in_flight(self) -> set[str]:
        """Trial ids submitted whose result has not been delivered yet (best effort)."""
        return set()

    def close(self) -> None:
        """Stop what this executor started, if it owns it."""


class ResultSource(abc.ABC):
    @abc.abstractmethod
    def poll(self, known: Container[str], timeout: float = 0.0,
             start_after: Optional[str] = None) -> list[ResultRecord]:
        """Results whose trial_id is not in ``known`` (anything supporting ``in``: the loop
        passes its compact applied set, never a set of every id), in arrival order; may wait
        ``timeout``. ``start_after``: a result key below which everything is known applied,
        so a listing source may start there (a hint; ignoring it is correct, only slower)."""
