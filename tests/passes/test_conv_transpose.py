"""conv_transpose_as_conv (ir/passes/conv_transpose.py): a transposed conv whose kernel equals
its stride becomes a 1x1 conv and a depth-to-space shuffle. Differential: the rewritten graph
against the op's reference and onnxruntime-independent numpy, interpreted and compiled; the
cases it must leave alone stay conv_transpose."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicc import CompileOptions, compile
from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Module
from minicc.ir.interpret import interpret
from minicc.ir.passes.conv_transpose import conv_transpose_as_conv
from minicc.ir.registry import OPS, canonical_attrs, full_attrs
from minicc.ir.types import TensorType


def _model(xs: tuple[int, ...], ws: tuple[int, ...], attrs: dict, bias: bool, seed: int = 0
           ) -> tuple[Module, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    arrays = [rng.standard_normal(ws).astype(np.float32)]
    if bias:
        arrays.append(rng.standard_normal(ws[1] * attrs.get("group", 1)).astype(np.float32))
    b = GraphBuilder("main")
    xi = b.input(TensorType.of(x), "x")
    y = b.op1("conv_transpose", [xi] + [b.const(a, n) for a, n in zip(arrays, ("w", "b"))],
              attrs, name="y")
    return Module((b.finish([y], ["y"]),)), x, [x] + arrays


def _reference(args: list[np.ndarray], attrs: dict) -> np.ndarray:
    at = full_attrs("conv_transpose", canonical_attrs("conv_transpose", attrs))
    return OPS["conv_transpose"].reference(args, at)[0]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), cin=st.integers(1, 9), cout=st.integers(1, 7),
       h=st.integers(1, 6), w=st.integers(1, 7), k0=st.integers(1, 3), k1=st.integers(1, 3),
       bias=st.booleans())
def test_kernel_equal_to_stride_becomes_a_conv_and_keeps_its_values(
        n: int, cin: int, cout: int, h: int, w: int, k0: int, k1: int, bias: bool) -> None:
    attrs = {"strides": [k0, k1]}
    m, x, args = _model((n, cin, h, w), (cin, cout, k0, k1), attrs, bias)
    f = conv_transpose_as_conv(m.main)
    kinds = [op.kind for op in f.ops]
    assert "conv_transpose" not in kinds and "conv" in kinds
    want = _reference(args, attrs)
    got = interpret(m.with_main(f), {"x": x})["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_rewritten_upsampling_compiles_to_the_reference(threads: int) -> None:
    attrs = {"strides": [2, 2]}
    m, x, args = _model((1, 24, 20, 30), (24, 16, 2, 2), attrs, True, seed=3)
    cm = compile(m, options=CompileOptions(threads=threads, cache=False))
    ops = [o for k in cm.artifact.summary["kernels"] for o in k["ops"]]
    assert "conv" in ops and "conv_transpose" not in ops, ops
    np.testing.assert_allclose(cm.run({"x": x})["y"], _reference(args, attrs), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("attrs,ws", [
    ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, (4, 3, 2, 2)),     # padded
    ({"strides": [2, 2]}, (4, 3, 3, 3)),                            # overlapping windows
    ({"strides": [2, 2], "group": 2}, (4, 3, 2, 2)),                # grouped
    ({"strides": [2, 2], "output_padding": [1, 1]}, (4, 3, 2, 2)),
    ({"strides": [2, 2], "dilations": [2, 2]}, (4, 3, 2, 2)),
])
def test_other_transposed_convs_are_left_alone_and_still_right(attrs: dict, ws: tuple) -> None:
    m, x, args = _model((1, 4, 5, 6), ws, attrs, True, seed=1)
    f = conv_transpose_as_conv(m.main)
    assert [op.kind for op in f.ops if op.kind.startswith("conv")] == ["conv_transpose"]
    cm = compile(m, options=CompileOptions(threads=1, cache=False))
    np.testing.assert_allclose(cm.run({"x": x})["y"], _reference(args, attrs), rtol=1e-4,
                               atol=1e-5)
