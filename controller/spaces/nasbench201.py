"""The NAS-Bench-201 cell space: 6 edges x 5 operations = 15,625 cells.

The controller makes six categorical decisions, one per edge of the 4-node cell in
``NB201_EDGES`` order ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"), each choosing one of
``NB201_OPS`` ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3"). The same
LSTM policy and strategies as the CNN space drive it; nothing here is specific to a strategy.

Options (``spaceOptions``):

* ``sharedClassifier`` (bool, default False): one softmax classifier (key ``"op"``) for all
  six edges instead of one per edge (keys ``"edge_1_0"``, ``"edge_2_0"``, ...). With per-edge
  keys each edge also gets its own token embedding, as the paper's controller has for each
  kind of decision.

The architecture's ``tokens`` are the six operation indices; ``table_index`` maps them to
the NAS-Bench-201 cell index used by the benchmark's table (``benchmarks/nasbench201/table.py``).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts.architecture import NB201_EDGES, NB201_OPS, validate_nasbench201

from kubenas.contracts import fields as F
from kubenas.controller.spaces.base import Action, Decision, SearchSpace

SPACE_NAME = "nasbench201"
DEFAULTS = {"sharedClassifier": False}


def edge_key(edge: str) -> str:
    """Classifier key of one edge: ``"1<-0"`` -> ``"edge_1_0"``."""
    dst, src = edge.split("<-")
    return f"edge_{dst}_{src}"


class NasBench201Space(SearchSpace):
    name = SPACE_NAME

    def __init__(self, options: Optional[Mapping] = None, where: str = "spec.search.spaceOptions"):
        o = F.resolve(options, DEFAULTS, where)
        shared = o["sharedClassifier"]
        self.shared_classifier = shared
        keys = ["op"] * len(NB201_EDGES) if shared else [edge_key(e) for e in NB201_EDGES]
        self._plan = [Decision(key=k, choices=tuple(NB201_OPS)) for k in keys]

    # -- SearchSpace ---------------------------------------------------------------------
    def categorical_keys(self) -> dict[str, int]:
        return {d.key: len(d.choices) for d in self._plan}

    def plan(self, num_sampled: int = 0) -> list[Decision]:
        return list(self._plan)

    def decode(self, plan: Sequence[Decision], actions: Sequence[Action]) -> Architecture:
        if len(plan) != len(NB201_EDGES) or len(actions) != len(NB201_EDGES):
            raise ContractError(f"nasbench201: need {len(NB201_EDGES)} decisions, got "
                                f"{len(plan)} decisions and {len(actions)} actions")
        tokens = []
        for i, (d, a) in enumerate(zip(plan, actions)):
            if d.kind != "categorical" or isinstance(a, (tuple, bool)) or not 0 <= int(a) < len(NB201_OPS):
                raise ContractError(f"nasbench201: action {i} must be an operation index in "
                                    f"[0, {len(NB201_OPS) - 1}], got {a!r}")
            tokens.append(int(a))
        spec = {"edges": {e: NB201_OPS[t] for e, t in zip(NB201_EDGES, tokens)}}
        return Architecture(space=SPACE_NAME, spec=spec, tokens=tokens)

    def encode(self, arch: Architecture) -> tuple[list[Decision], list[Action]]:
        if arch.space != SPACE_NAME:
            raise ContractError(f"nasbench201: cannot encode a {arch.space!r} architecture")
        validate_nasbench201(arch.spec, "architecture.spec")
        actions = [NB201_OPS.index(arch.spec["edges"][e]) for e in NB201_EDGES]
        return self.plan(), actions

    def options(self) -> dict:
        return {"sharedClassifier": self.shared_classifier}


def arch_ops(arch: Architecture) -> list[int]:
    """The six operation indices of a nasbench201 architecture (from its spec)."""
    if arch.space != SPACE_NAME:
        raise ContractError(f"nasbench201: not a nasbench201 architecture ({arch.space!r})")
    validate_nasbench201(arch.spec, "architecture.spec")
    return [NB201_OPS.index(arch.spec["edges"][e]) for e in NB201_EDGES]


def table_index(arch: Architecture) -> int:
    """The NAS-Bench-201 cell index (base-5 number, edge "1<-0" most significant)."""
    idx = 0
    for op in arch_ops(arch):
        idx = idx * len(NB201_OPS) + op
    return idx


def from_table_index(index: int) -> Architecture:
    """The architecture of cell ``index`` (inverse of ``table_index``)."""
    n = len(NB201_OPS)
    if not 0 <= int(index) < n ** len(NB201_EDGES):
        raise ContractError(f"nasbench201: cell index out of range: {index}")
    ops = []
    for _ in NB201_EDGES:
        ops.append(int(index) % n)
        index = int(index) // n
    ops.reverse()
    space = NasBench201Space()
    return space.decode(space.plan(), ops)
