"""The search-space interface shared by every strategy.

A space turns one sample into a *plan*: an ordered list of decisions the policy makes one
by one (the paper's token sequence). A decision is either

* ``categorical`` — pick one of ``choices`` with the softmax classifier named ``key``
  (classifiers and token embeddings are shared by every decision with the same key, which
  is what lets the depth curriculum grow the plan without new parameters); or
* ``anchor`` — the skip-connection anchor point of layer ``layer`` (§3.4): one independent
  sigmoid per earlier anchor j < layer, P(j -> layer) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)).
  Its action is a tuple of 0/1 bits, one per earlier anchor (empty for the first layer).

``decode(actions)`` builds the architecture description; ``encode(arch)`` inverts it.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from typing import Sequence

from kubenas.contracts import Architecture


@dataclass(frozen=True)
class Decision:
    key: str
    choices: tuple = ()
    kind: str = "categorical"   # "categorical" | "anchor"
    layer: int = 0              # for anchors: the index of this anchor among anchors


Action = int | tuple  # categorical: index into choices; anchor: tuple of 0/1 bits


class SearchSpace(abc.ABC):
    name = "base"

    @abc.abstractmethod
    def categorical_keys(self) -> dict[str, int]:
        """Every softmax classifier the policy needs: key -> number of choices."""

    @abc.abstractmethod
    def plan(self, num_sampled: int) -> list[Decision]:
        """The decisions of the next sample, given how many were sampled before it
        (the depth curriculum lives here)."""

    @abc.abstractmethod
    def decode(self, plan: Sequence[Decision], actions: Sequence[Action]) -> Architecture:
        """The architecture description of ``actions`` taken along ``plan``."""

    @abc.abstractmethod
    def encode(self, arch: Architecture) -> tuple[list[Decision], list[Action]]:
        """Inverse of decode: the plan and actions that produce ``arch``."""

    def random_actions(self, plan: Sequence[Decision], rng: random.Random) -> list[Action]:
        """Uniform sampling (random search; evolution's initial population)."""
        out: list[Action] = []
        for d in plan:
            if d.kind == "anchor":
                out.append(tuple(rng.randint(0, 1) for _ in range(d.layer)))
            else:
                out.append(rng.randrange(len(d.choices)))
        return out

    def options(self) -> dict:
        """The space's settings, for logs and the run summary."""
        return {}


def flatten_actions(actions: Sequence[Action]) -> list[int]:
    """The architecture's compact ``tokens``: categorical indices, anchor bits spliced in."""
    tokens: list[int] = []
    for a in actions:
        if isinstance(a, tuple):
            tokens.extend(int(b) for b in a)
        else:
            tokens.append(int(a))
    return tokens


def unflatten_tokens(plan: Sequence[Decision], tokens: Sequence[int]) -> list[Action]:
    """Inverse of ``flatten_actions`` along ``plan`` (anchor i takes i bits)."""
    need = sum(d.layer if d.kind == "anchor" else 1 for d in plan)
    if need != len(tokens):
        raise ValueError(f"{len(tokens)} tokens do not fit a plan that needs {need}")
    actions: list[Action] = []
    pos = 0
    for d in plan:
        if d.kind == "anchor":
            actions.append(tuple(int(b) for b in tokens[pos:pos + d.layer]))
            pos += d.layer
        else:
            actions.append(int(tokens[pos]))
            pos += 1
    return actions
