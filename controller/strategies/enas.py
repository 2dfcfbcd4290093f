"""ENAS's controller (Pham et al. 2018): the REINFORCE strategy itself, with ENAS's defaults
and the options of the alternating loop that ``kubenas.enas`` runs in one process.

``ask``/``tell`` are REINFORCE's (LSTM policy, EMA baseline, entropy bonus: the same code,
by inheritance); the reward told is a path's accuracy on one validation minibatch of the
shared-weight supernet. ``sample_child`` draws a path for a shared-weight training step
without REINFORCE bookkeeping. Only ``names.SUPERNET_SPACES`` have a supernet.

Loop options: ``controllerSteps`` policy updates after every shared-weight epoch (ENAS:
50 on CIFAR-10), ``deriveSamples`` paths drawn at the end, the best kept on
``deriveBatches`` validation batches (ENAS: 10 paths... its code uses 100 for the macro
space, on one batch), ``warmupEpochs`` first shared-weight epochs on uniformly random paths
with no policy updates (0 in ENAS), ``checkpointEvery`` minibatches between checkpoints.

Why the two additions: a short search (a few shared epochs) gives the policy rewards from
barely trained conv weights, which favours the parameter-free pools (the collapse issue 13
warns of); and one 128-image batch ranks candidates by noise (its accuracy's standard error
is ~3 points). Both default to ENAS's values: at 3 shared epochs on Fashion-MNIST they did
not help (benchmarks/enas_vs_per_child.py: test 0.8485 with warmupEpochs 1 and
deriveBatches 10 against 0.8766 without; the derived path still 4 pools of 6 layers).
"""

from __future__ import annotations

import random
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
                 "controllerSteps": 50, "deriveSamples": 10, "deriveBatches": 1,
                 "warmupEpochs": 0, "checkpointEvery": 50}
# the alternating loop's options, each with its least value (no warm-up is ENAS itself)
LOOP_OPTIONS = {"controllerSteps": 1, "deriveSamples": 1, "deriveBatches": 1, "warmupEpochs": 0,
                "checkpointEvery": 1}
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
        for key, least in LOOP_OPTIONS.items():
            F.integer(self.options[key], f"{where}.{key}", least, MAX_LOOP_COUNT)

    def loop_options(self) -> dict:
        return {key: self.options[key] for key in LOOP_OPTIONS}

    def sample_child(self) -> Architecture:
        """A path from the current policy for one shared-weight step (no gradient, no
        pending sample; the generator advances, and is checkpointed with the strategy)."""
        plan = self.space.plan(0)
        with torch.no_grad():
            actions, _, _ = self.policy.sample(plan, self.generator)
        return self.space.decode(plan, actions)

    def uniform_child(self, rng: random.Random) -> Architecture:
        """A path drawn uniformly from the space (a warm-up step's; ``rng`` is the caller's,
        a function of the data position, so a resumed run draws the same paths)."""
        plan = self.space.plan(0)
        return self.space.decode(plan, self.space.random_actions(plan, rng))
