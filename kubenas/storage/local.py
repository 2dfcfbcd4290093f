"""The embedded default: a directory on the local filesystem.

Create-only is an atomic ``os.link`` of a fully written temp file (fails if the name
exists), so a reader never sees a half-written object and exactly one racing writer wins.
Compare-and-swap holds an ``fcntl`` lock on a side file while it compares and renames.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from kubenas.storage.base import AlreadyExists, NotFound, ObjectStore, PreconditionFailed


def _etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class LocalStore(ObjectStore):
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        key = key.lstrip("/")
        if not key or ".." in key.split("/"):
            raise ValueError(f"storage key {key!r} is empty or escapes the store root")
        return self.root / key

    def _write_temp(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def put_new(self, key: str, data: bytes) -> str:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise AlreadyExists(key) from None
        finally:
            os.unlink(tmp)
        return _etag(data)

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        os.replace(self._write_temp(path, data), path)
        return _etag(data)

    @contextmanager
    def _locked(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".lock-{path.name}", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put_if_match(self, key: str, data: bytes, etag: Optional[str]) -> str:
        path = self._path(key)
        with self._locked(path):
            try:
                current = _etag(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != etag:
                raise PreconditionFailed(f"{key}: expected etag {etag!r}, found {current!r}")
            if etag is None:
                # create-only even against a concurrent put_new (which takes no lock)
                try:
                    return self.put_new(key, data)
                except AlreadyExists:
                    raise PreconditionFailed(f"{key}: exists") from None
            return self.put(key, data)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(key) from None
        return data, _etag(data)

    def head(self, key: str) -> str:
        return self.get_with_etag(key)[1]  # the ETag is the content's MD5: read it

    def list(self, prefix: str = "", start_after: Optional[str] = None) -> list[str]:
        # Walk only below the prefix's folder: listing results/ never visits checkpoints/.
        folder = prefix.lstrip("/").rpartition("/")[0]
        top = self._path(folder) if folder else self.root
        keys = []
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                if name.startswith((".tmp-", ".lock-")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix) and (start_after is None or rel > start_after):
                    keys.append(rel)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def url(self) -> str:
        return self.root.as_uri()
