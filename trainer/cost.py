"""What a child cost: the device it trained on and the wall time from its start to its result.

The clock starts when this process started (read from /proc, so the interpreter's and torch's
start-up count too: they are paid for) or, when ``KUBENAS_STARTED_AT`` holds epoch seconds,
then: a launcher that hands trials to a process it did not start for them (a warm worker)
sets it per trial. In a Kubernetes pod the trainer is the pod's process, so its start is the
pod's to within the container runtime's start-up. A resumed child adds what the attempts
before it had spent up to their last checkpoint (kept in it); the time between a killed
attempt's last checkpoint and its death is not known and not counted.
"""

from __future__ import annotations

import logging
import os
import time

from kubenas.contracts import Cost

log = logging.getLogger("kubenas.trainer")

STARTED_AT_ENV = "KUBENAS_STARTED_AT"
_IMPORTED_AT = time.time()   # the fallback clock where /proc cannot be read


def process_started_at() -> float:
    """Epoch seconds at which this process started (Linux), else when this module loaded."""
    try:
        with open("/proc/self/stat") as fh:
            # fields after the command's ")": state is field 3, starttime (clock ticks
            # since boot) field 22
            ticks = int(fh.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def started_at() -> tuple[float, str]:
    """When this child's clock started, and what started it. A malformed variable is the
    launcher's bug: the process clock stands in (a trained child is never lost for it)."""
    raw = os.environ.get(STARTED_AT_ENV)
    if raw:
        try:
            return float(raw), STARTED_AT_ENV
        except ValueError:
            log.warning("%s=%r is not epoch seconds; timing from the process start",
                        STARTED_AT_ENV, raw)
    return process_started_at(), "process"


def attempt_seconds() -> float:
    """Wall seconds since this attempt's clock started."""
    return max(0.0, time.time() - started_at()[0])


def measure_cost(earlier_seconds: float = 0.0) -> Cost:
    """This child's cost so far, plus ``earlier_seconds`` that killed attempts before it had
    spent (up to their last checkpoint). A GPU counts when CUDA was initialised in this
    process (a model or tensor went to it); then every GPU the process can see is held."""
    start, clock = started_at()
    wall = round(earlier_seconds + max(0.0, time.time() - start), 3)
    import torch

    if not torch.cuda.is_initialized():
        return Cost(device="cpu", wall_seconds=wall, clock=clock)
    return Cost(device="cuda", wall_seconds=wall, gpu_count=torch.cuda.device_count(),
                gpu_name=torch.cuda.get_device_name(torch.cuda.current_device()), clock=clock)


__all__ = ["STARTED_AT_ENV", "attempt_seconds", "measure_cost", "process_started_at",
           "started_at"]
