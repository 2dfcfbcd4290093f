"""Derived files stay in sync with their sources: the chart's CRDs with operator/crds/, and
manifests/ with the chart. Fix a failure with `scripts/gen-manifests.sh`."""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SRC_CRDS = REPO / "operator" / "crds"
CHART_CRDS = REPO / "helm" / "kubenas" / "crds"
MANIFESTS = REPO / "manifests" / "kubenas.yaml"
FIX = "run scripts/gen-manifests.sh"


def test_chart_crds_are_the_operators_crds():
    src = sorted(p.name for p in SRC_CRDS.glob("*.yaml"))
    assert {"experiments.yaml", "trials.yaml"} <= set(src), "operator/crds/ lacks the CRDs"
    assert sorted(p.name for p in CHART_CRDS.iterdir()) == src, f"helm/kubenas/crds/ has other files: {FIX}"
    differ = [n for n in src if not filecmp.cmp(SRC_CRDS / n, CHART_CRDS / n, shallow=False)]
    assert differ == [], f"helm/kubenas/crds/ differs from operator/crds/ in {differ}: {FIX}"


def test_manifests_are_up_to_date(helm_bin):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gen-manifests.sh"), "--check"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KUBENAS_HELM": helm_bin})
    assert proc.returncode == 0, f"{FIX}\n{proc.stderr[-4000:]}"


def test_manifests_hold_namespace_crds_and_the_default_install(helm):
    docs = helm.parse_docs(MANIFESTS.read_text())
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "kubenas", "labels": {"app.kubernetes.io/part-of": "kubenas"}}}
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert sorted(d["metadata"]["name"] for d in crds) == ["experiments.kubenas.dev", "trials.kubenas.dev"]
    src = sorted((yaml.safe_load(p.read_text()) for p in SRC_CRDS.glob("*.yaml")),
                 key=lambda d: d["metadata"]["name"])
    assert sorted(crds, key=lambda d: d["metadata"]["name"]) == src
    # CRDs before anything else, so `kubectl apply -f` of the one file works.
    kinds = [d["kind"] for d in docs]
    assert kinds[:3] == ["Namespace", "CustomResourceDefinition", "CustomResourceDefinition"]
    rest = docs[3:]
    assert rest == helm.template(), "the rest is `helm template` with default values"
    assert all(d["metadata"]["namespace"] == "kubenas" for d in rest)


def test_check_mode_notices_drift(helm_bin, tmp_path):
    """The drift check itself works: a changed CRD copy is reported."""
    work = tmp_path / "repo"
    for rel in ("scripts", "operator/crds", "helm", "manifests"):
        src = REPO / rel
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    with open(work / "helm/kubenas/crds/trials.yaml", "a") as fh:
        fh.write("# edited by hand\n")
    proc = subprocess.run(["bash", str(work / "scripts" / "gen-manifests.sh"), "--check"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KUBENAS_HELM": helm_bin})
    assert proc.returncode == 1
    assert "helm/kubenas/crds/ differs from operator/crds/" in proc.stderr
    assert "edited by hand" in proc.stderr
