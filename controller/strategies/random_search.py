"""Random search: every decision uniform, the paper's control experiment.

Samples the same plan the RL controller would (so the depth curriculum applies too), with
anchor bits fair coins. Rewards are ignored; ``tell`` only keeps the bookkeeping honest
(a result told twice raises, as for every strategy).
"""

from __future__ import annotations

import random
from typing import Mapping, Optional

from kubenas.contracts import fields as F
from kubenas.controller.serialize import random_state, set_random_state
from kubenas.controller.spaces.base import SearchSpace
from kubenas.controller.strategies.base import Feedback, Proposal, Strategy

DEFAULTS: dict = {}


class RandomStrategy(Strategy):
    name = "random"

    def __init__(self, space: SearchSpace, options: Optional[Mapping] = None, seed: int = 0,
                 where: str = "spec.search.strategyOptions") -> None:
        self.options = F.resolve(options, DEFAULTS, where)
        self.space = space
        self.rng = random.Random(seed)
        self.num_sampled = 0
        self.pending: set[int] = set()

    def ask(self) -> Proposal:
        index = self.num_sampled
        plan = self.space.plan(index)
        arch = self.space.decode(plan, self.space.random_actions(plan, self.rng))
        self.num_sampled += 1
        self.pending.add(index)
        return Proposal(index=index, architecture=arch)

    def tell(self, index: int, reward: Optional[float]) -> Feedback:
        if not 0 <= index < self.num_sampled:
            return Feedback(index=index, applied=False, info={"reason": "unknown index"})
        if index not in self.pending:
            raise ValueError(f"random: the result of sample {index} was already told")
        self.pending.remove(index)
        return Feedback(index=index, applied=reward is not None)

    def state_dict(self) -> dict:
        return {"name": self.name, "num_sampled": self.num_sampled,
                "pending": sorted(self.pending), "rng": random_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"random: cannot load a {state.get('name')!r} strategy state")
        self.num_sampled = state["num_sampled"]
        self.pending = set(state["pending"])
        set_random_state(self.rng, state["rng"])
