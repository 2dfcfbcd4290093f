"""Datasets kept in object storage: fetched once into a local cache directory.

``trainer.dataset.path`` may be

* a local folder (or ``file:///abs/folder``): used in place;
* ``s3://bucket/prefix/...``: read through the experiment's store when the URL lies under
  its root, otherwise through ``kubenas.storage.open_store`` on that bucket;
* a key prefix relative to the experiment's store, e.g. ``datasets/cifar-10-batches-py/``.

Only the ``ObjectStore`` interface (``list``, ``get``) is used. A fetched copy lives at
``<cache_dir>/datasets/<hash of store url + prefix>/<last path component>/`` and is complete
once its ``.kubenas-complete`` marker exists; it is downloaded into a temporary folder and
renamed into place, so concurrent children on one node never see half a copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from kubenas.storage import ObjectStore
from kubenas.trainer.data.base import DatasetError

MARKER = ".kubenas-complete"


def default_cache_dir() -> Path:
    return Path(os.environ.get("KUBENAS_CACHE_DIR")
                or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubenas")


def resolve_dataset_path(path: Optional[str], store: Optional[ObjectStore] = None,
                         cache_dir: Optional[str | os.PathLike] = None) -> Optional[str]:
    """A local folder for ``path`` (fetching it from the store first if need be)."""
    if path is None:
        return None
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("s3://"):
        root = store.url().rstrip("/") if store is not None else None
        if root and root.startswith("s3://") and (path.rstrip("/") == root or
                                                  path.startswith(root + "/")):
            return str(fetch_prefix(store, path[len(root):].lstrip("/"), cache_dir))
        from kubenas.storage import open_store  # the storage room picks the S3 client

        bucket, _, prefix = path[len("s3://"):].partition("/")
        return str(fetch_prefix(open_store(f"s3://{bucket}"), prefix, cache_dir))
    if os.path.isdir(path):
        return path
    if store is not None and not os.path.isabs(path):
        return str(fetch_prefix(store, path, cache_dir))
    raise DatasetError(f"dataset.path: {path!r} is not a local folder"
                       + ("" if store is None else " nor a key prefix in the store"))


def fetch_prefix(store: ObjectStore, prefix: str, cache_dir=None) -> Path:
    """Copy every object under ``prefix`` into the cache (once) and return the folder."""
    prefix = prefix.strip("/")
    if not prefix:
        raise DatasetError("dataset.path: an empty key prefix would fetch the whole store")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(f"{store.url()}|{prefix}".encode()).hexdigest()[:16]
    parent = cache / "datasets" / digest
    final = parent / prefix.rsplit("/", 1)[-1]
    if (final / MARKER).is_file():
        return final
    keys = store.list(prefix + "/")
    if not keys:
        raise DatasetError(f"dataset.path: nothing in {store.url()} under {prefix + '/'}")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".fetch-"))
    try:
        for key in keys:
            rel = key[len(prefix) + 1:]
            parts = rel.split("/")
            if not rel or any(p in ("", ".", "..") for p in parts):
                raise DatasetError(f"dataset.path: refusing the key {key!r}")
            dest = tmp.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(store.get(key))
        (tmp / MARKER).write_text("\n".join(keys) + "\n")
        try:
            os.rename(tmp, final)  # only complete copies are ever renamed into place
        except OSError:
            if not (final / MARKER).is_file():  # else: lost a race to a complete copy
                raise DatasetError(f"dataset cache: {final} exists but is not a complete "
                                   "copy; remove it") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
