"""Regularized evolution (Real et al., 2019), asynchronous.

    population: the last ``populationSize`` results (oldest first)
    ask:  the first ``populationSize`` proposals are uniform random (so is any proposal
          made while no result has come back yet); after that, draw ``sampleSize`` members
          at random (with replacement, as in the paper's Algorithm 1), take the best as
          parent and propose it with exactly one decision mutated
    tell: a result joins the population and the oldest member leaves ("regularized":
          age, not fitness, decides who dies)

Asynchronous use needs nothing special: parents are drawn from whatever results have
arrived; children of members that were evicted meanwhile are fine. A failed trial (reward
None) never joins the population.

Depth curriculum: a child follows the plan of *its own* index. Where that plan is longer
than the parent's (the space grew), the child keeps the parent's decisions for the common
prefix and draws the new ones uniformly; then one decision is mutated as usual.

Mutation: a categorical decision moves to a different choice; an anchor flips one of its
bits. Decisions that cannot change (a first-layer anchor) are never picked.
"""

from __future__ import annotations

import random
from typing import Mapping, Optional

from kubenas.contracts import fields as F
from kubenas.controller.serialize import random_state, set_random_state
from kubenas.controller.spaces.base import Action, SearchSpace
from kubenas.controller.strategies.base import Feedback, Proposal, Strategy
from kubenas.experiment import MAX_TRIALS

DEFAULTS = {"populationSize": 100, "sampleSize": 25}  # Real et al.'s P and S
MAX_POPULATION = MAX_TRIALS  # a population never outgrows the samples an experiment takes


class EvolutionStrategy(Strategy):
    name = "evolution"

    def __init__(self, space: SearchSpace, options: Optional[Mapping] = None, seed: int = 0,
                 where: str = "spec.search.strategyOptions") -> None:
        o = F.resolve(options, DEFAULTS, where)
        F.integer(o["populationSize"], f"{where}.populationSize", 1, MAX_POPULATION)
        F.integer(o["sampleSize"], f"{where}.sampleSize", 1, MAX_POPULATION)
        if o["sampleSize"] > o["populationSize"]:
            F.fail(f"{where}.sampleSize", f"must be <= populationSize ({o['populationSize']}), "
                                            f"got {o['sampleSize']}")
        self.options = o
        self.space = space
        self.rng = random.Random(seed)
        self.num_sampled = 0
        self.pending: dict[int, list] = {}   # index -> actions
        self.population: list[dict] = []     # {"index", "actions", "reward"}, oldest first

    def ask(self) -> Proposal:
        index = self.num_sampled
        plan = self.space.plan(index)
        if index < self.options["populationSize"] or not self.population:
            actions, info = self.space.random_actions(plan, self.rng), {"origin": "random"}
        else:
            tournament = [self.rng.choice(self.population) for _ in range(self.options["sampleSize"])]
            parent = max(tournament, key=lambda m: m["reward"])
            actions = self._mutate(plan, parent)
            info = {"origin": "mutation", "parent": parent["index"]}
        arch = self.space.decode(plan, actions)
        self.num_sampled += 1
        self.pending[index] = actions
        return Proposal(index=index, architecture=arch, info=info)

    def _mutate(self, plan, parent: dict) -> list[Action]:
        parent_plan = self.space.plan(parent["index"])
        same = 0
        while same < min(len(plan), len(parent_plan)) and plan[same] == parent_plan[same]:
            same += 1
        actions = list(parent["actions"][:same]) + self.space.random_actions(plan[same:], self.rng)
        mutable = [i for i, d in enumerate(plan)
                   if (d.kind == "anchor" and d.layer > 0) or len(d.choices) > 1]
        if not mutable:
            return actions
        i = self.rng.choice(mutable)
        if plan[i].kind == "anchor":
            bits = list(actions[i])
            bits[self.rng.randrange(len(bits))] ^= 1
            actions[i] = tuple(bits)
        else:
            new = self.rng.randrange(len(plan[i].choices) - 1)
            actions[i] = new + (new >= actions[i])  # any choice but the current one
        return actions

    def tell(self, index: int, reward: Optional[float]) -> Feedback:
        if not 0 <= index < self.num_sampled:
            return Feedback(index=index, applied=False, info={"reason": "unknown index"})
        if index not in self.pending:
            raise ValueError(f"evolution: the result of sample {index} was already told")
        actions = self.pending.pop(index)
        if reward is None:
            return Feedback(index=index, applied=False, info={"reason": "failed trial"})
        self.population.append({"index": index, "actions": actions, "reward": float(reward)})
        if len(self.population) > self.options["populationSize"]:
            self.population.pop(0)  # the oldest dies
        return Feedback(index=index, applied=True, info={"population": len(self.population)})

    def state_dict(self) -> dict:
        def plain(actions):
            return [list(a) if isinstance(a, tuple) else a for a in actions]
        return {"name": self.name, "num_sampled": self.num_sampled,
                "pending": [[i, plain(a)] for i, a in sorted(self.pending.items())],
                "population": [{**m, "actions": plain(m["actions"])} for m in self.population],
                "rng": random_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"evolution: cannot load a {state.get('name')!r} strategy state")
        def back(actions):
            return [tuple(a) if isinstance(a, list) else a for a in actions]
        self.num_sampled = state["num_sampled"]
        self.pending = {int(i): back(a) for i, a in state["pending"]}
        self.population = [{**m, "actions": back(m["actions"])} for m in state["population"]]
        set_random_state(self.rng, state["rng"])
