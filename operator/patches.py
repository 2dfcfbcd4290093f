"""The one status write of the operator and the controller: a merge patch of a custom
object's ``status`` subresource, guarded by the resourceVersion its old status was read at.

Trials (the reconciler), Experiments (the reconciler's counts and best, the controller's
``write_experiment_status``) all go through ``patch_status``; what a 409 means is the
caller's (the reconciler refreshes its cache and looks again, the controller re-reads and
redoes). Kept out of kube.py so the RBAC audit (tests/helm/test_rbac.py) sees the call.
"""

from __future__ import annotations

from typing import Mapping, Optional

from kubenas.operator.kube import Kube, custom_path


def status_patch(old: Mapping, new: Mapping, resource_version: Optional[str]) -> dict:
    """The merge patch that turns ``status`` ``old`` into ``new``: keys of ``old`` that ``new``
    lacks are sent as null (a merge patch removes only what it names), and
    ``metadata.resourceVersion`` makes the API server refuse it (409) if the object changed
    since ``old`` was read, so a write never rests on a stale read."""
    if resource_version is None:   # an unguarded write could undo someone else's
        raise ValueError("a status patch needs the resourceVersion it was read at")
    patch = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return {"metadata": {"resourceVersion": resource_version}, "status": patch}


def patch_status(kube: Kube, plural: str, namespace: Optional[str], name: Optional[str],
                 resource_version: Optional[str], old: Mapping, new: Mapping) -> dict:
    """Merge-patch a custom object's ``status`` subresource from ``old`` to ``new`` (see
    ``status_patch``); KubeError as the API server answers (``conflict``: re-read, redo)."""
    return kube.merge_patch(custom_path(plural, namespace, name, "status"),
                            status_patch(old, new, resource_version))
