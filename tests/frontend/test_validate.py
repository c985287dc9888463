"""Validation at import (frontend/validate.py): invalid models are refused before anything
runs, with one error naming every problem and its node, and onnxruntime refuses each too."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import minicc
from minicc.cli import main
from minicc.errors import InvalidModelError


def model(nodes: list, opset: int = 17, inits: tuple = ()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


W = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
SCALE = numpy_helper.from_array(np.ones(3, np.float32), "s")
BIAS = numpy_helper.from_array(np.zeros(3, np.float32), "b")

INVALID = {
    # id: (model, what the error says)
    "unknown_attribute": (model([helper.make_node("Relu", ["x"], ["y"], foo=3)]),
                          "Relu node 'y': Unrecognized attribute: foo"),
    "attribute_type": (model([helper.make_node("Conv", ["x", "w"], ["y"], strides=[1.0, 1.0])],
                             inits=(W,)),
                       "attribute 'strides' is FLOATS, the schema of Conv at opset 17 wants INTS"),
    "op_before_its_first_version": (model([helper.make_node("HardSwish", ["x"], ["y"])], 13),
                                    "not defined at opset 13 (first defined in opset 14)"),
    "opset_too_new": (model([helper.make_node("Relu", ["x"], ["y"])], 99),
                      "opset 99 of ai.onnx is newer than any the installed onnx"),
    "opset6_shapes_differ": (model([helper.make_node("Add", ["x", "s"], ["y"])], 6,
                                   inits=(SCALE,)), "need broadcast=1 at opset 6"),
    "conv_stride_0": (model([helper.make_node("Conv", ["x", "w"], ["y"], strides=[0, 1])],
                            inits=(W,)), "strides [0, 1] must all be positive"),
    "conv_negative_dilation": (model([helper.make_node("Conv", ["x", "w"], ["y"],
                                                       dilations=[-1, 1])], inits=(W,)),
                               "dilations [-1, 1] must all be positive"),
    "kernel_shape_contradicts_weight": (
        model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[5, 5])], inits=(W,)),
        "kernel_shape [5, 5] contradicts the weight 'w' of shape [4, 3, 3, 3]"),
    "pool_stride_0": (model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3],
                                              strides=[0, 0])]),
                      "MaxPool node 'y': strides [0, 0] must all be positive"),
    "negative_pads": (model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3],
                                              pads=[-1, 0, 0, 0])]), "must not be negative"),
    "nan_epsilon": (model([helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"],
                                            epsilon=float("nan"))], inits=(SCALE, BIAS)),
                    "epsilon nan must be finite"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_model_is_refused_with_its_problem(case: str) -> None:
    m, says = INVALID[case]
    with pytest.raises(InvalidModelError, match="is not a valid ONNX model") as e:
        minicc.import_onnx(m)
    assert says in str(e.value)


# onnxruntime accepts these, and minicc is right to refuse them: its results are NaN
STRICTER = {"nan_epsilon"}


@pytest.mark.parametrize("case", list(INVALID))
def test_onnxruntime_refuses_it_too(case: str) -> None:
    """Refused when the session is made or when it runs; the exceptions give NaN."""
    ort = pytest.importorskip("onnxruntime")
    m, _ = INVALID[case]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)

    def run() -> np.ndarray:
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {"x": x})[0]
    if case in STRICTER:
        assert np.isnan(run()).all()
        return
    with pytest.raises(Exception):
        run()


def test_every_problem_is_listed_at_once() -> None:
    m = model([helper.make_node("Relu", ["x"], ["r"], foo=3, name="first"),
               helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[0, 0],
                                name="second")])
    with pytest.raises(InvalidModelError, match=r"\(2 problems\)") as e:
        minicc.import_onnx(m)
    assert "Relu node 'first'" in str(e.value) and "MaxPool node 'second'" in str(e.value)


def test_the_cli_refuses_it_with_exit_code_2(tmp_path, capsys) -> None:  # type: ignore
    p = tmp_path / "bad.onnx"
    onnx.save(INVALID["unknown_attribute"][0], str(p))
    assert main(["compile", str(p)]) == 2
    err = capsys.readouterr().err
    assert "Unrecognized attribute: foo" in err and "Traceback" not in err


def test_an_old_opset_model_that_is_valid_runs() -> None:
    """Add at opset 1 on equal shapes is valid ONNX (onnxruntime has no kernel for it and
    refuses it; minicc computes it)."""
    m = model([helper.make_node("Add", ["x", "x"], ["y"])], 1)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(minicc.compile(m, threads=1).run({"x": x})["y"], x + x)


def test_a_valid_model_passes() -> None:
    m = model([helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
               helper.make_node("Relu", ["c"], ["y"])], inits=(W,))
    minicc.import_onnx(m)


@pytest.mark.parametrize("mode,pad,refused", [("reflect", 3, False), ("reflect", 4, True),
                                              ("wrap", 9, False), ("edge", 9, False)])
def test_pad_limits_follow_onnxruntime(mode: str, pad: int, refused: bool) -> None:
    """A reflection has size - 1 elements to mirror; wrap and edge repeat without limit."""
    ort = pytest.importorskip("onnxruntime")
    g = helper.make_graph([helper.make_node("Pad", ["x", "p"], ["y"], mode=mode)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([0, pad, 0, pad], np.int64), "p")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    if refused:
        with pytest.raises(minicc.MiniccError, match=f"reflect pads {pad}, {pad} on axis 1 of "
                                                     "size 4: at most 3"):
            minicc.compile(m, threads=1)
        return
    ref = ort.InferenceSession(m.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(minicc.compile(m, threads=1).run({"x": x})["y"], ref)
