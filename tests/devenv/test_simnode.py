"""Simulated nodes (devenv/simnode.py), for scale tests: hundreds of trial pods in flight on
one machine with no process per pod, each finishing with the result record a child writes,
through the real apiserver, scheduler and job controller."""

from __future__ import annotations

import json
import threading
import time

import pytest

from devenv.cluster import DevCluster
from kubenas.contracts import ResultRecord, result_key
from kubenas.operator.kube import Kube, core_path, jobs_path
from kubenas.storage import open_store
from tests.operator.objects import CNN_ARCH

pytestmark = [pytest.mark.k8s]

N = 300
CHILD_SECONDS = 30


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("KUBENAS_SIM_CHILD_SECONDS", str(CHILD_SECONDS))
    cluster = DevCluster(tmp_path_factory.mktemp("simnode"), pools="sim:4:0:64:256Gi",
                         nodes="simulated")
    try:
        cluster.up(quiet=True)
    finally:
        mp.undo()
    try:
        yield cluster
    finally:
        cluster.down(quiet=True)


def trial_job(i: int, store: str) -> dict:
    tid = f"scale-{i:05d}"
    env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": "s3", "key": k}}}
           for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KUBENAS_S3_ENDPOINT")]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"t-{i:05d}"},
            "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"sim": "1"}}, "spec": {
                "restartPolicy": "Never", "containers": [{
                    "name": "trainer", "image": "localhost/kubenas:dev",
                    "command": ["kubenas"],
                    "args": ["train-child", "--experiment", "scale", "--trial-id", tid,
                             "--architecture-json", json.dumps(CNN_ARCH), "--store", store],
                    "env": env, "resources": {"requests": {"cpu": "100m"}}}]}}}}


def test_hundreds_of_trial_pods_in_flight_without_a_process_each(sim):
    kube = Kube(sim.api_client())
    ns = sim.create_namespace("sim")
    s3 = sim.s3
    kube.create(core_path("secrets", ns), {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
        "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                       "KUBENAS_S3_ENDPOINT": s3.endpoint}})
    store_url = f"s3://{s3.bucket}/{ns}"
    most_running = [0]
    stop = threading.Event()

    def sample():
        while not stop.wait(1.0):
            pods = kube.list_all(core_path("pods", ns), label_selector="sim=1")[0]
            running = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")
            most_running[0] = max(most_running[0], running)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    for i in range(N):
        kube.create(jobs_path(ns), trial_job(i, store_url))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            jobs = kube.list_all(jobs_path(ns))[0]
            if sum((j.get("status") or {}).get("succeeded") or 0 for j in jobs) == N:
                break
            time.sleep(2)
        else:
            raise AssertionError(f"not all {N} Jobs succeeded: {sim.run_kubectl('-n', ns, 'get', 'jobs').stdout[-2000:]}")
    finally:
        stop.set()
        sampler.join(5)
    elapsed = time.monotonic() - t0
    print(f"{N} simulated trials in {elapsed:.0f}s, at most {most_running[0]} Running at once")
    # most of them were in flight together: far more than processes could hold here
    assert most_running[0] >= N // 2, most_running[0]
    # every pod left the record a child writes, valid under the contract, once
    store = open_store(store_url, endpoint_url=s3.endpoint, access_key_id=s3.access_key,
                       secret_access_key=s3.secret_key, region="us-east-1")
    keys = sorted(store.list("results/"))
    assert keys == sorted(result_key(f"scale-{i:05d}") for i in range(N))
    rec = ResultRecord.from_json(store.get(keys[0]))
    assert rec.succeeded and 0 < rec.reward < 1 and rec.architecture.to_dict() == CNN_ARCH
    # and no child ran as a process: the fake kubelet kept no log file for a trial pod
    assert not list(sim.pods_dir.glob(f"{ns}_t-*.log"))
