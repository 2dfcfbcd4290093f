"""Identity of storage and per-namespace Secrets (pure, no cluster): the default storage
prefix carries the Experiment's namespace and UID, a re-created Experiment gets a fresh one
unless it names the old UID (annotation kubenas.dev/resume-from), and the S3 Secret of a
namespace is the admin's choice (KUBENAS_STORAGE_SECRETS, chart experiments.storageSecrets)."""

from __future__ import annotations

import pytest

from kubenas.contracts import ContractError
from kubenas.operator.controller_deployment import build_controller_deployment
from kubenas.operator.jobs import build_job
from kubenas.operator.settings import Settings
from kubenas.operator.validation import NotAllowed, parse_experiment_object, state_owner

from tests.operator.objects import experiment, trial

UID_A = "0a0a0a0a-0000-4000-8000-00000000000a"
UID_B = "0b0b0b0b-0000-4000-8000-00000000000b"
CHART = Settings.from_env({
    "KUBENAS_DEFAULT_STORAGE_URL": "s3://kubenas/experiments/",
    "KUBENAS_STORAGE_SECRET": "kubenas-s3",
    "KUBENAS_STORAGE_SECRETS": '{"team-a": "s3-team-a", "team-b": "s3-team-b"}',
    "KUBENAS_ALLOWED_SECRETS": "[]", "KUBENAS_ALLOWED_IMAGES": "[]",
    "KUBENAS_DEFAULT_WORKER_POOLS": '[{"name": "default"}]'})


def _bare(namespace="team-a", uid=UID_A, annotations=None, **over):
    exp = experiment(name="quickstart", namespace=namespace, uid=uid, **over)
    del exp["spec"]["storage"], exp["spec"]["workerPools"]
    if annotations:
        exp["metadata"]["annotations"] = annotations
    return exp


def _url(obj) -> str:
    return parse_experiment_object(obj, CHART).storage["url"]


def test_the_default_prefix_is_the_experiments_own_namespace_name_and_uid():
    assert _url(_bare()) == f"s3://kubenas/experiments/team-a/quickstart/{UID_A}"
    # same name, another namespace: another prefix (no shared state file)
    assert _url(_bare(namespace="team-b")) == f"s3://kubenas/experiments/team-b/quickstart/{UID_A}"
    # deleted and re-created: a new UID, a fresh prefix
    assert _url(_bare(uid=UID_B)) == f"s3://kubenas/experiments/team-a/quickstart/{UID_B}"
    # the Jobs (--store) and the controller (its Experiment) see the same prefix
    job = build_job(trial(experiment="quickstart", namespace="team-a", pool="default"),
                    _bare(), settings=CHART)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--store") + 1] == f"s3://kubenas/experiments/team-a/quickstart/{UID_A}"


def test_an_explicit_url_is_kept_and_the_state_owner_guards_it():
    exp = _bare()
    exp["spec"]["storage"] = {"url": "s3://mine/shared"}
    assert _url(exp) == "s3://mine/shared"
    assert state_owner(exp) == {"namespace": "team-a", "name": "quickstart", "uid": UID_A,
                                "resumeFrom": None}


def test_resume_from_names_the_old_uid_whose_prefix_and_state_are_continued():
    again = _bare(uid=UID_B, annotations={"kubenas.dev/resume-from": UID_A})
    assert _url(again) == f"s3://kubenas/experiments/team-a/quickstart/{UID_A}"
    assert state_owner(again)["uid"] == UID_B and state_owner(again)["resumeFrom"] == UID_A


@pytest.mark.parametrize("value", ["yes", "", "0A0A0A0A-0000-4000-8000-00000000000A", "../x"])
def test_a_resume_from_that_is_not_a_uid_is_refused_naming_the_annotation(value):
    with pytest.raises(ContractError, match=r"^metadata\.annotations\.kubenas\.dev/resume-from: "
                                            r"must be the UID of an earlier Experiment"):
        parse_experiment_object(_bare(annotations={"kubenas.dev/resume-from": value}), CHART)


def test_each_namespace_gets_the_secret_the_admin_named_for_it():
    assert parse_experiment_object(_bare("team-a"), CHART).storage["secretName"] == "s3-team-a"
    assert parse_experiment_object(_bare("team-b"), CHART).storage["secretName"] == "s3-team-b"
    assert parse_experiment_object(_bare("other"), CHART).storage["secretName"] == "kubenas-s3"
    dep = build_controller_deployment(_bare("team-a"), CHART)
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-team-a"
    # the controller pod computes the same effective spec from the same variables
    assert Settings.from_env({e["name"]: e["value"] for e in env.values() if "value" in e}
                             ).storage_secret_for("team-a") == "s3-team-a"


@pytest.mark.parametrize("namespace,secret", [("team-a", "s3-team-b"), ("team-a", "kubenas-s3"),
                                              ("other", "s3-team-a")])
def test_an_experiment_cannot_pick_another_namespaces_or_the_shared_secret(namespace, secret):
    exp = _bare(namespace)
    exp["spec"]["storage"] = {"url": "s3://kubenas/x", "secretName": secret}
    with pytest.raises(NotAllowed) as err:
        parse_experiment_object(exp, CHART)
    assert err.value.reason == "SecretNotAllowed"
    assert str(err.value).startswith(f"spec.storage.secretName: {secret!r} is not an allowed Secret")


def test_a_mapping_that_names_no_secret_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="KUBENAS_STORAGE_SECRETS: 'team-a' must name a Secret"):
        Settings.from_env({"KUBENAS_STORAGE_SECRETS": '{"team-a": ""}'})
