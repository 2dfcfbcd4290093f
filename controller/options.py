"""Option dicts from the experiment YAML (camelCase), checked against their defaults.

Every space and strategy declares its options as a dict of defaults; ``resolve`` merges the
user's dict over it and rejects what it cannot use, always naming the field:

    search.strategyOptions.lerningRate: unknown option (known: accumulate, ...)
    search.spaceOptions.curriculum.maxLayers: must be an integer, got 'ten'

The type of each default is the type the option must have (an int default accepts only
ints, a float default accepts ints and floats, a None default accepts a number or null).
Range checks that depend on meaning stay with the owner (see the ``check_*`` helpers).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

from kubenas.contracts import ContractError


def fail(where: str, msg: str) -> None:
    raise ContractError(f"{where}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve(options: Optional[Mapping], defaults: Mapping, where: str) -> dict:
    """``defaults`` overridden by ``options``; unknown keys and wrong types raise ContractError."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        fail(where, f"must be a mapping, got {type(options).__name__}")
    out = copy.deepcopy(dict(defaults))
    for key, value in options.items():
        w = f"{where}.{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            fail(w, f"unknown option (known: {known})")
        default = defaults[key]
        if isinstance(default, Mapping):
            out[key] = resolve(value, default, w)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                fail(w, f"must be true or false, got {value!r}")
            out[key] = value
        elif _is_int(default):
            if not _is_int(value):
                fail(w, f"must be an integer, got {value!r}")
            out[key] = value
        elif isinstance(default, float) or default is None:
            if value is not None and not _is_number(value):
                fail(w, f"must be a number, got {value!r}")
            if value is None and default is not None:
                fail(w, "must be a number, got null")
            out[key] = None if value is None else float(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                fail(w, f"must be a string, got {value!r}")
            out[key] = value
        elif isinstance(default, list):
            if not isinstance(value, (list, tuple)):
                fail(w, f"must be a list, got {value!r}")
            out[key] = list(value)
        else:  # pragma: no cover - a programming error in a defaults table
            raise TypeError(f"unsupported default type for {key}: {type(default).__name__}")
    return out


def check_positive(value: Any, where: str, integer: bool = False, zero_ok: bool = False) -> None:
    ok = _is_int(value) if integer else _is_number(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):
        what = "integer" if integer else "number"
        bound = ">= 0" if zero_ok else "> 0"
        fail(where, f"must be a {what} {bound}, got {value!r}")


def check_choice(value: Any, allowed, where: str) -> None:
    if value not in allowed:
        fail(where, f"must be one of {list(allowed)}, got {value!r}")


def check_choice_list(values: list, where: str, allowed=None, positive_int: bool = False) -> None:
    """A non-empty list of distinct values, each allowed (or a positive integer)."""
    if not values:
        fail(where, "must list at least one choice")
    for i, v in enumerate(values):
        if positive_int and not (_is_int(v) and v > 0):
            fail(f"{where}[{i}]", f"must be a positive integer, got {v!r}")
        if allowed is not None and v not in allowed:
            fail(f"{where}[{i}]", f"must be one of {list(allowed)}, got {v!r}")
    if len(set(values)) != len(values):
        fail(where, f"choices must be distinct, got {values}")
