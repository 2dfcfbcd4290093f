"""The experiment file: one document for `kubenas run FILE` and for the Experiment resource.

Validation here covers the structure every role needs (and that the operator can check
without torch). Space, strategy and trainer options are validated by their owners
(``make_space``, ``make_strategy``, ``TrainerConfig``) before anything starts; all errors
are ``ContractError`` with the dotted path of the field, e.g.
``spec.budget.maxTrials: must be a positive integer, got 0``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from kubenas.contracts.errors import ContractError

API_VERSION = "kubenas.dev/v1"
KIND = "Experiment"
SPACES = ("cnn", "rnn_cell", "nasbench201")
STRATEGIES = ("reinforce", "random", "evolution")
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_TOP_KEYS = {"search", "budget", "parallelism", "trainer", "storage", "workerPools", "jobSettings",
             "image", "controller"}
_SEARCH_KEYS = {"space", "spaceOptions", "strategy", "strategyOptions", "seed"}
_POOL_KEYS = {"name", "nodeSelector", "tolerations", "gpusPerTrial", "resources", "maxInFlight",
              "affinity"}
_STORAGE_KEYS = {"url", "endpoint", "secretName", "region"}
_JOB_KEYS = {"backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"}


def _fail(where: str, msg: str) -> None:
    raise ContractError(f"{where}: {msg}")


def _mapping(value: Any, where: str, required: bool = False) -> dict:
    if value is None:
        if required:
            _fail(where, "is required")
        return {}
    if not isinstance(value, Mapping):
        _fail(where, f"must be a mapping, got {type(value).__name__}")
    return dict(value)


def _unknown(doc: Mapping, known: set, where: str) -> None:
    for key in doc:
        if key not in known:
            _fail(f"{where}.{key}", f"unknown field (known: {', '.join(sorted(known))})")


def _int(value: Any, where: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass
class WorkerPool:
    name: str
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    gpus_per_trial: int = 0
    resources: dict = field(default_factory=dict)
    max_in_flight: int = 1
    affinity: dict = field(default_factory=dict)


@dataclass
class Experiment:
    name: str
    space: str
    strategy: str
    space_options: dict
    strategy_options: dict
    seed: int
    max_trials: int
    parallelism: int
    trainer: dict
    storage: dict
    worker_pools: list  # list[WorkerPool]
    job_settings: dict
    raw: dict           # the whole document as given (for Trial/Job templates and logs)

    @property
    def spec(self) -> dict:
        return self.raw["spec"]


def parse_experiment(doc: Any, where: str = "experiment") -> Experiment:
    """Validate an experiment document (the full object, or just its ``spec``)."""
    doc = _mapping(doc, where, required=True)
    if "spec" not in doc and "search" in doc:  # a bare spec, e.g. from the CRD status path
        doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "experiment"},
               "spec": doc}
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        _fail("apiVersion", f"must be {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    if doc.get("kind", KIND) != KIND:
        _fail("kind", f"must be {KIND!r}, got {doc.get('kind')!r}")
    meta = _mapping(doc.get("metadata"), "metadata", required=True)
    name = meta.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 50:
        _fail("metadata.name", f"must be a DNS-1123 label of at most 50 characters, got {name!r}")

    spec = _mapping(doc.get("spec"), "spec", required=True)
    _unknown(spec, _TOP_KEYS, "spec")

    search = _mapping(spec.get("search"), "spec.search", required=True)
    _unknown(search, _SEARCH_KEYS, "spec.search")
    space = search.get("space", "cnn")
    if space not in SPACES:
        _fail("spec.search.space", f"must be one of {list(SPACES)}, got {space!r}")
    strategy = search.get("strategy", "reinforce")
    if strategy not in STRATEGIES:
        _fail("spec.search.strategy", f"must be one of {list(STRATEGIES)}, got {strategy!r}")
    space_options = _mapping(search.get("spaceOptions"), "spec.search.spaceOptions")
    strategy_options = _mapping(search.get("strategyOptions"), "spec.search.strategyOptions")
    seed = _int(search.get("seed", 0), "spec.search.seed", minimum=0)

    budget = _mapping(spec.get("budget"), "spec.budget", required=True)
    _unknown(budget, {"maxTrials"}, "spec.budget")
    max_trials = _int(budget.get("maxTrials"), "spec.budget.maxTrials")
    parallelism = _int(spec.get("parallelism", 1), "spec.parallelism")

    trainer = _mapping(spec.get("trainer"), "spec.trainer")
    storage = _mapping(spec.get("storage"), "spec.storage")
    _unknown(storage, _STORAGE_KEYS, "spec.storage")
    url = storage.get("url")
    if url is not None and (not isinstance(url, str) or not url):
        _fail("spec.storage.url", f"must be a non-empty string, got {url!r}")
    if isinstance(url, str) and "@" in url.split("/")[2 if "://" in url else 0]:
        _fail("spec.storage.url", "must not carry credentials; put them in a Secret / the environment")

    pools = []
    raw_pools = spec.get("workerPools") or []
    if not isinstance(raw_pools, list):
        _fail("spec.workerPools", "must be a list")
    seen = set()
    for i, p in enumerate(raw_pools):
        w = f"spec.workerPools[{i}]"
        p = _mapping(p, w, required=True)
        _unknown(p, _POOL_KEYS, w)
        pname = p.get("name")
        if not isinstance(pname, str) or not NAME_RE.match(pname):
            _fail(f"{w}.name", f"must be a DNS-1123 label, got {pname!r}")
        if pname in seen:
            _fail(f"{w}.name", f"duplicate pool name {pname!r}")
        seen.add(pname)
        tolerations = p.get("tolerations") or []
        if not isinstance(tolerations, list):
            _fail(f"{w}.tolerations", "must be a list")
        pools.append(WorkerPool(
            name=pname,
            node_selector={str(k): str(v) for k, v in _mapping(p.get("nodeSelector"), f"{w}.nodeSelector").items()},
            tolerations=tolerations,
            gpus_per_trial=_int(p.get("gpusPerTrial", 0), f"{w}.gpusPerTrial", minimum=0),
            resources=_mapping(p.get("resources"), f"{w}.resources"),
            max_in_flight=_int(p.get("maxInFlight", 1), f"{w}.maxInFlight"),
            affinity=_mapping(p.get("affinity"), f"{w}.affinity"),
        ))
    job_settings = _mapping(spec.get("jobSettings"), "spec.jobSettings")
    _unknown(job_settings, _JOB_KEYS, "spec.jobSettings")
    for key, value in job_settings.items():
        _int(value, f"spec.jobSettings.{key}", minimum=0)

    return Experiment(name=name, space=space, strategy=strategy, space_options=space_options,
                      strategy_options=strategy_options, seed=seed, max_trials=max_trials,
                      parallelism=parallelism, trainer=trainer, storage=storage,
                      worker_pools=pools, job_settings=job_settings, raw=copy.deepcopy(doc))


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ContractError(f"{path}: cannot read experiment file ({exc.strerror})") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ContractError(f"{path}:{loc} not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    try:
        return parse_experiment(doc)
    except ContractError as exc:
        raise ContractError(f"{path}: {exc}") from None


def trial_id(experiment: str, index: int) -> str:
    """Trial ids are the experiment name and the sample index: stable, sortable, DNS-safe."""
    return f"{experiment}-{index:05d}"


def index_of(trial: str) -> Optional[int]:
    head, _, tail = trial.rpartition("-")
    return int(tail) if head and tail.isdigit() else None
