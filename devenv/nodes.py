"""Real Kubernetes nodes for the dev cluster.

Each node is its own network namespace with its own address, running containerd + runc, the
real kubelet and kube-proxy (v1.20.2, built by `make dev-tools`), with the project's image
imported into its containerd. The namespaces hang off one bridge in the root namespace whose
address (10.213.<slot>.1) is where the apiserver and S3 listen; nothing listens on the
machine's external interface, and a node namespace routes only to that bridge subnet and the
Service range, so pods can reach the cluster and nothing else.

    root ns:  knbr<slot> 10.213.<slot>.1/24  <- kube-apiserver, SeaweedFS S3 bind here
                 |  veth kn<slot>v<i>
    node ns kn<slot>-<i>:  eth0 10.213.<slot>.<10+i>  containerd, kubelet, kube-proxy
                 |  cni0 (bridge CNI) 10.214.<8*slot+i>.1/24
              pods 10.214.<8*slot+i>.x   (ipMasq to reach the bridge subnet)

Why each flag: ../shared/docs/real-node.md. Needs root (namespaces, iptables, mounts).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from devenv.procs import Daemon, DevEnvError, find_binary, wait_until

SUBNET = "10.213"          # node addresses: 10.213.<slot>.0/24
POD_NET = "10.214"         # pod CIDRs: 10.214.<8*slot + node index>.0/24
SERVICE_RANGE = "10.0.0.0/24"
MAX_SLOTS = 32
PAUSE_IMAGE = "registry.k8s.io/pause:3.6"
CNI_BIN_DIR = "/usr/lib/cni"
KUBELET_PORT = 10250
DEVICE_PLUGINS = "/var/lib/kubelet/device-plugins"   # hard-coded in the kubelet


def run(*argv: str, netns: Optional[str] = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command (inside a node's network namespace when ``netns`` is given)."""
    if netns:
        argv = ("nsenter", f"--net=/run/netns/{netns}", *argv)
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise DevEnvError(f"{' '.join(argv)} failed ({proc.returncode}): "
                          f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def _link_exists(name: str) -> bool:
    return run("ip", "link", "show", name, check=False).returncode == 0


def _netns_names() -> set[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


# ---------------------------------------------------------------------------- the bridge
@dataclass
class Network:
    """The bridge in the root namespace that every node's veth is attached to."""
    slot: int

    @property
    def bridge(self) -> str:
        return f"knbr{self.slot}"

    @property
    def host_ip(self) -> str:
        return f"{SUBNET}.{self.slot}.1"

    def node_ip(self, index: int) -> str:
        return f"{SUBNET}.{self.slot}.{10 + index}"

    def pod_cidr(self, index: int) -> str:
        return f"{POD_NET}.{8 * self.slot + index}.0/24"

    @classmethod
    def pick_free(cls) -> "Network":
        """A slot no other environment on this machine uses (bridge and namespaces absent)."""
        taken = _netns_names()
        for slot in range(MAX_SLOTS):
            net = cls(slot)
            if not _link_exists(net.bridge) and not any(n.startswith(f"kn{slot}-") for n in taken):
                return net
        raise DevEnvError(f"no free dev-cluster network slot (all {MAX_SLOTS} bridges knbr* exist)")

    def create(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def destroy(self) -> None:
        if _link_exists(self.bridge):
            run("ip", "link", "del", self.bridge, check=False)


# ---------------------------------------------------------------------------- one node
@dataclass
class NodeSpec:
    name: str
    pool: str
    gpus: int
    index: int


def node_specs(pools) -> list[NodeSpec]:
    """The nodes of ``devenv.fake_kubelet.parse_pools`` pools, numbered across pools."""
    specs = []
    for pool in pools:
        for name in pool.node_names():
            specs.append(NodeSpec(name, pool.name, pool.gpus, len(specs)))
    if len(specs) > 8:
        raise DevEnvError(f"{len(specs)} real nodes asked for; at most 8 per environment")
    return specs


class RealNode:
    """One node: its namespace, configuration files and daemons. ``dir`` holds everything."""

    def __init__(self, spec: NodeSpec, net: Network, base_dir: Path) -> None:
        self.spec, self.net = spec, net
        self.dir = base_dir / spec.name
        self.daemons: dict[str, Daemon] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def netns(self) -> str:
        return f"kn{self.net.slot}-{self.spec.index}"

    @property
    def ip(self) -> str:
        return self.net.node_ip(self.spec.index)

    @property
    def socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    # -- network ----------------------------------------------------------------------------
    def create_netns(self) -> None:
        veth = f"kn{self.net.slot}v{self.spec.index}"
        run("ip", "netns", "add", self.netns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        run("ip", "link", "set", veth, "master", self.net.bridge, "up")
        ns = self.netns
        run("ip", "addr", "add", f"{self.ip}/24", "dev", "eth0", netns=ns)
        run("ip", "link", "set", "eth0", "up", netns=ns)
        run("ip", "link", "set", "lo", "up", netns=ns)
        # No default route: only the bridge subnet (on-link) and the Service range, whose
        # ClusterIPs kube-proxy rewrites to endpoints on the bridge subnet.
        run("ip", "route", "add", SERVICE_RANGE, "dev", "eth0", netns=ns)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=ns)
        run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", netns=ns, check=False)

    # -- configuration ----------------------------------------------------------------------
    def write_config(self, runc: str) -> None:
        d = self.dir
        for sub in ("containerd/root", "containerd/state", "runc", "cni/net.d", "cni/ipam",
                    "kubelet", "plugins", "logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "containerd" / "config.toml").write_text(containerd_config(d, runc))
        (d / "cni" / "net.d" / "10-kubenas.conflist").write_text(
            json.dumps(cni_conflist(self.net.pod_cidr(self.spec.index), d / "cni" / "ipam"), indent=1))

    # -- daemons ----------------------------------------------------------------------------
    def start_mount_ns(self, timeout: float = 20) -> Daemon:
        """A mount namespace of the node's own, held by a sleeping process, in which only
        /var/log/pods and /var/lib/kubelet/device-plugins differ: the kubelet hard-codes both.
        It deletes every pod log directory there that is not one of its own pods, and at start
        it empties the device-plugin directory and binds its registration socket there, so two
        kubelets starting together race for it ("address already in use").
        (Not `ip netns exec`: that also remounts /sys, and the kubelet's cgroup discovery fails.)"""
        logs, plugins = self.dir / "pod-logs", self.dir / "device-plugins"
        binds = [(logs, Path("/var/log/pods")), (plugins, Path(DEVICE_PLUGINS))]
        for ours, host in binds:
            ours.mkdir(parents=True, exist_ok=True)
            host.mkdir(parents=True, exist_ok=True)
        script = " && ".join(f"mount --bind {ours} {host}" for ours, host in binds) + \
            " && exec sleep infinity"
        d = Daemon.spawn(f"mountns-{self.name}", ["unshare", "--mount", "--propagation", "slave",
                                                  "--", "sh", "-c", script],
                         self.dir / "logs" / "mountns.log")
        self.daemons["mountns"] = d
        wait_until(lambda: all(f" {host} " in _read(f"/proc/{d.pid}/mountinfo") for _, host in binds),
                   d, "mounting the node's /var/log/pods and device-plugins", timeout)
        return d

    def _spawn(self, name: str, argv: list[str], own_mounts: bool = True) -> Daemon:
        enter = ["nsenter", f"--net=/run/netns/{self.netns}"]
        if own_mounts:
            enter.append(f"--mount=/proc/{self.daemons['mountns'].pid}/ns/mnt")
        d = Daemon.spawn(f"{name}-{self.name}", [*enter, *argv], self.dir / "logs" / f"{name}.log")
        self.daemons[name] = d
        return d

    def start_containerd(self) -> Daemon:
        binary = find_binary("containerd") or "containerd"
        return self._spawn("containerd", [binary, "--config", str(self.dir / "containerd" / "config.toml")])

    def import_images(self, archive: Path) -> None:
        run("ctr", "--address", str(self.socket), "-n", "k8s.io", "images", "import",
            str(archive), timeout=600)

    def start_kubelet(self, kubelet: str, kubeconfig: Path, pki: Path) -> Daemon:
        argv = kubelet_argv(kubelet, self, kubeconfig, pki)
        return self._spawn("kubelet", argv)

    def start_kube_proxy(self, kube_proxy: str, kubeconfig: Path) -> Daemon:
        argv = [kube_proxy, f"--kubeconfig={kubeconfig}", "--proxy-mode=iptables",
                f"--hostname-override={self.name}", f"--bind-address={self.ip}",
                f"--healthz-bind-address={self.ip}:10256", "--metrics-bind-address=127.0.0.1:10249",
                "--masquerade-all=true", "--conntrack-max-per-core=0", "--v=1"]
        return self._spawn("kube-proxy", argv, own_mounts=False)

    def stop_kubelet(self) -> None:
        """Stop only the kubelet (its containers keep running, as on a real node)."""
        d = self.daemons.get("kubelet")
        if d is not None:
            d.stop(timeout=10)

    # -- teardown ---------------------------------------------------------------------------
    def destroy(self) -> None:
        """Stop the daemons, kill every container, free mounts and namespaces."""
        for name in ("kubelet", "kube-proxy"):
            if name in self.daemons:
                self.daemons[name].stop(timeout=10)
        self._kill_containers()
        if "containerd" in self.daemons:
            self.daemons["containerd"].stop(timeout=10)
        self._kill_shims()
        if "mountns" in self.daemons:
            self.daemons["mountns"].stop(timeout=5)
        for pod_ns in self._pod_netns():
            run("ip", "netns", "delete", pod_ns, check=False)
        if self.netns in _netns_names():
            run("ip", "netns", "delete", self.netns, check=False)
        unmount_below(self.dir)

    def _kill_containers(self) -> None:
        if not self.socket.exists():
            return
        ctr = ("ctr", "--address", str(self.socket), "-n", "k8s.io")
        tasks = run(*ctr, "tasks", "ls", "-q", check=False, timeout=20).stdout.split()
        for task in tasks:
            run(*ctr, "tasks", "kill", "-s", "SIGKILL", task, check=False, timeout=20)
        for task in tasks:
            run(*ctr, "tasks", "delete", "-f", task, check=False, timeout=20)

    def _kill_shims(self) -> None:
        """containerd-shim processes outlive containerd: stop the ones serving this node."""
        marker = str(self.socket)
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and marker.encode() in cmd:
                subprocess.run(["kill", "-9", proc.name], capture_output=True)

    def _pod_netns(self) -> list[str]:
        """The pods' namespaces: the peers of the veths on this node's cni0."""
        if self.netns not in _netns_names():
            return []
        out = run("ip", "-o", "link", "show", "type", "veth", netns=self.netns, check=False).stdout
        return re.findall(r"link-netns (\S+)", out)


def route_pod_networks(nodes: list["RealNode"]) -> None:
    """Host-gateway routing: every node namespace (and the root namespace, for the tests and
    the apiserver) reaches each other node's pod CIDR through that node's address."""
    for target in nodes:
        cidr, via = target.net.pod_cidr(target.spec.index), target.ip
        run("ip", "route", "replace", cidr, "via", via)
        for node in nodes:
            if node is not target:
                run("ip", "route", "replace", cidr, "via", via, netns=node.netns)


def http_get_in_node(node: "RealNode", url: str, python: str, timeout: float = 10) -> str:
    """GET ``url`` from inside ``node``'s network namespace (where kube-proxy's ClusterIP
    rules are): how a pod on that node would see a Service."""
    code = ("import sys, urllib.request\n"
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
    return run(python, "-c", code, url, netns=node.netns, timeout=timeout).stdout


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def unmount_below(path: Path) -> None:
    """Unmount everything mounted under ``path`` (kubelet volumes, container rootfs, shm),
    deepest first, so the directory can be removed."""
    root = str(path.resolve())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [ln.split()[1].replace("\\040", " ") for ln in lines]
    for mp in sorted({p for p in points if p == root or p.startswith(root + "/")},
                     key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


# ---------------------------------------------------------------------------- config files
def containerd_config(d: Path, runc: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd/containerd.sock"
[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
        Root = "{d}/runc"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/cni/net.d"
"""


def cni_conflist(pod_cidr: str, ipam_dir: Path) -> dict:
    return {"cniVersion": "0.4.0", "name": "kubenas-pods", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ipam_dir)}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}


def kubelet_argv(kubelet: str, node: RealNode, kubeconfig: Path, pki: Path) -> list[str]:
    d = node.dir
    labels = f"kubenas.dev/pool={node.spec.pool}"
    return [
        kubelet, f"--kubeconfig={kubeconfig}", f"--hostname-override={node.name}",
        "--container-runtime=remote", f"--container-runtime-endpoint=unix://{node.socket}",
        "--runtime-request-timeout=5m", "--cgroup-driver=cgroupfs", "--fail-swap-on=false",
        "--cgroups-per-qos=false", "--enforce-node-allocatable=",
        f"--root-dir={d / 'kubelet'}", f"--cert-dir={d / 'kubelet' / 'pki'}",
        f"--volume-plugin-dir={d / 'plugins'}",
        f"--node-ip={node.ip}", f"--address={node.ip}", f"--port={KUBELET_PORT}",
        "--read-only-port=0", "--healthz-port=0",
        # Only the apiserver (client cert) and token holders the apiserver vouches for.
        "--anonymous-auth=false", "--authentication-token-webhook=true",
        "--authorization-mode=Webhook", f"--client-ca-file={pki / 'ca.crt'}",
        f"--tls-cert-file={pki / f'kubelet-{node.name}.crt'}",
        f"--tls-private-key-file={pki / f'kubelet-{node.name}.key'}",
        f"--node-labels={labels}", f"--pod-infra-container-image={PAUSE_IMAGE}",
        # The images cannot be pulled again (no registry): never garbage-collect them.
        "--image-gc-high-threshold=100", "--image-gc-low-threshold=99",
        "--eviction-hard=memory.available<100Mi,nodefs.available<1%,imagefs.available<1%",
        "--node-status-update-frequency=4s", "--max-pods=60",
        "--kube-api-qps=50", "--kube-api-burst=100", "--v=1",
    ]


# ---------------------------------------------------------------------------- images
def node_image_archive(image: str, kube_bin: Path, cache: Path) -> Path:
    """A docker-archive with ``image`` and the pause image, made once per image id."""
    if shutil.which("podman") is None:
        raise DevEnvError("podman not found: run `make dev-tools`")
    if run("podman", "image", "exists", image, check=False).returncode != 0:
        raise DevEnvError(f"image {image} not found in podman's store: run `make image`")
    ensure_pause_image(kube_bin)
    image_id = run("podman", "image", "inspect", "--format", "{{.Id}}", image).stdout.strip()[:12]
    archive = cache / f"node-images-{image_id}.tar"
    if not archive.exists():
        for old in cache.glob("node-images-*.tar"):
            old.unlink()
        tmp = archive.with_suffix(".tmp")
        run("podman", "save", "-q", "--format", "docker-archive", "--multi-image-archive",
            "-o", str(tmp), image, PAUSE_IMAGE, timeout=600)
        tmp.rename(archive)
    return archive


def ensure_pause_image(kube_bin: Path) -> None:
    if run("podman", "image", "exists", PAUSE_IMAGE, check=False).returncode == 0:
        return
    pause = kube_bin / "pause"
    if not pause.exists():
        raise DevEnvError(f"{pause} not found: run `make dev-tools` (it compiles the pause binary)")
    build = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
    try:
        shutil.copy2(pause, build / "pause")
        run("tar", "-C", str(build), "-cf", str(build / "rootfs.tar"), "pause")
        run("podman", "import", "--change", 'ENTRYPOINT ["/pause"]', str(build / "rootfs.tar"),
            PAUSE_IMAGE)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def parallel(fn, items) -> None:
    """Run ``fn(item)`` for every item in threads; re-raise the first error."""
    errors: list[BaseException] = []

    def call(item):
        try:
            fn(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
