"""What a report shows, read from a store (a work directory's or a bucket's): the results,
each trial's policy version and the strategy, from the controller's own records."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kubenas.contracts import ResultRecord
from kubenas.contracts.result import cost_totals
from kubenas.controller import FINAL_KEY, StoreResultSource, read_ledger
from kubenas.storage import NotFound, ObjectStore, open_store

log = logging.getLogger("kubenas.report")


@dataclass
class Run:
    """One search as the report draws it. ``results`` in sample order."""
    name: str
    strategy: Optional[str]
    results: list[ResultRecord]
    policy_versions: dict[str, Optional[int]] = field(default_factory=dict)
    final: Optional[dict] = None   # the final phase's summary (final.json), when it ran

    @property
    def cost(self) -> dict:
        return cost_totals(self.results)

    @property
    def best(self) -> Optional[ResultRecord]:
        ok = [r for r in self.results if r.succeeded]
        return max(ok, key=lambda r: r.reward) if ok else None


def local_path(source: str) -> Optional[Path]:
    """The directory a source names (a path or file:// URL); None for a bucket."""
    if source.startswith("s3://"):
        return None
    return Path(source[len("file://"):] if source.startswith("file://") else source)


def default_report_path(source: str) -> Path:
    """report.html in the work directory; for a bucket, in the current directory."""
    path = local_path(source)
    return Path("report.html") if path is None else path / "report.html"


def open_source(source: str, endpoint_url: Optional[str] = None) -> ObjectStore:
    """The store behind ``source``: ``s3://bucket/prefix``, a store directory or URL, or a
    ``kubenas run`` work directory (its store is ``<workdir>/store``)."""
    path = local_path(source)
    if path is None:
        return open_store(source, endpoint_url=endpoint_url)
    if not path.is_dir():
        raise FileNotFoundError(f"{source}: no such work directory or store")
    return open_store(str(path / "store" if (path / "store").is_dir() else path))


def _ledger(store: ObjectStore) -> Optional[dict]:
    try:
        return read_ledger(store)
    except NotFound:   # results without a controller state (or a state mid-write): no versions
        return None


def _final(store: ObjectStore) -> Optional[dict]:
    try:
        doc = json.loads(store.get(FINAL_KEY))
    except NotFound:
        return None
    except ValueError as exc:   # a page without its final section beats no page
        log.warning("%s: unreadable (%s); the report leaves the final phase out", FINAL_KEY, exc)
        return None
    return doc if isinstance(doc, dict) else None


def load_run(store: ObjectStore, results: Optional[list[ResultRecord]] = None) -> Run:
    """The run in ``store``. ``results``: as the search credited them, when the caller has
    them; else every record, read as the controller reads them (a broken record is a failed
    result), less those for trials the search never sampled."""
    ledger = _ledger(store)
    if results is None:
        results = StoreResultSource(store).all()
        if ledger is not None:
            results = [r for r in results if r.trial_id in ledger["sampled"]]
    results = sorted(results, key=lambda r: r.trial_id)
    final = _final(store)
    if ledger is None:
        name = results[0].experiment if results else "experiment"
        return Run(name=name, strategy=None, results=results, final=final)
    versions = {tid: doc.get("policyVersion") for tid, doc in ledger["sampled"].items()}
    return Run(name=ledger["experiment"], strategy=ledger.get("strategyName"), results=results,
               policy_versions=versions, final=final)


__all__ = ["Run", "default_report_path", "load_run", "local_path", "open_source"]
