"""ENAS's macro space (Pham et al. 2018, §2.3): a fixed-depth stack of layers, each one op
from a fixed menu, with skip connections chosen by the CNN space's anchor-point sigmoids.

Per layer, in the CNN space's order (the block opens with its anchor point):

    anchor  op

* ``op`` — one of ``ops`` (default all six of ENAS: conv3x3, conv5x5, sep_conv3x3,
  sep_conv5x5, maxpool3x3, avgpool3x3). Every op keeps the channel count (``channels``) and
  the spatial size, which is what lets every path through the supernet share weights.
* ``anchor`` — which earlier layers are *added* to this layer's output (one bit per earlier
  layer, the CNN space's sigmoids). The op always reads the previous layer (the stem for the
  first), so the bit of the previous layer is a residual connection, not a duplicate input.
  Layer output = mean(op(previous), selected earlier outputs); a skip from a larger map is
  average-pooled to this layer's size. With ``skipConnections: false`` there are no anchors.

Fixed, not sampled: a stem (conv3x3 to ``channels``), a 2x2 max-pool after every layer k in
``poolingAt``, and a global-average-pool + linear head.

Spec: ``{"channels": C, "pooling_at": [...], "layers": [{"name": "layer_1", "op": "conv3x3",
"skips": ["layer_..."]}, ...]}``. Tokens: the flattened actions.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts import fields as F
from kubenas.contracts.architecture import ENAS_OPS, validate_enas_macro
from kubenas.controller.spaces.base import Action, Decision, SearchSpace, flatten_actions

SPACE_NAME = "enas_macro"
MAX_LAYERS = 64
MAX_CHANNELS = 4096

DEFAULTS = {
    "layers": 6,
    "channels": 16,
    "ops": list(ENAS_OPS),
    "poolingAt": [2, 4],
    "skipConnections": True,
}


class EnasMacroSpace(SearchSpace):
    name = SPACE_NAME

    def __init__(self, options: Optional[Mapping] = None, where: str = "spec.search.spaceOptions"):
        o = F.resolve(options, DEFAULTS, where)
        F.integer(o["layers"], f"{where}.layers", 1, MAX_LAYERS)
        F.integer(o["channels"], f"{where}.channels", 1, MAX_CHANNELS)
        F.choice_list(o["ops"], f"{where}.ops", allowed=ENAS_OPS)
        if o["poolingAt"]:
            F.choice_list(o["poolingAt"], f"{where}.poolingAt", positive_int=True,
                          maximum=MAX_LAYERS)
        o["poolingAt"] = sorted(o["poolingAt"])
        F.boolean(o["skipConnections"], f"{where}.skipConnections")
        if len(o["ops"]) == 1 and not o["skipConnections"]:
            F.fail(where, "one op and no skip connections: there is nothing to search")
        self._options = o
        self.depth = o["layers"]
        self.ops = tuple(o["ops"])
        self.skip_connections = o["skipConnections"]

    # -- SearchSpace ---------------------------------------------------------------------
    def categorical_keys(self) -> dict[str, int]:
        return {"op": len(self.ops)} if len(self.ops) > 1 else {}

    def plan(self, num_sampled: int = 0) -> list[Decision]:
        """The same plan for every sample: the supernet's depth is fixed (no curriculum)."""
        plan: list[Decision] = []
        for i in range(self.depth):
            if self.skip_connections:
                plan.append(Decision("anchor", kind="anchor", layer=i))
            if len(self.ops) > 1:
                plan.append(Decision("op", self.ops))
        return plan

    def decode(self, plan: Sequence[Decision], actions: Sequence[Action]) -> Architecture:
        if list(plan) != self.plan():
            raise ContractError("enas_macro: the plan is not one this space made")
        if len(actions) != len(plan):
            raise ContractError(f"enas_macro: {len(actions)} actions for {len(plan)} decisions")
        steps = iter(actions)
        layers = []
        for i in range(self.depth):
            bits = next(steps) if self.skip_connections else (0,) * i
            if not isinstance(bits, tuple) or len(bits) != i or any(b not in (0, 1) for b in bits):
                raise ContractError(f"enas_macro: layer {i + 1}'s anchor needs {i} bits, got {bits!r}")
            op = 0
            if len(self.ops) > 1:
                op = next(steps)
                if isinstance(op, tuple) or not 0 <= op < len(self.ops):
                    raise ContractError(f"enas_macro: layer {i + 1} op: bad action {op!r}")
            layers.append({"name": f"layer_{i + 1}", "op": self.ops[op],
                           "skips": [f"layer_{j + 1}" for j, b in enumerate(bits) if b]})
        spec = {"channels": self._options["channels"], "pooling_at": self._pools(),
                "layers": layers}
        return Architecture(space=SPACE_NAME, spec=spec, tokens=flatten_actions(actions))

    def encode(self, arch: Architecture) -> tuple[list[Decision], list[Action]]:
        where = "architecture.spec"
        if arch.space != SPACE_NAME:
            raise ContractError(f"architecture.space: the enas_macro space cannot encode "
                                f"{arch.space!r}")
        validate_enas_macro(arch.spec, where)
        spec = arch.spec
        if (len(spec["layers"]) != self.depth or spec["channels"] != self._options["channels"]
                or list(spec["pooling_at"]) != self._pools()):
            raise ContractError(f"{where}: depth, channels or pooling_at differ from this space's "
                                f"({self.depth}, {self._options['channels']}, {self._pools()})")
        actions: list[Action] = []
        for i, layer in enumerate(spec["layers"]):
            skips = {int(s.split("_")[1]) - 1 for s in layer["skips"]}
            if self.skip_connections:
                actions.append(tuple(int(j in skips) for j in range(i)))
            elif skips:
                raise ContractError(f"{where}.layers[{i}].skips: this space has no skip connections")
            if layer["op"] not in self.ops:
                raise ContractError(f"{where}.layers[{i}].op: {layer['op']!r} is not one of "
                                    f"{list(self.ops)}")
            if len(self.ops) > 1:
                actions.append(self.ops.index(layer["op"]))
        return self.plan(), actions

    def _pools(self) -> list[int]:
        return [k for k in self._options["poolingAt"] if k < self.depth]

    def options(self) -> dict:
        return {**self._options, "ops": list(self.ops), "poolingAt": list(self._options["poolingAt"])}
