"""The Helm path end to end, on the dev cluster, as docs/deploy.md tells a user:

    kubectl create secret generic kubenas-s3 ...      # the S3 Secret
    helm install kubenas ./helm/kubenas --set storage.endpoint=<the dev S3> ...
    kubectl apply -f examples/experiment.yaml         # unchanged
    ... Experiment Succeeded, outputs/best_model.pt in S3 ...
    kubectl delete experiment digits-demo             # cascades
    helm uninstall kubenas                            # removes what the chart made

The dev cluster is a real kube-apiserver 1.20 with RBAC and real nodes: every pod is a
container of the image `make image` built (``--set image.repository=localhost/kubenas
--set image.tag=dev --set image.pullPolicy=Never``), run by a real kubelet with the chart's
securityContext (uid 10001, read-only root, /tmp an emptyDir), its Secret references and the
ServiceAccount token the kubelet mounts. So the operator, the per-Experiment controller and
the trials really act as their own ServiceAccounts, and a missing or excessive permission
shows up here.

The example is applied as it is: it names no storage URL, so it stores under its own
prefix s3://kubenas/experiments/<namespace>/digits-demo/<uid> (``status.storageUrl``), and
the dev S3 server's endpoint comes from the chart's ``storage.endpoint``, which the
operator hands to every Experiment that sets none. Metrics are on, as by default.

One install and one search serve the module's tests (the search is the expensive part);
the last test tears it down.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import yaml

from devenv.kubeapi import KubeAPI
from tests.helm.conftest import CHART, Helm

pytestmark = [pytest.mark.k8s, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "experiment.yaml"
RELEASE = "kubenas"                      # as in docs/deploy.md: names below follow from it
OPERATOR_SA, CONTROLLER_SA, TRIAL_SA = (f"{RELEASE}-operator", f"{RELEASE}-controller",
                                        f"{RELEASE}-trial")
SECRET = "kubenas-s3"
RELEASE_SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
SEARCH_TIMEOUT = 420                     # ~2-3 min on 2 cores
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _wait(what: str, fn, timeout: float, every: float = 1.0, diagnose=None):
    deadline = time.time() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f"\n{diagnose()}" if diagnose else ""))
        time.sleep(every)


@dataclass
class Run:
    cluster: object
    helm: Helm
    ns: str                               # the release's namespace, where the Experiment runs
    other: str                            # a namespace the release has nothing to do with
    name: str                             # the example's Experiment
    prefix: str                           # its storage prefix in the bucket (from its status)
    experiment: dict = field(default_factory=dict)   # as it was when it finished
    pods: dict = field(default_factory=dict)         # every pod seen in ns, by name
    seen_logs: dict = field(default_factory=dict)    # component -> longest log seen
    uninstalled: bool = False

    def kubectl(self, *args, check=True, input=None) -> subprocess.CompletedProcess:
        return self.cluster.run_kubectl(*args, check=check, input=input)

    def get_json(self, *args) -> dict:
        return json.loads(self.kubectl("get", *args, "-n", self.ns, "-o", "json").stdout)

    def pods_of(self, component: str) -> list:
        return [p for p in self.pods.values()
                if p["metadata"]["labels"].get("app.kubernetes.io/component") == component]

    def token_of(self, pod: dict) -> Optional[str]:
        """The ServiceAccount token the kubelet mounted into ``pod`` (from the token Secret its
        volume names), or None when it mounts none."""
        for v in pod["spec"].get("volumes") or []:
            secret = (v.get("secret") or {}).get("secretName", "")
            if secret.startswith(f"{pod['spec']['serviceAccountName']}-token-"):
                data = self.get_json("secret", secret)["data"]["token"]
                return base64.b64decode(data).decode()
        return None

    def logs(self, component: str) -> str:
        """Logs kept while the search ran (pods of a finished search are gone), then now."""
        now = "".join(self.cluster.pod_log(self.ns, p["metadata"]["name"])
                      for p in self.pods_of(component))
        return self.seen_logs.get(component, "") + now

    def keep_logs(self) -> None:
        for component in ("controller",):
            out = "".join(self.cluster.pod_log(self.ns, p["metadata"]["name"])
                          for p in self.pods_of(component))
            if len(out) > len(self.seen_logs.get(component, "")):
                self.seen_logs[component] = out

    def diagnose(self) -> str:
        trials = self.kubectl("get", "experiments,trials,deployments,pods", "-n", self.ns,
                              check=False).stdout
        return (f"{trials}\n--- operator log (tail)\n{self.logs('operator')[-3000:]}"
                f"\n--- controller log (tail)\n{self.logs('controller')[-3000:]}")

    def clear_storage(self) -> None:
        s3 = self.cluster.s3.client()
        bucket = self.cluster.s3.bucket
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=self.prefix):
            for obj in page.get("Contents") or []:
                s3.delete_object(Bucket=bucket, Key=obj["Key"])


@pytest.fixture(scope="module")
def run(dev_cluster, helm_bin, tmp_path_factory):
    example = yaml.safe_load(EXAMPLE.read_text())
    name = example["metadata"]["name"]
    s3 = dev_cluster.s3
    assert "url" not in example["spec"]["storage"], "the chart gives it its own prefix"
    assert "endpoint" not in example["spec"]["storage"], "the chart supplies the endpoint"
    r = Run(dev_cluster, Helm(helm_bin, tmp_path_factory.mktemp("helm")),
            ns=dev_cluster.create_namespace("e2e"), other="", name=name, prefix="")
    # Until its UID is known: every earlier Experiment of this name in this namespace.
    r.prefix = f"experiments/{r.ns}/{name}/"
    try:
        r.other = dev_cluster.create_namespace("e2e-other")
        # A reused dev cluster may hold an earlier run's state, which the controller would resume.
        r.clear_storage()
        # docs/deploy.md, 2. the Secret; 3. install; 5. run an Experiment.
        r.kubectl("-n", r.ns, "create", "secret", "generic", SECRET,
                  f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                  f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}")
        repository, tag = dev_cluster.image.rsplit(":", 1)
        r.helm.run("install", RELEASE, str(CHART), "--namespace", r.ns,
                   "--kubeconfig", dev_cluster.kubeconfig,
                   "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                   "--set", "image.pullPolicy=Never", "--set", f"storage.endpoint={s3.endpoint}")
        r.kubectl("-n", r.ns, "rollout", "status", f"deployment/{OPERATOR_SA}", "--timeout=120s")
        out = r.kubectl("-n", r.ns, "apply", "-f", str(EXAMPLE)).stdout
        assert f"experiment.kubenas.dev/{name} created" in out

        api = dev_cluster.api()

        def finished():
            for pod in api.get(f"/api/v1/namespaces/{r.ns}/pods")["items"]:
                r.pods[pod["metadata"]["name"]] = pod
            r.keep_logs()
            exp = api.get(f"/apis/kubenas.dev/v1/namespaces/{r.ns}/experiments/{name}")
            status = exp.get("status") or {}
            if status.get("phase") in ("Failed", "Stopped"):
                return exp
            # The operator's trial counts lag the controller's phase by a resync or two.
            budget = exp["spec"]["budget"]["maxTrials"]
            done = status.get("phase") == "Succeeded" and status.get("trialsCompleted") == budget
            return exp if done else None

        r.experiment = _wait(f"Experiment {name} to finish", finished, SEARCH_TIMEOUT,
                             diagnose=r.diagnose)
        uid = r.experiment["metadata"]["uid"]
        assert r.experiment["status"]["storageUrl"] == f"s3://{s3.bucket}/{r.prefix}{uid}"
        r.prefix += f"{uid}/"
        yield r
    finally:
        if not r.uninstalled:
            r.helm.run("uninstall", RELEASE, "--namespace", r.ns, "--kubeconfig",
                       dev_cluster.kubeconfig, check=False)
        for ns in (r.ns, r.other):
            if ns:
                dev_cluster.delete_namespace(ns)
        r.clear_storage()


def _identity(cluster, token: str) -> dict:
    review = cluster.api().create("/apis/authentication.k8s.io/v1/tokenreviews", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
    assert review["status"].get("authenticated"), review
    return review["status"]["user"]


# ------------------------------------------------------------------------------------ tests

def test_example_runs_to_completion_and_leaves_a_loadable_best_model(run):
    import torch

    status = run.experiment["status"]
    assert status["phase"] == "Succeeded", run.diagnose()
    assert status["trialsSucceeded"] == 12 and status["trialsFailed"] == 0, status
    best = status["bestArchitecture"]
    assert best["kind"] == "Architecture" and best["space"] == "cnn" and best["spec"]["layers"]
    assert status["bestTrial"].startswith(f"{run.name}-")

    # Every Trial became a Job whose pod ran on a node of the Trial's pool; both pools worked.
    trials = run.get_json("trials")["items"]
    assert len(trials) == 12 and {t["status"]["phase"] for t in trials} == {"Succeeded"}
    trial_pods = run.pods_of("trial")
    assert {p["metadata"]["labels"]["kubenas.dev/trial"] for p in trial_pods} == \
        {t["metadata"]["name"] for t in trials}
    for pod in trial_pods:
        pool = pod["metadata"]["labels"]["kubenas.dev/pool"]
        assert pod["spec"]["nodeSelector"] == {"kubenas.dev/pool": pool}
        assert pod["spec"]["nodeName"].startswith(f"{pool}-"), pod["spec"]["nodeName"]
    assert {t["spec"]["pool"] for t in trials} == {"pool-a", "pool-b"}
    events = run.kubectl("get", "events", "-n", run.ns, "--field-selector",
                         f"involvedObject.name={status['bestTrial']}", "-o", "name").stdout.split()
    assert events, "the operator records Events on Trials"

    # The search is over: the controller Deployment is parked at 0 replicas.
    deployment = run.get_json("deployment", f"kubenas-controller-{run.name}")
    assert deployment["spec"]["replicas"] == 0

    # outputs/ in S3: the best model is TorchScript that classifies 8x8 digits.
    s3, bucket = run.cluster.s3.client(), run.cluster.s3.bucket
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=run.prefix + "outputs/")
            .get("Contents", [])}
    for f in ("best_model.pt", "best_architecture.json", "leaderboard.csv"):
        assert f"{run.prefix}outputs/{f}" in keys, keys
    arch = json.loads(s3.get_object(Bucket=bucket, Key=f"{run.prefix}outputs/best_architecture.json")
                      ["Body"].read())
    assert arch["tokens"] == best["tokens"]
    blob = s3.get_object(Bucket=bucket, Key=f"{run.prefix}outputs/best_model.pt")["Body"].read()
    model = torch.jit.load(io.BytesIO(blob))
    from sklearn.datasets import load_digits

    digits = load_digits()                      # the model takes [0, 1] pixels, N x 1 x 8 x 8
    x = torch.tensor(digits.images[:300] / 16.0, dtype=torch.float32).unsqueeze(1)
    with torch.no_grad():
        logits = model.eval()(x)
    assert logits.shape == (300, 10) and torch.isfinite(logits).all()
    accuracy = (logits.argmax(1) == torch.tensor(digits.target[:300])).float().mean().item()
    assert accuracy > 0.3, f"the best child is no better than chance: {accuracy:.2f}"

    for component in ("operator", "controller"):
        log = run.logs(component)
        assert log, f"no {component} log"
        assert "forbidden" not in log.lower() and "Traceback" not in log, log[-3000:]


def test_each_process_runs_under_its_own_service_account(run):
    """The pod specs name the chart's ServiceAccounts, and the only credentials each process
    got (the kubeconfig the kubelet wrote for its pod) are that ServiceAccount's token; trial
    pods get none at all."""
    operators, controllers, trials = (run.pods_of(c) for c in ("operator", "controller", "trial"))
    assert len(operators) == 1 and controllers and len(trials) == 12, sorted(run.pods)
    expected = [(operators, OPERATOR_SA), (controllers, CONTROLLER_SA)]
    for pods, sa in expected:
        for pod in pods:
            assert pod["spec"]["serviceAccountName"] == sa
            token = run.token_of(pod)
            assert token, f"{pod['metadata']['name']} has no token"
            user = _identity(run.cluster, token)
            assert user["username"] == f"system:serviceaccount:{run.ns}:{sa}", user
            assert f"system:serviceaccounts:{run.ns}" in user["groups"]
            assert "system:masters" not in user["groups"]
    for pod in trials:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == TRIAL_SA
        assert spec["automountServiceAccountToken"] is False
        assert run.token_of(pod) is None
        # and it still reached S3: the credentials come from the Secret through secretKeyRef
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == SECRET
        assert env["KUBENAS_S3_ENDPOINT"]["value"] == run.cluster.s3.endpoint

    # The operator's process itself (its container, still running): uid 10001, the token
    # file the kubelet mounted is its ServiceAccount's, and no other credentials.
    op = operators[0]
    pid = run.cluster.container_pids(run.ns, op["metadata"]["name"])[0]
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
    assert "KUBECONFIG" not in environ
    assert environ["KUBENAS_WATCH_NAMESPACE"] == run.ns
    assert environ["KUBENAS_S3_ENDPOINT"] == run.cluster.s3.endpoint
    # (through /proc/PID/root: the image's /var/run is a link to /run, resolved here by hand)
    token_file = Path(f"/proc/{pid}/root") / TOKEN.replace("/var/run/", "run/", 1)
    assert token_file.read_text() == run.token_of(op)
    uids = [ln.split()[1] for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ln.startswith("Uid:")]
    assert uids == ["10001"]


def _call(api: KubeAPI, method: str, path: str, body=None):
    """One raw request with ``api``'s credentials; PATCH bodies are JSON merge patches."""
    headers = {} if body is None else {
        "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"}
    return api.session.request(method, api.server + path, timeout=30, headers=headers,
                               data=None if body is None else json.dumps(body))


def test_service_account_tokens_are_refused_what_they_were_not_given(run):
    """The tokens the operator and controller processes hold, used directly on the API."""
    ns, other, name = run.ns, run.other, run.name
    op_pod, ctl_pod = run.pods_of("operator")[0], run.pods_of("controller")[0]
    ca = str(run.cluster.state_dir / "pki" / "ca.crt")
    operator = KubeAPI(run.cluster.server, run.token_of(op_pod), ca)
    controller = KubeAPI(run.cluster.server, run.token_of(ctl_pod), ca)
    trial = KubeAPI(run.cluster.server, run.token_of(run.pods_of("trial")[0]), ca)

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder"},
           "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "intruder"},
           "spec": {"template": {"spec": {**pod["spec"], "restartPolicy": "Never"}}}}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "intruder"},
              "spec": {"selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"]}}}
    trial_obj = {"apiVersion": "kubenas.dev/v1", "kind": "Trial", "metadata": {"name": "intruder"},
                 "spec": {"experiment": name, "pool": "pool-a", "architecture": {}}}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "intruder"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "cluster-admin"},
               "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": ns}]}
    exp_path = f"/apis/kubenas.dev/v1/namespaces/{ns}/experiments/{name}"
    trials_path = f"/apis/kubenas.dev/v1/namespaces/{ns}/trials"
    a_trial = f"{trials_path}/{name}-00000"
    merge = {"metadata": {"labels": {"intruder": "yes"}}}

    allowed = {
        "operator": (operator, [
            ("GET", f"/apis/batch/v1/namespaces/{ns}/jobs", None),
            ("GET", f"/apis/apps/v1/namespaces/{ns}/deployments", None),
            ("GET", f"/api/v1/namespaces/{ns}/pods", None),
            ("GET", trials_path, None),
            ("GET", exp_path, None)]),
        "controller": (controller, [
            ("GET", trials_path, None),
            ("GET", exp_path, None)]),
    }
    denied = {
        "operator": (operator, [
            ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
            ("GET", f"/api/v1/namespaces/{ns}/secrets/{SECRET}", None),
            ("POST", f"/api/v1/namespaces/{ns}/pods", pod),
            ("POST", f"/api/v1/namespaces/{ns}/pods/{op_pod['metadata']['name']}/exec", None),
            ("PATCH", exp_path, merge),                                  # only its status
            ("POST", trials_path, trial_obj),                            # the controller's job
            ("DELETE", a_trial, None),                                   # verbs it never uses
            ("PUT", f"/apis/batch/v1/namespaces/{ns}/jobs/kubenas-{name}-00000", None),
            ("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/kubenas-controller-{name}", None),
            ("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", binding),
            ("GET", f"/apis/batch/v1/namespaces/{other}/jobs", None),
            ("POST", f"/apis/batch/v1/namespaces/{other}/jobs", job),
            ("GET", f"/apis/kubenas.dev/v1/namespaces/{other}/experiments", None),
            ("GET", "/apis/kubenas.dev/v1/experiments", None),           # cluster-wide
            ("GET", "/apis/batch/v1/jobs", None),
            ("GET", "/api/v1/nodes", None),
            ("GET", "/api/v1/namespaces", None)]),
        "controller": (controller, [
            ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
            ("GET", f"/api/v1/namespaces/{ns}/secrets/{SECRET}", None),
            ("GET", f"/api/v1/namespaces/{ns}/pods", None),
            ("POST", f"/api/v1/namespaces/{ns}/pods", pod),
            ("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job),
            ("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deploy),
            ("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/kubenas-controller-{name}",
             {"spec": {"replicas": 5}}),
            ("DELETE", a_trial, None),
            ("PATCH", a_trial, merge),
            ("PATCH", exp_path, merge),                                  # only its status
            ("PUT", exp_path, None),
            ("PATCH", f"{a_trial}/status", {"status": {"phase": "Succeeded", "reward": 1.0}}),
            ("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", binding),
            ("POST", f"/apis/kubenas.dev/v1/namespaces/{other}/trials", trial_obj),
            ("GET", f"/apis/kubenas.dev/v1/namespaces/{other}/experiments", None),
            ("GET", "/apis/kubenas.dev/v1/trials", None)]),
    }
    for who, (api, calls) in allowed.items():
        for method, path, body in calls:
            resp = _call(api, method, path, body)
            assert resp.status_code == 200, f"{who} cannot {method} {path}: {resp.text[:300]}"
    for who, (api, calls) in denied.items():
        for method, path, body in calls:
            resp = _call(api, method, path, body)
            assert resp.status_code == 403 and resp.json().get("reason") == "Forbidden", \
                f"{who} may {method} {path}: HTTP {resp.status_code} {resp.text[:200]}"
    # A trial pod holds no credentials at all (anonymous requests are off on this server).
    assert _call(trial, "GET", f"/api/v1/namespaces/{ns}/pods").status_code == 401
    assert _call(trial, "GET", trials_path).status_code == 401
    # Nothing slipped through.
    assert not run.kubectl("get", "pods,jobs,deployments,trials,rolebindings", "-n", ns,
                           "--field-selector", "metadata.name=intruder", "-o", "name").stdout.strip()


def _inventory(run) -> dict:
    """Every object carrying the release's instance label, by namespace ('' = cluster-scoped)."""
    def names(namespaced: bool) -> str:
        out = run.kubectl("api-resources", "--verbs=list", f"--namespaced={str(namespaced).lower()}",
                          "-o", "name").stdout.split()
        return ",".join(r for r in out if r != "ingresses.extensions")  # same objects, deprecated

    found = {}
    for ns in (run.ns, run.other):
        found[ns] = sorted(run.kubectl("get", names(True), "-n", ns, "-l", RELEASE_SELECTOR,
                                       "-o", "name").stdout.split())
    found[""] = sorted(run.kubectl("get", names(False), "-l", RELEASE_SELECTOR,
                                   "-o", "name").stdout.split())
    return found


def _token_secrets(run) -> list:
    items = run.get_json("secrets", "--field-selector", "type=kubernetes.io/service-account-token")
    return sorted(s["metadata"]["name"] for s in items["items"]
                  if s["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                  in (OPERATOR_SA, CONTROLLER_SA, TRIAL_SA))


def test_an_experiment_naming_another_namespaces_storage_is_refused(run):
    """A user of this namespace cannot point an Experiment at another team's state: the
    operator refuses it (StorageNotAllowed) and nothing runs for it."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = "trespass"
    doc["spec"]["storage"]["url"] = f"s3://{run.cluster.s3.bucket}/experiments/{run.other}/x"
    run.kubectl("-n", run.ns, "apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        def refused():
            exp = run.get_json("experiment", "trespass")
            conds = (exp.get("status") or {}).get("conditions") or []
            return next((c for c in conds if c["type"] == "Accepted" and c["status"] == "False"), None)

        cond = _wait("trespass Accepted=False", refused, 60, diagnose=run.diagnose)
        assert cond["reason"] == "StorageNotAllowed"
        assert cond["message"].startswith(
            f"spec.storage.url: 's3://{run.cluster.s3.bucket}/experiments/{run.other}/x' is "
            f"outside this namespace's storage (allowed: under "
            f"s3://{run.cluster.s3.bucket}/experiments/{run.ns}/;"), cond
        made = run.kubectl("get", "trials,jobs,deployments", "-n", run.ns, "-l",
                           "kubenas.dev/experiment=trespass", "-o", "name").stdout
        assert made.strip() == ""
    finally:
        run.kubectl("-n", run.ns, "delete", "experiment", "trespass", "--wait=true")


def test_delete_experiment_cascades_and_uninstall_removes_what_the_chart_made(run):
    ns, name = run.ns, run.name
    by_exp = f"kubenas.dev/experiment={name}"
    exp_uid = run.experiment["metadata"]["uid"]

    # What the operator and the controller made hangs off the Experiment.
    deployment = run.get_json("deployment", f"kubenas-controller-{name}")
    assert [(o["kind"], o["uid"]) for o in deployment["metadata"]["ownerReferences"]] == \
        [("Experiment", exp_uid)]
    trials = {t["metadata"]["name"]: t for t in run.get_json("trials")["items"]}
    for t in trials.values():
        assert [(o["kind"], o["uid"]) for o in t["metadata"]["ownerReferences"]] == \
            [("Experiment", exp_uid)]
    jobs = run.get_json("jobs", "-l", by_exp)["items"]
    assert len(jobs) == 12
    for j in jobs:
        (owner,) = j["metadata"]["ownerReferences"]
        assert owner["kind"] == "Trial" and owner["uid"] == trials[owner["name"]]["metadata"]["uid"]
    made = "trials,jobs,deployments,replicasets,pods"
    assert len(run.kubectl("get", made, "-n", ns, "-l", by_exp, "-o", "name").stdout.split()) >= 12 * 3 + 2

    # docs/deploy.md, 6.: deleting the Experiment removes everything it made.
    run.kubectl("-n", ns, "delete", "experiment", name)
    _wait("the Experiment's objects to be garbage-collected", lambda: not run.kubectl(
        "get", made, "-n", ns, "-l", by_exp, "-o", "name").stdout.strip(), 90,
        diagnose=lambda: run.kubectl("get", made, "-n", ns, "-l", by_exp, check=False).stdout)
    assert not run.kubectl("get", "trials", "-n", ns, "-o", "name").stdout.strip()

    # What the chart made: exactly this, all labelled with the release.
    before = _inventory(run)
    generated = re.compile(r"^((?:pod|replicaset\.apps)/.+?)(-[a-z0-9]{6,10})(-[a-z0-9]{5})?$")
    # Endpoints and EndpointSlices are the endpoint controllers' copies of the Services'.
    derived = ("endpoints/", "endpointslice.discovery.k8s.io/")
    kinds = sorted(generated.sub(r"\1", n) for n in before[ns] if not n.startswith(derived))
    assert kinds == sorted([
        f"deployment.apps/{OPERATOR_SA}", f"replicaset.apps/{OPERATOR_SA}", f"pod/{OPERATOR_SA}",
        f"serviceaccount/{OPERATOR_SA}", f"serviceaccount/{CONTROLLER_SA}",
        f"serviceaccount/{TRIAL_SA}",
        f"role.rbac.authorization.k8s.io/{OPERATOR_SA}",
        f"role.rbac.authorization.k8s.io/{CONTROLLER_SA}",
        f"rolebinding.rbac.authorization.k8s.io/{OPERATOR_SA}",
        f"rolebinding.rbac.authorization.k8s.io/{CONTROLLER_SA}",
        f"service/{OPERATOR_SA}-metrics", f"service/{CONTROLLER_SA}-metrics"]), before[ns]
    assert before[run.other] == [] and before[""] == [], "nothing outside its namespace"
    assert len(_token_secrets(run)) == 3

    out = run.helm.run("uninstall", RELEASE, "--namespace", ns, "--kubeconfig",
                       run.cluster.kubeconfig).stdout
    run.uninstalled = True
    assert f'release "{RELEASE}" uninstalled' in out

    def gone():
        left = _inventory(run)
        return left if not any(left.values()) and not _token_secrets(run) else None

    _wait("helm uninstall to remove what the chart made", gone, 90,
          diagnose=lambda: f"{_inventory(run)} {_token_secrets(run)}")
    assert run.helm.run("list", "--namespace", ns, "-q", "--kubeconfig",
                        run.cluster.kubeconfig).stdout.strip() == ""
    # The user's Secret is the user's; Helm never deletes CRDs (that would delete every
    # Experiment and Trial in the cluster): both stay.
    run.kubectl("-n", ns, "get", "secret", SECRET)
    run.kubectl("get", "crd", "experiments.kubenas.dev", "trials.kubenas.dev")
