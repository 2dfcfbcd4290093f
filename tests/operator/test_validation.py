"""The operator's view of a spec: what `kubenas run` refuses, the operator refuses too, with
the field named (a ContractError becomes the Experiment's Accepted=False condition), never a
ValueError from deep inside a builder (``replicas: "two"`` used to crash-loop)."""

from __future__ import annotations

import pytest

from kubenas.contracts import ContractError
from kubenas.operator.controller_deployment import build_controller_deployment
from kubenas.operator.settings import Settings
from kubenas.operator.validation import NotAllowed, parse_experiment_object

from tests.operator.objects import experiment


@pytest.mark.parametrize("controller,message", [
    ({"replicas": "two"}, "spec.controller.replicas: must be an integer >= 1, got 'two'"),
    ({"replicas": 100}, "spec.controller.replicas: must be an integer <= 16, got 100"),
    ({"replica": 2}, "spec.controller.replica: unknown field (did you mean 'replicas'?)"),
    ({"tolerations": [{"operator": "Maybe"}]}, "spec.controller.tolerations[0].operator: must be one of"),
])
def test_a_bad_spec_controller_is_a_contract_error_naming_the_field(controller, message):
    exp = experiment(controller=controller)
    for check in (lambda: parse_experiment_object(exp, Settings()),
                  lambda: build_controller_deployment(exp, Settings())):
        with pytest.raises(ContractError) as err:
            check()
        assert message in str(err.value)


def test_a_valid_spec_controller_places_the_deployment():
    exp = experiment(controller={"replicas": 3, "nodeSelector": {"kubenas.dev/pool": "ctl"}})
    dep = build_controller_deployment(exp, Settings())
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"kubenas.dev/pool": "ctl"}


@pytest.mark.parametrize("spec,message", [
    ({"image": "  "}, "spec.image: must be a non-empty image reference"),
    ({"storage": {"url": "s3://b/x", "secretName": "Bad_Name"}}, "spec.storage.secretName: must be a Secret name"),
    ({"budget": {"maxTrials": 2_000_000}}, "spec.budget.maxTrials: must be an integer <= 1000000"),
])
def test_the_operator_refuses_what_the_parser_refuses(spec, message):
    with pytest.raises(ContractError, match=message.replace("[", r"\[")):
        parse_experiment_object(experiment(**spec), Settings())


CHART = Settings.from_env({"KUBENAS_IMAGE": "registry.example.com/ml/kubenas:0.1.0",
                           "KUBENAS_STORAGE_SECRET": "kubenas-s3",
                           "KUBENAS_ALLOWED_IMAGES": '["registry.example.com/team/*"]',
                           "KUBENAS_ALLOWED_SECRETS": '["team-s3"]'})


def test_the_policy_is_the_charts_lists_plus_its_own_image_and_secret():
    assert CHART.image_policy() == ["registry.example.com/ml/kubenas:0.1.0",
                                    "registry.example.com/team/*"]
    assert CHART.secret_policy() == ["kubenas-s3", "team-s3"]
    empty = Settings.from_env({"KUBENAS_IMAGE": "kubenas:1", "KUBENAS_ALLOWED_IMAGES": "[]",
                               "KUBENAS_ALLOWED_SECRETS": "[]"})
    assert empty.image_policy() == ["kubenas:1"] and empty.secret_policy() == []
    assert Settings().image_policy() is None and Settings().secret_policy() is None
    with pytest.raises(ValueError, match="KUBENAS_ALLOWED_SECRETS: must be a JSON list of non-empty strings"):
        Settings(allowed_secrets=["", 3]).secret_policy()


@pytest.mark.parametrize("spec", [
    {},                                                   # the chart's image and Secret
    {"image": "registry.example.com/ml/kubenas:0.1.0"},
    {"image": "registry.example.com/team/nas:7"},         # a pattern the admin listed
    {"storage": {"url": "s3://b/x", "secretName": "team-s3"}},
])
def test_what_the_admin_allows_is_accepted(spec):
    exp = experiment(**spec)
    if not spec.get("storage"):
        del exp["spec"]["storage"]
    parse_experiment_object(exp, CHART.with_(default_storage_url="s3://kubenas/experiments"))


@pytest.mark.parametrize("spec,reason,message", [
    ({"image": "evil.example.com/miner:latest"}, "ImageNotAllowed",
     "spec.image: 'evil.example.com/miner:latest' is not an allowed image (allowed: "
     "registry.example.com/ml/kubenas:0.1.0, registry.example.com/team/*; the chart's "
     "experiments.allowedImages)"),
    ({"image": "registry.example.com/ml/kubenas:0.1.0-evil"}, "ImageNotAllowed", "spec.image: "),
    ({"storage": {"url": "s3://b/x", "secretName": "other-team-s3"}}, "SecretNotAllowed",
     "spec.storage.secretName: 'other-team-s3' is not an allowed Secret (allowed: kubenas-s3, "
     "team-s3; the chart's experiments.allowedSecrets)"),
])
def test_an_image_or_secret_the_admin_did_not_allow_is_refused_with_its_reason(spec, reason, message):
    with pytest.raises(NotAllowed) as err:
        parse_experiment_object(experiment(**spec), CHART)
    assert err.value.reason == reason and str(err.value).startswith(message)
    assert isinstance(err.value, ContractError), "refused like any bad spec: no Job, no Deployment"
    with pytest.raises(NotAllowed):
        build_controller_deployment(experiment(**spec), CHART)


def test_without_a_policy_an_operator_checks_nothing():
    """An operator started without the chart's variables (tests, development)."""
    parse_experiment_object(experiment(image="anything:1"), Settings())


# An Experiment in namespace team-a writes only under the chart's prefix for team-a, or
# where the admin allows (experiments.allowedStorage, {namespace} standing for its own).
STORAGE = Settings.from_env({"KUBENAS_DEFAULT_STORAGE_URL": "s3://kubenas/experiments",
                             "KUBENAS_ALLOWED_STORAGE": '["s3://archive/{namespace}", "s3://scratch/"]'})


def _in(namespace: str, url: str) -> dict:
    exp = experiment(storage={"url": url})
    exp["metadata"].update(namespace=namespace, uid="0a1b2c3d-0000-4000-8000-000000000001")
    return exp


def test_the_storage_policy_is_the_namespaces_own_prefix_plus_the_charts_list():
    assert STORAGE.storage_policy("team-a") == [
        "s3://kubenas/experiments/team-a/", "s3://archive/team-a/", "s3://scratch/"]
    bare = Settings.from_env({"KUBENAS_DEFAULT_STORAGE_URL": "s3://kubenas/experiments/",
                              "KUBENAS_ALLOWED_STORAGE": "[]"})
    assert bare.storage_policy("team-b") == ["s3://kubenas/experiments/team-b/"]
    assert Settings(default_storage_url="s3://kubenas/x").storage_policy("a") is None


@pytest.mark.parametrize("url", [
    "s3://kubenas/experiments/team-a/mine",
    "s3://kubenas/experiments/team-a/deep/er/still",
    "s3://kubenas/experiments/team-a",                   # the namespace's whole prefix
    "s3://archive/team-a/2026/run-1",
    "s3://scratch/anyone",
])
def test_an_explicit_storage_url_under_an_allowed_prefix_is_accepted(url):
    exp = parse_experiment_object(_in("team-a", url), STORAGE)
    assert exp.storage["url"] == url


@pytest.mark.parametrize("url", [
    "s3://kubenas/experiments/team-b/quickstart",        # another team's state
    "s3://kubenas/experiments/team-ab/x",                # a prefix by characters, not by segment
    "s3://kubenas/experiments",                          # every team's state
    "s3://kubenas/experiments/team-a/../team-b/x",       # a server may normalise '..'
    "s3://kubenas/experiments/team-a/./x",
    "s3://archive/team-b/x",
    "s3://other-bucket/team-a",
])
def test_an_explicit_storage_url_outside_the_namespaces_prefix_is_refused(url):
    with pytest.raises(NotAllowed) as err:
        parse_experiment_object(_in("team-a", url), STORAGE)
    assert err.value.reason == "StorageNotAllowed"
    assert str(err.value) == (
        f"spec.storage.url: {url!r} is outside this namespace's storage (allowed: under "
        "s3://kubenas/experiments/team-a/, s3://archive/team-a/, s3://scratch/; omit "
        "spec.storage.url for the Experiment's own prefix, or see the chart's "
        "experiments.allowedStorage)")
    with pytest.raises(NotAllowed):
        build_controller_deployment(_in("team-a", url), STORAGE)


def test_without_an_explicit_url_the_experiment_gets_its_own_prefix_and_passes():
    exp = _in("team-a", "unused")
    del exp["spec"]["storage"]["url"]
    parsed = parse_experiment_object(exp, STORAGE)
    assert parsed.storage["url"] == (
        "s3://kubenas/experiments/team-a/exp1/0a1b2c3d-0000-4000-8000-000000000001")


def test_an_enas_experiment_is_accepted_for_the_cluster():
    exp = parse_experiment_object(experiment(search={"space": "enas_macro", "strategy": "enas",
                                                     "seed": 0}), Settings())
    assert (exp.space, exp.strategy) == ("enas_macro", "enas")


def test_a_final_phase_is_parsed_with_its_defaults_for_the_cluster_controller():
    exp = parse_experiment_object(experiment(final={"topK": 2, "epochs": 3}), Settings())
    assert (exp.final["topK"], exp.final["epochs"], exp.final["trainOn"]) == (2, 3, "train+validation")
    assert set(exp.final["grid"]) == {"learningRate", "weightDecay", "bnEpsilon", "lrDecayEpoch"}
    with pytest.raises(ContractError, match=r"^spec\.final\.topK: "):
        parse_experiment_object(experiment(final={"topK": 0}), Settings())


def test_an_enas_experiments_controller_is_one_pod_on_its_first_pool_with_its_gpus():
    exp = experiment(search={"space": "enas_macro", "strategy": "enas", "seed": 0},
                     controller={"replicas": 2})
    pod = build_controller_deployment(exp, Settings())["spec"]
    assert pod["replicas"] == 1                       # the search is one process
    spec = pod["template"]["spec"]
    assert spec["nodeSelector"] == {"kubenas.dev/pool": "pool-a"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"memory": "256Mi", "nvidia.com/gpu": "1"}}
    # spec.controller still places it where it says
    moved = experiment(search={"space": "enas_macro", "strategy": "enas", "seed": 0},
                       controller={"nodeSelector": {"kubenas.dev/pool": "big-gpu"}})
    spec = build_controller_deployment(moved, Settings())["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"kubenas.dev/pool": "big-gpu"}
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
