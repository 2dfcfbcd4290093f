"""A small JSON-in, JSON-out layer over the kubernetes client's authenticated transport.

Everything the operator reads or writes is a plain dict (the API server's JSON), so the
same code handles Experiments, Trials, Jobs, Pods and Events, and watches are read line by
line from a response the operator can shut down to stop promptly.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable, Iterable, Iterator, Optional
from urllib.parse import quote

from kubenas.operator import constants as C

log = logging.getLogger("kubenas.operator")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeError(Exception):
    """A non-2xx answer from the API server (``status``, ``reason``, ``message``)."""

    def __init__(self, status: int, reason: str = "", message: str = "", body: Any = None):
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body
        super().__init__(f"{status} {reason}: {message}".strip())

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


class TransportError(Exception):
    """The API server could not be reached (retryable)."""


def make_api_client(kubeconfig: Optional[str] = None, context: Optional[str] = None,
                    pool_size: int = 32):
    """An ApiClient from a kubeconfig file (or $KUBECONFIG / ~/.kube/config), else in-cluster."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context,
                                client_configuration=cfg, persist_config=False)
    except config.ConfigException:
        if kubeconfig:
            raise
        config.load_incluster_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") if i else p for i, p in enumerate(parts))


def custom_path(plural: str, namespace: Optional[str] = None, name: Optional[str] = None,
                sub: Optional[str] = None) -> str:
    base = f"/apis/{C.GROUP}/{C.VERSION}"
    path = f"{base}/namespaces/{quote(namespace, safe='')}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    if sub:
        path += f"/{sub}"
    return path


def jobs_path(namespace: Optional[str] = None, name: Optional[str] = None) -> str:
    path = f"/apis/batch/v1/namespaces/{quote(namespace, safe='')}/jobs" if namespace else "/apis/batch/v1/jobs"
    return f"{path}/{quote(name, safe='')}" if name else path


def deployments_path(namespace: Optional[str] = None, name: Optional[str] = None) -> str:
    path = (f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/deployments" if namespace
            else "/apis/apps/v1/deployments")
    return f"{path}/{quote(name, safe='')}" if name else path


def core_path(plural: str, namespace: Optional[str] = None, name: Optional[str] = None) -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}" if namespace else f"/api/v1/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


class Kube:
    """Raw REST over a kubernetes ``ApiClient`` (auth, TLS and kubeconfig handled by it)."""

    def __init__(self, api_client=None, kubeconfig: Optional[str] = None) -> None:
        self.api_client = api_client if api_client is not None else make_api_client(kubeconfig)
        self._lock = threading.Lock()

    # -- transport ---------------------------------------------------------------------------
    def _send(self, method: str, path: str, query: Optional[Iterable[tuple]] = None,
              body: Any = None, content_type: Optional[str] = None, timeout: Any = 30):
        ac = self.api_client
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        q = [(k, v) for k, v in (query or []) if v is not None]
        q = [(k, ("true" if v is True else "false" if v is False else v)) for k, v in q]
        method_, url, headers, body_, _post = ac.param_serialize(
            method=method, resource_path=path, query_params=q or None, header_params=headers,
            body=body, auth_settings=["BearerToken"])
        try:
            resp = ac.call_api(method_, url, header_params=headers, body=body_,
                               _request_timeout=timeout)
        except Exception as exc:  # urllib3 / socket errors
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        return resp

    @staticmethod
    def _raise_for(resp, method: str, path: str) -> None:
        if 200 <= resp.status <= 299:
            return
        data = resp.read()
        try:
            doc = json.loads(data)
        except (ValueError, TypeError):
            doc = {"message": (data or b"")[:500].decode(errors="replace")}
        raise KubeError(resp.status, doc.get("reason") or resp.reason or "",
                        doc.get("message") or f"{method} {path}", doc)

    def request(self, method: str, path: str, query: Optional[Iterable[tuple]] = None,
                body: Any = None, content_type: Optional[str] = None, timeout: Any = 30) -> dict:
        resp = self._send(method, path, query, body, content_type, timeout)
        self._raise_for(resp, method, path)
        try:
            data = resp.read()
        except Exception as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        return json.loads(data) if data else {}

    def get(self, path: str, **query) -> dict:
        return self.request("GET", path, list(query.items()))

    def create(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, patch: dict) -> dict:
        return self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    def json_patch(self, path: str, ops: list) -> dict:
        return self.request("PATCH", path, body=ops, content_type=JSON_PATCH)

    def replace(self, path: str, body: dict) -> dict:
        return self.request("PUT", path, body=body)

    def delete(self, path: str, propagation: Optional[str] = "Background",
               preconditions_uid: Optional[str] = None) -> dict:
        body: dict = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            body["propagationPolicy"] = propagation
        if preconditions_uid:
            body["preconditions"] = {"uid": preconditions_uid}
        return self.request("DELETE", path, body=body)

    def list_all(self, path: str, label_selector: Optional[str] = None,
                 field_selector: Optional[str] = None, limit: int = 500,
                 transform: Optional[Callable[[dict], Any]] = None) -> tuple[list, str]:
        """All items (paginated) and the list's resourceVersion. ``transform`` is applied to
        each item as its page arrives, so a caller that keeps a little of each object (the
        informers' trim) never holds more than one page of whole objects."""
        items: list = []
        cont = None
        while True:
            doc = self.request("GET", path, [("labelSelector", label_selector),
                                             ("fieldSelector", field_selector),
                                             ("limit", str(limit)), ("continue", cont)])
            page = doc.pop("items", None) or []
            items.extend(map(transform, page) if transform else page)
            del page
            meta = doc.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, meta.get("resourceVersion") or ""

    def watch(self, path: str, resource_version: str, label_selector: Optional[str] = None,
              timeout_seconds: int = 300, on_response=None) -> Iterator[dict]:
        """Yield watch events (dicts with ``type`` and ``object``) until the server ends the
        watch. ``on_response(resp)`` receives the live response so another thread can shut it
        down."""
        query = [("watch", "true"), ("resourceVersion", resource_version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(timeout_seconds)),
                 ("labelSelector", label_selector)]
        resp = self._send("GET", path, query, timeout=(10, timeout_seconds + 30))
        self._raise_for(resp, "WATCH", path)
        raw = resp.response
        if on_response is not None:
            on_response(raw)
        try:
            from kubernetes.watch.watch import iter_resp_lines

            for line in iter_resp_lines(raw):
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    log.warning("watch %s: skipping an unparsable line", path)
        except Exception as exc:
            raise TransportError(f"watch {path}: {type(exc).__name__}: {exc}") from exc
        finally:
            try:
                raw.release_conn()
            except Exception:
                pass
