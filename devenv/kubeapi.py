"""A deliberately tiny Kubernetes REST client (requests + a bearer token + the dev CA).

The fake kubelet and the environment's readiness checks use it instead of the generated
``kubernetes`` client so that every request body and patch type is explicit.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import requests
import yaml


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        try:
            self.reason = json.loads(body).get("reason", "")
            msg = json.loads(body).get("message", body)
        except ValueError:
            self.reason, msg = "", body
        super().__init__(f"{method} {path}: HTTP {status}: {msg}")


class KubeAPI:
    def __init__(self, server: str, token: Optional[str], ca_file: str, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.ca_file = ca_file
        self.timeout = timeout
        self.session = requests.Session()
        # ignore REQUESTS_CA_BUNDLE & proxies from the environment: they would override
        # the dev CA (requests prefers the environment's bundle over Session.verify)
        self.session.trust_env = False
        self.session.verify = ca_file
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_kubeconfig(cls, path: str | Path, timeout: float = 30.0) -> "KubeAPI":
        """Only the shape this environment writes: one cluster with embedded CA, token user."""
        cfg = yaml.safe_load(Path(path).read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {})
        ca_file = cluster.get("certificate-authority")
        if not ca_file:
            data = base64.b64decode(cluster["certificate-authority-data"])
            fh = tempfile.NamedTemporaryFile(prefix="kubenas-ca-", suffix=".crt", delete=False)
            fh.write(data)
            fh.close()
            ca_file = fh.name
        return cls(cluster["server"], user.get("token"), ca_file, timeout)

    # ------------------------------------------------------------------ verbs
    def request(self, method: str, path: str, body=None, params=None,
                content_type: str = "application/json", ok=(200, 201, 202)) -> dict:
        headers = {"Content-Type": content_type} if body is not None else {}
        resp = self.session.request(method, self.server + path, params=params, headers=headers,
                                    data=json.dumps(body) if body is not None else None,
                                    timeout=self.timeout)
        if resp.status_code not in ok:
            raise ApiError(resp.status_code, method, path, resp.text)
        return resp.json() if resp.content else {}

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params=params or None)

    def get_text(self, path: str) -> str:
        resp = self.session.get(self.server + path, timeout=self.timeout)
        if resp.status_code != 200:
            raise ApiError(resp.status_code, "GET", path, resp.text)
        return resp.text

    def create(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body)

    def replace(self, path: str, body: dict) -> dict:
        return self.request("PUT", path, body)

    def merge_patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def patch(self, path: str, body, content_type: str = "application/merge-patch+json") -> dict:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, body: Optional[dict] = None) -> dict:
        return self.request("DELETE", path, body)

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 60,
              **params) -> Iterator[dict]:
        """Yield watch events until the server closes the stream."""
        params = dict(params, watch="1", resourceVersion=resource_version,
                      timeoutSeconds=str(timeout_seconds), allowWatchBookmarks="true")
        resp = self.session.get(self.server + path, params=params, stream=True,
                                timeout=(10, timeout_seconds + 30))
        if resp.status_code != 200:
            raise ApiError(resp.status_code, "WATCH", path, resp.text)
        try:
            for line in resp.iter_lines():
                if line:
                    yield json.loads(line)
        finally:
            resp.close()
