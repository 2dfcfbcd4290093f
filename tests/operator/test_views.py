"""Typed views over raw objects: each field reads as the ``.get`` chains they replace, on
whole objects and on the informer caches' trimmed and packed stubs alike."""

from __future__ import annotations

import dataclasses

import pytest

from kubenas.operator import constants as C
from kubenas.operator.trim import TRIALS, trim_job, trim_pod, trim_trial
from kubenas.operator.views import ExperimentView, JobView, Meta, PodView, TrialView

from tests.operator.objects import experiment, trial


def test_meta_reads_what_is_there_and_none_or_empty_for_what_is_not():
    meta = Meta.of({"metadata": {"name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                                 "generation": 2, "labels": {"l": "1"}, "annotations": {"a": "2"},
                                 "ownerReferences": [{"kind": "Experiment", "name": "e", "uid": "x"}],
                                 "creationTimestamp": "t0", "deletionTimestamp": "t1"}})
    assert (meta.name, meta.namespace, meta.ns, meta.uid, meta.resource_version, meta.generation) \
        == ("a", "ns", "ns", "u", "7", 2)
    assert meta.labels == {"l": "1"} and meta.annotations == {"a": "2"} and meta.deleting
    for bare in ({}, {"metadata": None}, {"metadata": {"labels": None, "ownerReferences": None}}):
        m = Meta.of(bare)
        assert (m.name, m.namespace, m.ns, m.uid, m.resource_version, m.deletion_timestamp) \
            == (None, None, "", None, None, None)
        assert m.labels == {} and m.annotations == {} and m.owner_references == ()
        assert not m.deleting and not m.owned_by(C.EXPERIMENT_KIND)


def test_owned_by_matches_kind_and_whatever_name_and_uid_are_given():
    meta = Meta.of({"metadata": {"ownerReferences": [{"kind": "Experiment", "name": "e", "uid": "x"},
                                                     {"kind": "Trial", "name": "t", "uid": "y"}]}})
    assert meta.owned_by("Experiment") and meta.owned_by("Experiment", "e")
    assert meta.owned_by("Experiment", "e", "x") and meta.owned_by("Trial", uid="y")
    assert not meta.owned_by("Experiment", "t") and not meta.owned_by("Trial", "t", "x")
    assert not meta.owned_by("Job")


def test_views_are_frozen_and_slotted():
    view = TrialView.of(trial())
    assert not hasattr(view, "__dict__") and not hasattr(view.meta, "__dict__")
    with pytest.raises((dataclasses.FrozenInstanceError, TypeError)):
        view.meta = None


def test_a_trial_view_of_the_whole_object_and_of_its_cached_stub():
    obj = trial()
    obj["status"] = {"phase": "Succeeded", "reward": 0.5, "reason": "Succeeded", "message": "m",
                     "jobName": "kubenas-exp1-00000", "conditions": []}
    whole = TrialView.of(obj)
    assert whole.raw is obj and whole.status is obj["status"]
    assert (whole.name, whole.experiment, whole.pool, whole.phase, whole.reward) \
        == ("exp1-00000", "exp1", "pool-a", "Succeeded", 0.5)
    assert whole.terminal and whole.architecture == obj["spec"]["architecture"]
    assert whole.job_name == "kubenas-exp1-00000"
    stub = TrialView.of(TRIALS.unpack(TRIALS.pack(trim_trial(obj))))
    assert (stub.name, stub.meta.uid, stub.meta.resource_version, stub.experiment, stub.pool) \
        == ("exp1-00000", "uid-trial", "2", "exp1", "pool-a")
    assert (stub.phase, stub.reward, stub.reason, stub.message) == ("Succeeded", 0.5, "Succeeded", "m")
    assert stub.architecture is None and stub.job_name is None   # the stub drops them
    fresh = TrialView.of(trial())
    assert fresh.status == {} and fresh.phase is None and not fresh.terminal


@pytest.mark.parametrize("meta, status, why", [
    ({}, None, None),
    ({"deletionTimestamp": "t"}, {"phase": "Running"}, "is being deleted"),
    ({}, {"phase": "Succeeded"}, "is Succeeded"),
    ({"annotations": {C.ANNOTATION_STOP: "TRUE"}}, {"phase": "Running"},
     f"was asked to stop ({C.ANNOTATION_STOP}=true)"),
    ({"annotations": {C.ANNOTATION_STOP: "no"}}, {"phase": "Running"}, None),
])
def test_why_an_experiments_trials_must_stop(meta, status, why):
    obj = experiment()
    obj["metadata"].update(meta)
    if status is not None:
        obj["status"] = status
    assert ExperimentView.of(obj).stopping() == why


def test_an_experiment_is_judged_by_the_status_about_to_be_written_when_given():
    view = ExperimentView.of(experiment())
    assert view.stopping() is None
    assert view.stopping(status={"phase": C.EXP_STOPPED}) == f"is {C.EXP_STOPPED}"
    assert ExperimentView.of(experiment(controller={"replicas": 2})).controller_options == {"replicas": 2}
    assert view.controller_options == {}


def test_a_job_view_reads_true_conditions_counts_and_limits_of_a_trimmed_job():
    job = {"metadata": {"name": "j", "namespace": "ns", "managedFields": [{}]},
           "spec": {"activeDeadlineSeconds": 1, "template": {"spec": {}}},
           "status": {"active": 1, "startTime": "t0",
                      "conditions": [{"type": "Complete", "status": "False"},
                                     {"type": "Failed", "status": "True", "reason": "R"}]}}
    view = JobView.of(trim_job(job))
    assert view.condition("Complete") is None and view.condition("Failed")["reason"] == "R"
    assert (view.count("active"), view.count("succeeded"), view.count("failed")) == (1, 0, 0)
    assert (view.start_time, view.completion_time, view.active_deadline_seconds) == ("t0", None, 1)
    bare = JobView.of({})
    assert bare.condition("Complete") is None and bare.count("failed") == 0 and bare.name is None


def test_a_pod_view_reads_its_node_phase_conditions_and_containers():
    pod = {"metadata": {"name": "p", "deletionTimestamp": "t"}, "spec": {"nodeName": "n1", "containers": []},
           "status": {"phase": "Failed", "conditions": [{"type": "PodScheduled", "status": "False"}],
                      "containerStatuses": [{"name": "c"}]}}
    view = PodView.of(trim_pod(pod))
    assert (view.name, view.node_name, view.phase) == ("p", "n1", "Failed")
    assert view.finished and view.meta.deleting
    assert view.condition("PodScheduled") == {"type": "PodScheduled", "status": "False"}
    assert view.condition("Ready") is None and view.container_statuses == [{"name": "c"}]
    bare = PodView.of({"metadata": {"name": "q"}})
    assert (bare.node_name, bare.phase, bare.container_statuses, bare.finished) == (None, None, [], False)
