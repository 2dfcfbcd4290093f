"""Object storage behind one small interface.

Everything the system persists goes through this: result records (create-only), trainer
checkpoints (overwrite), the controller's state (compare-and-swap on an ETag), datasets.
Keys are '/'-separated relative paths; a store is rooted at a prefix.
"""

from __future__ import annotations

import abc
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional

# Readers of every trial's object (final outputs, reports) fetch this many at once: at
# 12,800 trials one GET after another is minutes of round trips, in parallel seconds.
READ_WORKERS = 16


class StorageError(RuntimeError):
    """The store could not be reached or answered with an unexpected error (retryable)."""


class NotFound(KeyError):
    """No object under that key."""


class AlreadyExists(RuntimeError):
    """A create-only put found an object already there (the first writer won)."""


class PreconditionFailed(RuntimeError):
    """A compare-and-swap put lost: the object changed since its ETag was read."""


class ObjectStore(abc.ABC):
    """The storage interface. ``etag`` values are opaque strings."""

    @abc.abstractmethod
    def put_new(self, key: str, data: bytes) -> str:
        """Create ``key`` only if absent; return its ETag. Raise AlreadyExists otherwise."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> str:
        """Create or overwrite ``key``; return its ETag."""

    @abc.abstractmethod
    def put_if_match(self, key: str, data: bytes, etag: Optional[str]) -> str:
        """Compare-and-swap: write only if the current ETag is ``etag`` (None: only if absent).

        Raise PreconditionFailed when the object changed (or, for None, exists)."""

    @abc.abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Return (data, etag). Raise NotFound."""

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_many(self, keys: Iterable[str]) -> list[Optional[bytes]]:
        """The objects under ``keys``, in order, fetched ``READ_WORKERS`` at a time; None
        where a key has no object. Any other error propagates."""
        def one(key: str) -> Optional[bytes]:
            try:
                return self.get(key)
            except NotFound:
                return None

        keys = list(keys)
        if len(keys) <= 1:
            return [one(k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(keys))) as pool:
            return list(pool.map(one, keys))

    def head(self, key: str) -> str:
        """The ETag of ``key`` without transferring its body (S3 HEAD). Raise NotFound."""
        return self.get_with_etag(key)[1]

    @abc.abstractmethod
    def list(self, prefix: str = "", start_after: Optional[str] = None) -> list[str]:
        """All keys starting with ``prefix``, sorted; with ``start_after``, only the keys
        that sort after it (S3's StartAfter), so a reader that knows where it left off
        touches only what is newer."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
            return True
        except NotFound:
            return False

    @abc.abstractmethod
    def url(self) -> str:
        """A URL naming this store's root (file:///... or s3://bucket/prefix), no secrets."""


def open_store(url: str, **options) -> ObjectStore:
    """Open a store from a URL: ``file:///abs/dir``, a plain path, or ``s3://bucket/prefix``.

    S3 options (endpoint_url, region) come from keyword arguments or the environment
    (KUBENAS_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); never from the URL.
    """
    if url.startswith("s3://"):
        from kubenas.storage.s3 import S3Store  # boto3 only loaded when asked for

        bucket, _, prefix = url[len("s3://"):].partition("/")
        return S3Store(bucket=bucket, prefix=prefix, **options)
    from kubenas.storage.local import LocalStore

    path = url[len("file://"):] if url.startswith("file://") else url
    return LocalStore(path)
