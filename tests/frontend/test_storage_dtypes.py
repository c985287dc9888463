"""The storage-only element types (bf16, the float8 kinds, float4, int4/uint4, int2/uint2):
imported, stored in the arena, reshaped, converted on the host with ONNX Cast's semantics
(saturation included), passed in and out of a compiled model, saved and loaded; arithmetic on
them is refused with an error that names the type."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import minicc
from minicc.errors import MiniccError

TYPES = [TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ,
         TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ, TensorProto.FLOAT4E2M1,
         TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2,
         TensorProto.FLOAT8E8M0]


def _roundtrip(to: int, saturate: int = 1) -> onnx.ModelProto:
    """f32 -> Cast(to) -> Reshape -> Cast(f32), the narrow tensor also an output."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [4, 6])
    nodes = [helper.make_node("Cast", ["x"], ["n"], to=to, saturate=saturate),
             helper.make_node("Reshape", ["n", "shape"], ["r"]),
             helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]
    g = helper.make_graph(nodes, "narrow", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 3, 4])], [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6]),
        helper.make_tensor_value_info("n", to, [2, 3, 4])], [shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)])


@pytest.mark.parametrize("to", TYPES, ids=[TensorProto.DataType.Name(t) for t in TYPES])
def test_a_storage_type_round_trips_as_onnx_reference_casts_it(to: int) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 4)) * 3).astype(np.float32)
    x.flat[:4] = [1e6, -1e6, np.nan, 0.5]         # saturation, NaN, a value every type holds
    if to in (TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2):
        x = np.clip(np.round(np.nan_to_num(x)), -1, 1)  # ONNX leaves out-of-range ints
                                                         # (and NaN) undefined
    m = _roundtrip(to)
    want = ReferenceEvaluator(m).run(None, {"x": x})
    cm = minicc.compile(m, threads=1, cache=False)
    got = cm.run({"x": x})
    assert got["n"].dtype == want[1].dtype
    np.testing.assert_array_equal(got["y"], want[0])
    np.testing.assert_array_equal(got["n"].astype(np.float32), want[1].astype(np.float32))
    assert got["n"].dtype == onnx.helper.tensor_dtype_to_np_dtype(to)


def test_no_saturate_gives_infinity_or_nan_as_the_spec_says() -> None:
    x = np.array([1e6, -1e6, 1.0] * 8, np.float32).reshape(2, 3, 4)
    for to in (TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E4M3FN):
        m = _roundtrip(to, saturate=0)
        want = ReferenceEvaluator(m).run(None, {"x": x})[0]
        got = minicc.compile(m, threads=1, cache=False).run({"x": x})["y"]
        np.testing.assert_array_equal(got, want)
        assert not np.isfinite(got.flat[0])


def test_a_storage_type_input_is_checked_and_the_artifact_reloads(tmp_path: Path) -> None:
    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "up",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    cm = minicc.compile(m, threads=1, cache=False)
    x = np.array([1.5, -2.0, 3.25, 0.0, 1e30], ml_dtypes.bfloat16)
    np.testing.assert_array_equal(cm.run({"x": x})["y"], x.astype(np.float32))
    with pytest.raises(MiniccError, match="bf16"):
        cm.run({"x": x.astype(np.float32)})
    cm.save(tmp_path / "m.mcc")
    again = minicc.load(tmp_path / "m.mcc")
    np.testing.assert_array_equal(again.run({"x": x})["y"], x.astype(np.float32))


def test_arithmetic_on_a_storage_type_is_refused_naming_the_type() -> None:
    g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "add",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT8E4M3FN, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(MiniccError, match="f8e4m3fn is a storage-only element type"):
        minicc.compile(m, threads=1, cache=False)


def test_bf16_arithmetic_is_computed_in_f32_and_rounded_back() -> None:
    """Add, MatMul and Relu on bf16: each node on f32 copies of its operands, its results
    rounded to bf16, as onnx's reference computes them."""
    w = helper.make_tensor("w", TensorProto.BFLOAT16, [4, 3], np.arange(12, dtype=np.float32)
                           .astype(ml_dtypes.bfloat16).view(np.uint16).tolist(), raw=False)
    g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["a"]),
                           helper.make_node("MatMul", ["a", "w"], ["m"]),
                           helper.make_node("Relu", ["m"], ["y"])], "bf",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 3])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4).astype(ml_dtypes.bfloat16)
    got = minicc.compile(m, threads=1, cache=False).run({"x": x})["y"]
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2)


def test_bitcast_reinterprets_bits_and_refuses_other_widths() -> None:
    def model(to: int) -> onnx.ModelProto:
        g = helper.make_graph([helper.make_node("BitCast", ["x"], ["y"], to=to)], "bc",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", to, [3])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 26)])
    x = np.array([1.0, -2.5, np.inf], np.float32)
    got = minicc.compile(model(TensorProto.INT32), threads=1, cache=False).run({"x": x})["y"]
    np.testing.assert_array_equal(got, x.view(np.int32))
    with pytest.raises(MiniccError, match="one width"):
        minicc.compile(model(TensorProto.INT64), threads=1, cache=False)
