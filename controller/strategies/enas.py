"""ENAS's controller (Pham et al. 2018): the REINFORCE strategy itself, with ENAS's defaults
and the options of the alternating loop that ``kubenas.enas`` runs in one process.

``ask``/``tell`` are REINFORCE's (LSTM policy, EMA baseline, entropy bonus: the same code,
by inheritance); the reward told is a path's accuracy on one validation minibatch of the
shared-weight supernet. ``sample_child`` draws a path for a shared-weight training step
without REINFORCE bookkeeping. Only ``names.SUPERNET_SPACES`` have a supernet.

Loop options: ``controllerSteps`` policy updates after every shared-weight epoch (ENAS:
50 on CIFAR-10), ``deriveSamples`` paths drawn at the end, the best on one validation
batch kept (ENAS: 10... its code uses 100 for the macro space), ``checkpointEvery``
minibatches between checkpoints.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts import fields as F
from kubenas.contracts import names
from kubenas.controller.spaces.base import SearchSpace
from kubenas.controller.strategies.reinforce import DEFAULTS, ReinforceStrategy

# ENAS's controller settings (macro search on CIFAR-10): Adam 0.001, entropy bonus 1e-4,
# baseline decay 0.99; one update per sampled path.
ENAS_DEFAULTS = {**DEFAULTS, "learningRate": 0.001, "entropyWeight": 0.0001,
                 "baselineDecay": 0.99,
                 "controllerSteps": 50, "deriveSamples": 10, "checkpointEvery": 50}
LOOP_OPTIONS = ("controllerSteps", "deriveSamples", "checkpointEvery")
MAX_LOOP_COUNT = 1_000_000


class EnasStrategy(ReinforceStrategy):
    name = "enas"
    defaults = ENAS_DEFAULTS

    def __init__(self, space: SearchSpace, options: Optional[Mapping] = None, seed: int = 0,
                 where: str = "spec.search.strategyOptions") -> None:
        if space.name not in names.SUPERNET_SPACES:
            raise ContractError(f"spec.search.space: the enas strategy shares weights in the "
                                f"supernet of {' or '.join(names.SUPERNET_SPACES)}, not in {space.name!r}")
        super().__init__(space, options, seed, where)
        for key in LOOP_OPTIONS:
            F.integer(self.options[key], f"{where}.{key}", 1, MAX_LOOP_COUNT)

    def loop_options(self) -> dict:
        return {key: self.options[key] for key in LOOP_OPTIONS}

    def sample_child(self) -> Architecture:
        """A path from the current policy for one shared-weight step (no gradient, no
        pending sample; the generator advances, and is checkpointed with the strategy)."""
        plan = self.space.plan(0)
        with torch.no_grad():
            actions, _, _ = self.policy.sample(plan, self.generator)
        return self.space.decode(plan, actions)
