"""The paper's CNN macro space (§3.1, §3.4, §4.1): a stack of conv layers with skip connections.

Per layer, in the order of the paper's Figure 4 (our reading: each layer's block opens
with its anchor point, then the layer's hyperparameters in Figure 2's order):

    anchor  filter_height  filter_width  [stride_height  stride_width]  num_filters

* ``anchor`` — which earlier layers feed this one (one bit per earlier layer, §3.4); the
  first layer's anchor has no bits but still runs a controller step, because its hidden
  state is what later layers' sigmoids attend to. With ``skipConnections: false`` there
  are no anchors and layer i reads layer i-1 (the §3.2 chain).
* Strides are predicted per axis (Figure 2 predicts stride height and stride width) only
  when ``strides`` has more than one choice; the default ``[1]`` fixes them (v1). In
  general a choice list with a single entry is a constant, not a decision.

Pooling (v3): for every k in ``poolingAt`` with k < depth, a fixed max-pool
(``poolKernel``, ``poolStride``) named ``pool_<n>`` follows ``layer_k``. It is not sampled.
Later layers that select layer k as an input read the pooled map instead, so the pool sits
*on* the path after layer k (it replaces layer k's output for everything above it).

Inputs: the names of the selected earlier layers, or ``["input"]`` when none is selected
(§3.4: a layer with no input layer takes the image).

Depth curriculum (§4.1): ``depth = min(maxLayers, startLayers + stepLayers *
(num_sampled // everySamples))`` — 6 layers, +2 every 1,600 samples in the paper.

Tokens: the flattened actions (choice indices; anchor bits in place).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts import fields as F
from kubenas.contracts.architecture import validate_cnn
from kubenas.experiment import MAX_TRIALS
from kubenas.controller.spaces.base import (Action, Decision, SearchSpace, flatten_actions)

SPACE_NAME = "cnn"
# Bounds that keep a typo from building an unusable space: filter sizes, counts, strides and
# pool sizes up to 4096; networks up to 512 layers (the paper: 15, 39 with pooling).
MAX_SIZE = 4096
MAX_LAYERS = 512

DEFAULTS = {
    "filterHeights": [1, 3, 5, 7],
    "filterWidths": [1, 3, 5, 7],
    "numFilters": [24, 36, 48, 64],
    "strides": [1],
    "poolingAt": [],
    "poolKernel": 2,
    "poolStride": 2,
    "skipConnections": True,
    "curriculum": {"startLayers": 6, "stepLayers": 2, "everySamples": 1600, "maxLayers": 15},
}

# (decision key = architecture field, option holding its choices), in Figure 2's order
_FIELDS = (
    ("filter_height", "filterHeights"),
    ("filter_width", "filterWidths"),
    ("stride_height", "strides"),
    ("stride_width", "strides"),
    ("num_filters", "numFilters"),
)


class CnnSpace(SearchSpace):
    name = SPACE_NAME

    def __init__(self, options: Optional[Mapping] = None, where: str = "spec.search.spaceOptions"):
        o = F.resolve(options, DEFAULTS, where)
        for key in ("filterHeights", "filterWidths", "numFilters", "strides"):
            F.choice_list(o[key], f"{where}.{key}", positive_int=True, maximum=MAX_SIZE)
        for key in ("poolKernel", "poolStride"):
            F.integer(o[key], f"{where}.{key}", 1, MAX_SIZE)
        cur = o["curriculum"]
        for key, low, high in (("startLayers", 1, MAX_LAYERS), ("stepLayers", 0, MAX_LAYERS),
                               ("everySamples", 1, MAX_TRIALS), ("maxLayers", 1, MAX_LAYERS)):
            F.integer(cur[key], f"{where}.curriculum.{key}", low, high)
        if cur["maxLayers"] < cur["startLayers"]:
            F.fail(f"{where}.curriculum.maxLayers",
                     f"must be >= startLayers ({cur['startLayers']}), got {cur['maxLayers']}")
        if o["poolingAt"]:
            F.choice_list(o["poolingAt"], f"{where}.poolingAt", positive_int=True,
                          maximum=MAX_LAYERS)
        o["poolingAt"] = sorted(o["poolingAt"])
        self._options = o
        self.skip_connections = o["skipConnections"]
        self.curriculum = cur
        # One layer's block of decisions; a one-entry choice list is a constant, not a decision.
        self._layer_decisions = [Decision(key, tuple(o[src])) for key, src in _FIELDS
                                 if len(o[src]) > 1]
        self._fixed = {key: o[src][0] for key, src in _FIELDS if len(o[src]) == 1}
        if not self._layer_decisions and not self.skip_connections:
            F.fail(where, "every choice list has one entry and skip connections are off: "
                            "there is nothing to search")

    # -- SearchSpace ---------------------------------------------------------------------
    def categorical_keys(self) -> dict[str, int]:
        return {d.key: len(d.choices) for d in self._layer_decisions}

    def depth(self, num_sampled: int) -> int:
        c = self.curriculum
        return min(c["maxLayers"], c["startLayers"] + c["stepLayers"] * (num_sampled // c["everySamples"]))

    def plan(self, num_sampled: int = 0) -> list[Decision]:
        return self.plan_for_depth(self.depth(num_sampled))

    def plan_for_depth(self, depth: int) -> list[Decision]:
        plan: list[Decision] = []
        for i in range(depth):
            if self.skip_connections:
                plan.append(Decision("anchor", kind="anchor", layer=i))
            plan.extend(self._layer_decisions)
        return plan

    def pools_for_depth(self, depth: int) -> list[int]:
        """The layer numbers (1-based) a pool follows at this depth."""
        return [k for k in self._options["poolingAt"] if k < depth]

    def decode(self, plan: Sequence[Decision], actions: Sequence[Action]) -> Architecture:
        per_layer = len(self._layer_decisions) + int(self.skip_connections)
        depth = len(plan) // per_layer
        if depth < 1 or list(plan) != self.plan_for_depth(depth):
            raise ContractError("cnn: the plan is not one this space made")
        if len(actions) != len(plan):
            raise ContractError(f"cnn: {len(actions)} actions for {len(plan)} decisions")
        pools = self.pools_for_depth(depth)
        pool_name = {k: f"pool_{n + 1}" for n, k in enumerate(pools)}

        def output_of(j: int) -> str:  # what later layers read from layer j (0-based)
            return pool_name.get(j + 1, f"layer_{j + 1}")

        layers = []
        steps = iter(zip(plan, actions))
        for i in range(depth):
            if self.skip_connections:
                _, bits = next(steps)
                if len(bits) != i or any(b not in (0, 1) for b in bits):
                    raise ContractError(f"cnn: layer {i + 1}'s anchor needs {i} bits, got {bits!r}")
                inputs = [output_of(j) for j, b in enumerate(bits) if b]
            else:
                inputs = [output_of(i - 1)] if i else []
            layer = {"name": f"layer_{i + 1}", "type": "conv", "inputs": inputs or ["input"]}
            layer.update(self._fixed)
            for d in self._layer_decisions:
                dd, a = next(steps)
                if isinstance(a, tuple) or not 0 <= a < len(d.choices):
                    raise ContractError(f"cnn: layer {i + 1} {d.key}: bad action {a!r}")
                layer[d.key] = d.choices[a]
            layers.append({k: layer[k] for k in ("name", "type", "inputs", "filter_height",
                                                 "filter_width", "stride_height",
                                                 "stride_width", "num_filters")})
            if i + 1 in pool_name:
                k, s = self._options["poolKernel"], self._options["poolStride"]
                layers.append({"name": pool_name[i + 1], "type": "maxpool",
                               "inputs": [f"layer_{i + 1}"], "filter_height": k,
                               "filter_width": k, "stride_height": s, "stride_width": s})
        return Architecture(space=SPACE_NAME, spec={"layers": layers},
                            tokens=flatten_actions(actions))

    def encode(self, arch: Architecture) -> tuple[list[Decision], list[Action]]:
        where = "architecture.spec"
        if arch.space != SPACE_NAME:
            raise ContractError(f"architecture.space: the cnn space cannot encode {arch.space!r}")
        validate_cnn(arch.spec, where)
        convs = [(n, l) for n, l in enumerate(arch.spec["layers"]) if l.get("type", "conv") == "conv"]
        depth = len(convs)
        index = {l["name"]: i for i, (_, l) in enumerate(convs)}  # conv name -> 0-based layer
        conv_names = set(index)
        expected_pools = self.pools_for_depth(depth)
        seen_pools: list[int] = []
        for n, l in enumerate(arch.spec["layers"]):
            if l.get("type", "conv") == "conv":
                continue
            w = f"{where}.layers[{n}]"
            src = l.get("inputs", [])
            k, s = self._options["poolKernel"], self._options["poolStride"]
            if (l["type"] != "maxpool" or len(src) != 1 or src[0] not in index
                    or (l["filter_height"], l["filter_width"]) != (k, k)
                    or (l.get("stride_height", 1), l.get("stride_width", 1)) != (s, s)):
                raise ContractError(f"{w}: this space only places a {k}x{k}/{s} maxpool after "
                                    "a conv layer (poolingAt)")
            index[l["name"]] = index[src[0]]
            seen_pools.append(index[src[0]] + 1)
        if seen_pools != expected_pools:
            raise ContractError(f"{where}.layers: pools follow layers {seen_pools}, but this "
                                f"space places them after {expected_pools} at depth {depth}")
        plan = self.plan_for_depth(depth)
        actions: list[Action] = []
        for i, (n, l) in enumerate(convs):
            w = f"{where}.layers[{n}]"
            inputs = [x for x in l.get("inputs", []) if x != "input"]
            if len(inputs) != len(l.get("inputs", [])) and inputs:
                raise ContractError(f"{w}.inputs: 'input' (the image) cannot be mixed with layers")
            src = sorted({index[x] for x in inputs})
            for x in inputs:  # a layer followed by a pool is only visible through the pool
                if x in conv_names and index[x] + 1 in expected_pools:
                    raise ContractError(f"{w}.inputs: {x!r} is followed by a pool; later "
                                        "layers read the pool")
            if self.skip_connections:
                actions.append(tuple(int(j in src) for j in range(i)))
            elif src != ([i - 1] if i else []):
                raise ContractError(f"{w}.inputs: without skip connections layer {i + 1} reads "
                                    f"only the layer before it")
            for key, value in self._fixed.items():
                if l.get(key, 1) != value:
                    raise ContractError(f"{w}.{key}: this space fixes it to {value}, got {l.get(key, 1)!r}")
            for d in self._layer_decisions:
                value = l.get(d.key, 1)
                if value not in d.choices:
                    raise ContractError(f"{w}.{d.key}: {value!r} is not one of the choices "
                                        f"{list(d.choices)}")
                actions.append(d.choices.index(value))
        return plan, actions

    def options(self) -> dict:
        return {**self._options, "curriculum": dict(self.curriculum),
                "poolingAt": list(self._options["poolingAt"])}
