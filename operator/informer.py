"""List+watch caches and a de-duplicating work queue (the client-go pattern, small).

An ``Informer`` lists a collection, then watches it from the list's resourceVersion; on
``410 Gone`` (the version fell out of the watch window) it lists again; on a dropped
connection it resumes the watch from the last version it saw (bookmarks included). Its
cache is what reconciles read; every change calls ``on_change(event_type, obj)``.
``indexers`` group the cache by a key function (client-go's Indexer), so "the unfinished
Jobs of this pool" or "the Trials of this experiment" cost what they return, not the
cache's size.

``WorkQueue`` holds keys: a key added many times is processed once; a key added while it is
being processed is processed again afterwards; keys can be delayed and rate-limited.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import deque
from typing import Callable, Hashable, Mapping, Optional

from kubenas.operator.kube import Kube, KubeError, TransportError

log = logging.getLogger("kubenas.operator")


def _rv(obj: dict) -> Optional[int]:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


def obj_key(obj: dict) -> tuple:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name"))


class Informer:
    def __init__(self, kube: Kube, path: str, name: str,
                 on_change: Callable[[str, dict], None],
                 label_selector: Optional[str] = None,
                 watch_timeout: int = 300, stop: Optional[threading.Event] = None,
                 trim: Callable[[dict], dict] = lambda obj: obj,
                 pack: Callable[[dict], object] = lambda obj: obj,
                 unpack: Callable[[object], dict] = lambda stored: stored,
                 indexers: Optional[Mapping[str, Callable[[dict], Optional[Hashable]]]] = None) -> None:
        self.kube = kube
        self.trim = trim                  # operator/trim.py: what the cache keeps of an object
        # ... and in which form: ``pack`` may store a compact stand-in (a finished Trial as
        # a tuple), ``unpack`` gives readers the trimmed dict back
        self.pack, self.unpack = pack, unpack
        self._indexers = dict(indexers or {})   # name -> fn(obj): index value, None: not indexed
        self._index: dict = {n: {} for n in self._indexers}     # name -> {value: {keys}}
        # key -> its values under every index, in ``_indexers`` order (absent: none indexed);
        # with several indexes one shared tuple per distinct combination (``_canonical``), so
        # a finished Trial costs one dict entry here, not one per index (issue 10: operator
        # RSS flat in n); with one index the value itself (a Pod's is unique: nothing to share)
        self._values_of: dict = {}
        self._canonical: dict = {}
        self.path = path
        self.name = name
        self.on_change = on_change
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.stop_event = stop or threading.Event()
        self.synced = threading.Event()
        self._cache: dict[tuple, object] = {}   # key -> pack(trim(obj))
        self._lock = threading.RLock()
        self._resp = None
        self._thread: Optional[threading.Thread] = None
        self.relists = 0
        self.resource_version = ""

    # -- cache -------------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> Optional[dict]:
        with self._lock:
            stored = self._cache.get((namespace or "", name))
        return None if stored is None else self.unpack(stored)

    def items(self) -> list:
        with self._lock:
            stored = list(self._cache.values())
        return [self.unpack(s) for s in stored]

    def by_index(self, index: str, value: Hashable) -> list:
        """The cached objects whose ``indexers[index]`` is ``value``."""
        with self._lock:
            stored = [self._cache[k] for k in self._index[index].get(value, ())]
        return [self.unpack(s) for s in stored]

    def count(self, index: str, value: Hashable) -> int:
        with self._lock:
            return len(self._index[index].get(value, ()))

    def index_counts(self, index: str) -> dict:
        """{value: how many cached objects have it} of one index."""
        with self._lock:
            return {value: len(keys) for value, keys in self._index[index].items()}

    def _put(self, key: tuple, obj: dict, stored: object = None) -> None:
        """Cache ``obj`` (trimmed; ``stored``: already packed) and re-index it (the caller
        holds the lock)."""
        self._cache[key] = self.pack(obj) if stored is None else stored
        values = tuple(fn(obj) for fn in self._indexers.values())
        if self._indexed_values(key) == values:
            return
        self._unindex(key)
        if all(v is None for v in values):
            return
        self._values_of[key] = self._canonical.setdefault(values, values) if len(values) > 1 \
            else values[0]
        for name, value in zip(self._indexers, values):
            if value is not None:
                self._index[name].setdefault(value, set()).add(key)

    def _indexed_values(self, key: tuple) -> Optional[tuple]:
        stored = self._values_of.get(key)
        return stored if stored is None or len(self._indexers) > 1 else (stored,)

    def _unindex(self, key: tuple) -> None:
        old = self._indexed_values(key)
        if old is None:
            return
        del self._values_of[key]
        for name, value in zip(self._indexers, old):
            if value is None:
                continue
            keys = self._index[name][value]
            keys.discard(key)
            if not keys:
                del self._index[name][value]
                if len(old) > 1 and not any(value in ix for ix in self._index.values()):
                    self._forget_canonical(value)

    def _forget_canonical(self, value: Hashable) -> None:
        """Drop the shared value tuples that name ``value``, once no object has it (an
        experiment's values must not outlive it). Rare: a value's last object just left."""
        for combo in [c for c in self._canonical if value in c]:
            del self._canonical[combo]

    def _drop(self, key: tuple) -> None:
        self._cache.pop(key, None)
        self._unindex(key)

    def upsert(self, obj: dict) -> None:
        """Write-through after our own write: keep the newer of cached and ``obj``."""
        key, obj = obj_key(obj), self.trim(obj)
        with self._lock:
            if self._older_than_cached(key, obj):
                return
            self._put(key, obj)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._drop((namespace or "", name))

    def _older_than_cached(self, key: tuple, obj: dict) -> bool:
        stored = self._cache.get(key)
        if stored is None:
            return False
        old, new = _rv(self.unpack(stored)), _rv(obj)
        return old is not None and new is not None and new < old

    # -- list + watch ------------------------------------------------------------------------
    def start(self) -> "Informer":
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()   # urllib3 >= 2.3: unblocks a read in another thread
            except Exception:
                pass
            try:
                resp.close()
            except Exception:
                pass

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _list(self) -> str:
        # Packed page by page: a re-list of 12,800 Trials never holds them all as dicts.
        items, rv = self.kube.list_all(self.path, label_selector=self.label_selector,
                                       transform=lambda o: self.pack(self.trim(o)))
        fresh = {obj_key(self.unpack(s)): s for s in items}
        del items
        with self._lock:
            old = self._cache
            self._cache = {}
            self._index = {n: {} for n in self._indexers}
            self._values_of, self._canonical = {}, {}
            for key, stored in fresh.items():
                self._put(key, self.unpack(stored), stored)
        for key, stored in old.items():
            if key not in fresh:
                self._notify("DELETED", self.unpack(stored))
        for key, stored in fresh.items():
            self._notify("ADDED" if key not in old else "MODIFIED", self.unpack(stored))
        self.relists += 1
        return rv

    def _notify(self, kind: str, obj: dict) -> None:
        try:
            self.on_change(kind, obj)
        except Exception:  # a handler bug must not kill the watch
            log.exception("informer %s: handler failed", self.name)

    def _apply(self, event: dict) -> None:
        kind, obj = event.get("type"), self.trim(event.get("object") or {})
        if kind in ("ADDED", "MODIFIED"):
            key = obj_key(obj)
            with self._lock:
                if self._older_than_cached(key, obj):
                    return   # our own write-through is already newer
                self._put(key, obj)
            self._notify(kind, obj)
        elif kind == "DELETED":
            with self._lock:
                self._drop(obj_key(obj))
            self._notify(kind, obj)

    def _set_resp(self, resp) -> None:
        self._resp = resp
        if self.stop_event.is_set():
            self.stop()

    def _run(self) -> None:
        backoff = 0.5
        rv = ""
        need_list = True
        while not self.stop_event.is_set():
            try:
                if need_list:
                    rv = self._list()
                    self.resource_version = rv
                    need_list = False
                    self.synced.set()
                timeout = int(self.watch_timeout * (0.8 + 0.2 * random.random()))
                for event in self.kube.watch(self.path, rv, self.label_selector, timeout,
                                             on_response=self._set_resp):
                    if self.stop_event.is_set():
                        break
                    etype = event.get("type")
                    if etype == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            log.info("informer %s: resourceVersion %s is gone (410); re-listing",
                                     self.name, rv)
                        else:
                            log.warning("informer %s: watch error %s; re-listing", self.name, status)
                        need_list = True
                        break
                    new_rv = ((event.get("object") or {}).get("metadata") or {}).get("resourceVersion")
                    if etype != "BOOKMARK":
                        self._apply(event)
                    if new_rv:
                        rv = new_rv
                        self.resource_version = rv
                backoff = 0.5
            except KubeError as exc:
                if self.stop_event.is_set():
                    break
                if exc.gone:
                    log.info("informer %s: 410 Gone; re-listing", self.name)
                else:
                    log.warning("informer %s: %s; re-listing in %.1fs", self.name, exc, backoff)
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                need_list = True
            except (TransportError, OSError) as exc:
                if self.stop_event.is_set():
                    break
                log.warning("informer %s: %s; resuming in %.1fs", self.name, exc, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                # resume the watch from ``rv``; a 410 on resume makes it re-list
            except Exception:
                if self.stop_event.is_set():
                    break
                log.exception("informer %s: unexpected error; re-listing in %.1fs", self.name, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                need_list = True
            finally:
                self._resp = None


class WorkQueue:
    """Keys to reconcile: de-duplicated, never processed by two workers at once, delayable."""

    def __init__(self, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self._cond = threading.Condition()
        self._queue: deque = deque()      # FIFO of ready keys
        self._dirty: set = set()          # keys in _queue or to re-add after processing
        self._processing: set = set()
        self._delayed: list = []          # heap of (ready_at, seq, key)
        self._coalescing: set = set()     # keys scheduled by add_coalesced, not yet ready
        self._seq = 0
        self._failures: dict = {}
        self._shutdown = False
        self.base_delay = base_delay
        self.max_delay = max_delay

    def add(self, key: Hashable) -> None:
        with self._cond:
            if self._shutdown or key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._queue.append(key)
                self._cond.notify()

    def _schedule(self, key: Hashable, delay: float) -> None:
        """Put ``key`` in the delayed heap (the caller holds the condition)."""
        self._seq += 1
        heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, key))
        self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        if delay <= 0:
            return self.add(key)
        with self._cond:
            if not self._shutdown:
                self._schedule(key, delay)

    def add_coalesced(self, key: Hashable, delay: float) -> None:
        """``add`` at most once per ``delay``: every call until the key comes due joins the
        one already scheduled (for summaries that many events change, like counts)."""
        with self._cond:
            if self._shutdown or key in self._dirty or key in self._coalescing:
                return
            self._coalescing.add(key)
            self._schedule(key, delay)

    def add_rate_limited(self, key: Hashable) -> float:
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self.base_delay * (2 ** n), self.max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def _promote(self) -> Optional[float]:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self._coalescing.discard(key)
            if key not in self._dirty:
                self._dirty.add(key)
                if key not in self._processing:
                    self._queue.append(key)
        return (self._delayed[0][0] - now) if self._delayed else None

    def get(self, timeout: Optional[float] = None) -> Optional[Hashable]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                wait = self._promote()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._delayed)


class InformerGroup:
    """One Informer per watched namespace (or one cluster-wide), used like one Informer.

    Least-privilege installs grant the operator namespace-scoped Roles only, where a
    cluster-wide list is forbidden; then it watches each namespace on its own."""

    def __init__(self, name: str, namespaces: Optional[list], make: Callable[[Optional[str]], Informer]) -> None:
        self.name = name
        self._by_ns = {ns: make(ns) for ns in (namespaces or [None])}
        self.members = list(self._by_ns.values())

    def _for(self, namespace: str) -> Optional[Informer]:
        return self._by_ns.get(namespace) or self._by_ns.get(None)

    def get(self, namespace: str, name: str) -> Optional[dict]:
        inf = self._for(namespace)
        return inf.get(namespace, name) if inf else None

    def items(self) -> list:
        return [o for inf in self.members for o in inf.items()]

    def by_index(self, index: str, value: Hashable) -> list:
        return [o for inf in self.members for o in inf.by_index(index, value)]

    def count(self, index: str, value: Hashable) -> int:
        return sum(inf.count(index, value) for inf in self.members)

    def index_counts(self, index: str) -> dict:
        out: dict = {}
        for inf in self.members:   # one namespace each: their values do not overlap
            out.update(inf.index_counts(index))
        return out

    def upsert(self, obj: dict) -> None:
        inf = self._for(obj_key(obj)[0])
        if inf is not None:
            inf.upsert(obj)

    def forget(self, namespace: str, name: str) -> None:
        inf = self._for(namespace)
        if inf is not None:
            inf.forget(namespace, name)

    @property
    def synced(self) -> "_AllSet":
        return _AllSet([inf.synced for inf in self.members])

    def start(self) -> "InformerGroup":
        for inf in self.members:
            inf.start()
        return self

    def stop(self) -> None:
        for inf in self.members:
            inf.stop()

    def join(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for inf in self.members:
            inf.join(max(0.1, deadline - time.monotonic()))


class _AllSet:
    def __init__(self, events: list) -> None:
        self.events = events

    def is_set(self) -> bool:
        return all(e.is_set() for e in self.events)

    def wait(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for e in self.events:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not e.wait(left):
                return False
        return True
