"""The strategy interface: ask for an architecture, tell its reward, checkpoint to a dict.

Every strategy is deterministic given its seed and the order of ask/tell calls, and its
full state round-trips through ``state_dict()`` / ``load_state_dict()`` as plain JSON-able
data (tensors as nested lists), so the controller can live in object storage.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Optional

from kubenas.contracts import Architecture


@dataclass
class Proposal:
    index: int                 # the strategy's own sample counter (0, 1, 2, ...)
    architecture: Architecture
    policy_version: int = 0    # optimizer steps taken when this was sampled
    info: dict = field(default_factory=dict)


@dataclass
class Feedback:
    """What ``tell`` reports back, for logs and metrics."""
    index: int
    applied: bool              # False for a failed trial (no reward) or an unknown index
    staleness: int = 0         # policy versions between sampling and this update
    stepped: bool = False      # an optimizer step happened on this tell
    info: dict = field(default_factory=dict)


class Strategy(abc.ABC):
    name = "base"

    @abc.abstractmethod
    def ask(self) -> Proposal: ...

    @abc.abstractmethod
    def tell(self, index: int, reward: Optional[float]) -> Feedback:
        """Report the reward of proposal ``index`` (None: the child failed). Results may
        arrive in any order; telling the same index twice must raise ValueError."""

    @abc.abstractmethod
    def state_dict(self) -> dict: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None: ...
