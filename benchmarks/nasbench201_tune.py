"""Equal tuning budget for every strategy on the NAS-Bench-201 cifar10 table.

Each strategy gets at most ``BUDGET`` configurations, each run on the same tuning seeds
(2000-2029 by default: disjoint from the seeds the benchmark reports, 0-29, and from the
seeds of the earlier REINFORCE-only sweep, 1000-1039) for 150 trials on cifar10 only. A
configuration is the strategy's options plus its pick rule (the share of the trials spent
re-evaluating the top candidates with another seed). Random search has only the pick rule to
tune; evolution's mutation (one decision) is fixed by the strategy and not an option. The
score is the benchmark's own: the pick's accuracy on the training seeds the search never saw,
mean over the tuning seeds at the last trial (higher is better; the winner per strategy is
the configuration with the best mean).

    nice -n 15 .venv/bin/python benchmarks/nasbench201_tune.py \\
        --log docs/benchmark-nasbench201-tuning.log

The winners go into ``STRATEGY_DEFAULTS`` / ``PICK_DEFAULTS`` in
``benchmarks/nasbench201/config.py`` by hand (this script only reports).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.nasbench201.benchmark import run_benchmark  # noqa: E402

BUDGET = 8               # configurations per strategy: the same for every strategy
SHARES = (0.0, 0.1)      # pick rule: share of the trials re-evaluating the top candidates

# (strategy options, re-evaluation share); REINFORCE's options sit around the settings the
# earlier sweep chose (lr 0.03, entropy 0.1, rank shaping); evolution's around smaller
# populations than Real et al.'s 100, which at 150 trials is mostly random search.
GRIDS: dict[str, list[tuple[dict, float]]] = {
    "evolution": [({"populationSize": p, "sampleSize": s}, share)
                  for (p, s), share in itertools.product(
                      [(10, 3), (20, 5), (30, 10), (50, 15)], SHARES)],
    "random": [({}, share) for share in (0.0, 0.05, 0.1, 0.2, 0.3)],
    "reinforce": [({"learningRate": lr, "entropyWeight": ent}, share)
                  for (lr, ent), share in itertools.product(
                      [(0.03, 0.1), (0.02, 0.05), (0.05, 0.15), (0.03, 0.05)], SHARES)],
}


def evaluate(strategy: str, options: dict, share: float, args) -> dict:
    """One configuration on the tuning seeds: the summary at the last trial."""
    t0 = time.perf_counter()
    summary = run_benchmark(dataset=args.dataset, strategies=[strategy], trials=args.trials,
                            seeds=args.seeds, seed_offset=args.seed_offset,
                            strategy_options={strategy: options} if options else None,
                            reeval_share=share, jobs=args.jobs, verbose=False)
    last = summary[strategy][str(args.trials)]
    return {"strategy": strategy, "options": options, "reevalShare": share,
            "mean": last["best_val_mean"], "std": last["best_val_std"],
            "regret": last["regret_mean"], "fallbacks": last["fallbacks"],
            "wall_seconds": round(time.perf_counter() - t0, 1)}


def line(row: dict) -> str:
    return (f"{row['strategy']:<10} {json.dumps(row['options']):<48} share {row['reevalShare']:<5g}"
            f" {row['mean']:.2f} ± {row['std']:.2f} [regret {row['regret']:.2f}]"
            f" fallbacks {row['fallbacks']:>2}  {row['wall_seconds']:.0f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--seed-offset", type=int, default=2000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--strategies", default=",".join(GRIDS))
    p.add_argument("--log", default=None, help="also append the lines to this file")
    args = p.parse_args(argv)
    if args.seed_offset < 30:
        p.error("tuning seeds must be disjoint from the reported ones (0-29)")
    out = open(args.log, "a") if args.log else None

    def emit(text: str) -> None:
        print(text, flush=True)
        if out:
            out.write(text + "\n")
            out.flush()

    emit(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  {args.dataset}, {args.trials} "
         f"trials, run seeds {args.seed_offset}-{args.seed_offset + args.seeds - 1}, "
         f"at most {BUDGET} configurations per strategy; score: unseen-seed accuracy of the pick")
    for strategy in args.strategies.split(","):
        grid = GRIDS[strategy]
        assert len(grid) <= BUDGET, f"{strategy}: {len(grid)} configurations > {BUDGET}"
        rows = []
        for options, share in grid:
            rows.append(evaluate(strategy, options, share, args))
            emit(line(rows[-1]))
        emit("chosen: " + line(max(rows, key=lambda r: r["mean"])))
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
