"""The image `make image` built (localhost/kubenas:dev): every role starts as uid 10001 on a
read-only root filesystem with only /tmp writable, as the chart runs it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IMAGE = os.environ.get("KUBENAS_IMAGE", "localhost/kubenas:dev")


def podman_run(*args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess:
    podman = shutil.which("podman")
    if podman is None:
        pytest.fail("podman not found: run `make dev-tools`")
    if subprocess.run([podman, "image", "exists", IMAGE]).returncode != 0:
        pytest.fail(f"{IMAGE} not built: run `make image`")
    argv = [podman, "run", "--rm", "--runtime", shutil.which("runc") or "runc",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
            "--read-only", "--tmpfs", "/tmp", "--network", "none", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return subprocess.run([*argv, IMAGE, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("role", ["operator", "controller", "train-child"])
def test_every_role_starts_non_root_on_a_read_only_root(role):
    proc = podman_run(role, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"kubenas {role}" in proc.stdout


def test_user_torch_and_writable_paths():
    script = ("import os, torch, kubenas.trainer, kubenas.operator\n"
              "print(os.getuid(), os.getgid(), torch.__version__)\n"
              "open('/tmp/x', 'w').write('ok')\n"
              "try:\n    open('/opt/kubenas/x', 'w')\nexcept OSError as e:\n    print('ro', e.errno)\n")
    proc = podman_run("-c", script, entrypoint="python")
    assert proc.returncode == 0, proc.stderr
    uid, gid, torch_version = proc.stdout.split("\n")[0].split()
    assert (uid, gid) == ("10001", "10001")
    assert torch_version.startswith("2.")
    assert "ro 30" in proc.stdout, "the root filesystem must be read-only (EROFS)"
