"""A simulated node, for scale tests and benchmarks only (``devenv/cluster.py --nodes
simulated``): Node objects in labelled pools whose pods run as local processes, without an
image, a container runtime, volumes, limits or pod networking. It is not a correctness tool
for pods: what proves pods work runs on real nodes (devenv/nodes.py: kubelet + containerd).

* Registers nodes ``<pool>-<i>`` labelled ``kubenas.dev/pool=<pool>`` with capacity
  ``nvidia.com/gpu`` (plus cpu, memory, pods), keeps them Ready (node status heartbeats and
  a Lease in kube-node-lease). The real kube-scheduler does all resource accounting.
* Watches pods bound to its nodes (resourceVersion resume, periodic relist) and runs the first
  container's command+args as a subprocess in its own process group with the pod's env
  (value, valueFrom secretKeyRef/configMapKeyRef/fieldRef/resourceFieldRef, envFrom,
  $(VAR) expansion), PATH prefixed with the project's venv bin, and KUBECONFIG pointing at a
  kubeconfig that holds the pod's ServiceAccount token (the token Secret that the 1.20
  ServiceAccount admission plugin mounted; no credentials when automount is off).
* Pod status Pending -> Running -> Succeeded/Failed (exit code in containerStatuses),
  restartPolicy Always/OnFailure/Never with restart backoff, graceful deletion (SIGTERM to the
  process group, SIGKILL after the grace period, then the final delete with grace 0).
* Container output (stdout+stderr) is appended to <state>/pods/<namespace>_<pod>.log.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script: make `devenv` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devenv.kubeapi import ApiError, KubeAPI  # noqa: E402

POOL_LABEL = "kubenas.dev/pool"
GPU = "nvidia.com/gpu"
HEARTBEAT_S = 5.0
RELIST_S = 30.0
MAX_BACKOFF_S = 10.0
NODE_LEASE_NS = "kube-node-lease"
PROC_MARKER = ".fake-kubelet-proc"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log(msg: str) -> None:
    print(f"{dt.datetime.now().strftime('%H:%M:%S.%f')[:-3]} {msg}", flush=True)


@dataclass
class Pool:
    name: str
    nodes: int
    gpus: int
    cpu: str = "4"
    memory: str = "16Gi"

    def node_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.nodes)]


def parse_pools(spec: str) -> list[Pool]:
    """``NAME:NODES:GPUS[:CPU[:MEMORY]]`` comma-separated, e.g. ``pool-a:2:2,pool-b:1:1``."""
    pools = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if len(parts) < 3 or len(parts) > 5:
            raise ValueError(f"pool {item!r}: expected NAME:NODES:GPUS[:CPU[:MEMORY]]")
        pools.append(Pool(parts[0], int(parts[1]), int(parts[2]), *parts[3:]))
    return pools


class ConfigError(Exception):
    """The container cannot be started yet (missing Secret/ConfigMap key, no command)."""


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: dict) -> str:
    """Kubernetes $(VAR) expansion: defined vars are substituted, $$ escapes, others stay."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, text)


# ---------------------------------------------------------------------------- pod worker
class PodWorker(threading.Thread):
    def __init__(self, kubelet: "FakeKubelet", pod: dict) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.api = kubelet.api
        self.ns = meta["namespace"]
        self.name = meta["name"]
        self.uid = meta["uid"]
        self.pod = pod
        self.deleting = threading.Event()   # deletionTimestamp seen
        self.gone = threading.Event()       # the object is gone from the API
        self.shutdown_ev = threading.Event()  # the kubelet itself stops
        self.wake = threading.Event()
        self.proc: Optional[subprocess.Popen] = None
        self.container = (pod["spec"].get("containers") or [{}])[0]
        self.cname = self.container.get("name", "main")
        self.policy = pod["spec"].get("restartPolicy", "Always")
        self.restart_count = 0
        self.started_at: Optional[str] = None
        self.last_terminated: Optional[dict] = None
        self.pod_start = pod.get("status", {}).get("startTime") or now()
        self.cond_times: dict[str, tuple[str, str]] = {}
        self.workdir = kubelet.pods_dir / f"{self.ns}_{self.name}"
        self.log_path = kubelet.pods_dir / f"{self.ns}_{self.name}.log"

    # -- events from the watch
    def update(self, pod: dict) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()
            self.wake.set()

    def mark_gone(self) -> None:
        self.gone.set()
        self.deleting.set()
        self.wake.set()

    def shutdown(self) -> None:
        self.shutdown_ev.set()
        self.wake.set()

    def _stopping(self) -> bool:
        return self.deleting.is_set() or self.shutdown_ev.is_set()

    # -- status
    def _conditions(self, ready: bool, reason: Optional[str] = None) -> list[dict]:
        conds = []
        for ctype, val in (("Initialized", True), ("Ready", ready), ("ContainersReady", ready),
                           ("PodScheduled", True)):
            status = "True" if val else "False"
            prev = self.cond_times.get(ctype)
            if prev is None or prev[0] != status:
                self.cond_times[ctype] = (status, now())
            c = {"type": ctype, "status": status, "lastProbeTime": None,
                 "lastTransitionTime": self.cond_times[ctype][1]}
            if not val and ctype in ("Ready", "ContainersReady") and reason:
                c["reason"] = reason
            conds.append(c)
        return conds

    def _patch_status(self, phase: str, state: dict, ready: bool, reason: Optional[str] = None,
                      message: Optional[str] = None) -> None:
        cs = {"name": self.cname, "image": self.container.get("image", ""),
              "imageID": "fake://" + self.container.get("image", ""),
              "containerID": f"fake://{self.proc.pid}" if self.proc else None,
              "ready": ready, "started": "running" in state, "restartCount": self.restart_count,
              "state": state, "lastState": {"terminated": self.last_terminated}
              if self.last_terminated else {}}
        body = {"status": {
            "phase": phase, "hostIP": "127.0.0.1", "startTime": self.pod_start,
            "qosClass": self.pod.get("status", {}).get("qosClass") or "BestEffort",
            "conditions": self._conditions(ready, "ContainersNotReady" if not ready else None),
            "containerStatuses": [cs], "reason": reason, "message": message}}
        try:
            self.api.merge_patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", body)
        except ApiError as exc:
            if exc.status == 404:
                self.mark_gone()
            else:
                log(f"{self.ns}/{self.name}: status update failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - keep the pod running; next update may work
            log(f"{self.ns}/{self.name}: status update failed: {exc}")

    # -- container config
    def _get(self, kind: str, name: str, cache: dict) -> Optional[dict]:
        key = (kind, name)
        if key not in cache:
            try:
                cache[key] = self.api.get(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                cache[key] = None
        return cache[key]

    def _source_value(self, kind: str, ref: dict, cache: dict) -> Optional[str]:
        obj = self._get(kind, ref["name"], cache)
        optional = ref.get("optional", False)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind[:-1]} "{ref["name"]}" not found')
        key = ref["key"]
        if kind == "secrets":
            raw = (obj.get("data") or {}).get(key)
            val = base64.b64decode(raw).decode(errors="replace") if raw is not None else None
        else:
            val = (obj.get("data") or {}).get(key)
        if val is None and not optional:
            raise ConfigError(f'couldn\'t find key {key} in {kind[:-1]} {self.ns}/{ref["name"]}')
        return val

    def _field(self, path: str) -> str:
        meta, spec, status = self.pod["metadata"], self.pod["spec"], self.pod.get("status", {})
        simple = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
                  "metadata.uid": meta["uid"], "spec.nodeName": spec.get("nodeName", ""),
                  "spec.serviceAccountName": spec.get("serviceAccountName", ""),
                  "status.hostIP": "127.0.0.1", "status.podIP": status.get("podIP", ""),
                  "status.podIPs": status.get("podIP", "")}
        if path in simple:
            return simple[path]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        raise ConfigError(f"unsupported fieldRef {path}")

    def _resource(self, ref: dict) -> str:
        res = self.container.get("resources") or {}
        kind, _, name = ref["resource"].partition(".")
        val = (res.get(kind) or {}).get(name)
        if val is None and kind == "limits":
            node = self.kubelet.node_capacity.get(self.pod["spec"].get("nodeName"), {})
            val = node.get(name, "0")
        return str(val if val is not None else "0")

    def _env(self) -> dict:
        cache: dict = {}
        env: dict[str, str] = {}
        for src in self.container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, field in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
                ref = src.get(field)
                if not ref:
                    continue
                obj = self._get(kind, ref["name"], cache)
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'{kind[:-1]} "{ref["name"]}" not found')
                for k, v in (obj.get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode(errors="replace") \
                        if kind == "secrets" else v
        for item in self.container.get("env") or []:
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = expand(item.get("value", "") or "", env)
                continue
            vf = item["valueFrom"]
            if "secretKeyRef" in vf:
                val = self._source_value("secrets", vf["secretKeyRef"], cache)
            elif "configMapKeyRef" in vf:
                val = self._source_value("configmaps", vf["configMapKeyRef"], cache)
            elif "fieldRef" in vf:
                val = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                val = self._resource(vf["resourceFieldRef"])
            else:
                raise ConfigError(f"env {name}: unsupported valueFrom {sorted(vf)}")
            if val is not None:
                env[name] = val
        return env

    def _sa_token(self) -> Optional[str]:
        """The token of the ServiceAccount Secret mounted into the pod (1.20 style)."""
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        for vol in self.pod["spec"].get("volumes") or []:
            secret = (vol.get("secret") or {}).get("secretName", "")
            if secret.startswith(f"{sa}-token-"):
                obj = self._get("secrets", secret, {})
                if obj is None or "token" not in (obj.get("data") or {}):
                    raise ConfigError(f'secret "{secret}" (ServiceAccount token) not found')
                return base64.b64decode(obj["data"]["token"]).decode()
        return None

    def _prepare(self) -> tuple[list[str], dict, str]:
        from devenv.cluster import kubeconfig_text

        user_env = self._env()
        command = [expand(a, user_env) for a in self.container.get("command") or []]
        args = [expand(a, user_env) for a in self.container.get("args") or []]
        argv = command + args
        if not argv:
            raise ConfigError("the fake kubelet cannot run an image's entrypoint: "
                              "the container needs a command or args")
        self.workdir.mkdir(parents=True, exist_ok=True)
        token = self._sa_token()
        kubeconfig = self.workdir / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(self.kubelet.server, self.kubelet.ca_pem, token,
                                              f"system:serviceaccount:{self.ns}:"
                                              f"{self.pod['spec'].get('serviceAccountName') or 'default'}",
                                              namespace=self.ns))
        kubeconfig.chmod(0o600)
        if token:
            sa_dir = self.workdir / "serviceaccount"
            sa_dir.mkdir(exist_ok=True)
            (sa_dir / "token").write_text(token)
            (sa_dir / "ca.crt").write_bytes(self.kubelet.ca_pem)
            (sa_dir / "namespace").write_text(self.ns)
        env = {"HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
               "HOSTNAME": self.name, "KUBECONFIG": str(kubeconfig),
               "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        for passthrough in ("TMPDIR", "TZ"):
            if passthrough in os.environ:
                env[passthrough] = os.environ[passthrough]
        env.update(user_env)
        env["PATH"] = f"{self.kubelet.venv_bin}:{env['PATH']}"
        cwd = self.container.get("workingDir")
        if not cwd or not Path(cwd).is_dir():
            cwd = str(self.workdir)
        return argv, env, cwd

    # -- process
    def _kill(self, grace: float) -> Optional[int]:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc.poll() is not None:
                self._record_proc(clear=True)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        rc = self.proc.wait()
        self._record_proc(clear=True)
        return rc

    def _record_proc(self, clear: bool = False) -> None:
        """<workdir>/.fake-kubelet-proc names the running process ("pid starttime") so that
        `devenv/cluster.py down` can still stop it if this fake kubelet died."""
        marker = self.workdir / PROC_MARKER
        if clear or self.proc is None:
            marker.unlink(missing_ok=True)
            return
        from devenv.procs import _proc_starttime

        marker.write_text(f"{self.proc.pid} {_proc_starttime(self.proc.pid)}\n")

    def _wait_or_wake(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001
            log(f"{self.ns}/{self.name}: worker crashed:\n{traceback.format_exc()}")
            self._kill(0)
        finally:
            self.kubelet.worker_done(self.uid, self)

    def _run(self) -> None:
        old = (self.pod.get("status", {}).get("containerStatuses") or [{}])[0]
        self.restart_count = old.get("restartCount", 0)
        if self.pod.get("status", {}).get("phase") == "Running":
            # we lost this pod's process (the fake kubelet restarted)
            if self.policy == "Never":
                self._patch_status("Failed", {"terminated": {"exitCode": 137, "reason": "Error",
                                   "message": "fake kubelet restarted", "finishedAt": now(),
                                   "startedAt": old.get("state", {}).get("running", {})
                                   .get("startedAt", now())}}, False)
                return
            self.restart_count += 1
        self._patch_status("Pending", {"waiting": {"reason": "ContainerCreating"}}, False)
        while not self._stopping():
            try:
                argv, env, cwd = self._prepare()
            except ConfigError as exc:
                self._patch_status("Pending", {"waiting": {"reason": "CreateContainerConfigError",
                                                           "message": str(exc)}}, False)
                self._wait_or_wake(2.0)
                continue
            if self._stopping():
                break
            self.started_at = now()
            with open(self.log_path, "ab") as out:
                try:
                    self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 start_new_session=True)
                    rc, reason, message = None, None, None
                except OSError as exc:
                    self.proc = None
                    rc, reason, message = 128, "StartError", f"{argv[0]}: {exc.strerror or exc}"
                    out.write(f"fake-kubelet: cannot start {argv[0]}: {exc}\n".encode())
            if self.proc is not None:
                log(f"{self.ns}/{self.name}: started pid {self.proc.pid}: {' '.join(argv)[:200]}")
                self._record_proc()
                self._patch_status("Running", {"running": {"startedAt": self.started_at}}, True)
                while self.proc.poll() is None and not self._stopping():
                    self._wait_or_wake(0.25)
                if self._stopping():
                    break
                rc = self.proc.returncode
                self._record_proc(clear=True)
                if rc < 0:  # killed by a signal: report like a container runtime (128+N)
                    rc = 128 - rc
                reason = "Completed" if rc == 0 else "Error"
            log(f"{self.ns}/{self.name}: exited with code {rc}")
            term = {"exitCode": rc, "reason": reason, "startedAt": self.started_at,
                    "finishedAt": now(), "containerID": f"fake://{self.proc.pid}" if self.proc else None}
            if message:
                term["message"] = message
            restart = self.policy == "Always" or (self.policy == "OnFailure" and rc != 0)
            if not restart:
                self.last_terminated = None
                self._patch_status("Succeeded" if rc == 0 else "Failed", {"terminated": term}, False)
                return
            self.last_terminated = term
            self.restart_count += 1
            backoff = min(MAX_BACKOFF_S, 0.5 * 2 ** min(self.restart_count - 1, 8))
            self._patch_status("Running", {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {backoff:.1f}s restarting failed container={self.cname}"}}, False)
            deadline = time.monotonic() + backoff
            while not self._stopping() and time.monotonic() < deadline:
                self._wait_or_wake(deadline - time.monotonic())
        if self.shutdown_ev.is_set() and not self.deleting.is_set():
            self._kill(2.0)  # the node goes away; leave the pod's status alone
            return
        self._terminate()

    def _terminate(self) -> None:
        """Graceful deletion: stop the container, report, then remove the pod (grace 0)."""
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = 0 if self.gone.is_set() else min(float(grace), 30.0)
        rc = self._kill(grace)
        if rc is not None and rc < 0:
            rc = 128 - rc
        log(f"{self.ns}/{self.name}: stopped for deletion (exit {rc})")
        if self.gone.is_set():
            return
        if rc is not None:
            self._patch_status("Failed" if rc else "Succeeded", {"terminated": {
                "exitCode": rc, "reason": "Completed" if rc == 0 else "Error",
                "startedAt": self.started_at or now(), "finishedAt": now()}}, False)
        self.kubelet.final_delete(self.ns, self.name, self.uid)


# ---------------------------------------------------------------------------- the kubelet
class FakeKubelet:
    def __init__(self, api: KubeAPI, state_dir: Path, pools: list[Pool], venv_bin: str,
                 worker_class: type = PodWorker) -> None:
        self.api = api
        self.worker_class = worker_class   # devenv/simnode.py: trial pods run no process
        self.state_dir = state_dir
        self.pods_dir = state_dir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.pools = pools
        self.venv_bin = venv_bin
        self.server = api.server
        self.ca_pem = Path(api.ca_file).read_bytes()
        self.node_pool = {n: p for p in pools for n in p.node_names()}
        self.node_capacity = {n: self._capacity(p) for n, p in self.node_pool.items()}
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ready_since = {n: now() for n in self.node_pool}

    @staticmethod
    def _capacity(pool: Pool) -> dict:
        return {"cpu": pool.cpu, "memory": pool.memory, "pods": "110", GPU: str(pool.gpus),
                "ephemeral-storage": "100Gi"}

    # -- nodes
    def _node_status(self, name: str) -> dict:
        cap = self.node_capacity[name]
        t = now()
        conds = [{"type": typ, "status": "False", "reason": reason, "message": msg,
                  "lastHeartbeatTime": t, "lastTransitionTime": self.ready_since[name]}
                 for typ, reason, msg in (
                     ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                     ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                     ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))]
        conds.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                      "message": "fake kubelet is posting ready status", "lastHeartbeatTime": t,
                      "lastTransitionTime": self.ready_since[name]})
        return {"capacity": cap, "allocatable": cap, "conditions": conds,
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": {"machineID": name, "systemUUID": name, "bootID": name,
                             "kernelVersion": os.uname().release, "osImage": "kubenas fake kubelet",
                             "containerRuntimeVersion": "fake://1.0", "kubeletVersion": "v1.20.2",
                             "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux",
                             "architecture": "amd64"}}

    def register_nodes(self) -> None:
        for name, pool in self.node_pool.items():
            labels = {POOL_LABEL: pool.name, "kubernetes.io/hostname": name,
                      "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                      "node.kubernetes.io/instance-type": f"fake-{pool.gpus}gpu"}
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": labels}, "spec": {},
                    "status": self._node_status(name)}
            try:
                self.api.create("/api/v1/nodes", body)
                log(f"node {name}: registered (pool {pool.name}, {pool.gpus} GPU)")
            except ApiError as exc:
                if exc.status != 409:
                    raise
                self.api.merge_patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": labels}})
                log(f"node {name}: already registered")
            self.api.merge_patch(f"/api/v1/nodes/{name}/status", {"status": self._node_status(name)})
            self._renew_lease(name)

    def _renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NS}/leases"
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        try:
            self.api.merge_patch(f"{path}/{name}", {"spec": spec})
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.api.create(path, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                   "metadata": {"name": name}, "spec": spec})

    def heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_S):
            for name in self.node_pool:
                try:
                    self._renew_lease(name)
                    self.api.merge_patch(f"/api/v1/nodes/{name}/status",
                                         {"status": self._node_status(name)})
                except ApiError as exc:
                    if exc.status == 404:  # somebody deleted the node: register again
                        try:
                            self.register_nodes()
                        except Exception as exc2:  # noqa: BLE001
                            log(f"re-register failed: {exc2}")
                    else:
                        log(f"heartbeat {name}: {exc}")
                except Exception as exc:  # noqa: BLE001
                    log(f"heartbeat {name}: {exc}")

    # -- pods
    def worker_done(self, uid: str, worker: PodWorker) -> None:
        with self.lock:
            if self.workers.get(uid) is worker:
                del self.workers[uid]

    def final_delete(self, ns: str, name: str, uid: str) -> None:
        try:
            self.api.delete(f"/api/v1/namespaces/{ns}/pods/{name}",
                            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                             "preconditions": {"uid": uid}})
            log(f"{ns}/{name}: deleted")
        except ApiError as exc:
            if exc.status not in (404, 409):
                log(f"{ns}/{name}: final delete failed: {exc}")
        except Exception as exc:  # noqa: BLE001
            log(f"{ns}/{name}: final delete failed: {exc}")

    def handle(self, etype: str, pod: dict) -> None:
        if pod.get("spec", {}).get("nodeName") not in self.node_pool:
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if etype == "DELETED":
                if worker:
                    worker.mark_gone()
                return
            if worker:
                worker.update(pod)
                return
            phase = pod.get("status", {}).get("phase")
            if meta.get("deletionTimestamp"):
                # nothing runs for it here: finish the graceful deletion
                threading.Thread(target=self.final_delete, daemon=True,
                                 args=(meta["namespace"], meta["name"], uid)).start()
                return
            if phase in ("Succeeded", "Failed") or self.stopping.is_set():
                return
            worker = self.worker_class(self, pod)
            self.workers[uid] = worker
        worker.start()

    def relist(self) -> str:
        lst = self.api.get("/api/v1/pods")
        seen = set()
        for pod in lst.get("items", []):
            seen.add(pod["metadata"]["uid"])
            self.handle("MODIFIED", pod)
        with self.lock:
            lost = [w for uid, w in self.workers.items() if uid not in seen]
        for w in lost:
            w.mark_gone()
        return lst["metadata"]["resourceVersion"]

    def pod_loop(self) -> None:
        rv: Optional[str] = None
        last_list = 0.0
        while not self.stopping.is_set():
            try:
                if rv is None or time.monotonic() - last_list > RELIST_S:
                    rv = self.relist()
                    last_list = time.monotonic()
                for ev in self.api.watch("/api/v1/pods", rv, timeout_seconds=20):
                    etype, obj = ev.get("type"), ev.get("object", {})
                    if etype == "ERROR":
                        log(f"watch error: {obj.get('message')}")
                        rv = None  # 410 Gone and friends: relist
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if etype != "BOOKMARK":
                        self.handle(etype, obj)
                    if self.stopping.is_set() or time.monotonic() - last_list > RELIST_S:
                        break
            except Exception as exc:  # noqa: BLE001 - apiserver restarts, timeouts: resume
                if self.stopping.is_set():
                    break
                log(f"pod watch: {type(exc).__name__}: {exc}; relisting")
                rv = None
                self.stopping.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.shutdown()
        for w in workers:
            w.join(timeout=10)

    def run(self) -> None:
        self.register_nodes()
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
        watcher = threading.Thread(target=self.pod_loop, name="pods", daemon=True)
        watcher.start()
        log(f"fake kubelet running nodes {', '.join(self.node_pool)}; pod logs in {self.pods_dir}")
        self.stopping.wait()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--pools", default="pool-a:2:2,pool-b:1:1",
                    help="NAME:NODES:GPUS[:CPU[:MEMORY]],... (default %(default)s)")
    ap.add_argument("--venv-bin", default=None, help="prepended to pods' PATH")
    ap.add_argument("--simulate-children", type=float, default=None, metavar="SECONDS",
                    help="trial pods (kubenas train-child) run no process: Running for SECONDS, "
                         "then their result record is written (devenv/simnode.py)")
    args = ap.parse_args(argv)
    from devenv.procs import venv_bin

    worker = PodWorker
    if args.simulate_children is not None:
        from devenv.simnode import worker_class

        worker = worker_class(args.simulate_children)
    kubelet = FakeKubelet(KubeAPI.from_kubeconfig(args.kubeconfig), Path(args.state_dir),
                          parse_pools(args.pools), args.venv_bin or str(venv_bin()), worker)

    def on_signal(signum, _frame):
        log(f"signal {signum}: stopping pods")
        threading.Thread(target=lambda: (kubelet.stop(), os._exit(0)), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        kubelet.run()
    finally:
        kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
