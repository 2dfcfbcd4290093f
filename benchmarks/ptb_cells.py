"""Validation and test perplexity on Penn Treebank of small 2-layer language models built on
different cells, at roughly equal parameter counts and the same training budget.

Cells: torch.nn.LSTM (reference), the LSTM expressed in the tree space (base 8), the published
NASCell (base 8), and optionally a given cell (``--cell FILE``: an Architecture JSON, e.g. the
``best_architecture.json`` a search writes). Every model uses tied input/output embeddings
(so embedding size = hidden size), and its hidden size is chosen so that its total parameter
count is as close as possible to ``--params`` (the paper's §4.2 "hidden units adjusted so that
the total number of learnable parameters approximately match").

Training: ``kubenas.trainer.lm_train.fit`` with the given epochs x ``--max-tokens`` training tokens
(SGD lr 20, clip 0.25, lr / 4 on a validation plateau), validation during training on
``--val-tokens`` tokens; then ``evaluate_test`` on the *full* validation and test splits with
the best-validation weights (the only place the test split is read).

    .venv/bin/python benchmarks/ptb_cells.py [--cell runs/ptb-cells/best_architecture.json]
        [--params 800000] [--epochs 4] [--max-tokens 120000] [--threads 1] [--only lstm,nascell]
Prints a table and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from kubenas.contracts import Architecture
from kubenas.trainer.builders.language_model import LanguageModel
from kubenas.trainer.builders.rnn_cell import lstm_cell, nas_cell
from kubenas.trainer.data.ptb import load_ptb
from kubenas.trainer.errors import ChildFailure
from kubenas.trainer.lm_child import evaluate_test
from kubenas.trainer.lm_config import LMConfig
from kubenas.trainer.lm_train import fit


class TorchLSTMLayer(nn.Module):
    """torch.nn.LSTM behind RNNTreeLayer's interface (no recurrent dropout: fused kernel)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size)

    def forward(self, x, state, h_mask=None):
        out, (h, c) = self.lstm(x, (state[0][None], state[1][None]))
        return out, (h[0], c[0])


def torch_lstm_model(vocab: int, cfg: LMConfig) -> LanguageModel:
    model = LanguageModel.from_config(lstm_cell(), vocab, cfg)  # then swap the layers
    model.rnns = nn.ModuleList([TorchLSTMLayer(cfg.embedding_size if i == 0 else cfg.hidden_size,
                                               cfg.hidden_size) for i in range(cfg.layers)])
    for p in model.rnns.parameters():
        nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
    return model


def make_model(kind, arch, vocab: int, cfg: LMConfig) -> LanguageModel:
    return torch_lstm_model(vocab, cfg) if kind == "torch" else LanguageModel.from_config(arch, vocab, cfg)


def hidden_for(kind, arch, vocab: int, base_cfg: dict, target: int) -> int:
    """The hidden size whose model's parameter count is closest to ``target``."""
    def count(h: int) -> int:
        cfg = LMConfig.from_dict(dict(base_cfg, hiddenSize=h, embeddingSize=h))
        with torch.device("meta"):
            return make_model(kind, arch, vocab, cfg).num_parameters()
    lo, hi = 4, 4096
    while hi - lo > 1:                       # parameter count grows with h
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(count(h) - target))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", help="an Architecture JSON file (rnn_cell) to compare as well")
    p.add_argument("--params", type=int, default=800_000, help="target parameter count per model")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=120_000, help="training tokens per epoch")
    p.add_argument("--val-tokens", type=int, default=20_000, help="validation tokens during training")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="comma-separated subset of: lstm, tree-lstm, nascell, cell")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    corpus = load_ptb(include_test=True)
    base_cfg = {"epochs": args.epochs, "batchSize": args.batch, "bptt": args.bptt,
                "layers": args.layers, "dropout": args.dropout, "embeddingDropout": 0.0,
                "recurrentDropout": 0.0, "tieWeights": True, "learningRate": args.lr,
                "maxTokens": args.max_tokens, "maxEvalTokens": args.val_tokens,
                "seed": args.seed, "maxParameters": None}
    models = [("lstm", "torch.nn.LSTM", "torch", None),
              ("tree-lstm", "LSTM in the tree (base 8)", "tree", lstm_cell()),
              ("nascell", "NASCell (base 8)", "tree", nas_cell())]
    if args.cell:
        arch = Architecture.from_json(Path(args.cell).read_text(), where=args.cell)
        models.append(("cell", f"{Path(args.cell).name} (base {arch.spec['base']})", "tree", arch))
    if args.only:
        keep = set(args.only.split(","))
        models = [m for m in models if m[0] in keep]

    rows = []
    print(f"PTB, {corpus.vocab_size} words; {args.layers} layers, tied embeddings, ~{args.params:,} "
          f"parameters; {args.epochs} epochs x {args.max_tokens:,} tokens; CPU, {args.threads} threads")
    for key, name, kind, arch in models:
        h = hidden_for(kind, arch, corpus.vocab_size, base_cfg, args.params)
        cfg = LMConfig.from_dict(dict(base_cfg, hiddenSize=h, embeddingSize=h))
        torch.manual_seed(args.seed)
        model = make_model(kind, arch, corpus.vocab_size, cfg)
        t0 = time.perf_counter()
        status, reason = "ok", None
        try:
            st, best = fit(model, corpus, cfg)
            model.load_state_dict(best)
            train_s = time.perf_counter() - t0
            res = evaluate_test(model, cfg, corpus=corpus)
        except ChildFailure as exc:
            status, reason, res, train_s = "failed", str(exc), {}, time.perf_counter() - t0
            st = None
        row = {"model": name, "hidden": h, "parameters": model.num_parameters(), "status": status,
               "val_perplexity": res.get("val_perplexity"), "test_perplexity": res.get("test_perplexity"),
               "val_perplexity_per_epoch": [round(m.extra["val_perplexity"], 2) for m in st.metrics] if st else [],
               "train_seconds": round(train_s, 1),
               "train_tokens_per_second": round(st.metrics[-1].extra["tokens_per_second"]) if st else None,
               "reason": reason}
        rows.append(row)
        if status == "ok":
            print(f"{name:34s} h={h:4d} {row['parameters']:>10,} params  val {row['val_perplexity']:8.2f}  "
                  f"test {row['test_perplexity']:8.2f}  ({train_s:.0f}s, {row['train_tokens_per_second']} tok/s)")
        else:
            print(f"{name:34s} h={h:4d} {row['parameters']:>10,} params  FAILED: {reason}")
    summary = {"dataset": "ptb", "epochs": args.epochs, "max_tokens": args.max_tokens,
               "target_parameters": args.params, "threads": args.threads, "results": rows}
    print(json.dumps(summary, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else v))
    return summary


if __name__ == "__main__":
    main()
