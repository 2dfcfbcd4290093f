"""The per-Experiment controller (the search: ``kubenas controller``) as a Deployment.

A pure builder, like the Job builder. The Deployment is owned by its Experiment (deleted with
it), carries ``kubenas.dev/experiment`` (``kubectl get deployments -l kubenas.dev/experiment=X``)
and is placed by ``spec.controller`` ({replicas, resources, nodeSelector, tolerations,
affinity}) or the operator's defaults. It is scaled to 0 once the Experiment is finished or
stopped. The controller's state lives in object storage, so its pods are disposable. An
``enas`` Experiment's controller trains the shared weights itself: one replica, placed on
its first worker pool with that pool's resources and GPUs (``in_process_options``), and
scaled to 0 (its GPU freed) once it has finished.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping, Optional

from kubenas.contracts import names
from kubenas.experiment import Experiment
from kubenas.operator import constants as C
from kubenas.operator.jobs import (child_resources, common_labels, container_security_context,
                                   image_of, owner_reference, pod_security_context)
from kubenas.operator.naming import label_value, shorten
from kubenas.operator.settings import Settings
from kubenas.operator.validation import parse_experiment_object
from kubenas.operator.views import ExperimentView

ANNOTATION_HASH = "kubenas.dev/template-hash"


def controller_name(experiment: str) -> str:
    return shorten(f"kubenas-controller-{experiment}")


def controller_selector(experiment: str) -> dict:
    return {C.LABEL_EXPERIMENT: label_value(experiment), C.LABEL_COMPONENT: "controller",
            C.LABEL_MANAGED_BY: C.MANAGED_BY}


def build_controller_deployment(experiment: Mapping[str, Any], settings: Settings,
                                replicas: Optional[int] = None) -> dict:
    """The controller Deployment of ``experiment``. Raises ContractError on an invalid spec.

    ``replicas``: None for the Experiment's own (``spec.controller.replicas``, else the
    operator's default); 0 to park it."""
    exp = parse_experiment_object(experiment, settings)
    ns = experiment["metadata"].get("namespace")
    opts = ExperimentView.of(experiment).controller_options
    if exp.strategy in names.IN_PROCESS_STRATEGIES:
        opts = in_process_options(exp, opts)
    if replicas is None:
        replicas = int(opts.get("replicas", settings.controller_replicas))
    pod_labels = {**common_labels(exp.name, "controller"), **settings.controller_labels,
                  **controller_selector(exp.name)}
    template = {"metadata": {"labels": pod_labels},
                "spec": controller_pod_spec(controller_container(experiment, exp, ns, opts, settings),
                                            opts, settings)}
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": controller_name(exp.name), "namespace": ns,
                     "labels": {**common_labels(exp.name, "controller"), **controller_selector(exp.name)},
                     "annotations": {ANNOTATION_HASH: digest},
                     "ownerReferences": [owner_reference(experiment)]},
        "spec": {"replicas": replicas, "revisionHistoryLimit": 2,
                 "strategy": {"type": "Recreate"},
                 "selector": {"matchLabels": controller_selector(exp.name)},
                 "template": template},
    }


def in_process_options(exp: Experiment, opts: Mapping[str, Any]) -> dict:
    """An ``enas`` Experiment's controller *is* its search: one pod, on its first worker
    pool's nodes, with that pool's resources (GPUs: ``gpusPerTrial``), unless
    ``spec.controller`` places it otherwise."""
    pool = exp.worker_pools[0]
    placed = {"nodeSelector": dict(pool.node_selector or {}),
              "tolerations": copy.deepcopy(list(pool.tolerations or [])),
              "affinity": copy.deepcopy(dict(pool.affinity or {})),
              "resources": child_resources(pool)}
    return {**{k: v for k, v in placed.items() if v}, **opts, "replicas": 1}


def controller_env(exp: Experiment, ns: Optional[str], settings: Settings) -> list:
    """The controller's environment: the operator's Experiment defaults (it validates the
    spec as the operator does), its store's endpoint and region, credentials by reference."""
    storage = exp.storage
    env = [{"name": "HOME", "value": "/tmp"},
           {"name": "KUBENAS_CACHE_DIR", "value": "/tmp/kubenas-cache"},
           {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
           {"name": "PYTHONUNBUFFERED", "value": "1"},
           {"name": "KUBENAS_NAMESPACE", "value": ns or "default"}]
    if settings.log_level:
        env.append({"name": "KUBENAS_LOG_LEVEL", "value": settings.log_level})
    env += settings.defaults_env()
    if storage.get("endpoint"):
        env = [e for e in env if e["name"] != C.ENV_S3_ENDPOINT]
        env.append({"name": C.ENV_S3_ENDPOINT, "value": str(storage["endpoint"])})
    if storage.get("region"):
        env = [e for e in env if e["name"] != C.ENV_REGION]
        env.append({"name": C.ENV_REGION, "value": str(storage["region"])})
    if storage.get("secretName"):
        for key in (C.ENV_ACCESS_KEY, C.ENV_SECRET_KEY):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {
                "name": storage["secretName"], "key": key}}})
    return env


def controller_container(experiment: Mapping[str, Any], exp: Experiment, ns: Optional[str],
                         opts: Mapping[str, Any], settings: Settings) -> dict:
    args = ["controller", "--experiment", exp.name, "--namespace", ns or "default"]
    container: dict = {
        "name": "controller",
        "image": image_of(experiment, None, settings),
        "command": list(settings.controller_command),
        "args": args,
        "env": controller_env(exp, ns, settings),
        "securityContext": container_security_context(settings),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if settings.controller_metrics_port:
        args += ["--metrics-port", str(settings.controller_metrics_port)]
        container["ports"] = [{"name": "metrics", "containerPort": settings.controller_metrics_port,
                               "protocol": "TCP"}]
    resources = opts.get("resources") or settings.controller_resources
    if resources:
        container["resources"] = copy.deepcopy(resources)
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


def controller_pod_spec(container: dict, opts: Mapping[str, Any], settings: Settings) -> dict:
    """The controller's pod, placed by ``spec.controller`` else the operator's defaults."""
    pod: dict = {
        "containers": [container],
        "securityContext": pod_security_context(settings),
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "enableServiceLinks": False,
    }
    if settings.controller_service_account:
        pod["serviceAccountName"] = settings.controller_service_account
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    for key, default in (("nodeSelector", settings.controller_node_selector),
                         ("tolerations", settings.controller_tolerations),
                         ("affinity", settings.controller_affinity)):
        value = opts.get(key) or default
        if value:
            pod[key] = copy.deepcopy(value)
    return pod
