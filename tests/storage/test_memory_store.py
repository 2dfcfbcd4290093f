"""MemoryStore (in-process, for the benchmark's runs and tests) against the ObjectStore contract."""

from __future__ import annotations

import pytest

from devenv.testing import StoreContract
from kubenas.storage.memory import MemoryStore


@pytest.fixture
def shared():
    return MemoryStore()


@pytest.fixture
def store(shared):
    return shared


class TestMemoryStoreContract(StoreContract):
    # The process races need a store another process can open; this one lives in one process,
    # so those two contract tests do not apply (None: pytest collects nothing, rather than a skip).
    test_racing_writers_processes_one_winner = None
    test_cas_no_lost_update_processes = None


def test_url_names_the_store():
    assert MemoryStore("benchmark").url() == "memory://benchmark"
