"""Typed, read-only views over the raw Kubernetes objects the operator handles.

Each object is parsed once (``XView.of(obj)``) into a frozen, slotted view that exposes the
fields a handler or reconcile reads; missing fields read as None (or an empty mapping /
tuple), exactly as the ``(obj.get("metadata") or {}).get(...)`` chains they replace. Views
work on the trimmed and unpacked dicts of the informer caches (operator/trim.py), which keep
only some fields. ``raw`` is the object itself: builders, events and merge patches take it.
Writes are never made from a view, only from what the reconcile decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from kubenas.contracts import names
from kubenas.operator import constants as C

_EMPTY: Mapping = {}


def _part(obj: Mapping, key: str) -> Mapping:
    """``obj[key]`` as a mapping: {} when missing or null."""
    return obj.get(key) or _EMPTY


@dataclass(frozen=True, slots=True)
class Meta:
    """An object's ``metadata``."""
    name: Optional[str]
    namespace: Optional[str]
    uid: Optional[str]
    resource_version: Optional[str]
    generation: Optional[int]
    labels: Mapping
    annotations: Mapping
    owner_references: tuple
    creation_timestamp: Optional[str]
    deletion_timestamp: Optional[str]

    @classmethod
    def of(cls, obj: Mapping) -> "Meta":
        meta = _part(obj, "metadata")
        return cls(name=meta.get("name"), namespace=meta.get("namespace"), uid=meta.get("uid"),
                   resource_version=meta.get("resourceVersion"),
                   generation=meta.get("generation"), labels=_part(meta, "labels"),
                   annotations=_part(meta, "annotations"),
                   owner_references=tuple(meta.get("ownerReferences") or ()),
                   creation_timestamp=meta.get("creationTimestamp"),
                   deletion_timestamp=meta.get("deletionTimestamp"))

    @property
    def ns(self) -> str:
        """The namespace, "" for a cluster-wide or unset one (the caches' key)."""
        return self.namespace or ""

    @property
    def deleting(self) -> bool:
        return bool(self.deletion_timestamp)

    def owners(self, kind: str) -> list:
        return [ref for ref in self.owner_references if ref.get("kind") == kind]

    def owned_by(self, kind: str, name: Optional[str] = None, uid: Optional[str] = None) -> bool:
        """An ownerReference of ``kind`` (and ``name`` / ``uid``, when given)."""
        return any((name is None or ref.get("name") == name)
                   and (uid is None or ref.get("uid") == uid) for ref in self.owners(kind))


@dataclass(frozen=True, slots=True)
class ObjectView:
    """An object's metadata, spec and status, parsed once; ``raw`` is the object itself."""
    raw: Mapping
    meta: Meta
    spec: Mapping
    status: Mapping          # the current status document ({} when there is none)

    @classmethod
    def of(cls, obj: Mapping):
        return cls(raw=obj, meta=Meta.of(obj), spec=_part(obj, "spec"), status=_part(obj, "status"))

    @property
    def name(self) -> Optional[str]:
        return self.meta.name

    @property
    def phase(self) -> Optional[str]:
        return self.status.get("phase")

    def _condition(self, type_: str) -> Optional[Mapping]:
        for cond in self.status.get("conditions") or []:
            if cond.get("type") == type_:
                return cond
        return None


@dataclass(frozen=True, slots=True)
class TrialView(ObjectView):
    @property
    def experiment(self) -> Optional[str]:
        return self.spec.get("experiment")

    @property
    def pool(self) -> Optional[str]:
        return self.spec.get("pool")

    @property
    def architecture(self) -> Any:
        """None in a finished Trial's cached stub (trim.py drops it)."""
        return self.spec.get("architecture")

    @property
    def terminal(self) -> bool:
        return self.phase in C.TRIAL_TERMINAL

    @property
    def reason(self) -> Optional[str]:
        return self.status.get("reason")

    @property
    def message(self) -> Optional[str]:
        return self.status.get("message")

    @property
    def reward(self) -> Any:
        return self.status.get("reward")

    @property
    def searching(self) -> bool:
        """A search Trial (not one of the final phase's): counted toward the budget and the
        best. Trials made before the stage label existed are search Trials."""
        return self.meta.labels.get(C.LABEL_STAGE, names.STAGE_SEARCH) == names.STAGE_SEARCH

    @property
    def job_name(self) -> Optional[str]:
        """``status.jobName``: set once its Job was made."""
        return self.status.get("jobName")


@dataclass(frozen=True, slots=True)
class ExperimentView(ObjectView):
    @property
    def stop_annotated(self) -> bool:
        """``kubenas.dev/stop: "true"`` (any case)."""
        return str(self.meta.annotations.get(C.ANNOTATION_STOP, "")).lower() == "true"

    def stopping(self, status: Optional[Mapping] = None) -> Optional[str]:
        """Why its Trials must stop (None: they may run); ``status``: judge by this status
        instead of the current one (a status about to be written)."""
        if self.meta.deleting:
            return "is being deleted"
        phase = (self.status if status is None else status).get("phase")
        if phase in C.EXPERIMENT_TERMINAL:
            return f"is {phase}"
        if self.stop_annotated:
            return f"was asked to stop ({C.ANNOTATION_STOP}=true)"
        return None

    @property
    def controller_options(self) -> dict:
        """``spec.controller`` (a copy: {} when unset)."""
        return dict(self.spec.get("controller") or {})


@dataclass(frozen=True, slots=True)
class JobView(ObjectView):
    def condition(self, type_: str) -> Optional[Mapping]:
        """The Job's condition ``type_`` if it is True (Complete, Failed), else None."""
        cond = self._condition(type_)
        return cond if cond is not None and cond.get("status") == "True" else None

    def count(self, key: str) -> Any:
        """``status.active`` / ``succeeded`` / ``failed`` (0 when unset)."""
        return self.status.get(key) or 0

    @property
    def start_time(self) -> Optional[str]:
        return self.status.get("startTime")

    @property
    def completion_time(self) -> Optional[str]:
        return self.status.get("completionTime")

    @property
    def active_deadline_seconds(self) -> Any:
        return self.spec.get("activeDeadlineSeconds")


@dataclass(frozen=True, slots=True)
class PodView(ObjectView):
    @property
    def node_name(self) -> Optional[str]:
        return self.spec.get("nodeName")

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def container_statuses(self) -> list:
        return self.status.get("containerStatuses") or []

    def condition(self, type_: str) -> Optional[Mapping]:
        """The pod's condition ``type_`` (PodScheduled), whatever its status."""
        return self._condition(type_)
