"""Search spaces and their registry (pure Python: no torch needed to build or decode one).

``make_space(name, options)`` builds a space from the experiment's ``search.space`` and
``search.spaceOptions``. To add a space: its name to ``kubenas.contracts.names.SPACES`` (the
one list the spec parser reads) and to the Experiment CRD's ``search.space`` enum
(operator/crds/, then ``scripts/gen-manifests.sh``), one entry here in ``SPACES`` (a callable taking ``(options: dict | None)`` and returning
a ``SearchSpace``, raising ContractError on bad options), and the child builder for its
architectures in ``trainer/builders``; tests/kubenas/test_crd_agrees.py fails until the
lists agree.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from kubenas.contracts import ContractError
from kubenas.controller.spaces.base import Action, Decision, SearchSpace
from kubenas.controller.spaces.cnn import CnnSpace
from kubenas.controller.spaces.enas_macro import EnasMacroSpace
from kubenas.controller.spaces.enas_rnn import EnasRnnSpace
from kubenas.controller.spaces.nasbench201 import NasBench201Space
from kubenas.controller.spaces.rnn_cell import RnnCellSpace

# name -> factory(options) -> SearchSpace, in kubenas.contracts.names.SPACES's order.
SPACES: dict[str, Callable[..., SearchSpace]] = {
    "cnn": CnnSpace,
    "rnn_cell": RnnCellSpace,
    "nasbench201": NasBench201Space,
    "enas_macro": EnasMacroSpace,
    "enas_rnn": EnasRnnSpace,
}


def make_space(name: str, options: Optional[Mapping] = None, *,
               where: str = "spec.search.spaceOptions") -> SearchSpace:
    """The search space ``name`` configured by ``options`` (camelCase, from the YAML); an
    unknown or ill-typed option raises ContractError naming ``<where>.<key>``.
    ``SPACES`` holds exactly ``kubenas.contracts.names.SPACES`` (tests/kubenas/test_crd_agrees.py)."""
    if name not in SPACES:
        raise ContractError(f"spec.search.space: unknown space {name!r} "
                            f"(known: {', '.join(sorted(SPACES))})")
    return SPACES[name](options, where=where)


__all__ = ["Action", "CnnSpace", "Decision", "EnasMacroSpace", "EnasRnnSpace", "RnnCellSpace", "SPACES", "SearchSpace", "make_space"]
