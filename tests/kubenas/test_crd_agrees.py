"""One source of truth for names, defaults, required fields and bounds: the Experiment CRD
(operator/crds/experiments.yaml, copied into the chart and manifests/) says what the spec
parser and the registries say (``kubenas.contracts.names`` is the list both are held to)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from kubenas.controller import strategy_factory
from kubenas.contracts import ContractError, names
from kubenas.contracts.architecture import SPACES as ARCHITECTURE_SPACES
from kubenas.controller.spaces import SPACES as SPACE_REGISTRY
from kubenas.controller.strategies import STRATEGIES as STRATEGY_REGISTRY
from kubenas.experiment import parse_experiment
from kubenas.trainer.config import DATASETS, validate_trainer_config

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "operator" / "crds" / "experiments.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]

# A document that sets every field the CRD bounds (the cluster example, plus the rest).
FULL = yaml.safe_load((REPO / "examples" / "experiment.yaml").read_text())
FULL["spec"].update(parallelism=2, image="registry.example/kubenas:1",
                    controller={"replicas": 1, "nodeSelector": {"pool": "a"}})
FULL["spec"]["trainer"].update(evalBatchSize=64, validationSize=0.1, maxParameters=10**6,
                               momentum=0.9, nesterov=False, weightDecay=1e-4)
FULL["spec"]["jobSettings"]["ttlSecondsAfterFinished"] = 60
FULL["spec"]["search"]["strategyOptions"].update(lstmLayers=1, hiddenSize=8, initRange=0.1,
                                                 batchSize=1, accumulate=1, entropyWeight=0.0)
FULL["spec"]["search"]["spaceOptions"].update(strides=[1], poolingAt=[])


def check(doc: dict):
    """What `kubenas run` checks (kubenas.cli.check_run, without the file)."""
    exp = parse_experiment(doc)
    strategy_factory(exp)
    validate_trainer_config(exp.trainer, space=exp.space, where="spec.trainer")
    return exp


def _walk(schema: dict, path: str):
    """(doc path, schema) of every property under ``schema``; array items as ``[0]``."""
    for key, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{key}"
        yield here, sub
        if sub.get("type") == "array" and isinstance(sub.get("items"), dict):
            yield from _walk(sub["items"], f"{here}[0]")
        yield from _walk(sub, here)


def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node = doc
    for part, nxt in zip(parts, parts[1:]):
        key = int(part[1:-1]) if part.startswith("[") else part
        if isinstance(node, dict) and key not in node:
            node[key] = [{}] if nxt.startswith("[") else {}
        node = node[key]
    last = parts[-1]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return doc


def test_names_have_one_source():
    assert tuple(SPACE_REGISTRY) == names.SPACES == ARCHITECTURE_SPACES
    assert tuple(STRATEGY_REGISTRY) == names.STRATEGIES
    assert DATASETS == names.DATASETS
    from kubenas.enas.tasks import TASKS
    assert tuple(TASKS) == names.SUPERNET_SPACES
    search = SPEC["properties"]["search"]["properties"]
    assert search["space"]["enum"] == list(names.SPACES)
    assert search["strategy"]["enum"] == list(names.STRATEGIES)
    dataset = SPEC["properties"]["trainer"]["properties"]["dataset"]["properties"]["name"]
    assert dataset["enum"] == list(names.DATASETS)


def test_chart_and_manifests_carry_the_same_crd():
    chart = yaml.safe_load((REPO / "helm/kubenas/crds/experiments.yaml").read_text())
    assert chart == CRD
    docs = [d for d in yaml.safe_load_all((REPO / "manifests/kubenas.yaml").read_text()) if d]
    assert [d for d in docs if d["metadata"]["name"] == "experiments.kubenas.dev"] == [CRD]


def test_crd_defaults_are_the_loaders_defaults():
    defaults = {p: s["default"] for p, s in _walk(SPEC, "spec") if "default" in s}
    assert defaults == {"spec.search.space": names.DEFAULT_SPACE,
                        "spec.search.strategy": names.DEFAULT_STRATEGY}
    exp = check(_set(_set(FULL, "spec.search.space", KeyError), "spec.search.strategy", KeyError))
    assert (exp.space, exp.strategy) == (names.DEFAULT_SPACE, names.DEFAULT_STRATEGY)


def _object_fields():
    """(path, required?) of each mapping field FULL sets, from the CRD's ``required`` lists."""
    out = [("spec", True)]
    for path, schema in [("spec", SPEC)] + list(_walk(SPEC, "spec")):
        for key in schema.get("properties") or {}:
            child = f"{path}.{key}"
            try:
                _set(FULL, child, KeyError)
            except (KeyError, IndexError, TypeError):
                continue  # FULL does not set it
            out.append((child, key in (schema.get("required") or [])))
    return out


@pytest.mark.parametrize("path,required", _object_fields())
def test_required_in_the_crd_exactly_when_the_parser_requires_it(path, required):
    doc = _set(FULL, path, KeyError)
    if required:
        with pytest.raises(ContractError, match=re.escape(path)):
            check(doc)
    else:
        check(doc)


def _bounded():
    for path, schema in _walk(SPEC, "spec"):
        if schema.get("type") in ("integer", "number") and ("minimum" in schema or "maximum" in schema):
            yield path, schema, False
        items = schema.get("items") or {}
        if schema.get("type") == "array" and items.get("type") in ("integer", "number"):
            yield path, items, True


def _edge_values(schema: dict):
    """(inside, outside) pairs at each bound the schema states."""
    step = 1 if schema["type"] == "integer" else 1e-6
    pairs = []
    if "minimum" in schema:
        low = schema["minimum"]
        pairs.append((low + step, low) if schema.get("exclusiveMinimum") else (low, low - 1))
    if "maximum" in schema:
        high = schema["maximum"]
        pairs.append((high - step, high) if schema.get("exclusiveMaximum") else (high, high + 1))
    return pairs


@pytest.mark.parametrize("path,schema,is_list", list(_bounded()), ids=lambda v: v if isinstance(v, str) else "")
def test_crd_bounds_are_the_parsers_bounds(path, schema, is_list):
    for inside, outside in _edge_values(schema):
        wrap = (lambda v: [v]) if is_list else (lambda v: v)
        check(_set(FULL, path, wrap(inside)))
        with pytest.raises(ContractError) as err:
            check(_set(FULL, path, wrap(outside)))
        field = f"{path}[0]" if is_list else path
        assert field in str(err.value)


@pytest.mark.parametrize("path", ["spec.budget.maxTrials", "spec.parallelism",
                                  "spec.workerPools[0].maxInFlight", "spec.workerPools[0].gpusPerTrial",
                                  "spec.controller.replicas", "spec.search.seed",
                                  "spec.final.topK", "spec.final.epochs"])
def test_counts_have_upper_bounds(path):
    assert "maximum" in dict(_walk(SPEC, "spec"))[path]
