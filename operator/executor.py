"""The search loop's Executor in a cluster: each submitted trial becomes a Trial object.

    ex = KubernetesExecutor("quickstart", namespace="nas")
    ex.free_slots()            # sum over pools of maxInFlight - unfinished Trials in the pool
                               # (a watch of the Experiment's Trials + this executor's submissions)
    ex.submit(TrialRequest(trial_id="quickstart-00000", architecture=arch))
    write_experiment_status(ex.kube, "nas", "quickstart", phase="Searching", summary=loop.summary())

The operator turns Trials into Jobs; results come back through object storage
(``kubenas.controller.results.StoreResultSource``), never through the API server.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts import Executor, TrialRefused, TrialRequest, names
from kubenas.operator import constants as C
from kubenas.operator.jobs import owner_reference, trial_labels
from kubenas.operator.informer import Informer
from kubenas.operator.kube import Kube, KubeError, TransportError, custom_path
from kubenas.operator.patches import patch_status
from kubenas.operator.naming import is_dns_label, label_value
from kubenas.operator.settings import Settings
from kubenas.operator.status import drop_empty, now_iso, set_condition
from kubenas.operator.validation import find_pool, parse_experiment_object, state_owner
from kubenas.operator.views import ExperimentView, TrialView

log = logging.getLogger("kubenas.operator")

T = TypeVar("T")
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """An API error that a later try can get past: the API server unreachable, throttling
    (429), a timeout or a server error (5xx)."""
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, KubeError) and (exc.status in TRANSIENT_STATUSES or exc.status >= 500)


class Backoff:
    """Jittered exponential backoff: try ``i`` waits ``uniform(0.5, 1) * min(cap, base * 2**i)``.
    ``give_up_after``: seconds of failing after which the error is raised (None: never — a
    controller has nothing better to do than wait for its API server)."""

    def __init__(self, base: float = 0.2, cap: float = 30.0,
                 give_up_after: Optional[float] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Optional[random.Random] = None) -> None:
        self.base, self.cap, self.give_up_after = base, cap, give_up_after
        self.sleep = sleep
        self.rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.5, 1.0) * min(self.cap, self.base * (2 ** min(attempt, 30)))

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried while it raises a transient API error."""
        attempt, waited = 0, 0.0
        while True:
            try:
                return fn()
            except (KubeError, TransportError) as exc:
                if not is_transient(exc) or (self.give_up_after is not None
                                             and waited >= self.give_up_after):
                    raise
                pause = self.delay(attempt)
                log.warning("%s: %s; retrying in %.1fs (try %d)", what, exc, pause, attempt + 2)
                self.sleep(pause)
                attempt, waited = attempt + 1, waited + pause


class KubernetesExecutor(Executor):
    """Trials of one Experiment, as Trial objects in its namespace.

    ``api_client``: a kubernetes ApiClient (else one from ``kubeconfig`` / $KUBECONFIG /
    in-cluster). ``free_slots`` / ``in_flight`` count from a list+watch of the Experiment's
    Trials (``TrialSlots``: one list at the start, then only events, so a count costs what
    is in flight, never a listing of every Trial) plus this executor's own submissions not
    yet seen by the watch. ``backoff``: how transient
    API errors (unreachable, 429, 5xx) are ridden out (default: jittered exponential, never
    giving up). ``settings``: the operator-wide
    Experiment defaults (default: from the environment, as the operator passes them to
    controller pods). ``experiment`` (after construction) is the effective, validated spec
    (``kubenas.experiment.Experiment``); ``refresh_experiment()`` re-reads it."""

    def __init__(self, experiment: str, namespace: str = "default", *, api_client=None,
                 kubeconfig: Optional[str] = None,
                 settings: Optional[Settings] = None, backoff: Optional[Backoff] = None) -> None:
        self.experiment_name = experiment
        self.namespace = namespace
        self.kube = Kube(api_client, kubeconfig=kubeconfig)
        # the operator-wide defaults (pools, storage) the operator applies too: same env
        self.settings = settings if settings is not None else Settings.from_env()
        self.backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self._submitted: dict = {}     # {trial: pool} submitted, not yet seen by the watch
        self.refresh_experiment()
        self.slots = TrialSlots(self.kube, namespace, experiment)

    # -- the Experiment ------------------------------------------------------------------------
    def refresh_experiment(self) -> dict:
        """Re-read the Experiment (pools, trainer settings); raise ContractError if invalid."""
        path = custom_path(C.EXPERIMENT_PLURAL, self.namespace, self.experiment_name)
        obj = self.backoff.call(f"reading experiment {self.namespace}/{self.experiment_name}",
                                lambda: self.kube.get(path))
        self.experiment_obj = obj
        self.experiment = parse_experiment_object(obj, self.settings)
        return obj

    @property
    def pools(self) -> list:
        return [p.name for p in self.experiment.worker_pools]

    # -- Trials --------------------------------------------------------------------------------
    def _list_trials(self) -> list:
        selector = f"{C.LABEL_EXPERIMENT}={label_value(self.experiment_name)}"
        items, _ = self.backoff.call(
            f"listing trials of experiment {self.namespace}/{self.experiment_name}",
            lambda: self.kube.list_all(custom_path(C.TRIAL_PLURAL, self.namespace),
                                       label_selector=selector))
        return [t for t in items if TrialView.of(t).experiment == self.experiment_name]

    def trials(self) -> list:
        """All Trial objects of this Experiment (fresh list)."""
        return self._list_trials()

    def _busy(self) -> dict:
        """{unfinished trial: pool}: what the watch has seen plus our submissions it has not."""
        self.slots.wait_synced()
        with self._lock:
            for name in [n for n in self._submitted if self.slots.seen(n)]:
                del self._submitted[name]   # the watch has it now, finished or not
            busy = dict(self._submitted)
        busy.update(self.slots.unfinished(self.pools))
        return busy

    def _free_by_pool(self) -> dict:
        busy = {p.name: 0 for p in self.experiment.worker_pools}
        for pool in self._busy().values():
            if pool in busy:
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
        labels = {**trial_labels(self.experiment_name, request.trial_id, pool),
                  C.LABEL_STAGE: names.STAGE_SEARCH}
        for k, v in (request.labels or {}).items():
            labels[str(k)] = label_value(str(v))
        return {
            "apiVersion": C.API_VERSION, "kind": C.TRIAL_KIND,
            "metadata": {"name": request.trial_id, "namespace": self.namespace, "labels": labels,
                         "annotations": {C.ANNOTATION_EXPERIMENT_UID:
                                         self.experiment_obj["metadata"].get("uid", "")},
                         "ownerReferences": [owner_reference(self.experiment_obj)]},
            "spec": {"experiment": self.experiment_name, "pool": pool,
                     "architecture": arch.to_dict(),
                     "trainer": request.trainer_config(self.experiment.trainer)},
        }

    def submit(self, request: TrialRequest) -> None:
        """Create the Trial (name = trial_id). Already there (409): already submitted, fine."""
        pool = self.choose_pool(request.pool)
        body = self.trial_manifest(request, pool)
        path = custom_path(C.TRIAL_PLURAL, self.namespace)
        try:   # a retry after a lost reply may find it made: 409, already submitted
            self.backoff.call(f"creating trial {self.namespace}/{request.trial_id}",
                              lambda: self.kube.create(path, body))
        except KubeError as exc:
            if not exc.conflict:
                raise
            self._check_existing(request)
            log.debug("trial %s already submitted", request.trial_id)
        with self._lock:   # counted until the watch shows it (finished or not)
            self._submitted[request.trial_id] = pool

    def _check_existing(self, request: TrialRequest) -> None:
        """A Trial of this name exists (409): it is this sample, submitted before, only if
        this Experiment (or the one it resumes) made it and it describes the same
        architecture; else it was left by another Experiment of this name (deleted with
        ``--cascade=orphan`` and re-created) and is never credited: raise TrialRefused."""
        tid = request.trial_id
        path = custom_path(C.TRIAL_PLURAL, self.namespace, tid)
        try:
            have = self.backoff.call(f"reading trial {self.namespace}/{tid}",
                                     lambda: self.kube.get(path))
        except KubeError as exc:
            if exc.not_found:   # deleted since: create again
                return self.submit(request)
            raise
        problem = self._not_this_sample(have, request.architecture)
        if problem:
            raise TrialRefused(
                f"trial {self.namespace}/{tid}: a Trial of this name already exists and is not "
                f"this sample ({problem}); it was left by an earlier Experiment named "
                f"{self.experiment_name!r}: delete those Trials (kubectl -n {self.namespace} "
                f"delete trials -l {C.LABEL_EXPERIMENT}={label_value(self.experiment_name)})")

    def _not_this_sample(self, have: dict, architecture: Architecture) -> Optional[str]:
        trial = TrialView.of(have)
        owner = state_owner(self.experiment_obj)
        ours = {owner["uid"], owner["resumeFrom"]} - {None}
        theirs = trial.meta.annotations.get(C.ANNOTATION_EXPERIMENT_UID)
        if theirs is None:   # made by hand, or by a kubenas that did not annotate: the owner
            refs = [r.get("uid") for r in trial.meta.owners(C.EXPERIMENT_KIND)]
            theirs = next((u for u in refs if u in ours), refs[0] if refs else "none")
        if theirs not in ours:
            return f"made by Experiment uid {theirs}, this one is uid {owner['uid']}"
        try:
            same = Architecture.from_dict(trial.architecture,
                                          "spec.architecture").to_dict() == architecture.to_dict()
        except (ContractError, TypeError, ValueError):
            same = False
        return None if same else "it describes another architecture"

    def in_flight(self) -> set[str]:
        return set(self._busy())

    def status_of(self, trial_id: str) -> Optional[dict]:
        path = custom_path(C.TRIAL_PLURAL, self.namespace, trial_id)
        try:
            trial = self.backoff.call(f"reading trial {self.namespace}/{trial_id}",
                                      lambda: self.kube.get(path))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        view = TrialView.of(trial)
        return view.status if view.experiment == self.experiment_name else None

    def stop_requested(self) -> Optional[str]:
        """Why the search should stop now (the Experiment is finished, stopped or being
        deleted), or None."""
        from kubenas.operator.reconciler import experiment_stopping

        path = custom_path(C.EXPERIMENT_PLURAL, self.namespace, self.experiment_name)
        try:
            obj = self.backoff.call(f"reading experiment {self.namespace}/{self.experiment_name}",
                                    lambda: self.kube.get(path))
        except KubeError as exc:
            if exc.not_found:
                return "was deleted"
            raise
        return experiment_stopping(obj)

    def write_status(self, **fields) -> dict:
        """``write_experiment_status`` for this executor's Experiment."""
        fields.setdefault("backoff", self.backoff)
        return write_experiment_status(self.kube, self.namespace, self.experiment_name, **fields)

    def close(self) -> None:
        """Stop the watch. Trials outlive this process (a restarted controller finds them)."""
        self.slots.stop()


class TrialSlots:
    """One Experiment's unfinished Trials by pool, from a list+watch of its Trials (an
    ``Informer`` that keeps a few fields of each: name, pool, phase). The watch starts on
    first use; a count waits for its first list (retried while the API server is away)."""

    UNFINISHED = "unfinished-pool"

    def __init__(self, kube: Kube, namespace: str, experiment: str) -> None:
        self.namespace, self.experiment = namespace, experiment
        self.informer = Informer(
            kube, custom_path(C.TRIAL_PLURAL, namespace), f"trial-slots@{namespace}/{experiment}",
            lambda kind, obj: None, label_selector=f"{C.LABEL_EXPERIMENT}={label_value(experiment)}",
            trim=self._view, indexers={self.UNFINISHED: self._unfinished_pool})
        self._started = False
        self._lock = threading.Lock()

    @staticmethod
    def _view(trial: dict) -> dict:
        view = TrialView.of(trial)
        return {"metadata": {"name": view.name, "namespace": view.meta.namespace,
                             "resourceVersion": view.meta.resource_version},
                "spec": {"experiment": view.experiment, "pool": view.pool},
                "status": {"phase": view.phase}}

    def _unfinished_pool(self, trial: dict) -> Optional[str]:
        if trial["spec"]["experiment"] != self.experiment:   # a label collision: not ours
            return None
        return None if trial["status"]["phase"] in C.TRIAL_TERMINAL else trial["spec"]["pool"]

    def wait_synced(self) -> None:
        with self._lock:
            if not self._started:
                self.informer.start()
                self._started = True
        while not self.informer.synced.wait(10.0):
            log.warning("experiment %s/%s: still waiting for the first list of its Trials",
                        self.namespace, self.experiment)

    def seen(self, name: str) -> bool:
        return self.informer.get(self.namespace, name) is not None

    def unfinished(self, pools: Iterable[str]) -> dict:
        """{unfinished Trial: pool} for ``pools``."""
        return {t["metadata"]["name"]: pool for pool in pools
                for t in self.informer.by_index(self.UNFINISHED, pool)}

    def stop(self) -> None:
        self.informer.stop()


def write_experiment_status(kube_or_client: Any, namespace: str, name: str, *,
                            phase: Optional[str] = None, message: Optional[str] = None,
                            best_reward: Optional[float] = None, best_trial: Optional[str] = None,
                            best_architecture: Optional[Mapping] = None,
                            policy_version: Optional[int] = None,
                            summary: Optional[Mapping] = None,
                            conditions: Iterable[Mapping] = (),
                            counts: Optional[Mapping[str, int]] = None,
                            final: Optional[Mapping] = None, cost: Optional[Mapping] = None,
                            force_phase: bool = False, retries: int = 8,
                            backoff: Optional[Backoff] = None) -> dict:
    """Write an Experiment's status from the controller process (read-modify-write guarded by
    resourceVersion, retried on conflict, so the operator's writes are never lost).

    * ``phase``: Pending | Searching | Final | Succeeded | Failed | Stopped. A terminal phase is kept
      (a later non-terminal write is ignored) unless ``force_phase``; startTime and
      completionTime are set with it.
    * ``best_*`` / ``summary`` (``SearchLoop.summary()``: bestReward, bestTrial,
      bestArchitecture): the best only ever improves.
    * ``conditions``: dicts with type, status, reason, message, merged by type.
    * ``counts``: trialsCreated/Succeeded/Failed/...; the operator keeps these from the Trials,
      so pass them only when running without it.
    * ``final``: the final phase's summary (final.json): its test metric (accuracy, or a
      language model's perplexity), the metric's name and the trial.
    * ``cost``: the cost totals (trials, CPU- and GPU-seconds), per phase.
    ``backoff``: how transient API errors and conflicts are waited out.
    Returns the updated Experiment."""
    kube = kube_or_client if isinstance(kube_or_client, Kube) else Kube(kube_or_client)
    backoff = backoff or Backoff()
    if phase is not None and phase not in C.EXPERIMENT_PHASES:
        raise ValueError(f"phase: must be one of {list(C.EXPERIMENT_PHASES)}, got {phase!r}")
    if summary:
        best_reward = summary.get("bestReward") if best_reward is None else best_reward
        best_trial = summary.get("bestTrial") if best_trial is None else best_trial
        best_architecture = summary.get("bestArchitecture") if best_architecture is None else best_architecture
    path = custom_path(C.EXPERIMENT_PLURAL, namespace, name)
    for attempt in range(retries):
        obj = backoff.call(f"reading experiment {namespace}/{name}", lambda: kube.get(path))
        old = ExperimentView.of(obj).status
        new = copy.deepcopy(old)
        _set_phase(new, old, phase, force_phase, f"{namespace}/{name}")
        if message is not None:
            new["message"] = message
        _merge_best(new, old, best_reward, best_trial, best_architecture)
        if policy_version is not None:
            new["policyVersion"] = int(policy_version)
        for key, value in (counts or {}).items():
            new[key] = int(value)
        _merge_final(new, final, cost)
        _merge_conditions(new, conditions)
        new = drop_empty(new)
        if new == old:
            return obj
        rv = obj["metadata"]["resourceVersion"]
        try:
            return backoff.call(f"writing experiment {namespace}/{name} status",
                                lambda: patch_status(kube, C.EXPERIMENT_PLURAL, namespace, name,
                                                     rv, old, new))
        except KubeError as exc:
            if not exc.conflict or attempt == retries - 1:
                raise
            backoff.sleep(backoff.delay(attempt))   # someone else wrote: re-read, redo
    raise RuntimeError("unreachable")


def _set_phase(new: dict, old: Mapping, phase: Optional[str], force: bool, what: str) -> None:
    """``phase`` into ``new``, with its start / completion time; a terminal phase is kept
    (the write of another phase is logged and left out) unless ``force``."""
    if phase is None or phase == old.get("phase"):
        return
    if old.get("phase") in C.EXPERIMENT_TERMINAL and not force:
        log.info("experiment %s is %s; not moving it to %s", what, old.get("phase"), phase)
        return
    new["phase"] = phase
    if phase == C.EXP_SEARCHING:
        new.setdefault("startTime", now_iso())
    if phase in C.EXPERIMENT_TERMINAL:
        new["completionTime"] = now_iso()


def _merge_final(new: dict, final: Optional[Mapping], cost: Optional[Mapping]) -> None:
    test = (final or {}).get("test") or {}
    metric = test.get("metric", "accuracy")
    if isinstance(test.get(metric), (int, float)):
        new["testMetric"] = float(test[metric])
        new["testMetricName"] = str(metric)
        new["finalTrial"] = str((final.get("model") or {}).get("trial") or "")
    if cost is not None:
        new["cost"] = json.loads(json.dumps(cost))   # plain JSON types only


def _merge_conditions(new: dict, conditions: Iterable[Mapping]) -> None:
    """``conditions`` merged by type into ``new``'s (kept absent when there are none)."""
    conds = list(new.get("conditions") or [])
    for c in conditions:
        conds = set_condition(conds, c["type"], c.get("status", "True"), c.get("reason", ""),
                              c.get("message", ""))
    if conds:
        new["conditions"] = conds


def _merge_best(new: dict, old: Mapping, best_reward: Optional[float],
                best_trial: Optional[str], best_architecture: Optional[Mapping]) -> None:
    """The best only ever improves."""
    if best_reward is None or (old.get("bestReward") is not None
                               and float(best_reward) <= float(old["bestReward"])):
        return
    new["bestReward"] = float(best_reward)
    if best_trial is not None:
        new["bestTrial"] = best_trial
    if best_architecture is not None:
        new["bestArchitecture"] = copy.deepcopy(dict(best_architecture))
