#!/usr/bin/env bash
# `make image`: build the project's Dockerfile into a local tag with podman, with no registry.
#
#   1. a Debian bookworm base made by mmdebstrap        -> localhost/kubenas-debian:bookworm
#   2. a CPU torch venv on it (devenv/image/...)        -> localhost/kubenas-torch-cpu:<torch>
#      standing in for the CUDA PyTorch base that the published build uses
#   3. the Dockerfile, FROM that base (ARG BASE_IMAGE)  -> localhost/kubenas:dev
#
# 1 and 2 are cached as archives under ~/.cache/kubenas/images/ (keyed by their inputs), so a
# machine that has them only loads them; 3 uses podman's layer cache. Published builds:
#   podman build --format docker -t REGISTRY/kubenas:TAG .      (default BASE_IMAGE: CUDA torch)
# Environment: KUBENAS_IMAGE (tag to build, default localhost/kubenas:dev), KUBENAS_CACHE_DIR.
# Facts behind each step: ../shared/docs/real-node.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KUBENAS_CACHE_DIR:-$HOME/.cache/kubenas}/images"
IMAGE="${KUBENAS_IMAGE:-localhost/kubenas:dev}"
TORCH_SPEC="torch==2.13.0+cpu"
DEBIAN_TAG=localhost/kubenas-debian:bookworm
MIRROR="${KUBENAS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${KUBENAS_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"

log() { printf '[image] %s\n' "$*"; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }
for tool in podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make dev-tools\` (it installs podman, mmdebstrap, runc)"
done
mkdir -p "$CACHE"
# runc, not crun (crun fails here: setrlimit / cgroup hybrid mode); --format docker so that
# the Dockerfile's SHELL (pipefail) is honoured; ulimits podman can set on this kernel.
PODMAN_BUILD=(podman build --format docker --runtime "$(command -v runc)"
              --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host)

have_image() { podman image exists "$1"; }
key_of() { cat "$@" | sha256sum | cut -c1-12; }

# pip's configuration on this machine (local wheel folders, file:// indexes, a CA bundle) is
# not visible inside a build: write it as one pip.conf and bind-mount it and every local path
# it names, read-only. On a machine with plain PyPI access this adds nothing.
pip_mounts() {
  local conf="$CACHE/pip.conf" py
  py="$(command -v python3)"
  "$py" - "$conf" <<'PYEOF'
import os, re, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
opts = {}
for line in out.splitlines():
    m = re.match(r"^(?:global|install|:env:)\.([\w-]+)='(.*)'$", line.strip())
    if m:
        opts[m.group(1)] = m.group(2)
for key, env in (("find-links", "PIP_FIND_LINKS"), ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
                 ("index-url", "PIP_INDEX_URL"), ("cert", "PIP_CERT")):
    if os.environ.get(env):
        opts[key] = os.environ[env]
keep = {k: v for k, v in opts.items() if k in ("find-links", "extra-index-url", "index-url", "cert", "trusted-host")}
with open(sys.argv[1], "w") as fh:
    fh.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in keep.items()))
paths = []
for k, v in keep.items():
    for item in v.split():
        p = item[len("file://"):] if item.startswith("file://") else item
        if not os.path.exists(p):
            continue
        if item.startswith("file://") and k != "find-links":
            # a local index: its pages link to files beside it (../../files/...)
            paths.append(os.path.dirname(os.path.realpath(p.rstrip("/"))))
        elif k in ("find-links", "cert"):
            paths.append(p if k == "cert" else os.path.realpath(p))
print("\n".join(sorted(set(paths))))
PYEOF
}
MOUNTS=(--volume "$CACHE/pip.conf:/etc/pip.conf:ro")
while IFS= read -r p; do
  [[ -n "$p" ]] && MOUNTS+=(--volume "$p:$p:ro")
done < <(pip_mounts)

# ---------------------------------------------------------------- 1. Debian base
build_debian() {
  local tar="$CACHE/debian-bookworm.tar"
  if [[ ! -s "$tar" ]]; then
    log "debian base: mmdebstrap bookworm (minbase + python3) -> $tar (~80 s)"
    mmdebstrap --variant=minbase --format=tar --quiet \
      --include=python3,python3-venv,python3-pip,ca-certificates \
      --aptopt='Acquire::Check-Valid-Until "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      bookworm "$tar.tmp" \
      "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
      "deb $SECURITY bookworm-security main"
    mv "$tar.tmp" "$tar"
  fi
  log "debian base: podman import $tar"
  podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' "$tar" "$DEBIAN_TAG" >/dev/null
}

# ---------------------------------------------------------------- 2. CPU torch base
TORCH_FILE="$ROOT/devenv/image/Containerfile.torch-cpu"
TORCH_KEY="$(key_of "$TORCH_FILE" <(echo "$TORCH_SPEC"))"
TORCH_TAG="localhost/kubenas-torch-cpu:$TORCH_KEY"
TORCH_TAR="$CACHE/torch-cpu-$TORCH_KEY.tar"
build_torch_base() {
  if [[ -s "$TORCH_TAR" ]]; then
    log "torch base: podman load $TORCH_TAR"
    podman load -q -i "$TORCH_TAR" >/dev/null
    return
  fi
  have_image "$DEBIAN_TAG" || build_debian
  log "torch base: $TORCH_SPEC in a venv -> $TORCH_TAG (~90 s)"
  "${PODMAN_BUILD[@]}" "${MOUNTS[@]}" --build-arg "DEBIAN_BASE=$DEBIAN_TAG" \
    --build-arg "TORCH_SPEC=$TORCH_SPEC" -f "$TORCH_FILE" -t "$TORCH_TAG" "$ROOT/devenv/image"
  podman save -q --format docker-archive -o "$TORCH_TAR.tmp" "$TORCH_TAG"
  mv "$TORCH_TAR.tmp" "$TORCH_TAR"
}

start=$SECONDS
have_image "$TORCH_TAG" || build_torch_base
log "image: podman build $ROOT/Dockerfile FROM $TORCH_TAG -> $IMAGE"
"${PODMAN_BUILD[@]}" "${MOUNTS[@]}" --build-arg "BASE_IMAGE=$TORCH_TAG" -t "$IMAGE" "$ROOT"
size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
log "image: $IMAGE built in $((SECONDS - start)) s, $((size / 1000000)) MB"
