"""Results whose size the data decides: NonZero, Unique, Compress, NonMaxSuppression and TopK
with a run-time k run on the host through onnx's reference, each a step of its own, and the
ops after them compile for the sizes each run finds (minicc/segmented.py). Compared with
onnxruntime on two inputs whose results differ in size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

import minicc
from minicc.tools import onnxruntime_outputs

OUTS = [("picked_r", T.FLOAT, 2), ("nz", T.INT64, 2), ("cx", T.FLOAT, 2), ("u", T.INT64, 1),
        ("uc", T.INT64, 1), ("uinv", T.INT64, 1), ("tv", T.FLOAT, 2), ("ti", T.INT64, 2)]


def model(path: Path) -> str:
    """A detector's tail (NMS, then the selected boxes gathered and a kernel on them) beside
    NonZero, Compress, Unique and TopK with k an input."""
    g = h.make_graph([
        h.make_node("NonMaxSuppression", ["boxes", "scores", "maxo", "iou", "sthr"], ["sel"]),
        h.make_node("Gather", ["sel", "two"], ["idx"], axis=1),
        h.make_node("Squeeze", ["boxes", "zero"], ["b2"]),
        h.make_node("Gather", ["b2", "idx"], ["picked"], axis=0),
        h.make_node("Relu", ["picked"], ["picked_r"]),
        h.make_node("Greater", ["x", "half"], ["mask"]),
        h.make_node("NonZero", ["mask"], ["nz"]),
        h.make_node("Compress", ["x", "flat"], ["cx"], axis=1),
        h.make_node("Unique", ["ids"], ["u", "ui", "uinv", "uc"], sorted=1),
        h.make_node("TopK", ["x", "k"], ["tv", "ti"], axis=1)],
        "dd", [h.make_tensor_value_info("boxes", T.FLOAT, [1, 6, 4]),
               h.make_tensor_value_info("scores", T.FLOAT, [1, 1, 6]),
               h.make_tensor_value_info("x", T.FLOAT, [3, 5]),
               h.make_tensor_value_info("flat", T.BOOL, [5]),
               h.make_tensor_value_info("ids", T.INT64, [10]),
               h.make_tensor_value_info("k", T.INT64, [1])],
        [h.make_tensor_value_info(n, t, [f"{n}{j}" for j in range(r)]) for n, t, r in OUTS],
        [h.make_tensor("maxo", T.INT64, [1], [3]), h.make_tensor("iou", T.FLOAT, [1], [0.5]),
         h.make_tensor("sthr", T.FLOAT, [1], [0.0]), h.make_tensor("two", T.INT64, [], [2]),
         h.make_tensor("zero", T.INT64, [1], [0]), h.make_tensor("half", T.FLOAT, [], [0.5])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return str(path)


def test_data_dependent_sizes_match_onnxruntime(tmp_path: Path) -> None:
    p = model(tmp_path / "dd.onnx")
    cm = minicc.compile(p, threads=1)
    s = cm.summary()
    for op in ("NonMaxSuppression", "NonZero", "Compress", "Unique", "TopK"):
        assert f"{op} on the host" in s, s
    assert "native segment" in s
    r = np.random.default_rng(0)
    sizes = set()
    for k in (2, 4):
        bx = r.random((1, 6, 2)).astype(np.float32)
        feeds = {"boxes": np.concatenate([bx, bx + r.random((1, 6, 2)).astype(np.float32)], 2),
                 "scores": r.random((1, 1, 6)).astype(np.float32),
                 "x": r.random((3, 5)).astype(np.float32), "flat": r.random(5) > 0.5,
                 "ids": r.integers(0, 5, 10).astype(np.int64), "k": np.array([k], np.int64)}
        ref = onnxruntime_outputs(p, feeds)
        got = cm.run(feeds)
        for n in ref:
            np.testing.assert_allclose(got[n], ref[n], rtol=1e-6, atol=1e-6, err_msg=n)
        sizes.add(tuple(got[n].shape for n in ("nz", "cx", "u", "tv")))
    assert len(sizes) == 2         # the two runs found different sizes
