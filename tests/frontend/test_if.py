"""If with a condition known at compile time (a constant, or shape arithmetic on static shapes):
the branch it takes is imported inline, conv nets and all; a condition known only at run time is
refused with a message that says so."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import minicc


def _branch(name: str, act: str, w: np.ndarray) -> onnx.GraphProto:
    """A small conv net reading the outer scope's x; its weight is the branch's own."""
    return helper.make_graph(
        [helper.make_node("Conv", ["x", f"{name}_w"], [f"{name}_c"], pads=[1, 1, 1, 1]),
         helper.make_node(act, [f"{name}_c"], [f"{name}_y"])], name, [],
        [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, f"{name}_w")])


def _model(cond_nodes: list[onnx.NodeProto], cond_inputs: list) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    then_g = _branch("then", "Relu", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    else_g = _branch("else", "Sigmoid", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    nodes = cond_nodes + [helper.make_node("If", ["cond"], ["y"], then_branch=then_g,
                                           else_branch=else_g)]
    g = helper.make_graph(nodes, "if", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])] + cond_inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("rank", [4, 3])
def test_an_if_on_the_input_shape_takes_its_branch_at_compile_time(rank: int) -> None:
    """cond = (rank of x == `rank`): true takes the Relu net, false the Sigmoid one."""
    k = helper.make_tensor("k", TensorProto.INT64, [], [rank])
    cond = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Size", ["s"], ["r"]),
            helper.make_node("Constant", [], ["kk"], value=k),
            helper.make_node("Equal", ["r", "kk"], ["cond"])]
    m = _model(cond, [])
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    cm = minicc.compile(m, threads=1, cache=False)
    np.testing.assert_allclose(cm.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    kinds = [op for k in cm.artifact.summary["kernels"] for op in k["ops"]]
    assert ("relu" in kinds) == (rank == 4) and ("sigmoid" in kinds) == (rank != 4)


def test_an_if_on_a_run_time_value_compiles_as_control_flow() -> None:
    """(tests/frontend/test_control_flow.py has the rest: loops, scans, PyTorch exports)"""
    m = _model([], [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])])
    cm = minicc.compile(m, threads=1, cache=False)
    assert type(cm).__name__ == "SegmentedModel"
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for c in (True, False):
        feeds = {"x": x, "cond": np.array(c)}
        want = ReferenceEvaluator(m).run(None, feeds)[0]
        np.testing.assert_allclose(cm.run(feeds)["y"], want, rtol=1e-5, atol=1e-5)
