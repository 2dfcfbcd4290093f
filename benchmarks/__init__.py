"""Benchmarks: scripts that print figures (``python benchmarks/<name>.py``) and the
NAS-Bench-201 strategy benchmark (``benchmarks/nasbench201``: ``kubenas benchmark`` or
``python -m benchmarks.nasbench201``). Not part of the product: nothing in ``kubenas`` imports
them but the CLI's ``benchmark`` subcommand, from a source checkout."""
