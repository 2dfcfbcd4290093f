"""``python -m benchmarks.nasbench201 --out DIR ...``: the same as ``kubenas benchmark``."""

import sys

from benchmarks.nasbench201.benchmark import main

sys.exit(main())
