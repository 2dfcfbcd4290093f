"""Result records read from the object store (the only channel from children to the search)."""

from __future__ import annotations

import logging
import time

from kubenas.contracts import ContractError, ResultRecord
from kubenas.controller.interfaces import ResultSource
from kubenas.storage import NotFound, ObjectStore

log = logging.getLogger("kubenas.controller")

PREFIX = "results/"


class StoreResultSource(ResultSource):
    """Lists ``results/`` and parses the records it has not seen yet.

    Listing is cheap next to a child's training time; each record is read once and cached.
    A record that does not parse is reported once and skipped (it cannot be applied, and
    it must not stop the search)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._cache: dict[str, ResultRecord] = {}
        self._bad: set[str] = set()

    def _read_new(self) -> None:
        for key in self.store.list(PREFIX):
            if key in self._cache or key in self._bad or not key.endswith(".json"):
                continue
            try:
                self._cache[key] = ResultRecord.from_json(self.store.get(key), where=key)
            except NotFound:
                continue
            except (ContractError, ValueError) as exc:
                log.error("skipping unreadable result record %s: %s", key, exc)
                self._bad.add(key)

    def poll(self, known: set[str], timeout: float = 0.0) -> list[ResultRecord]:
        deadline = time.monotonic() + timeout
        while True:
            self._read_new()
            new = [r for r in self._cache.values() if r.trial_id not in known]
            if new or time.monotonic() >= deadline:
                new.sort(key=lambda r: (r.timings.get("finished_at") or "", r.trial_id))
                return new
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    def all(self) -> list[ResultRecord]:
        self._read_new()
        return sorted(self._cache.values(), key=lambda r: r.trial_id)
