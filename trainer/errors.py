"""Failures a child reports as a *failed* result rather than by crashing.

Anything the architecture itself is to blame for (it cannot be built, it is too large, it
runs out of memory) raises ``ChildFailure``; ``train_child`` turns it into a failed
``ResultRecord`` whose ``reason`` is ``str(exc)``. Everything else (a missing dataset, an
unreachable store, a bad trainer config) is an environment error and propagates, so the
process exits non-zero and the Job's retry policy applies.
"""

from __future__ import annotations


class ChildFailure(Exception):
    """The trial failed because of its architecture; ``reason`` goes into the result.

    ``metrics`` holds the epochs completed before the failure (``EpochMetrics`` list)."""

    kind = "ChildFailure"

    def __init__(self, reason: str, metrics: list | None = None) -> None:
        super().__init__(reason)
        self.metrics = list(metrics or [])

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


class ArchitectureError(ChildFailure):
    """The architecture cannot be built into a network."""

    kind = "ArchitectureError"


class TooLarge(ChildFailure):
    """The network has more parameters than ``maxParameters``."""

    kind = "TooLarge"


class OutOfMemory(ChildFailure):
    """Training ran out of (GPU or host) memory."""

    kind = "OutOfMemory"


class TrainingError(ChildFailure):
    """The first training step failed (a shape or kernel error the builder did not catch)."""

    kind = "TrainingError"


class UnsupportedSpace(ChildFailure):
    """No trainer for this architecture's search space is available in this build."""

    kind = "UnsupportedSpace"


class Diverged(ChildFailure):
    """Training blew up: a non-finite loss or gradient, or an exploding perplexity."""

    kind = "Diverged"
