"""What the operator's informer caches keep of each object: only what the reconcile reads.

Objects are trimmed on arrival (list, watch event, write-through), so a cached Job or Pod
costs a few hundred bytes instead of its whole pod template (whose container arguments
carry the trial's architecture and environment). Every field a handler or the reconcile
reads stays: metadata (without ``managedFields``), of a Job's spec its limits, of a Pod's
spec its node, and of their status what ``operator/status.py`` reads (a Job's counts, times
and conditions; a Pod's phase, its PodScheduled condition and what each container waits for
or exited with: not its IPs, images, container ids or timestamps). All writes are merge
patches, so nothing is ever written back from a trimmed object. A finished Job or Pod stays
cached until its Job's TTL deletes it, so it is packed too: into its compressed JSON
(``pack_job``, ``pack_pod``; tests/operator/test_trim.py checks the reconcile observes the
same from it as from the whole objects, for every way a Job ends). A finished Trial keeps of its spec only its experiment and pool (its
architecture, a few KB each for 12,800 Trials, is read back from the API server in the one
case that needs it: a new best), and of its status only what the indexes and a finished
Trial's reconcile read (phase, reward, reason, message). Unfinished Trials, Experiments and
Deployments lose only ``managedFields`` (their spec is read: architecture, pools, the
controller template).

Every kept dict key, and each value that repeats across objects (namespace, experiment, pool,
phase, labels, owner references), is interned: ``json.loads`` makes new strings for every
watch event, and at 12,800 cached Trials those copies were half of the cache.

A finished Trial's trimmed dict is then *packed* (``pack_trial``) into one slotted object
with its labels and annotations as flat tuples: six dicts per Trial (~1.3 KB of hash tables)
become one small object, so the cache grows by a few hundred bytes per finished Trial and
the operator's memory stays flat from 1,000 to 12,800 Trials (benchmarks/operator_cache.py).
Readers get the same dict back (``unpack_trial``); anything a stub does not have the layout
for stays a dict."""

from __future__ import annotations

import json
import sys
import zlib
from typing import Any, Callable

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


def _pack_as_json(finished: Callable[[dict], bool]) -> Callable[[dict], object]:
    def pack(obj: dict):
        if not finished(obj):
            return obj
        return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1)
    return pack


# A finished Job or Pod stays cached until its Job's ttlSecondsAfterFinished deletes it (at
# paper rates, thousands of them): stored as its trimmed dict's compressed JSON (~550 bytes
# instead of ~2.5 KB of dicts and strings), parsed again only when a reconcile reads it,
# which for a finished Job is rare (its Trial is finished too).
pack_job = _pack_as_json(_job_finished)
pack_pod = _pack_as_json(_pod_finished)


def unpack_json(stored) -> dict:
    return json.loads(zlib.decompress(stored)) if isinstance(stored, bytes) else stored


_trim_finished_trial = _trim_spec(FINISHED_TRIAL_SPEC_KEPT, FINISHED_TRIAL_STATUS_KEPT,
                                  FINISHED_TRIAL_META_KEPT)


def trim_trial(obj: dict) -> dict:
    """A finished Trial without its architecture, trainer settings and conditions; others as
    they are."""
    if ((obj.get("status") or {}).get("phase")) not in C.TRIAL_TERMINAL:
        return trim_metadata(obj)
    return _trim_finished_trial(obj)


class PackedTrial:
    """A finished Trial's trimmed form, in one object (see the module docstring)."""

    __slots__ = ("api_version", "kind", "name", "namespace", "uid", "rv", "labels",
                 "annotations", "deletion", "experiment", "pool", "status")

    def __init__(self, obj: dict) -> None:
        meta, spec = obj["metadata"], obj["spec"]
        self.api_version, self.kind = obj.get("apiVersion"), obj.get("kind")
        self.name, self.namespace = meta.get("name"), meta.get("namespace")
        self.uid, self.rv = meta.get("uid"), meta.get("resourceVersion")
        self.labels = _flat(meta.get("labels"), self.name)
        self.annotations = _flat(meta.get("annotations"), self.name)
        self.deletion = meta.get("deletionTimestamp")
        self.experiment, self.pool = spec.get("experiment"), spec.get("pool")
        # phase, reward, reason, message in that order; None: no status at all
        self.status = None if "status" not in obj else tuple(
            (obj["status"] or {}).get(k, _ABSENT) for k in FINISHED_TRIAL_STATUS_KEPT)

    def as_dict(self) -> dict:
        meta = _present({"name": self.name, "namespace": self.namespace, "uid": self.uid,
                         "resourceVersion": self.rv, "labels": _mapping(self.labels),
                         "annotations": _mapping(self.annotations),
                         "deletionTimestamp": self.deletion})
        out = _present({"apiVersion": self.api_version, "kind": self.kind})
        out["metadata"] = meta
        out["spec"] = _present({"experiment": self.experiment, "pool": self.pool})
        if self.status is not None:
            out["status"] = {k: v for k, v in zip(FINISHED_TRIAL_STATUS_KEPT, self.status)
                             if v is not _ABSENT}
        return out


_ABSENT = object()
_STUB_LAYOUT = {"": {"apiVersion", "kind", "metadata", "spec", "status"},
                "metadata": set(FINISHED_TRIAL_META_KEPT), "spec": set(FINISHED_TRIAL_SPEC_KEPT),
                "status": set(FINISHED_TRIAL_STATUS_KEPT)}


def _flat(mapping, name: str):
    """{k: v} as (k, v, k, v, ...); a value equal to the Trial's name shares its string."""
    if mapping is None:
        return None
    return tuple(x for k, v in mapping.items() for x in (k, name if v == name else v))


def _mapping(flat):
    return None if flat is None else dict(zip(flat[::2], flat[1::2]))


def _present(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _packable(obj: dict) -> bool:
    """A finished Trial stub with exactly the layout ``PackedTrial`` holds, no None values."""
    if set(obj) - _STUB_LAYOUT[""] or not isinstance(obj.get("metadata"), dict) \
            or not isinstance(obj.get("spec"), dict):
        return False
    for part in ("metadata", "spec", "status"):
        value = obj.get(part) or {}
        if not isinstance(value, dict) or set(value) - _STUB_LAYOUT[part] \
                or any(v is None for v in value.values()):
            return False
    meta = obj["metadata"]
    return all(isinstance(meta.get(k, {}), dict) and all(
        isinstance(v, str) for v in (meta.get(k) or {}).values()) for k in ("labels", "annotations")) \
        and (obj.get("status") or {}).get("phase") in C.TRIAL_TERMINAL


def pack_trial(obj: dict):
    """What the Trial cache stores: a ``PackedTrial`` for a finished Trial's stub, else the dict."""
    return PackedTrial(obj) if _packable(obj) else obj


def unpack_trial(stored) -> dict:
    return stored.as_dict() if isinstance(stored, PackedTrial) else stored
