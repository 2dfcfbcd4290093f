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
from typing import Callable, Optional

from kubenas.contracts import ContractError, result_key
from kubenas.operator import constants as C
from kubenas.operator import metrics as M
from kubenas.operator.events import EventRecorder
from kubenas.operator.informer import Informer
from kubenas.operator.jobs import build_job, owner_reference
from kubenas.operator.kube import Kube, KubeError, custom_path, deployments_path, jobs_path
from kubenas.operator.naming import job_name, label_value
from kubenas.operator.results import (ResultStoreError, StoreProvider, read_result,
                                      write_failed_result)
from kubenas.operator.indexes import IN_FLIGHT, BestTrials, phase_counts
from kubenas.operator.status import (COND_ACCEPTED, COND_CONTROLLER, JobObservation,
                                     Outcome, apply_outcome, clip, drop_empty, get_condition,
                                     is_terminal, now_iso, observe_job, outcome_from_result,
                                     parse_time, set_condition, transition_events,
                                     unschedulable_for)
from kubenas.operator.controller_deployment import (ANNOTATION_HASH, build_controller_deployment,
                                                    controller_name)
from kubenas.operator.settings import Settings
from kubenas.operator.validation import parse_experiment_object, parse_trial_object

log = logging.getLogger("kubenas.operator")

STOP_REASONS = ("ExperimentStopped", "ExperimentDeleted")
# Job creation refusals that no retry can fix: the Trial fails with a failed result.
PERMANENT_CREATE_ERRORS = (400, 422)


class Conflict(Exception):
    """Our view was stale (409 on a guarded write): look again right away."""


def experiment_stopping(exp_obj: dict) -> Optional[str]:
    """Why an Experiment's Trials must stop (None: they may run)."""
    meta = exp_obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "is being deleted"
    phase = (exp_obj.get("status") or {}).get("phase")
    if phase in C.EXPERIMENT_TERMINAL:
        return f"is {phase}"
    if str((meta.get("annotations") or {}).get(C.ANNOTATION_STOP, "")).lower() == "true":
        return f"was asked to stop ({C.ANNOTATION_STOP}=true)"
    return None


def _owned_by(obj: dict, kind: str, name: Optional[str] = None, uid: Optional[str] = None) -> bool:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and (name is None or ref.get("name") == name) \
                and (uid is None or ref.get("uid") == uid):
            return True
    return False


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
        trial = self.trials.get(ns, name)
        arch = ((trial or {}).get("spec") or {}).get("architecture")
        if arch is not None:
            return arch
        try:
            return (self.kube.get(custom_path(C.TRIAL_PLURAL, ns, name)).get("spec") or {}).get("architecture")
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
    def _write_trial_status(self, trial: dict, outcome: Outcome) -> dict:
        meta = trial["metadata"]
        old = trial.get("status") or {}
        new = drop_empty(apply_outcome(old, outcome))
        if new == old:
            return trial
        patch_status = dict(new)
        for key in old:
            if key not in new:
                patch_status[key] = None
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch_status}
        try:
            updated = self.kube.merge_patch(
                custom_path(C.TRIAL_PLURAL, meta["namespace"], meta["name"], "status"), body)
        except KubeError as exc:
            if exc.conflict:
                fresh = self.kube.get(custom_path(C.TRIAL_PLURAL, meta["namespace"], meta["name"]))
                self.trials.upsert(fresh)
                raise Conflict(f"trial {meta['namespace']}/{meta['name']} changed") from exc
            if exc.not_found:   # deleted meanwhile (e.g. by the garbage collector)
                return trial
            raise
        self.trials.upsert(updated)
        if new.get("phase") in C.TRIAL_TERMINAL and old.get("phase") != new.get("phase"):
            log.info("trial %s/%s: %s (%s) %s", meta["namespace"], meta["name"], new["phase"],
                     new.get("reason"), new.get("message", ""))
        for type_, reason, message in transition_events(old, new):
            self.events.record(updated, type_, reason, message)
        return updated

    def _ensure_trial_owner(self, trial: dict, exp_obj: dict) -> dict:
        """Trials made by hand get the Experiment as owner too, so deletion cascades."""
        if _owned_by(trial, C.EXPERIMENT_KIND):
            return trial
        meta = trial["metadata"]
        refs = list(meta.get("ownerReferences") or [])
        refs.append(owner_reference(exp_obj, controller=not any(r.get("controller") for r in refs)))
        try:
            updated = self.kube.merge_patch(
                custom_path(C.TRIAL_PLURAL, meta["namespace"], meta["name"]),
                {"metadata": {"ownerReferences": refs, "resourceVersion": meta["resourceVersion"]}})
        except KubeError as exc:
            if exc.conflict:
                self.trials.upsert(self.kube.get(custom_path(C.TRIAL_PLURAL, meta["namespace"],
                                                             meta["name"])))
                raise Conflict(f"trial {meta['namespace']}/{meta['name']} changed") from exc
            raise
        self.trials.upsert(updated)
        return updated

    def _stop_job(self, trial: dict, job: dict, why: str) -> None:
        """Fail the Job now: activeDeadlineSeconds=1 makes the Job controller delete its pods
        and mark it Failed (DeadlineExceeded); the Job stays for inspection until its TTL."""
        if (job.get("spec") or {}).get("activeDeadlineSeconds") == 1:
            return
        meta = job["metadata"]
        try:
            updated = self.kube.merge_patch(jobs_path(meta["namespace"], meta["name"]),
                                            {"spec": {"activeDeadlineSeconds": 1}})
            self.jobs.upsert(updated)
        except KubeError as exc:
            if exc.not_found:
                return
            if exc.status == 422:   # cannot patch it: delete it (its pods go with it)
                self.kube.delete(jobs_path(meta["namespace"], meta["name"]), "Background",
                                 preconditions_uid=meta.get("uid"))
            else:
                raise
        M.JOBS_STOPPED.inc()
        self.events.record(trial, "Normal", "Stopped", f"stopped Job {meta['name']}: {why}")

    # -- Trials ------------------------------------------------------------------------------
    def reconcile_trial(self, ns: str, name: str) -> Optional[float]:
        trial = self.trials.get(ns, name)
        if trial is None or (trial.get("metadata") or {}).get("deletionTimestamp"):
            return None   # gone or going: the garbage collector removes its Job
        spec = trial.get("spec") or {}
        jname = job_name(name)
        status = trial.get("status") or {}

        if is_terminal(trial):
            if status.get("reason") in STOP_REASONS:
                job = self._job(ns, jname)
                if job is not None and not observe_job(job, []).finished:
                    self._stop_job(trial, job, status.get("message") or status.get("reason"))
            return None

        exp_name = spec.get("experiment")
        exp_obj = self._experiment(ns, exp_name) if exp_name else None
        if exp_obj is None:
            if _owned_by(trial, C.EXPERIMENT_KIND, exp_name):
                return self._stop_trial(trial, "ExperimentDeleted",
                                        f"experiment {exp_name} was deleted")
            msg = f"experiment {exp_name!r} not found in namespace {ns}"
            self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "ExperimentNotFound", msg,
                                                    valid=("False", "ExperimentNotFound", msg)))
            return 30.0
        why = experiment_stopping(exp_obj)
        if why:
            return self._stop_trial(trial, "ExperimentStopped", f"experiment {exp_name} {why}")

        try:
            exp = parse_experiment_object(exp_obj, self.settings)
        except ContractError as exc:
            msg = f"experiment {exp_name} is invalid: {exc}"
            self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "ExperimentInvalid", msg,
                                                    valid=("False", "ExperimentInvalid", msg)))
            return None   # a change to the Experiment re-queues this Trial
        try:
            _, pool = parse_trial_object(trial, exp)
        except ContractError as exc:
            if str(exc).startswith("spec.pool"):   # no Job can ever run it: a failed result
                return self._fail_trial(trial, exp, "UnknownPool", str(exc), valid=True)
            self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "InvalidSpec", str(exc),
                                                    valid=("False", "InvalidSpec", str(exc))))
            return None

        trial = self._ensure_trial_owner(trial, exp_obj)
        job = self._job(ns, jname, live=bool(status.get("jobName")))
        created = False
        if job is None and status.get("jobName"):
            # Its Job was made once and is gone (deleted by hand, or by its TTL while we were
            # down): never train twice; the result record, if any, still decides.
            return self._job_vanished(trial, exp, jname)
        if job is None:
            job, created, requeue, refused = self._create_job(trial, exp_obj, exp, pool, jname)
            if refused is not None:   # its result is written outside the pool's lock
                return self._job_create_failed(trial, exp, jname, refused)
            if job is None:
                return requeue
        if not _owned_by(job, C.TRIAL_KIND, name, trial["metadata"]["uid"]):
            msg = (f"Job {jname} exists but belongs to another object (a deleted Trial of the "
                   f"same name?); waiting for it to be deleted")
            self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "JobConflict", msg,
                                                    job_created=("False", "JobConflict", msg)))
            return 10.0
        if created:
            self.events.record(trial, "Normal", "JobCreated", f"Created Job {jname}")
        return self._follow_job(trial, exp, job, jname)

    def _create_job(self, trial: dict, exp_obj: dict, exp, pool, jname: str):
        """Make the Trial's Job if its pool has a slot: (job or None, created, requeue, the
        API server's refusal or None)."""
        meta = trial["metadata"]
        ns, name = meta["namespace"], meta["name"]
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
            manifest = build_job(trial, exp_obj, settings=self.settings)
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

    def _job_create_failed(self, trial: dict, exp, jname: str, exc: KubeError) -> Optional[float]:
        """The API server refused the Job: a refusal no retry can fix (400 Bad Request, 422
        Invalid) fails the Trial with a failed result; anything else is retried."""
        msg = f"cannot create Job {jname}: {exc}"
        if exc.status in PERMANENT_CREATE_ERRORS:
            return self._fail_trial(trial, exp, "JobRejected", msg)
        self._write_trial_status(trial, Outcome(C.TRIAL_PENDING, "JobCreateFailed", msg,
                                                job_created=("False", "JobCreateFailed", msg)))
        return 30.0 if exc.status == 403 else 5.0

    def _fail_trial(self, trial: dict, exp, reason: str, message: str, *, valid: bool = False,
                    job: Optional[dict] = None, observation=None) -> Optional[float]:
        """A Trial that can never succeed: its failed result record (create-only; a child's
        own record, if one got there first, decides instead), then ``job`` deleted (if
        given), then the Trial Failed. Each step is redone until all are done."""
        meta, spec = trial["metadata"], trial.get("spec") or {}
        jname = job["metadata"]["name"] if job is not None else None
        try:
            store = self.stores.store_for(meta["namespace"], exp)
            result = write_failed_result(store, exp.name, meta["name"], spec["architecture"],
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

    def _delete_job(self, trial: dict, job: dict, why: str) -> None:
        jmeta = job["metadata"]
        try:
            self.kube.delete(jobs_path(jmeta["namespace"], jmeta["name"]), "Background",
                             preconditions_uid=jmeta.get("uid"))
        except KubeError as exc:
            if not exc.not_found:
                raise
        M.JOBS_STOPPED.inc()
        self.events.record(trial, "Warning", "JobDeleted", f"deleted Job {jmeta['name']}: {why}")

    def _follow_job(self, trial: dict, exp, job: dict, jname: str) -> Optional[float]:
        """Mirror the Job and its pods into the Trial; a pod unschedulable past the deadline
        ends it."""
        meta = trial["metadata"]
        obs = observe_job(job, self.pods_of(meta["namespace"], meta["name"]))
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

    def _unschedulable_past_deadline(self, trial: dict, exp, job: dict, obs: JobObservation,
                                     stuck: float) -> Optional[float]:
        """The scheduler could not place the pod for longer than the deadline: the Trial
        fails with the scheduler's words and its Job goes (its pod would hold a slot)."""
        message = clip(f"pod {obs.pod} could not be scheduled for {stuck:.0f}s (deadline "
                       f"{self.settings.unschedulable_deadline_seconds}s): "
                       f"{obs.unschedulable_message}")
        return self._fail_trial(trial, exp, "UnschedulableDeadline", message, job=job,
                                observation=obs)

    def _finished_outcome(self, trial: dict, exp, obs: JobObservation, jname: str):
        """The Job is done: the result record decides (written for a child that left none)."""
        meta, spec = trial["metadata"], trial.get("spec") or {}
        name = meta["name"]
        try:
            store = self.stores.store_for(meta["namespace"], exp)
            result = read_result(store, name)
            if result is None and obs.finished == "complete":
                done = parse_time(obs.completion_time)
                age = (datetime.now(timezone.utc) - done).total_seconds() if done else 0.0
                if age < self.result_grace_seconds:
                    return Outcome(C.TRIAL_RUNNING, "AwaitingResult",
                                   f"Job {jname} completed; waiting for {store.url()}/"
                                   f"{result_key(name)}", job_name=jname, observation=obs), 2.0
                message = (f"Job {jname} completed but no result record appeared at "
                           f"{store.url()}/{result_key(name)} within "
                           f"{self.result_grace_seconds:.0f}s")
                result = write_failed_result(store, exp.name, name, spec["architecture"],
                                             f"ResultMissing: {message}",
                                             {"jobName": jname, "attempts": obs.attempts})
                if (result.extra or {}).get("writtenBy") == C.COMPONENT:
                    return Outcome(C.TRIAL_FAILED, "ResultMissing", message, job_name=jname,
                                   observation=obs), None
            elif result is None:
                reason = f"{obs.reason}: {obs.message}"
                result = write_failed_result(store, exp.name, name, spec["architecture"], reason,
                                             {"jobName": jname, "attempts": obs.attempts})
                if (result.extra or {}).get("writtenBy") == C.COMPONENT:
                    return Outcome(C.TRIAL_FAILED, obs.reason, obs.message, job_name=jname,
                                   observation=obs), None
        except ResultStoreError as exc:
            phase = (trial.get("status") or {}).get("phase") or C.TRIAL_RUNNING
            if phase in C.TRIAL_TERMINAL:
                phase = C.TRIAL_RUNNING
            return Outcome(phase, "ResultUnreadable",
                           clip(f"Job {jname} finished ({obs.finished}) but its result record "
                                f"cannot be read: {exc}"), job_name=jname, observation=obs), 10.0
        return outcome_from_result(result, obs, jname), None

    def _job_vanished(self, trial: dict, exp, jname: str) -> Optional[float]:
        meta, spec = trial["metadata"], trial.get("spec") or {}
        message = f"Job {jname} was deleted before the Trial finished"
        try:
            store = self.stores.store_for(meta["namespace"], exp)
            result = read_result(store, meta["name"])
            if result is None:
                result = write_failed_result(store, exp.name, meta["name"], spec["architecture"],
                                             f"JobDeleted: {message}", {"jobName": jname})
        except ResultStoreError as exc:
            self._write_trial_status(trial, Outcome(
                (trial.get("status") or {}).get("phase") or C.TRIAL_RUNNING, "ResultUnreadable",
                clip(f"{message}; its result record cannot be read: {exc}"), job_name=jname))
            return 10.0
        if (result.extra or {}).get("writtenBy") == C.COMPONENT:
            outcome = Outcome(C.TRIAL_FAILED, "JobDeleted", message, job_name=jname)
        else:
            outcome = outcome_from_result(result, None, jname)
        self._write_trial_status(trial, outcome)
        return None

    def _stop_trial(self, trial: dict, reason: str, message: str) -> Optional[float]:
        meta = trial["metadata"]
        ns, name = meta["namespace"], meta["name"]
        jname = job_name(name)
        job = self._job(ns, jname, live=True)
        obs = observe_job(job, self.pods_of(ns, name)) if job is not None else None
        if job is not None:   # a child that already wrote its result keeps what it earned
            exp_obj = self.experiments.get(ns, (trial.get("spec") or {}).get("experiment"))
            try:
                exp = parse_experiment_object(exp_obj, self.settings) if exp_obj else None
                result = read_result(self.stores.store_for(ns, exp), name) if exp else None
            except (ContractError, ResultStoreError):
                result = None
            if result is not None:
                self._write_trial_status(trial, outcome_from_result(result, obs, jname))
                return None
        outcome = Outcome(C.TRIAL_FAILED, reason, message, job_name=jname if job else None,
                          observation=obs)
        trial = self._write_trial_status(trial, outcome)   # terminal first: no Job is made again
        if job is not None and not (obs and obs.finished):
            self._stop_job(trial, job, message)
        return None

    # -- Experiments -------------------------------------------------------------------------
    def reconcile_experiment(self, ns: str, name: str) -> Optional[float]:
        exp_obj = self.experiments.get(ns, name)
        if exp_obj is None or (exp_obj.get("metadata") or {}).get("deletionTimestamp"):
            return None
        old = exp_obj.get("status") or {}
        new = dict(old)
        new.update(phase_counts(self.trials, ns, name))
        best = self.best.get(ns, name)
        if best is not None and (old.get("bestReward") is None or best[0] > float(old["bestReward"])):
            new["bestReward"], new["bestTrial"] = best
            arch = self._trial_architecture(ns, best[1])
            if arch is not None:
                new["bestArchitecture"] = arch
        conds = list(old.get("conditions") or [])
        accepted = True
        try:
            new["storageUrl"] = parse_experiment_object(exp_obj, self.settings).storage["url"]
            conds = set_condition(conds, COND_ACCEPTED, "True", "Accepted",
                                  "worker pools and storage are usable; Trials get Jobs")
        except ContractError as exc:
            accepted = False
            # NotAllowed carries its own reason (Image-, Secret-, StorageNotAllowed)
            conds = set_condition(conds, COND_ACCEPTED, "False",
                                  getattr(exc, "reason", "InvalidSpec"), str(exc))
        new["conditions"] = conds
        meta = exp_obj["metadata"]
        annotations = meta.get("annotations") or {}
        stop_asked = str(annotations.get(C.ANNOTATION_STOP, "")).lower() == "true"
        if stop_asked and old.get("phase") not in C.EXPERIMENT_TERMINAL:
            new["phase"] = C.EXP_STOPPED
            new["message"] = f"stopped by annotation {C.ANNOTATION_STOP}=true"
            new.setdefault("completionTime", now_iso())
        if self.settings.manage_controllers and accepted:
            finished = experiment_stopping({**exp_obj, "status": new}) is not None
            try:
                dname = self._ensure_controller(exp_obj, parked=finished)
                new["conditions"] = set_condition(
                    new["conditions"], COND_CONTROLLER, "True", "Parked" if finished else "Deployed",
                    f"Deployment {dname}" + (" scaled to 0: the experiment is over" if finished else ""))
            except KubeError as exc:
                if exc.conflict:
                    raise Conflict(str(exc)) from exc
                log.warning("experiment %s/%s: controller Deployment: %s", ns, name, exc)
                new["conditions"] = set_condition(new["conditions"], COND_CONTROLLER, "False",
                                                  "DeploymentFailed", str(exc))
            if not new.get("phase"):
                new["phase"] = C.EXP_PENDING
        new = drop_empty(new)
        if new == old:
            return None
        patch = dict(new)
        for key in old:
            if key not in new:
                patch[key] = None
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch}
        try:
            updated = self.kube.merge_patch(
                custom_path(C.EXPERIMENT_PLURAL, ns, name, "status"), body)
        except KubeError as exc:
            if exc.conflict:
                self.experiments.upsert(self.kube.get(custom_path(C.EXPERIMENT_PLURAL, ns, name)))
                raise Conflict(f"experiment {ns}/{name} changed") from exc
            if exc.not_found:
                return None
            raise
        self.experiments.upsert(updated)
        ov = get_condition(old.get("conditions"), COND_ACCEPTED) or {}
        nv = get_condition(new.get("conditions"), COND_ACCEPTED) or {}
        if nv.get("status") == "False" and (ov.get("status") != "False" or ov.get("message") != nv.get("message")):
            self.events.record(updated, "Warning", nv.get("reason") or "InvalidSpec",
                               nv.get("message") or "")
        if new.get("phase") == C.EXP_STOPPED and old.get("phase") != C.EXP_STOPPED:
            self.events.record(updated, "Normal", "Stopped", new.get("message") or "stopped")
        return None

    def _ensure_controller(self, exp_obj: dict, parked: bool) -> str:
        """The Experiment's controller Deployment exists and matches; 0 replicas once the
        Experiment is finished or stopped (its pods would only idle)."""
        meta = exp_obj["metadata"]
        ns = meta["namespace"]
        want = build_controller_deployment(exp_obj, self.settings, replicas=0 if parked else None)
        dname = controller_name(meta["name"])
        have = self.deployments.get(ns, dname) if self.deployments is not None else None
        if have is None:
            try:
                have = self.kube.create(deployments_path(ns), want)
                log.info("experiment %s/%s: created controller Deployment %s", ns, meta["name"], dname)
                self.events.record(exp_obj, "Normal", "ControllerCreated",
                                   f"Created controller Deployment {dname}")
            except KubeError as exc:
                if not exc.conflict:
                    raise
                have = self.kube.get(deployments_path(ns, dname))
            if self.deployments is not None:
                self.deployments.upsert(have)
        if not any(r.get("uid") == meta["uid"] for r in have["metadata"].get("ownerReferences") or []):
            raise KubeError(412, "NotOwned",
                            f"Deployment {dname} exists and is not this Experiment's")
        same_template = ((have["metadata"].get("annotations") or {}).get(ANNOTATION_HASH)
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
