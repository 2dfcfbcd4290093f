"""The operator process: informers, a work queue, workers, periodic resync, metrics.

    run(namespace=None, resync_seconds=30.0, metrics_port=None)     # blocks; SIGTERM stops it

    with OperatorRunner(namespace="ns", api_client=client) as op:    # in a test, in threads
        ...

Configuration not given as arguments comes from the environment (``Settings.from_env``; the
variables the Helm chart sets, docs/deploy.md), plus ``KUBENAS_CHILD_COMMAND`` (a JSON list:
the program that understands ``train-child``, default ``["kubenas"]``), ``KUBENAS_CONTROLLER_COMMAND``
(likewise for ``controller``), ``KUBENAS_MANAGE_CONTROLLERS`` (false: make no controller
Deployments) and ``KUBECONFIG``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from typing import Optional, Sequence

from kubenas.operator import constants as C
from kubenas.operator import metrics as M
from kubenas.operator import indexes as X
from kubenas.operator.events import EventRecorder
from kubenas.operator.informer import Informer, InformerGroup, WorkQueue
from kubenas.operator.kube import (Kube, KubeError, TransportError, core_path, custom_path,
                                   deployments_path, jobs_path)
from kubenas.operator.reconciler import Conflict, Reconciler
from kubenas.operator.results import ResultStoreError, StoreFactory, StoreProvider
from kubenas.operator.settings import Settings
from kubenas.operator import trim as T
from kubenas.operator.views import ExperimentView, Meta, TrialView

log = logging.getLogger("kubenas.operator")

MANAGED_SELECTOR = f"{C.LABEL_MANAGED_BY}={C.MANAGED_BY}"
# How often Trial events may rewrite their Experiment's status (counts, best): at hundreds
# of Trial events a second, once per event would be most of the API server's writes.
EXPERIMENT_STATUS_SECONDS = 1.0


def _trial_of(obj: dict) -> Optional[str]:
    meta = Meta.of(obj)
    name = meta.annotations.get(C.ANNOTATION_TRIAL)
    if name:
        return name
    owners = meta.owners(C.TRIAL_KIND)
    return owners[0].get("name") if owners else None


# What each informer's cache keeps of an object (trim), in which form (pack/unpack) and how
# it is indexed; benchmarks/operator_cache.py measures exactly these.
CACHES = {
    "trials": dict(trim=T.trim_trial, pack=T.TRIALS.pack, unpack=T.TRIALS.unpack,
                   indexers=X.TRIAL_INDEXERS),
    "experiments": dict(trim=T.trim_metadata),
    "jobs": dict(trim=T.trim_job, pack=T.JOBS.pack, unpack=T.JOBS.unpack, indexers=X.JOB_INDEXERS),
    "pods": dict(trim=T.trim_pod, pack=T.PODS.pack, unpack=T.PODS.unpack, indexers=X.POD_INDEXERS),
    "deployments": dict(trim=T.trim_metadata),
}


class Operator:
    """Reconciles Trials into Jobs (and Experiments' status).

    ``namespace``: None (all namespaces, one cluster-wide watch per kind), a name, a list of
    names or "a,b,c" (one watch per namespace: works with namespace-scoped Roles only)."""

    def __init__(self, namespace=None, *, api_client=None,
                 kubeconfig: Optional[str] = None, resync_seconds: float = 30.0,
                 metrics_port: Optional[int] = None, workers: int = 4,
                 image: Optional[str] = None, child_command: Optional[Sequence[str]] = None,
                 manage_controllers: Optional[bool] = None, settings: Optional[Settings] = None,
                 store_factory: Optional[StoreFactory] = None,
                 result_grace_seconds: float = 60.0, watch_timeout: int = 300) -> None:
        if isinstance(namespace, str):
            namespace = [n.strip() for n in namespace.split(",") if n.strip()]
        self.namespaces: Optional[list] = sorted(set(namespace)) if namespace else None
        self.namespace = ",".join(self.namespaces) if self.namespaces else None
        self.kube = Kube(api_client, kubeconfig=kubeconfig)
        self.resync_seconds = resync_seconds
        self.metrics_port = metrics_port
        self.n_workers = max(1, workers)
        settings = settings or Settings.from_env()
        overrides = {"image": image, "child_command": list(child_command) if child_command else None,
                     "manage_controllers": manage_controllers}
        self.settings = settings.with_(**{k: v for k, v in overrides.items() if v is not None})
        self.image = self.settings.image
        self.child_command = list(self.settings.child_command)
        self.queue = WorkQueue()
        self.stop_event = threading.Event()
        self._threads: list = []
        self._exp_seen: dict = {}          # (ns, name) -> what makes its trials worth a look
        self.best = X.BestTrials()
        self.metrics_server: Optional[M.MetricsServer] = None
        self._collector = None

        def group(name, path_of, handler, selector=None):
            return InformerGroup(name, self.namespaces, lambda ns: Informer(
                self.kube, path_of(ns), f"{name}@{ns or '*'}", handler, label_selector=selector,
                watch_timeout=watch_timeout, stop=self.stop_event, **CACHES[name]))

        self.trials = group("trials", lambda ns: custom_path(C.TRIAL_PLURAL, ns), self._on_trial)
        self.experiments = group("experiments", lambda ns: custom_path(C.EXPERIMENT_PLURAL, ns),
                                 self._on_experiment)
        self.jobs = group("jobs", jobs_path, self._on_job, MANAGED_SELECTOR)
        self.pods = group("pods", lambda ns: core_path("pods", ns), self._on_pod, MANAGED_SELECTOR)
        self.deployments = group("deployments", deployments_path, self._on_deployment,
                                 f"{MANAGED_SELECTOR},{C.LABEL_COMPONENT}=controller")
        self.informers = [self.experiments, self.trials, self.jobs, self.pods]
        if self.settings.manage_controllers:
            self.informers.append(self.deployments)
        self.reconciler = Reconciler(
            self.kube, trials=self.trials, experiments=self.experiments, jobs=self.jobs,
            pods_of=self.pods_of, best=self.best, events=EventRecorder(self.kube),
            stores=StoreProvider(self.kube, store_factory), settings=self.settings,
            deployments=self.deployments if self.settings.manage_controllers else None,
            result_grace_seconds=result_grace_seconds)

    # -- indexes -----------------------------------------------------------------------------
    def pods_of(self, ns: str, trial: str) -> list:
        return self.pods.by_index(X.BY_TRIAL, (ns, trial))

    def unfinished_trials_of(self, ns: str, experiment: str) -> list:
        return self.trials.by_index(X.UNFINISHED_OF, (ns, experiment))

    # -- event handlers ----------------------------------------------------------------------
    def _on_trial(self, kind: str, obj: dict) -> None:
        trial = TrialView.of(obj)
        ns, name, exp = trial.meta.ns, trial.name, trial.experiment
        if kind != "DELETED":
            self.best.observe(obj)
            self.queue.add(("trial", ns, name))
        if exp:   # its counts: one status write per EXPERIMENT_STATUS_SECONDS, not per event
            self.queue.add_coalesced(("experiment", ns, exp), EXPERIMENT_STATUS_SECONDS)

    def _on_experiment(self, kind: str, obj: dict) -> None:
        experiment = ExperimentView.of(obj)
        meta = experiment.meta
        ns, name = meta.ns, meta.name
        if kind == "DELETED":
            self._exp_seen.pop((ns, name), None)
            self.best.forget(ns, name)
        else:
            self.queue.add(("experiment", ns, name))
        # Trials need a look only when what they depend on changed (not on every count update).
        seen = (meta.uid, meta.generation, experiment.stopping() is not None, kind == "DELETED")
        if self._exp_seen.get((ns, name)) != seen:
            if kind != "DELETED":
                self._exp_seen[(ns, name)] = seen
            for t in self.unfinished_trials_of(ns, name):
                self.queue.add(("trial", ns, t["metadata"]["name"]))

    def _on_job(self, kind: str, obj: dict) -> None:
        trial = _trial_of(obj)
        if trial:
            self.queue.add(("trial", Meta.of(obj).ns, trial))

    def _on_deployment(self, kind: str, obj: dict) -> None:
        meta = Meta.of(obj)
        for ref in meta.owners(C.EXPERIMENT_KIND):
            self.queue.add(("experiment", meta.ns, ref.get("name")))

    def _on_pod(self, kind: str, obj: dict) -> None:
        meta = Meta.of(obj)
        trial = meta.annotations.get(C.ANNOTATION_TRIAL)
        if trial:
            self.queue.add(("trial", meta.ns, trial))

    # -- workers -----------------------------------------------------------------------------
    def _process(self, key: tuple) -> None:
        kind, ns, name = key
        t0 = time.perf_counter()
        try:
            if kind == "trial":
                requeue = self.reconciler.reconcile_trial(ns, name)
            else:
                requeue = self.reconciler.reconcile_experiment(ns, name)
            self.queue.forget(key)
            if requeue is not None:
                self.queue.add_after(key, requeue)
        except Conflict as exc:
            log.debug("%s: %s; retrying", key, exc)
            self.queue.add_after(key, 0.05)
        except (KubeError, TransportError, ResultStoreError) as exc:
            M.RECONCILE_ERRORS.labels(kind).inc()
            delay = self.queue.add_rate_limited(key)
            log.warning("reconcile %s/%s/%s failed (%s); retrying in %.1fs", kind, ns, name, exc, delay)
        except Exception:
            M.RECONCILE_ERRORS.labels(kind).inc()
            delay = self.queue.add_rate_limited(key)
            log.exception("reconcile %s/%s/%s crashed; retrying in %.1fs", kind, ns, name, delay)
        finally:
            M.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - t0)

    def _worker(self) -> None:
        while not self.stop_event.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                self._process(key)
            finally:
                self.queue.done(key)

    def _resync(self) -> None:
        while not self.stop_event.wait(self.resync_seconds):
            for exp in self.experiments.items():
                m = exp["metadata"]
                self.queue.add(("experiment", m.get("namespace") or "", m["name"]))
            # finished Trials need nothing more: a resync costs what is in flight
            for trial in self.trials.by_index(X.UNFINISHED, True):
                m = trial["metadata"]
                self.queue.add(("trial", m.get("namespace") or "", m["name"]))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, sync_timeout: float = 60.0) -> "Operator":
        for inf in self.informers:
            inf.start()
        deadline = time.monotonic() + sync_timeout
        for inf in self.informers:
            if not inf.synced.wait(max(0.0, deadline - time.monotonic())):
                self.stop()
                raise TimeoutError(f"informer {inf.name} did not sync within {sync_timeout}s "
                                   f"(are the CRDs installed and the API server reachable?)")
        for i in range(self.n_workers):
            t = threading.Thread(target=self._worker, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._resync, name="resync", daemon=True)
        t.start()
        self._threads.append(t)
        self._collector = M.TrialPhaseCollector(lambda: self.trials.index_counts(X.BY_PHASE))
        M.register(self._collector)
        if self.metrics_port is not None:
            self.metrics_server = M.MetricsServer(self.metrics_port)
        log.info("kubenas operator started (namespace=%s, workers=%d, resync=%ss, image=%s, "
                 "controller Deployments: %s)", self.namespace or "<all>", self.n_workers,
                 self.resync_seconds, self.image, "on" if self.settings.manage_controllers else "off")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.queue.shutdown()
        for inf in self.informers:
            inf.stop()
        deadline = time.monotonic() + timeout
        for inf in self.informers:
            inf.join(max(0.1, deadline - time.monotonic()))
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if self._collector is not None:
            M.unregister(self._collector)
            self._collector = None
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    def wait(self) -> None:
        while not self.stop_event.wait(1.0):
            pass


class OperatorRunner:
    """Run an Operator in threads for the span of a ``with`` block (like kopf's KopfRunner)::

        with OperatorRunner(namespace="t1", api_client=client, child_command=[...]) as op:
            ...  # op is the running Operator

    Leaving the block stops it cleanly (informers, workers, metrics server)."""

    def __init__(self, namespace: Optional[str] = None, **kwargs) -> None:
        self.operator = Operator(namespace, **kwargs)

    def __enter__(self) -> Operator:
        return self.operator.start()

    def __exit__(self, *exc) -> None:
        self.operator.stop()


def run(namespace=None, resync_seconds: float = 30.0,
        metrics_port: Optional[int] = None, **kwargs) -> None:
    """Run the operator until SIGTERM/SIGINT (or ``kwargs['stop_event']`` is set).

    ``namespace``: None or "" for all namespaces; a name, "a,b" or a list for those. Other keyword arguments go to ``Operator``
    (``api_client``, ``kubeconfig``, ``workers``, ``image``, ``child_command``, ...)."""
    stop_event: Optional[threading.Event] = kwargs.pop("stop_event", None)
    op = Operator(namespace, resync_seconds=resync_seconds, metrics_port=metrics_port, **kwargs)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: op.stop_event.set())
    op.start()
    try:
        while not op.stop_event.wait(0.5):
            if stop_event is not None and stop_event.is_set():
                break
    finally:
        log.info("kubenas operator stopping")
        op.stop()


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kubenas.operator.main",
                                description="kubenas operator: Trials -> Jobs")
    p.add_argument("--namespace", default=os.environ.get("KUBENAS_WATCH_NAMESPACE") or None)
    p.add_argument("--resync-seconds", type=float, default=30.0)
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--image", default=None)
    p.add_argument("--child-command", default=None, help="JSON list, e.g. '[\"kubenas\"]'")
    p.add_argument("--no-controllers", action="store_true",
                   help="do not create per-Experiment controller Deployments")
    p.add_argument("--result-grace-seconds", type=float, default=60.0)
    p.add_argument("--log-level", default=os.environ.get("KUBENAS_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.namespace, args.resync_seconds, args.metrics_port, kubeconfig=args.kubeconfig,
        workers=args.workers, image=args.image,
        child_command=json.loads(args.child_command) if args.child_command else None,
        manage_controllers=False if args.no_controllers else None,
        result_grace_seconds=args.result_grace_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
