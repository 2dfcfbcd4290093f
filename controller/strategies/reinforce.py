"""REINFORCE with a moving-average baseline (§3.3), asynchronous by design.

    grad J  ~=  1/m  sum_k  sum_t  grad log P(a_t | a_<t)  (R_k - b)

* ``ask`` samples an architecture from the LSTM policy and keeps its plan and actions
  (not a graph: results arrive minutes to hours later, possibly after a restart).
* ``tell`` gets R_k for any earlier sample, in any order. log P(a) is *recomputed under
  the current parameters* and its gradient accumulated. The alternative — the log-prob
  stored at sampling time — would need the sampling-time graph (not serialisable) and
  would hand the optimizer a gradient taken at stale parameters; recomputing costs one
  forward/backward of a tiny LSTM and is exact for the on-policy case (staleness 0). With
  staleness > 0 the sample is slightly off-policy, as with the paper's asynchronous
  replicas; the log-ratio log P_now(a) - log P_then(a) is reported so it can be watched.
* A "gradient" is the mean over m = ``batchSize`` results; the optimizer steps once
  G = ``accumulate`` gradients have accumulated (their mean, as a synchronous-replicas
  optimizer does, so the learning rate does not depend on G) — i.e. after every m*G
  successful results.
* b is an exponential moving average of the *previous* rewards (decay ``baselineDecay``),
  in the order they were told: it never includes the reward it is subtracted from, so it
  does not depend on the current action and the estimate stays unbiased. The first reward
  initialises b, so the first result has advantage 0 (it counts towards m but moves
  nothing except through the entropy bonus).
* A failed child (reward None) has no reward to learn from: it is dropped from the pending
  set with no gradient, and does not count towards m — unless ``failureReward`` is set, in
  which case it is treated as a result with that reward (teaching the policy to avoid
  architectures that fail, e.g. by exceeding the trainer's parameter limit).

Options (camelCase, defaults from the paper's CIFAR-10 runs): ``lstmLayers`` 2,
``hiddenSize`` 35, ``initRange`` 0.08, ``learningRate`` 0.0006, ``optimizer`` adam|sgd,
``baselineDecay`` 0.95, ``batchSize`` 1, ``accumulate`` 1, ``entropyWeight`` 0,
``gradClip`` null (max global grad norm), ``rewardShaping`` none|rank (rank: a reward's
percentile among the last ``rankWindow`` rewards, robust to the reward's scale),
``failureReward`` null.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import torch

from kubenas.contracts import fields as F
from kubenas.contracts.result import REWARD_LIMIT
from kubenas.controller.policy import LSTMPolicy
from kubenas.controller.serialize import from_json, generator_state, set_generator_state, to_json
from kubenas.controller.spaces.base import SearchSpace
from kubenas.controller.strategies.base import Feedback, Proposal, Strategy

DEFAULTS = {
    "lstmLayers": 2,
    "hiddenSize": 35,
    "initRange": 0.08,
    "learningRate": 0.0006,
    "optimizer": "adam",
    "baselineDecay": 0.95,
    "batchSize": 1,
    "accumulate": 1,
    "entropyWeight": 0.0,
    "gradClip": None,
    "rewardShaping": "none",
    "rankWindow": 100,
    "failureReward": None,
}
# Upper bounds of the counts: far above the paper's (2 layers, 35 units, m = 1..8), low
# enough that a typo cannot make the policy allocate gigabytes before the first sample.
MAX_COUNTS = {"lstmLayers": 8, "hiddenSize": 1024, "batchSize": 10_000, "accumulate": 10_000,
              "rankWindow": 1_000_000}
# Rates beyond these turn the policy into inf/NaN in one step (the paper: lr 0.0006, init 0.08).
MAX_RATES = {"initRange": 10.0, "learningRate": 10.0, "entropyWeight": 100.0}


class ReinforceStrategy(Strategy):
    name = "reinforce"
    defaults = DEFAULTS  # a subclass (enas) adds its own options and defaults here

    def __init__(self, space: SearchSpace, options: Optional[Mapping] = None, seed: int = 0,
                 where: str = "spec.search.strategyOptions") -> None:
        o = F.resolve(options, self.defaults, where)
        for key, high in MAX_COUNTS.items():
            F.integer(o[key], f"{where}.{key}", 1, high)
        for key, high in MAX_RATES.items():
            F.number(o[key], f"{where}.{key}", minimum=0, maximum=high,
                     min_exclusive=key != "entropyWeight")
        F.number(o["baselineDecay"], f"{where}.baselineDecay", minimum=0, maximum=1)
        if o["gradClip"] is not None:
            F.number(o["gradClip"], f"{where}.gradClip", minimum=0, min_exclusive=True)
        if o["failureReward"] is not None:
            F.number(o["failureReward"], f"{where}.failureReward", -REWARD_LIMIT, REWARD_LIMIT)
        F.choice(o["optimizer"], ("adam", "sgd"), f"{where}.optimizer")
        F.choice(o["rewardShaping"], ("none", "rank"), f"{where}.rewardShaping")
        self.options = o
        self.space = space
        self.seed = seed

        self.policy = LSTMPolicy(space.categorical_keys(), hidden_size=o["hiddenSize"],
                                 num_layers=o["lstmLayers"], init_range=o["initRange"], seed=seed)
        optim = torch.optim.Adam if o["optimizer"] == "adam" else torch.optim.SGD
        self.optimizer = optim(self.policy.parameters(), lr=o["learningRate"])
        self.generator = torch.Generator().manual_seed(seed)
        self.samples_per_step = o["batchSize"] * o["accumulate"]  # m * G

        self.num_sampled = 0          # proposals made; also the curriculum's clock
        self.version = 0              # optimizer steps taken
        self.baseline: Optional[float] = None
        self.pending: dict[int, dict] = {}   # index -> {"version", "actions", "log_prob"}
        self.in_step = 0              # results whose gradient sits in .grad, waiting for a step
        self.recent_rewards: list[float] = []  # for rank shaping

    # -- ask -----------------------------------------------------------------------------
    def ask(self) -> Proposal:
        index = self.num_sampled
        plan = self.space.plan(index)
        with torch.no_grad():
            actions, log_prob, entropy = self.policy.sample(plan, self.generator)
        arch = self.space.decode(plan, actions)
        self.num_sampled += 1
        # The plan is a pure function of the index (space.plan), so keeping the actions is enough.
        self.pending[index] = {"version": self.version, "actions": actions,
                               "log_prob": float(log_prob)}
        return Proposal(index=index, architecture=arch, policy_version=self.version,
                        info={"log_prob": float(log_prob), "entropy": float(entropy),
                              "decisions": len(plan)})

    # -- tell ----------------------------------------------------------------------------
    def tell(self, index: int, reward: Optional[float]) -> Feedback:
        if not 0 <= index < self.num_sampled:
            return Feedback(index=index, applied=False, info={"reason": "unknown index"})
        if index not in self.pending:
            raise ValueError(f"reinforce: the result of sample {index} was already told")
        if reward is not None and not (math.isfinite(reward) and abs(reward) <= REWARD_LIMIT):
            raise ValueError(f"reinforce: sample {index}: reward must be finite and within "
                             f"+-{REWARD_LIMIT:g}, got {reward!r}")
        sample = self.pending.pop(index)
        staleness = self.version - sample["version"]
        if reward is None:
            if self.options["failureReward"] is None:
                return Feedback(index=index, applied=False, staleness=staleness,
                                info={"reason": "failed trial: no gradient"})
            reward = self.options["failureReward"]

        # Advantage against b *before* this reward joins it (b must not depend on a_k).
        r = self._shape(float(reward))
        if self.baseline is None:
            self.baseline = r  # the first reward initialises b
        advantage = r - self.baseline
        decay = self.options["baselineDecay"]
        self.baseline = decay * self.baseline + (1 - decay) * r

        # log P(a_k) under the *current* parameters; the plan is rebuilt from the index.
        plan = self.space.plan(index)
        bonus = self.options["entropyWeight"]
        log_prob, entropy = self.policy.log_prob(plan, _actions(sample["actions"]),
                                                 with_entropy=bool(bonus))
        log_p_now = float(log_prob.detach())
        loss = -(advantage * log_prob + bonus * entropy)
        (loss / self.samples_per_step).backward()  # accumulates into .grad
        self.in_step += 1

        # One optimizer step per G gradients of m results each.
        stepped = self.in_step == self.samples_per_step
        if stepped:
            if self.options["gradClip"] is not None:
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.options["gradClip"])
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.version += 1
            self.in_step = 0
        return Feedback(index=index, applied=True, staleness=staleness, stepped=stepped,
                        info={"reward": float(reward), "advantage": advantage,
                              "baseline": self.baseline, "log_prob": log_p_now,
                              "log_ratio": log_p_now - sample["log_prob"],
                              "policy_version": self.version})

    def _shape(self, reward: float) -> float:
        if self.options["rewardShaping"] == "none":
            return reward
        # rank: the fraction of recent rewards below this one (ties count half); 0.5 at first.
        prev = self.recent_rewards
        shaped = 0.5 if not prev else (sum(p < reward for p in prev)
                                       + 0.5 * sum(p == reward for p in prev)) / len(prev)
        self.recent_rewards = (prev + [reward])[-self.options["rankWindow"]:]
        return shaped

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "name": self.name,
            "space": {"name": self.space.name, "options": self.space.options()},
            "options": dict(self.options),
            "seed": self.seed,
            "num_sampled": self.num_sampled,
            "version": self.version,
            "baseline": self.baseline,
            "in_step": self.in_step,
            "recent_rewards": list(self.recent_rewards),
            "pending": [[i, {**p, "actions": [list(a) if isinstance(a, tuple) else a
                                             for a in p["actions"]]}]
                        for i, p in sorted(self.pending.items())],
            "policy": to_json(self.policy.state_dict()),
            # Gradients accumulated towards the next step; None (never touched) is kept
            # apart from zeros because Adam skips parameters whose grad is None.
            "grads": [None if p.grad is None else to_json(p.grad) for p in self.policy.parameters()],
            "optimizer": to_json(self.optimizer.state_dict()),
            "generator": generator_state(self.generator),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"{self.name}: cannot load a {state.get('name')!r} strategy state")
        space = {"name": self.space.name, "options": self.space.options()}
        if from_json(to_json(space)) != from_json(to_json(state["space"])):
            raise ValueError(f"reinforce: state was written for space {state['space']}, "
                             f"this strategy searches {space}")
        self.policy.load_state_dict(from_json(state["policy"]))
        for p, g in zip(self.policy.parameters(), state["grads"]):
            p.grad = None if g is None else from_json(g)
        self.optimizer.load_state_dict(from_json(state["optimizer"]))
        for group in self.optimizer.param_groups:  # the experiment file's rate wins
            group["lr"] = self.options["learningRate"]
        set_generator_state(self.generator, state["generator"])
        self.num_sampled = state["num_sampled"]
        self.version = state["version"]
        self.baseline = state["baseline"]
        self.in_step = state["in_step"]
        self.recent_rewards = list(state["recent_rewards"])
        self.pending = {int(i): {**p, "actions": _actions(p["actions"])} for i, p in state["pending"]}


def _actions(actions) -> list:
    """Actions back from JSON: anchor bit lists become tuples again."""
    return [tuple(a) if isinstance(a, (list, tuple)) else int(a) for a in actions]
