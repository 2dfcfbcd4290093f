"""What the operator's caches cost per finished Trial, Job and Pod, at 1,000 and 12,800 trials.

The operator's peak RSS must stay flat (within 20 %) from 1,000 to 12,800 trials (issue 10).
What grows with n is what its informers cache: every finished Trial stays (its phase and
reward feed the Experiment's counts and best), and every finished Job and its Pod until the
Job's ``ttlSecondsAfterFinished`` deletes them (at paper rates, thousands). This feeds the
real ``Informer``, with the operator's own trim, pack and indexes (``CACHES`` in
kubenas.operator.main), objects shaped as a 1.20 API server returns them — a Trial with a
15-layer CNN architecture, its Job with the pod template that carries it, the Pod with the
kubelet's status — each parsed from its own JSON text as a watch event is, and prints the
bytes held per object (tracemalloc).

    .venv/bin/python benchmarks/operator_cache.py [--trials 1000 12800]
"""

from __future__ import annotations

import argparse
import json
import resource
import tracemalloc
import uuid

from kubenas.operator import constants as C
from kubenas.operator import indexes as X
from kubenas.operator.informer import Informer
from kubenas.operator.jobs import trial_labels
from kubenas.operator.main import CACHES
from kubenas.operator.naming import job_name

EXPERIMENT, NAMESPACE, EXP_UID = "paper-scale", "team-a", str(uuid.uuid4())


def _architecture(layers: int = 15) -> dict:
    spec = [{"filterHeight": 3, "filterWidth": 5, "numFilters": 36, "stride": 1,
             "skips": list(range(i))} for i in range(layers)]
    return {"kind": "Architecture", "space": "cnn", "version": 1,
            "tokens": list(range(layers * 4)), "spec": {"layers": spec}}


def finished_trial_json(i: int) -> str:
    """One finished Trial as the API server sends it, as JSON text."""
    name = f"{EXPERIMENT}-{i:05d}"
    stamp = "2026-12-04T19:00:00Z"
    obj = {
        "apiVersion": C.API_VERSION, "kind": C.TRIAL_KIND,
        "metadata": {
            "name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4()),
            "resourceVersion": str(100000 + i), "generation": 1, "creationTimestamp": stamp,
            "labels": trial_labels(EXPERIMENT, name, "pool-a"),
            "annotations": {C.ANNOTATION_EXPERIMENT_UID: EXP_UID},
            "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.EXPERIMENT_KIND,
                                 "name": EXPERIMENT, "uid": EXP_UID, "controller": True,
                                 "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kubenas", "operation": "Update",
                               "apiVersion": C.API_VERSION, "time": stamp,
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}] * 3},
        "spec": {"experiment": EXPERIMENT, "pool": "pool-a", "architecture": _architecture(),
                 "trainer": {"dataset": {"name": "cifar10"}, "epochs": 50, "batchSize": 128}},
        "status": {"phase": C.TRIAL_SUCCEEDED, "reward": 0.5 + (i % 997) / 2000,
                   "reason": "JobComplete", "message": "the Job completed",
                   "jobName": f"kubenas-{name}", "startTime": stamp, "completionTime": stamp,
                   "conditions": [{"type": "Complete", "status": "True", "reason": "JobComplete",
                                   "message": "the Job completed", "lastTransitionTime": stamp}]},
    }
    return json.dumps(obj)


STAMP = "2026-12-04T19:00:00Z"
# how each kind of object ends: a Job and its Pod as the job controller and kubelet leave them
OUTCOMES = ("succeeded", "failed", "oom", "unschedulable", "image-pull", "running")


def _managed(manager: str) -> list:
    return [{"manager": manager, "operation": "Update", "apiVersion": "v1", "time": STAMP,
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}}}}] * 2


def _pod_template(name: str, uid: str) -> dict:
    """The child's pod template as stored: its container args carry the architecture."""
    arch = json.dumps(_architecture())
    return {
        "metadata": {"labels": {**trial_labels(EXPERIMENT, name, "pool-a"), "controller-uid": uid,
                                "job-name": job_name(name)},
                     "annotations": {C.ANNOTATION_TRIAL: name}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "enableServiceLinks": False, "terminationGracePeriodSeconds": 30,
                 "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                 "nodeSelector": {"kubenas.dev/pool": "pool-a"},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                 "volumes": [{"name": "tmp", "emptyDir": {}}],
                 "containers": [{
                     "name": C.CONTAINER_NAME, "image": "kubenas:0.1", "command": ["kubenas"],
                     "args": ["train-child", "--experiment", EXPERIMENT, "--trial-id", name,
                              "--store", "s3://kubenas/paper-scale", "--architecture-json", arch,
                              "--trainer-config-json", '{"dataset":{"name":"cifar10"},"epochs":50}'],
                     "env": [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
                         "name": "s3-creds", "key": "accessKey"}}}] * 3,
                     "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"},
                                   "requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"}},
                     "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "capabilities": {"drop": ["ALL"]}},
                     "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                     "terminationMessagePath": "/dev/termination-log",
                     "terminationMessagePolicy": "FallbackToLogsOnError",
                     "imagePullPolicy": "IfNotPresent"}]}}


def _job_status(outcome: str) -> dict:
    if outcome == "succeeded":
        return {"startTime": STAMP, "completionTime": STAMP, "succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": STAMP,
                                "lastTransitionTime": STAMP}]}
    if outcome in ("failed", "oom"):
        return {"startTime": STAMP, "failed": 2, "conditions": [{
            "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit", "lastProbeTime": STAMP,
            "lastTransitionTime": STAMP}]}
    return {"startTime": STAMP, "active": 1}


def served_job(i: int, outcome: str = "succeeded") -> dict:
    """Trial i's Job as the API server returns it once the job controller is done with it."""
    name, uid = f"{EXPERIMENT}-{i:05d}", str(uuid.uuid4())
    meta = {"name": job_name(name), "namespace": NAMESPACE, "uid": uid,
            "resourceVersion": str(200000 + i), "creationTimestamp": STAMP,
            "labels": {**trial_labels(EXPERIMENT, name, "pool-a"), "controller-uid": uid,
                       "job-name": job_name(name)},
            "annotations": {C.ANNOTATION_TRIAL: name},
            "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.TRIAL_KIND, "name": name,
                                 "uid": str(uuid.uuid4()), "controller": True,
                                 "blockOwnerDeletion": True}],
            "managedFields": _managed("kube-controller-manager")}
    spec = {"backoffLimit": 1, "completions": 1, "parallelism": 1, "activeDeadlineSeconds": 86400,
            "ttlSecondsAfterFinished": 3600, "selector": {"matchLabels": {"controller-uid": uid}},
            "template": _pod_template(name, uid)}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec,
            "status": _job_status(outcome)}


def _container_status(outcome: str) -> dict:
    base = {"name": C.CONTAINER_NAME, "image": "localhost/kubenas:0.1", "ready": False,
            "restartCount": 0, "started": False,
            "imageID": "localhost/kubenas@sha256:" + "0" * 64,
            "containerID": "containerd://" + uuid.uuid4().hex * 2, "lastState": {}}
    if outcome in ("succeeded", "failed", "oom"):
        code, reason = {"succeeded": (0, "Completed"), "failed": (1, "Error"),
                        "oom": (137, "OOMKilled")}[outcome]
        base["state"] = {"terminated": {"exitCode": code, "reason": reason, "startedAt": STAMP,
                                        "finishedAt": STAMP, "containerID": base["containerID"],
                                        "message": "Traceback (most recent call last): ..." * (code == 1)}}
    elif outcome == "image-pull":
        base["state"] = {"waiting": {"reason": "ImagePullBackOff",
                                     "message": 'Back-off pulling image "kubenas:0.1"'}}
    else:
        base["state"] = {"running": {"startedAt": STAMP}}
        base["ready"] = base["started"] = True
    return base


def _pod_status(outcome: str) -> dict:
    if outcome == "unschedulable":
        return {"phase": "Pending", "qosClass": "Guaranteed", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/40 nodes are available: 40 Insufficient nvidia.com/gpu.",
            "lastProbeTime": None, "lastTransitionTime": STAMP}]}
    phase = {"succeeded": "Succeeded", "failed": "Failed", "oom": "Failed"}.get(outcome, outcome)
    phase = phase if phase in ("Succeeded", "Failed") else ("Pending" if outcome == "image-pull" else "Running")
    return {"phase": phase, "hostIP": "10.200.0.7", "podIP": "10.244.3.17",
            "podIPs": [{"ip": "10.244.3.17"}], "startTime": STAMP, "qosClass": "Guaranteed",
            "conditions": [{"type": t, "status": "True", "lastProbeTime": None,
                            "lastTransitionTime": STAMP}
                           for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
            "containerStatuses": [_container_status(outcome)]}


def served_pod(i: int, outcome: str = "succeeded") -> dict:
    """The pod of trial i's Job as the API server returns it, the kubelet's status included."""
    job = served_job(i, outcome)
    template = job["spec"]["template"]
    meta = {"name": f"{job['metadata']['name']}-{i:05x}", "namespace": NAMESPACE,
            "generateName": job["metadata"]["name"] + "-", "uid": str(uuid.uuid4()),
            "resourceVersion": str(300000 + i), "creationTimestamp": STAMP,
            "labels": template["metadata"]["labels"], "annotations": template["metadata"]["annotations"],
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                 "uid": job["metadata"]["uid"], "controller": True,
                                 "blockOwnerDeletion": True}],
            "managedFields": _managed("kubelet")}
    spec = {**template["spec"], "nodeName": "gpu-node-07", "serviceAccountName": "default",
            "priority": 0, "preemptionPolicy": "PreemptLowerPriority"}
    if outcome == "unschedulable":
        del spec["nodeName"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": _pod_status(outcome)}


SERVED = {"trials": lambda i: json.loads(finished_trial_json(i)), "jobs": served_job, "pods": served_pod}


def held_per_object(kind: str, n: int) -> float:
    """Bytes the ``kind`` informer's cache and indexes hold per finished object, after n."""
    texts = [json.dumps(SERVED[kind](i)) for i in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    informer = Informer(kube=None, path="/unused", name=kind, on_change=lambda *_: None,
                        **CACHES[kind])
    for text in texts:
        informer._apply({"type": "MODIFIED", "object": json.loads(text)})
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(informer.items()) == n
    return held / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 12800])
    args = parser.parse_args()
    kinds = list(SERVED)
    print(f"{'trials':>8} " + " ".join(f"{k + ' B/obj':>13}" for k in kinds) + f" {'total MiB':>10}")
    for n in args.trials:
        per = [held_per_object(kind, n) for kind in kinds]
        print(f"{n:>8} " + " ".join(f"{p:>13.0f}" for p in per) + f" {sum(per) * n / 2**20:>10.1f}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
