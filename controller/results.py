"""Result records read from the object store (the only channel from children to the search).

Also the keys of the controller's per-trial objects (``trials/``, ``applied/``), which the
loop writes and readers (leaderboards, tests) read back.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Container, Optional

from kubenas.contracts import Architecture, ContractError, ResultRecord, ResultSource
from kubenas.storage import NotFound, ObjectStore

log = logging.getLogger("kubenas.controller")

PREFIX = "results/"
TRIALS_PREFIX = "trials/"
APPLIED_PREFIX = "applied/"


def trial_key(trial_id: str) -> str:
    """The sampled architecture and its sampling metadata (create-only, the controller)."""
    return f"{TRIALS_PREFIX}{trial_id}.json"


def applied_key(trial_id: str) -> str:
    """How a result was applied: status, reward, staleness, log-ratio (create-only)."""
    return f"{APPLIED_PREFIX}{trial_id}.json"


def trial_of(key: str, prefix: str = PREFIX) -> Optional[str]:
    """The trial id a ``<prefix><trial_id>.json`` key names, None for any other key."""
    if not key.startswith(prefix) or not key.endswith(".json"):
        return None
    return key[len(prefix):-len(".json")] or None


class StoreResultSource(ResultSource):
    """Lists ``results/`` (from ``start_after`` on) and reads the records not yet applied.

    Each record is read once and held only until the loop reports it applied (``known``),
    so memory and work per poll follow what is in flight, not the experiment's size. A
    record that cannot be read, has wrong types or an invalid reward becomes a *failed*
    result for the trial its key names, with the reason: it is applied like any other
    result and never stops the search. Storage errors are not failures: they propagate."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._waiting: dict[str, ResultRecord] = {}  # trial id -> read, not yet known applied

    def _architecture(self, tid: str) -> Optional[Architecture]:
        try:
            doc = json.loads(self.store.get(trial_key(tid)))
            return Architecture.from_dict(doc["architecture"], trial_key(tid))
        except (NotFound, ValueError, KeyError, TypeError, ArithmeticError, RecursionError,
                ContractError):
            return None

    def _read(self, key: str, tid: str) -> Optional[ResultRecord]:
        try:
            data = self.store.get(key)
        except NotFound:
            return None
        return self._parse(key, tid, data)

    def _parse(self, key: str, tid: str, data: bytes) -> ResultRecord:
        try:
            record = ResultRecord.from_json(data, where=key)
            if record.trial_id != tid:
                raise ContractError(f"{key}.trial_id: {record.trial_id!r} is not the key's trial")
            return record
        except (ContractError, ValueError, TypeError, ArithmeticError, RecursionError) as exc:
            record = ResultRecord.unreadable(tid, key, exc, self._architecture(tid))
            log.error("%s: counted as a failed trial", record.reason)
            return record

    def _read_new(self, known: Container[str], start_after: Optional[str]) -> None:
        for tid in [t for t in self._waiting if t in known]:
            del self._waiting[tid]
        for key in self.store.list(PREFIX, start_after=start_after):
            tid = trial_of(key)
            if tid is None or tid in known or tid in self._waiting:
                continue
            record = self._read(key, tid)
            if record is not None:
                self._waiting[tid] = record

    def poll(self, known: Container[str], timeout: float = 0.0,
             start_after: Optional[str] = None) -> list[ResultRecord]:
        deadline = time.monotonic() + timeout
        while True:
            self._read_new(known, start_after)
            new = [r for t, r in self._waiting.items() if t not in known]
            if new or time.monotonic() >= deadline:
                new.sort(key=lambda r: (str(r.timings.get("finished_at") or ""), r.trial_id))
                return new
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    def all(self) -> list[ResultRecord]:
        """Every result in the store (a full listing: for the final outputs, not the loop)."""
        keys = [k for k in self.store.list(PREFIX) if trial_of(k)]
        records = [self._parse(k, trial_of(k), data)
                   for k, data in zip(keys, self.store.get_many(keys)) if data is not None]
        return sorted(records, key=lambda r: r.trial_id)
