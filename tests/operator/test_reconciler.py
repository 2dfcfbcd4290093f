"""The reconciler against a recording fake of the API (no cluster): each Trial and
Experiment status write is one merge patch guarded by the resourceVersion it was read at; a
409 refreshes the cache and raises Conflict (look again), a 404 means deleted meanwhile."""

from __future__ import annotations

import copy

import pytest

from kubenas.operator import constants as C
from kubenas.operator import indexes as X
from kubenas.operator.informer import Informer
from kubenas.operator.kube import KubeError, custom_path, jobs_path
from kubenas.operator.reconciler import Conflict, Reconciler
from kubenas.operator.results import StoreProvider
from kubenas.operator.settings import Settings
from kubenas.operator.trim import TRIALS, trim_job, trim_pod, trim_trial
from kubenas.storage.local import LocalStore

from tests.operator.objects import experiment, trial

TRIAL = custom_path(C.TRIAL_PLURAL, "ns1", "exp1-00000")
EXPERIMENT = custom_path(C.EXPERIMENT_PLURAL, "ns1", "exp1")


class FakeKube:
    """Objects by path; writes bump the resourceVersion; ``fail[(method, path)]``: errors."""

    def __init__(self) -> None:
        self.objs: dict = {}
        self.calls: list = []
        self.fail: dict = {}
        self.rv = 100

    def put(self, path: str, obj: dict) -> dict:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objs[path] = obj
        return copy.deepcopy(obj)

    def _enter(self, method: str, path: str, body=None) -> None:
        self.calls.append((method, path, copy.deepcopy(body)))
        errors = self.fail.get((method, path)) or []
        if errors:
            raise errors.pop(0)

    def get(self, path: str, **query) -> dict:
        self._enter("get", path)
        if path not in self.objs:
            raise KubeError(404, "NotFound", path)
        return copy.deepcopy(self.objs[path])

    def create(self, path: str, body: dict) -> dict:
        self._enter("create", path, body)
        body = copy.deepcopy(body)
        body["metadata"].setdefault("uid", "uid-" + body["metadata"]["name"])
        return self.put(f"{path}/{body['metadata']['name']}", body)

    def merge_patch(self, path: str, patch: dict) -> dict:
        self._enter("merge_patch", path, patch)
        base = path[:-len("/status")] if path.endswith("/status") else path
        obj = copy.deepcopy(self.objs[base])
        if patch.get("metadata", {}).get("resourceVersion") not in (None, obj["metadata"]["resourceVersion"]):
            raise KubeError(409, "Conflict", "the object has been modified")
        for part, value in patch.items():
            if part == "status":
                obj["status"] = {k: v for k, v in {**obj.get("status", {}), **value}.items()
                                 if v is not None}
            else:
                obj.setdefault(part, {}).update({k: v for k, v in value.items()
                                                 if k != "resourceVersion"})
        return self.put(base, obj)

    def writes(self) -> list:
        return [c for c in self.calls if c[0] != "get"]


class Events:
    def __init__(self) -> None:
        self.seen: list = []

    def record(self, obj, type_, reason, message) -> None:
        self.seen.append((obj["kind"], type_, reason))


@pytest.fixture
def world(tmp_path):
    kube = FakeKube()

    def informer(trim, indexers, **packing):
        return Informer(kube, "/", "test", lambda kind, obj: None, trim=trim, indexers=indexers,
                        **packing)

    trials = informer(trim_trial, X.TRIAL_INDEXERS, pack=TRIALS.pack, unpack=TRIALS.unpack)
    experiments, jobs = informer(lambda o: o, None), informer(trim_job, X.JOB_INDEXERS)
    pods = informer(trim_pod, X.POD_INDEXERS)
    events = Events()
    rec = Reconciler(kube, trials=trials, experiments=experiments, jobs=jobs,
                     pods_of=lambda ns, t: pods.by_index(X.BY_TRIAL, (ns, t)), best=X.BestTrials(),
                     events=events, stores=StoreProvider(None, lambda *a: LocalStore(tmp_path)),
                     settings=Settings.from_env({"KUBENAS_MANAGE_CONTROLLERS": "false"}))
    experiments.upsert(kube.put(EXPERIMENT, experiment()))
    owned = trial()
    owned["metadata"]["ownerReferences"] = [{"apiVersion": C.API_VERSION, "kind": "Experiment",
                                             "name": "exp1", "uid": "uid-exp", "controller": True}]
    trials.upsert(kube.put(TRIAL, owned))
    return rec, kube, events


def test_a_new_trial_gets_its_job_and_one_guarded_status_patch(world):
    rec, kube, events = world
    assert rec.reconcile_trial("ns1", "exp1-00000") is None
    (create, patch) = kube.writes()
    assert create[:2] == ("create", jobs_path("ns1"))
    method, path, body = patch
    assert (method, path) == ("merge_patch", f"{TRIAL}/status")
    assert body["metadata"] == {"resourceVersion": "102"}   # the version the reconcile read
    assert body["status"]["jobName"] == "kubenas-exp1-00000" and body["status"]["phase"] == "Pending"
    assert ("Trial", "Normal", "JobCreated") in events.seen
    assert rec.trials.get("ns1", "exp1-00000")["metadata"]["resourceVersion"] == "104"
    kube.calls.clear()
    rec.reconcile_trial("ns1", "exp1-00000")   # nothing changed: nothing written
    assert kube.writes() == []


def test_a_stale_trial_write_refreshes_the_cache_and_raises_conflict(world):
    rec, kube, events = world
    kube.fail[("merge_patch", f"{TRIAL}/status")] = [KubeError(409, "Conflict", "modified")]
    kube.objs[TRIAL]["metadata"]["resourceVersion"] = "150"   # someone else wrote
    with pytest.raises(Conflict, match="trial ns1/exp1-00000 changed"):
        rec.reconcile_trial("ns1", "exp1-00000")
    assert kube.calls[-1] == ("get", TRIAL, None)
    assert rec.trials.get("ns1", "exp1-00000")["metadata"]["resourceVersion"] == "150"


def test_a_trial_deleted_before_its_status_write_is_left_alone(world):
    rec, kube, events = world
    kube.fail[("merge_patch", f"{TRIAL}/status")] = [KubeError(404, "NotFound", "gone")]
    assert rec.reconcile_trial("ns1", "exp1-00000") is None
    assert not any(reason in ("Failed", "Running") for _, _, reason in events.seen)


def test_a_hand_made_trial_gets_the_experiment_as_owner_by_a_guarded_patch(world):
    rec, kube, events = world
    bare = trial()
    rec.trials.upsert(kube.put(TRIAL, bare))
    kube.fail[("merge_patch", TRIAL)] = [KubeError(409, "Conflict", "modified")]
    with pytest.raises(Conflict):
        rec.reconcile_trial("ns1", "exp1-00000")
    method, path, body = kube.writes()[0]
    assert (method, path) == ("merge_patch", TRIAL)
    assert body["metadata"]["resourceVersion"] == "103"
    assert [r["uid"] for r in body["metadata"]["ownerReferences"]] == ["uid-exp"]


def test_the_experiment_status_is_one_guarded_patch_and_a_stale_one_conflicts(world):
    rec, kube, events = world
    kube.objs[EXPERIMENT]["status"] = {"phase": "Running", "message": "old"}
    rec.experiments.upsert(kube.put(EXPERIMENT, kube.objs[EXPERIMENT]))
    assert rec.reconcile_experiment("ns1", "exp1") is None
    method, path, body = kube.writes()[0]
    assert (method, path) == ("merge_patch", f"{EXPERIMENT}/status")
    assert body["metadata"] == {"resourceVersion": "103"}
    assert body["status"]["trialsCreated"] == 1 and body["status"]["phase"] == "Running"
    assert body["status"]["storageUrl"] == "s3://kubenas/exp"
    kube.objs[EXPERIMENT]["metadata"]["annotations"] = {C.ANNOTATION_STOP: "true"}
    rec.experiments.upsert(kube.objs[EXPERIMENT])   # the cache sees the annotation ...
    kube.put(EXPERIMENT, kube.objs[EXPERIMENT])     # ... and the server has moved on
    with pytest.raises(Conflict, match="experiment ns1/exp1 changed"):
        rec.reconcile_experiment("ns1", "exp1")
    assert rec.experiments.get("ns1", "exp1")["metadata"]["resourceVersion"] == kube.objs[EXPERIMENT]["metadata"]["resourceVersion"]
    assert rec.reconcile_experiment("ns1", "exp1") is None   # looked at again: written
    assert kube.objs[EXPERIMENT]["status"]["phase"] == C.EXP_STOPPED
    assert ("Experiment", "Normal", "Stopped") in events.seen
