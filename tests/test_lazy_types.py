"""ml_dtypes (0.7 s to import) loads only when a storage-only type is needed: a warm
`minicc compile` is a cache hit and an artifact write, and need not pay for it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from minicc.ir.types import DType
from minicc.lazytypes import LazyTypes


def test_importing_minicc_and_its_cli_does_not_import_ml_dtypes() -> None:
    code = ("import sys, minicc, minicc.cli, minicc.runtime.checks; "
            "print('ml_dtypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_storage_only_types_still_map_both_ways() -> None:
    import ml_dtypes

    assert DType.BF16.np == np.dtype(ml_dtypes.bfloat16)
    assert DType.from_np(ml_dtypes.float8_e4m3fn) == DType.F8E4M3FN
    assert DType.from_np(np.float32) == DType.F32
    from minicc.runtime.checks import NP_DTYPES

    assert NP_DTYPES["i4"] is ml_dtypes.int4 and "u2" in NP_DTYPES


def test_a_lazy_table_fills_on_the_first_lookup_it_cannot_answer() -> None:
    calls = []
    t = LazyTypes({"a": 1}, lambda md: calls.append(md) or {"b": 2})
    assert t["a"] == 1 and not calls
    assert t.get("b") == 2 and len(calls) == 1
    assert t.get("c", 3) == 3 and sorted(t) == ["a", "b"] and len(calls) == 1
