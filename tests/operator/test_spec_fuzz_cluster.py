"""1,000 mutated Experiments through what `kubectl apply` meets (the real API server: the
CRD's structural schema, server-side dry run) and then through what the operator and the
controller check (``parse_experiment_object`` with the chart's policy, the strategy and
trainer checks of ``kubenas controller``). Each one is refused by kubectl (NaN or infinity: not JSON), by the API server (400/422,
naming a field under ``spec``), or refused by kubenas with a ContractError naming a field of
the object the API server would store, or accepted and runnable (its strategy samples).
Never another exception. Deterministic (seed 13); the counts are printed.

Nesting is cut at MAX_DEPTH levels: the v1.20 API server's time on a document grows about
2x per level of nesting under a field that preserves unknown fields (15 levels: 0.8 s,
20: 27 s, measured with server-side dry run); that is the API server's to bound
(kubernetes/kubernetes#109099), not something a CRD schema can say.

A refusal by kubenas is what the operator turns into Accepted=False / Valid=False on the
Experiment (tests/operator/test_cluster.py, tests/e2e): never a stuck Experiment."""

from __future__ import annotations

import collections
import copy
import json
import random

import pytest

from kubenas.controller import strategy_factory
from kubenas.contracts import ContractError
from kubenas.operator.kube import KubeError, custom_path
from kubenas.operator.settings import Settings
from kubenas.operator.validation import parse_experiment_object
from kubenas.trainer.config import validate_trainer_config

from tests.kubenas.test_spec_fuzz import EXAMPLES, _mutate, _names_a_field, _reason

CASES = 1000
SEED = 13
CHART = Settings.from_env({
    "KUBENAS_IMAGE": "ghcr.io/kubenas/kubenas:0.1.0",
    "KUBENAS_DEFAULT_STORAGE_URL": "s3://kubenas/experiments",
    "KUBENAS_STORAGE_SECRET": "kubenas-s3", "KUBENAS_ALLOWED_IMAGES": "[]",
    "KUBENAS_ALLOWED_SECRETS": "[]",
    "KUBENAS_DEFAULT_WORKER_POOLS": '[{"name": "default", "maxInFlight": 2}]'})
BARE = {"apiVersion": "kubenas.dev/v1", "kind": "Experiment", "metadata": {"name": "bare"},
        "spec": {"budget": {"maxTrials": 4}, "trainer": {"dataset": {"name": "digits"}}}}
BASES = {"experiment": EXAMPLES["experiment"], "bare": BARE}
MAX_DEPTH = 12


def _cap_depth(node, depth: int = MAX_DEPTH):
    if isinstance(node, dict):
        return {k: _cap_depth(v, depth - 1) for k, v in node.items()} if depth > 0 else {}
    if isinstance(node, list):
        return [_cap_depth(v, depth - 1) for v in node] if depth > 0 else []
    return node


def _mutated(rng: random.Random) -> tuple[str, dict, list]:
    """A copy of a base Experiment with 1-3 mutations of its spec (and of keys beside it)."""
    name = rng.choice(sorted(BASES))
    doc = copy.deepcopy(BASES[name])
    body = {"spec": doc["spec"]}
    kinds = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if body:   # spec itself may have gone ("missing")
            kinds.append(_mutate(body, rng))
    doc = {**{k: v for k, v in doc.items() if k != "spec"}, **_cap_depth(body),
           "metadata": {"name": f"fuzz-{rng.randrange(10**6)}"}}
    return name, doc, kinds


def _kubenas_verdict(stored: dict) -> str:
    """What the operator and the controller pod say of an object the API server took."""
    try:
        exp = parse_experiment_object(stored, CHART)
        factory = strategy_factory(exp)
        validate_trainer_config(exp.trainer, space=exp.space, where="spec.trainer")
    except ContractError as exc:
        assert _names_a_field(stored, str(exc)), f"names no field: {str(exc)[:300]}"
        return "kubenas " + _reason(str(exc))
    factory().ask()
    return "accepted"


def _one(kube, namespace: str, doc: dict) -> str:
    try:   # NaN and infinities have no JSON form: kubectl refuses the file before sending it
        json.dumps(doc, allow_nan=False)
    except ValueError:
        return "kubectl rejected (not JSON)"
    try:
        stored = kube.request("POST", custom_path("experiments", namespace),
                              [("dryRun", "All")], body=doc)
    except KubeError as exc:
        assert exc.status in (400, 422), f"{exc.status}: {exc}"
        assert "spec" in str(exc), f"the API server's refusal names no field: {str(exc)[:300]}"
        return "schema rejected"
    return _kubenas_verdict(stored)


@pytest.mark.timeout(900)
def test_a_thousand_mutated_experiments_through_the_api_server_and_the_operator(env, capsys):
    rng = random.Random(SEED)
    counts: dict = collections.defaultdict(collections.Counter)
    for i in range(CASES):
        base, doc, kinds = _mutated(rng)
        try:
            verdict = _one(env.kube, env.ns, doc)
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure we look for
            raise AssertionError(f"case {i} ({base}, {kinds}): {type(exc).__name__}: {exc}") from exc
        counts[kinds[0] if len(kinds) == 1 else "2-3 mutations"][verdict.split(" ")[0]] += 1
        counts["(all)"][verdict] += 1
    total = counts["(all)"]
    with capsys.disabled():
        print(f"\ncluster spec fuzz, {CASES} mutated Experiments (seed {SEED}): API server "
              f"dry-run create, then operator + controller validation:")
        for kind in sorted(k for k in counts if k != "(all)"):
            c = counts[kind]
            print(f"  {kind:16s} kubectl-rejected {c['kubectl']:4d}  schema-rejected "
                  f"{c['schema']:4d}  kubenas-rejected {c['kubenas']:4d}  accepted "
                  f"{c['accepted']:4d}")
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    assert sum(total.values()) == CASES
    assert total["accepted"] > 0 and total["schema rejected"] > 0
    assert any(k.startswith("kubenas rejected") for k in total)
    # a dry run stores nothing
    assert env.kube.list_all(custom_path("experiments", env.ns))[0] == []
