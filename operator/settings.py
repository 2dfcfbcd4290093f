"""Operator-wide settings: what the Helm chart hands the operator in its environment
(docs/deploy.md, "What the chart hands the operator"), with keyword overrides.

The defaults for Experiments that omit ``spec.workerPools`` or ``spec.storage`` live here
too, and the controller pods get the same variables, so the operator (Jobs) and the
controller (``KubernetesExecutor``) always see the same effective Experiment.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Optional

from kubenas.operator import constants as C

# env variable -> (field, kind)
_ENV = {
    "KUBENAS_IMAGE": ("image", "str"),
    "KUBENAS_IMAGE_PULL_POLICY": ("image_pull_policy", "str"),
    "KUBENAS_IMAGE_PULL_SECRETS": ("image_pull_secrets", "list"),
    "KUBENAS_CHILD_COMMAND": ("child_command", "list"),
    "KUBENAS_CONTROLLER_SERVICE_ACCOUNT": ("controller_service_account", "str"),
    "KUBENAS_CONTROLLER_REPLICAS": ("controller_replicas", "int"),
    "KUBENAS_CONTROLLER_NODE_SELECTOR": ("controller_node_selector", "dict"),
    "KUBENAS_CONTROLLER_TOLERATIONS": ("controller_tolerations", "list"),
    "KUBENAS_CONTROLLER_AFFINITY": ("controller_affinity", "dict"),
    "KUBENAS_CONTROLLER_RESOURCES": ("controller_resources", "dict"),
    "KUBENAS_CONTROLLER_LABELS": ("controller_labels", "dict"),
    "KUBENAS_CONTROLLER_METRICS_PORT": ("controller_metrics_port", "int"),
    "KUBENAS_CONTROLLER_COMMAND": ("controller_command", "list"),
    "KUBENAS_MANAGE_CONTROLLERS": ("manage_controllers", "bool"),
    "KUBENAS_TRIAL_SERVICE_ACCOUNT": ("trial_service_account", "str"),
    "KUBENAS_POD_SECURITY_CONTEXT": ("pod_security_context", "dict"),
    "KUBENAS_CONTAINER_SECURITY_CONTEXT": ("container_security_context", "dict"),
    "KUBENAS_DEFAULT_WORKER_POOLS": ("default_worker_pools", "list"),
    "KUBENAS_DEFAULT_STORAGE_URL": ("default_storage_url", "str"),
    "KUBENAS_STORAGE_SECRET": ("storage_secret", "str"),
    "KUBENAS_STORAGE_SECRETS": ("storage_secrets", "dict"),
    "KUBENAS_ALLOWED_IMAGES": ("allowed_images", "list"),
    "KUBENAS_ALLOWED_SECRETS": ("allowed_secrets", "list"),
    "KUBENAS_ALLOWED_STORAGE": ("allowed_storage", "list"),
    "KUBENAS_S3_ENDPOINT": ("s3_endpoint", "str"),
    "AWS_DEFAULT_REGION": ("region", "str"),
    "KUBENAS_LOG_LEVEL": ("log_level", "str"),
    "KUBENAS_JOB_TTL_SECONDS": ("job_ttl_seconds", "int"),
    "KUBENAS_UNSCHEDULABLE_DEADLINE_SECONDS": ("unschedulable_deadline_seconds", "int"),
}

DEFAULT_JOB_TTL_SECONDS = 600              # finished Jobs (and their pods) expire: bounded caches
DEFAULT_UNSCHEDULABLE_DEADLINE_SECONDS = 900

# What a controller pod needs to see the Experiment exactly as the operator does.
DEFAULTS_ENV = ("KUBENAS_DEFAULT_WORKER_POOLS", "KUBENAS_DEFAULT_STORAGE_URL",
                "KUBENAS_STORAGE_SECRET", "KUBENAS_STORAGE_SECRETS", "KUBENAS_S3_ENDPOINT",
                "AWS_DEFAULT_REGION")


def _parse(name: str, kind: str, raw: str) -> Any:
    raw = raw.strip()
    if raw == "":
        return None
    if kind == "str":
        return raw
    if kind == "int":
        return int(raw)
    if kind == "bool":
        return raw.lower() in ("1", "true", "yes", "on")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: not valid JSON ({exc})") from None
    expected = list if kind == "list" else dict
    if value is None:
        return None
    if not isinstance(value, expected):
        raise ValueError(f"{name}: must be a JSON {kind}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Settings:
    image: str = C.DEFAULT_IMAGE
    image_pull_policy: Optional[str] = None
    image_pull_secrets: list = field(default_factory=list)
    child_command: list = field(default_factory=lambda: list(C.DEFAULT_CHILD_COMMAND))
    # the per-Experiment controller Deployment
    manage_controllers: bool = True
    controller_command: list = field(default_factory=lambda: list(C.DEFAULT_CHILD_COMMAND))
    controller_service_account: Optional[str] = None
    controller_replicas: int = 1
    controller_node_selector: dict = field(default_factory=dict)
    controller_tolerations: list = field(default_factory=list)
    controller_affinity: dict = field(default_factory=dict)
    controller_resources: dict = field(default_factory=dict)
    controller_labels: dict = field(default_factory=dict)
    controller_metrics_port: Optional[int] = None
    # trial and controller pods
    trial_service_account: Optional[str] = None
    pod_security_context: dict = field(default_factory=dict)
    container_security_context: dict = field(default_factory=dict)
    # defaults for Experiments
    default_worker_pools: list = field(default_factory=list)
    default_storage_url: Optional[str] = None
    storage_secret: Optional[str] = None
    # {namespace: Secret}: the S3 Secret of Experiments in that namespace (chart
    # experiments.storageSecrets); a namespace not listed uses ``storage_secret``
    storage_secrets: dict = field(default_factory=dict)
    s3_endpoint: Optional[str] = None
    region: Optional[str] = None
    # The admin's policy on what an Experiment may name (chart experiments.allowedImages /
    # allowedSecrets): a list means those plus the chart's own image / storage Secret; None
    # (an operator started without the variables: tests, development) checks nothing.
    allowed_images: Optional[list] = None
    allowed_secrets: Optional[list] = None
    # Where an explicit spec.storage.url may point (chart experiments.allowedStorage): a list
    # of s3:// prefixes, ``{namespace}`` standing for the Experiment's, besides the
    # namespace's own part of the default URL; None checks nothing.
    allowed_storage: Optional[list] = None
    log_level: Optional[str] = None
    # trial Jobs: ttlSecondsAfterFinished where the Experiment's jobSettings sets none, and
    # how long a trial pod may stay unschedulable before its trial counts as failed
    job_ttl_seconds: int = DEFAULT_JOB_TTL_SECONDS
    unschedulable_deadline_seconds: int = DEFAULT_UNSCHEDULABLE_DEADLINE_SECONDS

    def __post_init__(self) -> None:
        for namespace, secret in self.storage_secrets.items():
            if not (isinstance(secret, str) and secret):
                raise ValueError(f"KUBENAS_STORAGE_SECRETS: {namespace!r} must name a Secret, "
                                 f"got {secret!r}")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "Settings":
        environ = os.environ if environ is None else environ
        kw: dict = {}
        for name, (attr, kind) in _ENV.items():
            if name in environ:
                value = _parse(name, kind, environ[name])
                if value is not None:
                    kw[attr] = value
        known = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise TypeError(f"unknown operator setting {key!r}")
            if value is not None:
                kw[key] = value
        return cls(**kw)

    def image_policy(self) -> Optional[list]:
        """The images (exact references or shell-style patterns) ``spec.image`` may name;
        None: no policy."""
        return _policy(self.allowed_images, self.image, "KUBENAS_ALLOWED_IMAGES")

    def storage_secret_for(self, namespace: Optional[str]) -> Optional[str]:
        """The S3 Secret of Experiments in ``namespace``: the admin's per-namespace choice,
        else the chart's one Secret."""
        return (self.storage_secrets.get(namespace) if namespace else None) or self.storage_secret

    def secret_policy(self, namespace: Optional[str] = None) -> Optional[list]:
        """The Secrets ``spec.storage.secretName`` may name in ``namespace``; None: no policy.
        A namespace with its own Secret (``storage_secrets``) may name that one and the
        listed ones, never the chart's shared Secret."""
        return _policy(self.allowed_secrets, self.storage_secret_for(namespace),
                       "KUBENAS_ALLOWED_SECRETS")

    def storage_policy(self, namespace: Optional[str] = None) -> Optional[list]:
        """The s3:// prefixes (each ending in ``/``) an explicit ``spec.storage.url`` in
        ``namespace`` must lie under; None: no policy. Always the namespace's own part of the
        default URL (``<default>/<namespace>/``), so no team reaches another's state."""
        own = (f"{self.default_storage_url.rstrip('/')}/{namespace or 'default'}"
               if self.default_storage_url else None)
        listed = None if self.allowed_storage is None else [
            p.replace("{namespace}", namespace or "default") if isinstance(p, str) else p
            for p in self.allowed_storage]
        allowed = _policy(listed, own, "KUBENAS_ALLOWED_STORAGE")
        return None if allowed is None else [p.rstrip("/") + "/" for p in allowed]

    def with_(self, **kw) -> "Settings":
        return replace(self, **kw)

    def defaults_env(self) -> list:
        """EnvVars that make a controller pod apply the same Experiment defaults."""
        values = {"KUBENAS_DEFAULT_WORKER_POOLS": json.dumps(self.default_worker_pools)
                  if self.default_worker_pools else None,
                  "KUBENAS_DEFAULT_STORAGE_URL": self.default_storage_url,
                  "KUBENAS_STORAGE_SECRET": self.storage_secret,
                  "KUBENAS_STORAGE_SECRETS": json.dumps(self.storage_secrets)
                  if self.storage_secrets else None,
                  "KUBENAS_S3_ENDPOINT": self.s3_endpoint,
                  "AWS_DEFAULT_REGION": self.region}
        return [{"name": k, "value": str(v)} for k, v in values.items() if v]


def _policy(listed: Optional[list], own: Optional[str], name: str) -> Optional[list]:
    if listed is None:
        return None
    if not all(isinstance(x, str) and x for x in listed):
        raise ValueError(f"{name}: must be a JSON list of non-empty strings, got {listed!r}")
    return list(dict.fromkeys(([own] if own else []) + listed))


def default_storage_url(settings: Settings, name: str, namespace: Optional[str],
                        uid: Optional[str]) -> str:
    """``<default>/<namespace>/<name>/<uid>``: an Experiment's own prefix. Two Experiments of
    one name in two namespaces never share it, nor does a re-created one (a new UID); the
    UID is the one named by ``kubenas.dev/resume-from`` when the Experiment asks to resume.
    Without a UID (an object not read from an API server): ``<default>/<namespace>/<name>``."""
    parts = [settings.default_storage_url.rstrip("/"), namespace or "default", name]
    return "/".join(parts + ([uid] if uid else []))


def apply_defaults(name: str, spec: Mapping, settings: Optional[Settings],
                   namespace: Optional[str] = None, uid: Optional[str] = None) -> dict:
    """The Experiment's spec with the operator-wide defaults filled in where it says nothing
    (the storage prefix carries ``namespace`` and ``uid``: ``default_storage_url``)."""
    spec = copy.deepcopy(dict(spec or {}))
    if settings is None:
        return spec
    if not spec.get("workerPools") and settings.default_worker_pools:
        spec["workerPools"] = copy.deepcopy(settings.default_worker_pools)
    storage = dict(spec.get("storage") or {})
    if not storage.get("url") and settings.default_storage_url:
        storage["url"] = default_storage_url(settings, name, namespace, uid)
    secret = settings.storage_secret_for(namespace)
    if not storage.get("secretName") and secret:
        storage["secretName"] = secret
    if not storage.get("endpoint") and settings.s3_endpoint:
        storage["endpoint"] = settings.s3_endpoint
    if not storage.get("region") and settings.region:
        storage["region"] = settings.region
    if storage:
        spec["storage"] = storage
    return spec
