"""The rooms live at the top level and are imported only as ``kubenas.<room>``.

``kubenas/{controller,trainer,operator}`` are symlinks to the top-level folders (docs/design.md,
"Where the code lives", says why). Tests, benchmarks and devenv scripts put the repository root
on ``sys.path`` so that ``tests.`` and ``devenv.`` import; with it there, ``import controller``
would load a second copy of the search room whose classes are not the first copy's. These
tests keep that from happening: statically (no file imports a room by its bare name) and at run
time (importing every kubenas module loads no bare-named room)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOMS = ("controller", "trainer", "operator")
# Where Python files live; .venv and caches are not ours.
SOURCE_DIRS = ("kubenas", "controller", "trainer", "operator", "tests", "benchmarks", "devenv",
               "scripts")


def _python_files():
    for top in SOURCE_DIRS:
        for path in (REPO / top).rglob("*.py"):
            parts = path.relative_to(REPO).parts
            if not (parts[0] == "kubenas" and parts[1] in ROOMS):   # the links: seen at the top
                yield path


# operator/'s own module and package names: `from operator import reconciler` is the room's,
# `from operator import itemgetter` the standard library's.
OPERATOR_OWN = {p.stem for p in (REPO / "operator").glob("*.py")} | \
    {p.name for p in (REPO / "operator").iterdir() if p.is_dir()}


def _bare_room_imports(source: str, label: str) -> list[str]:
    """``import controller...``/``from trainer... import``; for ``operator``, which is also the
    standard library's, only a name that is one of the room's own modules."""
    bad = []
    for node in ast.walk(ast.parse(source, label)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                head, _, rest = alias.name.partition(".")
                if head in ("controller", "trainer") or (head == "operator" and rest):
                    bad.append(f"{label}:{node.lineno} import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            head, _, rest = node.module.partition(".")
            names = {a.name for a in node.names}
            if head in ("controller", "trainer") or \
                    (head == "operator" and (rest or names & OPERATOR_OWN)):
                bad.append(f"{label}:{node.lineno} from {node.module} import ...")
    return bad


def test_the_rooms_are_the_top_level_folders_linked_into_kubenas():
    for room in ROOMS:
        link = REPO / "kubenas" / room
        assert link.is_symlink(), f"kubenas/{room} must be a symlink to ../{room}"
        assert os.readlink(link) == f"../{room}", os.readlink(link)
        assert (REPO / room / "__init__.py").is_file()


def test_no_file_imports_a_room_by_its_bare_name():
    files = list(_python_files())
    assert len(files) > 100, "the scan found too few files to mean anything"
    bad = [hit for path in files
           for hit in _bare_room_imports(path.read_text(), str(path.relative_to(REPO)))]
    assert bad == [], "import the rooms as kubenas.<room>: " + "; ".join(bad)


def test_the_scan_sees_a_bare_import():
    """Guard against a scan that passes everything."""
    hits = _bare_room_imports("import controller.loop\nfrom trainer import train\n"
                              "from operator import reconciler\nfrom operator import itemgetter\n",
                              "probe.py")
    assert len(hits) == 3, hits   # itemgetter is the standard library's


def test_importing_every_module_loads_each_room_once():
    """With the repository root first on sys.path (as under pytest), walking every kubenas
    module leaves no bare ``controller``/``trainer`` module and the standard ``operator``."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import kubenas\n"
        "names = [m.name for m in pkgutil.walk_packages(kubenas.__path__, 'kubenas.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "bare = sorted(m for m in sys.modules if m.split('.')[0] in ('controller', 'trainer')\n"
        "              or m.startswith('operator.'))\n"
        "assert not bare, bare\n"
        "import operator\n"
        "assert hasattr(operator, 'itemgetter') and not hasattr(operator, 'reconciler'), operator\n"
        "assert all(r in sys.modules for r in ('kubenas.controller.loop', 'kubenas.trainer.train',"
        " 'kubenas.operator.reconciler'))\n"
        "print(len(names))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 50
