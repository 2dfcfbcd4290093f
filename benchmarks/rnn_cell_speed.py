"""Tokens per second of the searched recurrent cell against torch.nn.LSTM on CPU.

Forward + backward of one layer over a (seq, batch, hidden) input, equal hidden size, same
batch and sequence length; the loss is the sum of the outputs. Cells: torch.nn.LSTM (fused
kernel), the LSTM expressed in the tree space (base 8), the published NASCell (base 8), the
Figure 5 cell (base 2), each eager and, where TorchScript still works, scripted.

    .venv/bin/python benchmarks/rnn_cell_speed.py [--hidden 200] [--batch 20] [--seq 35]
                                                  [--threads 1] [--seconds 3]
Prints one line per cell (tokens/s, ms per sequence, ratio to torch.nn.LSTM) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from kubenas.trainer.builders.rnn_cell import RNNTreeLayer, figure5_cell, lstm_cell, nas_cell


class _TorchLSTM(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(hidden, hidden)

    def forward(self, x):
        return self.lstm(x)[0]


class _Tree(torch.nn.Module):
    def __init__(self, arch, hidden: int) -> None:
        super().__init__()
        self.layer = RNNTreeLayer(arch, hidden, hidden)

    def forward(self, x):
        return self.layer(x, self.layer.init_state(x.size(1)))[0]


def _time(module, x, seconds: float) -> float:
    """Median seconds per forward+backward over repeated runs."""
    for _ in range(3):  # warm-up (and TorchScript's profiling runs)
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    times = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 5:
        t0 = time.perf_counter()
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seq", type=int, default=35)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0, help="timing budget per cell")
    p.add_argument("--no-script", action="store_true", help="skip the TorchScript variants")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    H, N, T = args.hidden, args.batch, args.seq
    x = torch.randn(T, N, H)
    cells = [("torch.nn.LSTM", _TorchLSTM(H))]
    for name, make in (("tree LSTM (base 8)", lstm_cell), ("NASCell (base 8)", nas_cell),
                       ("Figure 5 (base 2)", figure5_cell)):
        cells.append((name, _Tree(make(), H)))
        if not args.no_script:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    cells.append((name + " scripted", torch.jit.script(_Tree(make(), H))))
                except Exception as exc:  # noqa: BLE001 - TorchScript is optional
                    print(f"{name}: TorchScript unavailable ({type(exc).__name__})")
    rows = []
    base = None
    print(f"CPU, {args.threads} thread(s), hidden {H}, batch {N}, seq {T}, forward+backward")
    for name, module in cells:
        params = sum(p.numel() for p in module.parameters())
        s = _time(module, x, args.seconds)
        tps = T * N / s
        base = base or tps
        rows.append({"cell": name, "tokens_per_second": round(tps), "ms_per_sequence": round(1e3 * s, 2),
                     "relative_to_torch_lstm": round(tps / base, 3), "parameters": params})
        print(f"{name:32s} {tps:10.0f} tok/s  {1e3 * s:8.2f} ms  x{tps / base:5.2f}  {params:,} params")
    summary = {"device": "cpu", "threads": args.threads, "hidden": H, "batch": N, "seq": T,
               "torch": torch.__version__, "results": rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
