"""Enumerate the official ONNX backend tests as (name, callable) pairs through minicc's adapter.

Kinds: node, simple, pytorch-converted, pytorch-operator, and 'real', whose entries are the light
models shipped with onnx (no download). CUDA variants are left out until the adapter has a GPU path.
"""

from __future__ import annotations

import unittest
from typing import Callable

import onnx.backend.test

from minicc.backend import MiniccBackend

_CACHE: dict[str, Callable[[], None]] | None = None


def backend_tests() -> dict[str, Callable[[], None]]:
    """name -> zero-argument function running that test (raises on failure)."""
    global _CACHE
    if _CACHE is None:
        bt = onnx.backend.test.BackendTest(MiniccBackend, __name__)
        out: dict[str, Callable[[], None]] = {}
        for cls in bt.test_cases.values():
            for meth in unittest.TestLoader().getTestCaseNames(cls):
                if not meth.endswith("_cpu"):
                    continue
                out[meth] = _runner(cls, meth)
        _CACHE = out
    return _CACHE


def _runner(cls: type, meth: str) -> Callable[[], None]:
    def run() -> None:
        getattr(cls(meth), meth)()
    return run
