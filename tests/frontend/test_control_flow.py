"""Run-time control flow: If, Loop and Scan become region ops (ir/ops/control.py) that print,
parse back, verify, interpret, and compile as native segments between host-run regions
(minicc/segmented.py); each compared with onnxruntime. Models from PyTorch (scripted control
flow) where it exports them, else built with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h

import minicc
from minicc.errors import MiniccError
from minicc.ir import parse
from minicc.ir.printer import print_module
from minicc.segmented import SegmentedModel
from minicc.tools import onnxruntime_outputs

RTOL, ATOL = 1e-4, 1e-5


def _save(g: onnx.GraphProto, path: Path, opset: int = 17) -> str:
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return str(path)


def _conv_branch(name: str, seed: int, act: str, cout: int = 4) -> onnx.GraphProto:
    r = np.random.default_rng(seed)
    w = h.make_tensor(f"w_{name}", T.FLOAT, [cout, 3, 3, 3],
                      r.standard_normal(cout * 27).astype(np.float32))
    b = h.make_tensor(f"b_{name}", T.FLOAT, [cout], r.standard_normal(cout).astype(np.float32))
    return h.make_graph([h.make_node("Conv", ["x", f"w_{name}", f"b_{name}"], [f"c_{name}"],
                                     pads=[1, 1, 1, 1]),
                         h.make_node(act, [f"c_{name}"], [f"y_{name}"])], name, [],
                        [h.make_tensor_value_info(f"y_{name}", T.FLOAT, None)], [w, b])


def if_model(path: Path) -> str:
    """y = conv-relu(x) if sum(rate) > 8000 else conv-sigmoid(x): the branch depends on an
    input scalar, as a voice-activity detector branches on its sample rate."""
    g = h.make_graph([
        h.make_node("ReduceSum", ["rate"], ["s"], keepdims=0),
        h.make_node("Greater", ["s", "limit"], ["cond"]),
        h.make_node("If", ["cond"], ["y"], then_branch=_conv_branch("a", 1, "Relu"),
                    else_branch=_conv_branch("b", 2, "Sigmoid")),
        h.make_node("Mul", ["y", "two"], ["z"])],
        "ifnet", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8]),
                  h.make_tensor_value_info("rate", T.FLOAT, [1])],
        [h.make_tensor_value_info("z", T.FLOAT, [1, 4, 8, 8])],
        [h.make_tensor("limit", T.FLOAT, [], [8000.0]), h.make_tensor("two", T.FLOAT, [], [2.0])])
    return _save(g, path)


def loop_model(path: Path, nested_if: bool = False) -> str:
    """y <- tanh(y W + x) until mean(y) < thr or 20 trips (a data-dependent trip count); each
    y is a scan output, summed after the loop. With `nested_if`, the body also branches."""
    W = h.make_tensor("W", T.FLOAT, [8, 8],
                      (np.random.default_rng(0).standard_normal(64) * 0.3).astype(np.float32))
    nodes = [h.make_node("MatMul", ["y_in", "W"], ["m"]),
             h.make_node("Add", ["m", "x"], ["a"]),
             h.make_node("Tanh", ["a"], ["t"])]
    if nested_if:
        neg = h.make_graph([h.make_node("Neg", ["t"], ["tn"])], "neg", [],
                           [h.make_tensor_value_info("tn", T.FLOAT, None)])
        same = h.make_graph([h.make_node("Identity", ["t"], ["ti"])], "same", [],
                            [h.make_tensor_value_info("ti", T.FLOAT, None)])
        nodes += [h.make_node("Mod", ["i", "two"], ["odd"]),
                  h.make_node("Cast", ["odd"], ["oddb"], to=T.BOOL),
                  h.make_node("If", ["oddb"], ["y_out"], then_branch=neg, else_branch=same)]
    else:
        nodes.append(h.make_node("Identity", ["t"], ["y_out"]))
    nodes += [h.make_node("ReduceMean", ["y_out"], ["mean"], keepdims=0),
              h.make_node("Less", ["mean", "thr"], ["stop"]),
              h.make_node("Not", ["stop"], ["cond_out"]),
              h.make_node("Identity", ["y_out"], ["scan_y"])]
    body = h.make_graph(nodes, "body", [
        h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("c", T.BOOL, []),
        h.make_tensor_value_info("y_in", T.FLOAT, [1, 8])], [
        h.make_tensor_value_info("cond_out", T.BOOL, []),
        h.make_tensor_value_info("y_out", T.FLOAT, [1, 8]),
        h.make_tensor_value_info("scan_y", T.FLOAT, [1, 8])],
        [h.make_tensor("two", T.INT64, [], [2])] if nested_if else [])
    g = h.make_graph([h.make_node("Loop", ["M", "", "y0"], ["y_final", "ys"], body=body),
                      h.make_node("ReduceSum", ["ys", "ax0"], ["total"], keepdims=0)],
                     "loopnet", [h.make_tensor_value_info("x", T.FLOAT, [1, 8]),
                                 h.make_tensor_value_info("y0", T.FLOAT, [1, 8]),
                                 h.make_tensor_value_info("thr", T.FLOAT, [])],
                     [h.make_tensor_value_info("y_final", T.FLOAT, [1, 8]),
                      h.make_tensor_value_info("total", T.FLOAT, [1, 8])],
                     [W, h.make_tensor("M", T.INT64, [], [20]),
                      h.make_tensor("ax0", T.INT64, [1], [0])])
    return _save(g, path)


def scan_model(path: Path) -> str:
    """An RNN-style state over axis 1 of x, a second scan input read in reverse, the scan
    output stacked along the last axis."""
    W = h.make_tensor("W", T.FLOAT, [4, 4],
                      (np.random.default_rng(0).standard_normal(16) * 0.5).astype(np.float32))
    body = h.make_graph([
        h.make_node("MatMul", ["s_in", "W"], ["m"]), h.make_node("Add", ["m", "x_t"], ["a"]),
        h.make_node("Tanh", ["a"], ["s_out"]), h.make_node("Mul", ["s_out", "r_t"], ["y_t"])],
        "body", [h.make_tensor_value_info(n, T.FLOAT, [2, 4]) for n in ("s_in", "x_t", "r_t")],
        [h.make_tensor_value_info("s_out", T.FLOAT, [2, 4]),
         h.make_tensor_value_info("y_t", T.FLOAT, [2, 4])])
    g = h.make_graph([h.make_node("Scan", ["s0", "x", "x"], ["s", "ys"], body=body,
                                  num_scan_inputs=2, scan_input_axes=[1, 1],
                                  scan_input_directions=[0, 1], scan_output_axes=[-1])],
                     "scannet", [h.make_tensor_value_info("s0", T.FLOAT, [2, 4]),
                                 h.make_tensor_value_info("x", T.FLOAT, [2, 6, 4])],
                     [h.make_tensor_value_info("s", T.FLOAT, [2, 4]),
                      h.make_tensor_value_info("ys", T.FLOAT, [2, 4, 6])], [W])
    return _save(g, path, 16)


def check(path: str, feeds: dict[str, np.ndarray], cm=None) -> None:  # type: ignore
    ref = onnxruntime_outputs(path, feeds)
    m = minicc.import_onnx(path)
    for k, v in minicc.interpret(m, feeds).items():
        np.testing.assert_allclose(v, ref[k], rtol=RTOL, atol=ATOL, err_msg=f"interp {k}")
    cm = cm or minicc.compile(path, threads=1)
    assert isinstance(cm, SegmentedModel)
    for k, v in cm.run(feeds).items():
        np.testing.assert_allclose(v, ref[k], rtol=RTOL, atol=ATOL, err_msg=f"compiled {k}")


def roundtrip(path: str) -> None:
    m = minicc.import_onnx(path)
    text = print_module(m)
    again = parse(text, weights=m.weights())
    assert print_module(again) == text


def test_if_on_an_input_scalar(tmp_path: Path) -> None:
    p = if_model(tmp_path / "if.onnx")
    roundtrip(p)
    text = print_module(minicc.import_onnx(p))
    assert "if(%cond, %x) {else_branch=func @" in text and "conv(" in text
    cm = minicc.compile(p, threads=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for rate in (16000.0, 8000.0):
        check(p, {"x": x, "rate": np.array([rate], np.float32)}, cm)
    assert "if on the host" in cm.summary() and "native segment" in cm.summary()


def test_save_and_load(tmp_path: Path) -> None:
    p = if_model(tmp_path / "if.onnx")
    cm = minicc.compile(p, threads=1)
    again = minicc.load(cm.save(tmp_path / "if.mcc"))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for rate in (16000.0, 8000.0):
        feeds = {"x": x, "rate": np.array([rate], np.float32)}
        np.testing.assert_array_equal(again.run(feeds)["z"], cm.run(feeds)["z"])
    with pytest.raises(MiniccError, match="no single artifact"):
        cm.artifact  # noqa: B018


def test_loop_with_a_data_dependent_trip_count(tmp_path: Path) -> None:
    p = loop_model(tmp_path / "loop.onnx")
    roundtrip(p)
    cm = minicc.compile(p, threads=1)
    r = np.random.default_rng(1)
    x = r.standard_normal((1, 8)).astype(np.float32)
    trips = set()
    for thr in (0.5, 0.2, -2.0):     # stops after 1 trip, 3, all 20
        feeds = {"x": x, "y0": np.zeros((1, 8), np.float32), "thr": np.array(thr, np.float32)}
        check(p, feeds, cm)
        trips.add(onnx_trips(p, feeds))
    assert len(trips) == 3, trips


def onnx_trips(path: str, feeds: dict) -> int:
    """How many trips the loop ran, from onnxruntime's stacked scan output."""
    import onnxruntime as ort

    m = onnx.load(path)
    m.graph.output.append(h.make_tensor_value_info("ys", T.FLOAT, None))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(s.run(["ys"], feeds)[0].shape[0])


def test_nested_if_inside_a_loop(tmp_path: Path) -> None:
    p = loop_model(tmp_path / "nested.onnx", nested_if=True)
    roundtrip(p)
    x = np.random.default_rng(2).standard_normal((1, 8)).astype(np.float32)
    check(p, {"x": x, "y0": np.ones((1, 8), np.float32), "thr": np.array(-0.5, np.float32)})


def test_scan(tmp_path: Path) -> None:
    p = scan_model(tmp_path / "scan.onnx")
    roundtrip(p)
    r = np.random.default_rng(3)
    check(p, {"s0": r.standard_normal((2, 4)).astype(np.float32),
              "x": r.standard_normal((2, 6, 4)).astype(np.float32)})


@settings(max_examples=8, deadline=None)
@given(thr=st.floats(-1.0, 1.0), seed=st.integers(0, 1000))
def test_any_trip_count_matches_the_interpreter(tmp_path_factory, thr: float,  # type: ignore
                                                seed: int) -> None:
    cm, p = _shared_loop(tmp_path_factory)
    r = np.random.default_rng(seed)
    feeds = {"x": r.standard_normal((1, 8)).astype(np.float32),
             "y0": r.standard_normal((1, 8)).astype(np.float32),
             "thr": np.array(thr, np.float32)}
    ref = minicc.interpret(minicc.import_onnx(p), feeds)
    for k, v in cm.run(feeds).items():
        np.testing.assert_allclose(v, ref[k], rtol=RTOL, atol=ATOL)


_LOOP: dict = {}


def _shared_loop(factory):  # type: ignore
    if not _LOOP:
        p = loop_model(factory.mktemp("loop") / "loop.onnx", nested_if=True)
        _LOOP["m"] = (minicc.compile(p, threads=1), p)
    return _LOOP["m"]


def _bad_if(path: Path, then: onnx.GraphProto, other: onnx.GraphProto,
            inputs: list[onnx.ValueInfoProto]) -> str:
    """An If on input c with these branches (saved unchecked: the import must refuse it)."""
    g = h.make_graph([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                     "bad", inputs + [h.make_tensor_value_info("c", T.BOOL, [])],
                     [h.make_tensor_value_info("y", T.FLOAT, [2])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return str(path)


def test_branches_whose_results_disagree_are_refused(tmp_path: Path) -> None:
    f32 = h.make_graph([h.make_node("Identity", ["x"], ["a"])], "t", [],
                       [h.make_tensor_value_info("a", T.FLOAT, None)])
    i64 = h.make_graph([h.make_node("Cast", ["x"], ["b"], to=T.INT64)], "e", [],
                       [h.make_tensor_value_info("b", T.INT64, None)])
    p = _bad_if(tmp_path / "bad.onnx", f32, i64, [h.make_tensor_value_info("x", T.FLOAT, [2])])
    with pytest.raises(MiniccError, match="result 0 of the branches: f32 and i64 differ"):
        minicc.import_onnx(p)


def test_a_region_that_reads_an_undefined_value_is_refused(tmp_path: Path) -> None:
    br = h.make_graph([h.make_node("Identity", ["nowhere"], ["a"])], "t", [],
                      [h.make_tensor_value_info("a", T.FLOAT, None)])
    with pytest.raises(MiniccError, match="nowhere"):
        minicc.import_onnx(_bad_if(tmp_path / "undef.onnx", br, br, []))


def test_region_text_is_verified_when_parsed(tmp_path: Path) -> None:
    text = print_module(minicc.import_onnx(if_model(tmp_path / "if.onnx")))
    bad = text.replace("relu(%c_a) : f32[1,4,8,8]", "relu(%c_a) : f32[1,4,8,9]", 1)
    assert bad != text
    with pytest.raises(MiniccError):
        parse(bad)




def test_pytorch_scripted_if_and_loop(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(8, 4, 3, padding=1))
            self.b = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.Sigmoid())

        def forward(self, x: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
            if bool(sr.sum() > 8000):
                return self.a(x)
            return self.b(x)

    class Looper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            y = x
            for _ in range(int(n)):
                y = torch.tanh(self.lin(y)) + x
            return y

    torch.manual_seed(0)
    cases = [(Branchy(), ["x", "sr"], (torch.randn(1, 3, 16, 16), torch.tensor([16000.0])),
              [{"sr": np.array([s], np.float32)} for s in (16000.0, 8000.0)], "If"),
             (Looper(), ["x", "n"], (torch.randn(2, 8), torch.tensor(3)),
              [{"n": np.array(k, np.int64)} for k in (0, 3, 7)], "Loop")]
    for k, (mod, names, args, runs, op) in enumerate(cases):
        p = str(tmp_path / f"m{k}.onnx")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(torch.jit.script(mod.eval()), args, p, dynamo=False,
                              opset_version=17, input_names=names, output_names=["y"])
        assert op in {n.op_type for n in onnx.load(p).graph.node}
        cm = minicc.compile(p, threads=1)
        for extra in runs:
            feeds = {names[0]: args[0].numpy(), **extra}
            check(p, feeds, cm)
