"""Export a trained child as runnable TorchScript (what ``best_model.pt`` is).

``torch.jit.script`` first (keeps the control flow); if scripting fails, ``torch.jit.trace``
on ``example_input``. Either way the exported module is run once on ``example_input`` and
must match the eager model's output before it is written.

    m = torch.jit.load("best_model.pt"); logits = m(images)   # float NCHW in [0, 1]
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from typing import BinaryIO, Union

import torch
from torch import nn


def to_torchscript(model: nn.Module, example_input: torch.Tensor,
                   atol: float = 1e-4) -> torch.jit.ScriptModule:
    """A CPU, eval-mode TorchScript copy of ``model`` (the original is left untouched)."""
    eager = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    x = example_input.detach().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is marked deprecated; it still works
        try:
            scripted = torch.jit.script(eager)
        except Exception:  # noqa: BLE001 - an unscriptable module: fall back to tracing
            with torch.no_grad():
                scripted = torch.jit.trace(eager, x)
    with torch.no_grad():
        want, got = eager(x), scripted(x)
    if not torch.allclose(want, got, atol=atol, rtol=1e-4):
        raise RuntimeError(f"TorchScript export differs from the eager model by "
                           f"{(want - got).abs().max().item():.3g}")
    return scripted


def export_torchscript(model: nn.Module, example_input: torch.Tensor,
                       path: Union[str, os.PathLike, BinaryIO]) -> torch.jit.ScriptModule:
    """Write ``model`` as TorchScript to ``path`` (a file name or a binary file object)."""
    scripted = to_torchscript(model, example_input)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.save is deprecated"
        torch.jit.save(scripted, path if not isinstance(path, os.PathLike) else os.fspath(path))
    return scripted


def torchscript_bytes(model: nn.Module, example_input: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    export_torchscript(model, example_input, buf)
    return buf.getvalue()


__all__ = ["export_torchscript", "onnx_bytes", "to_torchscript", "torchscript_bytes"]



def onnx_bytes(model: nn.Module, example_input: torch.Tensor, input_name: str = "images") -> bytes:
    """``model`` as ONNX (torch.onnx, the TorchScript-based exporter; input ``input_name``,
    output ``logits``, a dynamic batch dimension: the first of an image batch, the second of
    a (seq, batch) token batch)."""
    eager = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axis = 0 if input_name == "images" else 1
        torch.onnx.export(eager, (example_input.detach().cpu(),), buf, input_names=[input_name],
                          output_names=["logits"], dynamic_axes={input_name: {axis: "batch"},
                                                                 "logits": {axis: "batch"}},
                          dynamo=False)
    return buf.getvalue()
