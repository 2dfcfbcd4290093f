"""Plain-JSON checkpoints of torch objects (tensors, optimizer state, RNG state).

The controller's state lives in object storage as one JSON document, so a strategy's
``state_dict()`` must survive ``json.dumps`` / ``json.loads`` *bit-exactly*: a float32 value
goes out as the Python float that represents it exactly and comes back identical.

Encoding (``to_json`` / ``from_json`` invert each other):
    torch.Tensor      -> {"__tensor__": nested list, "dtype": "float32", "shape": [..]}
    tuple             -> {"__tuple__": [...]}
    dict, non-str keys-> {"__items__": [[key, value], ...]}   (optimizer state is keyed by int)
    bytes             -> {"__bytes__": base64 string}           (RNG states)

torch is imported only when a tensor is met, so torch-free strategies stay torch-free.
"""

from __future__ import annotations

import base64
import random
import sys
from typing import Any


def to_json(obj: Any) -> Any:
    torch = sys.modules.get("torch")  # no torch imported: nothing can be a tensor
    if torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return {"__tensor__": t.tolist(), "dtype": str(t.dtype).removeprefix("torch."),
                "shape": list(t.shape)}
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, tuple):
        return {"__tuple__": [to_json(v) for v in obj]}
    if isinstance(obj, list):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: to_json(v) for k, v in obj.items()}
        return {"__items__": [[to_json(k), to_json(v)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def from_json(obj: Any) -> Any:
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        import torch
        dtype = getattr(torch, obj["dtype"])
        return torch.tensor(obj["__tensor__"], dtype=dtype).reshape(obj["shape"])
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__tuple__" in obj:
        return tuple(from_json(v) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {from_json(k): from_json(v) for k, v in obj["__items__"]}
    return {k: from_json(v) for k, v in obj.items()}


def generator_state(gen) -> dict:
    """A ``torch.Generator``'s state."""
    return to_json(bytes(gen.get_state().tolist()))


def set_generator_state(gen, state: dict) -> None:
    import torch
    gen.set_state(torch.tensor(list(from_json(state)), dtype=torch.uint8))


def random_state(rng: random.Random) -> Any:
    return to_json(rng.getstate())


def set_random_state(rng: random.Random, state: Any) -> None:
    rng.setstate(from_json(state))
