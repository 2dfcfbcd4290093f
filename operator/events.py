"""Kubernetes Events (core/v1) about Trials and Experiments: ``kubectl describe trial X``."""

from __future__ import annotations

import logging
import socket
import uuid
from typing import Mapping, Optional

from kubenas.operator import constants as C
from kubenas.operator.kube import Kube, KubeError, TransportError, core_path
from kubenas.operator.status import clip, now_iso
from kubenas.operator.views import Meta

log = logging.getLogger("kubenas.operator")


class EventRecorder:
    def __init__(self, kube: Kube, component: str = C.COMPONENT) -> None:
        self.kube = kube
        self.component = component
        self.instance = socket.gethostname()

    def record(self, obj: Mapping, type_: str, reason: str, message: str) -> Optional[dict]:
        """Create an Event whose involvedObject is ``obj``; never raises (events are best effort)."""
        meta = Meta.of(obj)
        ns = meta.namespace or "default"
        now = now_iso()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.name}.{uuid.uuid4().hex[:16]}", "namespace": ns},
            "involvedObject": {"apiVersion": obj.get("apiVersion", C.API_VERSION),
                               "kind": obj.get("kind"), "name": meta.name,
                               "namespace": ns, "uid": meta.uid,
                               "resourceVersion": meta.resource_version},
            "reason": reason, "message": clip(message, 1000), "type": type_,
            "source": {"component": self.component, "host": self.instance},
            "reportingComponent": self.component, "reportingInstance": self.instance,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            return self.kube.create(core_path("events", ns), body)
        except (KubeError, TransportError) as exc:
            log.warning("could not record event %s/%s %s: %s", ns, meta.name, reason, exc)
            return None
