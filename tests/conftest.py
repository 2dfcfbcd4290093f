"""Session fixtures for the real test environment (see devenv/).

* ``s3_server``   - a real SeaweedFS S3 server (dedicated, on free loopback ports; or the dev
                    cluster's when KUBENAS_DEVENV_DIR names a running one). Attributes
                    ``endpoint``, ``access_key``, ``secret_key``, ``bucket``; methods ``stop()``,
                    ``start()``, ``restart()`` (same ports and data), ``client()`` (boto3).
* ``s3_store``    - a fresh ``kubenas.storage.s3.S3Store`` on ``s3_server`` under a unique prefix.
* ``dev_cluster`` - the whole environment (k8s v1.20 control plane, real GPU nodes: kubelet +
                    containerd + runc running the image from `make image`, SeaweedFS),
                    started once per session or reused from KUBENAS_DEVENV_DIR.
                    A ``devenv.cluster.DevCluster``: ``kubeconfig``, ``state_dir``, ``s3``,
                    ``create_namespace()`` (alias ``namespace_factory()``), ``delete_namespace()``,
                    ``apply_crds()``, ``run_kubectl(*args)``, ``api_client()``, ``pod_log(ns, pod)``.
* ``k8s_namespace`` - a fresh namespace in ``dev_cluster``, deleted after the test.
* ``sim_cluster`` - a second environment whose nodes are simulated (devenv/fake_kubelet.py:
                    a pod is a local process, no image), started only when a test asks: for
                    the operator's reconcile tests, whose children are a stub program.

Tests using ``dev_cluster`` are marked ``k8s`` and tests using S3 fixtures ``s3``
automatically, so ``-m "not k8s"`` deselects them. Missing tools are an error that says to run
``make dev-tools``, never a skip.
"""

from __future__ import annotations

import os

import pytest

# devenv/ and tests/ import from the repository root, which pytest puts on sys.path
# (pyproject: pythonpath); tests/kubenas/test_package_layout.py keeps the rooms from being
# imported from there by their bare names.
from devenv.cluster import DevCluster
from devenv.seaweed import SeaweedFS
from devenv.testing import make_s3_store

_K8S_FIXTURES = {"dev_cluster", "k8s_namespace", "sim_cluster"}
_S3_FIXTURES = {"s3_server", "s3_store"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _K8S_FIXTURES and not item.get_closest_marker("k8s"):
            item.add_marker(pytest.mark.k8s)
        if names & _S3_FIXTURES and not item.get_closest_marker("s3"):
            item.add_marker(pytest.mark.s3)


def _running_dev_cluster() -> DevCluster | None:
    state = os.environ.get("KUBENAS_DEVENV_DIR")
    if not state:
        return None
    cluster = DevCluster(state)
    return cluster if cluster.running() else None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    reused = _running_dev_cluster()
    if reused is not None and reused.s3 is not None:
        yield reused.s3
        return
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs") / "data", bucket="kubenas")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_server):
    return make_s3_store(s3_server)


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory):
    reused = _running_dev_cluster()
    if reused is not None:
        reused.apply_crds()
        yield reused
        return
    cluster = DevCluster(tmp_path_factory.mktemp("devenv"))
    cluster.up(quiet=True)
    try:
        yield cluster
    finally:
        cluster.down(quiet=True)


@pytest.fixture(scope="session")
def sim_cluster(tmp_path_factory):
    cluster = DevCluster(tmp_path_factory.mktemp("devenv-sim"), nodes="simulated")
    cluster.up(quiet=True)
    try:
        yield cluster
    finally:
        cluster.down(quiet=True)


@pytest.fixture
def k8s_namespace(dev_cluster):
    name = dev_cluster.create_namespace("t")
    yield name
    dev_cluster.delete_namespace(name)
