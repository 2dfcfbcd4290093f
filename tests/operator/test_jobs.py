"""The Job builder is a pure function of (Trial, Experiment): no cluster needed."""

from __future__ import annotations

import json

import pytest

from kubenas.contracts import Architecture, ContractError
from kubenas.operator import constants as C
from kubenas.operator.jobs import build_job
from kubenas.operator.naming import job_name, label_value

from tests.operator.objects import CNN_ARCH, experiment, trial


def _container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def test_job_invokes_train_child_with_the_trials_architecture_and_settings():
    job = build_job(trial(), experiment(), image="img:1")
    c = _container(job)
    assert c["command"] == ["kubenas"]
    args = c["args"]
    assert args[0] == "train-child"
    opts = dict(zip(args[1::2], args[2::2]))
    assert opts["--experiment"] == "exp1"
    assert opts["--trial-id"] == "exp1-00000"
    assert opts["--store"] == "s3://kubenas/exp"
    assert Architecture.from_json(opts["--architecture-json"]).to_dict() == \
        Architecture.from_dict(CNN_ARCH).to_dict()
    assert json.loads(opts["--trainer-config-json"]) == {
        "dataset": {"name": "digits"}, "epochs": 1, "batchSize": 32}
    assert c["image"] == "img:1"


def test_trial_trainer_settings_win_over_the_experiments():
    job = build_job(trial(trainer={"epochs": 3}), experiment())
    opts = dict(zip(_container(job)["args"][1::2], _container(job)["args"][2::2]))
    assert json.loads(opts["--trainer-config-json"]) == {"epochs": 3}


def test_image_and_child_command():
    assert _container(build_job(trial(), experiment()))["image"] == C.DEFAULT_IMAGE
    exp = experiment(image="registry.local/kubenas:dev")
    job = build_job(trial(), exp, image="ignored", child_command=["python", "/x/fake.py"])
    assert _container(job)["image"] == "registry.local/kubenas:dev"
    assert _container(job)["command"] == ["python", "/x/fake.py"]


def test_name_is_deterministic_and_fits_63_characters():
    long = "e" * 50 + "-00017"
    a = build_job(trial(name=long, experiment="e" * 50), experiment(name="e" * 50))
    b = build_job(trial(name=long, experiment="e" * 50), experiment(name="e" * 50))
    assert a["metadata"]["name"] == b["metadata"]["name"] == job_name(long)
    assert len(a["metadata"]["name"]) <= 63
    assert job_name("exp1-00000") == "kubenas-exp1-00000"
    # two long names differing only at the end do not collide
    assert job_name("x" * 60 + "-1") != job_name("x" * 60 + "-2")
    assert label_value(long) == long
    assert len(label_value("y" * 80)) <= 63


def test_gpu_resources_placement_and_security():
    job = build_job(trial(pool="pool-a"), experiment())
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"},
                              "limits": {"memory": "256Mi", "nvidia.com/gpu": "1"}}
    assert pod["nodeSelector"] == {"kubenas.dev/pool": "pool-a"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]

    cpu_only = build_job(trial(pool="pool-b"), experiment())
    c = _container(cpu_only)
    assert c["resources"] == {"requests": {"cpu": "1"}}       # no GPU, quantities as strings
    assert "tolerations" not in cpu_only["spec"]["template"]["spec"]


def test_credentials_come_from_the_secret_never_inline():
    env = {e["name"]: e for e in _container(build_job(trial(), experiment()))["env"]}
    assert env["KUBENAS_S3_ENDPOINT"]["value"] == "http://127.0.0.1:8333"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"] == {"secretKeyRef": {"name": "s3-creds", "key": key}}
    no_secret = experiment(storage={"url": "s3://b/p"})
    names = {e["name"] for e in _container(build_job(trial(), no_secret))["env"]}
    assert "AWS_ACCESS_KEY_ID" not in names and "KUBENAS_S3_ENDPOINT" not in names


def test_labels_owner_and_job_settings():
    job = build_job(trial(), experiment())
    meta = job["metadata"]
    for labels in (meta["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["kubenas.dev/experiment"] == "exp1"
        assert labels["kubenas.dev/trial"] == "exp1-00000"
        assert labels["kubenas.dev/pool"] == "pool-a"
        assert labels["app.kubernetes.io/name"] == "kubenas"
        assert labels["app.kubernetes.io/instance"] == "exp1"
        assert labels["app.kubernetes.io/component"] == "trial"
        assert labels["app.kubernetes.io/managed-by"] == "kubenas-operator"
        assert labels["app.kubernetes.io/part-of"] == "kubenas"
    assert meta["ownerReferences"] == [{"apiVersion": "kubenas.dev/v1", "kind": "Trial",
                                        "name": "exp1-00000", "uid": "uid-trial",
                                        "controller": True, "blockOwnerDeletion": True}]
    assert meta["namespace"] == "ns1"
    spec = job["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert "kubenas.dev/trial-name" in job["spec"]["template"]["metadata"]["annotations"]
    # defaults when the experiment sets nothing
    bare = build_job(trial(), experiment(jobSettings={}))["spec"]
    assert bare["backoffLimit"] == 2
    assert "activeDeadlineSeconds" not in bare and "ttlSecondsAfterFinished" not in bare


def test_pure_same_input_same_output():
    t, e = trial(), experiment()
    assert build_job(t, e) == build_job(t, e)
    assert t == trial() and e == experiment()   # inputs untouched


@pytest.mark.parametrize("make, needle", [
    (lambda: (trial(pool="pool-z"), experiment()), "spec.pool: 'pool-z' is not a worker pool"),
    (lambda: (trial(), experiment(workerPools=[{"name": "a"}, {"name": "a"}])), "duplicate pool name"),
    (lambda: (trial(), experiment(workerPools=[])), "spec.workerPools"),
    (lambda: (trial(), experiment(storage={"url": "file:///tmp/x"})), "spec.storage.url"),
    (lambda: (trial(arch={"space": "cnn", "spec": {"layers": []}}), experiment()), "spec.architecture.spec.layers"),
    (lambda: (trial(arch={"space": "nasbench201", "spec": {"edges": {
        "1<-0": "none", "2<-0": "none", "2<-1": "none", "3<-0": "none", "3<-1": "none",
        "3<-2": "none"}}}), experiment()), "does not match the experiment's search space"),
    (lambda: (trial(experiment="other"), experiment()), "spec.experiment"),
])
def test_bad_input_is_a_contract_error_naming_the_field(make, needle):
    t, e = make()
    with pytest.raises(ContractError, match=None) as info:
        build_job(t, e)
    assert needle in str(info.value)


def test_finished_jobs_expire_by_default_unless_the_experiment_says_otherwise():
    from kubenas.operator.settings import Settings

    defaults = Settings()
    bare = build_job(trial(), experiment(jobSettings={}), settings=defaults)["spec"]
    assert bare["ttlSecondsAfterFinished"] == 600
    chart = Settings.from_env({"KUBENAS_JOB_TTL_SECONDS": "120"})
    assert build_job(trial(), experiment(jobSettings={}),
                     settings=chart)["spec"]["ttlSecondsAfterFinished"] == 120
    own = build_job(trial(), experiment(), settings=chart)["spec"]   # the Experiment's 3600
    assert own["ttlSecondsAfterFinished"] == 3600
    keep = build_job(trial(), experiment(jobSettings={"ttlSecondsAfterFinished": 0}),
                     settings=chart)["spec"]
    assert keep["ttlSecondsAfterFinished"] == 0
