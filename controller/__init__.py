"""The search: spaces, the policy, strategies and the update loop.

Knows nothing of Kubernetes or S3: it talks to an Executor and a ResultSource
(``kubenas.contracts``) and persists through ``kubenas.storage.ObjectStore``.

Its public surface, the only names code outside ``controller/`` imports (``.importlinter``:
rooms-used-through-their-surface); each is loaded on first use (``kubenas.surface``):

    strategy_factory(exp) -> factory()          the experiment's strategy, options checked
    make_space, make_strategy, SPACES, STRATEGIES   the registries
    SearchLoop, LoopEvent, StateOwned, read_ledger  the asynchronous update loop, its ledger
    StoreResultSource                           result records read from the store
    FinalPhase, FinalPhaseFailed, FinalPhaseStopped, grid_points
                                                the final phase (spec.final)
    FINAL_KEY                                   where its summary (final.json) is stored
    EnasStrategy                                the ENAS policy (kubenas.enas)
    use_one_thread()                            torch on one thread, for a controller process
"""

from kubenas.surface import lazy_surface

SURFACE = {
    "strategy_factory": "strategies:strategy_factory",
    "make_space": "spaces:make_space",
    "make_strategy": "strategies:make_strategy",
    "SPACES": "spaces:SPACES",
    "STRATEGIES": "strategies:STRATEGIES",
    "SearchLoop": "loop:SearchLoop",
    "LoopEvent": "loop:LoopEvent",
    "StateOwned": "loop:StateOwned",
    "read_ledger": "loop:read_ledger",
    "StoreResultSource": "results:StoreResultSource",
    "FinalPhase": "final:FinalPhase",
    "FinalPhaseFailed": "final:FinalPhaseFailed",
    "FinalPhaseStopped": "final:FinalPhaseStopped",
    "grid_points": "final:grid_points",
    "FINAL_KEY": "final:FINAL_KEY",
    "EnasStrategy": "strategies.enas:EnasStrategy",
    "use_one_thread": "policy:use_one_thread",
}
__all__ = sorted(SURFACE)
__getattr__ = lazy_surface(globals(), SURFACE)
