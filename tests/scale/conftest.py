"""The scale test runs on its own environment with simulated nodes (devenv/simnode.py:
trial pods run no process, the node writes their result records), sized for its pods."""

from __future__ import annotations

import os

import pytest

from benchmarks.scale import CI_IN_FLIGHT, sim_pools
from devenv.cluster import DevCluster


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory):
    """Overrides tests/conftest.py's (real nodes): simulated nodes with instant children."""
    old = os.environ.get("KUBENAS_SIM_CHILD_SECONDS")
    os.environ["KUBENAS_SIM_CHILD_SECONDS"] = "0"
    cluster = DevCluster(tmp_path_factory.mktemp("devenv-scale"), pools=sim_pools(CI_IN_FLIGHT),
                         nodes="simulated")
    try:
        cluster.up(quiet=True)
    finally:
        if old is None:
            os.environ.pop("KUBENAS_SIM_CHILD_SECONDS")
        else:
            os.environ["KUBENAS_SIM_CHILD_SECONDS"] = old
    try:
        yield cluster
    finally:
        cluster.down(quiet=True)
