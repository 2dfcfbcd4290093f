"""The operator's view of a spec: what `kubenas run` refuses, the operator refuses too, with
the field named (a ContractError becomes the Experiment's Accepted=False condition), never a
ValueError from deep inside a builder (``replicas: "two"`` used to crash-loop)."""

from __future__ import annotations

import pytest

from kubenas.contracts import ContractError
from kubenas.operator.controller_deployment import build_controller_deployment
from kubenas.operator.settings import Settings
from kubenas.operator.validation import parse_experiment_object

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
