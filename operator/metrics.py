"""Prometheus metrics of the operator (prometheus_client, default registry)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from kubenas.operator import constants as C

RECONCILE_SECONDS = Histogram(
    "kubenas_operator_reconcile_seconds", "Time spent in one reconcile", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RECONCILE_ERRORS = Counter(
    "kubenas_operator_reconcile_errors", "Reconciles that raised and were retried", ["kind"])
JOBS_CREATED = Counter("kubenas_operator_jobs_created", "Jobs created for Trials")
JOBS_STOPPED = Counter("kubenas_operator_jobs_stopped",
                       "Jobs stopped because their Experiment finished or was deleted")


class TrialPhaseCollector:
    """``kubenas_trials{namespace, phase}``: Trials by phase, read at scrape time from the
    trials cache's (namespace, experiment, phase) index counts (so it is never stale, and a
    scrape costs the number of experiments, not of Trials)."""

    def __init__(self, phase_counts: Callable[[], dict]) -> None:
        self._phase_counts = phase_counts   # {(namespace, experiment, phase): count}

    def collect(self):
        g = GaugeMetricFamily("kubenas_trials", "Trials by phase", labels=["namespace", "phase"])
        counts: dict = {}
        for (ns, _experiment, phase), n in self._phase_counts().items():
            counts[(ns, phase)] = counts.get((ns, phase), 0) + n
        for ns in sorted({ns for ns, _ in counts}):
            for phase in C.TRIAL_PHASES:
                g.add_metric([ns, phase], counts.get((ns, phase), 0))
        yield g


class MetricsServer:
    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        out = start_http_server(port, addr=addr, registry=REGISTRY)
        self.server = out[0] if isinstance(out, tuple) else None
        self.port = self.server.server_address[1] if self.server is not None else port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def register(collector) -> None:
    REGISTRY.register(collector)


def unregister(collector) -> None:
    try:
        REGISTRY.unregister(collector)
    except KeyError:
        pass
