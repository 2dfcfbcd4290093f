"""The final phase (issue 12; Zoph & Le §4.1): after the search's budget, grid search the
top-K architectures, retrain the best grid point with the final schedule, test it once.

Grid points and retrains are trials like any other: submitted through the same executor
(processes locally, Trials -> Jobs in a cluster), results written create-only by the
children and read from the same result source. They never reach the strategy: this module
has no policy, and the controller state is not written. Its own documents are create-only:

* ``final/plan.json``: the grid trials (top-K by validation reward x the grid's points);
* ``final/retrain.json``: the chosen grid point (best validation reward) and the retrain
  trials (one per ``spec.final.sizes`` entry, or one), which carry ``finalRun`` so that
  their child evaluates the test split once (``kubenas.trainer.final``);

so a resumed run finds the same plan, re-submits only trials without a result and counts
each result once (by trial id). ``final/final.json`` is the summary (``final_document``).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from typing import Callable, Container, Optional

from kubenas.contracts import (Architecture, Executor, ResultRecord, ResultSource, TrialRefused,
                               TrialRequest, names, result_key)
from kubenas.contracts.result import cost_totals
from kubenas.experiment import Experiment
from kubenas.storage import AlreadyExists, NotFound, ObjectStore

log = logging.getLogger("kubenas.controller")

PLAN_KEY = "final/plan.json"
RETRAIN_KEY = "final/retrain.json"
FINAL_KEY = "final/final.json"
FINAL_RUN_KEY = "finalRun"   # kubenas.trainer.child.FINAL_RUN_KEY (the rooms share no code)


class FinalPhaseFailed(RuntimeError):
    """No grid point (or no retrain) succeeded: there is nothing to ship."""


class FinalPhaseStopped(RuntimeError):
    """Asked to stop (the Experiment stopped, the controller is shutting down); the plans
    and results written so far are where the next run resumes."""


def grid_points(grid: dict) -> list[dict]:
    """Every combination of the grid's axes, in axis order (the last axis varies fastest)."""
    axes = list(grid)
    return [dict(zip(axes, values)) for values in itertools.product(*(grid[a] for a in axes))]


def top_k(records: list[ResultRecord], k: int) -> list[ResultRecord]:
    """The k best succeeded search results by reward (validation), one per architecture."""
    out, seen = [], set()
    for r in sorted((r for r in records if r.succeeded), key=lambda r: (-r.reward, r.trial_id)):
        if r.architecture.key() not in seen:
            seen.add(r.architecture.key())
            out.append(r)
    return out[:k]


def _size_settings(space: str, size) -> dict:
    if space in names.LM_SPACES:
        return {"hiddenSize": size, "embeddingSize": size}
    return {"widthMultiplier": size}


class _AllBut(Container):
    """``known`` for the result source: everything except the trials waited for."""

    def __init__(self, waiting: dict) -> None:
        self.waiting = waiting

    def __contains__(self, tid: object) -> bool:
        return tid not in self.waiting


class FinalPhase:
    def __init__(self, experiment: Experiment, executor: Executor, results: ResultSource,
                 store: ObjectStore, on_event: Optional[Callable[[str, dict], None]] = None,
                 poll_interval: float = 0.5,
                 stop: Callable[[], Optional[str]] = lambda: None) -> None:
        """``stop``: a reason to stop now (checked between polls), or None."""
        if experiment.final is None:
            raise ValueError(f"experiment {experiment.name} has no spec.final")
        self.experiment, self.final = experiment, experiment.final
        self.executor, self.results, self.store = executor, results, store
        self.on_event = on_event or (lambda kind, info: None)
        self.poll_interval = poll_interval
        self.stop = stop

    # -- plans (create-only: the first one written is the one every resume follows) -----------
    def _plan(self, key: str, make: Callable[[], dict]) -> dict:
        try:
            return json.loads(self.store.get(key))
        except NotFound:
            pass
        doc = make()
        try:
            self.store.put_new(key, json.dumps(doc, indent=1).encode())
        except AlreadyExists:
            return json.loads(self.store.get(key))
        return doc

    def _grid_plan(self, search_records: list[ResultRecord]) -> dict:
        best = top_k(search_records, self.final["topK"])
        if not best:
            raise FinalPhaseFailed(f"{self.experiment.name}: no search trial succeeded")
        points, trials = grid_points(self.final["grid"]), []
        for k, r in enumerate(best):
            for p, point in enumerate(points):
                trials.append({"trial_id": f"{self.experiment.name}-g{k * len(points) + p:04d}",
                               "phase": names.STAGE_GRID, "source": r.trial_id, "sourceReward": r.reward,
                               "point": point, "architecture": r.architecture.to_dict(),
                               "trainer": dict(point)})
        return {"final": self.final, "topK": [r.trial_id for r in best], "trials": trials}

    def _retrain_settings(self, point: dict) -> dict:
        settings = {**point, "epochs": self.final["epochs"], "saveModel": True,
                    FINAL_RUN_KEY: {"trainOn": self.final["trainOn"]}}
        if "lrDecayEpoch" in point:   # the same fraction of the longer schedule
            scale = self.final["epochs"] / self.final["searchEpochs"]
            settings["lrDecayEpoch"] = max(1, round(point["lrDecayEpoch"] * scale))
        return settings

    def _retrain_plan(self, plan: dict, grid: dict) -> dict:
        ok = [t for t in plan["trials"] if grid[t["trial_id"]].succeeded]
        if not ok:
            raise FinalPhaseFailed(f"{self.experiment.name}: no grid point succeeded")
        chosen = max(ok, key=lambda t: (grid[t["trial_id"]].reward, t["trial_id"]))
        base = self._retrain_settings(chosen["point"])
        sizes = self.final["sizes"] or [None]
        trials = [{"trial_id": f"{self.experiment.name}-f{i:04d}", "phase": names.STAGE_FINAL,
                   "source": chosen["source"], "grid": chosen["trial_id"], "size": size,
                   "point": chosen["point"], "architecture": chosen["architecture"],
                   "trainer": {**base, **({} if size is None else
                                          _size_settings(self.experiment.space, size))}}
                  for i, size in enumerate(sizes)]
        return {"chosen": chosen["trial_id"], "trials": trials}

    # -- running trials ---------------------------------------------------------------------
    def _submit(self, t: dict) -> None:
        arch = Architecture.from_dict(t["architecture"])
        request = TrialRequest(trial_id=t["trial_id"], architecture=arch,
                               labels={names.LABEL_STAGE: t["phase"]}, trainer=t["trainer"])
        try:
            self.executor.submit(request)
        except TrialRefused as exc:
            record = ResultRecord(experiment=self.experiment.name, trial_id=t["trial_id"],
                                  architecture=arch, status="failed", reason=str(exc),
                                  extra={"writtenBy": "kubenas-controller"})
            try:
                self.store.put_new(result_key(t["trial_id"]), record.to_json())
            except AlreadyExists:
                pass

    def run_trials(self, trials: list[dict]) -> dict[str, ResultRecord]:
        """Submit the trials (as slots free up) and wait for every result; each is taken
        once, by trial id. Trials with a result already are not started again."""
        waiting = {t["trial_id"]: t for t in trials}
        done: dict[str, ResultRecord] = {}
        submitted = set(self.executor.in_flight()) & set(waiting)
        start_after = f"results/{self.experiment.name}-f"   # after every search trial's key
        timeout = 0.0
        while waiting:
            reason = self.stop()
            if reason:
                raise FinalPhaseStopped(f"{self.experiment.name}: final phase stopped: {reason}")
            for r in self.results.poll(_AllBut(waiting), timeout=timeout, start_after=start_after):
                if waiting.pop(r.trial_id, None) is not None:
                    done[r.trial_id] = r
                    submitted.discard(r.trial_id)
                    self.on_event("result", {"trial_id": r.trial_id, "status": r.status,
                                             "reward": r.reward})
            free = self.executor.free_slots()
            for tid in [t for t in sorted(waiting) if t not in submitted][:free]:
                self._submit(waiting[tid])
                submitted.add(tid)
            timeout = self.poll_interval
        return done

    def run(self, search_records: list[ResultRecord], search_cost: Optional[dict] = None) -> dict:
        """The whole phase; returns (and stores at ``final/final.json``) its summary."""
        started = time.time()
        plan = self._plan(PLAN_KEY, lambda: self._grid_plan(search_records))
        self.on_event("grid", {"trials": len(plan["trials"])})
        grid = self.run_trials(plan["trials"])
        retrain = self._plan(RETRAIN_KEY, lambda: self._retrain_plan(plan, grid))
        self.on_event("retrain", {"trials": len(retrain["trials"]), "chosen": retrain["chosen"]})
        finals = self.run_trials(retrain["trials"])
        doc = final_document(self.experiment, plan, grid, retrain, finals, search_cost)
        doc["phaseSeconds"] = round(time.time() - started, 1)
        self.store.put(FINAL_KEY, json.dumps(doc, indent=1).encode())
        return doc


def _grid_row(t: dict, r: ResultRecord) -> dict:
    return {"trial": t["trial_id"], "source": t["source"], "point": t["point"],
            "status": r.status, "reward": r.reward, "reason": r.reason,
            "bestValAcc": max((m.val_acc for m in r.metrics), default=None)}


def _final_row(t: dict, r: ResultRecord) -> dict:
    return {"trial": t["trial_id"], "size": t["size"], "status": r.status, "reason": r.reason,
            "settings": {k: v for k, v in t["trainer"].items() if k != FINAL_RUN_KEY},
            "trainOn": t["trainer"][FINAL_RUN_KEY]["trainOn"], "test": r.extra.get("test"),
            "finalValAcc": r.metrics[-1].val_acc if r.metrics else None,
            "parameters": r.extra.get("params"), "modelKey": r.extra.get("model_key"),
            "onnxKey": r.extra.get("onnx_key"),
            "trainingSeconds": r.timings.get("train_seconds")}


def final_document(experiment: Experiment, plan: dict, grid: dict, retrain: dict,
                   finals: dict, search_cost: Optional[dict]) -> dict:
    """final.json: the architecture, the chosen hyper-parameters, validation and test
    metrics, parameters, training time and the cost of each phase. The shipped model is the
    last retrain that succeeded (the last of ``sizes``)."""
    grid_rows = [_grid_row(t, grid[t["trial_id"]]) for t in plan["trials"]]
    final_rows = [_final_row(t, finals[t["trial_id"]]) for t in retrain["trials"]]
    shipped = next((row for row in reversed(final_rows) if row["status"] == "succeeded"), None)
    chosen = next(row for row in grid_rows if row["trial"] == retrain["chosen"])
    final_cost = cost_totals(list(grid.values()) + list(finals.values()))
    return {"experiment": experiment.name, "space": experiment.space,
            "architecture": retrain["trials"][0]["architecture"],
            "searchTrial": chosen["source"], "topK": plan["topK"],
            "chosenGridPoint": chosen, "hyperparameters": shipped["settings"] if shipped else None,
            "validation": {"reward": chosen["reward"], "bestValAcc": chosen["bestValAcc"],
                           "of": chosen["trial"]},
            "test": shipped["test"] if shipped else None, "model": shipped,
            "parameters": shipped["parameters"] if shipped else None,
            "trainingSeconds": shipped["trainingSeconds"] if shipped else None,
            "grid": grid_rows, "retrains": final_rows,
            "cost": {"search": search_cost, "final": final_cost,
                     "grid": cost_totals(list(grid.values())),
                     "retrain": cost_totals(list(finals.values()))}}
