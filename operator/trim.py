"""What the operator's informer caches keep of each object: only what the reconcile reads.

Objects are trimmed on arrival (list, watch event, write-through), so a cached Job or Pod
costs a few hundred bytes instead of its whole pod template (whose container arguments
carry the trial's architecture and environment). Every field a handler or the reconcile
reads stays: metadata (without ``managedFields``), status, and of a Job's spec its limits,
of a Pod's spec its node. All writes are merge patches, so nothing is ever written back from
a trimmed object. A finished Trial keeps of its spec only its experiment and pool (its
architecture, a few KB each for 12,800 Trials, is read back from the API server in the one
case that needs it: a new best). Unfinished Trials, Experiments and Deployments lose only
``managedFields`` (their spec is read: architecture, pools, the controller template)."""

from __future__ import annotations

from typing import Callable

from kubenas.operator import constants as C

JOB_SPEC_KEPT = ("activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
                 "completions", "parallelism")
POD_SPEC_KEPT = ("nodeName", "restartPolicy")
FINISHED_TRIAL_SPEC_KEPT = ("experiment", "pool")


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


_trim_finished_trial = _trim_spec(FINISHED_TRIAL_SPEC_KEPT)


def trim_trial(obj: dict) -> dict:
    """A finished Trial without its architecture and trainer settings; others as they are."""
    if ((obj.get("status") or {}).get("phase")) not in C.TRIAL_TERMINAL:
        return trim_metadata(obj)
    return _trim_finished_trial(obj)
