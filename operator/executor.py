"""The search loop's Executor in a cluster: each submitted trial becomes a Trial object.

    ex = KubernetesExecutor("quickstart", namespace="nas")
    ex.free_slots()            # sum over pools of maxInFlight - unfinished Trials in the pool
    ex.submit(TrialRequest(trial_id="quickstart-00000", architecture=arch))
    write_experiment_status(ex.kube, "nas", "quickstart", phase="Running", summary=loop.summary())

The operator turns Trials into Jobs; results come back through object storage
(``kubenas.controller.results.StoreResultSource``), never through the API server.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any, Iterable, Mapping, Optional

from kubenas.contracts import ContractError
from kubenas.controller.interfaces import Executor, TrialRequest
from kubenas.operator import constants as C
from kubenas.operator.jobs import owner_reference, trial_labels
from kubenas.operator.kube import Kube, KubeError, custom_path
from kubenas.operator.naming import is_dns_label, label_value
from kubenas.operator.settings import Settings
from kubenas.operator.status import drop_empty, now_iso, set_condition
from kubenas.operator.validation import find_pool, parse_experiment_object

log = logging.getLogger("kubenas.operator")


class KubernetesExecutor(Executor):
    """Trials of one Experiment, as Trial objects in its namespace.

    ``api_client``: a kubernetes ApiClient (else one from ``kubeconfig`` / $KUBECONFIG /
    in-cluster). ``cache_seconds``: how long one list of the Experiment's Trials answers
    ``free_slots`` / ``in_flight`` (a submit refreshes it). ``settings``: the operator-wide
    Experiment defaults (default: from the environment, as the operator passes them to
    controller pods). ``experiment`` (after construction) is the effective, validated spec
    (``kubenas.experiment.Experiment``); ``refresh_experiment()`` re-reads it."""

    def __init__(self, experiment: str, namespace: str = "default", *, api_client=None,
                 kubeconfig: Optional[str] = None, cache_seconds: float = 1.0,
                 settings: Optional[Settings] = None) -> None:
        self.experiment_name = experiment
        self.namespace = namespace
        self.kube = Kube(api_client, kubeconfig=kubeconfig)
        # the operator-wide defaults (pools, storage) the operator applies too: same env
        self.settings = settings if settings is not None else Settings.from_env()
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._snapshot: Optional[tuple[float, list]] = None
        self.refresh_experiment()

    # -- the Experiment ------------------------------------------------------------------------
    def refresh_experiment(self) -> dict:
        """Re-read the Experiment (pools, trainer settings); raise ContractError if invalid."""
        obj = self.kube.get(custom_path(C.EXPERIMENT_PLURAL, self.namespace, self.experiment_name))
        self.experiment_obj = obj
        self.experiment = parse_experiment_object(obj, self.settings)
        return obj

    @property
    def pools(self) -> list:
        return [p.name for p in self.experiment.worker_pools]

    # -- Trials --------------------------------------------------------------------------------
    def _trials(self, fresh: bool = False) -> list:
        with self._lock:
            snap = self._snapshot
            if not fresh and snap is not None and time.monotonic() - snap[0] < self.cache_seconds:
                return snap[1]
        items, _ = self.kube.list_all(custom_path(C.TRIAL_PLURAL, self.namespace),
                                      label_selector=f"{C.LABEL_EXPERIMENT}={label_value(self.experiment_name)}")
        items = [t for t in items if (t.get("spec") or {}).get("experiment") == self.experiment_name]
        with self._lock:
            self._snapshot = (time.monotonic(), items)
        return items

    def trials(self) -> list:
        """All Trial objects of this Experiment (fresh list)."""
        return self._trials(fresh=True)

    @staticmethod
    def _unfinished(trial: Mapping) -> bool:
        return ((trial.get("status") or {}).get("phase")) not in C.TRIAL_TERMINAL

    def _free_by_pool(self) -> dict:
        busy = {p.name: 0 for p in self.experiment.worker_pools}
        for t in self._trials():
            pool = (t.get("spec") or {}).get("pool")
            if pool in busy and self._unfinished(t):
                busy[pool] += 1
        return {p.name: max(0, p.max_in_flight - busy[p.name]) for p in self.experiment.worker_pools}

    def free_slots(self, pool: Optional[str] = None) -> int:
        free = self._free_by_pool()
        if pool is None:
            return sum(free.values())
        if pool not in free:
            raise ValueError(f"{pool!r} is not a worker pool of experiment "
                             f"{self.experiment_name!r} (its pools: {', '.join(free)})")
        return free[pool]

    def choose_pool(self, requested: Optional[str] = None) -> str:
        if requested is not None:
            find_pool(self.experiment, requested)   # ContractError naming the pools
            return requested
        free = self._free_by_pool()
        # most free slots; ties go to the pool listed first
        return max(self.experiment.worker_pools, key=lambda p: free[p.name]).name

    def trial_manifest(self, request: TrialRequest, pool: str) -> dict:
        if not is_dns_label(request.trial_id):
            raise ContractError(f"trial_id: {request.trial_id!r} is not a valid Trial name "
                                f"(lowercase letters, digits and '-', at most 63 characters)")
        arch = request.architecture
        if arch.space != self.experiment.space:
            raise ContractError(f"architecture.space: {arch.space!r} is not the experiment's "
                                f"space {self.experiment.space!r}")
        labels = trial_labels(self.experiment_name, request.trial_id, pool)
        for k, v in (request.labels or {}).items():
            labels[str(k)] = label_value(str(v))
        return {
            "apiVersion": C.API_VERSION, "kind": C.TRIAL_KIND,
            "metadata": {"name": request.trial_id, "namespace": self.namespace, "labels": labels,
                         "ownerReferences": [owner_reference(self.experiment_obj)]},
            "spec": {"experiment": self.experiment_name, "pool": pool,
                     "architecture": arch.to_dict(),
                     "trainer": copy.deepcopy(dict(self.experiment.trainer))},
        }

    def submit(self, request: TrialRequest) -> None:
        """Create the Trial (name = trial_id). Already there (409): already submitted, fine."""
        pool = self.choose_pool(request.pool)
        body = self.trial_manifest(request, pool)
        try:
            self.kube.create(custom_path(C.TRIAL_PLURAL, self.namespace), body)
        except KubeError as exc:
            if not exc.conflict:
                raise
            log.debug("trial %s already submitted", request.trial_id)
        with self._lock:
            self._snapshot = None

    def in_flight(self) -> set[str]:
        return {t["metadata"]["name"] for t in self._trials() if self._unfinished(t)}

    def status_of(self, trial_id: str) -> Optional[dict]:
        for t in self._trials(fresh=True):
            if t["metadata"]["name"] == trial_id:
                return t.get("status") or {}
        return None

    def stop_requested(self) -> Optional[str]:
        """Why the search should stop now (the Experiment is finished, stopped or being
        deleted), or None."""
        from kubenas.operator.reconciler import experiment_stopping

        try:
            obj = self.kube.get(custom_path(C.EXPERIMENT_PLURAL, self.namespace, self.experiment_name))
        except KubeError as exc:
            if exc.not_found:
                return "was deleted"
            raise
        return experiment_stopping(obj)

    def write_status(self, **fields) -> dict:
        """``write_experiment_status`` for this executor's Experiment."""
        return write_experiment_status(self.kube, self.namespace, self.experiment_name, **fields)

    def close(self) -> None:
        """Nothing to stop: Trials outlive this process (a restarted controller finds them)."""


def write_experiment_status(kube_or_client: Any, namespace: str, name: str, *,
                            phase: Optional[str] = None, message: Optional[str] = None,
                            best_reward: Optional[float] = None, best_trial: Optional[str] = None,
                            best_architecture: Optional[Mapping] = None,
                            policy_version: Optional[int] = None,
                            summary: Optional[Mapping] = None,
                            conditions: Iterable[Mapping] = (),
                            counts: Optional[Mapping[str, int]] = None,
                            force_phase: bool = False, retries: int = 8) -> dict:
    """Write an Experiment's status from the controller process (read-modify-write guarded by
    resourceVersion, retried on conflict, so the operator's writes are never lost).

    * ``phase``: Pending | Running | Succeeded | Failed | Stopped. A terminal phase is kept
      (a later non-terminal write is ignored) unless ``force_phase``; startTime and
      completionTime are set with it.
    * ``best_*`` / ``summary`` (``SearchLoop.summary()``: bestReward, bestTrial,
      bestArchitecture): the best only ever improves.
    * ``conditions``: dicts with type, status, reason, message, merged by type.
    * ``counts``: trialsCreated/Succeeded/Failed/...; the operator keeps these from the Trials,
      so pass them only when running without it.
    Returns the updated Experiment."""
    kube = kube_or_client if isinstance(kube_or_client, Kube) else Kube(kube_or_client)
    if phase is not None and phase not in C.EXPERIMENT_PHASES:
        raise ValueError(f"phase: must be one of {list(C.EXPERIMENT_PHASES)}, got {phase!r}")
    if summary:
        best_reward = summary.get("bestReward") if best_reward is None else best_reward
        best_trial = summary.get("bestTrial") if best_trial is None else best_trial
        best_architecture = summary.get("bestArchitecture") if best_architecture is None else best_architecture
    path = custom_path(C.EXPERIMENT_PLURAL, namespace, name)
    for attempt in range(retries):
        obj = kube.get(path)
        old = obj.get("status") or {}
        new = copy.deepcopy(old)
        if phase is not None and phase != old.get("phase"):
            if old.get("phase") in C.EXPERIMENT_TERMINAL and not force_phase:
                log.info("experiment %s/%s is %s; not moving it to %s", namespace, name,
                         old.get("phase"), phase)
            else:
                new["phase"] = phase
                if phase == C.EXP_RUNNING:
                    new.setdefault("startTime", now_iso())
                if phase in C.EXPERIMENT_TERMINAL:
                    new["completionTime"] = now_iso()
        if message is not None:
            new["message"] = message
        if best_reward is not None and (old.get("bestReward") is None
                                        or float(best_reward) > float(old["bestReward"])):
            new["bestReward"] = float(best_reward)
            if best_trial is not None:
                new["bestTrial"] = best_trial
            if best_architecture is not None:
                new["bestArchitecture"] = copy.deepcopy(dict(best_architecture))
        if policy_version is not None:
            new["policyVersion"] = int(policy_version)
        for key, value in (counts or {}).items():
            new[key] = int(value)
        conds = list(new.get("conditions") or [])
        for c in conditions:
            conds = set_condition(conds, c["type"], c.get("status", "True"), c.get("reason", ""),
                                  c.get("message", ""))
        if conds:
            new["conditions"] = conds
        new = drop_empty(new)
        if new == old:
            return obj
        patch = dict(new)
        for key in old:
            if key not in new:
                patch[key] = None
        body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": patch}
        try:
            return kube.merge_patch(custom_path(C.EXPERIMENT_PLURAL, namespace, name, "status"), body)
        except KubeError as exc:
            if not exc.conflict or attempt == retries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise RuntimeError("unreachable")
