"""Reading (and, for children that died without one, writing) result records.

The operator opens an Experiment's store with the credentials of its
``spec.storage.secretName`` when it may read that Secret, else with its own environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, e.g. from the same Secret mounted into
the operator's pod — the least-privilege setup, where the operator cannot read Secrets).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Mapping, Optional

from kubenas.contracts import Architecture, ContractError, ResultRecord, result_key
from kubenas.experiment import Experiment
from kubenas.operator import constants as C
from kubenas.operator.kube import Kube, KubeError, TransportError, core_path
from kubenas.storage import AlreadyExists, NotFound, ObjectStore, StorageError, open_store

log = logging.getLogger("kubenas.operator")

# (url, endpoint, region, credentials or None) -> ObjectStore
StoreFactory = Callable[[str, Optional[str], Optional[str], Optional[dict]], ObjectStore]


def default_store_factory(url: str, endpoint: Optional[str], region: Optional[str],
                          credentials: Optional[dict]) -> ObjectStore:
    opts: dict = {}
    if url.startswith("s3://"):
        opts = {"endpoint_url": endpoint, "region": region, "max_attempts": 3}
        if credentials:
            opts["access_key_id"] = credentials.get(C.ENV_ACCESS_KEY)
            opts["secret_access_key"] = credentials.get(C.ENV_SECRET_KEY)
    return open_store(url, **opts)


class ResultStoreError(Exception):
    """The result record could not be read (store unreachable, bad credentials, ...)."""


class StoreProvider:
    """One ObjectStore per (experiment store, credentials), reused across reconciles."""

    def __init__(self, kube: Optional[Kube], factory: Optional[StoreFactory] = None,
                 secret_ttl: float = 60.0) -> None:
        self.kube = kube
        self.factory = factory or default_store_factory
        self.secret_ttl = secret_ttl
        self._stores: dict = {}
        self._secrets: dict = {}
        self._lock = threading.Lock()

    def _credentials(self, namespace: str, secret: Optional[str]) -> Optional[dict]:
        if not secret or self.kube is None:
            return None
        now = time.monotonic()
        cached = self._secrets.get((namespace, secret))
        if cached and now - cached[0] < self.secret_ttl:
            return cached[1]
        creds = None
        try:
            doc = self.kube.get(core_path("secrets", namespace, secret))
            data = doc.get("data") or {}
            if C.ENV_ACCESS_KEY in data and C.ENV_SECRET_KEY in data:
                creds = {k: base64.b64decode(data[k]).decode() for k in (C.ENV_ACCESS_KEY, C.ENV_SECRET_KEY)}
        except KubeError as exc:
            if exc.status not in (403, 404):
                raise ResultStoreError(f"reading Secret {namespace}/{secret}: {exc}") from exc
            # 403: least privilege; use the operator's own environment
        except TransportError as exc:
            raise ResultStoreError(str(exc)) from exc
        self._secrets[(namespace, secret)] = (now, creds)
        return creds

    def store_for(self, namespace: str, exp: Experiment) -> ObjectStore:
        storage = exp.storage
        creds = self._credentials(namespace, storage.get("secretName"))
        fingerprint = hashlib.sha256(repr(sorted((creds or {}).items())).encode()).hexdigest()
        key = (storage.get("url"), storage.get("endpoint"), storage.get("region"), fingerprint)
        with self._lock:   # boto3 client creation is not thread-safe
            store = self._stores.get(key)
            if store is None:
                try:
                    store = self.factory(storage["url"], storage.get("endpoint"),
                                         storage.get("region"), creds)
                except Exception as exc:
                    raise ResultStoreError(f"opening {storage.get('url')}: {exc}") from exc
                self._stores[key] = store
            return store


def read_result(store: ObjectStore, trial_id: str,
                architecture: Optional[Mapping] = None) -> Optional[ResultRecord]:
    """The trial's result record, None when there is none yet; ResultStoreError when the
    store cannot be read. A record that cannot be parsed or is invalid (wrong types, reward
    out of range) is reported as a failed result with the reason — the controller applies it
    as one too — so the Trial ends instead of waiting on it forever. ``architecture``: the
    Trial's own, put in that failed result (else a placeholder)."""
    try:
        data = store.get(result_key(trial_id))
    except NotFound:
        return None
    except StorageError as exc:
        raise ResultStoreError(str(exc)) from exc
    except Exception as exc:   # credentials, endpoint errors surfacing from the client
        raise ResultStoreError(f"{type(exc).__name__}: {exc}") from exc
    try:
        record = ResultRecord.from_json(data, where=result_key(trial_id))
        if record.trial_id != trial_id:
            raise ContractError(f"{result_key(trial_id)}.trial_id: {record.trial_id!r} is not "
                                "the key's trial")
        return record
    except (ContractError, ValueError, TypeError, RecursionError) as exc:
        log.error("%s: unreadable result record, the trial counts as failed: %s",
                  result_key(trial_id), exc)
        arch = None
        try:
            arch = Architecture.from_dict(architecture) if architecture else None
        except ContractError:
            pass
        return ResultRecord.unreadable(trial_id, result_key(trial_id), exc, arch)


def write_failed_result(store: ObjectStore, experiment: str, trial_id: str,
                        architecture: Mapping, reason: str, extra: Optional[dict] = None
                        ) -> ResultRecord:
    """Record that a child died without a result (create-only: if the child's own record
    got there first, that one is returned — the first writer wins)."""
    record = ResultRecord(experiment=experiment, trial_id=trial_id,
                          architecture=Architecture.from_dict(architecture),
                          status="failed", reason=reason,
                          timings={"finished_at": datetime.now(timezone.utc).strftime(
                              "%Y-%m-%dT%H:%M:%S.%fZ")},
                          extra={"writtenBy": C.COMPONENT, **(extra or {})})
    try:
        store.put_new(result_key(trial_id), record.to_json())
        return record
    except AlreadyExists:
        existing = read_result(store, trial_id)
        return existing if existing is not None else record
    except StorageError as exc:
        raise ResultStoreError(str(exc)) from exc
