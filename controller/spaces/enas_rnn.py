"""ENAS's recurrent cell space (Pham et al. 2018, §2.2): a DAG of ``nodes`` nodes; node 1
reads x_t and h_{t-1}, every later node reads one earlier node of its choosing; each node
applies its chosen activation; h_t is the mean of the loose ends (nodes no node reads).

Per node, in order (the first has no input to pick):

    input_<k>  activation

* ``input_<k>`` (node k >= 2) — which earlier node it reads: its own softmax over the k-1
  earlier nodes (a classifier per node, since the number of choices grows with k);
* ``activation`` — one of ``activations`` (default ENAS's four: tanh, relu, identity,
  sigmoid), one classifier shared by every node.

The cell's weights are fixed by its shape, not sampled: one (input, node) matrix per edge,
which is what lets every cell of the space share one supernet's weights
(``kubenas.trainer.enas.recurrent``). Spec: ``{"nodes": [{"name": "node_1", "activation":
"tanh"}, {"name": "node_2", "input": "node_1", "activation": "relu"}, ...]}``.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts import fields as F
from kubenas.contracts.architecture import ENAS_RNN_ACTIVATIONS, validate_enas_rnn
from kubenas.controller.spaces.base import Action, Decision, SearchSpace, flatten_actions

SPACE_NAME = "enas_rnn"
MAX_NODES = 64

DEFAULTS = {"nodes": 8, "activations": list(ENAS_RNN_ACTIVATIONS)}


class EnasRnnSpace(SearchSpace):
    name = SPACE_NAME

    def __init__(self, options: Optional[Mapping] = None, where: str = "spec.search.spaceOptions"):
        o = F.resolve(options, DEFAULTS, where)
        F.integer(o["nodes"], f"{where}.nodes", 1, MAX_NODES)
        F.choice_list(o["activations"], f"{where}.activations", allowed=ENAS_RNN_ACTIVATIONS)
        if o["nodes"] == 1 and len(o["activations"]) == 1:
            F.fail(where, "one node and one activation: there is nothing to search")
        self.nodes = int(o["nodes"])
        self.activations = tuple(o["activations"])

    def categorical_keys(self) -> dict[str, int]:
        keys = {f"input_{k}": k - 1 for k in range(2, self.nodes + 1)}
        if len(self.activations) > 1:
            keys["activation"] = len(self.activations)
        return keys

    def plan(self, num_sampled: int = 0) -> list[Decision]:
        """The same plan for every sample (the supernet's shape is fixed)."""
        plan: list[Decision] = []
        for k in range(1, self.nodes + 1):
            if k > 1:
                plan.append(Decision(f"input_{k}", tuple(f"node_{j}" for j in range(1, k))))
            if len(self.activations) > 1:
                plan.append(Decision("activation", self.activations))
        return plan

    def decode(self, plan: Sequence[Decision], actions: Sequence[Action]) -> Architecture:
        if list(plan) != self.plan():
            raise ContractError("enas_rnn: the plan is not one this space made")
        if len(actions) != len(plan):
            raise ContractError(f"enas_rnn: {len(actions)} actions for {len(plan)} decisions")
        steps = iter(zip(plan, actions))
        nodes = []
        for k in range(1, self.nodes + 1):
            node: dict = {"name": f"node_{k}"}
            if k > 1:
                node["input"] = _choice(*next(steps), k)
            node["activation"] = _choice(*next(steps), k) if len(self.activations) > 1 \
                else self.activations[0]
            nodes.append(node)
        return Architecture(space=SPACE_NAME, spec={"nodes": nodes},
                            tokens=flatten_actions(actions))

    def encode(self, arch: Architecture) -> tuple[list[Decision], list[Action]]:
        where = "architecture.spec"
        if arch.space != SPACE_NAME:
            raise ContractError(f"architecture.space: the enas_rnn space cannot encode {arch.space!r}")
        validate_enas_rnn(arch.spec, where)
        nodes = arch.spec["nodes"]
        if len(nodes) != self.nodes:
            raise ContractError(f"{where}.nodes: {len(nodes)} nodes; this space has {self.nodes}")
        actions: list[Action] = []
        for i, node in enumerate(nodes):
            if i > 0:
                actions.append(int(node["input"].split("_")[1]) - 1)
            if node["activation"] not in self.activations:
                raise ContractError(f"{where}.nodes[{i}].activation: {node['activation']!r} is "
                                    f"not one of {list(self.activations)}")
            if len(self.activations) > 1:
                actions.append(self.activations.index(node["activation"]))
        return self.plan(), actions

    def options(self) -> dict:
        return {"nodes": self.nodes, "activations": list(self.activations)}


def _choice(decision: Decision, action: Action, k: int) -> str:
    if isinstance(action, tuple) or not 0 <= action < len(decision.choices):
        raise ContractError(f"enas_rnn: node {k} {decision.key}: bad action {action!r}")
    return decision.choices[action]
