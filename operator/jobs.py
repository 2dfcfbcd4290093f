"""The Job of a Trial: a pure function of the Trial and its Experiment.

One Trial -> exactly one ``batch/v1`` Job named ``job_name(trial)`` (deterministic, so a
restarted operator finds, never duplicates, it). The Job runs::

    <child command, default: kubenas> train-child --experiment EXP --trial-id TRIAL \
        --architecture-json JSON --trainer-config-json JSON --store s3://bucket/prefix

with the store's endpoint in ``KUBENAS_S3_ENDPOINT`` and the credentials taken by
``secretKeyRef`` from the Experiment's ``spec.storage.secretName`` (never inline), placed on
its worker pool (nodeSelector, tolerations, affinity, ``nvidia.com/gpu`` limits, cpu/memory
requests), locked down (non-root, read-only root filesystem with an emptyDir on /tmp, no
privilege escalation, all capabilities dropped, no service-account token), and owned by
its Trial (which the Experiment owns) so deleting the Experiment deletes everything.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Mapping, Optional, Sequence

from kubenas.contracts import Architecture
from kubenas.experiment import Experiment, WorkerPool
from kubenas.operator import constants as C
from kubenas.operator.naming import job_name, label_value
from kubenas.operator.settings import Settings
from kubenas.operator.validation import parse_experiment_object, parse_trial_object
from kubenas.operator.views import ExperimentView, TrialView

DEFAULT_BACKOFF_LIMIT = 2       # the child resumes from its checkpoint, so a retry is cheap


def owner_reference(obj: Mapping[str, Any], controller: bool = True) -> dict:
    """An ownerReference to ``obj`` (controller, blocking its foreground deletion)."""
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", C.API_VERSION), "kind": obj["kind"],
            "name": meta["name"], "uid": meta["uid"], "controller": controller,
            "blockOwnerDeletion": True}


def common_labels(experiment: str, component: str) -> dict:
    return {
        C.LABEL_NAME: C.APP_NAME,
        C.LABEL_INSTANCE: label_value(experiment),
        C.LABEL_COMPONENT: component,
        C.LABEL_MANAGED_BY: C.MANAGED_BY,
        C.LABEL_PART_OF: C.APP_NAME,
        C.LABEL_EXPERIMENT: label_value(experiment),
    }


def trial_labels(experiment: str, trial: str, pool: str) -> dict:
    labels = common_labels(experiment, "trial")
    labels[C.LABEL_TRIAL] = label_value(trial)
    labels[C.LABEL_POOL] = label_value(pool)
    return labels


def store_url(exp: Experiment) -> str:
    """The experiment's store root (``spec.storage.url`` as written; results live under it)."""
    return exp.storage["url"]


def trainer_config(trial: Mapping[str, Any], exp: Experiment) -> dict:
    """The Trial's own trainer settings (copied from the Experiment when it was submitted),
    else the Experiment's."""
    cfg = TrialView.of(trial).spec.get("trainer")
    return copy.deepcopy(dict(cfg if cfg is not None else exp.trainer))


def child_args(trial_name: str, exp: Experiment, arch: Architecture, trainer: Mapping) -> list:
    return [
        "train-child",
        "--experiment", exp.name,
        "--trial-id", trial_name,
        "--architecture-json", json.dumps(arch.to_dict(), separators=(",", ":"), sort_keys=True),
        "--trainer-config-json", json.dumps(dict(trainer), separators=(",", ":"), sort_keys=True),
        "--store", store_url(exp),
    ]


def child_env(exp: Experiment) -> list:
    env = [
        # A read-only root filesystem: everything that caches writes under /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "KUBENAS_CACHE_DIR", "value": "/tmp/kubenas-cache"},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    storage = exp.storage
    if storage.get("endpoint"):
        env.append({"name": C.ENV_S3_ENDPOINT, "value": str(storage["endpoint"])})
    if storage.get("region"):
        env.append({"name": C.ENV_REGION, "value": str(storage["region"])})
    secret = storage.get("secretName")
    if secret:
        for key in (C.ENV_ACCESS_KEY, C.ENV_SECRET_KEY):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return env


def _quantity(value: Any) -> str:
    return str(value)


def child_resources(pool: WorkerPool) -> dict:
    requests: dict = {}
    limits: dict = {}
    res = pool.resources or {}
    if res.get("cpu") is not None:
        requests["cpu"] = _quantity(res["cpu"])
    if res.get("memory") is not None:
        requests["memory"] = _quantity(res["memory"])
        limits["memory"] = _quantity(res["memory"])   # a runaway child is OOMKilled, not its neighbours
    if pool.gpus_per_trial > 0:
        limits[C.GPU_RESOURCE] = str(pool.gpus_per_trial)
    out: dict = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def pod_security_context(settings: Optional[Settings]) -> dict:
    ctx = {"runAsNonRoot": True, "runAsUser": C.RUN_AS_USER, "runAsGroup": C.RUN_AS_USER,
           "fsGroup": C.RUN_AS_USER, "seccompProfile": {"type": "RuntimeDefault"}}
    if settings is not None and settings.pod_security_context:
        ctx.update(copy.deepcopy(settings.pod_security_context))
    return ctx


def container_security_context(settings: Optional[Settings]) -> dict:
    ctx = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
           "readOnlyRootFilesystem": True, "privileged": False, "capabilities": {"drop": ["ALL"]}}
    if settings is not None and settings.container_security_context:
        ctx.update(copy.deepcopy(settings.container_security_context))
    return ctx


def image_of(experiment: Mapping[str, Any], image: Optional[str],
             settings: Optional[Settings]) -> str:
    return (ExperimentView.of(experiment).spec.get("image") or image
            or (settings.image if settings is not None else None) or C.DEFAULT_IMAGE)


def job_ttl(job_settings: Mapping[str, Any], settings: Optional[Settings]) -> Optional[int]:
    """The Job's ttlSecondsAfterFinished: the Experiment's, else the operator's default (a
    finished Job and its pods expire, so the operator's caches do not grow with the number
    of trials; the Trial's status and result record keep what it did). None without
    settings (a bare build applies no operator defaults)."""
    if job_settings.get("ttlSecondsAfterFinished") is not None:
        return job_settings["ttlSecondsAfterFinished"]
    return settings.job_ttl_seconds if settings is not None else None


def build_job(trial: Mapping[str, Any], experiment: Mapping[str, Any], *,
              image: Optional[str] = None,
              child_command: Optional[Sequence[str]] = None,
              settings: Optional[Settings] = None) -> dict:
    """The Job manifest (a plain dict) for ``trial``. Raises ContractError on bad input.

    ``image``: used when the Experiment has no ``spec.image`` (else ``settings.image``).
    ``child_command``: the program that understands ``train-child`` (default
    ``settings.child_command``, i.e. the image's ``kubenas``; tests use a script).
    ``settings``: operator-wide defaults (Experiment defaults, service account, pull
    secrets, security contexts)."""
    exp = parse_experiment_object(experiment, settings)
    if child_command is None:
        child_command = settings.child_command if settings is not None else C.DEFAULT_CHILD_COMMAND
    arch, pool = parse_trial_object(trial, exp)
    tmeta = trial["metadata"]
    tname, namespace = tmeta["name"], tmeta.get("namespace")
    labels = trial_labels(exp.name, tname, pool.name)
    annotations = {C.ANNOTATION_TRIAL: tname}
    container = child_container(image_of(experiment, image, settings), child_command,
                                child_args(tname, exp, arch, trainer_config(trial, exp)),
                                exp, pool, settings)
    template = {"metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": child_pod_spec(container, pool, settings)}
    metadata: dict = {
        "name": job_name(tname),
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [owner_reference(trial)],
    }
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
            "spec": job_spec(exp.job_settings, template, settings)}


def child_container(image: str, command: Sequence[str], args: list, exp: Experiment,
                    pool: WorkerPool, settings: Optional[Settings]) -> dict:
    """The child's one container: its program, environment, pool resources, locked down."""
    container = {
        "name": C.CONTAINER_NAME,
        "image": image,
        "command": list(command),
        "args": args,
        "env": child_env(exp),
        "resources": child_resources(pool),
        "securityContext": container_security_context(settings),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings is not None and settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


def child_pod_spec(container: dict, pool: WorkerPool, settings: Optional[Settings]) -> dict:
    """The child's pod: run once, no API access, placed on its worker pool."""
    pod_spec: dict = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,   # a child never talks to the API server
        "enableServiceLinks": False,
        "securityContext": pod_security_context(settings),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if settings is not None and settings.trial_service_account:
        pod_spec["serviceAccountName"] = settings.trial_service_account
    if settings is not None and settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(list(pool.tolerations))
    if pool.affinity:
        pod_spec["affinity"] = copy.deepcopy(dict(pool.affinity))
    return pod_spec


def job_spec(job_settings: Mapping[str, Any], template: dict, settings: Optional[Settings]) -> dict:
    """One pod at a time, retried ``backoffLimit`` times, within the Experiment's limits."""
    spec: dict = {
        "backoffLimit": job_settings.get("backoffLimit", DEFAULT_BACKOFF_LIMIT),
        "completions": 1,
        "parallelism": 1,
        "template": template,
    }
    if job_settings.get("activeDeadlineSeconds"):
        spec["activeDeadlineSeconds"] = job_settings["activeDeadlineSeconds"]
    ttl = job_ttl(job_settings, settings)   # TTLAfterFinished: alpha in 1.20, harmless where ignored
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return spec
