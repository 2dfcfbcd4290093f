"""The operator's cache indexes: what a reconcile asks of the caches, at the cost of the answer.

At paper scale (12,800 Trials, hundreds in flight) a reconcile that scans every cached
Trial or Job makes each event cost O(n) and the whole run O(n^2). These key functions
(``Informer(indexers=...)``) keep the answers ready instead:

* ``TRIAL_INDEXERS``: a search Trial by its experiment, by (experiment, phase) for the status
  counts and the metrics (the final phase's Trials count toward neither, nor the best), the unfinished ones for the periodic resync, and by experiment for
  a change of their Experiment (a finished Trial's reconcile does not depend on it);
* ``JOB_INDEXERS``: the unfinished Jobs by (experiment, pool), for maxInFlight;
* ``POD_INDEXERS``: a Pod by the Trial it runs.

``BestTrials`` keeps each experiment's best Succeeded Trial as events pass, so the
Experiment's status never needs a scan either.
"""

from __future__ import annotations

import threading
from typing import Optional

from kubenas.operator import constants as C
from kubenas.operator.status import experiment_counts_from, is_terminal, observe_job
from kubenas.operator.views import Meta, TrialView

BY_EXPERIMENT = "experiment"
BY_PHASE = "phase"
UNFINISHED = "unfinished"
UNFINISHED_OF = "unfinished-of"
IN_FLIGHT = "in-flight"
BY_TRIAL = "trial"


def _of_experiment(trial: dict) -> Optional[tuple]:
    t = TrialView.of(trial)
    return (t.meta.ns, t.experiment) if t.experiment and t.searching else None


def _of_phase(trial: dict) -> Optional[tuple]:
    t = TrialView.of(trial)
    return (t.meta.ns, t.experiment, t.phase or C.TRIAL_PENDING) if t.experiment and t.searching \
        else None


def _unfinished_of(trial: dict) -> Optional[tuple]:
    t = TrialView.of(trial)
    return None if t.terminal or not t.experiment else (t.meta.ns, t.experiment)


TRIAL_INDEXERS = {
    BY_EXPERIMENT: _of_experiment,
    BY_PHASE: _of_phase,
    UNFINISHED: lambda t: None if is_terminal(t) else True,
    UNFINISHED_OF: _unfinished_of,
}


def _job_in_flight(job: dict) -> Optional[tuple]:
    if observe_job(job, []).finished:
        return None
    meta = Meta.of(job)
    return (meta.ns, meta.labels.get(C.LABEL_EXPERIMENT), meta.labels.get(C.LABEL_POOL))


JOB_INDEXERS = {IN_FLIGHT: _job_in_flight}


def _pod_trial(pod: dict) -> Optional[tuple]:
    meta = Meta.of(pod)
    trial = meta.annotations.get(C.ANNOTATION_TRIAL)
    return (meta.ns, trial) if trial else None


POD_INDEXERS = {BY_TRIAL: _pod_trial}


def phase_counts(trials, ns: str, experiment: str) -> dict:
    """The Experiment's trialsCreated/Pending/... from the ``trials`` informer's indexes."""
    return experiment_counts_from(
        trials.count(BY_EXPERIMENT, (ns, experiment)),
        {p: trials.count(BY_PHASE, (ns, experiment, p)) for p in C.TRIAL_PHASES})


class BestTrials:
    """(reward, trial name) of each experiment's best Succeeded Trial seen so far. A re-list
    replays every cached Trial, so an operator restart recovers it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._best: dict = {}

    def observe(self, trial: dict) -> None:
        t = TrialView.of(trial)
        if t.phase != C.TRIAL_SUCCEEDED or t.reward is None or not t.experiment or not t.searching:
            return
        key, entry = (t.meta.ns, t.experiment), (float(t.reward), trial["metadata"]["name"])
        with self._lock:
            if key not in self._best or entry[0] > self._best[key][0]:
                self._best[key] = entry

    def get(self, ns: str, experiment: str) -> Optional[tuple]:
        with self._lock:
            return self._best.get((ns, experiment))

    def forget(self, ns: str, experiment: str) -> None:
        with self._lock:
            self._best.pop((ns, experiment), None)
