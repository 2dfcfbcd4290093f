"""The local dev environment: a real Kubernetes v1.20 control plane + SeaweedFS S3 + nodes.

Nodes are real by default (devenv/nodes.py: each its own network namespace running containerd,
runc, the real kubelet and kube-proxy, with the project's image from `make image`); the
control plane and S3 then listen on the bridge address those namespaces reach (10.213.<slot>.1)
and etcd on 127.0.0.1. ``--nodes simulated`` runs devenv/fake_kubelet.py instead (a simulated
node for scale tests only, everything on 127.0.0.1). Ports are picked free at start.

    python devenv/cluster.py up      # start (or report the running one); prints KUBECONFIG=...
    python devenv/cluster.py down    # stop what `up` started, by PID; idempotent
    python devenv/cluster.py status | env | apply-crds

State (pids, ports, kubeconfig, credentials, logs) lives in the state dir: env
KUBENAS_DEVENV_DIR, default <repo>/.devenv/. ``source <state>/env`` gives a shell the
variables. Pod output: <state>/pods/<namespace>_<pod>.log (a `kubectl logs` substitute).
Binaries come from `make dev-tools` (devenv/install-tools.sh).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script: make `devenv` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devenv.kubeapi import ApiError, KubeAPI  # noqa: E402
from devenv.procs import (LOOPBACK, REPO_ROOT, Daemon, DevEnvError, find_binary,  # noqa: E402
                          free_ports, venv_bin, wait_until)
from devenv.seaweed import SeaweedFS  # noqa: E402

KUBE_VERSION = "v1.20.2"
HELM_VERSION = "v3.17.2"
CACHE_DIR = Path(os.environ.get("KUBENAS_CACHE_DIR", Path.home() / ".cache" / "kubenas"))
CRD_DIR = REPO_ROOT / "operator" / "crds"
DEFAULT_POOLS = {"real": "pool-a:1:2,pool-b:1:1", "simulated": "pool-a:2:2,pool-b:1:1"}
NODE_MODES = ("real", "simulated")
DEFAULT_IMAGE = "localhost/kubenas:dev"
CONTROLLERS = ("job,nodelifecycle,namespace,garbagecollector,serviceaccount,serviceaccount-token,"
               "ttl-after-finished,deployment,replicaset,endpoint,endpointslice")
FEATURE_GATES = "TTLAfterFinished=true"
# the order matters: started in this order, stopped in reverse (then the real nodes' daemons)
COMPONENTS = ("etcd", "seaweedfs", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_DAEMONS = ("mountns", "containerd", "kubelet", "kube-proxy")


def default_state_dir() -> Path:
    return Path(os.environ.get("KUBENAS_DEVENV_DIR") or REPO_ROOT / ".devenv").resolve()


def kube_bin_dir() -> Path:
    return Path(os.environ.get("KUBENAS_KUBE_BIN_DIR") or CACHE_DIR / f"kube-{KUBE_VERSION}")


def kube_binary(name: str) -> str:
    path = kube_bin_dir() / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    if name == "kubectl":
        found = shutil.which("kubectl")
        if found:
            return found
    raise DevEnvError(f"{name} {KUBE_VERSION} not found in {kube_bin_dir()}: run `make dev-tools` "
                      "(devenv/install-tools.sh builds and caches it)")


def kubectl_binary() -> str:
    return kube_binary("kubectl")


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DevEnvError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def make_pki(pki: Path, host: str = LOOPBACK) -> None:
    """CA, apiserver serving cert (SANs 127.0.0.1, localhost, ``host``, the service IP) and the
    service-account signing key pair, all with openssl."""
    pki.mkdir(parents=True, exist_ok=True)
    (pki / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=IP:127.0.0.1,DNS:localhost,IP:{host},IP:10.0.0.1,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=kubenas-dev-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=pki)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "3650", "-extfile", "server.ext",
             cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def issue_cert(pki: Path, name: str, subject: str, usage: str, ips: tuple = ()) -> None:
    """``<name>.crt``/``.key`` signed by the dev CA: ``usage`` clientAuth or serverAuth."""
    ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    ext += f"extendedKeyUsage={usage}\n"
    if ips:
        ext += "subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips) + "\n"
    (pki / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=pki)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "3650", "-extfile", f"{name}.ext",
             cwd=pki)
    (pki / f"{name}.key").chmod(0o600)


def kubeconfig_text(server: str, ca_pem: bytes, token: Optional[str], user: str,
                    namespace: str = "default", cert: Optional[Path] = None) -> str:
    """A kubeconfig with the CA embedded and a bearer token or a client certificate
    (``cert``: the .crt path, its key beside it)."""
    ca = base64.b64encode(ca_pem).decode()
    user_block = f"    token: {token}\n" if token else "    {}\n"
    if cert is not None:
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
        user_block = (f"    client-certificate-data: {b64(cert)}\n"
                      f"    client-key-data: {b64(cert.with_suffix('.key'))}\n")
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: kubenas-dev\n  cluster:\n    server: {server}\n"
        f"    certificate-authority-data: {ca}\n"
        f"users:\n- name: {user}\n  user:\n{user_block}"
        f"contexts:\n- name: kubenas-dev\n  context:\n    cluster: kubenas-dev\n    user: {user}\n"
        f"    namespace: {namespace}\n"
        "current-context: kubenas-dev\n")


def _proc_start(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 1 << 62


def _write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


class DevCluster:
    """Handle on one environment's state dir. Attributes once up: ``kubeconfig`` (path),
    ``state_dir``, ``s3`` (a devenv.seaweed.SeaweedFS), ``server``, ``ports``, ``host`` (the
    address the apiserver and S3 listen on), ``nodes`` (real nodes by name)."""

    def __init__(self, state_dir: Optional[Path | str] = None, pools: Optional[str] = None,
                 nodes: Optional[str] = None, image: Optional[str] = None) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir else default_state_dir()
        self.node_mode = nodes or os.environ.get("KUBENAS_DEVENV_NODES") or "real"
        if self.node_mode not in NODE_MODES:
            raise DevEnvError(f"nodes: {self.node_mode!r} is not one of {', '.join(NODE_MODES)}")
        self.pools = pools or os.environ.get("KUBENAS_DEVENV_POOLS") or DEFAULT_POOLS[self.node_mode]
        self.image = image or os.environ.get("KUBENAS_IMAGE") or DEFAULT_IMAGE
        self.slot: Optional[int] = None
        self.nodes: dict = {}
        self.daemons: dict[str, Daemon] = {}
        self.ports: dict[str, int] = {}
        self.s3: Optional[SeaweedFS] = None
        self.admin_token: Optional[str] = None
        self.started_by_me = False
        self._load()

    # ------------------------------------------------------------------ paths & state
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def kubeconfig(self) -> str:
        return str(self.state_dir / "kubeconfig")

    @property
    def env_file(self) -> str:
        return str(self.state_dir / "env")

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def host(self) -> str:
        if self.node_mode == "real" and self.slot is not None:
            from devenv.nodes import Network
            return Network(self.slot).host_ip
        return LOOPBACK

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.ports['apiserver']}"

    def _load(self) -> None:
        try:
            st = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        self.ports = st.get("ports", {})
        self.admin_token = st.get("admin_token")
        self.pools = st.get("pools", self.pools)
        self.node_mode = st.get("nodes", self.node_mode)
        self.slot = st.get("slot")
        self.image = st.get("image", self.image)
        known = {d.pid: d for d in self.daemons.values()}  # keep our Popen handles (reaping)
        self.daemons = {}
        for name, d in st.get("daemons", {}).items():
            self.daemons[name] = known.get(int(d["pid"])) or Daemon.from_dict(name, d)
        if st.get("s3"):
            self.s3 = SeaweedFS.from_dict(st["s3"], on_change=self._s3_changed)
            if self.s3.daemon:
                self.s3.daemon = known.get(self.s3.daemon.pid) or self.s3.daemon
                self.daemons["seaweedfs"] = self.s3.daemon
        self._load_nodes()

    def _load_nodes(self) -> None:
        from devenv.fake_kubelet import parse_pools
        from devenv.nodes import Network, RealNode, node_specs

        self.nodes = {}
        if self.node_mode != "real" or self.slot is None:
            return
        for spec in node_specs(parse_pools(self.pools)):
            node = RealNode(spec, Network(self.slot), self.state_dir / "nodes")
            for daemon in NODE_DAEMONS:
                key = f"{daemon}-{spec.name}"
                if key in self.daemons:
                    node.daemons[daemon] = self.daemons[key]
            self.nodes[spec.name] = node

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        daemons = {n: d.to_dict() for n, d in self.daemons.items() if n != "seaweedfs"}
        st = {"kube_version": KUBE_VERSION, "ports": self.ports, "admin_token": self.admin_token,
              "pools": self.pools, "nodes": self.node_mode, "slot": self.slot, "image": self.image,
              "daemons": daemons, "kubeconfig": self.kubeconfig,
              "s3": self.s3.to_dict() if self.s3 else None}
        tmp = self.state_file.with_suffix(".tmp")
        _write_private(tmp, json.dumps(st, indent=1))
        os.replace(tmp, self.state_file)

    def _s3_changed(self, s3: SeaweedFS) -> None:
        if s3.daemon:
            self.daemons["seaweedfs"] = s3.daemon
        if self.state_file.exists() or self.daemons:
            self._save()

    def components(self) -> list[str]:
        """Every daemon of this environment, in start order."""
        if self.node_mode == "simulated":
            return [*COMPONENTS, "fake-kubelet"]
        return [*COMPONENTS, *(f"{d}-{n}" for n in self.expected_nodes() for d in NODE_DAEMONS)]

    def running(self) -> bool:
        """True when every component recorded in the state dir is alive."""
        return bool(self.daemons) and all(n in self.daemons and self.daemons[n].alive()
                                          for n in self.components())

    def env(self) -> dict:
        env = {"KUBECONFIG": self.kubeconfig}
        if self.s3:
            env.update(self.s3.env())
        env["KUBENAS_DEVENV_DIR"] = str(self.state_dir)
        return env

    def api(self) -> KubeAPI:
        return KubeAPI(self.server, self.admin_token, str(self.state_dir / "pki" / "ca.crt"))

    # ------------------------------------------------------------------ up
    @contextlib.contextmanager
    def _locked(self):
        """Serialise up/down on one state dir (two `make dev-cluster` at once: the second waits
        and then finds the first one's environment running)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self._load()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def up(self, timeout: float = 90.0, quiet: bool = False) -> "DevCluster":
        with self._locked():
            return self._up(timeout, quiet)

    def _up(self, timeout: float, quiet: bool) -> "DevCluster":
        say = (lambda *a: None) if quiet else (lambda msg: print(f"[dev-cluster] {msg}", flush=True))
        if self.running():
            say(f"already running (state {self.state_dir})")
            return self
        if self.daemons or self.slot is not None:
            say("a previous environment is partly running: stopping it first")
            self._down(quiet=True)
        t0 = time.monotonic()
        binaries = self._binaries()
        logs = self._fresh_state_dir()
        names = ("etcd_client", "etcd_peer", "apiserver", "controller_manager", "scheduler")
        self.ports = dict(zip(names, free_ports(len(names))))
        self.admin_token = secrets.token_urlsafe(32)
        tokens = {"admin": self.admin_token, "kcm": secrets.token_urlsafe(32),
                  "scheduler": secrets.token_urlsafe(32), "kubelet": secrets.token_urlsafe(32),
                  "kube-proxy": secrets.token_urlsafe(32)}
        self.daemons = {}
        self.started_by_me = True
        try:
            if self.node_mode == "real":
                self._create_network(say)
            api = self._start_control_plane(binaries, tokens, logs, timeout, say, t0)
            if self.node_mode == "real":
                self._start_real_nodes(binaries, timeout, say)
            else:
                self._start_kubelet(logs)
                self._save()
            self._wait_nodes(api, timeout)
            say(f"nodes Ready: {', '.join(self.expected_nodes())} ({time.monotonic() - t0:.1f}s)")
            wait_until(lambda: self._sa_token_ready(api, "default"),
                       self.daemons["kube-controller-manager"],
                       "creating the default ServiceAccount token", timeout)
            crds = self.apply_crds()
            if crds:
                say(f"applied CRDs: {', '.join(crds)}")
        except BaseException:
            say("start failed: stopping what was started")
            self._down(quiet=True)
            raise
        self._write_env_file()
        say(f"up in {time.monotonic() - t0:.1f}s")
        return self

    def _binaries(self) -> dict:
        names = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]
        if self.node_mode == "real":
            names += ["kubelet", "kube-proxy"]
            if os.geteuid() != 0:
                raise DevEnvError("real nodes need root (network namespaces, mounts, iptables); "
                                  "run as root or use --nodes simulated")
        binaries = {n: kube_binary(n) for n in names}
        binaries["etcd"] = find_binary("etcd")
        if not binaries["etcd"]:
            raise DevEnvError("etcd not found: run `make dev-tools` (apt package etcd-server)")
        return binaries

    def _fresh_state_dir(self) -> Path:
        """Empty the state dir but for the logs (the previous run's kept as *.log.1)."""
        from devenv.nodes import unmount_below

        self.state_dir.mkdir(parents=True, exist_ok=True)
        unmount_below(self.state_dir / "nodes")
        for sub in ("etcd-data", "s3-data", "pki", "pods", "kubeconfigs", "bin", "nodes"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        for old in logs.glob("*.log"):
            os.replace(old, old.with_suffix(".log.1"))
        self.pods_dir.mkdir()
        (self.state_dir / "kubeconfigs").mkdir()
        self._make_bin_dir()
        gi = self.state_dir / ".gitignore"
        if not gi.exists():
            gi.write_text("*\n")
        return logs

    def _create_network(self, say) -> None:
        from devenv.nodes import Network

        for _ in range(5):  # another environment may take the same free slot at once
            net = Network.pick_free()
            try:
                net.create()
                break
            except DevEnvError:
                time.sleep(0.5)
        else:
            raise DevEnvError("could not create a dev-cluster bridge (slots taken meanwhile)")
        self.slot = net.slot
        self._load_nodes()
        self._save()
        say(f"network: bridge {net.bridge} {net.host_ip}/24 (control plane and S3 listen there)")

    def _start_control_plane(self, binaries: dict, tokens: dict, logs: Path, timeout: float,
                             say, t0: float) -> KubeAPI:
        # etcd and SeaweedFS start while the PKI is made; the apiserver while S3 settles.
        say("starting etcd and SeaweedFS")
        self.s3 = SeaweedFS(self.state_dir / "s3-data", bucket="kubenas",
                            on_change=self._s3_changed, host=self.host)
        self._start_etcd(binaries["etcd"], logs)
        self.s3.launch()
        self._save()
        pki = self.state_dir / "pki"
        make_pki(pki, self.host)
        wait_until(lambda: self._http_ok(f"http://{LOOPBACK}:{self.ports['etcd_client']}/health"),
                   self.daemons["etcd"], "healthy", timeout)
        self._write_credentials(pki, tokens)
        self._start_apiserver(binaries["kube-apiserver"], pki, logs)
        self._save()
        self.s3.wait_ready(timeout=timeout)
        say(f"SeaweedFS ready at {self.s3.endpoint} ({time.monotonic() - t0:.1f}s)")
        api = self.api()
        wait_until(lambda: api.get_text("/readyz") == "ok", self.daemons["kube-apiserver"],
                   "ready (/readyz)", timeout)
        say(f"kube-apiserver ready at {self.server} ({time.monotonic() - t0:.1f}s)")
        self._start_kcm(binaries["kube-controller-manager"], pki, logs)
        self._start_scheduler(binaries["kube-scheduler"], logs)
        self._save()
        for name, port in (("kube-controller-manager", "controller_manager"),
                           ("kube-scheduler", "scheduler")):
            url = f"https://{LOOPBACK}:{self.ports[port]}/healthz"
            wait_until(lambda url=url: self._http_ok(url, verify=False), self.daemons[name],
                       "healthy (/healthz)", timeout)
        return api

    def _http_ok(self, url: str, verify=True) -> bool:
        import warnings

        import requests
        import urllib3

        with warnings.catch_warnings():  # KCM/scheduler serve self-signed certs on loopback
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            with requests.Session() as s:
                s.trust_env = False
                return s.get(url, timeout=2, verify=verify).status_code == 200

    def _start_etcd(self, etcd_bin: str, logs: Path) -> None:
        c, p = self.ports["etcd_client"], self.ports["etcd_peer"]
        argv = [etcd_bin, "--name=kubenas-dev", f"--data-dir={self.state_dir / 'etcd-data'}",
                f"--listen-client-urls=http://{LOOPBACK}:{c}",
                f"--advertise-client-urls=http://{LOOPBACK}:{c}",
                f"--listen-peer-urls=http://{LOOPBACK}:{p}",
                f"--initial-advertise-peer-urls=http://{LOOPBACK}:{p}",
                f"--initial-cluster=kubenas-dev=http://{LOOPBACK}:{p}",
                "--initial-cluster-state=new", "--log-level=warn",
                "--quota-backend-bytes=1073741824", "--snapshot-count=10000"]
        self.daemons["etcd"] = Daemon.spawn("etcd", argv, logs / "etcd.log")

    def _write_credentials(self, pki: Path, tokens: dict) -> None:
        # token,user,uid,"groups"
        _write_private(pki / "tokens.csv", "\n".join([
            f'{tokens["admin"]},kubenas-admin,kubenas-admin,"system:masters"',
            f'{tokens["kcm"]},system:kube-controller-manager,system:kube-controller-manager,""',
            f'{tokens["scheduler"]},system:kube-scheduler,system:kube-scheduler,""',
            f'{tokens["kubelet"]},kubenas-fake-kubelet,kubenas-fake-kubelet,"system:masters"',
            # bound to system:node-proxier by the apiserver's bootstrap RBAC
            f'{tokens["kube-proxy"]},system:kube-proxy,system:kube-proxy,""',
        ]) + "\n")
        ca = (pki / "ca.crt").read_bytes()
        server = self.server
        _write_private(Path(self.kubeconfig), kubeconfig_text(server, ca, tokens["admin"], "kubenas-admin"))
        kc = self.state_dir / "kubeconfigs"
        for name, user in (("kcm", "system:kube-controller-manager"),
                           ("scheduler", "system:kube-scheduler"),
                           ("kubelet", "kubenas-fake-kubelet"),
                           ("kube-proxy", "system:kube-proxy")):
            _write_private(kc / f"{name}.kubeconfig", kubeconfig_text(server, ca, tokens[name], user))
        if self.node_mode == "real":
            self._write_node_credentials(pki, ca)

    def _write_node_credentials(self, pki: Path, ca: bytes) -> None:
        """Per node: a client cert in system:nodes (the Node authorizer and NodeRestriction
        then limit it to its own objects) and a serving cert for its address; for the
        apiserver: a client cert for calling kubelets (logs, exec)."""
        issue_cert(pki, "apiserver-kubelet-client", "/CN=kube-apiserver-kubelet-client", "clientAuth")
        kc = self.state_dir / "kubeconfigs"
        for node in self.nodes.values():
            issue_cert(pki, f"node-{node.name}", f"/O=system:nodes/CN=system:node:{node.name}",
                       "clientAuth")
            issue_cert(pki, f"kubelet-{node.name}", f"/CN={node.name}", "serverAuth", (node.ip,))
            _write_private(kc / f"node-{node.name}.kubeconfig",
                           kubeconfig_text(self.server, ca, None, f"system:node:{node.name}",
                                           cert=pki / f"node-{node.name}.crt"))

    def _start_apiserver(self, binary: str, pki: Path, logs: Path) -> None:
        argv = [binary,
                f"--etcd-servers=http://{LOOPBACK}:{self.ports['etcd_client']}",
                f"--bind-address={self.host}", f"--advertise-address={self.host}",
                f"--secure-port={self.ports['apiserver']}", "--insecure-port=0",
                f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                *self._authorization_flags(pki), "--anonymous-auth=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # real nodes: the `kubernetes` Service's endpoint is this apiserver (kube-proxy)
                f"--endpoint-reconciler-type={'lease' if self.node_mode == 'real' else 'none'}",
                # a pod on a node that stopped reporting is evicted after 30 s, not 300 s
                "--default-not-ready-toleration-seconds=30",
                "--default-unreachable-toleration-seconds=30",
                f"--feature-gates={FEATURE_GATES}",
                "--allow-privileged=true", "--profiling=false",
                f"--cert-dir={pki}", "--v=1"]
        self.daemons["kube-apiserver"] = Daemon.spawn("kube-apiserver", argv, logs / "kube-apiserver.log")

    def _authorization_flags(self, pki: Path) -> list[str]:
        if self.node_mode != "real":
            return ["--authorization-mode=RBAC"]
        return ["--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname"]

    def _start_kcm(self, binary: str, pki: Path, logs: Path) -> None:
        kc = self.state_dir / "kubeconfigs" / "kcm.kubeconfig"
        argv = [binary, f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false", f"--bind-address={LOOPBACK}",
                f"--secure-port={self.ports['controller_manager']}", "--port=0",
                f"--cert-dir={pki / 'kcm'}",
                f"--controllers={CONTROLLERS}", f"--feature-gates={FEATURE_GATES}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                # notice a vanished fake kubelet within ~20 s, evict after 60 s
                "--node-monitor-period=2s", "--node-monitor-grace-period=20s",
                "--pod-eviction-timeout=60s",
                "--concurrent-gc-syncs=5", "--profiling=false", "--v=1",
                # the job controller makes a pod per trial: 20 requests/s (the default) would
                # be the ceiling of a scale test
                "--kube-api-qps=200", "--kube-api-burst=400"]
        self.daemons["kube-controller-manager"] = Daemon.spawn(
            "kube-controller-manager", argv, logs / "kube-controller-manager.log")

    def _start_scheduler(self, binary: str, logs: Path) -> None:
        kc = self.state_dir / "kubeconfigs" / "scheduler.kubeconfig"
        argv = [binary, f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false", f"--bind-address={LOOPBACK}",
                f"--secure-port={self.ports['scheduler']}", "--port=0",
                f"--cert-dir={self.state_dir / 'pki' / 'scheduler'}",
                "--profiling=false", "--v=1"]
        self.daemons["kube-scheduler"] = Daemon.spawn("kube-scheduler", argv, logs / "kube-scheduler.log")

    def _start_kubelet(self, logs: Path) -> None:
        argv = [str(venv_bin() / "python"), str(REPO_ROOT / "devenv" / "fake_kubelet.py"),
                f"--kubeconfig={self.state_dir / 'kubeconfigs' / 'kubelet.kubeconfig'}",
                f"--state-dir={self.state_dir}", f"--pools={self.pools}",
                f"--venv-bin={venv_bin()}:{self.bin_dir}"]
        if os.environ.get("KUBENAS_SIM_CHILD_SECONDS"):   # scale tests: devenv/simnode.py
            argv.append(f"--simulate-children={float(os.environ['KUBENAS_SIM_CHILD_SECONDS'])}")
        self.daemons["fake-kubelet"] = Daemon.spawn("fake-kubelet", argv, logs / "fake-kubelet.log")

    def _start_real_nodes(self, binaries: dict, timeout: float, say) -> None:
        """Namespaces, containerd with the images imported, kubelet and kube-proxy per node."""
        from devenv.nodes import node_image_archive, parallel, route_pod_networks

        t0 = time.monotonic()
        self._grant_apiserver_kubelet_access()
        archive = node_image_archive(self.image, kube_bin_dir(), CACHE_DIR / "images")
        runc = find_binary("runc", [Path("/usr/sbin")]) or "runc"
        pki, kc = self.state_dir / "pki", self.state_dir / "kubeconfigs"

        def start(node) -> None:
            node.create_netns()
            node.write_config(runc)
            self.daemons[f"mountns-{node.name}"] = node.start_mount_ns()
            self.daemons[f"containerd-{node.name}"] = node.start_containerd()
            wait_until(node.socket.exists, node.daemons["containerd"], "listening", timeout)
            node.import_images(archive)
            self.daemons[f"kubelet-{node.name}"] = node.start_kubelet(
                binaries["kubelet"], kc / f"node-{node.name}.kubeconfig", pki)
            self.daemons[f"kube-proxy-{node.name}"] = node.start_kube_proxy(
                binaries["kube-proxy"], kc / "kube-proxy.kubeconfig")

        say(f"starting real nodes {', '.join(self.nodes)}; importing {self.image}")
        try:
            parallel(start, list(self.nodes.values()))
            route_pod_networks(list(self.nodes.values()))
        finally:
            self._save()
        say(f"nodes started in {time.monotonic() - t0:.1f}s")
        self._advertise_gpus(timeout)

    def _grant_apiserver_kubelet_access(self) -> None:
        """The apiserver's kubelet client may use the kubelet API (logs, exec), nothing else."""
        self.api().create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubenas-dev:apiserver-kubelet-client"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:kubelet-api-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": "kube-apiserver-kubelet-client"}]})

    def _advertise_gpus(self, timeout: float, nodes=None) -> None:
        """No device plugin here: GPUs go into the node's status capacity (the kubelet copies
        capacity into allocatable and keeps it while it runs; ``kubelet_up`` re-advertises)."""
        api = self.api()
        for node in nodes or self.nodes.values():
            path = f"/api/v1/nodes/{node.name}"
            wait_until(lambda: self._exists(api, path), node.daemons["kubelet"],
                       f"registering node {node.name}", timeout)
            patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu",
                      "value": str(node.spec.gpus)}]
            api.patch(f"{path}/status", patch, content_type="application/json-patch+json")

    @staticmethod
    def _exists(api: KubeAPI, path: str) -> bool:
        try:
            api.get(path)
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def http_get_in_cluster(self, url: str, node: Optional[str] = None) -> str:
        """GET ``url`` as a pod on ``node`` (default: the first) would: ClusterIPs work."""
        from devenv.nodes import http_get_in_node

        target = self.nodes[node] if node else next(iter(self.nodes.values()))
        return http_get_in_node(target, url, str(venv_bin() / "python"))

    def container_pids(self, namespace: str, pod: str, container: int = 0) -> list[int]:
        """Host PIDs of a running container's processes, its first process first (for
        SIGSTOP/SIGKILL faults): found by the container id in each process's cgroup path."""
        obj = json.loads(self.run_kubectl("-n", namespace, "get", "pod", pod, "-o", "json").stdout)
        statuses = (obj.get("status") or {}).get("containerStatuses") or []
        running = statuses and (statuses[container].get("state") or {}).get("running")
        cid = (statuses[container].get("containerID") or "").split("://")[-1] if running else ""
        if not cid:
            raise DevEnvError(f"pod {namespace}/{pod} has no running container")
        pids = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if cid in (proc / "cgroup").read_text():
                    pids.append(int(proc.name))
            except OSError:
                continue
        if not pids:
            raise DevEnvError(f"no process of container {cid[:12]} ({namespace}/{pod})")
        return sorted(pids, key=_proc_start)

    def kubelet_down(self, node: str) -> None:
        """Stop one real node's kubelet (its containers keep running), for fault tests."""
        self.nodes[node].stop_kubelet()

    def kubelet_up(self, node: str, timeout: float = 90) -> None:
        """Start a stopped kubelet again and, once it has re-registered, advertise the node's
        GPUs again (see ``_readvertise_gpus``)."""
        n = self.nodes[node]
        kc = self.state_dir / "kubeconfigs" / f"node-{node}.kubeconfig"
        since = datetime.now(timezone.utc).replace(microsecond=0)
        self.daemons[f"kubelet-{node}"] = n.start_kubelet(kube_binary("kubelet"), kc,
                                                          self.state_dir / "pki")
        self._save()
        self._readvertise_gpus(n, since, timeout)

    def _readvertise_gpus(self, node, since: datetime, timeout: float) -> None:
        """A kubelet that re-registers without a device-plugin checkpoint zeroes every
        extended resource (devicemanager's ShouldResetExtendedResourceCapacity), and on a
        real node the device plugin then advertises its GPUs again: so do we, after the
        kubelet's first status update (registration comes first in the same sync)."""
        api, path = self.api(), f"/api/v1/nodes/{node.name}"

        def heartbeat_since() -> bool:
            conds = api.get(path)["status"].get("conditions") or []
            beats = [c.get("lastHeartbeatTime") for c in conds if c["type"] == "Ready"]
            return bool(beats and beats[0] and
                        datetime.strptime(beats[0], "%Y-%m-%dT%H:%M:%SZ").replace(
                            tzinfo=timezone.utc) >= since)
        wait_until(heartbeat_since, node.daemons["kubelet"], f"{node.name} re-registering", timeout)
        self._advertise_gpus(timeout, [node])

    @property
    def bin_dir(self) -> Path:
        """kubectl/helm matching this cluster (symlinks); first on pods' PATH after the venv."""
        return self.state_dir / "bin"

    def _make_bin_dir(self) -> None:
        self.bin_dir.mkdir(exist_ok=True)
        tools = {"kubectl": kube_bin_dir() / "kubectl",
                 "helm": CACHE_DIR / f"helm-{HELM_VERSION}" / "helm"}
        for name, target in tools.items():
            if target.exists():
                (self.bin_dir / name).symlink_to(target)

    def expected_nodes(self) -> list[str]:
        from devenv.fake_kubelet import parse_pools

        return [n for pool in parse_pools(self.pools) for n in pool.node_names()]

    def _node_daemon(self) -> Optional[Daemon]:
        """The process whose death means nodes will not come (for readiness waits)."""
        if self.node_mode == "simulated":
            return self.daemons.get("fake-kubelet")
        return next((self.daemons.get(f"kubelet-{n}") for n in self.nodes), None)

    def _wait_nodes(self, api: KubeAPI, timeout: float) -> None:
        want = set(self.expected_nodes())

        def ready() -> bool:
            ok = set()
            for node in api.get("/api/v1/nodes")["items"]:
                conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
                taints = [t["key"] for t in node["spec"].get("taints", [])]
                if conds.get("Ready") == "True" and not any(
                        k.startswith("node.kubernetes.io/") for k in taints):
                    ok.add(node["metadata"]["name"])
            return want <= ok

        wait_until(ready, self._node_daemon(), f"registering Ready nodes {sorted(want)}", timeout)

    @staticmethod
    def _sa_token_ready(api: KubeAPI, namespace: str, sa: str = "default") -> bool:
        try:
            obj = api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return bool(obj.get("secrets"))

    def _write_env_file(self) -> None:
        lines = [f"export {k}={v}" for k, v in self.env().items()]
        lines.append(f'export PATH="{self.bin_dir}:$PATH"  # kubectl {KUBE_VERSION}, helm {HELM_VERSION}')
        _write_private(Path(self.env_file), "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ CRDs, kubectl
    def run_kubectl(self, *args: str, check: bool = True, input: Optional[str] = None,
                    timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise DevEnvError(f"kubectl {' '.join(args)} failed ({proc.returncode}): "
                              f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def apply_crds(self, crd_dir: Path | str = CRD_DIR, timeout: float = 30) -> list[str]:
        """kubectl apply every operator/crds/*.yaml (if any) and wait until Established.
        Returns the CRD names."""
        files = sorted(Path(crd_dir).glob("*.yaml")) + sorted(Path(crd_dir).glob("*.yml"))
        if not files:
            return []
        args = ["apply", "-o", "name"]
        for f in files:
            args += ["-f", str(f)]
        out = self.run_kubectl(*args, timeout=timeout).stdout.split()
        names = [n.split("/", 1)[1] for n in out if n.startswith("customresourcedefinition")]
        if names:
            self.run_kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
                             *[f"crd/{n}" for n in names], timeout=timeout + 10)
        return names

    # ------------------------------------------------------------------ namespaces
    def create_namespace(self, prefix: str = "test", timeout: float = 30) -> str:
        """A fresh namespace whose default ServiceAccount already has its token (pods can be
        created at once)."""
        api = self.api()
        name = f"{prefix}-{secrets.token_hex(3)}"
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": name}})
        wait_until(lambda: self._sa_token_ready(api, name), None,
                   f"token for ServiceAccount {name}/default created", timeout)
        return name

    namespace_factory = create_namespace

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` for the admin kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def delete_namespace(self, name: str) -> None:
        try:
            self.api().delete(f"/api/v1/namespaces/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise

    def pod_log(self, namespace: str, pod: str) -> str:
        """The pod's output: `kubectl logs` (real nodes), the fake kubelet's file (simulated)."""
        if self.node_mode == "real":
            proc = self.run_kubectl("-n", namespace, "logs", pod, "--all-containers", check=False)
            return proc.stdout if proc.returncode == 0 else ""
        path = self.pods_dir / f"{namespace}_{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ down / status
    def down(self, quiet: bool = False) -> None:
        with self._locked():
            self._down(quiet)

    def _down(self, quiet: bool) -> None:
        say = (lambda *a: None) if quiet else (lambda msg: print(f"[dev-cluster] {msg}", flush=True))
        if not self.daemons and self.slot is None:
            say(f"nothing running (state {self.state_dir})")
            return
        for node in self.nodes.values():
            say(f"stopping node {node.name} (kubelet, kube-proxy, containers, containerd)")
            node.destroy()
        for name in reversed(self.components()):
            d = self.daemons.get(name)
            if d is None:
                continue
            if d.alive():
                say(f"stopping {name} (pid {d.pid})")
                d.stop(timeout=20 if name == "fake-kubelet" else 10)
        self._kill_orphan_pods(say)
        if self.slot is not None:
            from devenv.nodes import Network

            Network(self.slot).destroy()
            self.slot = None
        self.nodes = {}
        self.daemons = {}
        if self.s3:
            self.s3.daemon = None
        self._save()
        try:
            os.unlink(self.env_file)
        except FileNotFoundError:
            pass
        say("stopped")

    def _kill_orphan_pods(self, say) -> None:
        """Pod processes the fake kubelet left behind (it was killed hard): stop them by the PID
        (and start time) it recorded."""
        from devenv.fake_kubelet import PROC_MARKER
        from devenv.procs import _proc_starttime

        for marker in self.pods_dir.glob(f"*/{PROC_MARKER}"):
            try:
                pid_s, start = marker.read_text().split()
                pid = int(pid_s)
            except (OSError, ValueError):
                continue
            if _proc_starttime(pid) == start:
                say(f"stopping orphaned pod process {pid} ({marker.parent.name})")
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            marker.unlink(missing_ok=True)

    def status(self) -> dict:
        return {n: ("running" if n in self.daemons and self.daemons[n].alive() else "stopped")
                for n in self.components()}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="devenv/cluster.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "status", "env", "apply-crds"])
    ap.add_argument("--state-dir", default=None,
                    help="state directory (env KUBENAS_DEVENV_DIR, default <repo>/.devenv)")
    ap.add_argument("--pools", default=None,
                    help="node pools NAME:NODES:GPUS[,...] (env KUBENAS_DEVENV_POOLS, default "
                         f"{DEFAULT_POOLS['real']} for real nodes)")
    ap.add_argument("--nodes", choices=NODE_MODES, default=None,
                    help="real nodes (kubelet + containerd, the default; env KUBENAS_DEVENV_NODES) "
                         "or simulated ones (the fake kubelet, for scale tests)")
    ap.add_argument("--timeout", type=float, default=90.0)
    args = ap.parse_args(argv)
    cluster = DevCluster(args.state_dir, args.pools, args.nodes)
    try:
        if args.command == "up":
            cluster.up(timeout=args.timeout)
            for k, v in cluster.env().items():
                print(f"{k}={v}")
            print(f"# source {cluster.env_file}   # pod logs: {cluster.pods_dir}/<ns>_<pod>.log")
        elif args.command == "down":
            cluster.down()
        elif args.command == "status":
            st = cluster.status()
            for k, v in st.items():
                print(f"{k:24s} {v}")
            return 0 if all(v == "running" for v in st.values()) else 3
        elif args.command == "env":
            if not cluster.running():
                print(f"not running (state {cluster.state_dir})", file=sys.stderr)
                return 3
            for k, v in cluster.env().items():
                print(f"export {k}={v}")
        elif args.command == "apply-crds":
            print("\n".join(cluster.apply_crds()) or "no CRD files in operator/crds/")
    except DevEnvError as exc:
        print(f"[dev-cluster] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
