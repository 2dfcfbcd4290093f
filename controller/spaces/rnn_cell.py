"""The recurrent-cell tree space (§3.5, §4.2).

A cell with ``base`` B has a binary tree of 2B-1 nodes: the B leaves (each combines
W_i x_t with U_i h_{t-1}) first, then each internal level left to right, the root last (its
output is h_t) — the node order of ``kubenas.contracts.architecture``. The plan is

    for each node 0 .. 2B-2:   combine  activation
    cell inject:               inject_node  inject_combine  inject_activation
    cell index:                cell_index

``inject_node`` / ``cell_index`` pick among the 2B-2 non-root nodes: c_{t-1} is merged into
that node's output (with the inject combine and activation), and c_t is that node's output
before its activation. Each kind of token has its own classifier and embedding (keys
above); the tree nodes share theirs, as the CNN space's layers do.

Options: ``base`` (power of two >= 2; default 8, the paper's), ``combines`` (default
[add, elem_mult]; ``max`` also allowed), ``activations`` (default [identity, tanh, sigmoid,
relu]; ``sin`` also allowed). A one-entry list is a constant, not a decision.

Tokens: the flattened actions (choice indices).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts import fields as F
from kubenas.contracts.architecture import RNN_ACTIVATIONS, RNN_COMBINES, validate_rnn_cell
from kubenas.controller.spaces.base import Action, Decision, SearchSpace, flatten_actions

SPACE_NAME = "rnn_cell"
MAX_BASE = 64  # 127 nodes, 258 decisions per cell (the paper: base 8)

DEFAULTS = {
    "base": 8,
    "combines": ["add", "elem_mult"],
    "activations": ["identity", "tanh", "sigmoid", "relu"],
}


class RnnCellSpace(SearchSpace):
    name = SPACE_NAME

    def __init__(self, options: Optional[Mapping] = None, where: str = "spec.search.spaceOptions"):
        o = F.resolve(options, DEFAULTS, where)
        base = F.integer(o["base"], f"{where}.base", maximum=MAX_BASE)
        if base < 2 or base & (base - 1):
            F.fail(f"{where}.base", f"must be a power of two >= 2, got {base}")
        F.choice_list(o["combines"], f"{where}.combines", allowed=RNN_COMBINES)
        F.choice_list(o["activations"], f"{where}.activations", allowed=RNN_ACTIVATIONS)
        self._options = o
        self.base = base
        self.num_nodes = 2 * base - 1
        combines, activations = tuple(o["combines"]), tuple(o["activations"])
        non_root = tuple(range(self.num_nodes - 1))
        node = [Decision("combine", combines), Decision("activation", activations)]
        self._plan = (
            node * self.num_nodes
            + [Decision("inject_node", non_root), Decision("inject_combine", combines),
               Decision("inject_activation", activations)]
            + [Decision("cell_index", non_root)]
        )
        # A one-entry choice list is a constant: it gets no controller step.
        self._fixed = {d.key: d.choices[0] for d in self._plan if len(d.choices) == 1}
        self._plan = [d for d in self._plan if len(d.choices) > 1]

    # -- SearchSpace ---------------------------------------------------------------------
    def categorical_keys(self) -> dict[str, int]:
        return {d.key: len(d.choices) for d in self._plan}

    def plan(self, num_sampled: int = 0) -> list[Decision]:
        return list(self._plan)

    def decode(self, plan: Sequence[Decision], actions: Sequence[Action]) -> Architecture:
        if list(plan) != self._plan:
            raise ContractError("rnn_cell: the plan is not one this space made")
        if len(actions) != len(plan):
            raise ContractError(f"rnn_cell: {len(actions)} actions for {len(plan)} decisions")
        values = []
        for t, (d, a) in enumerate(zip(plan, actions)):
            if isinstance(a, tuple) or not 0 <= a < len(d.choices):
                raise ContractError(f"rnn_cell: step {t} ({d.key}): bad action {a!r}")
            values.append((d.key, d.choices[a]))
        it = iter(values)

        def take(key):  # the next decided value of ``key``, or the space's constant
            if key in self._fixed:
                return self._fixed[key]
            k, v = next(it)
            assert k == key, (k, key)
            return v

        nodes = [{"combine": take("combine"), "activation": take("activation")}
                 for _ in range(self.num_nodes)]
        inject = {"node": take("inject_node"), "combine": take("inject_combine"),
                  "activation": take("inject_activation")}
        spec = {"base": self.base, "nodes": nodes, "cell_inject": inject,
                "cell_index": take("cell_index")}
        return Architecture(space=SPACE_NAME, spec=spec, tokens=flatten_actions(actions))

    def encode(self, arch: Architecture) -> tuple[list[Decision], list[Action]]:
        where = "architecture.spec"
        if arch.space != SPACE_NAME:
            raise ContractError(f"architecture.space: the rnn_cell space cannot encode {arch.space!r}")
        validate_rnn_cell(arch.spec, where)
        spec = arch.spec
        if spec["base"] != self.base:
            raise ContractError(f"{where}.base: this space has base {self.base}, got {spec['base']}")
        fields = []  # (key, value, where) in plan order, before dropping constants
        for i, n in enumerate(spec["nodes"]):
            fields += [("combine", n["combine"], f"{where}.nodes[{i}].combine"),
                       ("activation", n["activation"], f"{where}.nodes[{i}].activation")]
        inj = spec["cell_inject"]
        fields += [("inject_node", inj["node"], f"{where}.cell_inject.node"),
                   ("inject_combine", inj["combine"], f"{where}.cell_inject.combine"),
                   ("inject_activation", inj["activation"], f"{where}.cell_inject.activation"),
                   ("cell_index", spec["cell_index"], f"{where}.cell_index")]
        actions: list[Action] = []
        plan = iter(self._plan)
        for key, value, w in fields:
            if key in self._fixed:
                if value != self._fixed[key]:
                    raise ContractError(f"{w}: this space fixes it to {self._fixed[key]!r}, got {value!r}")
                continue
            d = next(plan)
            if value not in d.choices:
                raise ContractError(f"{w}: {value!r} is not one of the choices {list(d.choices)}")
            actions.append(d.choices.index(value))
        return list(self._plan), actions

    def options(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._options.items()}
