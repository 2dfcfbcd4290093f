"""`kubenas controller --experiment NAME`: one Experiment's search, run as a Deployment.

The composition of the controller room (strategy, loop) with the operator room's Kubernetes
executor. Results come from object storage; the controller's whole state lives there too, so
the pod is disposable: kill it and the next one resumes. With ``replicas: K`` the replicas
share the policy through compare-and-swap on the state object (the paper's §3.3 scheme).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from kubenas.contracts import ContractError
from kubenas.contracts.result import cost_text

log = logging.getLogger("kubenas.controller")

STATUS_INTERVAL = 2.0  # seconds between Experiment status writes while searching
OWNER_RECHECK_SECONDS = 10.0  # a state of another Experiment in the way: re-read this often


class _Stop(Exception):
    pass


def _condition(type_: str, status: str, reason: str, message: str) -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message[:1000]}


def _publish(store, write):
    """``write(folder)`` into a temporary folder, then every file it wrote under outputs/;
    returns what ``write`` returned."""
    with tempfile.TemporaryDirectory() as tmp:
        out = write(Path(tmp))
        for f in sorted(Path(tmp).iterdir()):
            store.put(f"outputs/{f.name}", f.read_bytes())
    return out


def _publish_final(store, final: dict) -> None:
    """final.json, final_model.pt and final_model.onnx under outputs/."""
    from kubenas.local.report import write_final_outputs

    _publish(store, lambda folder: write_final_outputs(final, store, folder))


def publish_outputs(store, results, final=None) -> dict:
    """leaderboard.csv, best_architecture.json, best_model.pt, rewards.png (and with a final
    phase final.json, final_model.pt, final_model.onnx) under outputs/."""
    from kubenas.local.report import write_outputs

    return _publish(store, lambda folder: write_outputs(results, store, folder, final=final))


def run_controller(experiment: str, namespace: str = "default", replica: str = "controller-0",
                   metrics_port: Optional[int] = None, api_client=None,
                   stop_event: Optional[threading.Event] = None, poll_interval: float = 1.0,
                   idle_when_done: bool = True) -> int:
    from kubenas.controller import use_one_thread
    from kubenas.operator import KubernetesExecutor

    use_one_thread()
    stop_event = stop_event or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, lambda *_: stop_event.set())
        except ValueError:  # not the main thread (tests run the controller in a thread)
            pass
    metrics = _Metrics(metrics_port)

    try:
        executor = KubernetesExecutor(experiment, namespace, api_client=api_client)
    except ContractError as exc:
        return _invalid(experiment, namespace, api_client, str(exc), stop_event, idle_when_done)
    try:
        from kubenas.controller import strategy_factory
        from kubenas.trainer import validate_trainer_config

        from kubenas.cli import check_final

        exp = executor.experiment
        factory = strategy_factory(exp)
        validate_trainer_config(exp.trainer, space=exp.space, where="spec.trainer")
        check_final(exp)
    except ContractError as exc:
        return _invalid(experiment, namespace, api_client, str(exc), stop_event, idle_when_done,
                        executor=executor)
    if exp.strategy == "enas":   # one process trains the shared weights and the policy
        return _enas_search(executor, factory, stop_event, idle_when_done)
    loop_ref: list = []
    on_event = _on_event(executor, metrics, stop_event, loop_ref)
    opened = _open_search(executor, factory, replica, on_event, poll_interval, stop_event)
    if opened is None:
        return 0
    loop_ref.append(opened[0])
    return _search(executor, *opened, replica, stop_event, poll_interval, idle_when_done)


def _on_event(executor, metrics, stop_event: threading.Event, loop_ref: list):
    last_status = [0.0]

    def on_event(e) -> None:
        metrics.observe(e)
        if stop_event.is_set():
            raise _Stop()
        now = time.monotonic()
        loop = loop_ref[0] if loop_ref else None  # None while the loop is being constructed
        if loop and e.kind == "applied" and now - last_status[0] > STATUS_INTERVAL:
            last_status[0] = now
            executor.write_status(phase="Searching", summary=loop.summary(),
                                  policy_version=_policy_version(loop))
    return on_event


def _open_search(executor, factory, replica: str, on_event, poll_interval: float,
                 stop_event: threading.Event):
    """The search loop on this Experiment's own state: (loop, store, results). A state that
    another Experiment (another UID) wrote is not resumed: the Experiment gets
    StateOwner=False saying how to resume it explicitly, and this waits, re-reading the
    Experiment, until it is annotated so (or stopped: None)."""
    from kubenas.controller import SearchLoop, StateOwned, StoreResultSource
    from kubenas.operator import state_owner
    from kubenas.storage import open_store

    while True:
        exp = executor.experiment
        store = open_store(exp.storage["url"], endpoint_url=exp.storage.get("endpoint"))
        results = StoreResultSource(store)
        try:
            loop = SearchLoop(exp, factory, executor, results, store, replica=replica,
                              on_event=on_event, poll_interval=poll_interval,
                              shared=exp.controller.get("replicas", 1) > 1,
                              owner=state_owner(executor.experiment_obj))
            return loop, store, results
        except (StateOwned, ContractError) as exc:
            log.error("experiment %s/%s: %s", executor.namespace, exp.name, exc)
            executor.write_status(message=str(exc), conditions=[_condition(
                "StateOwner", "False", "StateOfAnotherExperiment", str(exc))])
        if stop_event.wait(OWNER_RECHECK_SECONDS) or executor.stop_requested():
            return None
        try:
            executor.refresh_experiment()
        except ContractError as exc:
            log.error("experiment %s/%s: %s", executor.namespace, exp.name, exc)


def _search(executor, loop, store, results, replica: str, stop_event: threading.Event,
            poll_interval: float, idle_when_done: bool) -> int:
    write, experiment = executor.write_status, executor.experiment_name
    owner = (loop.state.get("owner") or {}).get("uid")
    final_phase = executor.experiment.final is not None
    write(phase="Final" if final_phase and loop.done() else "Searching", summary=loop.summary(), conditions=[
        _condition("Valid", "True", "SpecValid", "the experiment spec is valid"),
        _condition("StateOwner", "True", "OwnState",
                   f"the controller state in {store.url()} is this Experiment's (uid {owner})")])
    log.info("experiment %s/%s: %d sampled, %d applied; searching", executor.namespace,
             experiment, len(loop.sampled), len(loop.applied))
    try:
        while not loop.done():
            reason = executor.stop_requested()
            if reason:
                log.info("experiment %s %s: stopping the search", experiment, reason)
                return 0
            loop.step(timeout=poll_interval)
            if stop_event.is_set():
                raise _Stop()
    except _Stop:
        log.info("controller %s stopping; state is in %s", replica, store.url())
        return 0
    summary = loop.summary()
    final = None
    if final_phase:
        final = _final_phase(executor, loop.credited(results.all()), summary["cost"], store,
                             results, stop_event, poll_interval)
        if final is None:   # stopped, or nothing to ship (the status says which)
            return _idle(stop_event, idle_when_done) if not stop_event.is_set() else 0
    outputs = publish_outputs(store, loop.credited(results.all()), final=final)
    cost = {"search": summary["cost"], **({"final": final["cost"]["final"]} if final else {})}
    write(phase="Succeeded", summary=summary, policy_version=_policy_version(loop),
          final=final, cost=cost, message=_done_message(summary, final, store),
          conditions=[_condition("Complete", "True", "BudgetReached",
                                 f"{summary['applied']} results applied")])
    log.info("experiment %s done: %s", experiment, outputs)
    return _idle(stop_event, idle_when_done)


def _done_message(summary: dict, final: Optional[dict], store) -> str:
    text = (f"{summary['applied']} trials; best {summary['bestTrial']} reward "
            f"{summary['bestReward']}; cost {cost_text(summary['cost'])}")
    if final is not None:
        test = final.get("test") or {}
        metric = test.get("metric", "accuracy")
        text += (f"; final: test {metric} {test.get(metric)} of {(final.get('model') or {}).get('trial')} "
                 f"(evaluated once), final phase cost {cost_text(final['cost']['final'])}")
    return text + f"; outputs in {store.url()}/outputs/"


def _final_phase(executor, records: list, search_cost: dict, store, results,
                 stop_event: threading.Event, poll_interval: float) -> Optional[dict]:
    """The final phase (spec.final) on the cluster: grid-point and retrain Trials through the
    same executor, the Experiment ``Final`` meanwhile. None: stopped or failed (said on the
    Experiment); resumed from its create-only plans by the next controller."""
    from kubenas.controller import FinalPhase, FinalPhaseFailed, FinalPhaseStopped

    write, done = executor.write_status, {"n": 0, "of": 0, "stage": "grid"}

    def on_event(kind: str, info: dict) -> None:
        if kind in ("grid", "retrain"):
            done.update(n=0, of=info["trials"], stage=kind)
        elif kind == "result":
            done["n"] += 1
        write(phase="Final", message=f"final phase: {done['stage']} trials {done['n']}/{done['of']} done")

    def stop() -> Optional[str]:
        return "the controller is stopping" if stop_event.is_set() else executor.stop_requested()

    phase = FinalPhase(executor.experiment, executor, results, store, on_event=on_event,
                       poll_interval=poll_interval, stop=stop)
    try:
        return phase.run(records, search_cost)
    except FinalPhaseStopped as exc:
        log.info("%s", exc)
    except FinalPhaseFailed as exc:
        log.error("%s", exc)
        write(phase="Failed", message=str(exc), conditions=[
            _condition("Complete", "False", "FinalPhaseFailed", str(exc))])
    return None


def _enas_search(executor, factory, stop_event: threading.Event, idle_when_done: bool) -> int:
    """An ``enas`` Experiment (kubenas.enas): the search in this pod, checkpointed in the
    store every few steps, so a new pod resumes where a killed one stopped; then the derived
    architecture's outputs and, with ``spec.final``, its retrain as the final phase."""
    from kubenas.controller import StoreResultSource
    from kubenas.enas.local import derived_record, enas_cost, write_outputs
    from kubenas.enas.search import EnasSearch
    from kubenas.storage import open_store

    exp, write = executor.experiment, executor.write_status
    store = open_store(exp.storage["url"], endpoint_url=exp.storage.get("endpoint"))
    progress = _EnasProgress(executor, stop_event, exp.trainer.get("epochs"))
    search = EnasSearch(factory(), exp.trainer, store,
                        max_samples=exp.max_trials, on_step=progress.step)
    progress.search = search
    write(phase="Searching", policy_version=search.strategy.version, message=progress.says(search.pos),
          conditions=[_condition("Valid", "True", "SpecValid", "the experiment spec is valid")])
    log.info("experiment %s/%s: enas %s; searching", executor.namespace, exp.name,
             f"resumed at {search.pos}" if search.resumed else "from the start")
    try:
        summary = search.run()
    except _Stop:
        log.info("experiment %s: enas stopped; its checkpoint is in %s", exp.name, store.url())
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write_outputs(summary, store, Path(tmp))
    final = None
    if exp.final is not None:
        final = _final_phase(executor, [derived_record(exp.name, summary)], enas_cost(summary),
                             store, StoreResultSource(store), stop_event, 1.0)
        if final is None:
            return _idle(stop_event, idle_when_done) if not stop_event.is_set() else 0
        _publish_final(store, final)
    write(phase="Succeeded", policy_version=summary["policy_version"],
          best_reward=summary["val_batch_reward"], best_trial=f"{exp.name}-derived",
          best_architecture=summary["architecture"], final=final,
          cost={"search": enas_cost(summary), **({"final": final["cost"]["final"]} if final else {})},
          message=f"enas: {summary['epochs']} epochs, {summary['policy_samples']} policy samples; "
                  f"derived architecture {summary['op_histogram']} at validation-batch "
                  f"{summary['val_batch_reward']:.4f}; {summary['cpu_seconds']:.0f} CPU-seconds"
                  + (f"; final test {final['test']}" if final else "")
                  + f"; outputs in {store.url()}/outputs/",
          conditions=[_condition("Complete", "True", "SearchDone", "the enas search finished")])
    return _idle(stop_event, idle_when_done)


class _EnasProgress:
    """``EnasSearch``'s ``on_step``: the Experiment's status every few seconds, and a stop
    (the Experiment stopped or deleted, the pod terminating) between steps."""

    def __init__(self, executor, stop_event: threading.Event, epochs) -> None:
        self.executor, self.stop_event, self.epochs = executor, stop_event, epochs
        self.search = None
        self.last = 0.0

    def says(self, pos) -> str:
        return f"enas: epoch {pos.epoch + 1}/{self.epochs or '?'}, {pos.phase} phase, step {pos.step}"

    def step(self, pos) -> None:
        if self.stop_event.is_set():
            raise _Stop()
        now = time.monotonic()
        if now - self.last < STATUS_INTERVAL * 5:
            return
        self.last = now
        if self.executor.stop_requested():
            raise _Stop()
        self.executor.write_status(phase="Searching", message=self.says(pos),
                                   policy_version=self.search.strategy.version if self.search else None)


def _policy_version(loop) -> Optional[int]:
    # the attribute, not state_dict(): that would serialise the whole policy for one int
    version = getattr(loop.strategy, "version", None)
    return version if isinstance(version, int) else None


def _invalid(experiment, namespace, api_client, message, stop_event, idle, executor=None) -> int:
    """A spec the schema could not reject: say so on the Experiment, create no Trials."""
    from kubenas.operator import Kube, write_experiment_status

    log.error("experiment %s/%s is invalid: %s", namespace, experiment, message)
    kube = executor.kube if executor else Kube(api_client)
    write_experiment_status(kube, namespace, experiment, phase="Failed", message=message,
                            conditions=[_condition("Valid", "False", "InvalidSpec", message)])
    return _idle(stop_event, idle)


def _idle(stop_event: threading.Event, idle: bool) -> int:
    # A Deployment restarts a process that exits; once the search is over (or cannot start)
    # the controller waits quietly until its Experiment, and so this Deployment, is deleted.
    while idle and not stop_event.wait(30):
        pass
    return 0


class _Metrics:
    """Prometheus metrics of the search: results applied, rewards, policy updates."""

    def __init__(self, port: Optional[int]) -> None:
        self.enabled = port is not None
        if not self.enabled:
            return
        from prometheus_client import Counter, Histogram, start_http_server

        self.applied = Counter("kubenas_controller_results_applied_total",
                               "Result records applied to the policy", ["status"])
        self.updates = Counter("kubenas_controller_policy_updates_total",
                               "Optimizer steps applied to the controller policy")
        self.rewards = Histogram("kubenas_controller_reward", "Rewards of succeeded trials",
                                 buckets=[i / 20 for i in range(21)])
        self.sampled = Counter("kubenas_controller_trials_sampled_total", "Architectures sampled")
        self.conflicts = Counter("kubenas_controller_state_conflicts_total",
                                 "Compare-and-swap conflicts on the shared controller state")
        try:
            start_http_server(port, addr=os.environ.get("KUBENAS_METRICS_ADDR", "0.0.0.0"))
        except OSError as exc:
            # Pods sharing one network namespace (hostNetwork, the dev cluster's fake kubelet,
            # a second replica on the node) would crash-loop on a busy port: the search
            # matters more than its metrics.
            log.warning("metrics port %s unavailable (%s): serving no metrics", port, exc)
            self.enabled = False

    def observe(self, e) -> None:
        if not self.enabled:
            return
        if e.kind == "applied":
            self.applied.labels(e.status).inc()
            if e.reward is not None:
                self.rewards.observe(e.reward)
            if e.info.get("stepped"):
                self.updates.inc()
        elif e.kind == "sampled":
            self.sampled.inc()
        elif e.kind == "conflict":
            self.conflicts.inc()
