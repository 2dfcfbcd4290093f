"""kubenas installed into one namespace of the dev cluster the way the Helm chart installs it.

* ``helm template`` renders the chart (helm from ``make dev-tools``) with the dev S3 endpoint,
  a per-namespace storage prefix and the image from ``make image``; its ServiceAccounts,
  Roles, RoleBindings and Services are applied as rendered, the S3 Secret ``kubenas-s3``
  holds the dev S3 credentials.
* On real nodes (the dev cluster's default) the operator is the chart's Deployment, as
  rendered: a container of the image under a real kubelet, with the chart's securityContext,
  volumes, Secret references and ServiceAccount token. What it makes runs the same way: the
  controller Deployment's pod (``kubenas controller``) and the trial Jobs' pods
  (``kubenas train-child``). Faults are real: a SIGKILL goes to the container's process.
* On simulated nodes (benchmarks only: devenv/fake_kubelet.py) the operator is a subprocess
  with exactly the command line and environment of the chart's operator container
  (``valueFrom`` resolved as a kubelet would) and the operator ServiceAccount's token, on a
  free metrics port (everything there shares the host's network).

Used by tests/e2e/test_pipeline.py and benchmarks/orchestration.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubenas"
RELEASE = "kubenas"
SECRET = "kubenas-s3"


def helm_binary() -> str:
    if os.environ.get("KUBENAS_HELM"):
        return os.environ["KUBENAS_HELM"]
    cache = Path(os.environ.get("KUBENAS_CACHE_DIR") or Path.home() / ".cache" / "kubenas")
    path = cache / "helm-v3.17.2" / "helm"
    if not path.is_file():
        raise RuntimeError(f"helm not found at {path}: run `make dev-tools`")
    return str(path)


def venv_bin() -> Path:
    return Path(sys.executable).parent


def wait_for(predicate: Callable, timeout: float, what: str, interval: float = 0.25,
             on_timeout: Optional[Callable[[], str]] = None):
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a transient API/S3 error: try again
            last = exc
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} "
                         f"(last error: {last!r})\n{detail}")


def image_values(image: str) -> dict:
    """The chart's ``image`` values for a local tag (never pulled: no registry here)."""
    repository, _, tag = image.rpartition(":")
    return {"repository": repository, "tag": tag, "pullPolicy": "Never"}


# 2-CPU nodes: small requests so that the operator, a controller and two trials fit on one
SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}


class _StoreOfExperiment:
    """An ObjectStore made on first use (the Experiment's UID is part of its prefix)."""

    def __init__(self, make) -> None:
        self._make, self._store = make, None

    def __getattr__(self, name: str):
        if self._store is None:
            self._store = self._make()
        return getattr(self._store, name)


class Install:
    """kubenas in ``namespace`` of ``cluster`` (a devenv DevCluster), operator not yet started."""

    def __init__(self, cluster, namespace: str, workdir: Path, values: Optional[dict] = None) -> None:
        from devenv.procs import free_ports
        from kubenas.operator.kube import Kube

        self.cluster = cluster
        self.ns = namespace
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.s3 = cluster.s3
        self.kube = Kube(cluster.api_client())
        self.as_pod = getattr(cluster, "node_mode", "simulated") == "real"
        self.metrics_port = 9090 if self.as_pod else free_ports(1)[0]
        self.storage_prefix = f"e2e/{namespace}"
        self.values = {
            "storage": {"endpoint": self.s3.endpoint, "bucket": self.s3.bucket,
                        "prefix": self.storage_prefix, "existingSecret": SECRET},
            "metrics": {"enabled": True, "port": self.metrics_port},
        }
        if self.as_pod:
            self.values.update(image=image_values(cluster.image), operator={"resources": SMALL},
                               controller={"resources": SMALL})
        for key, value in (values or {}).items():
            if isinstance(value, dict) and isinstance(self.values.get(key), dict):
                self.values[key] = {**self.values[key], **value}
            else:
                self.values[key] = value
        self.docs = self._render()
        self.operator_proc: Optional[subprocess.Popen] = None
        self.operator_pids: list = []       # one entry per operator start (pod: uid/restarts)
        self._restarts_at_kill = 0
        self._operator_log = self.workdir / "operator.log"

    # -- the chart ---------------------------------------------------------------------------
    def _render(self) -> list:
        values = self.workdir / "values.yaml"
        values.write_text(yaml.safe_dump(self.values))
        out = subprocess.run([helm_binary(), "template", RELEASE, str(CHART), "--namespace", self.ns,
                              "-f", str(values)], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"helm template failed: {out.stderr}")
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    def rendered(self, kind: str, name_suffix: str = "") -> list:
        return [d for d in self.docs if d["kind"] == kind
                and d["metadata"]["name"].endswith(name_suffix)]

    @property
    def operator_deployment(self) -> dict:
        (dep,) = self.rendered("Deployment", "-operator")
        return dep

    def install(self) -> "Install":
        """The S3 Secret, then the chart's ServiceAccounts, Roles, RoleBindings and Services."""
        from kubenas.operator.kube import KubeError, core_path

        self.kube.create(core_path("secrets", self.ns), {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
            "stringData": {"AWS_ACCESS_KEY_ID": self.s3.access_key,
                           "AWS_SECRET_ACCESS_KEY": self.s3.secret_key}})
        paths = {"ServiceAccount": core_path("serviceaccounts", self.ns),
                 "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.ns}/roles",
                 "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.ns}/rolebindings",
                 "Service": core_path("services", self.ns)}
        for kind in ("ServiceAccount", "Role", "RoleBinding", "Service"):
            for doc in self.rendered(kind):
                try:
                    self.kube.create(paths[kind], doc)
                except KubeError as exc:
                    if not exc.conflict:
                        raise
        for sa in self.rendered("ServiceAccount"):
            wait_for(lambda sa=sa: self._sa_token(sa["metadata"]["name"]), 30,
                     f"token of ServiceAccount {sa['metadata']['name']}")
        return self

    def _sa_token(self, name: str) -> Optional[str]:
        from kubenas.operator.kube import core_path

        sa = self.kube.get(core_path("serviceaccounts", self.ns, name))
        for ref in sa.get("secrets") or []:
            secret = self.kube.get(core_path("secrets", self.ns, ref["name"]))
            if secret.get("type") == "kubernetes.io/service-account-token" and \
                    (secret.get("data") or {}).get("token"):
                return base64.b64decode(secret["data"]["token"]).decode()
        return None

    # -- the operator process ----------------------------------------------------------------
    def operator_command(self) -> tuple[list, dict]:
        """argv and environment of the chart's operator container, valueFrom resolved."""
        from devenv.cluster import kubeconfig_text
        from kubenas.operator.kube import core_path

        dep = self.operator_deployment
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env: dict = {}
        secrets: dict = {}
        for item in c.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            src = item["valueFrom"]
            if "fieldRef" in src:
                assert src["fieldRef"]["fieldPath"] == "metadata.namespace", src
                env[item["name"]] = self.ns
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                if ref["name"] not in secrets:
                    secrets[ref["name"]] = self.kube.get(core_path("secrets", self.ns, ref["name"]))["data"]
                env[item["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
            else:
                raise AssertionError(f"unexpected valueFrom in the chart: {item}")
        sa = pod["serviceAccountName"]
        token = self._sa_token(sa)
        assert token, f"ServiceAccount {sa} has no token"
        kubeconfig = self.workdir / "operator.kubeconfig"
        kubeconfig.write_text(kubeconfig_text(
            self.cluster.server, (self.cluster.state_dir / "pki" / "ca.crt").read_bytes(), token,
            f"system:serviceaccount:{self.ns}:{sa}", namespace=self.ns))
        kubeconfig.chmod(0o600)
        base = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR", "TZ") if k in os.environ}
        base["PATH"] = f"{venv_bin()}:{base.get('PATH', '/usr/bin:/bin')}"
        base["HOME"] = str(self.workdir)
        base["KUBECONFIG"] = str(kubeconfig)
        base["PYTHONUNBUFFERED"] = "1"
        command = [str(venv_bin() / c["command"][0]), *c["command"][1:]]
        return command + list(c.get("args") or []), {**base, **env}

    # -- the operator pod (real nodes) ------------------------------------------------------
    OPERATOR_POD = "app.kubernetes.io/component=operator"

    def operator_pod(self) -> Optional[dict]:
        pods = [p for p in self.list("pods", self.OPERATOR_POD)
                if not p["metadata"].get("deletionTimestamp")]
        return pods[0] if pods else None

    def _operator_ready(self) -> Optional[dict]:
        pod = self.operator_pod()
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        return pod if statuses and (statuses[0].get("state") or {}).get("running") else None

    def _deploy_operator(self) -> None:
        from kubenas.operator.kube import KubeError, deployments_path

        try:
            self.kube.create(deployments_path(self.ns), self.operator_deployment)
        except KubeError as exc:
            if not exc.conflict:
                raise
        pod = wait_for(self._operator_ready, 120, "the operator pod running",
                       on_timeout=lambda: self.kubectl("get", "pods", "-o", "wide"))
        self.operator_pids.append(pod["metadata"]["uid"])

    def operator_restarts(self) -> int:
        pod = self.operator_pod()
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        return statuses[0].get("restartCount", 0) if statuses else 0

    def start_operator(self, extra_env: Optional[dict] = None):
        """Real nodes: create the chart's operator Deployment (or, after a kill, wait for the
        kubelet to have restarted its container). Simulated nodes: a subprocess."""
        if self.as_pod:
            assert not extra_env, "the operator pod's environment is the chart's"
            if self.operator_pod() is None:
                return self._deploy_operator()
            killed_at = self._restarts_at_kill
            pod = wait_for(lambda: self.operator_restarts() > killed_at and self._operator_ready(),
                           120, "the kubelet to restart the killed operator container")
            self.operator_pids.append(f"{pod['metadata']['uid']}/{self.operator_restarts()}")
            return None
        assert self.operator_proc is None or self.operator_proc.poll() is not None
        argv, env = self.operator_command()
        env.update(extra_env or {})
        log = open(self._operator_log, "ab")
        log.write(f"\n=== start {' '.join(argv)}\n".encode())
        log.flush()
        self.operator_proc = subprocess.Popen(argv, env=env, cwd=str(self.workdir), stdout=log,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.operator_pids.append(self.operator_proc.pid)
        return self.operator_proc

    def kill_operator(self, sig: int = signal.SIGKILL) -> None:
        if self.as_pod:
            pod = self._operator_ready()
            if pod is not None:
                self._restarts_at_kill = self.operator_restarts()
                os.kill(self.cluster.container_pids(self.ns, pod["metadata"]["name"])[0], sig)
            return
        p = self.operator_proc
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def operator_log(self) -> str:
        if self.as_pod:
            pod = self.operator_pod()
            return self._container_logs(pod["metadata"]["name"]) if pod else ""
        return self._operator_log.read_text(errors="replace") if self._operator_log.exists() else ""

    def _container_logs(self, pod: str) -> str:
        """`kubectl logs` of the pod's previous container (if it restarted) and current one."""
        prev = self.cluster.run_kubectl("-n", self.ns, "logs", pod, "--previous", check=False)
        cur = self.cluster.run_kubectl("-n", self.ns, "logs", pod, check=False)
        return (prev.stdout if prev.returncode == 0 else "") + (cur.stdout if cur.returncode == 0 else "")

    def follow_logs(self, selector: str) -> "LogFollower":
        return LogFollower(self, selector)

    def close(self) -> None:
        if not self.as_pod:
            self.kill_operator(signal.SIGTERM)

    # -- objects -----------------------------------------------------------------------------
    def create_experiment(self, name: str, spec: dict) -> dict:
        from kubenas.operator.kube import custom_path

        return self.kube.create(custom_path("experiments", self.ns), {
            "apiVersion": "kubenas.dev/v1", "kind": "Experiment", "metadata": {"name": name},
            "spec": spec})

    def experiment(self, name: str) -> dict:
        from kubenas.operator.kube import custom_path

        return self.kube.get(custom_path("experiments", self.ns, name))

    def list(self, kind: str, selector: Optional[str] = None) -> list:
        from kubenas.operator.kube import core_path, custom_path, deployments_path, jobs_path

        path = {"trials": custom_path("trials", self.ns), "jobs": jobs_path(self.ns),
                "pods": core_path("pods", self.ns), "deployments": deployments_path(self.ns),
                "events": core_path("events", self.ns)}[kind]
        return self.kube.list_all(path, label_selector=selector)[0]

    def store(self, experiment: str):
        """The Experiment's store (the chart's default URL
        s3://bucket/prefix/<namespace>/<name>/<uid>). The UID is read on first use, so a
        caller may hold the store before the Experiment is created."""
        return _StoreOfExperiment(lambda: self._store_now(experiment))

    def _store_now(self, experiment: str):
        from kubenas.storage.s3 import S3Store

        uid = self.experiment(experiment)["metadata"]["uid"]
        return S3Store(bucket=self.s3.bucket,
                       prefix=f"{self.storage_prefix}/{self.ns}/{experiment}/{uid}",
                       endpoint_url=self.s3.endpoint, region="us-east-1",
                       access_key_id=self.s3.access_key, secret_access_key=self.s3.secret_key)

    def controller_state(self, experiment: str) -> dict:
        """The controller's state with its per-trial documents (``sampled``/``applied`` maps)."""
        from kubenas.controller.loop import read_ledger

        return read_ledger(self.store(experiment))

    def applied_count(self, experiment: str) -> int:
        """Results applied so far: one small read (the state's counters)."""
        return json.loads(self.store(experiment).get("controller/state.json"))["counts"]["applied"]

    def kubectl(self, *args: str) -> str:
        return self.cluster.run_kubectl(*args, "-n", self.ns).stdout

    def pod_logs(self, prefix: str = "", tail: int = 3000) -> str:
        """The logs of every pod whose name starts with ``prefix``: `kubectl logs` of the pods
        that still exist (real nodes), every pod's log file (simulated nodes)."""
        out = []
        if self.as_pod:
            for p in self.list("pods"):
                name = p["metadata"]["name"]
                if name.startswith(prefix):
                    out.append(f"--- {name}\n{self._container_logs(name)[-tail:]}")
            return "\n".join(out)
        for path in sorted(self.cluster.pods_dir.glob(f"{self.ns}_{prefix}*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def metrics(self, service: str) -> str:
        """GET /metrics through a Service: a ClusterIP (kube-proxy, from a node's namespace
        as a pod would) or, for a headless one, each endpoint pod."""
        from kubenas.operator.kube import core_path

        svc = self.kube.get(core_path("services", self.ns, service))
        port = svc["spec"]["ports"][0]["port"]
        if svc["spec"].get("clusterIP") not in (None, "", "None"):
            return self.cluster.http_get_in_cluster(f"http://{svc['spec']['clusterIP']}:{port}/metrics")
        eps = self.kube.get(core_path("endpoints", self.ns, service))
        ips = [a["ip"] for sub in eps.get("subsets") or [] for a in sub.get("addresses") or []]
        return "".join(self.cluster.http_get_in_cluster(f"http://{ip}:{port}/metrics") for ip in ips)


class Watcher:
    """List + watch one collection in a thread, calling ``handle(event_type, obj, seen_at)``
    for every object (``seen_at``: time.time() when this process saw it). Relists after an
    error (e.g. 410 Gone): ``handle("SYNC", {}, t)`` first, then "RELIST" for each object."""

    def __init__(self, kube, path: str, handle: Callable, label_selector: Optional[str] = None,
                 name: str = "watcher") -> None:
        self.kube, self.path, self.handle, self.selector = kube, path, handle, label_selector
        self.stop_event = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Watcher":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)

    def _run(self) -> None:
        first = True
        while not self.stop_event.is_set():
            try:
                items, rv = self.kube.list_all(self.path, label_selector=self.selector)
                if not first:
                    self.handle("SYNC", {}, time.time())
                for obj in items:
                    self.handle("ADDED" if first else "RELIST", obj, time.time())
                first = False
                while not self.stop_event.is_set():
                    for ev in self.kube.watch(self.path, rv, label_selector=self.selector,
                                              timeout_seconds=5):
                        now = time.time()
                        if ev.get("type") == "ERROR":
                            raise RuntimeError(str(ev.get("object")))
                        obj = ev.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if ev.get("type") != "BOOKMARK":
                            self.handle(ev["type"], obj, now)
                        if self.stop_event.is_set():
                            return
            except Exception as exc:  # noqa: BLE001 - relist and go on
                self.error = exc
                time.sleep(0.5)


class PodSampler:
    """Watches the namespace's trial pods and keeps, per worker pool, the most trial pods ever
    Running at once (a pod counts from phase Running until it is Succeeded/Failed or gone),
    on which nodes they ran, and which pods each trial had."""

    def __init__(self, kube, namespace: str) -> None:
        from kubenas.operator.kube import core_path

        self.running: dict = {}        # pod uid -> pool
        self.max_running: dict = {}    # pool -> max concurrent
        self.nodes: dict = {}          # pool -> {node names}
        self.pods_by_trial: dict = {}  # trial -> {pod names}
        self._lock = threading.Lock()
        self.watcher = Watcher(kube, core_path("pods", namespace), self._observe,
                               "app.kubernetes.io/component=trial", name="pod-sampler")

    def start(self) -> "PodSampler":
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()

    @property
    def error(self):
        return self.watcher.error

    def _observe(self, etype: str, pod: dict, _seen: float) -> None:
        if etype == "SYNC":             # relisting: what is running comes again
            with self._lock:
                self.running.clear()
            return
        meta = pod["metadata"]
        pool = (meta.get("labels") or {}).get("kubenas.dev/pool")
        if not pool:
            return
        uid = meta["uid"]
        with self._lock:
            trial = (meta.get("annotations") or {}).get("kubenas.dev/trial-name")
            if trial:
                self.pods_by_trial.setdefault(trial, set()).add(meta["name"])
            if pod["spec"].get("nodeName"):
                self.nodes.setdefault(pool, set()).add(pod["spec"]["nodeName"])
            if etype != "DELETED" and (pod.get("status") or {}).get("phase") == "Running":
                self.running[uid] = pool
            else:
                self.running.pop(uid, None)
            count = sum(1 for p in self.running.values() if p == pool)
            self.max_running[pool] = max(self.max_running.get(pool, 0), count)


class LogFollower:
    """The whole log of each pod matching ``selector`` (real nodes): ``poll()`` starts a
    `kubectl logs -f` for every pod whose container runs, which streams until the container
    exits, so a pod that logs and is deleted a moment later (a parked controller) is read in
    full however slow the test's polling is."""

    def __init__(self, inst: Install, selector: str) -> None:
        self.inst, self.selector = inst, selector
        self._logs: dict = {}
        self._threads: dict = {}

    def poll(self) -> None:
        for pod in self.inst.list("pods", self.selector):
            name = pod["metadata"]["name"]
            running = any("running" in (cs.get("state") or {})
                          for cs in (pod.get("status") or {}).get("containerStatuses") or [])
            if running and name not in self._threads:
                self._threads[name] = threading.Thread(target=self._follow, args=(name,), daemon=True)
                self._threads[name].start()

    def _follow(self, pod: str) -> None:
        proc = self.inst.cluster.run_kubectl("-n", self.inst.ns, "logs", "-f", pod, check=False,
                                             timeout=900)
        self._logs[pod] = proc.stdout + proc.stderr

    def logs(self, prefix: str, timeout: float = 60) -> str:
        """The logs of the followed pods named ``prefix``..., once their streams ended."""
        out = []
        for name, thread in sorted(self._threads.items()):
            if name.startswith(prefix):
                thread.join(timeout)
                out.append(f"--- {name}\n{self._logs.get(name, '(still streaming)')}")
        return "\n".join(out)
