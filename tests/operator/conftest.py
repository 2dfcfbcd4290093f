"""Helpers for the operator's tests against the dev cluster (one cluster per session, one
namespace per test): an S3 Secret, Experiments and Trials, the operator in threads."""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import pytest

from kubenas.operator.kube import Kube, KubeError, core_path, custom_path, jobs_path

from tests.operator.objects import CNN_ARCH, experiment_spec

FAKE_KUBENAS = [sys.executable, str(Path(__file__).with_name("fake_kubenas.py"))]
FAKE_CONTROLLER = [sys.executable, str(Path(__file__).with_name("fake_controller.py"))]


class Env:
    """One test's namespace on the dev cluster, with what the operator tests need."""

    def __init__(self, cluster, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace
        self.api_client = cluster.api_client()
        self.kube = Kube(self.api_client)
        s3 = cluster.s3
        self.s3 = s3
        self.store_url = f"s3://{s3.bucket}/{namespace}"
        self.kube.create(core_path("secrets", namespace), {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"},
            "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key,
                           "AWS_SECRET_ACCESS_KEY": s3.secret_key}})

    # -- objects ---------------------------------------------------------------------------
    def experiment_spec(self, **over) -> dict:
        over.setdefault("storage", {"url": self.store_url, "endpoint": self.s3.endpoint,
                                    "secretName": "s3-creds"})
        over.setdefault("jobSettings", {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600})
        return experiment_spec(**over)

    def create_experiment(self, name: str = "exp1", annotations=None, **over) -> dict:
        meta = {"name": name}
        if annotations:
            meta["annotations"] = annotations
        return self.kube.create(custom_path("experiments", self.ns), {
            "apiVersion": "kubenas.dev/v1", "kind": "Experiment", "metadata": meta,
            "spec": self.experiment_spec(**over)})

    def create_trial(self, name: str, experiment: str = "exp1", pool: str = "pool-a",
                     fake=None, arch=None, owner: dict = None) -> dict:
        meta: dict = {"name": name}
        if owner is not None:
            meta["ownerReferences"] = [{"apiVersion": "kubenas.dev/v1", "kind": "Experiment",
                                        "name": owner["metadata"]["name"],
                                        "uid": owner["metadata"]["uid"], "controller": True,
                                        "blockOwnerDeletion": True}]
        return self.kube.create(custom_path("trials", self.ns), {
            "apiVersion": "kubenas.dev/v1", "kind": "Trial", "metadata": meta,
            "spec": {"experiment": experiment, "pool": pool,
                     "architecture": copy.deepcopy(arch or CNN_ARCH),
                     "trainer": {"epochs": 1, "options": {"fake": fake or {"sleep": 0.1}}}}})

    # -- reads -----------------------------------------------------------------------------
    def trial(self, name: str) -> dict:
        return self.kube.get(custom_path("trials", self.ns, name))

    def experiment(self, name: str = "exp1") -> dict:
        return self.kube.get(custom_path("experiments", self.ns, name))

    def trials(self) -> list:
        return self.kube.list_all(custom_path("trials", self.ns))[0]

    def jobs(self, selector=None) -> list:
        return self.kube.list_all(jobs_path(self.ns), label_selector=selector)[0]

    def pods(self) -> list:
        return self.kube.list_all(core_path("pods", self.ns))[0]

    def events_for(self, name: str) -> list:
        evs = self.kube.list_all(core_path("events", self.ns),
                                 field_selector=f"involvedObject.name={name}")[0]
        return [e for e in evs if e["involvedObject"].get("kind") in ("Trial", "Experiment")]

    def store(self):
        from kubenas.storage.s3 import S3Store

        return S3Store(bucket=self.s3.bucket, prefix=self.ns, endpoint_url=self.s3.endpoint,
                       region="us-east-1", access_key_id=self.s3.access_key,
                       secret_access_key=self.s3.secret_key)

    def phases(self) -> dict:
        return {t["metadata"]["name"]: ((t.get("status") or {}).get("phase"),
                                        (t.get("status") or {}).get("reason"))
                for t in self.trials()}

    def wait(self, predicate, timeout: float = 30.0, what: str = "condition", interval=0.2):
        deadline = time.monotonic() + timeout
        last_exc = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except KubeError as exc:
                last_exc = exc
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; trials: "
                             f"{json.dumps(self.phases())}; last error: {last_exc}")

    def wait_phase(self, name: str, phases, timeout: float = 30.0) -> dict:
        phases = (phases,) if isinstance(phases, str) else tuple(phases)
        return self.wait(lambda: (lambda t: t if (t.get("status") or {}).get("phase") in phases
                                  else None)(self.trial(name)), timeout, f"{name} in {phases}")

    def kubectl(self, *args: str) -> str:
        return self.cluster.run_kubectl(*args, "-n", self.ns).stdout


@pytest.fixture(scope="session")
def dev_cluster(sim_cluster):
    """The operator's reconcile tests run on simulated nodes: their children are the stub
    program fake_kubenas.py, run as a local process (no image). Pods as real containers of
    the image under real kubelets: tests/devenv, tests/helm and tests/e2e."""
    return sim_cluster


@pytest.fixture
def env(dev_cluster, k8s_namespace):
    return Env(dev_cluster, k8s_namespace)


@pytest.fixture
def operator_factory(env):
    """Start an operator (in threads) for the test's namespace; stopped at the end."""
    from kubenas.operator.main import OperatorRunner

    runners = []

    def start(**kw):
        kw.setdefault("child_command", FAKE_KUBENAS)
        kw.setdefault("manage_controllers", False)
        kw.setdefault("resync_seconds", 5.0)
        kw.setdefault("result_grace_seconds", 3.0)
        kw.setdefault("api_client", env.cluster.api_client())
        runner = OperatorRunner(kw.pop("namespace", env.ns), **kw)
        op = runner.__enter__()
        runners.append(runner)
        return op

    yield start
    for r in runners:
        r.__exit__(None, None, None)


@pytest.fixture
def operator(operator_factory):
    return operator_factory()
