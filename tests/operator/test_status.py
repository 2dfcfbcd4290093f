"""Trial status from Job, pods and result record: pure mapping, no cluster."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kubenas.contracts import Architecture, ResultRecord
from kubenas.operator import constants as C
from kubenas.operator.status import (Outcome, apply_outcome, drop_empty,
                                     get_condition, observe_job,
                                     outcome_from_result, set_condition, transition_events,
                                     unschedulable_for)

from tests.operator.objects import CNN_ARCH

T0 = "2026-01-01T00:00:00Z"


def job(active=0, succeeded=0, failed=0, conditions=()):
    return {"metadata": {"name": "kubenas-t"},
            "status": {"active": active, "succeeded": succeeded, "failed": failed,
                       "startTime": T0, "conditions": list(conditions)}}


def pod(name, phase, node=None, created=T0, conditions=(), containers=(), deleting=False):
    meta = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = created
    return {"metadata": meta, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "conditions": list(conditions),
                       "containerStatuses": list(containers)}}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}


def test_no_pod_yet_is_pending():
    obs = observe_job(job(active=1), [])
    assert (obs.finished, obs.phase, obs.reason) == (None, "Pending", "JobCreated")


def test_unschedulable_pod_is_pending_with_the_schedulers_words():
    obs = observe_job(job(active=1), [pod("p1", "Pending", conditions=[UNSCHEDULABLE])])
    assert obs.phase == "Pending" and obs.reason == "Unschedulable"
    assert obs.scheduled is False
    assert "Insufficient nvidia.com/gpu" in obs.message
    status = apply_outcome({}, Outcome(obs.phase, obs.reason, obs.message, job_name="j",
                                       observation=obs))
    cond = get_condition(status["conditions"], "Scheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    events = transition_events({}, status)
    assert ("Warning", "Unschedulable") in [(t, r) for t, r, _ in events]
    # the same state again: no second event
    assert not [e for e in transition_events(status, status) if e[1] == "Unschedulable"]


def test_how_long_a_pod_has_been_unschedulable():
    since = dict(UNSCHEDULABLE, lastTransitionTime=T0)
    obs = observe_job(job(active=1), [pod("p1", "Pending", conditions=[since])])
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert obs.unschedulable_since == T0
    assert unschedulable_for(obs, t0 + timedelta(seconds=901)) == 901.0
    no_time = observe_job(job(active=1), [pod("p1", "Pending", conditions=[UNSCHEDULABLE])])
    assert unschedulable_for(no_time, t0) is None
    placed = observe_job(job(active=1), [pod("p1", "Pending", node="n1", conditions=[
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": T0}])])
    assert unschedulable_for(placed, t0 + timedelta(hours=1)) is None


def test_waiting_container_reason_is_surfaced():
    waiting = {"state": {"waiting": {"reason": "CreateContainerConfigError",
                                     "message": 'secret "s3" not found'}}}
    obs = observe_job(job(active=1), [pod("p1", "Pending", node="n1",
                                          conditions=[{"type": "PodScheduled", "status": "True"}],
                                          containers=[waiting])])
    assert obs.reason == "CreateContainerConfigError"
    assert 'secret "s3" not found' in obs.message
    assert obs.scheduled is True


def test_running_pod_is_running_on_its_node():
    obs = observe_job(job(active=1), [pod("p1", "Running", node="pool-a-0")])
    assert (obs.phase, obs.pod, obs.node, obs.attempts) == ("Running", "p1", "pool-a-0", 1)


def test_exited_pod_before_job_completes_is_still_running():
    obs = observe_job(job(active=0), [pod("p1", "Succeeded", node="n")])
    assert obs.finished is None and obs.phase == "Running" and obs.reason == "Completing"


def test_complete_job():
    obs = observe_job(job(succeeded=1, conditions=[{"type": "Complete", "status": "True",
                                                    "lastTransitionTime": T0}]),
                      [pod("p1", "Succeeded")])
    assert obs.finished == "complete" and obs.completion_time == T0


def test_failed_job_names_the_last_attempts_cause():
    oom = {"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
    obs = observe_job(job(failed=2, conditions=[{"type": "Failed", "status": "True",
                                                  "reason": "BackoffLimitExceeded",
                                                  "message": "Job has reached the specified backoff limit"}]),
                      [pod("p1", "Failed", created="2026-01-01T00:00:00Z", containers=[oom]),
                       pod("p2", "Failed", created="2026-01-01T00:01:00Z", containers=[oom])])
    assert obs.finished == "failed" and obs.reason == "BackoffLimitExceeded"
    assert "OOMKilled (exit code 137)" in obs.message
    assert obs.attempts == 2


def test_retry_after_a_failed_attempt_says_so():
    err = {"state": {"terminated": {"reason": "Error", "exitCode": 3}}}
    obs = observe_job(job(active=1, failed=1),
                      [pod("p1", "Failed", created="2026-01-01T00:00:00Z", containers=[err]),
                       pod("p2", "Running", node="n", created="2026-01-01T00:01:00Z")])
    assert obs.phase == "Running" and obs.pod == "p2" and obs.attempts == 2
    assert "previous: Error (exit code 3)" in obs.message


def _record(status, reward=None, reason=None):
    return ResultRecord(experiment="e", trial_id="t", architecture=Architecture.from_dict(CNN_ARCH),
                        status=status, reward=reward, reason=reason)


def test_the_result_record_decides_the_end():
    obs = observe_job(job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}]), [])
    ok = outcome_from_result(_record("succeeded", reward=0.81), obs, "j")
    assert (ok.phase, ok.reward) == ("Succeeded", 0.81)
    # the Job succeeded, but the child said it failed: the Trial failed, with its reason
    bad = outcome_from_result(_record("failed", reason="ArchitectureError: 9M parameters > 5M"), obs, "j")
    assert bad.phase == "Failed" and bad.reason == "TrainingFailed"
    assert "ArchitectureError" in bad.message
    status = apply_outcome({"phase": "Running"}, bad)
    assert status["phase"] == "Failed" and "completionTime" in status
    assert get_condition(status["conditions"], "Complete")["reason"] == "TrainingFailed"
    types = [(t, r) for t, r, _ in transition_events({"phase": "Running"}, status)]
    assert types == [("Warning", "Failed")]
    done = apply_outcome({"phase": "Running"}, ok)
    assert [(t, r) for t, r, _ in transition_events({"phase": "Running"}, done)] == [("Normal", "Succeeded")]
    assert done["reward"] == 0.81


def test_conditions_keep_their_transition_time_until_they_flip():
    t1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    c = set_condition([], "Valid", "True", "Valid", "", now=t1)
    c2 = set_condition(c, "Valid", "True", "Valid", "still", now=t1 + timedelta(hours=1))
    assert c2[0]["lastTransitionTime"] == c[0]["lastTransitionTime"]
    c3 = set_condition(c2, "Valid", "False", "UnknownPool", "x", now=t1 + timedelta(hours=2))
    assert c3[0]["lastTransitionTime"] != c[0]["lastTransitionTime"]
    assert len(c3) == 1


def test_invalid_trial_outcome_and_event():
    status = apply_outcome({}, Outcome("Pending", "UnknownPool", "spec.pool: 'x' is not a pool",
                                       valid=("False", "UnknownPool", "spec.pool: 'x' is not a pool")))
    assert get_condition(status["conditions"], "Valid")["status"] == "False"
    assert transition_events({}, status)[0][:2] == ("Warning", "UnknownPool")
    assert transition_events(status, status) == []


def test_drop_empty_strings():
    assert drop_empty({"a": "", "b": [{"m": "", "n": "x"}], "c": 0}) == {"b": [{"n": "x"}], "c": 0}
    assert C.TRIAL_TERMINAL == ("Succeeded", "Failed")
