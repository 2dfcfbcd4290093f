"""Field checks shared by every spec parser (experiment, trainer, space and strategy options,
architecture description).

Each check takes the value and ``where``, the dotted path of the field in the whole document
(``spec.search.strategyOptions.learningRate``), and returns the value or raises
``ContractError`` with a message that starts with that path:

    spec.budget.maxTrials: must be an integer >= 1, got 0
    spec.controller.replicas: must be an integer <= 16, got 40
    spec.search.strategyOptions.lerningRate: unknown option (did you mean 'learningRate'?)

``resolve(options, defaults, where)`` is the table-driven form used by spaces and strategies:
the type of each default is the type the option must have (module docstring of
``resolve``). Stdlib only: the contracts are leaves, the operator imports this without torch.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from typing import Any, Iterable, Mapping, NoReturn, Optional

from kubenas.contracts.errors import ContractError

# Documents nest a few levels (spec.search.spaceOptions.curriculum); anything far deeper is
# an accident or an attack, and refusing it early keeps recursion (deepcopy, YAML) safe.
MAX_DEPTH = 32


def fail(where: str, msg: str) -> NoReturn:
    raise ContractError(f"{where}: {msg}" if where else msg)


def require(condition: bool, where: str, msg: str) -> None:
    """``fail`` unless ``condition``: for rules no typed check below expresses."""
    if not condition:
        fail(where, msg)


def child(where: str, key: Any) -> str:
    """The path of ``key`` inside ``where``."""
    return f"{where}.{key}" if where else str(key)


def item(where: str, index: int) -> str:
    return f"{where}[{index}]"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a finite float (YAML's .nan / .inf are not numbers a spec can mean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return is_int(value) or math.isfinite(value)


def mapping(value: Any, where: str, required: bool = False) -> dict:
    """A mapping (a shallow copy); None is ``{}`` unless ``required``."""
    if value is None:
        if required:
            fail(where, "is required")
        return {}
    if not isinstance(value, Mapping):
        fail(where, f"must be a mapping, got {type(value).__name__}")
    return dict(value)


def refuse_unknown(doc: Mapping, known: Iterable[str], where: str, what: str = "field",
                   extra_hint: str = "") -> None:
    """Every key of ``doc`` is one of ``known``; else name it, with a "did you mean"."""
    known = list(known)
    for key in doc:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = (f"did you mean {close[0]!r}?" if close else
                f"known: {', '.join(sorted(known)) or 'none'}{extra_hint}")
        fail(child(where, key), f"unknown {what} ({hint})")


def _num(value: float) -> str:
    return str(value) if is_int(value) else f"{value:g}"


def _bounds_text(kind: str, minimum, maximum, min_exclusive: bool, max_exclusive: bool) -> str:
    if minimum is not None and maximum is not None:
        lo, hi = "(" if min_exclusive else "[", ")" if max_exclusive else "]"
        return f"{kind} in {lo}{_num(minimum)}, {_num(maximum)}{hi}"
    if minimum is not None:
        return f"{kind} {'>' if min_exclusive else '>='} {_num(minimum)}"
    if maximum is not None:
        return f"{kind} {'<' if max_exclusive else '<='} {_num(maximum)}"
    return kind


def integer(value: Any, where: str, minimum: Optional[int] = None,
            maximum: Optional[int] = None) -> int:
    """An integer (not a bool) within ``[minimum, maximum]``."""
    if not is_int(value) or (minimum is not None and value < minimum):
        fail(where, f"must be {_bounds_text('an integer', minimum, None, False, False)}, "
                    f"got {_short(value)}")
    if maximum is not None and value > maximum:
        fail(where, f"must be an integer <= {maximum}, got {value!r}")
    return value


def number(value: Any, where: str, minimum: Optional[float] = None,
           maximum: Optional[float] = None, min_exclusive: bool = False,
           max_exclusive: bool = False) -> float:
    """A finite number (int or float, not a bool) within the bounds; returned as a float."""
    ok = is_number(value)
    if ok and minimum is not None:
        ok = value > minimum if min_exclusive else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if max_exclusive else value <= maximum
    if not ok:
        what = _bounds_text("a number", minimum, maximum, min_exclusive, max_exclusive)
        fail(where, f"must be {what}, got {_short(value)}")
    return float(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        fail(where, f"must be true or false, got {value!r}")
    return value


def string(value: Any, where: str, pattern: Optional[str] = None,
           max_length: Optional[int] = None, what: str = "a non-empty string") -> str:
    """A non-empty string, optionally matching ``pattern`` (full match) and not too long."""
    ok = isinstance(value, str) and value != ""
    ok = ok and (max_length is None or len(value) <= max_length)
    ok = ok and (pattern is None or re.fullmatch(pattern, value) is not None)
    if not ok:
        fail(where, f"must be {what}, got {_short(value)}")
    return value


def choice(value: Any, allowed: Iterable, where: str) -> Any:
    allowed = list(allowed)
    if not _hashable(value) or value not in allowed:
        fail(where, f"must be one of {allowed}, got {_short(value)}")
    return value


def sequence(value: Any, where: str, max_items: Optional[int] = None) -> list:
    """A list (None is ``[]``), at most ``max_items`` long."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        fail(where, f"must be a list, got {type(value).__name__}")
    if max_items is not None and len(value) > max_items:
        fail(where, f"must have at most {max_items} entries, got {len(value)}")
    return list(value)


def choice_list(values: Any, where: str, allowed: Optional[Iterable] = None,
                positive_int: bool = False, max_items: int = 64,
                maximum: Optional[int] = None) -> list:
    """A non-empty list of distinct choices, each one of ``allowed`` or a positive integer
    (at most ``maximum``)."""
    values = sequence(values, where, max_items=max_items)
    if not values:
        fail(where, "must list at least one choice")
    for i, v in enumerate(values):
        if positive_int:
            integer(v, item(where, i), minimum=1, maximum=maximum)
        if allowed is not None:
            choice(v, allowed, item(where, i))
    if len(set(values)) != len(values):
        fail(where, f"choices must be distinct, got {values}")
    return values


def check_depth(doc: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse documents nested deeper than ``limit`` (iteratively: no recursion to blow)."""
    stack = [(doc, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > limit:
            fail(path, f"nested deeper than {limit} levels")
        if isinstance(node, Mapping):
            stack.extend((v, child(path, k), depth + 1) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, item(path, i), depth + 1) for i, v in enumerate(node))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut short: a message must name the field, not echo a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({type(value).__name__})"


def resolve(options: Optional[Mapping], defaults: Mapping, where: str) -> dict:
    """``defaults`` overridden by ``options``; unknown keys and wrong types raise.

    The type of each default is the type the option must have: a bool default takes only
    true/false, an int default only integers, a float or None default a number (None: or
    null), a str default a string, a list default a list, a mapping default a mapping
    resolved the same way. Range checks that depend on meaning stay with the owner."""
    options = mapping(options, where)
    refuse_unknown(options, defaults, where, what="option")
    out = copy.deepcopy(dict(defaults))
    for key, value in options.items():
        out[key] = _resolve_one(value, defaults[key], child(where, key))
    return out


def _resolve_one(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, Mapping):
        return resolve(value, default, where)
    if isinstance(default, bool):
        return boolean(value, where)
    if is_int(default):
        return integer(value, where)
    if isinstance(default, float) or default is None:
        if value is None and default is None:
            return None
        return number(value, where)
    if isinstance(default, str):
        if not isinstance(value, str):
            fail(where, f"must be a string, got {_short(value)}")
        return value
    if isinstance(default, list):
        if value is None:
            fail(where, "must be a list, got None")
        return sequence(value, where)
    raise TypeError(f"unsupported default type for {where}: {type(default).__name__}")
