"""Trial status from its Job, its pods and its result record (pure functions).

The result record in object storage is the truth about a finished Trial: a ``failed``
record makes the Trial Failed with the record's reason even if the Job succeeded, and a
``succeeded`` record makes it Succeeded even if the pod crashed after writing it. Until the
Job finishes, the phase follows the pods: Running once a pod runs; Pending with the
scheduler's words (``0/3 nodes are available: 3 Insufficient nvidia.com/gpu.``) or the
kubelet's (``CreateContainerConfigError: secret "s3" not found``) while it cannot start.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Optional

from kubenas.contracts import ResultRecord
from kubenas.operator import constants as C
from kubenas.operator.views import JobView, PodView, TrialView

MAX_MESSAGE = 1000

# Condition types on a Trial.
COND_VALID = "Valid"            # the Trial (and its Experiment) can be run
COND_JOB_CREATED = "JobCreated"
COND_SCHEDULED = "Scheduled"    # its pod was placed on a node
COND_COMPLETE = "Complete"      # finished (status True) with reason Succeeded / the failure reason
# Condition type on an Experiment (the controller process writes its own, e.g. Valid).
COND_ACCEPTED = "Accepted"      # the operator can run its Trials (pools, storage usable)
COND_CONTROLLER = "ControllerDeployed"   # its controller Deployment exists (or is parked)


def now_iso(now: Optional[datetime] = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def clip(message: Optional[str], limit: int = MAX_MESSAGE) -> str:
    message = (message or "").strip()
    return message if len(message) <= limit else message[: limit - 3] + "..."


# -- conditions ----------------------------------------------------------------------------

def set_condition(conditions: Iterable[Mapping], type_: str, status: str, reason: str,
                  message: str = "", now: Optional[datetime] = None) -> list:
    """Return a new list with condition ``type_`` set; lastTransitionTime changes only when
    the status flips."""
    out = []
    found = False
    for cond in conditions or []:
        cond = dict(cond)
        if cond.get("type") == type_:
            found = True
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now_iso(now)
            cond.update(status=status, reason=reason, message=clip(message))
        out.append(cond)
    if not found:
        out.append({"type": type_, "status": status, "reason": reason, "message": clip(message),
                    "lastTransitionTime": now_iso(now)})
    return out


def drop_empty(obj: Any) -> Any:
    """``obj`` without empty-string values in mappings (an empty message means no message).

    Some API servers (seen: the 1.20 dev build) turn "" into null inside custom resources and
    then reject it against the schema's ``type: string``; omitting the key is equivalent."""
    if isinstance(obj, Mapping):
        return {k: drop_empty(v) for k, v in obj.items() if v != ""}
    if isinstance(obj, list):
        return [drop_empty(v) for v in obj]
    return obj


def get_condition(conditions: Iterable[Mapping], type_: str) -> Optional[dict]:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


# -- what a Job and its pods say -------------------------------------------------------------

@dataclass
class JobObservation:
    finished: Optional[str] = None        # None | "complete" | "failed"
    phase: str = C.TRIAL_PENDING          # while not finished: Pending | Running
    reason: str = "PodPending"
    message: str = ""
    scheduled: Optional[bool] = None      # None: unknown (no pod yet)
    unschedulable_message: str = ""
    unschedulable_since: Optional[str] = None   # the PodScheduled=False lastTransitionTime
    start_time: Optional[str] = None
    completion_time: Optional[str] = None
    attempts: int = 0
    pod: Optional[str] = None
    node: Optional[str] = None
    last_failure: str = ""                # the last failed pod's reason / exit code


def _pod_failure(pod: PodView) -> str:
    status = pod.status
    for cs in pod.container_statuses:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term:
            text = f"{term.get('reason') or 'Error'} (exit code {term.get('exitCode')})"
            if term.get("message"):
                text += f": {term['message'].strip().splitlines()[-1] if term['message'].strip() else ''}"
            return text
    if status.get("reason") or status.get("message"):
        return f"{status.get('reason') or 'Failed'}: {status.get('message') or ''}".strip(": ")
    return "failed"


def _unschedulable(obs: JobObservation, sched: Mapping, prior: str) -> JobObservation:
    obs.scheduled = False
    obs.reason = sched.get("reason") or "Unschedulable"
    obs.unschedulable_message = clip(sched.get("message") or "")
    obs.unschedulable_since = sched.get("lastTransitionTime")
    obs.message = clip(f"pod {obs.pod} cannot be scheduled: {obs.unschedulable_message}{prior}")
    return obs


def unschedulable_for(obs: JobObservation, now: Optional[datetime] = None) -> Optional[float]:
    """Seconds the observed pod has been unschedulable (None: it is not, or since when is
    unknown)."""
    if obs.finished or obs.scheduled is not False:
        return None
    since = parse_time(obs.unschedulable_since)
    if since is None:
        return None
    return max(0.0, ((now or datetime.now(timezone.utc)) - since).total_seconds())


def observe_job(job: Mapping, pods: Iterable[Mapping]) -> JobObservation:
    """Summarise a Job and its pods (any order) into a JobObservation."""
    view = JobView.of(job)
    # pods being deleted no longer count, unless they finished (their exit still tells)
    pods = sorted((p for p in map(PodView.of, pods) if not p.meta.deleting or p.finished),
                  key=lambda p: p.meta.creation_timestamp or "")
    obs = JobObservation(start_time=view.start_time, completion_time=view.completion_time)
    failed_pods = [p for p in pods if p.phase == "Failed"]
    obs.attempts = max(int(view.count("failed")), len(failed_pods)) + \
        (1 if view.count("active") or view.count("succeeded") else 0)
    if failed_pods:
        obs.last_failure = clip(_pod_failure(failed_pods[-1]), 300)
    if _job_finished(obs, view):
        return obs
    prior = f" (attempt {obs.attempts}; previous: {obs.last_failure})" if failed_pods else ""
    return _observe_pods(obs, pods, prior, retrying=bool(failed_pods))


def _job_finished(obs: JobObservation, job: JobView) -> bool:
    """The Job controller's verdict, if it gave one (Complete or Failed), into ``obs``."""
    complete = job.condition("Complete")
    failed = job.condition("Failed")
    if complete is not None or job.count("succeeded") >= 1:
        obs.finished = "complete"
        obs.reason, obs.message = "JobComplete", "the Job completed"
        obs.completion_time = obs.completion_time or (complete or {}).get("lastTransitionTime")
        obs.scheduled = True
        return True
    if failed is not None:
        obs.finished = "failed"
        obs.reason = failed.get("reason") or "JobFailed"
        msg = failed.get("message") or "the Job failed"
        if obs.last_failure:
            msg += f"; last attempt: {obs.last_failure}"
        obs.message = clip(msg)
        obs.completion_time = failed.get("lastTransitionTime") or obs.completion_time
        return True
    return False


def _on_pod(obs: JobObservation, pod: PodView) -> JobObservation:
    obs.pod = pod.meta.name
    obs.node = pod.node_name
    return obs


def _observe_pods(obs: JobObservation, pods: list, prior: str, retrying: bool) -> JobObservation:
    """An unfinished Job: what its newest pod is doing (running, done, starting, stuck)."""
    live = [p for p in pods if p.phase in ("Pending", "Running", None, "")]
    running = [p for p in live if p.phase == "Running"]
    if running:
        obs.phase, obs.scheduled, obs.reason = C.TRIAL_RUNNING, True, "Running"
        _on_pod(obs, running[-1])
        obs.message = f"pod {obs.pod} is running on node {obs.node}{prior}"
        return obs
    done = [p for p in pods if p.phase == "Succeeded"]
    if done:   # the pod exited 0; the Job controller has not marked the Job complete yet
        obs.phase, obs.scheduled, obs.reason = C.TRIAL_RUNNING, True, "Completing"
        _on_pod(obs, done[-1])
        obs.message = f"pod {obs.pod} finished; waiting for the Job to complete"
        return obs
    if not live:
        obs.reason = "Retrying" if retrying else "JobCreated"
        obs.message = ("waiting for the Job controller to start a new pod" + prior) if retrying \
            else "waiting for the Job controller to create the pod"
        return obs
    return _pending_pod(_on_pod(obs, live[-1]), live[-1], prior)


def _pending_pod(obs: JobObservation, pod: PodView, prior: str) -> JobObservation:
    """A pod not running yet: unschedulable (the scheduler's words), a container that cannot
    start (the kubelet's), or starting."""
    sched = pod.condition("PodScheduled")
    if sched is not None and sched.get("status") == "False":
        return _unschedulable(obs, sched, prior)
    if sched is not None or obs.node:
        obs.scheduled = True
    for cs in pod.container_statuses:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") and waiting["reason"] != "ContainerCreating":
            obs.reason = waiting["reason"]          # ImagePullBackOff, CreateContainerConfigError, ...
            obs.message = clip(f"pod {obs.pod}: {waiting['reason']}: {waiting.get('message') or ''}{prior}")
            return obs
    obs.reason = "PodPending"
    where = f" on node {obs.node}" if obs.node else ""
    obs.message = f"pod {obs.pod} is starting{where}{prior}"
    return obs


# -- the Trial's status -----------------------------------------------------------------------

@dataclass
class Outcome:
    """What the reconciler decided; ``apply_outcome`` turns it into a status document."""
    phase: str
    reason: str
    message: str = ""
    reward: Optional[float] = None
    job_name: Optional[str] = None
    observation: Optional[JobObservation] = None
    valid: Optional[tuple] = None           # (status, reason, message) for the Valid condition
    job_created: Optional[tuple] = None     # (status, reason, message)
    extra: dict = field(default_factory=dict)


def outcome_from_result(result: ResultRecord, obs: Optional[JobObservation],
                        job_name: Optional[str]) -> Outcome:
    if result.succeeded:
        return Outcome(C.TRIAL_SUCCEEDED, "Succeeded", f"reward {result.reward:.6g}",
                       reward=float(result.reward), job_name=job_name, observation=obs)
    return Outcome(C.TRIAL_FAILED, "TrainingFailed", clip(result.reason or "the child failed"),
                   job_name=job_name, observation=obs)


def apply_outcome(current: Optional[Mapping], outcome: Outcome,
                  now: Optional[datetime] = None) -> dict:
    """The Trial's new ``status`` from its current one and an Outcome (pure)."""
    status = copy.deepcopy(dict(current or {}))
    conds = list(status.get("conditions") or [])
    obs = outcome.observation
    status["phase"] = outcome.phase
    status["reason"] = outcome.reason
    status["message"] = clip(outcome.message)
    if outcome.reward is not None:
        status["reward"] = outcome.reward
    if outcome.job_name:
        status["jobName"] = outcome.job_name
    if outcome.valid is not None:
        conds = set_condition(conds, COND_VALID, *outcome.valid, now=now)
    elif get_condition(conds, COND_VALID) is None or outcome.job_name:
        conds = set_condition(conds, COND_VALID, "True", "Valid", "", now=now)
    if outcome.job_created is not None:
        conds = set_condition(conds, COND_JOB_CREATED, *outcome.job_created, now=now)
    if obs is not None:
        if obs.start_time and not status.get("startTime"):
            status["startTime"] = obs.start_time
        if obs.attempts:
            status["attempts"] = obs.attempts
        if obs.pod:
            status["podName"] = obs.pod
        if obs.node:
            status["nodeName"] = obs.node
        if obs.scheduled is False:
            conds = set_condition(conds, COND_SCHEDULED, "False", obs.reason,
                                  obs.unschedulable_message or obs.message, now=now)
        elif obs.scheduled is True:
            conds = set_condition(conds, COND_SCHEDULED, "True", "Scheduled",
                                  f"on node {obs.node}" if obs.node else "", now=now)
    if outcome.phase in C.TRIAL_TERMINAL:
        status.setdefault("completionTime", (obs.completion_time if obs and obs.completion_time
                                             else None) or now_iso(now))
        conds = set_condition(conds, COND_COMPLETE, "True", outcome.reason, outcome.message, now=now)
    else:
        status.pop("completionTime", None)
    status["conditions"] = conds
    return status


def transition_events(old: Optional[Mapping], new: Mapping) -> list:
    """Kubernetes Events for the step from status ``old`` to ``new``: (type, reason, message)."""
    old = old or {}
    out = []
    op, np_ = old.get("phase"), new.get("phase")
    oreason, nreason = old.get("reason"), new.get("reason")
    ovalid = (get_condition(old.get("conditions"), COND_VALID) or {})
    nvalid = (get_condition(new.get("conditions"), COND_VALID) or {})
    if nvalid.get("status") == "False" and (ovalid.get("status") != "False"
                                            or ovalid.get("reason") != nvalid.get("reason")):
        out.append(("Warning", nvalid.get("reason") or "Invalid", nvalid.get("message") or ""))
    if np_ == C.TRIAL_RUNNING and op != C.TRIAL_RUNNING:
        out.append(("Normal", "Running", new.get("message") or ""))
    if np_ == C.TRIAL_PENDING and nreason == "Unschedulable" and oreason != "Unschedulable":
        out.append(("Warning", "Unschedulable", new.get("message") or ""))
    if np_ == C.TRIAL_SUCCEEDED and op != C.TRIAL_SUCCEEDED:
        out.append(("Normal", "Succeeded", f"reward {new.get('reward')}"))
    if np_ == C.TRIAL_FAILED and op != C.TRIAL_FAILED:
        out.append(("Warning", "Failed", f"{nreason}: {new.get('message') or ''}"))
    return out


def status_changed(old: Optional[Mapping], new: Mapping) -> bool:
    return dict(old or {}) != dict(new)


def is_terminal(trial: Mapping) -> bool:
    return TrialView.of(trial).terminal


# -- an Experiment's counts -------------------------------------------------------------------

COUNT_OF_PHASE = {C.TRIAL_PENDING: "trialsPending", C.TRIAL_RUNNING: "trialsRunning",
                  C.TRIAL_SUCCEEDED: "trialsSucceeded", C.TRIAL_FAILED: "trialsFailed"}


def experiment_counts_from(created: int, by_phase: Mapping[str, int]) -> dict:
    """The Experiment's status counts from how many Trials it has and how many per phase."""
    counts = {"trialsCreated": int(created)}
    for phase, key in COUNT_OF_PHASE.items():
        counts[key] = int(by_phase.get(phase, 0))
    counts["trialsCompleted"] = counts["trialsSucceeded"] + counts["trialsFailed"]
    return counts
