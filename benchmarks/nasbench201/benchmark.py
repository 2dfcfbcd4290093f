"""An honest comparison of search strategies on the NAS-Bench-201 table (§4.2's control experiment).

Every (strategy, seed) run drives the real search loop (``kubenas.controller.loop.SearchLoop``,
with an in-memory store) against a ``TableExecutor`` that answers each sampled cell from the
table — a noisy reward (one training seed drawn at random), simulated training time, ``workers``
children in flight. The *quality* of a run after t results is the validation accuracy of the
cell the strategy would pick then, **on the table's training seeds the search has not seen
for that cell** (the seed whose lucky draw won the pick cannot flatter it); only where every
seed was seen is it the mean over all of them, and those fallbacks are counted. The pick is
the highest reward seen, or, with a re-evaluation share, the candidate with the best mean
reward after the top candidates were re-evaluated with another seed (counted against the
trial budget). Every strategy runs on the same seeds (``seed_offset`` .. ``seed_offset +
seeds - 1``); one run is reproducible from its seed, and p-values pair runs by seed
(Wilcoxon signed-rank).

Outputs (in ``out``): ``summary.json`` (strategy -> trial count -> mean/std/regret/p-value),
``curves.png`` (best-so-far, ±1 std band), ``runs.json`` (the configuration, the effective
options, per-run curves and picks, wall time) — and the printed table.

    kubenas benchmark --space nasbench201 --dataset cifar10 \\
        --strategies reinforce,random,evolution --trials 150 --seeds 30 --out runs/bench

(``python -m benchmarks.nasbench201 ...`` from the repository root is the same.)
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
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from benchmarks.nasbench201.config import PICK_DEFAULTS, REWARD_EXPONENT, STRATEGY_DEFAULTS
from benchmarks.nasbench201.simulated import TableExecutor
from benchmarks.nasbench201.table import DATASETS, NB201Table, canonical_dataset, load_table
from kubenas.contracts import TrialRequest
from kubenas.storage.memory import MemoryStore

CHECKPOINTS = (25, 50, 100, 150)
DEFAULT_STRATEGIES = ("reinforce", "random", "evolution")
BASELINE = "random"
DATASET_LABELS = {"cifar10": "cifar10 (cifar10-valid)", "cifar100": "cifar100",
                  "imagenet": "imagenet (ImageNet16-120)"}


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
    reeval_share: float = 0.0       # share of the trials spent re-evaluating the top candidates
    reeval_top_k: Optional[int] = None   # candidates re-evaluated (default: one per re-evaluation)


@dataclass
class RunResult:
    strategy: str
    seed: int
    quality: list                   # unseen-seed score of the pick after t = 1..trials
    best_index: int                 # the final pick (table cell index)
    best_reward: float              # its reward (mean over its evaluations when re-evaluated)
    unique: int                     # distinct cells sampled
    sim_seconds: float              # simulated wall clock at the last result
    compute_seconds: float          # simulated training time charged (all workers)
    wall_seconds: float
    max_staleness: int = 0
    fallback: list = field(default_factory=list)   # per t: every seed of the pick was seen
    worst_seed: float = math.nan    # the final pick's worst training seed (a pessimistic bound)
    mean_all_seeds: float = math.nan   # the final pick's mean over all seeds (the old, optimistic score)
    info: dict = field(default_factory=dict)


def effective_options(space: str, strategy: str, options: Optional[Mapping] = None) -> dict:
    """The options a run passes on top of the strategy's own defaults: the benchmark's tuned
    ``STRATEGY_DEFAULTS`` for ``strategy`` on the nasbench201 space
    (``benchmarks/nasbench201/config.py``), overridden by ``options``. Recorded in runs.json
    so a result says exactly what it ran with."""
    out = dict(STRATEGY_DEFAULTS.get(strategy, {})) if space == "nasbench201" else {}
    out.update(dict(options or {}))
    return out


def default_reward_exponent(space: str) -> float:
    return float(REWARD_EXPONENT) if space == "nasbench201" else 3.0


# -- the pick and its honest score ------------------------------------------------------------

class PickTracker:
    """What a search has seen of each cell (rewards, training seeds) and its pick's score.

    The pick is the cell the search would report: the one with the highest single reward
    seen (what the loop's ``best`` holds) or, once ``candidates`` are set (re-evaluation),
    the candidate with the highest mean reward over its evaluations. Its *score* is the
    table's mean over the training seeds the search has **not** seen for that cell, so the
    draw that won the pick cannot flatter it. Where every seed was seen, the score falls
    back to the mean over all of them and says so (``score(...)[1]``)."""

    def __init__(self, table: NB201Table) -> None:
        self.table = table
        self.rewards: dict[int, list[float]] = {}     # cell -> rewards, in arrival order
        self.seen: dict[int, set[int]] = {}           # cell -> training seeds seen
        self.best_draw: tuple[float, int] = (-math.inf, -1)
        self.candidates: Optional[list[int]] = None

    def observe(self, index: int, seed: int, reward: Optional[float]) -> None:
        self.seen.setdefault(index, set()).add(seed)
        if reward is None:
            return
        self.rewards.setdefault(index, []).append(float(reward))
        if reward > self.best_draw[0]:
            self.best_draw = (float(reward), index)

    def mean_reward(self, index: int) -> float:
        return float(np.mean(self.rewards[index]))

    def top_by_mean(self, k: int) -> list[int]:
        """The ``k`` cells with the highest mean reward (ties: the first seen first)."""
        return sorted(self.rewards, key=lambda i: -self.mean_reward(i))[:k]

    def pick(self) -> int:
        if self.candidates:
            return max(self.candidates, key=self.mean_reward)   # first wins ties
        return self.best_draw[1]

    def pick_reward(self) -> float:
        index = self.pick()
        return self.mean_reward(index) if self.candidates else self.best_draw[0]

    def score(self, index: int) -> tuple[float, bool]:
        """(mean val acc over the seeds not seen, False) or (mean over all seeds, True)."""
        if index < 0:
            return math.nan, False
        seen = self.seen.get(index, set())
        unseen = [k for k in range(int(self.table.n_seeds[index])) if k not in seen]
        if not unseen:
            return float(self.table.mean_val_acc[index]), True
        return float(np.mean(self.table.val_acc[index, unseen])), False


def split_budget(trials: int, share: float) -> tuple[int, int]:
    """(search trials, re-evaluation trials) of a ``trials`` budget; the re-evaluations are
    ``round(share * trials)`` and leave at least one search trial."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"reeval_share must be in [0, 1), got {share}")
    reevals = int(round(share * trials))
    if reevals >= trials:
        raise ValueError(f"reeval_share {share} leaves no search trial out of {trials}")
    return trials - reevals, reevals


def reevaluate(executor: TableExecutor, tracker: PickTracker, count: int,
               top_k: Optional[int], on_result: Callable[[str, Optional[float]], None]) -> int:
    """Spend ``count`` trials on the ``top_k`` cells with the highest mean reward (round
    robin; default one trial per candidate), each with a training seed the cell has not had
    yet where one is left, then pick the candidate with the highest mean reward. Returns
    the trials spent."""
    from kubenas.controller.spaces.nasbench201 import from_table_index

    candidates = tracker.top_by_mean(top_k or count)
    if not candidates or count <= 0:
        return 0
    tracker.candidates = candidates
    known = set(executor.table_indices)       # the search's own results are all applied
    submitted = done = 0
    while done < count:
        while submitted < count and executor.free_slots() > 0:
            arch = from_table_index(candidates[submitted % len(candidates)])
            executor.submit(TrialRequest(trial_id=f"reeval-{submitted:05d}", architecture=arch),
                            fresh_seed=True)
            submitted += 1
        for record in executor.poll(known):
            known.add(record.trial_id)
            done += 1
            on_result(record.trial_id, record.reward)
    return done


def _experiment(spec: RunSpec, search_trials: int):
    from kubenas.experiment import parse_experiment

    doc = {"metadata": {"name": f"nb201-{spec.strategy}-{spec.seed}"},
           "spec": {"search": {"space": spec.space, "spaceOptions": spec.space_options,
                               "strategy": spec.strategy, "strategyOptions": spec.strategy_options,
                               "seed": spec.seed},
                    "budget": {"maxTrials": search_trials}, "parallelism": spec.workers,
                    "trainer": {"rewardExponent": spec.reward_exponent}}}
    return parse_experiment(doc)


def run_one(spec: RunSpec) -> RunResult:
    """One search: ``spec.strategy`` with ``spec.seed`` for ``spec.trials`` table trials
    (the last ``reeval_share`` of them re-evaluating the top candidates)."""
    import torch

    torch.set_num_threads(1)
    from kubenas.controller import SearchLoop, make_space, make_strategy

    if spec.driver not in ("direct", "loop"):
        raise ValueError(f"driver must be 'direct' or 'loop', got {spec.driver!r}")
    t0 = time.perf_counter()
    table = load_table(spec.dataset)
    search_trials, reevals = split_budget(spec.trials, spec.reeval_share)
    exp = _experiment(spec, search_trials)

    def factory():
        space = make_space(spec.space, spec.space_options)
        return make_strategy(spec.strategy, space, spec.strategy_options, spec.seed)

    executor = TableExecutor(table, workers=spec.workers, seed=spec.seed,
                             reward_exponent=spec.reward_exponent, experiment=exp.name)
    tracker = PickTracker(table)
    quality: list[float] = []
    fallback: list[bool] = []
    staleness = [0]

    def on_result(trial: str, reward: Optional[float]) -> None:
        tracker.observe(executor.table_index(trial), executor.table_seeds[trial], reward)
        score, fell_back = tracker.score(tracker.pick())
        quality.append(score)
        fallback.append(fell_back)

    def on_event(event) -> None:
        if event.kind == "applied":
            on_result(event.trial_id, event.reward)
            staleness[0] = max(staleness[0], int(event.info.get("staleness") or 0))

    # "loop" also checkpoints the whole controller state after every step, as a real run does;
    # "direct" skips that (it dominates a table lookup's cost). Results are identical.
    SearchLoop(exp, factory, executor, executor, MemoryStore("benchmark"), on_event=on_event,
               poll_interval=0.0, checkpoint=spec.driver == "loop").run()
    spent = reevaluate(executor, tracker, reevals, spec.reeval_top_k, on_result)
    pick = tracker.pick()
    return RunResult(strategy=spec.strategy, seed=spec.seed, quality=quality,
                     best_index=pick, best_reward=tracker.pick_reward(),
                     unique=len(set(executor.table_indices.values())),
                     sim_seconds=executor.clock, compute_seconds=executor.busy_seconds,
                     wall_seconds=time.perf_counter() - t0, max_staleness=staleness[0],
                     fallback=fallback, worst_seed=float(np.nanmin(table.val_acc[pick])),
                     mean_all_seeds=float(table.mean_val_acc[pick]),
                     info={"search_trials": search_trials, "reevaluations": spent})


# -- statistics and outputs -------------------------------------------------------------------

def checkpoints_for(trials: int) -> list[int]:
    return sorted({c for c in CHECKPOINTS if c <= trials} | {trials})


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The run seeds both strategies ran, sorted, and their values in that order: run i of
    one strategy is paired with the run of the other that had the same seed."""
    seeds = sorted(set(a) & set(b))
    return seeds, np.array([a[s] for s in seeds], float), np.array([b[s] for s in seeds], float)


def paired_p(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p-value of paired samples ``a`` and ``b``.

    Wilcoxon, not a paired t-test: the differences are far from normal (a pick is one of a
    few top cells, so they are discrete, often tied or zero, and heavy-tailed). Zero
    differences (both runs picked equally good cells) are dropped ("wilcox"); all zero: 1.0."""
    from scipy.stats import wilcoxon

    if len(a) < 2:
        return None
    if np.all(a == b):
        return 1.0
    p = float(wilcoxon(a, b, zero_method="wilcox").pvalue)
    return p if math.isfinite(p) else None


def _by_seed(runs: Sequence[RunResult], t: int) -> dict[int, float]:
    return {r.seed: float(r.quality[t - 1]) for r in runs}


def _checkpoint_stats(runs: Sequence[RunResult], base: Optional[Sequence[RunResult]],
                      optimum: float, t: int) -> dict:
    mine = _by_seed(runs, t)
    col = np.array(list(mine.values()))
    stats = {"best_val_mean": float(col.mean()),
             "best_val_std": float(col.std(ddof=1)) if len(col) > 1 else 0.0,
             "regret_mean": float(optimum - col.mean()),
             "fallbacks": int(sum(bool(r.fallback[t - 1]) for r in runs)),
             "p_vs_random": None, "diff_vs_random": None}
    if base is not None:
        _, x, y = paired(mine, _by_seed(base, t))
        stats["p_vs_random"] = paired_p(x, y)
        stats["diff_vs_random"] = float((x - y).mean()) if len(x) else None
    return stats


def _final_stats(name: str, runs: Mapping[str, Sequence[RunResult]], optimum: float) -> dict:
    """At the last trial: the old optimistic score, a pessimistic one (fallback picks scored
    by their worst seed), and the paired p-value against every other strategy."""
    mine = runs[name]
    worst = [r.worst_seed if r.fallback[-1] else r.quality[-1] for r in mine]
    t = len(mine[0].quality)
    return {"mean_all_seeds": float(np.mean([r.mean_all_seeds for r in mine])),
            "regret_worst_fallback": float(optimum - np.mean(worst)),
            "p_paired": {other: paired_p(*paired(_by_seed(mine, t), _by_seed(rs, t))[1:])
                         for other, rs in runs.items() if other != name}}


def summarise(runs: Mapping[str, Sequence[RunResult]], optimum: float, trials: int) -> dict:
    """``runs[strategy]``: its runs. -> strategy -> str(t) -> stats (p-values paired by run
    seed against random search); the last trial count also carries ``_final_stats``."""
    out: dict = {}
    base = runs.get(BASELINE)
    for name, mine in runs.items():
        out[name] = {str(t): _checkpoint_stats(mine, None if name == BASELINE else base,
                                               optimum, t)
                     for t in checkpoints_for(trials)}
        out[name][str(trials)].update(_final_stats(name, runs, optimum))
    return out


def format_table(summary: Mapping, meta: Mapping) -> str:
    trials = meta["trials"]
    cps = checkpoints_for(trials)
    head = (f"NAS-Bench-201 {DATASET_LABELS.get(meta['dataset'], meta['dataset'])}: "
            f"{meta['seeds']} seeds x {trials} trials, workers={meta['workers']}, "
            f"optimum {meta['optimum']:.2f} (mean over training seeds)")
    lines = [head,
             "quality = val acc of the pick on the training seeds the search never saw "
             "(all seeds where none is left: a fallback); cells: mean ± std over run seeds "
             "[regret]; p: Wilcoxon signed-rank, paired by run seed"]
    colw = 23
    hdr = f"{'strategy':<11}" + "".join(f"{'t=' + str(t):>{colw}}" for t in cps) + \
        f"{'p vs random @' + str(trials):>20}{'fallbacks':>11}"
    lines += [hdr, "-" * len(hdr)]
    for name, by_t in summary.items():
        row = f"{name:<11}"
        for t in cps:
            s = by_t[str(t)]
            cell = f"{s['best_val_mean']:.2f} ± {s['best_val_std']:.2f} [{s['regret_mean']:.2f}]"
            row += f"{cell:>{colw}}"
        last = by_t[str(trials)]
        p = last["p_vs_random"]
        row += f"{('-' if p is None else f'{p:.2g}'):>20}{last['fallbacks']:>8}/{meta['seeds']}"
        lines.append(row)
    lines += ["", _final_block(summary, meta)]
    return "\n".join(lines)


def _final_block(summary: Mapping, meta: Mapping) -> str:
    """At the last trial: the pick rule, the old and the pessimistic score, paired p-values."""
    trials, optimum = meta["trials"], meta["optimum"]
    lines = [f"@{trials}: pick rule | regret by mean over all seeds (optimistic) | "
             "regret with fallbacks scored by their worst seed | paired p"]
    for name, by_t in summary.items():
        s = by_t[str(trials)]
        rule = meta.get("pick", {}).get(name, {})
        share, k = rule.get("reevalShare", 0.0), rule.get("reevalTopK")
        rule_s = f"re-evaluate {share:g} (top {k or 'n'})" if share else "best draw"
        ps = ", ".join(f"{o} {'-' if p is None else f'{p:.2g}'}" for o, p in s["p_paired"].items())
        lines.append(f"  {name:<10} {rule_s:<24} {optimum - s['mean_all_seeds']:.2f} | "
                     f"{s['regret_worst_fallback']:.2f} | {ps}")
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


def pick_rule(space: str, strategy: str, reeval_share: Optional[float] = None,
              reeval_top_k: Optional[int] = None) -> dict:
    """The pick rule a strategy's runs use: the benchmark's tuned ``PICK_DEFAULTS`` beneath
    the caller's ``reeval_share`` / ``reeval_top_k`` (None: keep the default)."""
    rule = {"reevalShare": 0.0, "reevalTopK": None}
    if space == "nasbench201":
        rule.update(PICK_DEFAULTS.get(strategy, {}))
    if reeval_share is not None:
        rule["reevalShare"] = float(reeval_share)
    if reeval_top_k is not None:
        rule["reevalTopK"] = int(reeval_top_k)
    if rule["reevalTopK"] is not None and rule["reevalTopK"] < 1:
        raise ValueError(f"reeval_top_k must be >= 1, got {rule['reevalTopK']}")
    return rule


def _check_arguments(space: str, strategies: list, trials: int, seeds: int, workers: int,
                     seed_offset: int, driver: str) -> None:
    if space != "nasbench201":
        raise ValueError(f"the table benchmark needs the nasbench201 space, got {space!r}")
    if not strategies or len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies must be distinct and non-empty, got {strategies}")
    if trials < 1 or seeds < 1 or workers < 1 or seed_offset < 0:
        raise ValueError("trials, seeds and workers must be >= 1, seed_offset >= 0")
    if driver not in ("direct", "loop"):
        raise ValueError(f"driver must be 'direct' or 'loop', got {driver!r}")


def _run_all(specs: list[RunSpec], jobs: Optional[int]) -> tuple[list[RunResult], int]:
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs)))
    if jobs == 1:
        return [run_one(s) for s in specs], jobs
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(jobs) as pool:
        return pool.map(run_one, specs, chunksize=1), jobs


def _write_outputs(out: str, summary: dict, meta: dict, results: list[RunResult],
                   curves: Mapping[str, np.ndarray], optimum: float) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    runs = [{"strategy": r.strategy, "seed": r.seed, "best_index": r.best_index,
             "best_reward": r.best_reward, "unique": r.unique, "sim_seconds": r.sim_seconds,
             "compute_seconds": r.compute_seconds, "wall_seconds": r.wall_seconds,
             "max_staleness": r.max_staleness, "fallback": r.fallback[-1],
             "worst_seed": r.worst_seed, "mean_all_seeds": r.mean_all_seeds,
             "quality": r.quality} for r in results]
    with open(os.path.join(out, "runs.json"), "w") as fh:
        json.dump({"meta": meta, "table": format_table(summary, meta), "runs": runs}, fh)
    plot_curves(curves, optimum, meta, os.path.join(out, "curves.png"))


def run_benchmark(space: str = "nasbench201", dataset: str = "cifar10",
                  strategies: Sequence[str] = DEFAULT_STRATEGIES, trials: int = 150,
                  seeds: int = 30, workers: int = 1, out: Optional[str] = None,
                  strategy_options: Optional[Mapping[str, Mapping]] = None, *,
                  space_options: Optional[Mapping] = None,
                  reward_exponent: Optional[float] = None, seed_offset: int = 0,
                  jobs: Optional[int] = None, driver: str = "direct",
                  reeval_share: Optional[float] = None, reeval_top_k: Optional[int] = None,
                  verbose: bool = True) -> dict:
    """Run every strategy on seeds ``seed_offset .. seed_offset+seeds-1`` and summarise.

    ``strategy_options`` is keyed by strategy name (``{"reinforce": {"learningRate": 0.01}}``)
    and overrides the benchmark's tuned defaults (``STRATEGY_DEFAULTS`` in ``config.py``).
    ``reeval_share`` / ``reeval_top_k`` override every strategy's pick rule (``PICK_DEFAULTS``
    there; share 0: pick the best single draw). ``reward_exponent`` defaults to the
    benchmark's ``REWARD_EXPONENT``. ``jobs``: worker processes (default: the CPU count); results
    do not depend on it. ``driver``: "direct" (``SearchLoop`` without per-step checkpoints,
    fast) or "loop" (checkpointing into an in-memory store as a real run does; same
    results, ~10x slower for REINFORCE).

    Returns the summary (also written to ``out/summary.json``): ``{strategy: {str(t):
    {"best_val_mean", "best_val_std", "regret_mean", "fallbacks", "p_vs_random",
    "diff_vs_random"}}}``; the last t also has ``mean_all_seeds``, ``regret_worst_fallback``
    and ``p_paired`` (strategy -> p).
    """
    dataset = canonical_dataset(dataset)
    strategies = list(strategies)
    _check_arguments(space, strategies, trials, seeds, workers, seed_offset, driver)
    per_strategy = _normalise_options(strategies, strategy_options)
    exponent = default_reward_exponent(space) if reward_exponent is None else float(reward_exponent)
    options = {s: effective_options(space, s, per_strategy.get(s)) for s in strategies}
    rules = {s: pick_rule(space, s, reeval_share, reeval_top_k) for s in strategies}
    for rule in rules.values():
        split_budget(trials, rule["reevalShare"])      # refuse a bad share before any run
    table = load_table(dataset)

    specs = [RunSpec(strategy=s, seed=seed_offset + i, space=space,
                     space_options=dict(space_options or {}), strategy_options=options[s],
                     dataset=dataset, trials=trials, workers=workers, reward_exponent=exponent,
                     driver=driver, reeval_share=rules[s]["reevalShare"],
                     reeval_top_k=rules[s]["reevalTopK"])
             for s in strategies for i in range(seeds)]
    t0 = time.perf_counter()
    results, jobs = _run_all(specs, jobs)
    wall = time.perf_counter() - t0

    by_strategy = {s: [r for r in results if r.strategy == s] for s in strategies}
    summary = summarise(by_strategy, table.optimum, trials)
    meta = {"space": space, "dataset": dataset, "strategies": strategies, "trials": trials,
            "seeds": seeds, "seed_offset": seed_offset, "workers": workers,
            "reward_exponent": exponent, "strategy_options": options, "pick": rules,
            "space_options": dict(space_options or {}), "optimum": table.optimum,
            "optimum_index": table.best_index, "wall_seconds": wall, "jobs": jobs,
            "driver": driver, "test": "wilcoxon signed-rank, paired by run seed"}
    if verbose:
        print(format_table(summary, meta))
        print(f"wall time {wall:.1f} s ({len(specs)} runs, {jobs} processes)")
    if out:
        curves = {s: np.array([r.quality for r in rs]) for s, rs in by_strategy.items()}
        _write_outputs(out, summary, meta, results, curves, table.optimum)
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
    p.add_argument("--reeval-share", type=float, default=None,
                   help="share of the trials spent re-evaluating the top candidates with a "
                        "seed they have not had, before picking (0: pick the best single draw; "
                        "default: the space's tuned pick rule per strategy)")
    p.add_argument("--reeval-top-k", type=int, default=None,
                   help="candidates to re-evaluate (default: one per re-evaluation trial)")
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
                      seed_offset=args.seed_offset, jobs=args.jobs, driver=args.driver,
                      reeval_share=args.reeval_share, reeval_top_k=args.reeval_top_k)
    except ValueError as exc:
        print(f"kubenas benchmark: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {os.path.join(args.out, 'summary.json')} and curves.png")
    return 0

