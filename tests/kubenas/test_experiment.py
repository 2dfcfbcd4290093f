"""A bad experiment file gets one clear message naming the field."""

import pytest
import yaml

from kubenas.contracts import ContractError
from kubenas.experiment import index_of, load_experiment, parse_experiment, trial_id

GOOD = {"apiVersion": "kubenas.dev/v1", "kind": "Experiment", "metadata": {"name": "demo"},
        "spec": {"search": {"space": "cnn", "strategy": "reinforce", "seed": 3},
                 "budget": {"maxTrials": 8}, "parallelism": 2,
                 "trainer": {"dataset": {"name": "digits"}},
                 "workerPools": [{"name": "pool-a", "nodeSelector": {"kubenas.dev/pool": "pool-a"},
                                  "gpusPerTrial": 1, "maxInFlight": 2}]}}


def _with(path, value):
    import copy
    doc = copy.deepcopy(GOOD)
    node = doc
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


def test_good_file_parses():
    exp = parse_experiment(GOOD)
    assert (exp.name, exp.space, exp.strategy, exp.seed, exp.max_trials, exp.parallelism) == \
        ("demo", "cnn", "reinforce", 3, 8, 2)
    assert exp.worker_pools[0].gpus_per_trial == 1 and exp.worker_pools[0].max_in_flight == 2


@pytest.mark.parametrize("path,value,message", [
    ("spec.budget.maxTrials", 0, "spec.budget.maxTrials: must be an integer >= 1, got 0"),
    ("spec.budget", KeyError, "spec.budget: is required"),
    ("spec.search.space", "transformer", "spec.search.space: must be one of"),
    ("spec.search.strategy", "bayes", "spec.search.strategy: must be one of"),
    ("spec.search.sead", 1, "spec.search.sead: unknown field"),
    ("spec.parallelism", "two", "spec.parallelism: must be an integer >= 1, got 'two'"),
    ("metadata.name", "Bad_Name", "metadata.name: must be a DNS-1123 label"),
    ("spec.workerPools.0.gpusPerTrial", -1, "spec.workerPools[0].gpusPerTrial: must be an integer >= 0"),
    ("spec.workerPools.0.maxInFlight", 0, "spec.workerPools[0].maxInFlight"),
    ("spec.storage", {"url": "s3://key:secret@bucket/x"}, "spec.storage.url: must not carry credentials"),
    ("kind", "Job", "kind: must be 'Experiment'"),
    # unknown keys at every level, with a "did you mean"
    ("bogus", 1, "bogus: unknown field (known: apiVersion, kind, metadata, spec)"),
    ("spek", {}, "spek: unknown field (did you mean 'spec'?)"),
    ("metadata.nmae", "x", "metadata.nmae: unknown field (did you mean 'name'?)"),
    ("spec.budget.maxTrails", 3, "spec.budget.maxTrails: unknown field (did you mean 'maxTrials'?)"),
    ("spec.workerPools.0.maxInFligth", 3, "spec.workerPools[0].maxInFligth: unknown field (did you mean"),
    ("spec.workerPools.0.resources", {"cpu": "1", "gpu": 1}, "spec.workerPools[0].resources.gpu: unknown"),
    ("spec.workerPools.0.tolerations", [{"key": "a", "efect": "NoSchedule"}],
     "spec.workerPools[0].tolerations[0].efect: unknown field (did you mean 'effect'?)"),
    ("spec.workerPools.0.affinity", {"nodeAfinity": {}}, "spec.workerPools[0].affinity.nodeAfinity: unknown"),
    ("spec.jobSettings", {"backofLimit": 1}, "spec.jobSettings.backofLimit: unknown field (did you mean"),
    ("spec.storage", {"urll": "s3://b/p"}, "spec.storage.urll: unknown field (did you mean 'url'?)"),
    # spec.controller
    ("spec.controller", {"replicas": "two"}, "spec.controller.replicas: must be an integer >= 1, got 'two'"),
    ("spec.controller", {"replicas": 17}, "spec.controller.replicas: must be an integer <= 16, got 17"),
    ("spec.controller", {"replica": 2}, "spec.controller.replica: unknown field (did you mean 'replicas'?)"),
    ("spec.controller", {"resources": {"requests": {"cpu": "lots"}}},
     "spec.controller.resources.requests.cpu: must be a Kubernetes quantity"),
    ("spec.controller", {"nodeSelector": {"pool": 1}}, "spec.controller.nodeSelector.pool: must be a string"),
    ("spec.controller", [], "spec.controller: must be a mapping, got list"),
    # upper bounds
    ("spec.budget.maxTrials", 1_000_001, "spec.budget.maxTrials: must be an integer <= 1000000"),
    ("spec.workerPools.0.maxInFlight", 10_001, "spec.workerPools[0].maxInFlight: must be an integer <= 10000"),
    ("spec.parallelism", 10_001, "spec.parallelism: must be an integer <= 10000"),
    ("spec.search.seed", 2**32, "spec.search.seed: must be an integer <= 4294967295"),
    ("spec.jobSettings", {"activeDeadlineSeconds": 0}, "spec.jobSettings.activeDeadlineSeconds: must be an integer >= 1"),
])
def test_bad_fields_are_named(path, value, message):
    with pytest.raises(ContractError) as err:
        parse_experiment(_with(path, value))
    assert message in str(err.value)


def test_spec_controller_is_kept_when_valid():
    doc = _with("spec.controller", {"replicas": 16, "resources": {"requests": {"cpu": "500m"}},
                                    "nodeSelector": {"pool": "a"}, "tolerations": [{"operator": "Exists"}],
                                    "affinity": {"nodeAffinity": {}}})
    assert parse_experiment(doc).controller["replicas"] == 16
    assert parse_experiment(_with("spec.budget.maxTrials", 1_000_000)).max_trials == 1_000_000


def test_deep_nesting_is_refused_with_the_path():
    deep = {}
    node = deep
    for _ in range(100):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ContractError, match=r"^spec\.search\.spaceOptions\.a\.a.*: nested deeper than 32"):
        parse_experiment(_with("spec.search.spaceOptions", deep))


def test_duplicate_pool_names_rejected():
    doc = _with("spec.workerPools", [{"name": "a"}, {"name": "a"}])
    with pytest.raises(ContractError, match=r"spec.workerPools\[1\].name: duplicate pool name 'a'"):
        parse_experiment(doc)


def test_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec:\n  search: [unclosed\n")
    with pytest.raises(ContractError, match=r"bad.yaml: line \d+, column \d+ not valid YAML"):
        load_experiment(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(_with("spec.budget.maxTrials", "lots")))
    with pytest.raises(ContractError, match=r"wrong.yaml: spec.budget.maxTrials"):
        load_experiment(wrong)
    with pytest.raises(ContractError, match="cannot read experiment file"):
        load_experiment(tmp_path / "missing.yaml")


def test_trial_ids_are_stable_and_invertible():
    assert trial_id("demo", 7) == "demo-00007"
    assert index_of(trial_id("demo-x", 123)) == 123
