"""The chart on the dev cluster (real kube-apiserver 1.20 with RBAC): what it renders is
accepted by the API server, `helm install` grants each identity exactly its permissions,
and `helm uninstall` removes what it installed.

RBAC is independent of the operator's code, so the operator pod is kept Pending here (its
nodeSelector matches no node); a whole search through the chart, with every process acting
under its own ServiceAccount's token, is test_install_e2e.py.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubenas"
EXAMPLE = REPO / "examples" / "experiment.yaml"
NOWHERE = {"kubenas.dev/pool": "no-such-pool"}   # keeps the operator pod Pending


def kubectl(cluster, *args, check=True, input=None):
    return cluster.run_kubectl(*args, check=check, input=input)


def helm_k(helm, cluster, *args, check=True):
    return helm.run(*args, "--kubeconfig", cluster.kubeconfig, check=check)


def can(cluster, sa_ns: str, sa: str, verb: str, resource: str, namespace: str | None,
        subresource: str | None = None, name: str | None = None) -> bool:
    """`kubectl auth can-i` as the ServiceAccount, with the groups its real token carries."""
    target = f"{resource}/{name}" if name else resource
    args = ["auth", "can-i", verb, target,
            f"--as=system:serviceaccount:{sa_ns}:{sa}",
            "--as-group=system:serviceaccounts", f"--as-group=system:serviceaccounts:{sa_ns}",
            "--as-group=system:authenticated"]
    if subresource:
        args.append(f"--subresource={subresource}")
    args += ["--all-namespaces"] if namespace is None else ["-n", namespace]
    proc = kubectl(cluster, *args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {proc.stderr}"
    return answer == "yes"


def sa_token(cluster, namespace: str, sa: str, timeout: float = 30) -> str:
    """The ServiceAccount's token (1.20's token controller writes it into a Secret)."""
    api = cluster.api()
    deadline = time.time() + timeout
    while time.time() < deadline:
        obj = api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}")
        for ref in obj.get("secrets") or []:
            secret = api.get(f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}")
            if (secret.get("data") or {}).get("token"):
                return base64.b64decode(secret["data"]["token"]).decode()
        time.sleep(0.5)
    raise AssertionError(f"no token for ServiceAccount {namespace}/{sa}")


@pytest.fixture
def namespaces(dev_cluster):
    made = []

    def make(prefix: str) -> str:
        made.append(dev_cluster.create_namespace(prefix))
        return made[-1]

    yield make
    for ns in made:
        dev_cluster.delete_namespace(ns)


def test_rendered_chart_and_example_pass_server_side_validation(dev_cluster, helm, namespaces):
    ns = namespaces("chart")
    for values in (
        {"operator": {"nodeSelector": NOWHERE}},
        {"operator": {"nodeSelector": NOWHERE}, "watchNamespaces": [ns],
         "storage": {"existingSecret": "", "accessKeyId": "a", "secretAccessKey": "b",
                     "endpoint": "http://127.0.0.1:8333"},
         "workerPools": [{"name": "gpu", "gpusPerTrial": 1, "maxInFlight": 2,
                          "nodeSelector": {"kubenas.dev/pool": "pool-a"},
                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                          "resources": {"cpu": "1", "memory": "1Gi"}}]},
    ):
        rendered = helm.run(*helm.template_args(values, namespace=ns)).stdout
        # --validate checks every field against the server's OpenAPI; --dry-run=server runs
        # admission and the API server's own validation without persisting anything.
        proc = kubectl(dev_cluster, "apply", "--dry-run=server", "--validate=true", "-n", ns,
                       "-f", "-", input=rendered, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("(server dry run)") == len(helm.parse_docs(rendered))
    proc = kubectl(dev_cluster, "apply", "--dry-run=server", "--validate=true", "-n", ns,
                   "-f", str(EXAMPLE), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "experiment.kubenas.dev/digits-demo created (server dry run)" in proc.stdout


def test_install_grants_least_privilege_and_uninstall_cleans_up(dev_cluster, helm, namespaces):
    home, team, other = namespaces("nas"), namespaces("team"), namespaces("other")
    values = {"watchNamespaces": [team],
              "operator": {"nodeSelector": NOWHERE},
              "storage": {"existingSecret": "", "accessKeyId": "AKIDEXAMPLE",
                          "secretAccessKey": "s3cr3t"}}
    out = helm_k(helm, dev_cluster, "install", "rel", str(CHART), "--namespace", home,
                 "-f", helm.values_file(values)).stdout
    assert "STATUS: deployed" in out
    assert f"kubectl -n {team} get experiments,trials,jobs" in out, "NOTES tell how to watch"

    op, ctl, trial = "rel-kubenas-operator", "rel-kubenas-controller", "rel-kubenas-trial"
    secret = "rel-kubenas-s3"

    # -- the operator: its work in the watched namespace, nothing else anywhere.
    for verb, res, sub in [("create", "jobs.batch", None), ("delete", "jobs.batch", None),
                           ("watch", "jobs.batch", None),
                           ("create", "deployments.apps", None), ("patch", "deployments.apps", None),
                           ("list", "pods", None), ("watch", "experiments.kubenas.dev", None),
                           ("patch", "experiments.kubenas.dev", "status"),
                           ("patch", "trials.kubenas.dev", "status"),
                           ("patch", "trials.kubenas.dev", None), ("create", "events", None)]:
        assert can(dev_cluster, home, op, verb, res, team, sub), f"operator cannot {verb} {res} {sub or ''}"
    for verb, res, ns, name in [("get", "secrets", team, None), ("list", "secrets", team, None),
                                ("get", "secrets", team, secret), ("get", "secrets", home, secret),
                                ("create", "pods", team, None),
                                ("update", "experiments.kubenas.dev", team, None),
                                ("patch", "experiments.kubenas.dev", team, None),
                                ("delete", "trials.kubenas.dev", team, None),
                                ("update", "trials.kubenas.dev", team, None),
                                ("update", "jobs.batch", team, None),
                                ("delete", "deployments.apps", team, None),
                                ("update", "deployments.apps", team, None),
                                ("create", "rolebindings.rbac.authorization.k8s.io", team, None),
                                ("create", "jobs.batch", other, None),
                                ("list", "experiments.kubenas.dev", other, None),
                                ("create", "jobs.batch", home, None),
                                ("list", "experiments.kubenas.dev", None, None),
                                ("list", "jobs.batch", None, None),
                                ("list", "nodes", None, None)]:
        assert not can(dev_cluster, home, op, verb, res, ns, name=name), \
            f"operator may {verb} {res}{'/' + name if name else ''} in {ns or 'all namespaces'}"
    assert not can(dev_cluster, home, op, "create", "pods", team, subresource="exec")

    # -- the controller: Trials and its Experiment only.
    for verb, res, sub in [("create", "trials.kubenas.dev", None), ("list", "trials.kubenas.dev", None),
                           ("watch", "trials.kubenas.dev", None), ("get", "experiments.kubenas.dev", None),
                           ("patch", "experiments.kubenas.dev", "status")]:
        assert can(dev_cluster, team, ctl, verb, res, team, sub), f"controller cannot {verb} {res} {sub or ''}"
    for verb, res, ns in [("create", "jobs.batch", team), ("create", "deployments.apps", team),
                          ("list", "pods", team), ("get", "secrets", team), ("list", "secrets", team),
                          ("delete", "trials.kubenas.dev", team),
                          ("update", "trials.kubenas.dev", team),
                          ("update", "experiments.kubenas.dev", team),   # status only
                          ("patch", "experiments.kubenas.dev", team),
                          ("list", "experiments.kubenas.dev", team),
                          ("create", "events", team),
                          ("create", "trials.kubenas.dev", other),
                          ("create", "trials.kubenas.dev", home)]:
        assert not can(dev_cluster, team, ctl, verb, res, ns), f"controller may {verb} {res} in {ns}"

    # -- trials: nothing.
    for verb, res in [("get", "trials.kubenas.dev"), ("list", "pods"), ("get", "secrets"),
                      ("create", "events")]:
        assert not can(dev_cluster, team, trial, verb, res, team), f"trial may {verb} {res}"

    # -- the same through the ServiceAccounts' real tokens, not impersonation.
    ctl_token = sa_token(dev_cluster, team, ctl)
    proc = kubectl(dev_cluster, f"--token={ctl_token}", "-n", team, "get", "trials.kubenas.dev",
                   check=False)
    assert proc.returncode == 0, proc.stderr
    proc = kubectl(dev_cluster, f"--token={ctl_token}", "-n", team, "get", "secret", secret,
                   check=False)
    assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), proc.stderr
    op_token = sa_token(dev_cluster, home, op)
    proc = kubectl(dev_cluster, f"--token={op_token}", "-n", other, "get", "jobs", check=False)
    assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), proc.stderr
    proc = kubectl(dev_cluster, f"--token={op_token}", "-n", team, "get", "jobs,deployments,pods",
                   check=False)
    assert proc.returncode == 0, proc.stderr

    # -- what was installed, and what uninstall leaves.
    sel = "app.kubernetes.io/instance=rel"
    kinds = "deployments,services,serviceaccounts,roles.rbac.authorization.k8s.io," \
            "rolebindings.rbac.authorization.k8s.io,secrets"

    def installed() -> dict:
        return {ns: kubectl(dev_cluster, "get", kinds, "-n", ns, "-l", sel, "-o", "name").stdout.split()
                for ns in (home, team, other)}

    before = installed()
    assert sorted(before[home]) == sorted([
        f"deployment.apps/{op}", f"service/{op}-metrics", f"serviceaccount/{op}", f"secret/{secret}"])
    assert sorted(before[team]) == sorted([
        f"service/{ctl}-metrics", f"serviceaccount/{ctl}", f"serviceaccount/{trial}",
        f"role.rbac.authorization.k8s.io/{op}", f"role.rbac.authorization.k8s.io/{ctl}",
        f"rolebinding.rbac.authorization.k8s.io/{op}", f"rolebinding.rbac.authorization.k8s.io/{ctl}",
        f"secret/{secret}"])
    assert before[other] == []
    deadline = time.time() + 60
    while time.time() < deadline:
        pods = kubectl(dev_cluster, "get", "pods", "-n", home, "-l", sel, "-o",
                       "jsonpath={.items[*].spec.serviceAccountName}").stdout.split()
        if pods:
            break
        time.sleep(1)
    assert pods == [op], "the operator pod runs as the operator ServiceAccount"

    helm_k(helm, dev_cluster, "uninstall", "rel", "--namespace", home)
    deadline = time.time() + 60
    while time.time() < deadline:
        left = installed()
        left[home] += kubectl(dev_cluster, "get", "pods", "-n", home, "-l", sel, "-o", "name").stdout.split()
        if not any(left.values()):
            break
        time.sleep(1)
    assert not any(left.values()), f"helm uninstall left {left}"
    assert not can(dev_cluster, home, op, "create", "jobs.batch", team)
    # Helm never deletes CRDs (that would delete every Experiment); they stay.
    kubectl(dev_cluster, "get", "crd", "experiments.kubenas.dev", "trials.kubenas.dev")


def test_install_with_bad_values_creates_nothing(dev_cluster, helm, namespaces):
    ns = namespaces("bad")
    proc = helm_k(helm, dev_cluster, "install", "bad", str(CHART), "--namespace", ns, "-f",
                  helm.values_file({"workerPools": [{"name": "a", "maxInFlight": 0}]}), check=False)
    assert proc.returncode != 0
    assert "workerPools.0.maxInFlight" in proc.stderr, proc.stderr
    assert helm_k(helm, dev_cluster, "list", "--namespace", ns, "-q").stdout.strip() == ""
    assert kubectl(dev_cluster, "get", "deployments,roles.rbac.authorization.k8s.io", "-n", ns,
                   "-o", "name").stdout.strip() == ""
