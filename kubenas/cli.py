"""The one command every role runs: `kubenas run | report | train-child | controller | operator | benchmark`.

Imports are lazy so each role loads only its room (the operator never loads torch).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from kubenas.contracts import ContractError


def _err(msg: str) -> int:
    print(f"kubenas: error: {msg}", file=sys.stderr)
    return 2


# -- kubenas run ------------------------------------------------------------------------------

def check_run(path: str | Path):
    """Everything `kubenas run` checks before it starts anything: the file, the space and
    strategy options (a strategy is built), the trainer section. Returns the experiment, the
    strategy factory and the children's trainer config; raises ContractError naming the file
    and the field."""
    from kubenas.controller import strategy_factory
    from kubenas.experiment import load_experiment
    from kubenas.trainer import validate_trainer_config

    exp = load_experiment(path)
    try:
        factory = strategy_factory(exp)
        trainer_config = validate_trainer_config(exp.trainer, space=exp.space, where="spec.trainer")
        check_final(exp)
    except ContractError as exc:
        raise ContractError(f"{path}: {exc}") from None
    return exp, factory, trainer_config


def check_final(exp) -> None:
    """spec.final's grid points with the trainer section (each one a trainer config the
    children will accept), before anything starts."""
    if exp.final is None:
        return
    from kubenas.controller import grid_points
    from kubenas.trainer import validate_trainer_config

    for point in grid_points(exp.final["grid"]):
        validate_trainer_config({**exp.trainer, **point, "epochs": exp.final["epochs"]},
                                space=exp.space, where=f"spec.final.grid {point}")


def _final_phase(exp, executor, results, store, records, search_cost, bar,
                 poll_interval: float = 0.5) -> dict | None:
    """The final phase after the search (spec.final): grid, retrain, test once."""
    if exp.final is None:
        return None
    from kubenas.controller import FinalPhase

    def on_event(kind: str, info: dict) -> None:
        if kind == "grid":
            bar.write(f"final phase: {info['trials']} grid-point trials")
        elif kind == "retrain":
            bar.write(f"final phase: retraining {info['chosen']}'s setting "
                      f"({info['trials']} trial(s)), then the test split, once")
        elif kind == "result" and info["status"] == "failed":
            bar.write(f"{info['trial_id']} failed (see {executor.workdir}/trials/"
                      f"{info['trial_id']}/child.log)")

    phase = FinalPhase(exp, executor, results, store, on_event=on_event,
                       poll_interval=poll_interval)
    return phase.run(records, search_cost)


def final_line(final: dict) -> str:
    """'final: test accuracy 0.9630 (297 examples, evaluated once), ...' for kubenas run."""
    test = final.get("test") or {}
    if not test:
        return "final: no retrain succeeded (see final.json)"
    metric = test.get("metric", "accuracy")
    return (f"final: test {metric} {test[metric]:.4f} ({test['examples']} examples, "
            f"evaluated once) of {final['model']['trial']} with {final['hyperparameters']}; "
            f"final_model.pt final_model.onnx final.json")


def cmd_run(args: argparse.Namespace) -> int:
    try:
        exp, factory, trainer_config = check_run(args.experiment)
    except ContractError as exc:
        return _err(str(exc))
    if args.dry_run:
        print(f"{args.experiment}: valid ({exp.name}: {exp.space} space, {exp.strategy}, "
              f"{exp.max_trials} trials)")
        return 0

    from kubenas.controller import SearchLoop, StoreResultSource, use_one_thread
    from kubenas.local.executor import ProcessExecutor
    from kubenas.storage import open_store

    use_one_thread()   # the children are processes of their own, with their own threads

    workdir = Path(args.workdir or f"runs/{exp.name}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    store_url = exp.storage.get("url") or (workdir / "store").as_uri()
    store = open_store(store_url, endpoint_url=exp.storage.get("endpoint"))
    if exp.strategy == "enas":  # one process trains the shared weights and the policy
        return _run_enas(exp, factory, trainer_config, store, workdir)
    parallelism = args.parallelism or exp.parallelism
    executor = ProcessExecutor(exp.name, trainer_config, store, workdir, parallelism=parallelism,
                               warm=False if args.cold_children else None)  # None: the default
    results = StoreResultSource(store)

    bar, best, on_event = _progress(exp, executor, workdir, disable=args.no_progress)
    t0 = time.time()
    loop = SearchLoop(exp, factory, executor, results, store, on_event=on_event)
    best["reward"] = loop.summary()["bestReward"]  # resumed: the best so far
    from kubenas.controller import FinalPhaseFailed

    try:
        loop.run()
        final = _final_phase(exp, executor, results, store, loop.credited(results.all()),
                             loop.summary()["cost"], bar, loop.poll_interval)
    except KeyboardInterrupt:
        bar.close()
        executor.close()
        print("\ninterrupted: state is saved; run the same command again to resume", file=sys.stderr)
        return 130
    except FinalPhaseFailed as exc:
        bar.close()
        return _err(str(exc))
    finally:
        executor.close()
    bar.close()
    _print_outputs(loop, results, store, workdir, final, parallelism, seconds=time.time() - t0)
    return 0


def _progress(exp, executor, workdir: Path, disable: bool):
    """The progress bar of `kubenas run`, the best reward so far ({"reward": ...}, for the
    caller to seed on a resume) and the loop's on_event that moves them."""
    from tqdm import tqdm

    bar = tqdm(total=exp.max_trials, unit="trial", desc=exp.name, disable=disable,
               dynamic_ncols=True)
    best = {"reward": None}

    def on_event(e) -> None:
        if e.kind == "resumed":
            bar.write(f"resuming {exp.name}: {e.info['applied']} results applied, "
                      f"{e.info['sampled'] - e.info['applied']} trials to finish")
            bar.update(e.info["applied"])
        elif e.kind == "applied":
            if e.reward is not None and (best["reward"] is None or e.reward > best["reward"]):
                best["reward"] = e.reward
            bar.update(1)
            bar.set_postfix(best=f"{best['reward']:.4f}" if best["reward"] is not None else "-",
                            running=len(executor.running))
            if e.status == "failed":
                bar.write(f"{e.trial_id} failed (see {workdir}/trials/{e.trial_id}/child.log)")

    return bar, best, on_event


def _print_outputs(loop, results, store, workdir: Path, final, parallelism: int,
                   seconds: float) -> None:
    """Write the outputs into ``workdir`` and print the summary, their names and the cost."""
    from kubenas.local.report import write_outputs

    summary = write_outputs(loop.credited(results.all()), store, workdir, final=final)
    summary["seconds"] = round(seconds, 1)
    print(json.dumps(summary, indent=1))
    print(f"outputs in {workdir}: leaderboard.csv best_architecture.json best_model.pt rewards.png "
          "report.html")
    print(cost_line(loop.summary()["cost"], parallelism, summary["seconds"]))
    if final is not None:
        _print_final(final, parallelism)


def _print_final(final: dict, parallelism: int) -> None:
    print(f"final phase {cost_line(final['cost']['final'], parallelism, final['phaseSeconds'])}")
    print(final_line(final))


def _run_enas(exp, factory, trainer_config: dict, store, workdir: Path) -> int:
    from kubenas.enas.local import run_local

    t0 = time.time()
    try:
        summary = run_local(exp, factory, trainer_config, store, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted: the last checkpoint is saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(json.dumps({k: summary[k] for k in ("val_batch_reward", "op_histogram", "epochs",
                                               "policy_samples", "cpu_seconds")}, indent=1))
    print(f"outputs in {workdir}: best_architecture.json enas_summary.json leaderboard.csv")
    print(f"cost: {summary['cpu_seconds']:.1f} CPU-seconds in one process "
          f"({summary['device']}), wall {time.time() - t0:.0f} s")
    if exp.final is None:
        return 0
    return _enas_final(exp, summary, trainer_config, store, workdir)


def _enas_final(exp, summary: dict, trainer_config: dict, store, workdir: Path) -> int:
    """spec.final after an enas search: its derived architecture's grid and retrain, as
    child processes like any search's final phase."""
    from kubenas.controller import FinalPhaseFailed, StoreResultSource
    from kubenas.enas.local import derived_record, enas_cost
    from kubenas.local.executor import ProcessExecutor
    from kubenas.local.report import write_final_outputs

    executor = ProcessExecutor(exp.name, trainer_config, store, workdir, parallelism=exp.parallelism)
    printer = type("Printer", (), {"write": staticmethod(print)})
    try:
        final = _final_phase(exp, executor, StoreResultSource(store), store,
                             [derived_record(exp.name, summary)], enas_cost(summary), printer)
    except FinalPhaseFailed as exc:
        return _err(str(exc))
    finally:
        executor.close()
    for name in write_final_outputs(final, store, workdir):
        store.put(f"outputs/{name}", (workdir / name).read_bytes())
    _print_final(final, exp.parallelism)
    return 0


def cost_line(totals: dict, parallelism: int, wall_seconds: float) -> str:
    """What the search cost, in one line: 'cost: 48 trials, 312.4 CPU-seconds (0 GPU-seconds),
    2 in parallel, wall 158 s' (wall: this command's, a resumed run counts from its restart)."""
    from kubenas.contracts.result import cost_text

    return f"cost: {cost_text(totals)}, {parallelism} in parallel, wall {wall_seconds:.0f} s"


# -- kubenas report -------------------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    from kubenas.report import report_store
    from kubenas.report.data import default_report_path, open_source
    from kubenas.storage import StorageError

    out = Path(args.out) if args.out else default_report_path(args.source)
    try:
        store = open_source(args.source, endpoint_url=args.endpoint)
        baseline = open_source(args.baseline, endpoint_url=args.endpoint) \
            if args.baseline else None
        path = report_store(store, out, baseline=baseline)
    except (FileNotFoundError, StorageError) as exc:
        return _err(str(exc))
    print(f"wrote {path}")
    return 0


# -- kubenas train-child ------------------------------------------------------------------------

def _read_json_arg(inline: str | None, path: str | None, what: str) -> dict:
    if (inline is None) == (path is None):
        raise ContractError(f"--{what}-json or --{what}-file: give exactly one")
    try:
        return json.loads(inline if inline is not None else Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f"--{what}: cannot read ({exc})") from exc


def cmd_train_child(args: argparse.Namespace) -> int:
    from kubenas.contracts import Architecture
    from kubenas.storage import StorageError, open_store

    try:
        arch = Architecture.from_dict(_read_json_arg(args.architecture_json, args.architecture_file,
                                                     "architecture"))
        config = _read_json_arg(args.trainer_config_json, args.trainer_config_file, "trainer-config")
    except ContractError as exc:
        return _err(str(exc))
    from kubenas.trainer import train_child

    try:
        store = open_store(args.store)
        record = train_child(trial_id=args.trial_id, experiment=args.experiment, architecture=arch,
                             trainer_config=config, store=store, cache_dir=args.cache_dir)
    except StorageError as exc:
        # Exit non-zero so the Job (or the local executor) retries; the checkpoint survives.
        print(f"kubenas: storage unavailable: {exc}", file=sys.stderr)
        return 3
    print(json.dumps({"trial_id": record.trial_id, "status": record.status,
                      "reward": record.reward, "reason": record.reason}))
    return 0


# -- kubenas controller / operator / benchmark --------------------------------------------------

def cmd_controller(args: argparse.Namespace) -> int:
    from kubenas.cluster_search import run_controller

    return run_controller(experiment=args.experiment, namespace=args.namespace,
                          replica=args.replica, metrics_port=args.metrics_port)


def cmd_operator(args: argparse.Namespace) -> int:
    from kubenas.operator import run_operator

    run_operator(namespace=args.namespace, resync_seconds=args.resync_seconds,
        metrics_port=args.metrics_port)
    return 0


def cmd_benchmark(argv: list[str]) -> int:
    """The NAS-Bench-201 benchmark (benchmarks/nasbench201), from the source checkout this
    package is installed from (editable): benchmarks are not part of the product."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "nasbench201" / "benchmark.py").is_file():
        return _err(f"kubenas benchmark runs benchmarks/nasbench201 from a source checkout; "
                    f"none at {root} (clone the repository, pip install -e '.[bench]')")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.nasbench201.benchmark import main as bench_main

    return bench_main(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubenas", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default=os.environ.get("KUBENAS_LOG_LEVEL", "WARNING"))
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a whole search on this machine")
    r.add_argument("experiment", help="experiment YAML file")
    r.add_argument("--workdir", help="where state and outputs go (default runs/<name>)")
    r.add_argument("--parallelism", type=int, help="children training at once (overrides the file)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--cold-children", action="store_true",
                   help="start each child as a fresh process (default: fork it from a warm one)")
    r.add_argument("--dry-run", action="store_true",
                   help="validate the file (space, strategy, trainer) and stop")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="write report.html for a search (work dir or s3://)")
    rp.add_argument("source", help="a kubenas run work directory, a store directory or s3://...")
    rp.add_argument("--out", help="where to write it (default SOURCE/report.html; for s3:// "
                                  "./report.html)")
    rp.add_argument("--baseline", help="another search to compare with (e.g. a random search "
                                       "of the same space): a work directory or s3://...")
    rp.add_argument("--endpoint", default=os.environ.get("KUBENAS_S3_ENDPOINT"),
                    help="S3 endpoint URL (default $KUBENAS_S3_ENDPOINT)")
    rp.set_defaults(func=cmd_report)

    t = sub.add_parser("train-child", help="train one child and write its result record")
    t.add_argument("--experiment", required=True)
    t.add_argument("--trial-id", required=True)
    t.add_argument("--architecture-json")
    t.add_argument("--architecture-file")
    t.add_argument("--trainer-config-json")
    t.add_argument("--trainer-config-file")
    t.add_argument("--store", required=True, help="file:///dir or s3://bucket/prefix")
    t.add_argument("--cache-dir", default=os.environ.get("KUBENAS_CACHE_DIR"))
    t.set_defaults(func=cmd_train_child)

    c = sub.add_parser("controller", help="run an Experiment's search in the cluster")
    c.add_argument("--experiment", required=True)
    c.add_argument("--namespace", default=os.environ.get("KUBENAS_NAMESPACE", "default"))
    c.add_argument("--replica", default=os.environ.get("HOSTNAME", "controller-0"))
    c.add_argument("--metrics-port", type=int, default=None)
    c.set_defaults(func=cmd_controller)

    o = sub.add_parser("operator", help="reconcile Trials into Jobs")
    o.add_argument("--namespace", default=os.environ.get("KUBENAS_WATCH_NAMESPACE") or None)
    o.add_argument("--resync-seconds", type=float, default=30.0)
    o.add_argument("--metrics-port", type=int, default=None)
    o.set_defaults(func=cmd_operator)

    sub.add_parser("benchmark", help="compare strategies on the NAS-Bench-201 table",
                   add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["benchmark"]:
        return cmd_benchmark(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
