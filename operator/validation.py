"""What the CRD schemas cannot say, checked before any Job is made.

The Experiment's spec goes through ``kubenas.experiment.parse_experiment`` (the same checks
``kubenas run`` makes, errors naming the field: types, bounds, unknown keys at every level,
``spec.controller``, ``spec.image``, ``spec.storage.secretName``), plus what only matters in a cluster: at
least one worker pool and an ``s3://`` store. A Trial must name one of its Experiment's
pools and carry a valid architecture description. With the chart's policy in ``settings``
(``experiments.allowedImages`` / ``allowedSecrets``), ``spec.image`` and the effective
``spec.storage.secretName`` must be the admin's choice (``NotAllowed``), and an explicit ``spec.storage.url`` must lie under the namespace's
own prefix or one the admin allows (``experiments.allowedStorage``).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any, Mapping, Optional

from kubenas.contracts import Architecture, ContractError
from kubenas.experiment import API_VERSION as EXP_API_VERSION
from kubenas.experiment import KIND as EXP_KIND
from kubenas.experiment import Experiment, WorkerPool, parse_experiment
from kubenas.operator import constants as C
from kubenas.operator.settings import Settings, apply_defaults
from kubenas.operator.views import ExperimentView, TrialView


class NotAllowed(ContractError):
    """A spec the parser accepts but the admin's policy refuses; ``reason`` is the reason of
    the Experiment's Accepted=False condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def resume_from(annotations: Mapping[str, Any]) -> Optional[str]:
    """The UID the Experiment asks to resume the state of (its annotation
    ``kubenas.dev/resume-from``), or None; raise ContractError naming the annotation."""
    value = annotations.get(C.ANNOTATION_RESUME_FROM)
    if value is None:
        return None
    if not isinstance(value, str) or not _UID.match(value):
        raise ContractError(
            f"metadata.annotations.{C.ANNOTATION_RESUME_FROM}: must be the UID of an earlier "
            f"Experiment (kubectl get experiment NAME -o jsonpath='{{.metadata.uid}}', before "
            f"deleting it), got {value!r}")
    return value


def state_owner(obj: Mapping[str, Any]) -> dict:
    """Who a controller state belongs to: the Experiment's namespace, name and UID, and the
    UID whose state it may take over (``resumeFrom``, from the annotation)."""
    meta = ExperimentView.of(obj).meta
    return {"namespace": meta.namespace, "name": meta.name,
            "uid": meta.uid, "resumeFrom": resume_from(meta.annotations)}


def check_policy(spec: Mapping[str, Any], exp: Experiment, settings: Settings,
                 namespace: Optional[str] = None) -> None:
    """Whoever may create an Experiment must not pick the code that runs, the credentials
    it holds or whose state it writes: the image, the Secret and the storage prefix are the
    admin's (raise NotAllowed)."""
    image, images = spec.get("image"), settings.image_policy()
    if image is not None and images is not None \
            and not any(fnmatchcase(image, pattern) for pattern in images):
        raise NotAllowed("ImageNotAllowed", f"spec.image: {image!r} is not an allowed image "
                         f"(allowed: {', '.join(images)}; the chart's experiments.allowedImages)")
    secret, secrets = exp.storage.get("secretName"), settings.secret_policy(namespace)
    if secret is not None and secrets is not None and secret not in secrets:
        raise NotAllowed("SecretNotAllowed", f"spec.storage.secretName: {secret!r} is not an "
                         f"allowed Secret (allowed: {', '.join(secrets) or 'none'}; the "
                         "chart's experiments.allowedSecrets)")
    check_storage_url((spec.get("storage") or {}).get("url"), settings, namespace)


def check_storage_url(url: Any, settings: Settings, namespace: Optional[str]) -> None:
    """An explicit ``spec.storage.url`` lies under an allowed prefix, compared by whole path
    segments (``team-a`` never matches ``team-ab``); ``.``/``..`` segments are refused since
    some S3 servers normalise them (raise NotAllowed)."""
    prefixes = settings.storage_policy(namespace)
    if url is None or prefixes is None:
        return
    segments = url[len("s3://"):].split("/") if isinstance(url, str) else []
    inside = not {".", ".."} & set(segments) and any(
        (url.rstrip("/") + "/").startswith(p) for p in prefixes)
    if not inside:
        raise NotAllowed("StorageNotAllowed", f"spec.storage.url: {url!r} is outside this "
                         f"namespace's storage (allowed: under {', '.join(prefixes)}; omit "
                         "spec.storage.url for the Experiment's own prefix, or see the "
                         "chart's experiments.allowedStorage)")


def parse_experiment_object(obj: Mapping[str, Any], settings: Optional[Settings] = None) -> Experiment:
    """Validate an Experiment object as read from the API server, with the operator-wide
    defaults (``settings``: worker pools, storage) filled in; raise ContractError."""
    view = ExperimentView.of(obj)
    meta = view.meta
    uid = resume_from(meta.annotations) or meta.uid
    spec = apply_defaults(meta.name or "", view.spec, settings, namespace=meta.namespace, uid=uid)
    doc = {"apiVersion": EXP_API_VERSION, "kind": EXP_KIND,
           "metadata": {"name": meta.name}, "spec": spec}
    exp = parse_experiment(doc)
    if not exp.worker_pools:
        raise ContractError("spec.workerPools: at least one worker pool is needed in a cluster "
                            "(the operator has no default pools either)")
    url = exp.storage.get("url")
    if not isinstance(url, str) or not url.startswith("s3://") or len(url) <= len("s3://"):
        raise ContractError(
            f"spec.storage.url: must be an s3://bucket[/prefix] URL in a cluster "
            f"(children and the controller run in different pods; the operator has no "
            f"default storage URL either), got {url!r}")
    if settings is not None:
        check_policy(view.spec, exp, settings, meta.namespace)
    return exp


def find_pool(exp: Experiment, name: Optional[str]) -> WorkerPool:
    names = [p.name for p in exp.worker_pools]
    for pool in exp.worker_pools:
        if pool.name == name:
            return pool
    raise ContractError(f"spec.pool: {name!r} is not a worker pool of experiment "
                        f"{exp.name!r} (its pools: {', '.join(names)})")


def parse_trial_object(trial: Mapping[str, Any], exp: Experiment) -> tuple[Architecture, WorkerPool]:
    """Validate a Trial against its (valid) Experiment; raise ContractError."""
    spec = TrialView.of(trial).spec
    if spec.get("experiment") != exp.name:
        raise ContractError(f"spec.experiment: {spec.get('experiment')!r} is not {exp.name!r}")
    pool = find_pool(exp, spec.get("pool"))
    arch = Architecture.from_dict(spec.get("architecture"), "spec.architecture")
    if arch.space != exp.space:
        raise ContractError(f"spec.architecture.space: {arch.space!r} does not match the "
                            f"experiment's search space {exp.space!r}")
    trainer = spec.get("trainer")
    if trainer is not None and not isinstance(trainer, Mapping):
        raise ContractError("spec.trainer: must be a mapping")
    return arch, pool
