"""--precision fp16: f32 tensors between kernels and f32 weights stored as f16, computed in f32.
Half the weights and the arena, outputs within f16 rounding of fp32, conversions in the code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import minicc
from minicc.cli import main
from minicc.errors import MiniccError
from tests.test_quantize import cnn


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cnn(tmp_path_factory.mktemp("fp16") / "cnn.onnx")


def test_fp16_storage_halves_memory_and_keeps_the_result(model: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((1, 3, 16, 16), np.float32)
    a = minicc.compile(str(model), threads=1)
    b = minicc.compile(str(model), threads=1, precision="fp16", dump=("asm",), cache=False)
    ya, yb = a.run({"x": x})["y"], b.run({"x": x})["y"]
    assert yb.dtype == np.float32                       # the caller's arrays stay f32
    rel = np.linalg.norm(yb - ya) / np.linalg.norm(ya)
    assert 0 < rel < 2e-3                               # f16 rounding, not f32-exact
    sa, sb = a.artifact.summary, b.artifact.summary
    assert sb["weights_bytes"] <= 0.55 * sa["weights_bytes"]
    assert sb["arena_bytes"] < sa["arena_bytes"]
    asm = b.report.dumps["asm"]
    assert "vcvtph2ps" in asm and "vcvtps2ph" in asm
    b.save(tmp_path / "m.mcc")
    np.testing.assert_array_equal(minicc.load(tmp_path / "m.mcc").run({"x": x})["y"], yb)


def test_fp16_two_threads_and_the_cli(model: Path, capsys: pytest.CaptureFixture) -> None:
    x = np.random.default_rng(1).random((1, 3, 16, 16), np.float32)
    ref = minicc.compile(str(model), threads=1, precision="fp16").run({"x": x})["y"]
    got = minicc.compile(str(model), threads=2, precision="fp16").run({"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)
    assert main(["compile", str(model), "--precision", "fp16", "--threads", "1"]) == 0


def test_unknown_precision_is_refused(model: Path) -> None:
    with pytest.raises(MiniccError, match="precision must be one of fp32, fp16"):
        minicc.compile(str(model), precision="bf16")


def test_fp16_compiles_for_cuda(model: Path) -> None:
    from minicc.codegen.cuda.nvrtc import nvrtc_available

    why = nvrtc_available()
    if why is not None:
        pytest.skip(f"no NVRTC: {why}")
    cm = minicc.compile(str(model), target="cuda", precision="fp16", dump=("cuda",),
                        cache=False)
    src = cm.report.dumps["cuda"]
    assert "unsigned short* __restrict__" in src and "minicc_h2f(" in src


def test_f16_arithmetic_on_cuda_is_a_clear_error(tmp_path: Path) -> None:
    from minicc.codegen.cuda.nvrtc import nvrtc_available

    if nvrtc_available() is not None:
        pytest.skip("no NVRTC")
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "h", [
        helper.make_tensor_value_info(n, TensorProto.FLOAT16, [8]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [8])])
    p = tmp_path / "h.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    with pytest.raises(MiniccError, match="uses f16, which the CUDA backend does not"):
        minicc.compile(str(p), target="cuda", cache=False)
