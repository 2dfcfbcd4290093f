"""The dev environment itself: a real v1.20 control plane whose pods run as containers of the
project's image (`make image`) under real kubelets with containerd and runc, on GPU nodes that
are each their own network namespace."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from devenv.cluster import CRD_DIR

pytestmark = pytest.mark.k8s


def wait_for(fn, timeout=60.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


@pytest.fixture(scope="module")
def core(dev_cluster):
    return client.CoreV1Api(dev_cluster.api_client())


@pytest.fixture(scope="module")
def batch(dev_cluster):
    return client.BatchV1Api(dev_cluster.api_client())


@pytest.fixture(scope="module")
def apps(dev_cluster):
    return client.AppsV1Api(dev_cluster.api_client())


IMAGE = "localhost/kubenas:dev"


def pod_manifest(name, command, restart="Never", gpus=None, **spec):
    container = {"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": command}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": restart, "containers": [container], **spec}}


def phase(core, ns, name):
    try:
        return core.read_namespaced_pod(name, ns).status.phase
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def job_pod(core, ns, job):
    pods = core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items
    return pods[0] if pods else None


# ---------------------------------------------------------------------------- nodes
def test_nodes_ready_in_gpu_pools(core):
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert set(nodes) == {"pool-a-0", "pool-b-0"}
    for name, node in nodes.items():
        assert node.status.node_info.container_runtime_version.startswith("containerd://")
        assert node.status.node_info.kubelet_version == "v1.20.2"
        ip = [a.address for a in node.status.addresses if a.type == "InternalIP"]
        assert ip and ip[0].startswith("10.213."), ip
        pool = name.rsplit("-", 1)[0]
        assert node.metadata.labels["kubenas.dev/pool"] == pool
        assert node.status.capacity["nvidia.com/gpu"] == ("2" if pool == "pool-a" else "1")
        assert node.status.allocatable["nvidia.com/gpu"] == node.status.capacity["nvidia.com/gpu"]
        ready = [c for c in node.status.conditions if c.type == "Ready"][0]
        assert ready.status == "True"
        assert not [t for t in node.spec.taints or [] if t.key.startswith("node.kubernetes.io/")]


def _listening(pid: int) -> list[str]:
    """The addresses process ``pid`` listens on, read in its own network namespace."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                out.append(f[1].rsplit(":", 1)[0])
    return out


def _hex_ip(ip: str) -> str:
    return "".join(f"{int(b):02X}" for b in reversed(ip.split(".")))


def test_nothing_listens_on_the_machines_external_interface(dev_cluster):
    """Control plane and S3: loopback or the cluster bridge; each node's daemons: loopback or
    that node's own address inside its namespace. Never a wildcard or another address."""
    allowed = {_hex_ip("127.0.0.1"), _hex_ip(dev_cluster.host), "00000000000000000000000001000000"}
    allowed |= {_hex_ip(n.ip) for n in dev_cluster.nodes.values()}
    seen = {}
    for name, daemon in dev_cluster.daemons.items():
        seen[name] = _listening(daemon.pid)
        for child in Path(f"/proc/{daemon.pid}/task").glob("*/children"):
            for pid in child.read_text().split():
                seen[name] += _listening(int(pid))
    assert seen["kube-apiserver"] and seen["seaweedfs"]
    bad = {n: [a for a in addrs if a not in allowed] for n, addrs in seen.items()}
    assert not any(bad.values()), bad


def test_kubelet_port_refuses_anonymous_callers(dev_cluster):
    import requests
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    for node in dev_cluster.nodes.values():
        with requests.Session() as s:
            s.trust_env = False
            resp = s.get(f"https://{node.ip}:10250/pods", verify=False, timeout=5)
        assert resp.status_code == 401, (node.name, resp.status_code)


def test_kubectl_and_crds(dev_cluster):
    out = dev_cluster.run_kubectl("get", "nodes", "-l", "kubenas.dev/pool=pool-a", "-o", "name").stdout
    assert sorted(out.split()) == ["node/pool-a-0"]
    version = dev_cluster.run_kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.20.2"' in version
    crds = dev_cluster.apply_crds()  # whatever operator/crds/ holds; idempotent
    expected = [doc["metadata"]["name"] for f in sorted(CRD_DIR.glob("*.yaml"))
                for doc in yaml.safe_load_all(f.read_text())
                if doc and doc.get("kind") == "CustomResourceDefinition"]
    assert sorted(crds) == sorted(expected)
    for name in crds:
        dev_cluster.run_kubectl("get", f"crd/{name}")


# ---------------------------------------------------------------------------- jobs
def test_gpu_job_runs_to_completion_with_env(dev_cluster, k8s_namespace, core, batch):
    ns = k8s_namespace
    core.create_namespaced_secret(ns, {"metadata": {"name": "s3"},
                                       "stringData": {"AWS_SECRET_ACCESS_KEY": "sekrit"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"},
                                           "data": {"EPOCHS": "3", "MODE": "fast"}})
    script = ("import os, shutil; e = os.environ; "
              "print('pod', e['POD'], e['NS'], e['SECRET'], e['EPOCHS'], e['CFG_MODE'], e['GREETING']);"
              "print('kubenas', shutil.which('kubenas'), os.getuid());"
              "print('memlimit', open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read().strip());"
              "open('/tmp/scratch', 'w').write('ok');"
              "print('token', os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'))\n"
              "try:\n    open('/opt/x', 'w')\nexcept OSError as exc:\n    print('rootfs', exc.errno)")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
           "spec": {"backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never",
               "nodeSelector": {"kubenas.dev/pool": "pool-a"},
               "containers": [{
                   "name": "trainer", "image": IMAGE, "imagePullPolicy": "Never",
                   "command": ["python", "-c"], "args": [script],
                   "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "500m",
                                            "memory": "768Mi"}},
                   "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                       "allowPrivilegeEscalation": False,
                                       "capabilities": {"drop": ["ALL"]}},
                   "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                   "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                   "env": [
                       {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                       {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                       {"name": "SECRET", "valueFrom": {"secretKeyRef": {
                           "name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}},
                       {"name": "EPOCHS", "valueFrom": {"configMapKeyRef": {
                           "name": "cfg", "key": "EPOCHS"}}},
                       {"name": "WHO", "value": "world"},
                       {"name": "GREETING", "value": "hello-$(WHO)"}]}],
               "volumes": [{"name": "tmp", "emptyDir": {}}]}}}}
    batch.create_namespaced_job(ns, job)
    wait_for(lambda: (batch.read_namespaced_job("train", ns).status.succeeded or 0) >= 1,
             timeout=60, what="job train to succeed")
    pod = job_pod(core, ns, "train")
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name.startswith("pool-a-")
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0 and term.reason == "Completed"
    log = dev_cluster.pod_log(ns, pod.metadata.name)
    assert f"pod {pod.metadata.name} {ns} sekrit 3 fast hello-world" in log
    assert "kubenas /opt/venv/bin/kubenas 10001" in log, log  # the image's CLI, non-root
    assert f"memlimit {768 * 2**20}" in log, log             # the limit is a real cgroup
    assert "token True" in log and "rootfs 30" in log, log   # SA token mounted; EROFS


def test_failing_job_reports_exit_code(dev_cluster, k8s_namespace, core, batch):
    ns = k8s_namespace
    batch.create_namespaced_job(ns, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "boom"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "echo failing >&2; exit 3"]}]}}}})
    wait_for(lambda: any(c.type == "Failed" and c.status == "True"
                         for c in batch.read_namespaced_job("boom", ns).status.conditions or []),
             timeout=60, what="job boom to fail")
    pod = job_pod(core, ns, "boom")
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert "failing" in dev_cluster.pod_log(ns, pod.metadata.name)


def test_finished_job_is_removed_after_ttl(k8s_namespace, batch):
    ns = k8s_namespace
    batch.create_namespaced_job(ns, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "short"},
        "spec": {"ttlSecondsAfterFinished": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                            "command": ["true"]}]}}}})

    def gone():
        try:
            batch.read_namespaced_job("short", ns)
            return False
        except client.ApiException as exc:
            return exc.status == 404

    wait_for(gone, timeout=60, what="the TTL controller to delete the finished job")


# ---------------------------------------------------------------------------- scheduling
def test_pod_asking_too_many_gpus_stays_pending(k8s_namespace, core):
    ns = k8s_namespace
    core.create_namespaced_pod(ns, pod_manifest("greedy", ["true"], gpus=3))

    def unschedulable():
        conds = core.read_namespaced_pod("greedy", ns).status.conditions or []
        return [c for c in conds if c.type == "PodScheduled" and c.status == "False"]

    cond = wait_for(unschedulable, timeout=30, what="PodScheduled=False")[0]
    assert cond.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond.message
    time.sleep(1)
    pod = core.read_namespaced_pod("greedy", ns)
    assert pod.status.phase == "Pending" and not pod.spec.node_name


# ---------------------------------------------------------------------------- lifecycles
def test_deployment_pod_stays_running_and_kubectl_exec_reaches_it(dev_cluster, k8s_namespace,
                                                                 core, apps):
    ns = k8s_namespace
    apps.create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "svc"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "svc"}},
                 "template": {"metadata": {"labels": {"app": "svc"}}, "spec": {"containers": [
                     {"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                      "command": ["sh", "-c", "echo serving; exec sleep 600"]}]}}}})

    def running_pod():
        pods = core.list_namespaced_pod(ns, label_selector="app=svc").items
        return [p for p in pods if p.status.phase == "Running"
                and p.status.container_statuses and p.status.container_statuses[0].ready]

    pod = wait_for(running_pod, timeout=90, what="the deployment's pod Running")[0]
    name = pod.metadata.name
    wait_for(lambda: (apps.read_namespaced_deployment("svc", ns).status.available_replicas or 0) == 1,
             timeout=30, what="deployment available")
    time.sleep(2)
    pod = core.read_namespaced_pod(name, ns)
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].restart_count == 0
    assert len(core.list_namespaced_pod(ns, label_selector="app=svc").items) == 1
    # kubectl exec and logs go apiserver -> kubelet (client certificate) -> containerd
    out = dev_cluster.run_kubectl("-n", ns, "exec", name, "--", "cat", "/proc/1/cmdline").stdout
    assert out.replace("\0", " ").strip() == "sleep 600"
    assert "serving" in dev_cluster.run_kubectl("-n", ns, "logs", "deployment/svc").stdout

    # deleting the pod kills its container and the ReplicaSet replaces it
    core.delete_namespaced_pod(name, ns)
    wait_for(lambda: phase(core, ns, name) is None, timeout=60, what="pod deletion to finish")
    new = wait_for(running_pod, timeout=90, what="a replacement pod")
    assert new[0].metadata.name != name


def test_restart_policies(dev_cluster, k8s_namespace, core):
    ns = k8s_namespace
    # Always: a crashing container is restarted and the pod stays Running
    core.create_namespaced_pod(ns, pod_manifest("crashy", ["sh", "-c", "echo run; exit 1"],
                                                restart="Always"))
    # OnFailure: fails once (no marker file yet in the pod's emptyDir), then succeeds
    core.create_namespaced_pod(ns, pod_manifest(
        "flaky", ["sh", "-c", "if [ -f /state/m ]; then echo ok; else touch /state/m; exit 7; fi"],
        restart="OnFailure", volumes=[{"name": "state", "emptyDir": {}}],
        container={"volumeMounts": [{"name": "state", "mountPath": "/state"}]}))

    def restarted(name, n):
        pod = core.read_namespaced_pod(name, ns)
        cs = pod.status.container_statuses or []
        return cs and cs[0].restart_count >= n and pod

    pod = wait_for(lambda: restarted("crashy", 2), timeout=90, what="crashy restarted twice")
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 1
    assert "run" in dev_cluster.pod_log(ns, "crashy")

    wait_for(lambda: phase(core, ns, "flaky") == "Succeeded", timeout=60, what="flaky to succeed")
    cs = core.read_namespaced_pod("flaky", ns).status.container_statuses[0]
    assert cs.restart_count == 1 and cs.state.terminated.exit_code == 0


def test_missing_secret_keeps_pod_waiting_until_created(k8s_namespace, core):
    ns = k8s_namespace
    core.create_namespaced_pod(ns, pod_manifest("needs-secret", ["sh", "-c", "test \"$TOKEN\" = t0k"],
                                                container={"env": [{"name": "TOKEN", "valueFrom": {
                                                    "secretKeyRef": {"name": "late", "key": "t"}}}]}))

    def waiting_reason():
        cs = core.read_namespaced_pod("needs-secret", ns).status.container_statuses or []
        return cs and cs[0].state.waiting and cs[0].state.waiting.reason

    wait_for(lambda: waiting_reason() == "CreateContainerConfigError", timeout=30,
             what="waiting with CreateContainerConfigError")
    cs = core.read_namespaced_pod("needs-secret", ns).status.container_statuses[0]
    assert 'secret "late" not found' in cs.state.waiting.message
    assert phase(core, ns, "needs-secret") == "Pending"
    core.create_namespaced_secret(ns, {"metadata": {"name": "late"}, "stringData": {"t": "t0k"}})
    wait_for(lambda: phase(core, ns, "needs-secret") == "Succeeded", timeout=30,
             what="the pod to run once the secret exists")


# ---------------------------------------------------------------------------- identity
def test_pod_runs_as_its_service_account(dev_cluster, k8s_namespace, core):
    ns = k8s_namespace
    rbac = client.RbacAuthorizationV1Api(dev_cluster.api_client())
    core.create_namespaced_service_account(ns, {"metadata": {"name": "runner"}})
    rbac.create_namespaced_role(ns, {"metadata": {"name": "pod-reader"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "runner-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": ns}]})
    wait_for(lambda: core.read_namespaced_service_account("runner", ns).secrets, timeout=30,
             what="the runner token")
    script = (
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "v1 = client.CoreV1Api()\n"
        "auth = client.AuthorizationV1Api()\n"
        "for verb in ('list', 'create'):\n"
        "    review = {'spec': {'resourceAttributes': {'verb': verb, 'resource': 'pods',\n"
        f"                                              'namespace': '{ns}'}}}}}}\n"
        "    print(verb, auth.create_self_subject_access_review(review).status.allowed)\n"
        f"print('pods', sorted(p.metadata.name for p in v1.list_namespaced_pod('{ns}').items))\n"
        "try:\n"
        f"    v1.list_namespaced_secret('{ns}')\n"
        "    print('secrets allowed')\n"
        "except client.ApiException as e:\n"
        "    print('secrets', e.status)\n")
    core.create_namespaced_pod(ns, pod_manifest(
        "whoami", ["python", "-c", script], serviceAccountName="runner"))
    wait_for(lambda: phase(core, ns, "whoami") in ("Succeeded", "Failed"), timeout=60,
             what="whoami to finish")
    log = dev_cluster.pod_log(ns, "whoami")
    assert phase(core, ns, "whoami") == "Succeeded", log
    assert "list True" in log and "create False" in log, log
    assert "pods ['whoami']" in log and "secrets 403" in log, log


# ---------------------------------------------------------------------------- network
def test_pods_reach_the_apiserver_service_and_s3_and_nothing_else(dev_cluster, k8s_namespace, core):
    """Pod network -> kube-proxy's ClusterIP rules -> the apiserver; S3 on the bridge; no
    route anywhere else (the machine's own external address included)."""
    ns = k8s_namespace
    s3_host, s3_port = dev_cluster.s3.endpoint.rsplit("/", 1)[1].split(":")
    external = [ip for ip in _root_addresses() if not ip.startswith(("127.", "10.213."))]
    targets = [("10.0.0.1", 443), (s3_host, int(s3_port)), ("8.8.8.8", 53)]
    targets += [(ip, 22) for ip in external]
    script = ("import socket, sys\n"
              f"for host, port in {targets!r}:\n"
              "    try:\n"
              "        socket.create_connection((host, port), timeout=3).close(); print(host, 'open')\n"
              "    except OSError as exc:\n"
              "        print(host, 'errno', exc.errno)\n")
    for pool in ("pool-a", "pool-b"):
        core.create_namespaced_pod(ns, pod_manifest(f"net-{pool}", ["python", "-c", script],
                                                    nodeSelector={"kubenas.dev/pool": pool}))
    for pool in ("pool-a", "pool-b"):
        wait_for(lambda: phase(core, ns, f"net-{pool}") == "Succeeded", timeout=90,
                 what=f"net-{pool} to finish")
        log = dev_cluster.pod_log(ns, f"net-{pool}")
        assert "10.0.0.1 open" in log and f"{s3_host} open" in log, log
        assert "8.8.8.8 errno 101" in log, log          # ENETUNREACH
        for ip in external:
            assert f"{ip} errno 101" in log, log


def _root_addresses() -> list[str]:
    import subprocess

    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()]
