"""Least privilege, read off the rendered Roles (the live check is in test_cluster.py)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

SECRET_VALUES = {"storage": {"existingSecret": "", "accessKeyId": "a", "secretAccessKey": "b"}}
VARIANTS = {
    "default": None,
    "chart-made-secret": SECRET_VALUES,
    "two-namespaces": {**SECRET_VALUES, "watchNamespaces": ["team-a", "team-b"]},
}

# Every Kubernetes API call the shipped code makes: (identity, "file::function", Kube method,
# apiGroup, resource). test_every_api_call_site_is_in_the_table holds it to the code;
# the Roles must grant exactly these verbs (both ways).
CALLS = [
    # the operator's informers (operator/main.py's groups, each an Informer: list, then watch)
    *[("operator", f"operator/informer.py::{fn}", method, group, res)
      for group, res in [("kubenas.dev", "experiments"), ("kubenas.dev", "trials"),
                         ("batch", "jobs"), ("", "pods"), ("apps", "deployments")]
      for fn, method in [("_list", "list_all"), ("_run", "watch")]],
    ("operator", "operator/reconciler.py::_experiment", "get", "kubenas.dev", "experiments"),
    # the one status write (Trials, Experiments) and the re-read after its or the owner
    # patch's 409
    ("operator", "operator/patches.py::patch_status", "merge_patch", "kubenas.dev",
     "experiments/status"),
    ("operator", "operator/patches.py::patch_status", "merge_patch", "kubenas.dev",
     "trials/status"),
    ("operator", "operator/reconciler.py::_guarded", "get", "kubenas.dev", "experiments"),
    ("operator", "operator/reconciler.py::_guarded", "get", "kubenas.dev", "trials"),
    ("operator", "operator/reconciler.py::_trial_architecture", "get", "kubenas.dev", "trials"),
    ("operator", "operator/reconciler.py::_ensure_trial_owner", "merge_patch", "kubenas.dev", "trials"),
    ("operator", "operator/reconciler.py::_job", "get", "batch", "jobs"),
    ("operator", "operator/reconciler.py::_create_job", "create", "batch", "jobs"),
    ("operator", "operator/reconciler.py::_stop_job", "merge_patch", "batch", "jobs"),
    ("operator", "operator/reconciler.py::_stop_job", "delete", "batch", "jobs"),
    ("operator", "operator/reconciler.py::_delete_job", "delete", "batch", "jobs"),
    ("operator", "operator/reconciler.py::_ensure_controller", "create", "apps", "deployments"),
    ("operator", "operator/reconciler.py::_ensure_controller", "get", "apps", "deployments"),
    ("operator", "operator/reconciler.py::_ensure_controller", "merge_patch", "apps", "deployments"),
    ("operator", "operator/events.py::record", "create", "", "events"),
    # the controller: KubernetesExecutor, its TrialSlots (an Informer) and the status writer
    ("controller", "operator/informer.py::_list", "list_all", "kubenas.dev", "trials"),
    ("controller", "operator/informer.py::_run", "watch", "kubenas.dev", "trials"),
    ("controller", "operator/executor.py::_list_trials", "list_all", "kubenas.dev", "trials"),
    ("controller", "operator/executor.py::submit", "create", "kubenas.dev", "trials"),
    ("controller", "operator/executor.py::status_of", "get", "kubenas.dev", "trials"),
    ("controller", "operator/executor.py::_check_existing", "get", "kubenas.dev", "trials"),
    ("controller", "operator/executor.py::refresh_experiment", "get", "kubenas.dev", "experiments"),
    ("controller", "operator/executor.py::stop_requested", "get", "kubenas.dev", "experiments"),
    ("controller", "operator/executor.py::write_experiment_status", "get", "kubenas.dev",
     "experiments"),
    ("controller", "operator/patches.py::patch_status", "merge_patch", "kubenas.dev",
     "experiments/status"),
]
# Grants no call site shows: the API server's OwnerReferencesPermissionEnforcement asks for
# update on <owner>/finalizers to set blockOwnerDeletion (operator/jobs.py owner_reference).
IMPLIED = [
    ("operator", "Deployments and adopted Trials owned by their Experiment", "update",
     "kubenas.dev", "experiments/finalizers"),
    ("operator", "Jobs owned by their Trial", "update", "kubenas.dev", "trials/finalizers"),
    ("controller", "Trials owned by their Experiment", "update", "kubenas.dev",
     "experiments/finalizers"),
]
# Call sites deliberately not granted, and why.
NOT_GRANTED = {
    ("operator/results.py::_credentials", "get"): "Secrets: a 403 is expected, the operator "
                                                  "then uses its own environment",
    ("operator/crd.py::install_crds", "get"): "dev and test tooling, never run in the cluster",
    ("operator/crd.py::install_crds", "create"): "dev and test tooling",
    ("operator/crd.py::install_crds", "replace"): "dev and test tooling",
}
VERB = {"get": "get", "list_all": "list", "watch": "watch", "create": "create",
        "merge_patch": "patch", "json_patch": "patch", "replace": "update", "delete": "delete"}
SCANNED = ["operator/*.py", "kubenas/*.py", "kubenas/local/*.py", "kubenas/storage/*.py"]


def needed(identity: str) -> dict:
    """(apiGroup, resource) -> verbs, from the table: exactly what the Role must grant."""
    out: dict = {}
    for who, _, method, group, res in CALLS:
        if who == identity:
            out.setdefault((group, res), set()).add(VERB[method])
    for who, _, verb, group, res in IMPLIED:
        if who == identity:
            out.setdefault((group, res), set()).add(verb)
    return out


OPERATOR = needed("operator")
CONTROLLER = needed("controller")
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "deletecollection", "*"}
DANGEROUS_RESOURCES = {"secrets", "configmaps", "serviceaccounts", "serviceaccounts/token",
                       "pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "nodes",
                       "roles", "rolebindings", "clusterroles", "clusterrolebindings",
                       "customresourcedefinitions", "namespaces", "*"}


def grants(role: dict) -> dict:
    out: dict = {}
    for rule in role.get("rules", []):
        assert "nonResourceURLs" not in rule
        for group, res in itertools.product(rule.get("apiGroups", []), rule.get("resources", [])):
            out.setdefault((group, res), set()).update(rule.get("verbs", []))
    return out


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def rendered(request, helm):
    return helm.template(VARIANTS[request.param])


def test_nothing_cluster_wide(rendered):
    kinds = {d["kind"] for d in rendered}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for b in (d for d in rendered if d["kind"] == "RoleBinding"):
        assert b["roleRef"]["kind"] == "Role"


def test_no_wildcards_and_no_secret_reads(rendered):
    for role in (d for d in rendered if d["kind"] == "Role"):
        name = f"Role {role['metadata']['namespace']}/{role['metadata']['name']}"
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{name}: wildcard in {field}: {rule}"
            if "secrets" in rule.get("resources", []):
                # The only acceptable shape: named Secrets, read with get.
                assert rule.get("resourceNames"), f"{name}: Secret access without resourceNames"
                assert set(rule["verbs"]) <= {"get"}, f"{name}: Secret verbs {rule['verbs']}"
        # And this chart needs none at all: pods get credentials through secretKeyRef.
        assert not any(res == "secrets" for _, res in grants(role)), f"{name} can read Secrets"


def test_no_escalation_paths(rendered):
    for role in (d for d in rendered if d["kind"] == "Role"):
        for (group, res), verbs in grants(role).items():
            assert res not in DANGEROUS_RESOURCES, f"{role['metadata']['name']} grants {res}"
            assert not verbs & DANGEROUS_VERBS, f"{role['metadata']['name']} grants {verbs} on {res}"
        assert ("", "pods") not in grants(role) or grants(role)[("", "pods")] <= {"get", "list", "watch"}


def test_operator_role_is_exactly_what_it_needs(rendered):
    roles = [d for d in rendered if d["kind"] == "Role" and d["metadata"]["name"].endswith("-operator")]
    assert roles
    for role in roles:
        assert grants(role) == OPERATOR


def test_controller_role_is_exactly_what_it_needs(rendered):
    roles = [d for d in rendered if d["kind"] == "Role" and d["metadata"]["name"].endswith("-controller")]
    assert roles
    for role in roles:
        g = grants(role)
        assert g == CONTROLLER
        assert not {res for _, res in g} & {"jobs", "pods", "deployments", "secrets"}
        assert "delete" not in g[("kubenas.dev", "trials")]


def test_bindings_name_only_the_charts_identities(rendered):
    for b in (d for d in rendered if d["kind"] == "RoleBinding"):
        role = b["roleRef"]["name"]
        assert b["subjects"] and all(s["kind"] == "ServiceAccount" for s in b["subjects"])
        assert [s["name"] for s in b["subjects"]] == [role], "each Role binds only its own identity"


REPO = Path(__file__).resolve().parents[2]


def _kube_call_sites(path: Path) -> set:
    """(file::function, method) of every ``kube.<method>(...)`` / ``self.kube.<method>(...)``."""
    rel, sites = path.relative_to(REPO).as_posix(), set()

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                else function
            func = getattr(child, "func", None)
            if isinstance(child, ast.Call) and isinstance(func, ast.Attribute) \
                    and func.attr in (*VERB, "request"):
                owner = func.value
                if getattr(owner, "id", None) == "kube" or getattr(owner, "attr", None) == "kube":
                    sites.add((f"{rel}::{inner}", func.attr))
            visit(child, inner)

    visit(ast.parse(path.read_text()), None)
    return sites


def test_every_api_call_site_is_in_the_table():
    """The table is the code's: a new call (or a removed one) fails here until the table and
    the Roles follow. operator/kube.py is the client itself (every call goes through it)."""
    found = set()
    for pattern in SCANNED:
        for path in sorted(REPO.glob(pattern)):
            if path.name != "kube.py":
                found |= _kube_call_sites(path)
    tabled = {(where, method) for _, where, method, _, _ in CALLS}
    assert found - set(NOT_GRANTED) == tabled, (
        f"calls missing from the table: {sorted(found - set(NOT_GRANTED) - tabled)}; "
        f"table rows no code makes: {sorted(tabled - found)}")
    assert "blockOwnerDeletion" in (REPO / "operator/jobs.py").read_text()


def test_each_roles_verbs_are_the_calls_the_code_makes(helm, capsys):
    """Both ways, from the rendered chart: every granted verb is a call the code makes (or a
    finalizers update it implies), and every call the code makes is granted. Prints the table."""
    rendered = helm.template(None)
    roles = {d["metadata"]["name"].rsplit("-", 1)[1]: grants(d) for d in rendered
             if d["kind"] == "Role"}
    rows = []
    for identity in ("operator", "controller"):
        want, have = needed(identity), roles[identity]
        assert set(have) == set(want), f"{identity}: resources {set(have) ^ set(want)}"
        for key in sorted(want):
            assert have[key] == want[key], (
                f"{identity} {key}: granted but unused {sorted(have[key] - want[key])}, "
                f"used but not granted {sorted(want[key] - have[key])}")
        for who, where, method, group, res in CALLS + [(w, d, v, g, r) for w, d, v, g, r in IMPLIED]:
            if who == identity:
                rows.append((identity, f"{group or 'core'}/{res}", VERB.get(method, method), where))
    with capsys.disabled():
        print("\nRBAC verb table (Role: resource verbs <- code path)")
        for identity in ("operator", "controller"):
            for (group, res), verbs in sorted(roles[identity].items()):
                name = f"{group or 'core'}/{res}"
                print(f"  {identity:<10} {name:<36} {','.join(sorted(verbs))}")
                for _, _, verb, where in sorted(r for r in rows if r[0] == identity and r[1] == name):
                    print(f"  {'':<10} {'':<36}   {verb:<7} <- {where}")
        print("  not granted: " + "; ".join(f"{w} {m}: {why}" for (w, m), why in NOT_GRANTED.items()))
