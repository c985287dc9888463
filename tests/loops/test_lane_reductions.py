"""Reductions along a contiguous innermost axis run a vector of partial results and combine
them at the end (softmax's max and sum, row sums), tails included; others stay scalar."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper

import minicc


def model(op: str, shape: list[int], tmp_path, **attrs) -> str:  # type: ignore[no-untyped-def]
    out = list(shape)
    if op.startswith("Reduce"):
        axes = attrs.pop("axes")
        out = [1 if k in [a % len(shape) for a in axes] else d for k, d in enumerate(shape)]
        nodes = [helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)]
        inits = [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)]
    else:
        nodes, inits = [helper.make_node(op, ["x"], ["y"], **attrs)], []
    g = helper.make_graph(nodes, "r", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, out)], inits)
    p = tmp_path / f"{op}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), p)
    return str(p)


@pytest.mark.parametrize("op,shape,attrs,split", [
    ("Softmax", [3, 64], {"axis": -1}, True),
    ("Softmax", [2, 5, 37], {"axis": -1}, True),          # a tail of 5 after two vectors
    ("Softmax", [2, 3, 4, 48], {"axis": -1}, True),
    ("ReduceSum", [40, 6], {"axes": [0]}, False),           # strided: stays scalar
    ("Softmax", [3, 5], {"axis": -1}, False),               # shorter than a vector (8, 16)
])
def test_lane_split_reductions(op: str, shape: list[int], attrs: dict, split: bool,
                               tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = model(op, shape, tmp_path, **attrs)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    cm = minicc.compile(p, threads=1, dump=("loops",), cache=False)
    assert ("%part" in cm.report.dumps["loops"]) == split
    ref = onnx.reference.ReferenceEvaluator(p).run(None, {"x": x})[0]
    np.testing.assert_allclose(cm.run({"x": x})["y"], ref, rtol=1e-5, atol=1e-6)


def test_layer_norm_rows_are_lane_split(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = helper.make_graph([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"],
                                            axis=-1)], "ln",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 100])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 100])],
                          [helper.make_tensor("s", TensorProto.FLOAT, [100], np.ones(100)),
                           helper.make_tensor("b", TensorProto.FLOAT, [100], np.zeros(100))])
    p = str(tmp_path / "ln.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    x = np.random.default_rng(1).standard_normal((1, 8, 100)).astype(np.float32) * 3 + 1
    cm = minicc.compile(p, threads=1, dump=("loops",), cache=False)
    assert "%part" in cm.report.dumps["loops"]
    ref = onnx.reference.ReferenceEvaluator(p).run(None, {"x": x})[0]
    np.testing.assert_allclose(cm.run({"x": x})["y"], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,shape", [
    ("ReduceMean", [1, 144, 56, 56]),       # H*W = 3136: 49 steps of 4 vectors
    ("ReduceMean", [2, 40, 14, 14]),        # 196: 3 vectors, then 12 leftover vectors' worth
    ("GlobalAveragePool", [1, 24, 7, 7]),   # 49: 3 vectors and a tail of 1
    ("ReduceMax", [1, 20, 5, 3]),           # 15: shorter than a vector, stays scalar
])
def test_a_pool_over_the_map_vectorizes_the_map_not_the_channels(  # type: ignore[no-untyped-def]
        op: str, shape: list[int], tmp_path) -> None:
    """A reduction over H and W of NCHW reads each channel's map as one contiguous run: the
    vectors go along it (H and W merged), in partial results, not across channels, which
    would gather a lane from each plane."""
    if op == "GlobalAveragePool":
        g = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "r",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             shape[:2] + [1, 1])])
        p = str(tmp_path / "gap.onnx")
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), p)
    else:
        p = model(op, shape, tmp_path, axes=[2, 3])
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    cm = minicc.compile(p, threads=1, dump=("loops", "llvm"), cache=False)
    loops = cm.report.dumps["loops"]
    vectors = shape[2] * shape[3] >= 16
    assert ("%part" in loops) == vectors, loops
    assert ("masked.gather" in cm.report.dumps["llvm"]) == (not vectors)
    ref = onnx.reference.ReferenceEvaluator(p).run(None, {"x": x})[0]
    np.testing.assert_allclose(cm.run({"x": x})["y"], ref, rtol=1e-5, atol=1e-6)
