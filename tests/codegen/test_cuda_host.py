"""The CUDA C minicc generates, run on the CPU (minicc.emulate_cuda): the renderer's text,
the launch configurations and the arena plan against the reference interpreter and onnxruntime,
on machines without a GPU. (The loop-IR emulator checks the schedules; this checks what the
GPU would be given.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicc
from minicc.abi import Launch
from minicc.errors import ArtifactError
from minicc.ir.interpret import interpret
from minicc.ir.parser import parse
from minicc import emulate_cuda as emulate
from minicc.codegen.cuda.host import host_compiler
from tests.codegen.test_cuda import CONVS, GRAPHS, needs_nvrtc
from tests.codegen.test_mma import conv, int8_text, matmul, piped

pytestmark = [needs_nvrtc, pytest.mark.skipif(host_compiler() is None,
                                              reason="no C++ compiler")]
TOL = {"fp32": 2e-5, "tf32": 1e-2, "fp16": 1e-2}


def _feeds(m: minicc.ir.graph.Module, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = m.main
    return {n: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
            for n, v in zip(f.input_names, f.inputs)}


def _check(m: minicc.ir.graph.Module, precision: str = "fp32", **kw) -> minicc.CompiledModel:
    feeds = _feeds(m)
    ref = interpret(m, feeds)
    cm = minicc.compile(m, target="cuda", precision=precision, cache=False, **kw)
    got = emulate(cm).run(feeds)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=TOL[precision], atol=TOL[precision],
                                   err_msg=f"{k} ({precision})")
    return cm


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graphs_on_the_host_match_the_interpreter(name: str, precision: str) -> None:
    """Elementwise, softmax and layer norm (block all-reduces: warp shuffles), pools, and
    matmuls (shared-memory tiles; TF32 and FP16 on the tensor cores' mma and ldmatrix)."""
    cm = _check(parse(GRAPHS[name]), precision)
    if precision != "fp32" and "matmul" in name:
        assert any(k["schedule"].startswith("gpu.mma") for k in cm.artifact.summary["kernels"])


@pytest.mark.parametrize("name", sorted(CONVS))
def test_convs_on_the_host_match_the_interpreter(name: str) -> None:
    xs, ws, attrs = CONVS[name]
    _check(conv(xs, ws, attrs))


@pytest.mark.parametrize("stages", [2, 3])
def test_pipelined_tensor_core_tiles_on_the_host(stages: int) -> None:
    """cp.async into rotating shared buffers (the host copies at once), ldmatrix, mma."""
    cm = _check(matmul(150, 70, 140), "tf32", dump=("cuda",),
                schedules={"k0_relu": piped(stages)})
    assert f"minicc_cp_async_wait<{stages - 1}>" in cm.report.dumps["cuda"]


@pytest.mark.parametrize("shape", ["m16n8k32.s8u8", None])
def test_int8_convs_on_the_host_are_exact(shape: str | None) -> None:
    """int8 conv on the tensor cores' m16n8k32 (a schedule) and on __dp4a (the default):
    the same float outputs as the CPU build of the same model."""
    from tests.codegen.test_int8 import conv_model

    mod, x = conv_model(16, 32, 14, 3, 7, 1, 1)
    sched = {"k0_relu": int8_text(shape, 64, 64, 16, 32, 32)} if shape else None
    cm = minicc.compile(mod, target="cuda", cache=False, schedules=sched)
    got = emulate(cm).run({"x": x})["y"]
    want = minicc.compile(mod, threads=1, cache=False).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 90), n=st.integers(1, 70),
       precision=st.sampled_from(["fp32", "tf32", "fp16"]))
def test_matmul_shapes_on_the_host(m: int, k: int, n: int, precision: str) -> None:
    """Any shape: tails in M, N and K in every tile (and the K tail of the mma's k step)."""
    _check(matmul(m, k, n), precision)


def test_a_wrong_launch_is_caught() -> None:
    """The check can fail: a launch that covers one block too few leaves outputs unwritten."""
    m = matmul(150, 40, 140)
    cm = minicc.compile(m, target="cuda", cache=False)
    art = cm.artifact
    steps = tuple(replace(s, grid=(s.grid[0] - 1,) + s.grid[1:])
                  if isinstance(s, Launch) and s.grid[0] > 1 else s for s in art.steps)
    feeds = _feeds(m)
    got = emulate(replace(art, steps=steps)).run(feeds)["r"]
    assert not np.allclose(got, interpret(m, feeds)["r"], rtol=1e-4, atol=1e-4)


def test_divergent_barriers_are_an_error() -> None:
    """Threads at two different __syncthreads deadlock a GPU: refused with the block named."""
    cm = minicc.compile(parse(GRAPHS["softmax"]), target="cuda", cache=False)
    src = cm.artifact.source
    i = src.index("__syncthreads();")
    bad = src[:i] + "if (threadIdx.x == 0) __syncthreads();\nelse __syncthreads();" + \
        src[i + len("__syncthreads();"):]
    ex = emulate(replace(cm.artifact, source=bad))
    with pytest.raises(ArtifactError, match=r"block \(0, 0, 0\): threads wait at different "
                                            r"__syncthreads"):
        ex.run(_feeds(parse(GRAPHS["softmax"])))


def test_a_cpu_artifact_is_refused() -> None:
    cm = minicc.compile(parse(GRAPHS["elementwise"]), cache=False)
    with pytest.raises(ArtifactError, match="runs CUDA artifacts; this one is for llvm"):
        emulate(cm)
    with pytest.raises(ArtifactError, match="not int"):
        emulate(3)


def test_the_cli_runs_a_models_cuda_c_on_this_cpu(tmp_path, capsys) -> None:  # type: ignore
    """`minicc run M --target cuda --emulate --compare onnxruntime`: a real ONNX model's CUDA
    C, run here, against onnxruntime; --emulate without --target cuda is refused."""
    import onnx
    from onnx import TensorProto, helper

    from tests.test_cli import run

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, (8, 3, 3, 3),
                           rng.standard_normal(8 * 27).astype(np.float32))
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 12, 12))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 8, 1, 1))], [w])
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    rc, out, _ = run(capsys, "run", p, "--target", "cuda", "--emulate", "--random-inputs",
                     "--compare", "onnxruntime")
    assert rc == 0 and "CUDA C on this CPU" in out and "y: max abs error" in out and \
        "MISMATCH" not in out
    rc, _, err = run(capsys, "run", p, "--emulate", "--random-inputs")
    assert rc == 2 and "--emulate runs CUDA C on this CPU: give --target cuda" in err
    rc, _, err = run(capsys, "run", p, "--target", "cuda", "--emulate", "--interp",
                     "--random-inputs")
    assert rc == 2 and "give one of them" in err


def test_tensor_names_that_are_cuda_words_or_numbers(tmp_path) -> None:  # type: ignore
    """Buffers are named after the model's tensors: names such as `min`, `0`, `threadIdx` or
    `b` (beside the batch loop b) must still give valid, correct CUDA C."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("MatMul", ["min", "b"], ["0"]),
         helper.make_node("Add", ["0", "threadIdx"], ["float"])], "g",
        [helper.make_tensor_value_info("min", f, (2, 9, 12)),
         helper.make_tensor_value_info("b", f, (2, 12, 5)),
         helper.make_tensor_value_info("threadIdx", f, (5,))],
        [helper.make_tensor_value_info("float", f, (2, 9, 5))])
    p = tmp_path / "names.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    rng = np.random.default_rng(0)
    feeds = {"min": rng.standard_normal((2, 9, 12)).astype(np.float32),
             "b": rng.standard_normal((2, 12, 5)).astype(np.float32),
             "threadIdx": rng.standard_normal(5).astype(np.float32)}
    got = emulate(minicc.compile(str(p), target="cuda", cache=False)).run(feeds)
    want = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got["float"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.torch
def test_a_quantized_model_on_the_host_gives_the_cpu_int8_outputs(tmp_path) -> None:  # type: ignore
    """`minicc.quantize` then the CUDA target (__dp4a GEMMs, the requantizing epilogue): the
    same integers as the CPU's INT8 build, so the same outputs to float rounding."""
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import torch_models as tm

    feeds = tm.export("mobilenetv2_like", tmp_path / "m.onnx")
    q = minicc.quantize(str(tmp_path / "m.onnx"), "random:4")
    want = minicc.compile(q.module, threads=1, cache=False).run(feeds)
    cm = minicc.compile(q.module, target="cuda", cache=False)
    from minicc.codegen.cuda.render import KERNELS_MARK

    assert "minicc_dpbusd(" in cm.artifact.source.split(KERNELS_MARK)[1]    # __dp4a GEMMs
    got = emulate(cm).run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)


def test_a_missing_barrier_shows_in_the_gemm() -> None:
    """A thread runs until it waits, so without a barrier it reads shared tiles the others
    have not written yet (or have already overwritten): dropping either of the FP32 GEMM
    kernel's two __syncthreads() gives wrong products. (Not every race shows this way; the
    loop-IR emulator's phases check them all.)"""
    m = matmul(150, 70, 140)
    feeds = _feeds(m)
    want = interpret(m, feeds)["r"]
    cm = minicc.compile(m, target="cuda", cache=False)
    src = cm.artifact.source
    at = [i for i in range(len(src)) if src.startswith("__syncthreads();", i)]
    assert len(at) == 2
    for i in at:
        bad = src[:i] + src[i + len("__syncthreads();"):]
        got = emulate(replace(cm.artifact, source=bad)).run(feeds)["r"]
        assert np.abs(got - want).max() > 1.0


def test_a_launch_past_the_cuda_limits_is_refused() -> None:
    """As a GPU would: more than 1024 threads in a block is not a launch."""
    cm = minicc.compile(parse(GRAPHS["elementwise"]), target="cuda", cache=False)
    steps = tuple(replace(s, block=(2048, 1, 1)) if isinstance(s, Launch) else s
                  for s in cm.artifact.steps)
    with pytest.raises(ArtifactError, match=r"block \(2048, 1, 1\) is not a valid CUDA launch"):
        emulate(replace(cm.artifact, steps=steps)).run(_feeds(parse(GRAPHS["elementwise"])))


def test_the_first_kernel_that_differs_on_the_gpu_is_named(monkeypatch) -> None:  # type: ignore
    """gpu_check's lead for a model that mismatches on a GPU: CudaExecutable.trace (here on
    tests/host_cupy.py's device) beside HostCudaExecutable.trace names the first kernel whose
    results differ. A softmax kernel made wrong on the "GPU" side is found; none otherwise."""
    import sys

    from minicc import __version__
    from minicc.driver import host_op
    from minicc.runtime.cuda import CudaExecutable
    from minicc.runtime.cuda_host import first_divergence
    from tests import host_cupy

    for name, mod in host_cupy.modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    m = parse("func @main(%a: f32[19,20], %b: f32[20,35]) -> (f32[19,35]) {\n"
              "  %c = matmul(%a, %b) : f32[19,35]\n  %t = tanh(%c) : f32[19,35]\n"
              "  %s = softmax(%t) {axis=1} : f32[19,35]\n  return %s\n}")
    art = minicc.compile(m, target="cuda", cache=False).artifact
    feeds = _feeds(m)
    host = emulate(art).trace(feeds)
    assert len(host) == len(art.steps) == 2
    same = CudaExecutable(art, __version__, host_op).trace(feeds)
    assert first_divergence(art, same, host) is None
    i = art.source.index("k1_softmax(")
    wrong = replace(art, source=art.source[:i] + art.source[i:].replace("expf(", "exp2f(", 1))
    lead = first_divergence(art, CudaExecutable(wrong, __version__, host_op).trace(feeds), host)
    assert lead is not None and lead["step"] == 1 and lead["kernel"] == "k1_softmax", lead
    assert lead["schedule"] and lead["words_differing"] > 0


def test_gpu_checks_gpu_path_on_the_host_device(monkeypatch, tmp_path) -> None:  # type: ignore
    """examples/gpu_check.py as it runs on a GPU (not --dry-run), on tests/host_cupy.py's
    device at small sizes: the model against onnxruntime with graph replay, the benchmarks
    (cuBLAS through torch is not there: recorded, not fatal), the tensor-core stage, the JSON."""
    import json
    import sys
    from pathlib import Path

    from tests import host_cupy

    for name, mod in host_cupy.modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "examples"))
    import gpu_check

    out = tmp_path / "check.json"
    assert gpu_check.main(["--no-tests", "--no-torch", "--models", "light_squeezenet",
                           "--gemm-n", "64", "--repeat", "1", "--run-many-inputs", "2",
                           "--run-many-model", "squeezenet", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    row = r["models"][0]
    assert row["matches_onnxruntime"] and row["graph_replay_equal"]
    assert row["tf32_matches_onnxruntime"] and row["fp16_matches_onnxruntime"]
    gemms = r["bench"]["gemm"]
    assert len(gemms) == 9 and all(g["minicc_rel_err"] < 1e-2 for g in gemms), gemms
    assert all("cublas_gflops" in g for g in gemms if g["precision"] == "fp32")
    assert r["bench"]["run_many"]["streams_2_outputs_equal"]


def test_a_cuda_model_loads_its_cubin_on_an_sm90_device(monkeypatch) -> None:  # type: ignore
    """runtime/cuda.py's path on a GPU of the artifact's architecture: the cubin loaded from
    memory (Module.load), each kernel looked up among the cubin's function symbols by the
    name the launch steps use (extern "C": unmangled), then run (from its source, here)."""
    import sys

    from minicc import __version__
    from minicc.driver import host_op
    from minicc.runtime.cuda import CudaExecutable
    from tests import host_cupy

    for name, mod in host_cupy.modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(host_cupy.Device, "compute_capability", "90")
    m = parse(GRAPHS["layer_norm"])
    cm = minicc.compile(m, target="cuda", precision="tf32", cache=False)
    art = cm.artifact
    names = host_cupy.cubin_functions(bytes(art.objects[0]))
    assert {s.kernel for s in art.steps if isinstance(s, Launch)} <= names, names
    host_cupy.register(art)
    exe = CudaExecutable(art, __version__, host_op)
    assert isinstance(exe.module, host_cupy._Function.Module)        # not rebuilt from source
    feeds = _feeds(m)
    np.testing.assert_allclose(exe.run(feeds)["y"], interpret(m, feeds)["y"], rtol=2e-5,
                               atol=2e-5)
