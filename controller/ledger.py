"""The loop's bookkeeping in a size that does not grow with the experiment.

``IndexSet``: the applied sample indices as sorted, disjoint ``[lo, hi)`` ranges. Results
arrive roughly in sample order, so the ranges stay few (about the number in flight) however
many trials there are; it serialises to a short flat list.

``SampledView`` / ``AppliedView``: read-only mappings ``trial_id -> record`` over the
per-trial objects (``trials/<id>.json``, ``applied/<id>.json``) for callers that want the
old dictionaries (reports, tests). Their length and membership come from the state's
counters; only reading a record touches the store.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping
from typing import Callable, Iterator, Optional

from kubenas.experiment import index_of, trial_id


class IndexSet:
    """A set of non-negative ints as sorted, disjoint, non-adjacent ``[lo, hi)`` ranges."""

    def __init__(self, ranges=()) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        for lo, hi in ranges:
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo < hi):
                raise ValueError(f"index set: bad range [{lo!r}, {hi!r})")
            if self._hi and lo <= self._hi[-1]:
                raise ValueError(f"index set: ranges must be sorted and disjoint at {lo}")
            self._lo.append(lo)
            self._hi.append(hi)
        self._count = sum(h - l for l, h in zip(self._lo, self._hi))

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        i = bisect.bisect_right(self._lo, index) - 1
        return i >= 0 and index < self._hi[i]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for lo, hi in zip(self._lo, self._hi):
            yield from range(lo, hi)

    def add(self, index: int) -> None:
        if index in self:
            return
        i = bisect.bisect_right(self._lo, index)   # ranges[i-1] starts at or before index
        joins_left = i > 0 and self._hi[i - 1] == index
        joins_right = i < len(self._lo) and self._lo[i] == index + 1
        if joins_left and joins_right:
            self._hi[i - 1] = self._hi.pop(i)
            self._lo.pop(i)
        elif joins_left:
            self._hi[i - 1] = index + 1
        elif joins_right:
            self._lo[i] = index
        else:
            self._lo.insert(i, index)
            self._hi.insert(i, index + 1)
        self._count += 1

    def lowest_missing(self) -> int:
        """The smallest index not in the set."""
        return self._hi[0] if self._lo and self._lo[0] == 0 else 0

    def ranges(self) -> list[list[int]]:
        return [[lo, hi] for lo, hi in zip(self._lo, self._hi)]


class TrialIds:
    """``trial_id in TrialIds(name, indices)``: membership of an experiment's trial ids in a
    set of indices, without building the set of ids."""

    def __init__(self, experiment: str, indices) -> None:
        self.experiment, self.indices = experiment, indices

    def __contains__(self, tid: object) -> bool:
        if not isinstance(tid, str):
            return False
        index = index_of(tid)
        return index is not None and trial_id(self.experiment, index) == tid \
            and index in self.indices


class _StoredRecords(Mapping):
    """``trial_id -> dict`` over per-trial JSON objects: ``local(key)`` first (committed,
    not yet written), then ``get(key)``."""

    def __init__(self, experiment: str, key_of: Callable[[str], str],
                 local: Callable[[str], Optional[dict]], get: Callable[[str], bytes]) -> None:
        self.experiment, self._key_of, self._local, self._get = experiment, key_of, local, get

    def _indices(self):
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._indices())

    def __iter__(self) -> Iterator[str]:
        return (trial_id(self.experiment, i) for i in self._indices())

    def __contains__(self, tid: object) -> bool:
        return tid in TrialIds(self.experiment, self._indices())

    def __getitem__(self, tid: str) -> dict:
        if tid not in self:
            raise KeyError(tid)
        key = self._key_of(tid)
        doc = self._local(key)
        return doc if doc is not None else json.loads(self._get(key))


class SampledView(_StoredRecords):
    """Every sampled trial (index < nextIndex) -> its ``trials/<id>.json`` document."""

    def __init__(self, next_index: Callable[[], int], *args) -> None:
        super().__init__(*args)
        self._next = next_index

    def _indices(self):
        return range(self._next())


class AppliedView(_StoredRecords):
    """Every applied trial -> its ``applied/<id>.json`` document."""

    def __init__(self, applied: Callable[[], IndexSet], *args) -> None:
        super().__init__(*args)
        self._applied = applied

    def _indices(self):
        return self._applied()
