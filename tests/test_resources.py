"""Memory limits (minicc/resources.py) and zero-sized dimensions: a model that needs more than
the budget is refused before anything is allocated, naming the tensor; empty tensors run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import minicc
from minicc.cli import main
from minicc.errors import MiniccError, ResourceError
from minicc.resources import ENV, budget, parse_size


def model(nodes: list, xshape: tuple, inits: tuple = ()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(xshape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


W = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")


def test_a_runaway_shape_is_refused_at_import_naming_the_node() -> None:
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[10 ** 9] * 4, name="big")],
              (1, 3, 8, 8), (W,))
    with pytest.raises(ResourceError, match=r"Conv node 'big'.*f32\[1,4,2000000006,"
                                            r"2000000006\].*more than the memory budget"):
        minicc.compile(m, threads=1, cache=False)


def test_the_plan_is_checked_against_memory_budget() -> None:
    """Every tensor fits (64 KiB each), the arena (one of them and the im2col panels) does not."""
    w2 = numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "w2")
    m = model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
               helper.make_node("Conv", ["c", "w2"], ["y"], pads=[1] * 4)], (1, 3, 64, 64),
              (W, w2))
    with pytest.raises(ResourceError, match=r"the compiled model \(arena .*largest: %"):
        minicc.compile(m, threads=1, cache=False, memory_budget=70_000)
    minicc.compile(m, threads=1, cache=False, memory_budget=10 << 20)     # fits


def test_the_environment_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "1M")
    assert budget() == 1 << 20
    m = model([helper.make_node("Relu", ["x"], ["y"])], (1, 3, 512, 512))
    with pytest.raises(ResourceError, match="1.0 MiB"):
        minicc.compile(m, threads=1, cache=False)
    monkeypatch.delenv(ENV)
    assert budget() > 1 << 20


@pytest.mark.parametrize("text,n", [("8G", 8 << 30), ("512MiB", 512 << 20), ("1.5k", 1536),
                                    ("1000", 1000)])
def test_sizes_parse(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "-1G", "8X", "G", "0"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(MiniccError, match="bad memory size"):
        parse_size(text)


def test_the_cli_takes_a_budget(tmp_path, capsys) -> None:  # type: ignore
    p = tmp_path / "m.onnx"
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], (1, 3, 512, 512)), str(p))
    assert main(["compile", str(p), "--memory-budget", "1M"]) == 2
    assert "more than the memory budget of 1.0 MiB" in capsys.readouterr().err
    assert main(["compile", str(p), "--memory-budget", "64M"]) == 0


@pytest.mark.parametrize("nodes,xshape", [
    ([helper.make_node("Relu", ["x"], ["y"])], (1, 0, 8, 8)),
    ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])], (0, 3, 8, 8)),
    ([helper.make_node("Softmax", ["x"], ["y"])], (1, 3, 8, 0)),
    ([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)], (1, 3, 0, 8)),
    ([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], (2, 0, 4, 4)),
])
def test_zero_sized_dimensions_run_and_match_onnxruntime(nodes: list, xshape: tuple) -> None:
    ort = pytest.importorskip("onnxruntime")
    m = model(nodes, xshape)
    x = np.zeros(xshape, np.float32)
    got = minicc.compile(m, threads=1, cache=False).run({"x": x})["y"]
    ref = ort.InferenceSession(m.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_compile_pauses_cyclic_gc_and_restores_it() -> None:
    """A compile runs with the cyclic collector paused (see resources.gc_paused) and leaves it
    as it found it, enabled or not, also when the compile fails."""
    import gc

    from minicc.errors import MiniccError
    from minicc.resources import gc_paused

    seen = []
    with gc_paused():
        seen.append(gc.isenabled())
        with gc_paused():
            seen.append(gc.isenabled())
        seen.append(gc.isenabled())
    assert seen == [False, False, False] and gc.isenabled()
    with pytest.raises(MiniccError):
        minicc.compile(b"not an onnx model", threads=1, cache=False)
    assert gc.isenabled()
    gc.disable()
    try:
        minicc.compile(model([helper.make_node("Relu", ["x"], ["y"])], (1, 2, 4, 4)),
                       threads=1, cache=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
