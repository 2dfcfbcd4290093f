"""Each room's public surface (its ``__init__``'s ``SURFACE``): every name resolves, and
importing a room's package loads none of its modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

ROOMS = ("kubenas.controller", "kubenas.trainer", "kubenas.operator")


@pytest.mark.parametrize("room", ROOMS)
def test_every_name_of_the_surface_resolves(room):
    if room != "kubenas.operator":
        pytest.importorskip("torch")
    else:
        pytest.importorskip("kubernetes")
    package = importlib.import_module(room)
    assert sorted(package.SURFACE) == package.__all__
    for name, target in package.SURFACE.items():
        module, _, attribute = target.partition(":")
        assert getattr(package, name) is getattr(importlib.import_module(f"{room}.{module}"),
                                                 attribute), name
    with pytest.raises(AttributeError, match="no attribute 'nothing_of_that_name'"):
        getattr(package, "nothing_of_that_name")


def test_importing_the_rooms_loads_none_of_their_modules():
    code = ("import sys, kubenas.controller, kubenas.trainer, kubenas.operator\n"
            "print(sorted(m for m in sys.modules if m.startswith(('kubenas.controller.', "
            "'kubenas.trainer.', 'kubenas.operator.')) or m in ('torch', 'kubernetes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
