"""Dynamic shapes (minicc/dynamic.py): a model with symbolic input dims compiles without shapes
into a DynamicModel that specializes per input shape; declared ranges; run-time shape errors
that name the input and the dim; save and load; the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import minicc
from minicc.cli import main
from minicc.dynamic import DynamicModel
from minicc.errors import MiniccError, RuntimeInputError
from minicc.tools import onnxruntime_outputs


def conv_net(path: Path) -> Path:
    """Conv-ReLU-Conv, global average pool and a Gemm over a dynamic batch N and a dynamic image
    size (H, W): shape arithmetic (Shape, Gather, Concat, Reshape) follows the batch."""
    r = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [8, 3, 3, 3],
                            r.standard_normal(8 * 27).astype(np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [8, 8, 3, 3],
                            (r.standard_normal(8 * 72) * 0.3).astype(np.float32))
    fc = helper.make_tensor("fc", TensorProto.FLOAT, [8, 5],
                            r.standard_normal(40).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Concat", ["n", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["g", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "fc"], ["y"])]
    inits = [w1, w2, fc, helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
             helper.make_tensor("minus1", TensorProto.INT64, [1], [-1])]
    g = helper.make_graph(
        nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def two_inputs(path: Path) -> Path:
    """y = a + b with both inputs [N, 4]: dims that share a name must agree at run time."""
    g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conv_net(tmp_path_factory.mktemp("dyn") / "net.onnx")


def image(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def test_compiles_without_shapes_and_specializes_per_shape(net: Path) -> None:
    dm = minicc.compile(str(net), threads=1, cache=False)
    assert isinstance(dm, DynamicModel)
    assert [str(d) for d in dm.signature[0][2]] == ["N", "3", "H", "W"]
    assert dm.specializations == []
    for n, h, w in [(1, 16, 16), (3, 16, 16), (2, 12, 20), (3, 16, 16)]:
        x = image(n, h, w, n + h)
        got = dm.run({"x": x})["y"]
        ref = onnxruntime_outputs(str(net), {"x": x})["y"]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(dm(x=x)["y"], got)
    # the repeated shape reused its specialization
    assert dm.specializations == [{"x": (1, 3, 16, 16)}, {"x": (3, 3, 16, 16)},
                                  {"x": (2, 3, 12, 20)}]
    assert sum("specialized for" in n for n in dm.report.notes) == 3
    # a specialization is exactly a static compile of that shape
    st_ = minicc.compile(str(net), threads=1, cache=False, input_shapes={"x": (2, 3, 12, 20)})
    x = image(2, 12, 20, 5)
    np.testing.assert_array_equal(dm.run({"x": x})["y"], st_.run({"x": x})["y"])
    assert dm.specialize({"x": (2, 3, 12, 20)}).artifact.inputs == st_.artifact.inputs


def test_run_time_shape_errors_name_the_input_and_dim(net: Path, tmp_path: Path) -> None:
    dm = minicc.compile(str(net), threads=1, cache=False,
                        input_shapes={"x": ("1..4", 3, "H", "W")})
    with pytest.raises(RuntimeInputError, match=r"input 'x': dim 0 \(N\) is 5, outside its "
                       r"declared range 1\.\.4"):
        dm.run({"x": image(5, 8, 8)})
    with pytest.raises(RuntimeInputError, match=r"input 'x': dim 1 is 4, but the model fixes "
                       r"it to 3"):
        dm.run({"x": np.zeros((1, 4, 8, 8), np.float32)})
    with pytest.raises(RuntimeInputError, match=r"input 'x': rank 3"):
        dm.run({"x": np.zeros((1, 3, 8), np.float32)})
    with pytest.raises(RuntimeInputError, match=r"input 'x': dtype f64"):
        dm.run({"x": np.zeros((1, 3, 8, 8))})
    with pytest.raises(RuntimeInputError, match=r"missing 'x' \(f32\[N:1\.\.4,3,H,W\]\)"):
        dm.run({})
    with pytest.raises(RuntimeInputError, match="unknown 'z'"):
        dm.run({"x": image(1, 8, 8), "z": image(1, 8, 8)})
    assert dm.specializations == []        # nothing was compiled for a refused input
    two = minicc.compile(str(two_inputs(tmp_path / "two.onnx")), threads=1, cache=False)
    a = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(two.run({"a": a, "b": a})["y"], a + a)
    with pytest.raises(RuntimeInputError, match=r"input 'b': dim 0 \(N\) is 3, but input 'a' "
                       r"dim 0 gave N = 2"):
        two.run({"a": a, "b": np.ones((3, 4), np.float32)})


def test_bad_ranges_are_refused_at_compile(net: Path) -> None:
    with pytest.raises(MiniccError, match="upper bound is below"):
        minicc.compile(str(net), input_shapes={"x": ("4..1", 3, "H", "W")})
    with pytest.raises(MiniccError, match="changes dim 1, which the model fixes to 3"):
        minicc.compile(str(net), input_shapes={"x": ("1..4", 5, "H", "W")})
    with pytest.raises(MiniccError, match="dim ranges"):
        minicc.analyze(str(net), input_shapes={"x": ("1..4", 3, 8, 8)})
    with pytest.raises(MiniccError, match="needs static input shapes"):
        minicc.compile(str(net), dump=("fusion",))


def test_save_and_load_keep_the_specializations(net: Path, tmp_path: Path) -> None:
    dm = minicc.compile(str(net), threads=1, cache=False,
                        input_shapes={"x": ("1..8", 3, "H", "W")})
    x1, x2 = image(1, 8, 8), image(2, 10, 6)
    y1 = dm.run({"x": x1})["y"]
    path = dm.save(tmp_path / "dyn.mcc")
    again = minicc.load(path)
    assert isinstance(again, DynamicModel)
    assert again.specializations == [{"x": (1, 3, 8, 8)}]
    np.testing.assert_array_equal(again.run({"x": x1})["y"], y1)
    assert not any("specialized" in n for n in again.report.notes)    # ran without compiling
    np.testing.assert_allclose(again.run({"x": x2})["y"], dm.run({"x": x2})["y"], rtol=1e-6)
    with pytest.raises(RuntimeInputError, match="outside its declared range 1..8"):
        again.run({"x": image(9, 8, 8)})
    with pytest.raises(MiniccError, match="one artifact per input shape; this needs static shapes"):
        again.artifact   # noqa: B018


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(4, 12), w=st.integers(4, 12))
def test_any_shape_in_range_matches_the_interpreter(net: Path, n: int, h: int, w: int) -> None:
    dm = _shared(net)
    x = image(n, h, w, h * w)
    ref = minicc.interpret(minicc.import_onnx(str(net), {"x": x.shape}), {"x": x})["y"]
    np.testing.assert_allclose(dm.run({"x": x})["y"], ref, rtol=1e-4, atol=1e-5)


_DM: dict[Path, DynamicModel] = {}


def _shared(net: Path) -> DynamicModel:
    if net not in _DM:
        _DM[net] = minicc.compile(str(net), threads=1,
                                  input_shapes={"x": ("1..4", 3, "4..12", "4..12")})
    return _DM[net]


def test_cli_compiles_a_range_and_runs_shapes_in_it(net: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "net.mcc"
    assert main(["compile", str(net), "--input-shape", "x=1..4,3,H,W", "-o", str(out),
                 "--threads", "1"]) == 0
    o = capsys.readouterr()
    assert "input x: f32[N:1..4,3,H,W]" in o.out and "dynamic dims" in o.err
    assert main(["run", str(out), "--random-inputs", "--input-shape", "x=2,3,8,8"]) == 0
    o = capsys.readouterr()
    assert "y: float32[2, 5]" in o.out and "specialized for x[2,3,8,8]" in o.err
    assert main(["run", str(out), "--random-inputs", "--input-shape", "x=5,3,8,8"]) == 2
    assert "dim 0 (N) is 5, outside its declared range 1..4" in capsys.readouterr().err
    assert main(["run", str(net), "--random-inputs", "--input-shape", "x=2,3,8,8",
                 "--compare", "onnxruntime"]) == 0
    assert main(["compile", str(net), "--input-shape", "x=1..x,3,8,8"]) == 2
