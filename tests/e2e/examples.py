"""Load scripts of examples/ as modules (the examples folder is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_module(name: str) -> Any:
    """examples/<name>.py, loaded once (as `torch_models` for that one, which the others
    import by that name)."""
    key = name if name == "torch_models" else f"minicc_example_{name}"
    if key in sys.modules:
        return sys.modules[key]
    pytest.importorskip("torch")        # the model scripts build their models with PyTorch
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


def torch_models() -> Any:
    return example_module("torch_models")
