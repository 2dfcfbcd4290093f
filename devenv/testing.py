"""The ObjectStore contract, as a reusable pytest suite for every store implementation.

A test module subclasses :class:`StoreContract` and provides two fixtures: ``store`` (a fresh,
empty store) and ``store_factory`` (a picklable zero-argument callable that opens *the same*
store again, used inside worker processes). tests/storage/test_local_store.py,
tests/storage/test_s3_store.py and tests/storage/test_memory_store.py run it against
LocalStore, a real SeaweedFS and MemoryStore (its threads only: one process's store).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import uuid
from typing import Callable

import pytest

from kubenas.storage import AlreadyExists, NotFound, PreconditionFailed

WRITERS = 8


def make_s3_store(server, prefix: str | None = None, **options):
    """An S3Store on a devenv SeaweedFS ``server`` under ``prefix`` (default: a fresh unique
    one), with explicit credentials: nothing is read from or written to the environment."""
    from kubenas.storage.s3 import S3Store

    options.setdefault("access_key_id", server.access_key)
    options.setdefault("secret_access_key", server.secret_key)
    return S3Store(bucket=server.bucket, prefix=prefix or f"test-{uuid.uuid4().hex[:12]}",
                   endpoint_url=server.endpoint, region="us-east-1", **options)


# ---------------------------------------------------------------------------- workers
def race_put_new(store, key: str, barrier, i: int):
    """One racing create-only writer: returns ('won', etag) or ('lost', None)."""
    data = f"writer-{i}".encode()
    barrier.wait()
    try:
        return "won", store.put_new(key, data)
    except AlreadyExists:
        return "lost", None


def cas_increment(store, key: str, times: int) -> int:
    """Increment a JSON counter ``times`` times with read + put_if_match; returns conflicts."""
    conflicts = 0
    done = 0
    while done < times:
        data, etag = store.get_with_etag(key)
        value = json.loads(data)["n"]
        try:
            store.put_if_match(key, json.dumps({"n": value + 1}).encode(), etag)
            done += 1
        except PreconditionFailed:
            conflicts += 1
    return conflicts


def _proc_put_new(factory, key, barrier, i, queue):
    try:
        queue.put((i,) + race_put_new(factory(), key, barrier, i))
    except BaseException as exc:  # noqa: BLE001 - report to the parent
        queue.put((i, "error", repr(exc)))


def _proc_increment(factory, key, barrier, times, queue):
    try:
        store = factory()
        barrier.wait()
        queue.put(("ok", cas_increment(store, key, times)))
    except BaseException as exc:  # noqa: BLE001
        queue.put(("error", repr(exc)))


def _run_processes(target, args_for: Callable[[int], tuple], n: int, timeout: float = 120):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=args_for(i) + (queue,)) for i in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0, f"worker process exited with {p.exitcode}"
    return results


# ---------------------------------------------------------------------------- the suite
class StoreContract:
    """Subclass as ``TestXxxStore(StoreContract)`` and define ``store``/``store_factory``."""

    CAS_WORKERS = 6
    CAS_INCREMENTS = 5
    LIST_KEYS = 50

    # -- basic semantics
    def test_put_new_then_get(self, store):
        etag = store.put_new("results/t1.json", b'{"a": 1}')
        assert store.get("results/t1.json") == b'{"a": 1}'
        data, etag2 = store.get_with_etag("results/t1.json")
        assert (data, etag2) == (b'{"a": 1}', etag)
        assert store.exists("results/t1.json")

    def test_get_many_keeps_order_and_marks_the_missing(self, store):
        keys = [f"results/t{i:03d}.json" for i in range(40)]
        for i, key in enumerate(keys):
            if i % 7:
                store.put_new(key, f"record {i}".encode())
        got = store.get_many(keys)
        assert got == [None if i % 7 == 0 else f"record {i}".encode() for i in range(40)]
        assert store.get_many([]) == [] and store.get_many(["nope"]) == [None]

    def test_put_new_is_create_only(self, store):
        store.put_new("k", b"first")
        with pytest.raises(AlreadyExists):
            store.put_new("k", b"second")
        assert store.get("k") == b"first"

    def test_put_overwrites_and_changes_etag(self, store):
        e1 = store.put("ckpt/latest.pt", b"epoch-1")
        e2 = store.put("ckpt/latest.pt", b"epoch-2")
        assert e1 != e2
        assert store.get_with_etag("ckpt/latest.pt") == (b"epoch-2", e2)

    def test_put_if_match(self, store):
        e1 = store.put_if_match("state.json", b"v1", None)  # None: create only if absent
        with pytest.raises(PreconditionFailed):
            store.put_if_match("state.json", b"again", None)
        with pytest.raises(PreconditionFailed):
            store.put_if_match("state.json", b"v2", "0" * 32)  # stale / wrong etag
        e2 = store.put_if_match("state.json", b"v2", e1)
        assert store.get_with_etag("state.json") == (b"v2", e2)
        with pytest.raises(PreconditionFailed):
            store.put_if_match("state.json", b"v3", e1)  # e1 is stale now
        assert store.get("state.json") == b"v2"

    def test_not_found(self, store):
        with pytest.raises(NotFound):
            store.get("missing/key")
        with pytest.raises(NotFound):
            store.get_with_etag("missing/key")
        assert not store.exists("missing/key")
        store.delete("missing/key")  # deleting an absent key is fine

    def test_delete(self, store):
        store.put("a/b", b"x")
        store.delete("a/b")
        with pytest.raises(NotFound):
            store.get("a/b")
        assert store.list("a/") == []

    def test_binary_and_empty_values(self, store):
        blob = bytes(range(256)) * 64
        store.put("bin", blob)
        store.put("empty", b"")
        assert store.get("bin") == blob
        assert store.get("empty") == b""

    def test_list_by_prefix(self, store):
        expected = []
        for i in range(self.LIST_KEYS):
            key = f"results/{i:03d}.json" if i % 2 else f"trials/{i:03d}.json"
            store.put(key, str(i).encode())
            expected.append(key)
        store.put("results-summary.txt", b"not under results/")
        assert store.list("results/") == sorted(k for k in expected if k.startswith("results/"))
        assert store.list("trials/") == sorted(k for k in expected if k.startswith("trials/"))
        assert store.list("results") == sorted(
            [k for k in expected if k.startswith("results/")] + ["results-summary.txt"])
        assert store.list() == sorted(expected + ["results-summary.txt"])
        assert store.list("nothing/") == []

    def test_list_start_after(self, store):
        keys = [f"results/exp-{i:05d}.json" for i in range(12)]
        for key in keys + ["trials/exp-00009.json", "resultsX"]:
            store.put(key, b"{}")
        # exclusive, like S3's StartAfter; the bound need not be a stored key
        assert store.list("results/", start_after=keys[4]) == keys[5:]
        assert store.list("results/", start_after="results/exp-00007") == keys[7:]
        assert store.list("results/", start_after="results/") == keys
        assert store.list("results/", start_after=keys[-1]) == []
        assert store.list("results/", start_after="a") == keys     # before the prefix
        assert store.list("results/", start_after="z") == []        # after the prefix

    def test_head_gives_the_etag_without_the_body(self, store):
        etag = store.put("state.json", b"v1")
        assert store.head("state.json") == etag == store.get_with_etag("state.json")[1]
        etag2 = store.put_if_match("state.json", b"v2", etag)
        assert store.head("state.json") == etag2 != etag
        with pytest.raises(NotFound):
            store.head("missing.json")

    # -- concurrency
    def test_racing_writers_threads_one_winner(self, store):
        barrier = threading.Barrier(WRITERS)
        results = [None] * WRITERS

        def run(i):
            results[i] = race_put_new(store, "race/threads.json", barrier, i)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [i for i, r in enumerate(results) if r[0] == "won"]
        assert len(winners) == 1, results
        assert sum(r[0] == "lost" for r in results) == WRITERS - 1
        assert store.get("race/threads.json") == f"writer-{winners[0]}".encode()

    def test_racing_writers_processes_one_winner(self, store, store_factory):
        barrier = mp.get_context("fork").Barrier(WRITERS)
        results = _run_processes(_proc_put_new,
                                 lambda i: (store_factory, "race/procs.json", barrier, i), WRITERS)
        assert not [r for r in results if r[1] == "error"], results
        winners = [r[0] for r in results if r[1] == "won"]
        assert len(winners) == 1, results
        assert store.get("race/procs.json") == f"writer-{winners[0]}".encode()

    def test_cas_no_lost_update_threads(self, store):
        store.put_new("counter.json", b'{"n": 0}')
        errors = []

        def run():
            try:
                cas_increment(store, "counter.json", self.CAS_INCREMENTS)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(self.CAS_WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        assert json.loads(store.get("counter.json"))["n"] == self.CAS_WORKERS * self.CAS_INCREMENTS

    def test_cas_no_lost_update_processes(self, store, store_factory):
        store.put_new("counter.json", b'{"n": 0}')
        barrier = mp.get_context("fork").Barrier(self.CAS_WORKERS)
        results = _run_processes(
            _proc_increment,
            lambda i: (store_factory, "counter.json", barrier, self.CAS_INCREMENTS),
            self.CAS_WORKERS)
        assert all(r[0] == "ok" for r in results), results
        assert json.loads(store.get("counter.json"))["n"] == self.CAS_WORKERS * self.CAS_INCREMENTS
