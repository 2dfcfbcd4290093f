"""An in-memory ObjectStore, under the same contract tests as the others (tests/storage/)."""

from __future__ import annotations

import threading
from typing import Optional

from kubenas.storage.base import AlreadyExists, NotFound, ObjectStore, PreconditionFailed


class MemoryStore(ObjectStore):
    """Objects in a dict of this process: nothing survives it. For a search whose state need
    not outlive the process (the NAS-Bench-201 benchmark's runs) and for tests. ETags count
    the writes, so every write of a key gives it a new one; a lock makes each call atomic
    between threads (one process only: another process cannot open it)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._data: dict[str, tuple[bytes, str]] = {}
        self._n = 0
        self._lock = threading.RLock()

    def _etag(self) -> str:
        self._n += 1
        return str(self._n)

    def put_new(self, key: str, data: bytes) -> str:
        with self._lock:
            if key in self._data:
                raise AlreadyExists(key)
            return self.put(key, data)

    def put(self, key: str, data: bytes) -> str:
        with self._lock:
            etag = self._etag()
            self._data[key] = (bytes(data), etag)
            return etag

    def put_if_match(self, key: str, data: bytes, etag: Optional[str]) -> str:
        with self._lock:
            current = self._data.get(key, (None, None))[1]
            if current != etag:
                raise PreconditionFailed(f"{key}: expected etag {etag!r}, found {current!r}")
            return self.put(key, data)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        try:
            return self._data[key]
        except KeyError:
            raise NotFound(key) from None

    def list(self, prefix: str = "", start_after: Optional[str] = None) -> list[str]:
        with self._lock:
            keys = list(self._data)
        return sorted(k for k in keys
                      if k.startswith(prefix) and (start_after is None or k > start_after))

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def url(self) -> str:
        return f"memory://{self.name}"
