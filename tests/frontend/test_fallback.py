"""Nodes minicc has no converter for, or uses of an op its converter does not cover, run on the
host through onnx's reference implementation (frontend/fallback.py, the `onnx_node` op) when
shape inference makes their outputs static; others are still refused, named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import minicc


def _model(node: onnx.NodeProto, ins: dict[str, tuple[int, tuple]], outs: dict[str, int],
           opset: int = 20, inits: list | None = None) -> onnx.ModelProto:
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, s)
                                        for n, (t, s) in ins.items()],
                          [helper.make_tensor_value_info(n, t, None) for n, t in outs.items()],
                          inits or [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _check(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> minicc.CompiledModel:
    want = ReferenceEvaluator(m).run(None, feeds)
    cm = minicc.compile(m, threads=1, cache=False)
    got = cm.run(feeds)
    for vi, w in zip(m.graph.output, want):
        np.testing.assert_allclose(got[vi.name], w, rtol=1e-6, atol=1e-6)
    return cm


def test_an_op_without_a_converter_runs_on_the_host_between_kernels(tmp_path: Path) -> None:
    """GridSample, then a Relu kernel on its output: one host step, one native step, and the
    saved artifact runs the same."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    grid = rng.uniform(-1.1, 1.1, (1, 4, 3, 2)).astype(np.float32)
    g = helper.make_graph([helper.make_node("GridSample", ["x", "grid"], ["s"],
                                            mode="linear", align_corners=0),
                           helper.make_node("Relu", ["s"], ["y"])], "gs",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                           helper.make_tensor_value_info("grid", TensorProto.FLOAT, grid.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    cm = _check(m, {"x": x, "grid": grid})
    kinds = [type(st).__name__ for st in cm.artifact.steps]
    assert kinds.count("HostCall") == 1 and "NativeCall" in kinds, kinds
    cm.save(tmp_path / "gs.mcc")
    np.testing.assert_array_equal(minicc.load(tmp_path / "gs.mcc").run({"x": x, "grid": grid})["y"],
                                  cm.run({"x": x, "grid": grid})["y"])


def test_a_resize_mode_the_converter_lacks_falls_back() -> None:
    x = np.random.default_rng(1).standard_normal((1, 1, 4, 4)).astype(np.float32)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    m = _model(helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic"),
               {"x": (TensorProto.FLOAT, x.shape)}, {"y": TensorProto.FLOAT}, 19, [scales])
    _check(m, {"x": x})


def test_run_time_integer_weights_fall_back() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 255, (3, 5)).astype(np.uint8)
    b = rng.integers(0, 255, (5, 4)).astype(np.uint8)
    m = _model(helper.make_node("MatMulInteger", ["a", "b"], ["y"]),
               {"a": (TensorProto.UINT8, a.shape), "b": (TensorProto.UINT8, b.shape)},
               {"y": TensorProto.INT32}, 13)
    _check(m, {"a": a, "b": b})


def test_an_op_whose_output_size_depends_on_the_data_is_a_host_step() -> None:
    """Unique's result size is known only once it ran: a host step of its own, and the Relu
    after it compiles for the size each run finds (minicc/segmented.py)."""
    g = helper.make_graph([helper.make_node("Unique", ["x"], ["u"]),
                           helper.make_node("Relu", ["u"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cm = minicc.compile(m, threads=1, cache=False)
    assert "Unique on the host (its result size depends on the data)" in cm.summary()
    for x in ([3.0, -1.0, 3.0, 2.0, 2.0, 5.0], [1.0] * 6):
        feeds = {"x": np.array(x, np.float32)}
        want = ReferenceEvaluator(m).run(None, feeds)[0]
        np.testing.assert_array_equal(cm.run(feeds)["y"], want)


def test_quantizing_to_int4_and_dequantizing_float8_fall_back_with_their_storage_types() -> None:
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])
    zp = helper.make_tensor("zp", TensorProto.INT4, [], [1])
    m = _model(helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
               {"x": (TensorProto.FLOAT, x.shape)}, {"q": TensorProto.INT4}, 21, [s, zp])
    _check(m, {"x": x})
    f8 = x.astype(onnx.helper.tensor_dtype_to_np_dtype(TensorProto.FLOAT8E4M3FN))
    m = _model(helper.make_node("DequantizeLinear", ["x", "s"], ["y"]),
               {"x": (TensorProto.FLOAT8E4M3FN, x.shape)}, {"y": TensorProto.FLOAT}, 21, [s])
    _check(m, {"x": f8})


def test_an_ai_onnx_ml_op_falls_back() -> None:
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    g = helper.make_graph([helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml",
                                            threshold=0.25)], "b",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("ai.onnx.ml", 3)])
    _check(m, {"x": x})
