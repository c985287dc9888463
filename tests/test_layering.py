"""Imports only go downstream: frontend -> ir -> codegen -> runtime, with minicc/ on top.

ir/ imports nothing from frontend/, codegen/, runtime/ or the driver, only the shared leaf modules
(minicc.errors, minicc.env, minicc.options, minicc.abi, minicc.resources, minicc.lazytypes); codegen/
may use runtime/'s host target
description; runtime/ does not import ir/ at all (it consumes artifacts). `from minicc import X`
is an import of the driver too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = {"frontend": "minicc.frontend", "ir": "minicc.ir", "codegen": "minicc.codegen",
       "runtime": "minicc.runtime"}
SHARED = {"minicc.errors", "minicc.env", "minicc.options", "minicc.abi", "minicc.resources",
          "minicc.lazytypes"}
FORBIDDEN = {
    "ir": ["minicc.frontend", "minicc.codegen", "minicc.runtime"],
    "codegen": ["minicc.frontend"],
    "runtime": ["minicc.frontend", "minicc.ir", "minicc.codegen"],
    "frontend": ["minicc.codegen", "minicc.runtime"],
}


def _imports(path: Path) -> list[str]:
    """Every module a file imports; `from minicc import X` counts as importing minicc.X."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "minicc":
                out += [f"minicc.{a.name}" for a in node.names]
            else:
                out.append(node.module)
    return out


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_go_downstream(folder: str) -> None:
    bad = []
    for f in sorted((ROOT / folder).rglob("*.py")):
        for mod in _imports(f):
            if mod in SHARED:
                continue
            if any(mod == p or mod.startswith(p + ".") for p in FORBIDDEN[folder]):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
            # the driver (minicc.<module> that is not a layer package) is upstream of all layers
            if (mod == "minicc" or mod.startswith("minicc.")) and mod not in SHARED and \
                    (mod == "minicc" or mod.split(".")[1] not in PKG):
                bad.append(f"{f.relative_to(ROOT)} imports the driver module {mod}")
    assert not bad, "\n".join(bad)


def test_driver_imports_are_caught(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("from minicc import __version__\nimport minicc\nfrom minicc.abi import Location\n")
    assert _imports(f) == ["minicc.__version__", "minicc", "minicc.abi"]


def test_shared_modules_are_leaves() -> None:
    """The shared modules import nothing of minicc but each other and the errors."""
    for name in SHARED:
        f = ROOT / "minicc" / (name.split(".")[1] + ".py")
        bad = [m for m in _imports(f) if m.startswith("minicc") and m not in SHARED]
        assert not bad, f"{name} imports {bad}"


def test_no_bare_exceptions_in_library_code() -> None:
    bad = []
    for folder in PKG:
        for f in sorted((ROOT / folder).rglob("*.py")):
            if "raise Exception(" in f.read_text():
                bad.append(str(f.relative_to(ROOT)))
    assert not bad, f"raise a MiniccError subclass instead of Exception in: {bad}"


def test_every_package_is_listed_in_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for folder, pkg in PKG.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            sub = init.parent.relative_to(ROOT / folder).parts
            name = ".".join((pkg,) + sub)
            assert f'"{name}"' in text, f"{name} is missing from pyproject's packages list"
