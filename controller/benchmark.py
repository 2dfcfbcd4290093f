"""An honest comparison of search strategies on the NAS-Bench-201 table (§4.2's control experiment).

Every (strategy, seed) run drives the real search loop (``kubenas.controller.loop.SearchLoop``,
with an in-memory store) against a ``TableExecutor`` that answers each sampled cell from the
table — a noisy reward (one training seed drawn at random), simulated training time, ``workers``
children in flight. The *quality* of a run after t results is the table's **mean-over-seeds**
validation accuracy of the cell the strategy would pick then (the highest reward it has
observed so far) — never the noisy draw itself. Every strategy runs on the same seeds
(``seed_offset`` .. ``seed_offset + seeds - 1``); one run is reproducible from its seed.

Outputs (in ``out``): ``summary.json`` (strategy -> trial count -> mean/std/regret/p-value),
``curves.png`` (best-so-far, ±1 std band), ``runs.json`` (the configuration, the effective
options, per-run curves and picks, wall time) — and the printed table.

    kubenas benchmark --space nasbench201 --dataset cifar10 \\
        --strategies reinforce,random,evolution --trials 150 --seeds 30 --out runs/bench
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from kubenas.controller.nasbench201_table import DATASETS, canonical_dataset, load_table
from kubenas.controller.simulated import TableExecutor
from kubenas.storage.base import AlreadyExists, NotFound, ObjectStore, PreconditionFailed

CHECKPOINTS = (25, 50, 100, 150)
DEFAULT_STRATEGIES = ("reinforce", "random", "evolution")
BASELINE = "random"
DATASET_LABELS = {"cifar10": "cifar10 (cifar10-valid)", "cifar100": "cifar100",
                  "imagenet": "imagenet (ImageNet16-120)"}


# -- an in-memory object store for the loop's state -------------------------------------------

class MemoryStore(ObjectStore):
    """The loop persists its state after every step; here that stays in this process."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, str]] = {}
        self._n = 0

    def _etag(self) -> str:
        self._n += 1
        return str(self._n)

    def put_new(self, key: str, data: bytes) -> str:
        if key in self._data:
            raise AlreadyExists(key)
        return self.put(key, data)

    def put(self, key: str, data: bytes) -> str:
        etag = self._etag()
        self._data[key] = (bytes(data), etag)
        return etag

    def put_if_match(self, key: str, data: bytes, etag: Optional[str]) -> str:
        current = self._data.get(key, (None, None))[1]
        if current != etag:
            raise PreconditionFailed(f"{key}: expected etag {etag!r}, found {current!r}")
        return self.put(key, data)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        try:
            return self._data[key]
        except KeyError:
            raise NotFound(key) from None

    def list(self, prefix: str = "", start_after: Optional[str] = None) -> list[str]:
        return sorted(k for k in self._data
                      if k.startswith(prefix) and (start_after is None or k > start_after))

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def url(self) -> str:
        return "memory://benchmark"


# -- one run ---------------------------------------------------------------------------------

@dataclass
class RunSpec:
    strategy: str
    seed: int
    space: str
    space_options: dict
    strategy_options: dict
    dataset: str
    trials: int
    workers: int
    reward_exponent: float
    driver: str = "direct"          # "direct" (SearchLoop, no checkpoints) | "loop" (checkpointing, in-memory store)


@dataclass
class RunResult:
    strategy: str
    seed: int
    quality: list                   # mean-over-seeds val acc of the pick after t = 1..trials
    best_index: int                 # the final pick (table cell index)
    best_reward: float
    unique: int                     # distinct cells sampled
    sim_seconds: float              # simulated wall clock at the last result
    compute_seconds: float          # simulated training time charged (all workers)
    wall_seconds: float
    max_staleness: int = 0
    info: dict = field(default_factory=dict)


def effective_options(space: str, strategy: str, options: Optional[Mapping] = None) -> dict:
    """The options a run passes on top of the strategy's own defaults: the space's tuned
    ``strategy_defaults`` for ``strategy`` (what ``make_strategy`` applies anyway), overridden
    by ``options``. Recorded in runs.json so a result says exactly what it ran with."""
    from kubenas.controller.spaces import make_space

    out = dict(getattr(make_space(space), "strategy_defaults", {}).get(strategy, {}))
    out.update(dict(options or {}))
    return out


def default_reward_exponent(space: str) -> float:
    if space == "nasbench201":
        from kubenas.controller.spaces.nasbench201 import REWARD_EXPONENT
        return float(REWARD_EXPONENT)
    return 3.0


def run_one(spec: RunSpec) -> RunResult:
    """One search: ``spec.strategy`` with ``spec.seed`` for ``spec.trials`` table trials."""
    import torch

    torch.set_num_threads(1)
    from kubenas.controller.loop import SearchLoop
    from kubenas.controller.spaces import make_space
    from kubenas.controller.strategies import make_strategy
    from kubenas.experiment import parse_experiment

    t0 = time.perf_counter()
    table = load_table(spec.dataset)
    mean = table.mean_val_acc
    doc = {"metadata": {"name": f"nb201-{spec.strategy}-{spec.seed}"},
           "spec": {"search": {"space": spec.space, "spaceOptions": spec.space_options,
                               "strategy": spec.strategy, "strategyOptions": spec.strategy_options,
                               "seed": spec.seed},
                    "budget": {"maxTrials": spec.trials}, "parallelism": spec.workers,
                    "trainer": {"rewardExponent": spec.reward_exponent}}}
    exp = parse_experiment(doc)

    def factory():
        space = make_space(spec.space, spec.space_options)
        return make_strategy(spec.strategy, space, spec.strategy_options, spec.seed)

    executor = TableExecutor(table, workers=spec.workers, seed=spec.seed,
                             reward_exponent=spec.reward_exponent, experiment=exp.name)
    quality: list[float] = []
    best = {"reward": -math.inf, "index": -1}
    staleness = [0]

    def on_applied(trial: str, reward: Optional[float], stale: int) -> None:
        if reward is not None and reward > best["reward"]:
            best["reward"] = reward
            best["index"] = executor.table_index(trial)
        quality.append(float(mean[best["index"]]) if best["index"] >= 0 else math.nan)
        staleness[0] = max(staleness[0], int(stale or 0))

    if spec.driver not in ("direct", "loop"):
        raise ValueError(f"driver must be 'direct' or 'loop', got {spec.driver!r}")

    def on_event(event) -> None:
        if event.kind == "applied":
            on_applied(event.trial_id, event.reward, event.info.get("staleness"))

    # "loop" also checkpoints the whole controller state after every step, as a real run does;
    # "direct" skips that (it dominates a table lookup's cost). Results are identical.
    SearchLoop(exp, factory, executor, executor, MemoryStore(), on_event=on_event,
               poll_interval=0.0, checkpoint=spec.driver == "loop").run()
    return RunResult(strategy=spec.strategy, seed=spec.seed, quality=quality,
                     best_index=best["index"], best_reward=best["reward"],
                     unique=len(set(executor.table_indices.values())),
                     sim_seconds=executor.clock, compute_seconds=executor.busy_seconds,
                     wall_seconds=time.perf_counter() - t0, max_staleness=staleness[0])


# -- statistics and outputs -------------------------------------------------------------------

def checkpoints_for(trials: int) -> list[int]:
    return sorted({c for c in CHECKPOINTS if c <= trials} | {trials})


def _welch_p(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return None
    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def summarise(curves: Mapping[str, np.ndarray], optimum: float, trials: int) -> dict:
    """``curves[strategy]``: (seeds, trials) quality. -> strategy -> str(t) -> stats."""
    out: dict = {}
    base = curves.get(BASELINE)
    for name, q in curves.items():
        out[name] = {}
        for t in checkpoints_for(trials):
            col = q[:, t - 1]
            stats = {
                "best_val_mean": float(col.mean()),
                "best_val_std": float(col.std(ddof=1)) if len(col) > 1 else 0.0,
                "regret_mean": float(optimum - col.mean()),
                "p_vs_random": (None if base is None or name == BASELINE
                                else _welch_p(col, base[:, t - 1])),
            }
            out[name][str(t)] = stats
    return out


def format_table(summary: Mapping, meta: Mapping) -> str:
    trials = meta["trials"]
    cps = checkpoints_for(trials)
    head = (f"NAS-Bench-201 {DATASET_LABELS.get(meta['dataset'], meta['dataset'])}: "
            f"{meta['seeds']} seeds x {trials} trials, workers={meta['workers']}, "
            f"optimum {meta['optimum']:.2f} (mean over training seeds)")
    lines = [head,
             "quality = mean-over-seeds val acc of the highest-reward cell seen; "
             "cells: mean ± std over run seeds [regret]"]
    colw = 23
    hdr = f"{'strategy':<11}" + "".join(f"{'t=' + str(t):>{colw}}" for t in cps) + \
        f"{'p vs random @' + str(trials):>20}"
    lines += [hdr, "-" * len(hdr)]
    for name, by_t in summary.items():
        row = f"{name:<11}"
        for t in cps:
            s = by_t[str(t)]
            cell = f"{s['best_val_mean']:.2f} ± {s['best_val_std']:.2f} [{s['regret_mean']:.2f}]"
            row += f"{cell:>{colw}}"
        p = by_t[str(trials)]["p_vs_random"]
        row += f"{('-' if p is None else f'{p:.2g}'):>20}"
        lines.append(row)
    return "\n".join(lines)


def plot_curves(curves: Mapping[str, np.ndarray], optimum: float, meta: Mapping, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", "-.", ":"]
    for k, (name, q) in enumerate(curves.items()):
        x = np.arange(1, q.shape[1] + 1)
        m = q.mean(0)
        s = q.std(0, ddof=1) if q.shape[0] > 1 else np.zeros(q.shape[1])
        line, = ax.plot(x, m, ls=styles[k % len(styles)], lw=1.6, label=f"{name} ({m[-1]:.2f})")
        ax.fill_between(x, m - s, m + s, alpha=0.15, color=line.get_color())
    ax.axhline(optimum, color="k", ls="--", lw=0.8, label=f"optimum ({optimum:.2f})")
    lo = min(float(np.nanpercentile(q[:, min(9, q.shape[1] - 1):], 5)) for q in curves.values())
    ax.set_ylim(max(lo, optimum - 8), optimum + 0.3)
    ax.set_xlabel("trials (results received)")
    ax.set_ylabel("val accuracy of the pick (%, mean over training seeds)")
    ax.set_title(f"NAS-Bench-201 {meta['dataset']}: {meta['seeds']} seeds, workers={meta['workers']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the benchmark ----------------------------------------------------------------------------

def _normalise_options(strategies: Sequence[str], strategy_options: Optional[Mapping]) -> dict:
    opts = dict(strategy_options or {})
    bad = [k for k in opts if k not in strategies]
    if bad:
        raise ValueError(f"strategy_options is keyed by strategy name ({list(strategies)}); "
                         f"unknown key(s) {bad}")
    for k, v in opts.items():
        if not isinstance(v, Mapping):
            raise ValueError(f"strategy_options[{k!r}] must be a mapping of options")
    return opts


def run_benchmark(space: str = "nasbench201", dataset: str = "cifar10",
                  strategies: Sequence[str] = DEFAULT_STRATEGIES, trials: int = 150,
                  seeds: int = 30, workers: int = 1, out: Optional[str] = None,
                  strategy_options: Optional[Mapping[str, Mapping]] = None, *,
                  space_options: Optional[Mapping] = None,
                  reward_exponent: Optional[float] = None, seed_offset: int = 0,
                  jobs: Optional[int] = None, driver: str = "direct", verbose: bool = True) -> dict:
    """Run every strategy on seeds ``seed_offset .. seed_offset+seeds-1`` and summarise.

    ``strategy_options`` is keyed by strategy name (``{"reinforce": {"learningRate": 0.01}}``)
    and overrides the space's tuned defaults (``STRATEGY_DEFAULTS`` in the space module).
    ``reward_exponent`` defaults to the space's tuned ``REWARD_EXPONENT``. ``jobs``: worker
    processes (default: the CPU count); results do not depend on it. ``driver``: "direct"
    (``SearchLoop`` without per-step checkpoints, fast) or "loop" (checkpointing into an
    in-memory store as a real run does; same results, ~10x slower for REINFORCE).

    Returns the summary (also written to ``out/summary.json``):
    ``{strategy: {str(trials): {"best_val_mean", "best_val_std", "regret_mean", "p_vs_random"}}}``.
    """
    if space != "nasbench201":
        raise ValueError(f"the table benchmark needs the nasbench201 space, got {space!r}")
    dataset = canonical_dataset(dataset)
    strategies = list(strategies)
    if not strategies or len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies must be distinct and non-empty, got {strategies}")
    if trials < 1 or seeds < 1 or workers < 1 or seed_offset < 0:
        raise ValueError("trials, seeds and workers must be >= 1, seed_offset >= 0")
    if driver not in ("direct", "loop"):
        raise ValueError(f"driver must be 'direct' or 'loop', got {driver!r}")
    per_strategy = _normalise_options(strategies, strategy_options)
    exponent = default_reward_exponent(space) if reward_exponent is None else float(reward_exponent)
    options = {s: effective_options(space, s, per_strategy.get(s)) for s in strategies}
    table = load_table(dataset)

    specs = [RunSpec(strategy=s, seed=seed_offset + i, space=space,
                     space_options=dict(space_options or {}), strategy_options=options[s],
                     dataset=dataset, trials=trials, workers=workers, reward_exponent=exponent,
                     driver=driver)
             for s in strategies for i in range(seeds)]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs)))
    t0 = time.perf_counter()
    if jobs == 1:
        results = [run_one(s) for s in specs]
    else:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(jobs) as pool:
            results = pool.map(run_one, specs, chunksize=1)
    wall = time.perf_counter() - t0

    curves = {s: np.array([r.quality for r in results if r.strategy == s]) for s in strategies}
    summary = summarise(curves, table.optimum, trials)
    meta = {"space": space, "dataset": dataset, "strategies": strategies, "trials": trials,
            "seeds": seeds, "seed_offset": seed_offset, "workers": workers,
            "reward_exponent": exponent, "strategy_options": options,
            "space_options": dict(space_options or {}), "optimum": table.optimum,
            "optimum_index": table.best_index, "wall_seconds": wall, "jobs": jobs,
            "driver": driver}
    if verbose:
        print(format_table(summary, meta))
        print(f"wall time {wall:.1f} s ({len(specs)} runs, {jobs} processes)")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
        runs = [{"strategy": r.strategy, "seed": r.seed, "best_index": r.best_index,
                 "best_reward": r.best_reward, "unique": r.unique, "sim_seconds": r.sim_seconds,
                 "compute_seconds": r.compute_seconds, "wall_seconds": r.wall_seconds,
                 "max_staleness": r.max_staleness, "quality": r.quality} for r in results]
        with open(os.path.join(out, "runs.json"), "w") as fh:
            json.dump({"meta": meta, "table": format_table(summary, meta), "runs": runs}, fh)
        plot_curves(curves, table.optimum, meta, os.path.join(out, "curves.png"))
    return summary


# -- command line -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubenas benchmark",
        description="Compare search strategies on the NAS-Bench-201 table (simulated children).")
    p.add_argument("--space", default="nasbench201", choices=["nasbench201"])
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS),
                   help="cifar10 = NAS-Bench-201's cifar10-valid; imagenet = ImageNet16-120")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help="comma-separated (default: %(default)s)")
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--seed-offset", type=int, default=0, help="first run seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="simulated children in flight")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--strategy-options", default=None,
                   help='JSON keyed by strategy, e.g. \'{"reinforce": {"learningRate": 0.01}}\'')
    p.add_argument("--reward-exponent", type=float, default=None,
                   help="reward = (val_acc/100) ** this (default: the space's tuned value)")
    p.add_argument("--jobs", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--driver", default="direct", choices=["direct", "loop"],
                   help="direct: the loop's calls without per-step checkpoints (fast); "
                        "loop: kubenas.controller.loop.SearchLoop itself (same numbers, slower)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = json.loads(args.strategy_options) if args.strategy_options else None
    except json.JSONDecodeError as exc:
        print(f"kubenas benchmark: --strategy-options is not valid JSON ({exc})", file=sys.stderr)
        return 2
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    try:
        run_benchmark(space=args.space, dataset=args.dataset, strategies=strategies,
                      trials=args.trials, seeds=args.seeds, workers=args.workers, out=args.out,
                      strategy_options=opts, reward_exponent=args.reward_exponent,
                      seed_offset=args.seed_offset, jobs=args.jobs, driver=args.driver)
    except ValueError as exc:
        print(f"kubenas benchmark: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {os.path.join(args.out, 'summary.json')} and curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
