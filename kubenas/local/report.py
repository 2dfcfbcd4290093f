"""The run's outputs: leaderboard.csv, best_architecture.json, best_model.pt, rewards.png,
report.html; with a final phase final.json, final_model.pt and final_model.onnx."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Optional

from kubenas.contracts import ResultRecord
from kubenas.contracts.result import cost_totals
from kubenas.storage import NotFound, ObjectStore

log = logging.getLogger("kubenas.local")

MODEL_KEY = "models/{trial_id}.pt"


def _best_val(r: ResultRecord) -> Optional[float]:
    vals = [m.val_acc for m in r.metrics if m.val_acc is not None]
    return max(vals) if vals else None


# The leaderboard's columns, in order: leaderboard.csv and the HTML report's table.
LEADERBOARD_COLUMNS = ("rank", "trial_id", "status", "reward", "best_val_metric", "params",
                       "train_seconds", "device", "gpu_seconds", "cpu_seconds", "tokens",
                       "reason")


def device_label(r: ResultRecord) -> str:
    """What a trial ran on: "cpu", "cuda 2x NVIDIA H200"; "" without a cost record."""
    if r.cost is None:
        return ""
    if not r.cost.gpu_count:
        return r.cost.device
    return f"{r.cost.device} {r.cost.gpu_count}x {r.cost.gpu_name or 'GPU'}"


def _cost_columns(r: ResultRecord) -> dict:
    """GPU-seconds where the trial held a GPU, CPU-seconds where it did not (one is empty)."""
    if r.cost is None:
        return {"device": "", "gpu_seconds": "", "cpu_seconds": ""}
    seconds = f"{r.cost.seconds:.1f}"
    gpu = bool(r.cost.gpu_count)
    return {"device": device_label(r), "gpu_seconds": seconds if gpu else "",
            "cpu_seconds": "" if gpu else seconds}


def leaderboard_rows(results: list[ResultRecord]) -> list[dict]:
    """One dict per result (keys: LEADERBOARD_COLUMNS, values as written), best first."""
    ranked = sorted(results, key=lambda r: (not r.succeeded, -(r.reward or 0.0), r.trial_id))
    return [{"rank": rank, "trial_id": r.trial_id, "status": r.status,
             "reward": "" if r.reward is None else f"{r.reward:.6f}",
             "best_val_metric": "" if _best_val(r) is None else f"{_best_val(r):.6f}",
             "params": r.extra.get("params", r.extra.get("parameters", "")),
             "train_seconds": r.timings.get("train_seconds", ""), **_cost_columns(r),
             "tokens": " ".join(map(str, r.architecture.tokens)), "reason": r.reason or ""}
            for rank, r in enumerate(ranked, 1)]


def write_leaderboard(results: list[ResultRecord], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LEADERBOARD_COLUMNS)
        w.writeheader()
        w.writerows(leaderboard_rows(results))


def write_reward_plot(results: list[ResultRecord], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(results, key=lambda r: r.trial_id)
    xs, ys, best, running = [], [], [], None
    for i, r in enumerate(ordered):
        if r.succeeded:
            xs.append(i)
            ys.append(r.reward)
            running = r.reward if running is None else max(running, r.reward)
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(xs, ys, s=14, alpha=0.7, label="reward per trial")
    ax.step(range(len(best)), [b if b is not None else float("nan") for b in best],
            where="post", color="C3", label="running best")
    failed = [i for i, r in enumerate(ordered) if not r.succeeded]
    if failed:
        ax.scatter(failed, [0] * len(failed), marker="x", color="grey", label="failed")
    ax.set_xlabel("trial (sample order)")
    ax.set_ylabel("reward")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_html_report(results: list[ResultRecord], store: ObjectStore, path: Path) -> None:
    """report.html; a page that cannot be made is logged, never the end of the outputs."""
    from kubenas.report import report_store  # the report builds on this module's leaderboard

    try:
        report_store(store, path, results)
    except Exception:  # noqa: BLE001 - the search's results matter more than its page
        log.exception("%s: report not written", path)


FINAL_FILES = {"final_model.pt": "modelKey", "final_model.onnx": "onnxKey"}


def write_final_outputs(final: dict, store: ObjectStore, outdir: Path) -> list[str]:
    """final.json, final_model.pt (TorchScript) and final_model.onnx of the final phase
    (``kubenas.controller.final``); returns the names written."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "final.json").write_text(json.dumps(final, indent=1))
    written = ["final.json"]
    model = final.get("model") or {}
    for name, field in FINAL_FILES.items():
        if not model.get(field):
            continue
        try:
            (outdir / name).write_bytes(store.get(model[field]))
            written.append(name)
        except NotFound:
            log.warning("%s: %s not in the store", name, model[field])
    return written


def write_outputs(results: list[ResultRecord], store: ObjectStore, outdir: Path,
                  final: Optional[dict] = None) -> dict:
    """Write every output file (with ``final``, the final phase's too); returns a summary
    for the CLI to print."""
    outdir.mkdir(parents=True, exist_ok=True)
    if final is not None:
        write_final_outputs(final, store, outdir)
    write_leaderboard(results, outdir / "leaderboard.csv")
    write_reward_plot(results, outdir / "rewards.png")
    write_html_report(results, store, outdir / "report.html")
    ok = [r for r in results if r.succeeded]
    summary = {"trials": len(results), "succeeded": len(ok), "failed": len(results) - len(ok),
               "cost": cost_totals(results)}
    if not ok:
        return summary
    best = max(ok, key=lambda r: r.reward)
    (outdir / "best_architecture.json").write_text(json.dumps(
        {**best.architecture.to_dict(), "trial_id": best.trial_id, "reward": best.reward,
         "metrics": [m.__dict__ for m in best.metrics]}, indent=1))
    summary.update(best_trial=best.trial_id, best_reward=best.reward)
    try:
        (outdir / "best_model.pt").write_bytes(store.get(MODEL_KEY.format(trial_id=best.trial_id)))
        summary["best_model"] = str(outdir / "best_model.pt")
    except NotFound:
        summary["best_model"] = None
    return summary
