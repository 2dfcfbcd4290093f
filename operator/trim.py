"""What the operator's informer caches keep of each object: only what the reconcile reads.

Objects are trimmed on arrival (list, watch event, write-through), so a cached Job or Pod
costs a few hundred bytes instead of its whole pod template (whose container arguments
carry the trial's architecture and environment). Every field a handler or the reconcile
reads stays: metadata (without ``managedFields``), status, and of a Job's spec its limits,
of a Pod's spec its node. All writes are merge patches, so nothing is ever written back from
a trimmed object. Trials, Experiments and Deployments lose only ``managedFields`` (their
spec is read: architecture, pools, the controller template)."""

from __future__ import annotations

from typing import Callable

JOB_SPEC_KEPT = ("activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
                 "completions", "parallelism")
POD_SPEC_KEPT = ("nodeName", "restartPolicy")


def _metadata(obj: dict) -> dict:
    meta = obj.get("metadata") or {}
    return {k: v for k, v in meta.items() if k != "managedFields"}


def _shell(obj: dict) -> dict:
    return {k: obj[k] for k in ("apiVersion", "kind") if k in obj}


def trim_metadata(obj: dict) -> dict:
    """Everything but ``metadata.managedFields``."""
    if "managedFields" not in (obj.get("metadata") or {}):
        return obj
    return {**obj, "metadata": _metadata(obj)}


def _trim_spec(kept: tuple) -> Callable[[dict], dict]:
    def trim(obj: dict) -> dict:
        out = {**_shell(obj), "metadata": _metadata(obj)}
        spec = obj.get("spec") or {}
        out["spec"] = {k: spec[k] for k in kept if k in spec}
        if "status" in obj:
            out["status"] = obj["status"]
        return out
    return trim


trim_job = _trim_spec(JOB_SPEC_KEPT)
trim_pod = _trim_spec(POD_SPEC_KEPT)
