"""Helpers for the chart tests: find helm, render the chart, parse what it renders.

helm comes from `make dev-tools` (devenv/install-tools.sh extracts v3.17.2 from a PyPI wheel
into ~/.cache/kubenas/helm-v3.17.2/helm); KUBENAS_HELM overrides the path. A missing helm
is a failure, not a skip: CI runs dev-tools before the tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterable, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubenas"
HELM_VERSION = "v3.17.2"


def helm_path() -> Path:
    if os.environ.get("KUBENAS_HELM"):
        return Path(os.environ["KUBENAS_HELM"])
    cache = Path(os.environ.get("KUBENAS_CACHE_DIR") or Path.home() / ".cache" / "kubenas")
    return cache / f"helm-{HELM_VERSION}" / "helm"


@pytest.fixture(scope="session")
def helm_bin() -> str:
    path = helm_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"helm not found at {path}: run `make dev-tools` (devenv/install-tools.sh) "
                    "or point KUBENAS_HELM at a helm v3 binary")
    return str(path)


class Helm:
    def __init__(self, binary: str, tmp: Path) -> None:
        self.binary = binary
        self.tmp = tmp
        self._n = 0

    def run(self, *args: str, check: bool = True, timeout: float = 120,
            env: Optional[dict] = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stderr}{proc.stdout}")
        return proc

    def values_file(self, values: dict) -> str:
        self._n += 1
        path = self.tmp / f"values-{self._n}.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    def template_args(self, values: Optional[dict] = None, release: str = "kubenas",
                      namespace: str = "kubenas", extra: Iterable[str] = ()) -> list[str]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        if values is not None:
            args += ["-f", self.values_file(values)]
        return args + list(extra)

    def template(self, values: Optional[dict] = None, release: str = "kubenas",
                 namespace: str = "kubenas", extra: Iterable[str] = ()) -> list[dict]:
        out = self.run(*self.template_args(values, release, namespace, extra)).stdout
        return self.parse_docs(out)

    def template_fails(self, values: dict, extra: Iterable[str] = ()) -> str:
        """Render with ``values``; assert it fails and return helm's message."""
        proc = self.run(*self.template_args(values, extra=extra), check=False)
        assert proc.returncode != 0, f"helm template accepted bad values {values}"
        return proc.stderr + proc.stdout

    # -- reading rendered objects (static: also used on manifests/ and on kubectl output)
    @staticmethod
    def parse_docs(text: str) -> list[dict]:
        return [d for d in yaml.safe_load_all(text) if d is not None]

    @staticmethod
    def find(docs: list[dict], kind: str, name: Optional[str] = None,
             namespace: Optional[str] = None) -> list[dict]:
        return [d for d in docs if d.get("kind") == kind
                and (name is None or d["metadata"]["name"] == name)
                and (namespace is None or d["metadata"].get("namespace") == namespace)]

    @staticmethod
    def one(docs: list[dict], kind: str, name: Optional[str] = None,
            namespace: Optional[str] = None) -> dict:
        found = Helm.find(docs, kind, name, namespace)
        assert len(found) == 1, f"expected one {kind} {name or ''} in {namespace or 'any namespace'}, " \
                                f"found {len(found)}"
        return found[0]

    @staticmethod
    def env_of(container: dict) -> dict:
        """name -> value (str) or valueFrom (dict)."""
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture()
def helm(helm_bin: str, tmp_path: Path) -> Helm:
    return Helm(helm_bin, tmp_path)
