"""The experiment file: one document for `kubenas run FILE` and for the Experiment resource.

Validation here covers the structure every role needs (and that the operator can check
without torch). Space, strategy and trainer options are validated by their owners
(``make_space``, ``make_strategy``, ``TrainerConfig``) before anything starts; all errors
are ``ContractError`` with the dotted path of the field, e.g.
``spec.budget.maxTrials: must be an integer >= 1, got 0``. Field checks come from
``kubenas.contracts.fields``; unknown keys are refused at every level, with a "did you mean".
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from kubenas.contracts import fields as F
from kubenas.contracts import names
from kubenas.contracts.errors import ContractError

API_VERSION = "kubenas.dev/v1"
KIND = "Experiment"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_LENGTH = 50  # leaves room for "-<index:05d>" and Job/pod suffixes in 63 characters

# Upper bounds: far above the paper's scale (12,800 trials, 800 in flight), low enough that a
# typo (an extra zero or three) is refused before it allocates or schedules anything. The
# CRD's maxima are tested against these (tests/kubenas/test_crd_agrees.py).
MAX_TRIALS = 1_000_000
MAX_IN_FLIGHT = 10_000
MAX_REPLICAS = 16
MAX_GPUS_PER_TRIAL = 64
MAX_POOLS = 64
MAX_TOLERATIONS = 64
MAX_SEED = 2**32 - 1           # what every RNG kubenas seeds accepts
MAX_BACKOFF_LIMIT = 100
MAX_SECONDS = 2**31 - 1        # Kubernetes' int32 durations

_DOC_KEYS = ("apiVersion", "kind", "metadata", "spec")
_META_KEYS = ("name", "namespace", "labels", "annotations")
_TOP_KEYS = ("search", "budget", "parallelism", "trainer", "storage", "workerPools", "jobSettings",
             "image", "controller", "final")
_SEARCH_KEYS = ("space", "spaceOptions", "strategy", "strategyOptions", "seed")
_POOL_KEYS = ("name", "nodeSelector", "tolerations", "gpusPerTrial", "resources", "maxInFlight",
              "affinity")
_STORAGE_KEYS = ("url", "endpoint", "secretName", "region")
_JOB_SETTINGS = {"backoffLimit": (0, MAX_BACKOFF_LIMIT), "activeDeadlineSeconds": (1, MAX_SECONDS),
                 "ttlSecondsAfterFinished": (0, MAX_SECONDS)}
_CONTROLLER_KEYS = ("replicas", "resources", "nodeSelector", "tolerations", "affinity")
_TOLERATION_KEYS = ("key", "operator", "value", "effect", "tolerationSeconds")
_AFFINITY_KEYS = ("nodeAffinity", "podAffinity", "podAntiAffinity")
_POOL_RESOURCES = ("cpu", "memory")
# Kubernetes quantities as the CRD's patterns allow them (numbers are taken as they are).
_QUANTITY = {"cpu": r"[0-9]+(\.[0-9]+)?m?",
             "memory": r"[0-9]+(\.[0-9]+)?([KMGTPE]i?|[eE][0-9]+)?",
             "any": r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?"}
_SECRET_NAME = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
# Kubernetes label keys ([prefix/]name) and values, as the API server checks them.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}"
_LABEL_VALUE = rf"({_LABEL_NAME})?"
_ENDPOINT = r"https?://\S+"


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
    controller: dict = field(default_factory=dict)  # spec.controller, validated
    final: Optional[dict] = None  # spec.final resolved (parse_final); None: no final phase

    @property
    def spec(self) -> dict:
        return self.raw["spec"]


def parse_experiment(doc: Any, where: str = "experiment") -> Experiment:
    """Validate an experiment document (the full object, or just its ``spec``)."""
    doc = F.mapping(doc, where, required=True)
    F.check_depth(doc, "")
    if "spec" not in doc and "search" in doc:  # a bare spec, e.g. from the CRD status path
        doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "experiment"},
               "spec": doc}
    name = _parse_header(doc)
    spec = F.mapping(doc.get("spec"), "spec", required=True)
    F.refuse_unknown(spec, _TOP_KEYS, "spec")
    search = _parse_search(F.mapping(spec.get("search"), "spec.search", required=True))
    budget = F.mapping(spec.get("budget"), "spec.budget", required=True)
    F.refuse_unknown(budget, ("maxTrials",), "spec.budget")
    max_trials = F.integer(budget.get("maxTrials"), "spec.budget.maxTrials", 1, MAX_TRIALS)
    parallelism = F.integer(spec.get("parallelism", 1), "spec.parallelism", 1, MAX_IN_FLIGHT)
    trainer = F.mapping(spec.get("trainer"), "spec.trainer")
    storage = _parse_storage(F.mapping(spec.get("storage"), "spec.storage"))
    if spec.get("image") is not None:
        F.string(spec["image"], "spec.image", pattern=r"\S+", max_length=512,
                 what="a non-empty image reference")
    return Experiment(name=name, **search, max_trials=max_trials, parallelism=parallelism,
                      trainer=trainer, storage=storage,
                      worker_pools=_parse_pools(spec.get("workerPools")),
                      job_settings=_parse_job_settings(spec.get("jobSettings")),
                      controller=_parse_controller(spec.get("controller")),
                      final=parse_final(spec.get("final"), search["space"], trainer),
                      raw=copy.deepcopy(doc))


def _parse_header(doc: dict) -> str:
    """apiVersion, kind and metadata; returns the name."""
    F.refuse_unknown(doc, _DOC_KEYS, "")
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        F.fail("apiVersion", f"must be {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    if doc.get("kind", KIND) != KIND:
        F.fail("kind", f"must be {KIND!r}, got {doc.get('kind')!r}")
    meta = F.mapping(doc.get("metadata"), "metadata", required=True)
    F.refuse_unknown(meta, _META_KEYS, "metadata")
    _labels(meta.get("labels"), "metadata.labels")
    for key in _string_map(meta.get("annotations"), "metadata.annotations"):
        F.string(key, "metadata.annotations", pattern=_LABEL_KEY, what="label-style keys")
    if meta.get("namespace") is not None:
        F.string(meta["namespace"], "metadata.namespace", pattern=NAME_RE.pattern,
                 max_length=63, what="a DNS-1123 label")
    name = meta.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME_LENGTH:
        F.fail("metadata.name", f"must be a DNS-1123 label of at most {MAX_NAME_LENGTH} "
                                f"characters, got {name!r}")
    return name


def _parse_search(search: dict) -> dict:
    """spec.search: names from ``kubenas.contracts.names``; options are checked by their
    owners (``make_space``, ``make_strategy``), here only that they are mappings."""
    F.refuse_unknown(search, _SEARCH_KEYS, "spec.search")
    return {
        "space": F.choice(search.get("space", names.DEFAULT_SPACE), names.SPACES,
                          "spec.search.space"),
        "strategy": F.choice(search.get("strategy", names.DEFAULT_STRATEGY), names.STRATEGIES,
                             "spec.search.strategy"),
        "space_options": F.mapping(search.get("spaceOptions"), "spec.search.spaceOptions"),
        "strategy_options": F.mapping(search.get("strategyOptions"),
                                      "spec.search.strategyOptions"),
        "seed": F.integer(search.get("seed", 0), "spec.search.seed", 0, MAX_SEED),
    }


def _parse_storage(storage: dict) -> dict:
    F.refuse_unknown(storage, _STORAGE_KEYS, "spec.storage")
    url = storage.get("url")
    if url is not None:
        F.string(url, "spec.storage.url")
        if "@" in url.split("/")[2 if "://" in url else 0]:
            F.fail("spec.storage.url",
                   "must not carry credentials; put them in a Secret / the environment")
    if storage.get("endpoint") is not None:
        F.string(storage["endpoint"], "spec.storage.endpoint", pattern=_ENDPOINT,
                 what="an http(s):// URL")
    if storage.get("secretName") is not None:
        F.string(storage["secretName"], "spec.storage.secretName", pattern=_SECRET_NAME,
                 max_length=253, what="a Secret name")
    if storage.get("region") is not None:
        F.string(storage["region"], "spec.storage.region")
    return storage


def _parse_pools(value: Any) -> list:
    pools, seen = [], set()
    for i, raw in enumerate(F.sequence(value, "spec.workerPools", max_items=MAX_POOLS)):
        pool = _parse_pool(raw, F.item("spec.workerPools", i))
        if pool.name in seen:
            F.fail(f"spec.workerPools[{i}].name", f"duplicate pool name {pool.name!r}")
        seen.add(pool.name)
        pools.append(pool)
    return pools


def _parse_pool(value: Any, w: str) -> WorkerPool:
    p = F.mapping(value, w, required=True)
    F.refuse_unknown(p, _POOL_KEYS, w)
    name = p.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 63:
        F.fail(f"{w}.name", f"must be a DNS-1123 label, got {name!r}")
    resources = F.mapping(p.get("resources"), f"{w}.resources")
    F.refuse_unknown(resources, _POOL_RESOURCES, f"{w}.resources")
    for key, quantity in resources.items():
        _quantity(quantity, f"{w}.resources.{key}", _QUANTITY[key])
    return WorkerPool(
        name=name,
        node_selector=_labels(p.get("nodeSelector"), f"{w}.nodeSelector"),
        tolerations=_tolerations(p.get("tolerations"), f"{w}.tolerations"),
        gpus_per_trial=F.integer(p.get("gpusPerTrial", 0), f"{w}.gpusPerTrial", 0,
                                 MAX_GPUS_PER_TRIAL),
        resources=resources,
        max_in_flight=F.integer(p.get("maxInFlight", 1), f"{w}.maxInFlight", 1, MAX_IN_FLIGHT),
        affinity=_affinity(p.get("affinity"), f"{w}.affinity"),
    )


def _parse_job_settings(value: Any) -> dict:
    settings = F.mapping(value, "spec.jobSettings")
    F.refuse_unknown(settings, _JOB_SETTINGS, "spec.jobSettings")
    for key, (low, high) in _JOB_SETTINGS.items():
        if key in settings:
            F.integer(settings[key], f"spec.jobSettings.{key}", low, high)
    return settings


def _parse_controller(value: Any) -> dict:
    """spec.controller: where and how many in-cluster controller replicas run (a bad value
    here must be a condition on the Experiment, never a crash-looping Deployment)."""
    w = "spec.controller"
    opts = F.mapping(value, w)
    F.refuse_unknown(opts, _CONTROLLER_KEYS, w)
    if "replicas" in opts:
        F.integer(opts["replicas"], f"{w}.replicas", 1, MAX_REPLICAS)
    resources = F.mapping(opts.get("resources"), f"{w}.resources")
    F.refuse_unknown(resources, ("requests", "limits"), f"{w}.resources")
    for part, quantities in resources.items():
        for key, quantity in _string_keys(quantities, f"{w}.resources.{part}").items():
            _quantity(quantity, f"{w}.resources.{part}.{key}", _QUANTITY["any"])
    _labels(opts.get("nodeSelector"), f"{w}.nodeSelector")
    _tolerations(opts.get("tolerations"), f"{w}.tolerations")
    _affinity(opts.get("affinity"), f"{w}.affinity")
    return opts


# -- Kubernetes pieces (as the CRD schema says them) -------------------------------------------

def _string_keys(value: Any, where: str) -> dict:
    doc = F.mapping(value, where)
    for key in doc:
        if not isinstance(key, str) or not key:
            F.fail(where, f"keys must be non-empty strings, got {key!r}")
    return doc


def _string_map(value: Any, where: str) -> dict:
    doc = _string_keys(value, where)
    for key, v in doc.items():
        if not isinstance(v, str):
            F.fail(f"{where}.{key}", f"must be a string, got {type(v).__name__}")
    return doc


def _labels(value: Any, where: str) -> dict:
    """Label keys and values (metadata.labels, node selectors) the API server would accept."""
    doc = _string_map(value, where)
    for key, v in doc.items():
        F.string(key, where, pattern=_LABEL_KEY, what="label keys like kubenas.dev/pool")
        if v:
            F.string(v, f"{where}.{key}", pattern=_LABEL_VALUE, max_length=63,
                     what="a label value (at most 63 of A-Z a-z 0-9 - _ .)")
    return doc


def _quantity(value: Any, where: str, pattern: str) -> None:
    if isinstance(value, str):
        F.string(value, where, pattern=pattern, what="a Kubernetes quantity like 500m or 2Gi")
    else:
        F.number(value, where, minimum=0)


def _tolerations(value: Any, where: str) -> list:
    out = F.sequence(value, where, max_items=MAX_TOLERATIONS)
    for i, raw in enumerate(out):
        w = F.item(where, i)
        tol = F.mapping(raw, w, required=True)
        F.refuse_unknown(tol, _TOLERATION_KEYS, w)
        for key in ("key", "value"):
            if tol.get(key) is not None and not isinstance(tol[key], str):
                F.fail(f"{w}.{key}", f"must be a string, got {type(tol[key]).__name__}")
        if "operator" in tol:
            F.choice(tol["operator"], ("Exists", "Equal"), f"{w}.operator")
        if "effect" in tol:
            F.choice(tol["effect"], ("", "NoSchedule", "PreferNoSchedule", "NoExecute"),
                     f"{w}.effect")
        if tol.get("tolerationSeconds") is not None:
            F.integer(tol["tolerationSeconds"], f"{w}.tolerationSeconds")
    return out


def _affinity(value: Any, where: str) -> dict:
    doc = F.mapping(value, where)
    F.refuse_unknown(doc, _AFFINITY_KEYS, where)
    for key, part in doc.items():
        F.mapping(part, f"{where}.{key}")
    return doc


# -- spec.final: the paper's grid search, retrain and single test evaluation (§4.1, §4.2) ------

MAX_TOP_K = 16
MAX_GRID_VALUES = 64           # values on one axis
MAX_GRID_POINTS = 256          # points of one architecture's grid (the product of the axes)
MAX_SIZES = 8
MAX_FINAL_EPOCHS = 10_000      # the trainer's MAX_EPOCHS
TRAIN_ON = ("train", "train+validation")
_FINAL_KEYS = ("topK", "grid", "epochs", "trainOn", "sizes")
# The search schedule's epochs when spec.trainer names none (TrainerConfig's and LMConfig's
# defaults; tests/kubenas/test_final_spec.py holds them equal).
SEARCH_EPOCHS_DEFAULT = {"cnn": 5, "rnn_cell": 4, "enas_macro": 5, "enas_rnn": 4}
# Grid axes per space: trainer keys -> (integer?, minimum, maximum, minimum exclusive).
_IMAGE_AXES = {"learningRate": (False, 0, 1000, True), "weightDecay": (False, 0, 1, False),
               "lrDecayEpoch": (True, 1, MAX_FINAL_EPOCHS, False),
               "momentum": (False, 0, 0.999, False), "batchSize": (True, 1, 65_536, False)}
_GRID_AXES = {
    "cnn": {**_IMAGE_AXES, "bnEpsilon": (False, 0, 1, True)},
    "enas_macro": _IMAGE_AXES,   # its standalone child has no batch-norm epsilon to set
    "rnn_cell": {"learningRate": (False, 0, 1000, True), "initRange": (False, 0, 10, True),
                 "dropout": (False, 0, 0.99, False), "recurrentDropout": (False, 0, 0.99, False),
                 "embeddingDropout": (False, 0, 0.99, False),
                 "lrDecayEpoch": (True, 1, MAX_FINAL_EPOCHS, False),
                 "weightDecay": (False, 0, 1, False), "clipNorm": (False, 0, 100, True)},
}
_GRID_AXES["enas_rnn"] = _GRID_AXES["rnn_cell"]   # the same language model around its cell
# The paper names the axes, not their values (§4.1: learning rate, weight decay, batch-norm
# epsilon, LR-decay epoch; §4.2: learning rate, weight initialisation, dropout, decay epoch):
# two values each around the trainers' defaults; lrDecayEpoch from the search's epochs.
_DEFAULT_GRID = {"cnn": {"learningRate": [0.05, 0.1], "weightDecay": [1e-4, 5e-4],
                         "bnEpsilon": [1e-5, 1e-3]},
                 "enas_macro": {"learningRate": [0.05, 0.1], "weightDecay": [1e-4, 5e-4]},
                 "rnn_cell": {"learningRate": [10.0, 20.0], "initRange": [0.05, 0.1],
                              "dropout": [0.1, 0.3]}}
_DEFAULT_GRID["enas_rnn"] = _DEFAULT_GRID["rnn_cell"]


def search_epochs(space: str, trainer: dict) -> int:
    """The epochs of a search trial (spec.trainer.epochs, or under options, or the default)."""
    for where in (trainer, trainer.get("options") if isinstance(trainer.get("options"), dict)
                  else {}):
        if F.is_int(where.get("epochs")) and where["epochs"] >= 1:
            return where["epochs"]
    return SEARCH_EPOCHS_DEFAULT.get(space, 5)


def default_grid(space: str, epochs: int) -> dict:
    """The paper's axes for ``space``; the decay epoch at 1/2 and 3/4 of the search's epochs."""
    grid = copy.deepcopy(_DEFAULT_GRID[space])
    grid["lrDecayEpoch"] = sorted({max(1, -(-epochs // 2)), max(1, -(-epochs * 3 // 4))})
    return grid


def _grid(value: Any, space: str, where: str) -> dict:
    axes = _GRID_AXES[space]
    grid = F.mapping(value, where)
    F.refuse_unknown(grid, axes, where, what="grid axis")
    F.require(bool(grid), where, "must name at least one axis (omit it for the default grid)")
    points = 1
    for axis, values in grid.items():
        w = F.child(where, axis)
        values = F.sequence(values, w, max_items=MAX_GRID_VALUES)
        F.require(bool(values), w, "must list at least one value")
        whole, low, high, exclusive = axes[axis]
        for i, v in enumerate(values):
            if whole:
                F.integer(v, F.item(w, i), low, high)
            else:
                F.number(v, F.item(w, i), minimum=low, maximum=high, min_exclusive=exclusive)
        F.require(len(set(values)) == len(values), w, f"values must be distinct, got {values}")
        grid[axis] = list(values)
        points *= len(values)
    F.require(points <= MAX_GRID_POINTS, where,
              f"{points} grid points; at most {MAX_GRID_POINTS} (drop an axis or some values)")
    return grid


def _sizes(value: Any, space: str, where: str) -> list:
    sizes = F.sequence(value, where, max_items=MAX_SIZES)
    F.require(not sizes or space != "enas_macro", where,
              "the enas_macro child has no width to scale; leave sizes out")
    for i, v in enumerate(sizes):
        if space in names.LM_SPACES:   # hidden sizes
            F.integer(v, F.item(where, i), 1, 65_536)
        else:                     # width multipliers of every conv layer's filters
            F.number(v, F.item(where, i), minimum=0, maximum=16, min_exclusive=True)
    F.require(len(set(sizes)) == len(sizes), where, f"sizes must be distinct, got {sizes}")
    return list(sizes)


def parse_final(value: Any, space: str, trainer: dict) -> Optional[dict]:
    """spec.final resolved: {topK, grid, epochs, trainOn, sizes, searchEpochs}; None if absent.

    ``grid`` given replaces the default grid: its axes are exactly the ones searched (the
    others stay at spec.trainer's values). ``epochs`` (the final schedule) defaults to four
    times the search's; ``sizes`` (PTB hidden sizes, CNN width multipliers) retrains the chosen
    setting once per size."""
    if value is None:
        return None
    w = "spec.final"
    doc = F.mapping(value, w)
    F.refuse_unknown(doc, _FINAL_KEYS, w)
    if space not in names.FINAL_SPACES:
        F.fail(w, f"no final phase for the {space} space (its trials are not trained children "
                  f"kubenas can retrain; spaces with one: {', '.join(names.FINAL_SPACES)})")
    epochs = search_epochs(space, trainer)
    grid = _grid(doc["grid"], space, f"{w}.grid") if "grid" in doc else default_grid(space, epochs)
    return {"topK": F.integer(doc.get("topK", 1), f"{w}.topK", 1, MAX_TOP_K),
            "grid": grid,
            "epochs": F.integer(doc.get("epochs", min(4 * epochs, MAX_FINAL_EPOCHS)),
                                f"{w}.epochs", 1, MAX_FINAL_EPOCHS),
            "trainOn": F.choice(doc.get("trainOn", "train+validation"), TRAIN_ON,
                                f"{w}.trainOn"),
            "sizes": _sizes(doc.get("sizes"), space, f"{w}.sizes"),
            "searchEpochs": epochs}


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ContractError(f"{path}: cannot read experiment file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ContractError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    try:
        doc = yaml.safe_load(text)
    except RecursionError:
        raise ContractError(f"{path}: not a usable experiment file (nested far too deeply)") from None
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
