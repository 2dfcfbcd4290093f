"""Strategies and their registry.

``make_strategy(name, space, options, seed)`` builds the experiment's ``search.strategy``
with its ``search.strategyOptions``. Factories import their module on first use, so the
torch-free strategies (random, evolution) never import torch.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from kubenas.contracts import ContractError
from kubenas.controller.spaces.base import SearchSpace
from kubenas.controller.strategies.base import Feedback, Proposal, Strategy


def _reinforce(*args, **kw) -> Strategy:
    from kubenas.controller.strategies.reinforce import ReinforceStrategy
    return ReinforceStrategy(*args, **kw)


def _random(*args, **kw) -> Strategy:
    from kubenas.controller.strategies.random_search import RandomStrategy
    return RandomStrategy(*args, **kw)


def _evolution(*args, **kw) -> Strategy:
    from kubenas.controller.strategies.evolution import EvolutionStrategy
    return EvolutionStrategy(*args, **kw)


def _enas(*args, **kw) -> Strategy:
    from kubenas.controller.strategies.enas import EnasStrategy
    return EnasStrategy(*args, **kw)


# name -> factory(space, options, seed, where=...) -> Strategy
STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "reinforce": _reinforce,
    "random": _random,
    "evolution": _evolution,
    "enas": _enas,
}


def make_strategy(name: str, space: SearchSpace, options: Optional[Mapping] = None,
                  seed: int = 0, *, where: str = "spec.search.strategyOptions") -> Strategy:
    """The strategy ``name`` over ``space``; options are camelCase from the YAML, and an
    unknown or ill-typed one raises ContractError naming ``<where>.<key>``.
    ``STRATEGIES`` holds exactly ``kubenas.contracts.names.STRATEGIES`` (tests/kubenas/test_crd_agrees.py)."""
    if name not in STRATEGIES:
        raise ContractError(f"spec.search.strategy: unknown strategy {name!r} "
                            f"(known: {', '.join(sorted(STRATEGIES))})")
    if options is not None and not isinstance(options, Mapping):
        raise ContractError(f"{where}: must be a mapping, got {type(options).__name__}")
    return STRATEGIES[name](space, dict(options or {}), seed, where=where)


def strategy_factory(exp) -> Callable[[], Strategy]:
    """The experiment's strategy as a factory (the search loop builds a fresh one to load a
    state into): ``exp.space`` with ``exp.space_options``, ``exp.strategy`` with
    ``exp.strategy_options`` and ``exp.seed``. One strategy is built here, so a bad space or
    strategy option raises ContractError before anything starts."""
    from kubenas.controller.spaces import make_space

    def factory() -> Strategy:
        space = make_space(exp.space, exp.space_options)
        return make_strategy(exp.strategy, space, exp.strategy_options, exp.seed)

    factory()  # validate space and strategy options before anything starts
    return factory


__all__ = ["Feedback", "Proposal", "STRATEGIES", "Strategy", "make_strategy", "strategy_factory"]
