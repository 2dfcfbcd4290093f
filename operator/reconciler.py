"""The reconcile functions: level-triggered, idempotent, reading the informers' caches.

``reconcile_trial(ns, name)`` drives a Trial to its one Job and mirrors the Job, its pods
and finally its result record into the Trial's status; ``reconcile_experiment(ns, name)``
keeps an Experiment's counts, best trial and validity current and, once it is finished,
stopped or being deleted, has every unfinished Trial stopped. Either may run any number
of times on any state (after a crash, a missed event, a restart): it looks at what is,
and does only what is missing. Both return None or a delay after which to look again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Callable, Mapping, Optional

from kubenas.contracts import ContractError, result_key
from kubenas.operator import constants as C
from kubenas.operator import metrics as M
from kubenas.operator.events import EventRecorder
from kubenas.operator.informer import Informer
from kubenas.operator.jobs import build_job, owner_reference
from kubenas.operator.kube import Kube, KubeError, custom_path, deployments_path, jobs_path
from kubenas.operator.patches import patch_status
from kubenas.operator.naming import job_name, label_value
from kubenas.operator.results import (ResultStoreError, StoreProvider, read_result,
                                      write_failed_result)
from kubenas.operator.indexes import IN_FLIGHT, BestTrials, phase_counts
from kubenas.operator.status import (COND_ACCEPTED, COND_CONTROLLER, JobObservation,
                                     Outcome, apply_outcome, clip, drop_empty, get_condition,
                                     now_iso, observe_job, outcome_from_result,
                                     parse_time, set_condition, transition_events,
                                     unschedulable_for)
from kubenas.operator.controller_deployment import (ANNOTATION_HASH, build_controller_deployment,
                                                    controller_name)
from kubenas.operator.settings import Settings
from kubenas.operator.validation import parse_experiment_object, parse_trial_object
from kubenas.operator.views import ExperimentView, JobView, Meta, TrialView

log = logging.getLogger("kubenas.operator")

STOP_REASONS = ("ExperimentStopped", "ExperimentDeleted")
# Job creation refusals that no retry can fix: the Trial fails with a failed result.
PERMANENT_CREATE_ERRORS = (400, 422)


class Conflict(Exception):
    """Our view was stale (409 on a guarded write): look again right away."""


def experiment_stopping(exp_obj: dict) -> Optional[str]:
    """Why an Experiment's Trials must stop (None: they may run)."""
    return ExperimentView.of(exp_obj).stopping()


class Reconciler:
    def __init__(self, kube: Kube, *, trials: Informer, experiments: Informer, jobs: Informer,
                 pods_of: Callable[[str, str], list], best: BestTrials,
                 events: EventRecorder, stores: StoreProvider, settings: Settings,
                 deployments: Optional[Informer] = None,
                 result_grace_seconds: float = 60.0) -> None:
        self.kube = kube
        self.trials = trials
        self.experiments = experiments
        self.jobs = jobs
        self.pods_of = pods_of
        self.best = best
        self.events = events
        self.stores = stores
        self.settings = settings
        self.deployments = deployments
        self.result_grace_seconds = result_grace_seconds
        self._locks_lock = threading.Lock()
        self._pool_locks: dict = {}

    # -- reads -------------------------------------------------------------------------------
    def _pool_lock(self, ns: str, experiment: str, pool: str) -> threading.Lock:
        with self._locks_lock:
            return self._pool_locks.setdefault((ns, experiment, pool), threading.Lock())

    def _jobs_in_flight(self, ns: str, experiment: str, pool: str) -> int:
        """The experiment's unfinished Jobs in ``pool`` (the Jobs cache's index)."""
        return self.jobs.count(IN_FLIGHT, (ns, label_value(experiment), label_value(pool)))

    def _trial_architecture(self, ns: str, name: str) -> Optional[dict]:
        """A Trial's architecture: the cache drops it once the Trial is finished."""
        cached = self.trials.get(ns, name)
        arch = TrialView.of(cached).architecture if cached is not None else None
        if arch is not None:
            return arch
        try:
            return TrialView.of(self.kube.get(custom_path(C.TRIAL_PLURAL, ns, name))).architecture
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def _experiment(self, ns: str, name: str) -> Optional[dict]:
        obj = self.experiments.get(ns, name)
        if obj is not None:
            return obj
        try:   # the cache may lag behind a just-created Experiment: ask the API server
            obj = self.kube.get(custom_path(C.EXPERIMENT_PLURAL, ns, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        self.experiments.upsert(obj)
        return obj

    def _job(self, ns: str, name: str, live: bool = False) -> Optional[dict]:
        job = self.jobs.get(ns, name)
        if job is not None or not live:
            return job
        try:
            job = self.kube.get(jobs_path(ns, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        self.jobs.upsert(job)
        return job

    # -- writes ------------------------------------------------------------------------------
    def _guarded(self, write: Callable[[], dict], cache: Informer, plural: str, meta: Meta,
                 missing_ok: bool = False) -> Optional[dict]:
        """``write()`` (a patch guarded by ``meta``'s resourceVersion), its answer cached.
        409: the cache was stale; it gets the API server's copy and Conflict is raised (the
        key is looked at again at once). 404 with ``missing_ok``: None (deleted meanwhile,
        e.g. by the garbage collector)."""
        try:
            updated = write()
        except KubeError as exc:
            if exc.conflict:
                cache.upsert(self.kube.get(custom_path(plural, meta.namespace, meta.name)))
                raise Conflict(f"{plural[:-1]} {meta.namespace}/{meta.name} changed") from exc
            if exc.not_found and missing_ok:
                return None
            raise
        cache.upsert(updated)
        return updated

    def _patch_status(self, cache: Informer, plural: str, meta: Meta, old: Mapping,
                      new: Mapping) -> Optional[dict]:
        """The one status write of Trials and Experiments: ``old`` -> ``new`` guarded by the
        resourceVersion ``old`` was read at; None if the object is gone."""
        return self._guarded(lambda: patch_status(self.kube, plural, meta.namespace, meta.name,
                                                  meta.resource_version, old, new),
                             cache, plural, meta, missing_ok=True)

    def _write_trial_status(self, trial: TrialView, outcome: Outcome) -> TrialView:
        old = trial.status
        new = drop_empty(apply_outcome(old, outcome))
        if new == old:
            return trial
        updated = self._patch_status(self.trials, C.TRIAL_PLURAL, trial.meta, old, new)
        if updated is None:
            return trial
        if new.get("phase") in C.TRIAL_TERMINAL and old.get("phase") != new.get("phase"):
            log.info("trial %s/%s: %s (%s) %s", trial.meta.namespace, trial.name, new["phase"],
                     new.get("reason"), new.get("message", ""))
        for type_, reason, message in transition_events(old, new):
            self.events.record(updated, type_, reason, message)
        return TrialView.of(updated)

    def _ensure_trial_owner(self, trial: TrialView, experiment: ExperimentView) -> TrialView:
        """Trials made by hand get the Experiment as owner too, so deletion cascades."""
        if trial.meta.owned_by(C.EXPERIMENT_KIND):
            return trial
        meta = trial.meta
        refs = list(meta.owner_references)
        refs.append(owner_reference(experiment.raw,
                                    controller=not any(r.get("controller") for r in refs)))
        body = {"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}}
        updated = self._guarded(
            lambda: self.kube.merge_patch(custom_path(C.TRIAL_PLURAL, meta.namespace, meta.name), body),
            self.trials, C.TRIAL_PLURAL, meta)
        return TrialView.of(updated)

    def _stop_job(self, trial: TrialView, job: dict, why: str) -> None:
        """Fail the Job now: activeDeadlineSeconds=1 makes the Job controller delete its pods
        and mark it Failed (DeadlineExceeded); the Job stays for inspection until its TTL."""
        view = JobView.of(job)
        if view.active_deadline_seconds == 1:
            return
        meta = view.meta
        try:
            updated = self.kube.merge_patch(jobs_path(meta.namespace, meta.name),
                                            {"spec": {"activeDeadlineSeconds": 1}})
            self.jobs.upsert(updated)
        except KubeError as exc:
            if exc.not_found:
                return
            if exc.status == 422:   # cannot patch it: delete it (its pods go with it)
                self.kube.delete(jobs_path(meta.namespace, meta.name), "Background",
                                 preconditions_uid=meta.uid)
            else:
                raise
        M.JOBS_STOPPED.inc()
        self.events.record(trial.raw, "Normal", "Stopped", f"stopped Job {meta.name}: {why}")

    def _delete_job(self, trial: TrialView, job: dict, why: str) -> None:
        meta = Meta.of(job)
        try:
            self.kube.delete(jobs_path(meta.namespace, meta.name), "Background",
                             preconditions_uid=meta.uid)
        except KubeError as exc:
            if not exc.not_found:
                raise
        M.JOBS_STOPPED.inc()
        self.events.record(trial.raw, "Warning", "JobDeleted", f"deleted Job {meta.name}: {why}")

    # -- Trials ------------------------------------------------------------------------------
    def reconcile_trial(self, ns: str, name: str) -> Optional[float]:
        cached = self.trials.get(ns, name)
        trial = TrialView.of(cached) if cached is not None else None
        if trial is None or trial.meta.deleting:
            return None   # gone or going: the garbage collector removes its Job
        if trial.terminal:
            return self._stop_job_of_stopped_trial(trial)
        exp_obj = self._experiment(ns, trial.experiment) if trial.experiment else None
        if exp_obj is None:
            return self._experiment_missing(trial)
        experiment = ExperimentView.of(exp_obj)
        why = experiment.stopping()
        if why:
            return self._stop_trial(trial, "ExperimentStopped",
                                    f"experiment {trial.experiment} {why}")
        exp, pool, requeue = self._validated(trial, experiment)
        if exp is None:
            return requeue
        job_made = bool(trial.job_name)   # read before the owner patch below replaces the view
        trial = self._ensure_trial_owner(trial, experiment)
        job, requeue = self._trial_job(trial, experiment, exp, pool, job_made)
        if job is None:
            return requeue
        return self._follow_job(trial, exp, job, job_name(name))

    def _stop_job_of_stopped_trial(self, trial: TrialView) -> None:
        """A finished Trial needs nothing, unless it was stopped (with its Experiment) while
        its Job may still run: the Job is stopped too."""
        if trial.reason in STOP_REASONS:
            job = self._job(trial.meta.ns, job_name(trial.name))
            if job is not None and not observe_job(job, []).finished:
                self._stop_job(trial, job, trial.message or trial.reason)
        return None

    def _experiment_missing(self, trial: TrialView) -> Optional[float]:
        """No Experiment of the Trial's name: one that owned it was deleted (the Trial
        stops); else it may yet be made (the Trial waits)."""
        exp_name = trial.experiment
        if trial.meta.owned_by(C.EXPERIMENT_KIND, exp_name):
            return self._stop_trial(trial, "ExperimentDeleted", f"experiment {exp_name} was deleted")
        msg = f"experiment {exp_name!r} not found in namespace {trial.meta.ns}"
        self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "ExperimentNotFound", msg,
                                                valid=("False", "ExperimentNotFound", msg)))
        return 30.0

    def _validated(self, trial: TrialView, experiment: ExperimentView):
        """The Trial's Experiment and pool, both valid: (exp, pool, None); else the Trial's
        status says why and (None, None, what reconcile_trial returns)."""
        try:
            exp = parse_experiment_object(experiment.raw, self.settings)
        except ContractError as exc:
            msg = f"experiment {trial.experiment} is invalid: {exc}"
            self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "ExperimentInvalid", msg,
                                                    valid=("False", "ExperimentInvalid", msg)))
            return None, None, None   # a change to the Experiment re-queues this Trial
        try:
            _, pool = parse_trial_object(trial.raw, exp)
        except ContractError as exc:
            if str(exc).startswith("spec.pool"):   # no Job can ever run it: a failed result
                return None, None, self._fail_trial(trial, exp, "UnknownPool", str(exc), valid=True)
            self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "InvalidSpec", str(exc),
                                                    valid=("False", "InvalidSpec", str(exc))))
            return None, None, None
        return exp, pool, None

    def _trial_job(self, trial: TrialView, experiment: ExperimentView, exp, pool,
                   job_made: bool):
        """The Trial's Job, made now if it never had one: (job, None); else (None, what
        reconcile_trial returns)."""
        ns, jname = trial.meta.ns, job_name(trial.name)
        job = self._job(ns, jname, live=job_made)
        created = False
        if job is None and job_made:
            # Its Job was made once and is gone (deleted by hand, or by its TTL while we were
            # down): never train twice; the result record, if any, still decides.
            return None, self._job_vanished(trial, exp, jname)
        if job is None:
            job, created, requeue, refused = self._create_job(trial, experiment, exp, pool, jname)
            if refused is not None:   # its result is written outside the pool's lock
                return None, self._job_create_failed(trial, exp, jname, refused)
            if job is None:
                return None, requeue
        if not Meta.of(job).owned_by(C.TRIAL_KIND, trial.name, trial.meta.uid):
            msg = (f"Job {jname} exists but belongs to another object (a deleted Trial of the "
                   f"same name?); waiting for it to be deleted")
            self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "JobConflict", msg,
                                                    job_created=("False", "JobConflict", msg)))
            return None, 10.0
        if created:
            self.events.record(trial.raw, "Normal", "JobCreated", f"Created Job {jname}")
        return job, None

    def _create_job(self, trial: TrialView, experiment: ExperimentView, exp, pool, jname: str):
        """Make the Trial's Job if its pool has a slot: (job or None, created, requeue, the
        API server's refusal or None)."""
        ns, name = trial.meta.namespace, trial.name
        # maxInFlight is enforced here, where Jobs are made: whoever submits Trials (two
        # controller replicas racing, a hand-made Trial), a pool never runs more of an
        # experiment's trials at once. Counting and creating under one lock per pool keeps
        # this operator's workers from taking the same last slot.
        with self._pool_lock(ns, exp.name, pool.name):
            busy = self._jobs_in_flight(ns, exp.name, pool.name)
            if busy >= pool.max_in_flight:
                self._write_trial_status(trial, Outcome(
                    C.TRIAL_PENDING, "WaitingForSlot",
                    f"pool {pool.name} already runs {busy} trials of experiment {exp.name} "
                    f"(maxInFlight {pool.max_in_flight}); waiting for one to finish"))
                return None, False, 1.0, None
            manifest = build_job(trial.raw, experiment.raw, settings=self.settings)
            try:
                job = self.kube.create(jobs_path(ns), manifest)
                M.JOBS_CREATED.inc()
                log.info("trial %s/%s: created Job %s", ns, name, jname)
                created = True
            except KubeError as exc:
                if not exc.conflict:
                    return None, False, None, exc
                # AlreadyExists: made before a restart, or the cache lags
                job, created = self._job(ns, jname, live=True), False
                if job is None:
                    return None, False, 1.0, None   # deleted meanwhile; look again
            self.jobs.upsert(job)
            return job, created, None, None

    def _job_create_failed(self, trial: TrialView, exp, jname: str,
                           exc: KubeError) -> Optional[float]:
        """The API server refused the Job: a refusal no retry can fix (400 Bad Request, 422
        Invalid) fails the Trial with a failed result; anything else is retried."""
        msg = f"cannot create Job {jname}: {exc}"
        if exc.status in PERMANENT_CREATE_ERRORS:
            return self._fail_trial(trial, exp, "JobRejected", msg)
        self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "JobCreateFailed", msg,
                                                job_created=("False", "JobCreateFailed", msg)))
        return 30.0 if exc.status == 403 else 5.0

    def _fail_trial(self, trial: TrialView, exp, reason: str, message: str, *, valid: bool = False,
                    job: Optional[dict] = None, observation=None) -> Optional[float]:
        """A Trial that can never succeed: its failed result record (create-only; a child's
        own record, if one got there first, decides instead), then ``job`` deleted (if
        given), then the Trial Failed. Each step is redone until all are done."""
        jname = Meta.of(job).name if job is not None else None
        try:
            store = self.stores.store_for(trial.meta.namespace, exp)
            result = write_failed_result(store, exp.name, trial.name, trial.spec["architecture"],
                                         clip(f"{reason}: {message}"),
                                         {"jobName": jname} if jname else {})
        except (ResultStoreError, ContractError, KeyError) as exc:
            self._write_trial_status(trial, Outcome(
                C.TRIAL_PENDING, reason, clip(f"{message}; its failed result cannot be "
                                              f"written: {exc}"), job_name=jname,
                valid=("False", reason, message) if valid else None))
            return 10.0
        if job is not None:
            self._delete_job(trial, job, message)
        if (result.extra or {}).get("writtenBy") == C.COMPONENT:
            outcome = Outcome(C.TRIAL_FAILED, reason, message, job_name=jname,
                              observation=observation,
                              valid=("False", reason, message) if valid else None)
        else:
            outcome = outcome_from_result(result, observation, jname)
        self._write_trial_status(trial, outcome)
        return None

    def _follow_job(self, trial: TrialView, exp, job: dict, jname: str) -> Optional[float]:
        """Mirror the Job and its pods into the Trial; a pod unschedulable past the deadline
        ends it."""
        obs = observe_job(job, self.pods_of(trial.meta.namespace, trial.name))
        requeue: Optional[float] = None
        if not obs.finished:
            stuck = unschedulable_for(obs)
            deadline = self.settings.unschedulable_deadline_seconds
            if stuck is not None and stuck >= deadline:
                return self._unschedulable_past_deadline(trial, exp, job, obs, stuck)
            outcome = Outcome(obs.phase, obs.reason, obs.message, job_name=jname, observation=obs)
            if stuck is not None:
                requeue = max(1.0, deadline - stuck)
        else:
            outcome, requeue = self._finished_outcome(trial, exp, obs, jname)
        outcome.job_created = ("True", "Created", f"Job {jname}")
        self._write_trial_status(trial, outcome)
        return requeue

    def _unschedulable_past_deadline(self, trial: TrialView, exp, job: dict, obs: JobObservation,
                                     stuck: float) -> Optional[float]:
        """The scheduler could not place the pod for longer than the deadline: the Trial
        fails with the scheduler's words and its Job goes (its pod would hold a slot)."""
        message = clip(f"pod {obs.pod} could not be scheduled for {stuck:.0f}s (deadline "
                       f"{self.settings.unschedulable_deadline_seconds}s): "
                       f"{obs.unschedulable_message}")
        return self._fail_trial(trial, exp, "UnschedulableDeadline", message, job=job,
                                observation=obs)

    def _finished_outcome(self, trial: TrialView, exp, obs: JobObservation, jname: str):
        """The Job is done: the result record decides (written for a child that left none)."""
        try:
            store = self.stores.store_for(trial.meta.namespace, exp)
            result = read_result(store, trial.name)
            if result is None:
                return self._without_result(trial, exp, obs, jname, store)
        except ResultStoreError as exc:
            phase = trial.phase or C.TRIAL_RUNNING
            if phase in C.TRIAL_TERMINAL:
                phase = C.TRIAL_RUNNING
            return Outcome(phase, "ResultUnreadable",
                           clip(f"Job {jname} finished ({obs.finished}) but its result record "
                                f"cannot be read: {exc}"), job_name=jname, observation=obs), 10.0
        return outcome_from_result(result, obs, jname), None

    def _without_result(self, trial: TrialView, exp, obs: JobObservation, jname: str, store):
        """A finished Job whose child left no result record: a completed one gets the grace
        period for a record still on its way; then (or after a failed Job) the Trial's failed
        result is written, unless the child's own got there first."""
        name = trial.name
        if obs.finished == "complete":
            done = parse_time(obs.completion_time)
            age = (datetime.now(timezone.utc) - done).total_seconds() if done else 0.0
            if age < self.result_grace_seconds:
                return Outcome(C.TRIAL_RUNNING, "AwaitingResult",
                               f"Job {jname} completed; waiting for {store.url()}/"
                               f"{result_key(name)}", job_name=jname, observation=obs), 2.0
            reason = "ResultMissing"
            message = (f"Job {jname} completed but no result record appeared at "
                       f"{store.url()}/{result_key(name)} within "
                       f"{self.result_grace_seconds:.0f}s")
            written = f"ResultMissing: {message}"
        else:
            reason, message = obs.reason, obs.message
            written = f"{obs.reason}: {obs.message}"
        result = write_failed_result(store, exp.name, name, trial.spec["architecture"], written,
                                     {"jobName": jname, "attempts": obs.attempts})
        if (result.extra or {}).get("writtenBy") == C.COMPONENT:
            return Outcome(C.TRIAL_FAILED, reason, message, job_name=jname, observation=obs), None
        return outcome_from_result(result, obs, jname), None

    def _job_vanished(self, trial: TrialView, exp, jname: str) -> Optional[float]:
        message = f"Job {jname} was deleted before the Trial finished"
        try:
            store = self.stores.store_for(trial.meta.namespace, exp)
            result = read_result(store, trial.name)
            if result is None:
                result = write_failed_result(store, exp.name, trial.name,
                                             trial.spec["architecture"],
                                             f"JobDeleted: {message}", {"jobName": jname})
        except ResultStoreError as exc:
            self._write_trial_status(trial, Outcome(
                trial.phase or C.TRIAL_RUNNING, "ResultUnreadable",
                clip(f"{message}; its result record cannot be read: {exc}"), job_name=jname))
            return 10.0
        if (result.extra or {}).get("writtenBy") == C.COMPONENT:
            outcome = Outcome(C.TRIAL_FAILED, "JobDeleted", message, job_name=jname)
        else:
            outcome = outcome_from_result(result, None, jname)
        self._write_trial_status(trial, outcome)
        return None

    def _stop_trial(self, trial: TrialView, reason: str, message: str) -> Optional[float]:
        ns, name = trial.meta.namespace, trial.name
        jname = job_name(name)
        job = self._job(ns, jname, live=True)
        obs = observe_job(job, self.pods_of(ns, name)) if job is not None else None
        if job is not None:   # a child that already wrote its result keeps what it earned
            result = self._result_if_any(trial)
            if result is not None:
                self._write_trial_status(trial, outcome_from_result(result, obs, jname))
                return None
        outcome = Outcome(C.TRIAL_FAILED, reason, message, job_name=jname if job else None,
                          observation=obs)
        trial = self._write_trial_status(trial, outcome)   # terminal first: no Job is made again
        if job is not None and not (obs and obs.finished):
            self._stop_job(trial, job, message)
        return None

    def _result_if_any(self, trial: TrialView):
        """The Trial's result record, None when there is none or it cannot be known (no
        valid Experiment, an unreadable store)."""
        ns = trial.meta.namespace
        exp_obj = self.experiments.get(ns, trial.experiment)
        try:
            exp = parse_experiment_object(exp_obj, self.settings) if exp_obj else None
            return read_result(self.stores.store_for(ns, exp), trial.name) if exp else None
        except (ContractError, ResultStoreError):
            return None

    # -- Experiments -------------------------------------------------------------------------
    def reconcile_experiment(self, ns: str, name: str) -> Optional[float]:
        cached = self.experiments.get(ns, name)
        experiment = ExperimentView.of(cached) if cached is not None else None
        if experiment is None or experiment.meta.deleting:
            return None
        old = experiment.status
        new = dict(old)
        new.update(phase_counts(self.trials, ns, name))
        self._merge_best(new, old, ns, name)
        accepted = self._set_accepted(new, old, experiment)
        if experiment.stop_annotated and old.get("phase") not in C.EXPERIMENT_TERMINAL:
            new["phase"] = C.EXP_STOPPED
            new["message"] = f"stopped by annotation {C.ANNOTATION_STOP}=true"
            new.setdefault("completionTime", now_iso())
        if self.settings.manage_controllers and accepted:
            self._set_controller(new, experiment)
            if not new.get("phase"):
                new["phase"] = C.EXP_PENDING
        new = drop_empty(new)
        if new == old:
            return None
        updated = self._patch_status(self.experiments, C.EXPERIMENT_PLURAL, experiment.meta,
                                     old, new)
        if updated is not None:
            self._experiment_events(updated, old, new)
        return None

    def _merge_best(self, new: dict, old: Mapping, ns: str, name: str) -> None:
        """The best Succeeded Trial so far, if better than the status says (it only improves)."""
        best = self.best.get(ns, name)
        if best is not None and (old.get("bestReward") is None or best[0] > float(old["bestReward"])):
            new["bestReward"], new["bestTrial"] = best
            arch = self._trial_architecture(ns, best[1])
            if arch is not None:
                new["bestArchitecture"] = arch

    def _set_accepted(self, new: dict, old: Mapping, experiment: ExperimentView) -> bool:
        """The Accepted condition (and storageUrl): can its Trials get Jobs?"""
        conds = list(old.get("conditions") or [])
        accepted = True
        try:
            new["storageUrl"] = parse_experiment_object(experiment.raw, self.settings).storage["url"]
            conds = set_condition(conds, COND_ACCEPTED, "True", "Accepted",
                                  "worker pools and storage are usable; Trials get Jobs")
        except ContractError as exc:
            accepted = False
            # NotAllowed carries its own reason (Image-, Secret-, StorageNotAllowed)
            conds = set_condition(conds, COND_ACCEPTED, "False",
                                  getattr(exc, "reason", "InvalidSpec"), str(exc))
        new["conditions"] = conds
        return accepted

    def _set_controller(self, new: dict, experiment: ExperimentView) -> None:
        """The controller Deployment made or updated, and the ControllerDeployed condition;
        parked (0 replicas) once the status being written ends the Experiment."""
        finished = experiment.stopping(status=new) is not None
        try:
            dname = self._ensure_controller(experiment, parked=finished)
            new["conditions"] = set_condition(
                new["conditions"], COND_CONTROLLER, "True", "Parked" if finished else "Deployed",
                f"Deployment {dname}" + (" scaled to 0: the experiment is over" if finished else ""))
        except KubeError as exc:
            if exc.conflict:
                raise Conflict(str(exc)) from exc
            log.warning("experiment %s/%s: controller Deployment: %s", experiment.meta.namespace,
                        experiment.name, exc)
            new["conditions"] = set_condition(new["conditions"], COND_CONTROLLER, "False",
                                              "DeploymentFailed", str(exc))

    def _experiment_events(self, updated: dict, old: Mapping, new: Mapping) -> None:
        """Events for a status just written: newly refused (or refused for another reason),
        stopped."""
        ov = get_condition(old.get("conditions"), COND_ACCEPTED) or {}
        nv = get_condition(new.get("conditions"), COND_ACCEPTED) or {}
        if nv.get("status") == "False" and (ov.get("status") != "False" or ov.get("message") != nv.get("message")):
            self.events.record(updated, "Warning", nv.get("reason") or "InvalidSpec",
                               nv.get("message") or "")
        if new.get("phase") == C.EXP_STOPPED and old.get("phase") != C.EXP_STOPPED:
            self.events.record(updated, "Normal", "Stopped", new.get("message") or "stopped")

    def _ensure_controller(self, experiment: ExperimentView, parked: bool) -> str:
        """The Experiment's controller Deployment exists and matches; 0 replicas once the
        Experiment is finished or stopped (its pods would only idle)."""
        ns, name, exp_obj = experiment.meta.namespace, experiment.name, experiment.raw
        want = build_controller_deployment(exp_obj, self.settings, replicas=0 if parked else None)
        dname = controller_name(name)
        have = self.deployments.get(ns, dname) if self.deployments is not None else None
        if have is None:
            try:
                have = self.kube.create(deployments_path(ns), want)
                log.info("experiment %s/%s: created controller Deployment %s", ns, name, dname)
                self.events.record(exp_obj, "Normal", "ControllerCreated",
                                   f"Created controller Deployment {dname}")
            except KubeError as exc:
                if not exc.conflict:
                    raise
                have = self.kube.get(deployments_path(ns, dname))
            if self.deployments is not None:
                self.deployments.upsert(have)
        if not any(r.get("uid") == experiment.meta.uid for r in Meta.of(have).owner_references):
            raise KubeError(412, "NotOwned",
                            f"Deployment {dname} exists and is not this Experiment's")
        same_template = (Meta.of(have).annotations.get(ANNOTATION_HASH)
                         == want["metadata"]["annotations"][ANNOTATION_HASH])
        if same_template and have["spec"].get("replicas") == want["spec"]["replicas"]:
            return dname
        patch: dict = {"spec": {"replicas": want["spec"]["replicas"]}}
        if not same_template:
            patch["metadata"] = {"annotations": want["metadata"]["annotations"]}
            patch["spec"]["template"] = want["spec"]["template"]
        updated = self.kube.merge_patch(deployments_path(ns, dname), patch)
        if self.deployments is not None:
            self.deployments.upsert(updated)
        if parked and have["spec"].get("replicas"):
            self.events.record(exp_obj, "Normal", "ControllerStopped",
                               f"scaled controller Deployment {dname} to 0")
        return dname
