"""Search spaces and their registry (pure Python: no torch needed to build or decode one).

``make_space(name, options)`` builds a space from the experiment's ``search.space`` and
``search.spaceOptions``. To add a space, add one entry to ``SPACES``: a callable taking
``(options: dict | None)`` and returning a ``SearchSpace`` (raising ContractError on bad
options).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from kubenas.contracts import ContractError
from kubenas.controller.spaces.base import Action, Decision, SearchSpace
from kubenas.controller.spaces.cnn import CnnSpace
from kubenas.controller.spaces.enas_macro import EnasMacroSpace
from kubenas.controller.spaces.nasbench201 import NasBench201Space
from kubenas.controller.spaces.rnn_cell import RnnCellSpace

# name -> factory(options) -> SearchSpace.  Registration point for further spaces
# (e.g. "nasbench201": NasBench201Space from controller/spaces/nasbench201.py).
SPACES: dict[str, Callable[..., SearchSpace]] = {
    "cnn": CnnSpace,
    "rnn_cell": RnnCellSpace,
    "nasbench201": NasBench201Space,
    "enas_macro": EnasMacroSpace,
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


__all__ = ["Action", "CnnSpace", "Decision", "EnasMacroSpace", "RnnCellSpace", "SPACES", "SearchSpace", "make_space"]
