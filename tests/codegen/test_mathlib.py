"""minicc's vectorized f32 math (codegen/llvm/mathlib.py) over a dense sweep of each function's
range and its special values, compiled, against numpy in float64: the ulp budget the op tests
grant transcendental ops (rtol 2e-6, atol 2 ulp at 1.0), and IEEE behaviour at +-inf, NaN,
+-0 and past the clamps (exp overflow and underflow, sigmoid's denormal tail)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import minicc

SPECIALS = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.7, -88.7, 89.0, -89.0, -87.4,
                     -104.0, 1e-30, -1e-30, 1e30, -1e30], np.float32)
REFS = {
    "Exp": np.exp,
    "Log": np.log,
    "Tanh": np.tanh,
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "Erf": None,          # scipy-free: math.erf per element
    "Softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0),
}
RANGES = {"Exp": (-90.0, 90.0), "Log": (1e-30, 1e30), "Tanh": (-12.0, 12.0),
          "Sigmoid": (-100.0, 100.0), "Erf": (-6.0, 6.0), "Softplus": (-60.0, 60.0)}


def _ref(op: str, x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if op == "Erf":
            import math
            y = np.array([math.erf(v) if np.isfinite(v) else
                          (np.sign(v) if not np.isnan(v) else np.nan) for v in x64])
        else:
            y = REFS[op](x64)
        return y.astype(np.float32)


def _model(op: str, n: int):  # type: ignore[no-untyped-def]
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"])], op.lower(),
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", list(REFS))
def test_math_matches_float64_numpy_over_its_range_and_at_special_values(op: str) -> None:
    lo, hi = RANGES[op]
    if op == "Log":
        sweep = np.geomspace(lo, hi, 20011)
    else:
        sweep = np.linspace(lo, hi, 20011)
    x = np.concatenate([sweep.astype(np.float32), SPECIALS])
    x = np.concatenate([x, np.zeros((-len(x)) % 16, np.float32)])   # whole vectors and a tail
    cm = minicc.compile(_model(op, len(x)), threads=1, cache=False)
    got = cm.run({"x": x})["y"]
    ref = _ref(op, x)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{op}: NaN lanes")
        inf = np.isinf(ref)
        np.testing.assert_array_equal(got[inf], ref[inf], err_msg=f"{op}: infinities")
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=2e-6, atol=2 * 2.0 ** -23,
                               err_msg=f"{op}: finite results")


def test_silu_at_minus_infinity_is_nan_as_ieee_gives_it() -> None:
    """x * sigmoid(x): sigmoid(-inf) must be an exact 0 (not the denormal the clamped exp
    would give), so the product is NaN as in numpy and onnxruntime."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"],
                                                                         ["y"])]
    g = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [16])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [16])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([-np.inf, -200.0, -90.0, 0.0] + [1.0] * 12, np.float32)
    y = minicc.compile(m, threads=1, cache=False).run({"x": x})["y"]
    assert np.isnan(y[0]) and y[1] == 0.0 and y[2] == 0.0 and y[3] == 0.0


def test_vector_constants_print_short_and_are_made_once() -> None:
    """vconst: one object per type and value (llvmlite formats each new vector constant lane by
    lane), an undef vector printed as `undef`."""
    from llvmlite import ir

    from minicc.codegen.llvm.mathlib import vconst

    f16, i32 = ir.VectorType(ir.FloatType(), 16), ir.VectorType(ir.IntType(32), 8)
    assert str(vconst(f16, ir.Undefined)) == "<16 x float> undef"
    assert str(vconst(i32, 0)) == str(vconst(i32, [0] * 8)) == "<8 x i32> <" + ", ".join(
        ["i32 0"] * 8) + ">"
    assert str(vconst(f16, -0.0)) != str(vconst(f16, 0.0))
    assert str(vconst(i32, list(range(8)))).startswith("<8 x i32> <i32 0, i32 1, i32 2")
    assert vconst(f16, 1.5) is vconst(f16, 1.5)
    assert vconst(f16, ir.Undefined) is not vconst(ir.VectorType(ir.FloatType(), 8),
                                                   ir.Undefined)
