"""What the Job and Pod caches keep is enough: the reconcile sees the same thing as from the
API server's whole objects, for every way a child's Job ends (issue 10, operator memory)."""

from __future__ import annotations

import json

import pytest

from benchmarks.operator_cache import OUTCOMES, served_job, served_pod
from kubenas.operator import indexes as X
from kubenas.operator.informer import Informer
from kubenas.operator.main import CACHES
from kubenas.operator.status import observe_job


def _cached(kind: str, obj: dict) -> dict:
    """``obj`` as a reader of the ``kind`` informer's cache gets it back."""
    cache = CACHES[kind]
    return cache["unpack"](cache["pack"](cache["trim"](json.loads(json.dumps(obj)))))


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_a_cached_job_and_pod_are_observed_as_the_whole_ones_are(outcome):
    job, pod = served_job(7, outcome), served_pod(7, outcome)
    whole = observe_job(job, [pod])
    assert observe_job(_cached("jobs", job), [_cached("pods", pod)]) == whole
    # the reason the operator gives is the kubelet's or scheduler's, not a default
    expected = {"succeeded": "JobComplete", "failed": "BackoffLimitExceeded",
                "oom": "BackoffLimitExceeded", "unschedulable": "Unschedulable",
                "image-pull": "ImagePullBackOff", "running": "Running"}[outcome]
    assert whole.reason == expected


@pytest.mark.parametrize("outcome", ["failed", "oom"])
def test_a_retrying_job_keeps_its_last_failed_pods_exit(outcome):
    job, pod = served_job(3, "running"), served_pod(3, outcome)
    whole = observe_job(job, [pod])
    assert whole.last_failure and observe_job(_cached("jobs", job), [_cached("pods", pod)]) == whole
    assert ("OOMKilled" in whole.last_failure) == (outcome == "oom")


def test_a_finished_job_or_pod_is_stored_compressed_and_an_unfinished_one_as_its_dict():
    for kind, served in (("jobs", served_job), ("pods", served_pod)):
        cache = CACHES[kind]
        done = cache["trim"](served(1, "succeeded"))
        packed = cache["pack"](done)
        assert isinstance(packed, bytes) and len(packed) < len(json.dumps(done)) / 2, kind
        assert cache["unpack"](packed) == done
        live = cache["trim"](served(2, "running"))
        assert cache["pack"](live) is live and cache["unpack"](live) is live


def test_what_is_cut_is_what_no_reader_looks_at():
    job = _cached("jobs", served_job(5, "succeeded"))
    assert "template" not in job["spec"] and "managedFields" not in job["metadata"]
    assert job["status"]["conditions"][0].keys() == {"type", "status", "lastTransitionTime"}
    pod = _cached("pods", served_pod(5, "oom"))
    assert set(pod["status"]) == {"phase", "conditions", "containerStatuses"}   # no IPs, no QoS
    assert [c["type"] for c in pod["status"]["conditions"]] == ["PodScheduled"]
    assert pod["status"]["containerStatuses"] == [{"name": "train-child", "lastState": {}, "state": {
        "terminated": {"reason": "OOMKilled", "exitCode": 137, "message": ""}}}]


def test_the_informer_indexes_a_packed_cache_as_it_would_the_dicts():
    jobs = Informer(kube=None, path="/unused", name="jobs", on_change=lambda *_: None, **CACHES["jobs"])
    pods = Informer(kube=None, path="/unused", name="pods", on_change=lambda *_: None, **CACHES["pods"])
    for i, outcome in enumerate(OUTCOMES):
        jobs._apply({"type": "ADDED", "object": served_job(i, outcome)})
        pods._apply({"type": "ADDED", "object": served_pod(i, outcome)})
    unfinished = sum(o not in ("succeeded", "failed", "oom") for o in OUTCOMES)
    labels = served_job(0)["metadata"]["labels"]
    key = ("team-a", labels["kubenas.dev/experiment"], labels["kubenas.dev/pool"])
    assert jobs.count(X.IN_FLIGHT, key) == unfinished
    for i, outcome in enumerate(OUTCOMES):
        trial = served_job(i)["metadata"]["annotations"]["kubenas.dev/trial-name"]
        [pod] = pods.by_index(X.BY_TRIAL, ("team-a", trial))
        assert observe_job(jobs.get("team-a", f"kubenas-{trial}"), [pod]) == \
            observe_job(served_job(i, outcome), [served_pod(i, outcome)]), outcome
