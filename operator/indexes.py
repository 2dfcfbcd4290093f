"""The operator's cache indexes: what a reconcile asks of the caches, at the cost of the answer.

At paper scale (12,800 Trials, hundreds in flight) a reconcile that scans every cached
Trial or Job makes each event cost O(n) and the whole run O(n^2). These key functions
(``Informer(indexers=...)``) keep the answers ready instead:

* ``TRIAL_INDEXERS``: a Trial by its experiment, by (experiment, phase) for the status
  counts and the metrics, the unfinished ones for the periodic resync, and by experiment for
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

BY_EXPERIMENT = "experiment"
BY_PHASE = "phase"
UNFINISHED = "unfinished"
UNFINISHED_OF = "unfinished-of"
IN_FLIGHT = "in-flight"
BY_TRIAL = "trial"


def _ns(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("namespace") or ""


def _experiment(trial: dict) -> Optional[str]:
    return (trial.get("spec") or {}).get("experiment")


def _phase(trial: dict) -> str:
    return (trial.get("status") or {}).get("phase") or C.TRIAL_PENDING


TRIAL_INDEXERS = {
    BY_EXPERIMENT: lambda t: (_ns(t), _experiment(t)) if _experiment(t) else None,
    BY_PHASE: lambda t: (_ns(t), _experiment(t), _phase(t)) if _experiment(t) else None,
    UNFINISHED: lambda t: None if is_terminal(t) else True,
    UNFINISHED_OF: lambda t: None if is_terminal(t) or not _experiment(t) else (_ns(t), _experiment(t)),
}


def _job_in_flight(job: dict) -> Optional[tuple]:
    labels = (job.get("metadata") or {}).get("labels") or {}
    if observe_job(job, []).finished:
        return None
    return (_ns(job), labels.get(C.LABEL_EXPERIMENT), labels.get(C.LABEL_POOL))


JOB_INDEXERS = {IN_FLIGHT: _job_in_flight}


def _pod_trial(pod: dict) -> Optional[tuple]:
    trial = ((pod.get("metadata") or {}).get("annotations") or {}).get(C.ANNOTATION_TRIAL)
    return (_ns(pod), trial) if trial else None


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
        st = trial.get("status") or {}
        if st.get("phase") != C.TRIAL_SUCCEEDED or st.get("reward") is None or not _experiment(trial):
            return
        key, entry = (_ns(trial), _experiment(trial)), (float(st["reward"]), trial["metadata"]["name"])
        with self._lock:
            if key not in self._best or entry[0] > self._best[key][0]:
                self._best[key] = entry

    def get(self, ns: str, experiment: str) -> Optional[tuple]:
        with self._lock:
            return self._best.get((ns, experiment))

    def forget(self, ns: str, experiment: str) -> None:
        with self._lock:
            self._best.pop((ns, experiment), None)
