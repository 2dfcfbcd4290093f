"""The chart renders what a cluster needs, wired the way docs/deploy.md says (no cluster)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubenas"
# `helm` fixtures are conftest.Helm objects (tests/helm/conftest.py).

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "PersistentVolume", "StorageClass", "PriorityClass",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}

# Every setting the operator reads to build controller Deployments and trial Jobs
# (docs/deploy.md, "What the chart hands the operator").
OPERATOR_ENV = [
    "KUBENAS_LOG_LEVEL", "MALLOC_ARENA_MAX", "KUBENAS_WATCH_NAMESPACE", "KUBENAS_OPERATOR_NAMESPACE",
    "KUBENAS_IMAGE", "KUBENAS_IMAGE_PULL_POLICY", "KUBENAS_IMAGE_PULL_SECRETS",
    "KUBENAS_CONTROLLER_SERVICE_ACCOUNT", "KUBENAS_CONTROLLER_REPLICAS",
    "KUBENAS_CONTROLLER_NODE_SELECTOR", "KUBENAS_CONTROLLER_TOLERATIONS",
    "KUBENAS_CONTROLLER_AFFINITY", "KUBENAS_CONTROLLER_RESOURCES", "KUBENAS_CONTROLLER_LABELS",
    "KUBENAS_CONTROLLER_METRICS_PORT", "KUBENAS_TRIAL_SERVICE_ACCOUNT",
    "KUBENAS_POD_SECURITY_CONTEXT", "KUBENAS_CONTAINER_SECURITY_CONTEXT",
    "KUBENAS_DEFAULT_WORKER_POOLS", "KUBENAS_DEFAULT_STORAGE_URL", "KUBENAS_STORAGE_SECRET",
    "KUBENAS_STORAGE_SECRETS", "KUBENAS_ALLOWED_IMAGES", "KUBENAS_ALLOWED_SECRETS",
    "KUBENAS_ALLOWED_STORAGE",
    "KUBENAS_JOB_TTL_SECONDS", "KUBENAS_UNSCHEDULABLE_DEADLINE_SECONDS",
    "KUBENAS_S3_ENDPOINT", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
]

FULL_VALUES = {
    "image": {"repository": "registry.example.com/ml/kubenas", "tag": "1.2.3",
              "pullPolicy": "Always", "pullSecrets": ["regcred"]},
    "watchNamespaces": ["team-a", "team-b"],
    "storage": {"endpoint": "http://seaweedfs.storage:8333", "region": "eu-west-1",
                "bucket": "nas-results", "prefix": "runs/2026", "existingSecret": "",
                "accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "s3cr3t"},
    "workerPools": [
        {"name": "a100", "nodeSelector": {"kubenas.dev/pool": "a100"},
         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
         "gpusPerTrial": 1, "maxInFlight": 8, "resources": {"cpu": "4", "memory": "16Gi"}},
        {"name": "cpu", "nodeSelector": {"kubenas.dev/pool": "cpu"}, "maxInFlight": 4},
    ],
    "operator": {"resyncSeconds": 10, "logLevel": "DEBUG",
                 "nodeSelector": {"node-role.kubernetes.io/system": "true"},
                 "tolerations": [{"key": "system", "operator": "Equal", "value": "true",
                                  "effect": "NoSchedule"}],
                 "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                     "nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
                 "resources": {"requests": {"cpu": "200m", "memory": "300Mi"},
                               "limits": {"memory": "1Gi"}},
                 "podAnnotations": {"example.com/team": "ml"}},
    "controller": {"replicas": 2, "nodeSelector": {"kubenas.dev/pool": "system"},
                   "tolerations": [{"key": "system", "operator": "Exists"}],
                   "affinity": {"podAntiAffinity": {}},
                   "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                 "limits": {"memory": "4Gi"}}},
    "metrics": {"enabled": True, "port": 9191,
                "serviceMonitor": {"enabled": False, "interval": "15s"}},
}


def _operator(docs, helm_, name: str = "kubenas-operator"):
    dep = helm_.one(docs, "Deployment", name)
    return dep, dep["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]["containers"][0]


def test_helm_lint_strict(helm):
    helm.run("lint", "--strict", str(CHART))
    helm.run("lint", "--strict", str(CHART), "-f", helm.values_file(FULL_VALUES),
             "--namespace", "nas-system")


def test_every_rendered_object_is_well_formed(helm):
    for values in (None, FULL_VALUES):
        docs = helm.template(values)
        assert docs, "helm template rendered nothing"
        for d in docs:
            what = f"{d.get('kind')} {d.get('metadata', {}).get('name')}"
            assert isinstance(d.get("apiVersion"), str) and d["apiVersion"], what
            assert isinstance(d.get("kind"), str) and d["kind"], what
            name = d["metadata"]["name"]
            assert DNS_SUBDOMAIN.match(name) and len(name) <= 63, what
            assert d["kind"] not in CLUSTER_SCOPED, f"{what}: the chart's templates make nothing cluster-scoped"
            assert d["metadata"].get("namespace"), f"{what}: namespaced objects carry their namespace"
            labels = d["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/instance") == "kubenas", what


def test_default_install_objects(helm):
    docs = helm.template(namespace="nas")
    got = sorted((d["kind"], d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs)
    assert got == sorted([
        ("ServiceAccount", "kubenas-operator", "nas"),
        ("ServiceAccount", "kubenas-controller", "nas"),
        ("ServiceAccount", "kubenas-trial", "nas"),
        ("Role", "kubenas-operator", "nas"),
        ("RoleBinding", "kubenas-operator", "nas"),
        ("Role", "kubenas-controller", "nas"),
        ("RoleBinding", "kubenas-controller", "nas"),
        ("Deployment", "kubenas-operator", "nas"),
        ("Service", "kubenas-operator-metrics", "nas"),
        ("Service", "kubenas-controller-metrics", "nas"),
    ])


def test_operator_pod_is_locked_down(helm):
    dep, pod, c = _operator(helm.template(), helm)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = c["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in csc["capabilities"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs an emptyDir on /tmp"
    assert pod["serviceAccountName"] == "kubenas-operator"
    assert c["image"] == f"ghcr.io/kubenas/kubenas:{APP_VERSION}"
    assert c["command"] == ["kubenas"] and c["args"][0] == "operator"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_operator_env_contract(helm):
    _, _, c = _operator(helm.template(namespace="nas"), helm)
    env = helm.env_of(c)
    assert [n for n in OPERATOR_ENV if n not in env] == []
    assert env["KUBENAS_WATCH_NAMESPACE"] == "nas"
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["KUBENAS_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["KUBENAS_IMAGE"] == c["image"]
    assert env["KUBENAS_CONTROLLER_SERVICE_ACCOUNT"] == "kubenas-controller"
    assert env["KUBENAS_TRIAL_SERVICE_ACCOUNT"] == "kubenas-trial"
    assert env["KUBENAS_DEFAULT_STORAGE_URL"] == "s3://kubenas/experiments"
    assert env["KUBENAS_STORAGE_SECRET"] == "kubenas-s3"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"secretKeyRef": {"name": "kubenas-s3", "key": key}}
    # JSON-valued settings parse, and the security contexts are the pod's own.
    for name in ("KUBENAS_IMAGE_PULL_SECRETS", "KUBENAS_CONTROLLER_NODE_SELECTOR",
                 "KUBENAS_CONTROLLER_TOLERATIONS", "KUBENAS_CONTROLLER_AFFINITY",
                 "KUBENAS_CONTROLLER_RESOURCES", "KUBENAS_CONTROLLER_LABELS",
                 "KUBENAS_POD_SECURITY_CONTEXT", "KUBENAS_CONTAINER_SECURITY_CONTEXT",
                 "KUBENAS_DEFAULT_WORKER_POOLS"):
        json.loads(env[name])
    _, pod, _ = _operator(helm.template(namespace="nas"), helm)
    assert json.loads(env["KUBENAS_POD_SECURITY_CONTEXT"]) == pod["securityContext"]
    assert json.loads(env["KUBENAS_CONTAINER_SECURITY_CONTEXT"]) == c["securityContext"]


def test_an_image_pinned_by_digest_runs_everywhere_by_digest(helm):
    digest = "sha256:" + "ab" * 32
    values = {"image": {"repository": "registry.example.com/ml/kubenas", "tag": "1.2.3",
                        "digest": digest, "pullPolicy": "IfNotPresent"}}
    _, _, c = _operator(helm.template(values, namespace="nas"), helm)
    pinned = f"registry.example.com/ml/kubenas@{digest}"
    # the operator runs it and hands the same reference to every controller and trial pod
    assert c["image"] == pinned and helm.env_of(c)["KUBENAS_IMAGE"] == pinned
    bad = {"image": {**values["image"], "digest": "latest"}}
    assert "digest" in helm.template_fails(bad)


def test_each_namespace_s3_secret_reaches_the_operator_as_one_mapping(helm):
    from kubenas.operator.settings import Settings

    mapping = {"team-a": "s3-team-a", "team-b": "s3-team-b"}
    _, _, c = _operator(helm.template({"experiments": {"storageSecrets": mapping}},
                                      namespace="nas"), helm)
    env = helm.env_of(c)
    assert json.loads(env["KUBENAS_STORAGE_SECRETS"]) == mapping
    settings = Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.storage_secret_for("team-a") == "s3-team-a"
    assert settings.storage_secret_for("elsewhere") == "kubenas-s3"
    assert settings.secret_policy("team-a") == ["s3-team-a"], "not the shared one"
    _, _, plain = _operator(helm.template(namespace="nas"), helm)
    assert json.loads(helm.env_of(plain)["KUBENAS_STORAGE_SECRETS"]) == {}
    assert "storageSecrets" in helm.template_fails(
        {"experiments": {"storageSecrets": {"team-a": "Not_A_Secret"}}})


def test_by_default_an_experiment_may_store_only_under_its_namespaces_prefix(helm):
    from kubenas.operator.settings import Settings

    def policy(values, namespace):
        env = helm.env_of(_operator(helm.template(values, namespace="nas"), helm)[2])
        return Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)}) \
            .storage_policy(namespace)

    assert policy({}, "team-a") == ["s3://kubenas/experiments/team-a/"]
    listed = {"experiments": {"allowedStorage": ["s3://archive/{namespace}"]}}
    assert policy(listed, "team-a") == ["s3://kubenas/experiments/team-a/", "s3://archive/team-a/"]
    assert "allowedStorage" in helm.template_fails(
        {"experiments": {"allowedStorage": ["/not/an/s3/url"]}})


def test_env_contract_is_documented():
    doc = (REPO / "docs" / "deploy.md").read_text()
    missing = [n for n in OPERATOR_ENV if f"`{n}`" not in doc]
    assert missing == [], f"docs/deploy.md does not describe {missing}"


def test_values_reach_the_objects(helm):
    docs = helm.template(FULL_VALUES, release="nas", namespace="nas-system")
    dep, pod, c = _operator(docs, helm, "nas-kubenas-operator")
    env = helm.env_of(c)
    image = "registry.example.com/ml/kubenas:1.2.3"
    assert c["image"] == image and env["KUBENAS_IMAGE"] == image
    assert c["imagePullPolicy"] == "Always" and env["KUBENAS_IMAGE_PULL_POLICY"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert json.loads(env["KUBENAS_IMAGE_PULL_SECRETS"]) == ["regcred"]
    op = FULL_VALUES["operator"]
    assert pod["nodeSelector"] == op["nodeSelector"]
    assert pod["tolerations"] == op["tolerations"]
    assert pod["affinity"] == op["affinity"]
    assert c["resources"] == op["resources"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "ml"
    assert env["KUBENAS_LOG_LEVEL"] == "DEBUG"
    assert c["args"] == ["operator", "--resync-seconds", "10", "--metrics-port", "9191"]
    ctl = FULL_VALUES["controller"]
    assert env["KUBENAS_CONTROLLER_REPLICAS"] == "2"
    assert json.loads(env["KUBENAS_CONTROLLER_NODE_SELECTOR"]) == ctl["nodeSelector"]
    assert json.loads(env["KUBENAS_CONTROLLER_TOLERATIONS"]) == ctl["tolerations"]
    assert json.loads(env["KUBENAS_CONTROLLER_AFFINITY"]) == ctl["affinity"]
    assert json.loads(env["KUBENAS_CONTROLLER_RESOURCES"]) == ctl["resources"]
    assert env["KUBENAS_CONTROLLER_METRICS_PORT"] == "9191"
    assert json.loads(env["KUBENAS_DEFAULT_WORKER_POOLS"]) == FULL_VALUES["workerPools"]
    assert env["KUBENAS_DEFAULT_STORAGE_URL"] == "s3://nas-results/runs/2026"
    assert env["KUBENAS_S3_ENDPOINT"] == "http://seaweedfs.storage:8333"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["KUBENAS_STORAGE_SECRET"] == "nas-kubenas-s3"
    assert env["KUBENAS_CONTROLLER_SERVICE_ACCOUNT"] == "nas-kubenas-controller"
    # A settings change rolls the operator.
    other = helm.template({**FULL_VALUES, "controller": {**ctl, "replicas": 3}},
                          release="nas", namespace="nas-system")
    key = "checksum/settings"
    assert (_operator(other, helm, "nas-kubenas-operator")[0]["spec"]["template"]["metadata"]
            ["annotations"][key] != dep["spec"]["template"]["metadata"]["annotations"][key])


def test_watch_namespaces_get_their_own_roles_and_identities(helm):
    docs = helm.template(FULL_VALUES, release="nas", namespace="nas-system")
    _, _, c = _operator(docs, helm, "nas-kubenas-operator")
    assert helm.env_of(c)["KUBENAS_WATCH_NAMESPACE"] == "team-a,team-b"
    assert [d["metadata"]["namespace"] for d in helm.find(docs, "ServiceAccount", "nas-kubenas-operator")] \
        == ["nas-system"]
    for ns in ("team-a", "team-b"):
        helm.one(docs, "Role", "nas-kubenas-operator", ns)
        helm.one(docs, "Role", "nas-kubenas-controller", ns)
        helm.one(docs, "ServiceAccount", "nas-kubenas-controller", ns)
        helm.one(docs, "ServiceAccount", "nas-kubenas-trial", ns)
        helm.one(docs, "Service", "nas-kubenas-controller-metrics", ns)
        op_binding = helm.one(docs, "RoleBinding", "nas-kubenas-operator", ns)
        assert op_binding["subjects"] == [{"kind": "ServiceAccount", "name": "nas-kubenas-operator",
                                           "namespace": "nas-system"}]
        ctl_binding = helm.one(docs, "RoleBinding", "nas-kubenas-controller", ns)
        assert ctl_binding["subjects"] == [{"kind": "ServiceAccount",
                                            "name": "nas-kubenas-controller", "namespace": ns}]
    # No permission in namespaces that were not listed, the release's own included.
    assert helm.find(docs, "Role", namespace="nas-system") == []
    assert helm.find(docs, "RoleBinding", namespace="nas-system") == []


def test_chart_made_secret(helm):
    docs = helm.template(FULL_VALUES, release="nas", namespace="nas-system")
    secrets = helm.find(docs, "Secret")
    # Pods read it in the namespaces of Experiments and of the operator.
    assert sorted(s["metadata"]["namespace"] for s in secrets) == ["nas-system", "team-a", "team-b"]
    for s in secrets:
        assert s["metadata"]["name"] == "nas-kubenas-s3"
        assert s["stringData"] == {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                                   "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    # With an existing Secret the chart makes none and points at it.
    docs = helm.template({"storage": {"existingSecret": "my-s3"}})
    assert helm.find(docs, "Secret") == []
    _, _, c = _operator(docs, helm)
    assert helm.env_of(c)["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "my-s3",
                                                                     "key": "AWS_ACCESS_KEY_ID"}}


def test_trial_identity_has_no_api_access(helm):
    docs = helm.template()
    trial = helm.one(docs, "ServiceAccount", "kubenas-trial")
    assert trial["automountServiceAccountToken"] is False
    for b in helm.find(docs, "RoleBinding"):
        assert all(s["name"] != "kubenas-trial" for s in b["subjects"])


def test_metrics_services_select_the_pods(helm):
    docs = helm.template()
    dep, _, c = _operator(docs, helm)
    svc = helm.one(docs, "Service", "kubenas-operator-metrics")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == c["ports"][0]["containerPort"] == 9090
    assert c["readinessProbe"]["httpGet"]["port"] == "metrics"
    # The controller Service selects exactly the labels the operator is told to set.
    ctl = helm.one(docs, "Service", "kubenas-controller-metrics")
    assert ctl["spec"]["selector"] == json.loads(helm.env_of(c)["KUBENAS_CONTROLLER_LABELS"])
    assert ctl["spec"]["clusterIP"] == "None"


def test_metrics_can_be_turned_off(helm):
    docs = helm.template({"metrics": {"enabled": False}})
    assert helm.find(docs, "Service") == []
    _, _, c = _operator(docs, helm)
    assert "--metrics-port" not in c["args"]
    assert "ports" not in c and "livenessProbe" not in c
    assert helm.env_of(c)["KUBENAS_CONTROLLER_METRICS_PORT"] == ""


def test_service_monitor_is_optional(helm):
    assert helm.find(helm.template(), "ServiceMonitor") == []
    values = {"watchNamespaces": ["team-a"],
              "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    docs = helm.template(values, extra=["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"])
    sm = helm.one(docs, "ServiceMonitor", "kubenas")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sorted(sm["spec"]["namespaceSelector"]["matchNames"]) == ["kubenas", "team-a"]
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    for svc in helm.find(docs, "Service"):
        labels = svc["metadata"]["labels"]
        assert sm["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/component"] in sm["spec"]["selector"]["matchExpressions"][0]["values"]
    # On a cluster without the Prometheus Operator the install stops with a clear message.
    msg = helm.template_fails(values)
    assert "metrics.serviceMonitor.enabled" in msg and "ServiceMonitor CRD" in msg


def test_notes_tell_how_to_watch_an_experiment(helm, tmp_path: Path):
    # NOTES.txt only renders on install; render it through the same engine via a ConfigMap.
    chart = tmp_path / "kubenas"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n  namespace: x\n'
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n')
    out = helm.run("template", "kubenas", str(chart), "--namespace", "nas",
                   "--show-only", "templates/zz-notes.yaml").stdout
    notes = yaml.safe_load(out)["data"]["notes"]
    for expected in ("kubectl -n nas get experiments,trials,jobs",
                     "kubectl -n nas describe trial",
                     "kubectl -n nas logs job/",
                     "rollout status deployment/kubenas-operator",
                     "create secret generic kubenas-s3",
                     "outputs/best_model.pt"):
        assert expected in notes, f"NOTES.txt lacks {expected!r}:\n{notes}"
