"""``kubenas run`` with ``strategy: enas``: the whole search in this process (no children).

Outputs, in the work directory and under ``outputs/`` in the store:
``best_architecture.json`` (the derived architecture: train it from scratch to use it),
``enas_summary.json`` (op histogram, derive candidates, per-epoch loss/reward, CPU time) and
``leaderboard.csv`` (the derive candidates, best first). Run the same command again to
resume a killed search from its checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from kubenas.contracts import Architecture, ResultRecord
from kubenas.enas.search import EnasSearch
from kubenas.storage import ObjectStore


def run_local(exp, strategy_factory, trainer_config: dict, store: ObjectStore,
              workdir: Path) -> dict:
    """Run (or resume) the search and write its outputs; returns the summary."""
    search = EnasSearch(strategy_factory(), trainer_config, store, max_samples=exp.max_trials)
    if search.resumed:
        p = search.pos
        print(f"resuming {exp.name}: epoch {p.epoch}, {p.phase} phase, step {p.step}")
    summary = search.run()
    write_outputs(summary, store, workdir)
    return summary


def derived_record(experiment: str, summary: dict) -> ResultRecord:
    """The search's outcome as the final phase reads a search (``FinalPhase.run``): one
    succeeded result, the derived architecture, rewarded with its validation-batch reward."""
    return ResultRecord(experiment=experiment, trial_id=f"{experiment}-derived",
                        architecture=Architecture.from_dict(summary["architecture"]),
                        status="succeeded", reward=float(summary["val_batch_reward"]))


def enas_cost(summary: dict) -> dict:
    """The search's cost in the totals' form: no trials, its process's CPU-seconds (on a GPU
    too: the search measures CPU time only)."""
    return {"trials": 0, "cpuSeconds": float(summary["cpu_seconds"]), "gpuSeconds": 0.0,
            "withoutCost": 0}


def write_outputs(summary: dict, store: ObjectStore, workdir: Path) -> None:
    files = {"best_architecture.json": json.dumps(summary["architecture"], indent=1),
             "enas_summary.json": json.dumps(summary, indent=1),
             "leaderboard.csv": _leaderboard(summary["candidates"])}
    for name, text in files.items():
        (workdir / name).write_text(text)
        store.put(f"outputs/{name}", text.encode())


def _leaderboard(candidates: list[dict]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["rank", "val_batch_reward", "tokens"])
    ranked = sorted(candidates, key=lambda c: -c["val_batch_reward"])
    for rank, c in enumerate(ranked, 1):
        w.writerow([rank, f"{c['val_batch_reward']:.6f}", " ".join(map(str, c["tokens"]))])
    return out.getvalue()
