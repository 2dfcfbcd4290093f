"""Operator settings from the chart's environment, Experiment defaults and the controller
Deployment builder (pure, no cluster)."""

from __future__ import annotations

import json

import pytest

from kubenas.contracts import ContractError
from kubenas.operator.controller_deployment import (ANNOTATION_HASH, build_controller_deployment,
                                                    controller_name)
from kubenas.operator.jobs import build_job
from kubenas.operator.settings import Settings, apply_defaults
from kubenas.operator.validation import parse_experiment_object

from tests.operator.objects import experiment, trial

CHART_ENV = {   # what helm/kubenas/templates/operator.yaml sets
    "KUBENAS_WATCH_NAMESPACE": "team-a,team-b",
    "KUBENAS_IMAGE": "registry.example.com/ml/kubenas:0.1.0",
    "KUBENAS_IMAGE_PULL_POLICY": "IfNotPresent",
    "KUBENAS_IMAGE_PULL_SECRETS": '["regcred"]',
    "KUBENAS_CONTROLLER_SERVICE_ACCOUNT": "kubenas-controller",
    "KUBENAS_CONTROLLER_REPLICAS": "1",
    "KUBENAS_CONTROLLER_NODE_SELECTOR": '{"role":"cpu"}',
    "KUBENAS_CONTROLLER_TOLERATIONS": "[]",
    "KUBENAS_CONTROLLER_AFFINITY": "{}",
    "KUBENAS_CONTROLLER_RESOURCES": '{"requests":{"cpu":"500m","memory":"1Gi"}}',
    "KUBENAS_CONTROLLER_LABELS": '{"app.kubernetes.io/name":"kubenas","app.kubernetes.io/instance":"kubenas","app.kubernetes.io/component":"controller"}',
    "KUBENAS_CONTROLLER_METRICS_PORT": "9090",
    "KUBENAS_TRIAL_SERVICE_ACCOUNT": "kubenas-trial",
    "KUBENAS_POD_SECURITY_CONTEXT": '{"runAsNonRoot":true,"runAsUser":10001,"fsGroup":10001}',
    "KUBENAS_CONTAINER_SECURITY_CONTEXT": '{"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}',
    "KUBENAS_DEFAULT_WORKER_POOLS": '[{"name":"default","maxInFlight":2,"resources":{"cpu":"1","memory":"2Gi"}}]',
    "KUBENAS_DEFAULT_STORAGE_URL": "s3://kubenas/experiments",
    "KUBENAS_STORAGE_SECRET": "kubenas-s3",
    "KUBENAS_ALLOWED_IMAGES": "[]",
    "KUBENAS_ALLOWED_SECRETS": "[]",
    "KUBENAS_S3_ENDPOINT": "http://seaweedfs-s3.storage:8333",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def test_settings_from_the_charts_environment():
    s = Settings.from_env(CHART_ENV)
    assert s.image == "registry.example.com/ml/kubenas:0.1.0"
    assert s.image_pull_secrets == ["regcred"]
    assert s.controller_metrics_port == 9090 and s.controller_replicas == 1
    assert s.controller_node_selector == {"role": "cpu"}
    assert s.default_worker_pools[0]["name"] == "default"
    assert s.manage_controllers is True and s.child_command == ["kubenas"]
    empty = Settings.from_env({"KUBENAS_CONTROLLER_METRICS_PORT": "", "KUBENAS_S3_ENDPOINT": ""})
    assert empty.controller_metrics_port is None and empty.s3_endpoint is None
    assert Settings.from_env({}, image="x").image == "x"
    with pytest.raises(ValueError, match="KUBENAS_DEFAULT_WORKER_POOLS"):
        Settings.from_env({"KUBENAS_DEFAULT_WORKER_POOLS": "{not json"})
    with pytest.raises(ValueError, match="KUBENAS_IMAGE_PULL_SECRETS"):
        Settings.from_env({"KUBENAS_IMAGE_PULL_SECRETS": '{"a": 1}'})
    with pytest.raises(TypeError):
        Settings.from_env({}, colour="blue")


def test_defaults_fill_only_what_the_experiment_leaves_out():
    s = Settings.from_env(CHART_ENV)
    spec = apply_defaults("demo", {"search": {}}, s)
    assert spec["workerPools"] == json.loads(CHART_ENV["KUBENAS_DEFAULT_WORKER_POOLS"])
    assert spec["storage"] == {"url": "s3://kubenas/experiments/default/demo", "secretName": "kubenas-s3",
                               "endpoint": "http://seaweedfs-s3.storage:8333", "region": "us-east-1"}
    own = apply_defaults("demo", {"workerPools": [{"name": "gpu"}],
                                  "storage": {"url": "s3://mine/x", "secretName": "mine"}}, s)
    assert own["workerPools"] == [{"name": "gpu"}]
    assert own["storage"]["url"] == "s3://mine/x" and own["storage"]["secretName"] == "mine"
    bare = experiment()
    del bare["spec"]["workerPools"], bare["spec"]["storage"]
    with pytest.raises(ContractError, match="spec.workerPools"):
        parse_experiment_object(bare)
    exp = parse_experiment_object(bare, s)
    assert [p.name for p in exp.worker_pools] == ["default"]
    assert exp.storage["url"] == "s3://kubenas/experiments/ns1/exp1/uid-exp"


def test_job_uses_the_operators_pod_settings():
    s = Settings.from_env(CHART_ENV)
    job = build_job(trial(pool="default"), _bare(), settings=s)
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "registry.example.com/ml/kubenas:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "kubenas-trial"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["allowPrivilegeEscalation"] is False   # kept from the defaults
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "kubenas-s3"
    assert env["KUBENAS_S3_ENDPOINT"]["value"] == "http://seaweedfs-s3.storage:8333"
    opts = dict(zip(c["args"][1::2], c["args"][2::2]))
    assert opts["--store"] == "s3://kubenas/experiments/ns1/exp1/uid-exp"
    assert c["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}


def _bare():
    exp = experiment()
    del exp["spec"]["workerPools"], exp["spec"]["storage"]
    return exp


def test_controller_deployment():
    s = Settings.from_env(CHART_ENV)
    dep = build_controller_deployment(_bare(), s)
    assert dep["metadata"]["name"] == controller_name("exp1") == "kubenas-controller-exp1"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-exp"
    assert dep["metadata"]["labels"]["kubenas.dev/experiment"] == "exp1"
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    tpl = spec["template"]
    labels = tpl["metadata"]["labels"]
    assert all(labels[k] == v for k, v in spec["selector"]["matchLabels"].items())
    assert labels["app.kubernetes.io/instance"] == "kubenas"     # the chart's metrics Service selects it
    assert labels["kubenas.dev/experiment"] == "exp1"
    pod = tpl["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["kubenas"]
    assert c["args"] == ["controller", "--experiment", "exp1", "--namespace", "ns1",
                         "--metrics-port", "9090"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}}
    assert pod["serviceAccountName"] == "kubenas-controller"
    assert pod["nodeSelector"] == {"role": "cpu"}
    env = {e["name"]: e for e in c["env"]}
    assert env["KUBENAS_DEFAULT_STORAGE_URL"]["value"] == "s3://kubenas/experiments"
    assert json.loads(env["KUBENAS_DEFAULT_WORKER_POOLS"]["value"])[0]["name"] == "default"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "kubenas-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]

    parked = build_controller_deployment(_bare(), s, replicas=0)
    assert parked["spec"]["replicas"] == 0
    assert parked["metadata"]["annotations"][ANNOTATION_HASH] == dep["metadata"]["annotations"][ANNOTATION_HASH]
    other = build_controller_deployment(_bare(), s.with_(image="kubenas:2"))
    assert other["metadata"]["annotations"][ANNOTATION_HASH] != dep["metadata"]["annotations"][ANNOTATION_HASH]

    placed = _bare()
    placed["spec"]["controller"] = {"replicas": 2, "nodeSelector": {"kubenas.dev/pool": "pool-b"},
                                    "tolerations": [{"operator": "Exists"}]}
    dep = build_controller_deployment(placed, s)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"kubenas.dev/pool": "pool-b"}
    assert dep["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]
    with pytest.raises(ContractError):
        build_controller_deployment(_bare(), Settings())   # no pools, no storage anywhere
