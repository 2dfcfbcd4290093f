"""`kubenas report WORKDIR|s3://...`: one self-contained ``report.html`` for a search.

    report_store(store, path, results=None, baseline=None) -> Path
        the page for the run in ``store`` (``results``: as the search credited them, when
        the caller has them); ``baseline``: another run's store to compare with (typically
        a ``strategy: random`` search of the same space)
    kubenas.report.data.open_source(source) -> ObjectStore   # a work dir, a store, s3://

Reads only through the storage interface, so a local work directory and a bucket are the
same to it. ``write_outputs`` (the end of every search) writes one beside the leaderboard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from kubenas.contracts import ResultRecord
from kubenas.report.data import load_run, open_source
from kubenas.report.page import render, write_report
from kubenas.storage import ObjectStore


def report_store(store: ObjectStore, path: Path, results: Optional[list[ResultRecord]] = None,
                 baseline: Optional[ObjectStore] = None) -> Path:
    run = load_run(store, results)
    return write_report(path, run, load_run(baseline) if baseline is not None else None)


__all__ = ["load_run", "open_source", "render", "report_store", "write_report"]
