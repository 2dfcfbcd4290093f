"""S3Store against a real S3 server (SeaweedFS from devenv): the ObjectStore contract, plus
pagination, credentials and a server restart in the middle of use."""

from __future__ import annotations

import functools
import threading
import time
import uuid

import pytest

from devenv.testing import StoreContract, make_s3_store
from kubenas.storage import AlreadyExists, NotFound, StorageError, open_store
from kubenas.storage.s3 import S3Store

pytestmark = pytest.mark.s3


@pytest.fixture
def store(s3_store):
    return s3_store


@pytest.fixture
def store_factory(s3_server, s3_store):
    return functools.partial(make_s3_store, s3_server, s3_store.prefix)


class TestS3StoreContract(StoreContract):
    pass


def test_list_paginates(s3_server):
    store = make_s3_store(s3_server, page_size=7)
    calls = []
    store.client.meta.events.register("after-call.s3.ListObjectsV2",
                                      lambda **kw: calls.append(1))
    keys = [f"p/{i:03d}" for i in range(30)]
    for k in keys:
        store.put(k, b"x")
    assert store.list("p/") == keys
    assert len(calls) == 5  # 30 keys, 7 per page


def test_stores_with_different_prefixes_are_isolated(s3_server):
    a, b = make_s3_store(s3_server), make_s3_store(s3_server)
    a.put("same/key", b"a")
    b.put_new("same/key", b"b")
    assert (a.get("same/key"), b.get("same/key")) == (b"a", b"b")
    assert a.list() == ["same/key"] == b.list()
    assert a.url() == f"s3://{s3_server.bucket}/{a.prefix}"


def test_open_store_reads_endpoint_and_credentials_from_env(s3_server, monkeypatch):
    monkeypatch.setenv("KUBENAS_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    prefix = f"env-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{s3_server.bucket}/{prefix}")
    assert isinstance(store, S3Store)
    store.put_new("x", b"1")
    assert store.get("x") == b"1"
    assert s3_server.endpoint not in store.url() and s3_server.secret_key not in store.url()


def test_wrong_secret_is_rejected(s3_server, s3_store):
    s3_store.put("secret.txt", b"x")
    bad = make_s3_store(s3_server, s3_store.prefix, secret_access_key="not-the-secret",
                        max_attempts=1)
    for op in (lambda: bad.get("secret.txt"), lambda: bad.put("y", b"y"),
               lambda: bad.put_new("z", b"z"), lambda: bad.list()):
        with pytest.raises(StorageError) as info:
            op()
        assert "not-the-secret" not in str(info.value)
    assert s3_store.list() == ["secret.txt"]  # nothing was written


def test_unknown_access_key_is_rejected(s3_server):
    bad = make_s3_store(s3_server, access_key_id="NOSUCHKEY", max_attempts=1)
    with pytest.raises(StorageError):
        bad.put("k", b"v")


def test_missing_bucket_is_a_storage_error_not_notfound(s3_server):
    store = make_s3_store(s3_server, max_attempts=1)
    store.bucket = f"no-such-bucket-{uuid.uuid4().hex[:6]}"
    # a missing bucket is a misconfiguration, never "no such key"
    with pytest.raises(StorageError) as info:
        store.get("k")
    assert not isinstance(info.value, NotFound)
    with pytest.raises(StorageError):
        store.list()


def test_create_bucket(s3_server):
    name = f"kn-{uuid.uuid4().hex[:10]}"
    store = S3Store(bucket=name, prefix="p", endpoint_url=s3_server.endpoint, create_bucket=True,
                    access_key_id=s3_server.access_key, secret_access_key=s3_server.secret_key)
    store.put_new("k", b"v")
    assert store.get("k") == b"v"
    store.ensure_bucket()  # already there: fine


def test_unreachable_endpoint_is_a_storage_error():
    from devenv.procs import free_ports

    store = S3Store(bucket="b", endpoint_url=f"http://127.0.0.1:{free_ports(1)[0]}",
                    access_key_id="a", secret_access_key="b", max_attempts=1)
    t0 = time.monotonic()
    with pytest.raises(StorageError):
        store.get("k")
    assert time.monotonic() - t0 < 10


def test_server_restart_mid_use_recovers(s3_server, s3_store):
    """Operations keep succeeding while the S3 server goes down and comes back: the client's
    retries (connection refused, 5xx) ride it out; data written before is still there."""
    s3_store.put_new("before.json", b"1")
    failures = []  # connection errors seen (and retried) by the client

    def record(caught_exception=None, **kw):
        if caught_exception is not None:
            failures.append(caught_exception)
        return None  # no opinion: the normal retry logic decides

    s3_store.client.meta.events.register_first("needs-retry.s3", record)
    stop = threading.Event()
    errors: list[BaseException] = []
    done = []

    def worker():
        i = 0
        while not stop.is_set():
            try:
                s3_store.put(f"during/{i:04d}", str(i).encode())
                assert s3_store.get(f"during/{i:04d}") == str(i).encode()
                done.append(i)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.5)
    before = len(done)
    s3_server.restart(down_seconds=1.0)
    time.sleep(0.5)
    stop.set()
    t.join(120)
    assert not errors, errors
    assert failures, "the server was never unreachable: the test proved nothing"
    assert len(done) > before  # it went on after the restart
    assert s3_store.get("before.json") == b"1"
    with pytest.raises(AlreadyExists):
        s3_store.put_new("before.json", b"2")
    assert s3_store.list("during/") == [f"during/{i:04d}" for i in done]
    with pytest.raises(NotFound):
        s3_store.get("never-written")


def test_put_new_whose_answer_was_lost_is_still_ours(s3_server, s3_store):
    """The server applies a create-only put but the answer is lost, so the client retries and
    gets 412: the writer must learn that it won (same bytes stored), not AlreadyExists."""
    forced = []

    def lose_first_answer(response, attempts, **kw):
        if attempts == 1 and response is not None and response[0].status_code == 200:
            forced.append(1)
            return 0  # "retry now", as if the connection had dropped after the server wrote
        return None

    s3_store.client.meta.events.register_first("needs-retry.s3.PutObject", lose_first_answer)
    etag = s3_store.put_new("results/t1.json", b"mine")
    assert forced == [1]
    assert s3_store.get_with_etag("results/t1.json") == (b"mine", etag)
    # a genuine loser (different bytes) still loses
    other = make_s3_store(s3_server, s3_store.prefix)
    other.client.meta.events.register_first("needs-retry.s3.PutObject", lose_first_answer)
    with pytest.raises(AlreadyExists):
        other.put_new("results/t1.json", b"theirs")
    assert s3_store.get("results/t1.json") == b"mine"
