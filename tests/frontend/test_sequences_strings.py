"""Sequences whose structure is known at import (frontend/convert/sequence.py) and string
tensors (the storage-only dtype `str`, host steps through onnx's reference), compiled and
compared with onnxruntime; what is still refused says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import minicc
from minicc.errors import MiniccError
from minicc.tools import onnxruntime_outputs


def _save(g: onnx.GraphProto, path: Path, opset: int = 17) -> str:
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return str(path)


def test_a_sequence_built_edited_and_read_compiles(tmp_path: Path) -> None:
    """Construct, erase, insert, read one back; split a tensor into a sequence and stack it
    again along a new axis; its length as a tensor."""
    g = h.make_graph([
        h.make_node("SequenceConstruct", ["x", "y", "z"], ["s1"]),
        h.make_node("SequenceErase", ["s1", "one"], ["s2"]),
        h.make_node("SequenceInsert", ["s2", "x", "zero"], ["s3"]),
        h.make_node("SequenceAt", ["s3", "minus1"], ["at"]),
        h.make_node("Relu", ["at"], ["r"]),
        h.make_node("SplitToSequence", ["x"], ["parts"], axis=1, keepdims=0),
        h.make_node("ConcatFromSequence", ["parts"], ["stacked"], axis=0, new_axis=1),
        h.make_node("SequenceLength", ["s3"], ["n"])],
        "seq", [h.make_tensor_value_info(n, T.FLOAT, [2, 3]) for n in ("x", "y", "z")],
        [h.make_tensor_value_info("r", T.FLOAT, [2, 3]),
         h.make_tensor_value_info("stacked", T.FLOAT, [3, 2]),
         h.make_tensor_value_info("n", T.INT64, [])],
        [h.make_tensor("zero", T.INT64, [], [0]), h.make_tensor("one", T.INT64, [], [1]),
         h.make_tensor("minus1", T.INT64, [], [-1])])
    p = _save(g, tmp_path / "seq.onnx")
    r = np.random.default_rng(0)
    feeds = {n: r.standard_normal((2, 3)).astype(np.float32) for n in ("x", "y", "z")}
    cm = minicc.compile(p, threads=1)
    assert isinstance(cm, minicc.CompiledModel)       # no sequence reaches run time
    ref = onnxruntime_outputs(p, feeds)
    for k, v in cm.run(feeds).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-6, err_msg=k)


def test_a_sequence_output_is_refused_by_name(tmp_path: Path) -> None:
    g = h.make_graph([h.make_node("SplitToSequence", ["x"], ["seq"])], "s",
                     [h.make_tensor_value_info("x", T.FLOAT, [3, 2])],
                     [h.make_value_info("seq", h.make_sequence_type_proto(
                         h.make_tensor_type_proto(T.FLOAT, None)))])
    p = tmp_path / "out.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), p)
    with pytest.raises(MiniccError, match="graph output 'seq' is a sequence"):
        minicc.compile(str(p), threads=1)


def test_string_tensors_run_on_the_host(tmp_path: Path) -> None:
    """StringNormalizer (stop words: the result size depends on the data) and a Size of its
    result, computed after it; against onnx's ReferenceEvaluator (onnxruntime's
    StringNormalizer needs an en_US.UTF-8 locale, which these machines may lack)."""
    from onnx.reference import ReferenceEvaluator

    g = h.make_graph([
        h.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER",
                    stopwords=["monday"]),
        h.make_node("Size", ["y"], ["n"])],
        "str", [h.make_tensor_value_info("x", T.STRING, [4])],
        [h.make_tensor_value_info("y", T.STRING, ["k"]),
         h.make_tensor_value_info("n", T.INT64, [])])
    p = _save(g, tmp_path / "str.onnx")
    cm = minicc.compile(p, threads=1)
    for words in (["monday", "tuesday", "wednesday", "Monday"], ["a", "b", "c", "d"]):
        x = np.array(words, dtype=object)
        ref = dict(zip(["y", "n"], ReferenceEvaluator(p).run(None, {"x": x})))
        got = cm.run({"x": np.array(words)})       # a '<U' array is taken as strings too
        assert got["y"].tolist() == ref["y"].tolist()
        assert int(got["n"]) == int(ref["n"]) == len(ref["y"])
    text = str(minicc.import_onnx(p))
    assert "str[4]" in text
