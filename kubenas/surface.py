"""A room's public surface: the names its package gives code outside the room.

Each room's ``__init__`` lists its surface as ``name -> "module:attribute"`` and hands the
list to ``lazy_surface``, which gives the package a module ``__getattr__`` (PEP 562): a name
is imported from its module the first time it is read, so importing the package loads none
of them (``kubenas.operator`` never loads torch, ``kubenas.controller`` not the policy until
it is used). Outside code writes ``from kubenas.controller import SearchLoop``; import-linter
refuses ``from kubenas.controller.loop import SearchLoop`` there (rooms-used-through-their-surface).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_surface(namespace: dict, surface: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of the package whose globals are ``namespace``: ``surface[name]`` is
    ``"module:attribute"``, the module relative to the package."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        try:
            module, _, attribute = surface[name].partition(":")
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f"{package}.{module}"), attribute)
        namespace[name] = value     # read once: the next read is a plain global
        return value

    return __getattr__
