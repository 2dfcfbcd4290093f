"""The CRDs shipped with the package (``operator/crds/*.yaml``) and a way to install them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import yaml

from kubenas.operator.kube import Kube, KubeError

CRD_DIR = Path(__file__).with_name("crds")
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def crd_files() -> list[Path]:
    return sorted(CRD_DIR.glob("*.yaml"))


def load_crds() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in crd_files()]


def install_crds(api_client=None, kube: Optional[Kube] = None, wait: bool = True,
                 timeout: float = 30.0) -> list[str]:
    """Create or update every CRD (idempotent); optionally wait until Established."""
    kube = kube or Kube(api_client)
    names = []
    for crd in load_crds():
        name = crd["metadata"]["name"]
        try:
            kube.create(CRD_PATH, crd)
        except KubeError as exc:
            if not exc.conflict:
                raise
            current = kube.get(f"{CRD_PATH}/{name}")
            crd = dict(crd, metadata=dict(crd["metadata"],
                                          resourceVersion=current["metadata"]["resourceVersion"]))
            kube.replace(f"{CRD_PATH}/{name}", crd)
        names.append(name)
    deadline = time.monotonic() + timeout
    while wait and names:
        pending = []
        for name in names:
            conds = (kube.get(f"{CRD_PATH}/{name}").get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                pending.append(name)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not Established within {timeout}s: {pending}")
        time.sleep(0.2)
    return names
