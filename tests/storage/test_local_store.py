"""LocalStore (the embedded default) against the ObjectStore contract, plus its own edges."""

from __future__ import annotations

import functools
import os

import pytest

from devenv.testing import StoreContract
from kubenas.storage import NotFound, open_store
from kubenas.storage.local import LocalStore


@pytest.fixture
def store_root(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def store(store_root):
    return LocalStore(store_root)


@pytest.fixture
def store_factory(store_root):
    return functools.partial(LocalStore, store_root)


class TestLocalStoreContract(StoreContract):
    pass


def test_keys_may_not_escape_the_root(store):
    for bad in ("", "/", "../x", "a/../../x"):
        with pytest.raises(ValueError):
            store.put(bad, b"x")


def test_leading_slash_is_relative_to_root(store, store_root):
    store.put("/a/b.txt", b"x")
    assert (store_root / "a" / "b.txt").read_bytes() == b"x"
    assert store.list() == ["a/b.txt"]


def test_internal_files_are_not_listed(store, store_root):
    store.put_new("results/1.json", b"{}")
    store.put_if_match("state.json", b"s", None)  # creates a lock side file
    names = {p.name for p in store_root.rglob("*")}
    assert any(n.startswith(".lock-") for n in names)
    assert store.list() == ["results/1.json", "state.json"]
    assert not [n for n in names if n.startswith(".tmp-")], "temp files must be cleaned up"


def test_directory_is_not_an_object(store):
    store.put("dir/file", b"x")
    with pytest.raises(NotFound):
        store.get("dir")


def test_open_store_urls(tmp_path):
    a = open_store(f"file://{tmp_path}/a")
    b = open_store(str(tmp_path / "b"))
    assert isinstance(a, LocalStore) and isinstance(b, LocalStore)
    assert a.url() == (tmp_path / "a").resolve().as_uri()
    a.put("k", b"v")
    assert open_store(a.url()).get("k") == b"v"


def test_put_is_atomic_replace(store, store_root):
    store.put("big", b"a" * 100_000)
    inode_before = os.stat(store_root / "big").st_ino
    store.put("big", b"b" * 100_000)
    assert os.stat(store_root / "big").st_ino != inode_before  # replaced, never rewritten in place
    assert store.get("big") == b"b" * 100_000


def test_cas_create_races_put_new_with_one_winner(store):
    """put_if_match(key, None) and put_new on the same key: exactly one creates it."""
    import threading

    from kubenas.storage import AlreadyExists, PreconditionFailed

    for round_ in range(20):
        key = f"race/{round_}"
        barrier = threading.Barrier(2)
        outcome = {}

        def cas():
            barrier.wait()
            try:
                store.put_if_match(key, b"cas", None)
                outcome["cas"] = True
            except PreconditionFailed:
                outcome["cas"] = False

        def new():
            barrier.wait()
            try:
                store.put_new(key, b"new")
                outcome["new"] = True
            except AlreadyExists:
                outcome["new"] = False

        threads = [threading.Thread(target=cas), threading.Thread(target=new)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcome["cas"] != outcome["new"], outcome
        assert store.get(key) == (b"cas" if outcome["cas"] else b"new")
