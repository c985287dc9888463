"""Pool windows check only the sides they can cross (and a vector loop's run-time tail is its
only masked vector): random geometries against onnx's ReferenceEvaluator."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from minicc import CompileOptions, compile


def _pool_model(op: str, shape: list[int], attrs: dict):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.data())
def test_pools_on_any_geometry(data: st.DataObject) -> None:
    d = data.draw
    op = d(st.sampled_from(["MaxPool", "AveragePool"]))
    k = [d(st.integers(1, 4)) for _ in range(2)]
    s = [d(st.integers(1, 3)) for _ in range(2)]
    dl = [d(st.integers(1, 2)) for _ in range(2)] if op == "MaxPool" else [1, 1]
    pads = [d(st.integers(0, k[i % 2] - 1)) for i in range(4)]
    h, w = (d(st.integers(dl[i] * (k[i] - 1) + 1, 30)) for i in range(2))
    attrs = {"kernel_shape": k, "strides": s, "pads": pads,
             "ceil_mode": int(d(st.booleans()))}
    if op == "MaxPool":
        attrs["dilations"] = dl
    else:
        attrs["count_include_pad"] = int(d(st.booleans()))
    m = _pool_model(op, [1, 3, h, w], attrs)
    x = np.random.default_rng(h * 31 + w).standard_normal((1, 3, h, w)).astype(np.float32)
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    got = compile(m, options=CompileOptions(cache=False, threads=1)).run({"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_a_pool_whose_windows_stay_inside_does_not_select() -> None:
    """squeezenet's 3x3 stride-2 pools over 111x111: every window is inside, so the taps are
    plain (strided) loads, not a select against -inf per tap. The 55 output columns are 6
    whole vectors, stored plainly, and a tail of 7, the only masked store. (The generic nest;
    the pool template, cpu.pool, masks its edge tiles only: tests/codegen/test_pool.py.)"""
    from minicc.codegen.llvm.target import cpu_target

    m = _pool_model("MaxPool", [1, 4, 111, 111], {"kernel_shape": [3, 3], "strides": [2, 2]})
    cm = compile(m, options=CompileOptions(cache=False, threads=1, dump=("loops", "llvm"),
                                           schedules={"k0_max_pool": "cpu.loops: split(i3, "
                                                      "16); vectorize(i3.i, 16); compute_at()"}))
    assert "select" not in cm.report.dumps["loops"]
    lanes = cpu_target().lanes
    ir = cm.report.dumps["llvm"]
    assert f"store <{lanes} x float>" in ir and "llvm.masked.store" in ir
    x = np.random.default_rng(0).standard_normal((1, 4, 111, 111)).astype(np.float32)
    np.testing.assert_array_equal(cm.run({"x": x})["y"], ReferenceEvaluator(m).run(None,
                                                                                  {"x": x})[0])
