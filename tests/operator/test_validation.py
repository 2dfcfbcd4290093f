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
