"""What the operator's informer caches keep of each object: only what the reconcile reads.

Objects are trimmed on arrival (list, watch event, write-through). Every field a handler or
the reconcile reads stays: metadata (without ``managedFields``), of a Job's spec its limits
(not its pod template, whose container arguments carry the trial's architecture), of a
Pod's spec its node, and of their status what ``operator/status.py`` reads (a Job's counts,
times and conditions; a Pod's phase, its PodScheduled condition and what each container
waits for or exited with: not its IPs, images, container ids or timestamps). A finished
Trial keeps of its spec only its experiment and pool (its architecture is read back from
the API server in the one case that needs it: a new best), and of its status what the
indexes and a finished Trial's reconcile read (phase, reward, reason, message). Unfinished
Trials, Experiments and Deployments lose only ``managedFields`` (their spec is read:
architecture, pools, the controller template). All writes are merge patches, so nothing is
ever written back from a trimmed object.

Every kept dict key, and each value that repeats across objects (namespace, experiment, pool,
phase, labels, owner references), is interned: ``json.loads`` makes new strings for every
watch event.

A finished object is then *packed* (``JsonPacker``: ``TRIALS``, ``JOBS``, ``PODS``): stored
as its trimmed JSON, deflated against a preset dictionary, ~100 bytes. Finished Trials stay
for the Experiment's life and finished Jobs and Pods until their TTL, so these are what
grows with n; benchmarks/operator_cache.py measures each cache, tests/operator/test_trim.py
checks the reconcile observes every way a Job ends the same from the cache as from the
whole objects."""

from __future__ import annotations

import json
import sys
import threading
import zlib
from typing import Any, Callable, Optional

from kubenas.operator import constants as C

JOB_SPEC_KEPT = ("activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
                 "completions", "parallelism")
JOB_STATUS_KEPT = ("conditions", "active", "succeeded", "failed", "startTime", "completionTime")
POD_SPEC_KEPT = ("nodeName", "restartPolicy")
POD_STATUS_KEPT = ("phase", "reason", "message", "conditions", "containerStatuses")
POD_CONDITIONS_KEPT = ("PodScheduled",)        # the only pod condition operator/status.py reads
CONDITION_KEPT = ("type", "status", "reason", "message", "lastTransitionTime")
CONTAINER_STATUS_KEPT = ("name", "state", "lastState")
CONTAINER_STATE_KEPT = {"waiting": ("reason", "message"), "running": (),
                        "terminated": ("reason", "exitCode", "message")}
FINISHED_TRIAL_SPEC_KEPT = ("experiment", "pool")
FINISHED_TRIAL_META_KEPT = ("name", "namespace", "uid", "resourceVersion", "labels",
                            "annotations", "deletionTimestamp")   # owners: only unfinished read
FINISHED_TRIAL_STATUS_KEPT = ("phase", "reward", "reason", "message")
# values shared by many objects (a name, uid or resourceVersion is unique: not worth interning)
_SHARED_VALUES = frozenset({"namespace", "experiment", "pool", "phase", "reason", "apiVersion",
                            "kind", "type", "status", "nodeName", "restartPolicy", "message"})
# label and annotation values unique to one object: interning them only grows the intern table
_UNIQUE_LABELS = frozenset({C.LABEL_TRIAL, C.ANNOTATION_TRIAL, "controller-uid", "job-name"})


def _interned(obj: Any, shared: bool = False) -> Any:
    """A copy of ``obj`` whose dict keys (and, under a shared key, short strings) are interned."""
    if isinstance(obj, dict):
        return {sys.intern(k): _interned(v, k in _SHARED_VALUES) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_interned(v, shared) for v in obj]
    if shared and isinstance(obj, str) and len(obj) <= 64:
        return sys.intern(obj)
    return obj


def _metadata(obj: dict, kept: tuple = ()) -> dict:
    meta = obj.get("metadata") or {}
    if kept:
        out = {k: meta[k] for k in kept if k in meta}
    else:
        out = {k: v for k, v in meta.items() if k != "managedFields"}
    for key in ("labels", "annotations"):   # their values repeat across objects too
        if key in out:
            out[key] = {sys.intern(k): sys.intern(v) if isinstance(v, str) and len(v) <= 64
                        and k not in _UNIQUE_LABELS else v for k, v in out[key].items()}
    if "ownerReferences" in out:
        out["ownerReferences"] = [_interned(r, True) for r in out["ownerReferences"]]
    return out


def _shell(obj: dict) -> dict:
    return {k: sys.intern(obj[k]) for k in ("apiVersion", "kind") if k in obj}


def trim_metadata(obj: dict) -> dict:
    """Everything but ``metadata.managedFields``."""
    if "managedFields" not in (obj.get("metadata") or {}):
        return obj
    return {**obj, "metadata": _metadata(obj)}


def _trim_spec(kept: tuple, status_kept: tuple = (), meta_kept: tuple = (),
               status_trim: Callable[[dict], dict] = lambda status: status) -> Callable[[dict], dict]:
    def trim(obj: dict) -> dict:
        out = {**_shell(obj), "metadata": _metadata(obj, meta_kept)}
        spec = obj.get("spec") or {}
        out["spec"] = _interned({k: spec[k] for k in kept if k in spec})
        if "status" in obj:
            status = obj["status"] or {}
            out["status"] = _interned(status_trim(
                {k: status[k] for k in status_kept if k in status} if status_kept else status))
        return out
    return trim


def _kept(d, keys) -> dict:
    return {k: d[k] for k in keys if k in d} if isinstance(d, dict) else d


def _conditions(conditions, types: tuple = ()) -> list:
    return [_kept(c, CONDITION_KEPT) for c in conditions or []
            if not types or (isinstance(c, dict) and c.get("type") in types)]


def _container_state(state) -> dict:
    if not isinstance(state, dict):
        return state
    return {k: _kept(v, CONTAINER_STATE_KEPT[k]) for k, v in state.items() if k in CONTAINER_STATE_KEPT}


def _job_status(status: dict) -> dict:
    if "conditions" in status:
        status["conditions"] = _conditions(status["conditions"])
    return status


def _pod_status(status: dict) -> dict:
    """Of a pod's status only the phase, its PodScheduled condition and what each container
    is waiting for or exited with: its IPs, images, container ids and timestamps go."""
    if "conditions" in status:
        status["conditions"] = _conditions(status["conditions"], POD_CONDITIONS_KEPT)
    if "containerStatuses" in status:
        status["containerStatuses"] = [
            {k: _container_state(v) if k != "name" else v for k, v in _kept(cs, CONTAINER_STATUS_KEPT).items()}
            if isinstance(cs, dict) else cs for cs in status["containerStatuses"] or []]
    return status


trim_job = _trim_spec(JOB_SPEC_KEPT, JOB_STATUS_KEPT, status_trim=_job_status)
trim_pod = _trim_spec(POD_SPEC_KEPT, POD_STATUS_KEPT, status_trim=_pod_status)


def _job_finished(obj: dict) -> bool:
    return any(isinstance(c, dict) and c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in ((obj.get("status") or {}).get("conditions") or []))


def _pod_finished(obj: dict) -> bool:
    return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _trial_finished(obj: dict) -> bool:
    return (obj.get("status") or {}).get("phase") in C.TRIAL_TERMINAL


_trim_finished_trial = _trim_spec(FINISHED_TRIAL_SPEC_KEPT, FINISHED_TRIAL_STATUS_KEPT,
                                  FINISHED_TRIAL_META_KEPT)


def trim_trial(obj: dict) -> dict:
    """A finished Trial without its architecture, trainer settings and conditions; others as
    they are."""
    if ((obj.get("status") or {}).get("phase")) not in C.TRIAL_TERMINAL:
        return trim_metadata(obj)
    return _trim_finished_trial(obj)


class JsonPacker:
    """What a cache stores of a finished object: its trimmed dict's compact JSON, deflated
    against the JSON of the first object this packer packed (a zlib preset dictionary).
    Finished objects of one kind share nearly every byte but their names, uids and times,
    so each one costs ~100 bytes instead of a few hundred (plain zlib) or ~1-2 KB (dicts);
    the dictionary lives as long as the process, as the cache does. ``unpack`` gives the
    trimmed dict back; an unfinished object is stored as its dict (its reconcile reads it)."""

    WBITS = -15    # raw deflate: no header or checksum per object

    def __init__(self, finished: Callable[[dict], bool]) -> None:
        self.finished = finished
        self._zdict: Optional[bytes] = None
        self._lock = threading.Lock()

    def pack(self, obj: dict):
        if not self.finished(obj):
            return obj
        text = json.dumps(obj, separators=(",", ":")).encode()
        with self._lock:
            if self._zdict is None:
                self._zdict = text
        deflate = zlib.compressobj(1, zlib.DEFLATED, self.WBITS, 9, zlib.Z_DEFAULT_STRATEGY,
                                   self._zdict)
        return deflate.compress(text) + deflate.flush()

    def unpack(self, stored) -> dict:
        if not isinstance(stored, bytes):
            return stored
        inflate = zlib.decompressobj(self.WBITS, self._zdict)
        return json.loads(inflate.decompress(stored) + inflate.flush())


# One packer per kind of object (the Trial, Job and Pod caches; shared by their informers in
# every namespace): a finished Trial stays cached for good (its phase and reward feed the
# Experiment's counts and best), a finished Job or Pod until its Job's TTL deletes it.
TRIALS, JOBS, PODS = JsonPacker(_trial_finished), JsonPacker(_job_finished), JsonPacker(_pod_finished)
