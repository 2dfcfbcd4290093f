"""Least privilege, read off the rendered Roles (the live check is in test_cluster.py)."""

from __future__ import annotations

import itertools

import pytest

SECRET_VALUES = {"storage": {"existingSecret": "", "accessKeyId": "a", "secretAccessKey": "b"}}
VARIANTS = {
    "default": None,
    "chart-made-secret": SECRET_VALUES,
    "two-namespaces": {**SECRET_VALUES, "watchNamespaces": ["team-a", "team-b"]},
}

# Exactly what each identity may do: (apiGroup, resource) -> verbs.
OPERATOR = {
    ("kubenas.dev", "experiments"): {"get", "list", "watch"},
    ("kubenas.dev", "experiments/status"): {"get", "update", "patch"},
    ("kubenas.dev", "experiments/finalizers"): {"update"},
    ("kubenas.dev", "trials"): {"get", "list", "watch", "update", "patch", "delete"},
    ("kubenas.dev", "trials/status"): {"get", "update", "patch"},
    ("kubenas.dev", "trials/finalizers"): {"update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
CONTROLLER = {
    ("kubenas.dev", "trials"): {"get", "list", "watch", "create"},
    ("kubenas.dev", "experiments"): {"get", "list", "watch", "update", "patch"},
    ("kubenas.dev", "experiments/status"): {"get", "update", "patch"},
    ("kubenas.dev", "experiments/finalizers"): {"update"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
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
