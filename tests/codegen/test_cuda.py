"""The CUDA backend.

Without a GPU (CI): every kernel of every test model compiles to cubin through NVRTC, and
GPU-scheduled loop nests run in the loop interpreter — threads of a block phase by phase between
barriers — and match the numpy reference. With a GPU (@pytest.mark.cuda): compiled models run
and match onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from minicc.codegen.cuda.nvrtc import nvrtc_available
from minicc import CompileOptions, compile
from minicc.demo import LIGHT_MODELS, light_model_path
from minicc.ir.interpret import interpret
from minicc.abi import Launch
from minicc.ir.loops.gpu import lower_gpu
from tests.loops.util import ctx_for
from minicc.ir.loops.interp import buffer_arrays, run_kernel
from minicc.ir.loops.nodes import Buffer
from minicc.ir.parser import parse
from minicc.ir.passes.fuse import fuse
from minicc.runtime.cuda import cuda_device_available

NVRTC = nvrtc_available()
GPU = cuda_device_available()
needs_nvrtc = pytest.mark.skipif(NVRTC is not None, reason=f"NVRTC unavailable: {NVRTC}")
COMPILED: dict[str, int] = {}          # model -> kernels compiled to cubin (CI log summary)

# ---- schedules in the interpreter -----------------------------------------------------------

GRAPHS = {
    "elementwise": "func @main(%x: f32[5,33], %b: f32[33]) -> (f32[5,33]) {\n"
                   "  %a = add(%x, %b) : f32[5,33]\n  %y = gelu(%a) : f32[5,33]\n  return %y\n}",
    "softmax": "func @main(%x: f32[3,70]) -> (f32[3,70]) {\n"
               "  %y = softmax(%x) {axis=1} : f32[3,70]\n  return %y\n}",
    "softmax_axis0": "func @main(%x: f32[9,4]) -> (f32[9,4]) {\n"
                     "  %y = softmax(%x) {axis=0} : f32[9,4]\n  return %y\n}",
    "layer_norm": "func @main(%x: f32[4,40], %s: f32[40], %t: f32[40]) -> (f32[4,40]) {\n"
                  "  %y = layer_norm(%x, %s, %t) : f32[4,40]\n  return %y\n}",
    "reduce_mean": "func @main(%x: f32[2,3,130]) -> (f32[2,3,1]) {\n"
                   "  %y = reduce_mean(%x) {axes=[2]} : f32[2,3,1]\n  return %y\n}",
    "global_pool": "func @main(%x: f32[1,6,5,5]) -> (f32[1,6,1,1]) {\n"
                   "  %y = reduce_max(%x) {axes=[2, 3]} : f32[1,6,1,1]\n  return %y\n}",
    "max_pool": "func @main(%x: f32[1,2,7,7]) -> (f32[1,2,4,4]) {\n"
                "  %p = max_pool(%x) {kernel_shape=[3,3], pads=[1,1,1,1], strides=[2,2]} "
                ": f32[1,2,4,4]\n  return %p\n}",
    "concat_transpose": "func @main(%a: f32[2,3], %b: f32[2,5]) -> (f32[8,2]) {\n"
                        "  %c = concat(%a, %b) {axis=1} : f32[2,8]\n"
                        "  %t = transpose(%c) {perm=[1, 0]} : f32[8,2]\n  return %t\n}",
    "matmul_relu": "func @main(%a: f32[19,20], %b: f32[20,35]) -> (f32[19,35]) {\n"
                   "  %c = matmul(%a, %b) : f32[19,35]\n  %r = relu(%c) : f32[19,35]\n"
                   "  return %r\n}",
    "batched_matmul": "func @main(%a: f32[2,9,12], %b: f32[2,12,5]) -> (f32[2,9,5]) {\n"
                      "  %c = matmul(%a, %b) : f32[2,9,5]\n  return %c\n}",
}

# convolutions need constant weights to take the GEMM path: built in the test
CONVS = {
    "conv_pad_stride": ((1, 3, 9, 8), (5, 3, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    "conv_group": ((1, 4, 4, 4), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "conv_1x1": ((2, 8, 5, 5), (4, 8, 1, 1), {}),
    "depthwise": ((1, 3, 6, 6), (3, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
}


def _run_gpu_schedule(m) -> None:  # type: ignore[no-untyped-def]
    """Lower every group with the GPU schedules, run them in the interpreter, compare."""
    f = m.main
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
             for n, v in zip(f.input_names, f.inputs)}
    ref = interpret(m, feeds)
    env = {v: feeds[n] for n, v in zip(f.input_names, f.inputs)}
    consts = {op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"}
    env.update(consts)
    for g in fuse(f).groups:
        if g.is_view:
            env[g.output] = env[g.ops[0].inputs[0]].reshape(
                [int(d) for d in g.output.type.shape])
            continue
        vals = list(g.inputs()) + [g.output]
        bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
                for i, v in enumerate(vals)}
        low = lower_gpu(ctx_for(g, bufs, consts, target="cuda"))
        k = low.kernel
        assert not low.packed
        arrays = {bufs[v].name: np.ascontiguousarray(env[v]) for v in g.inputs()}
        arrs = buffer_arrays(k, **arrays)
        run_kernel(k, arrs)
        env[g.output] = arrs[bufs[g.output].name]
    for n, v in zip(f.output_names, f.outputs):
        np.testing.assert_allclose(env[v], ref[n], rtol=2e-5, atol=2e-5, err_msg=n)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_gpu_schedule_in_interpreter(name: str) -> None:
    _run_gpu_schedule(parse(GRAPHS[name]))


@pytest.mark.parametrize("name", sorted(CONVS))
def test_gpu_conv_schedule_in_interpreter(name: str) -> None:
    from minicc.ir.builder import GraphBuilder
    from minicc.ir.graph import Module
    from minicc.ir.types import DType, TensorType

    xs, ws, attrs = CONVS[name]
    b = GraphBuilder()
    x = b.input(TensorType(DType.F32, xs), "x")
    rng = np.random.default_rng(1)
    w = b.const(rng.standard_normal(ws).astype(np.float32), "w")
    bias = b.const(rng.standard_normal(ws[0]).astype(np.float32), "bias")
    c = b.op1("conv", [x, w, bias], attrs)
    r = b.op1("relu", [c])
    _run_gpu_schedule(Module((b.finish([r], ["y"]),)))


def test_missing_barrier_is_caught_by_the_interpreter() -> None:
    """The phase-by-phase interpreter must notice a race: drop the barrier after the shared-
    memory loads of the GEMM kernel and the result changes."""
    from dataclasses import replace

    from minicc.errors import InterpreterError
    from minicc.ir.loops.nodes import Barrier, Seq, Stmt

    m = parse(GRAPHS["matmul_relu"])
    g = fuse(m.main).groups[0]
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    k = lower_gpu(ctx_for(g, bufs, {}, target="cuda")).kernel

    def strip(s: Stmt) -> Stmt:
        if isinstance(s, Seq):
            return Seq(tuple(strip(x) for x in s.stmts if not isinstance(x, Barrier)))
        for field in ("body", "then"):
            if hasattr(s, field) and getattr(s, field) is not None:
                return replace(s, **{field: strip(getattr(s, field))})  # type: ignore
        return s
    racy = replace(k, body=strip(k.body))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((19, 20)).astype(np.float32)
    bb = rng.standard_normal((20, 35)).astype(np.float32)
    good = buffer_arrays(k, b0=a, b1=bb)
    run_kernel(k, good)
    bad = buffer_arrays(racy, b0=a, b1=bb)
    try:
        run_kernel(racy, bad)
    except InterpreterError:
        return
    assert not np.allclose(good["b2"], bad["b2"])


# ---- every kernel of every test model through NVRTC -------------------------------------------

@needs_nvrtc
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_compile_for_cuda(name: str, tmp_path) -> None:  # type: ignore
    cm = compile(light_model_path(name), options=CompileOptions(target="cuda",
                                                                cache_dir=str(tmp_path)))
    s = cm.artifact.summary
    assert cm.artifact.objects[0][:4] == b"\x7fELF"
    assert s["cubin_bytes"] > 0 and len(s["kernels"]) > 0
    COMPILED[name] = len(s["kernels"])
    # the artifact round-trips (and a GPU-less machine can still save it)
    p = cm.save(tmp_path / f"{name}.mcc")
    from minicc import load

    assert load(p).artifact.objects == cm.artifact.objects


@needs_nvrtc
def test_torch_models_compile_for_cuda(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import torch_models as tm

    for name in ("resnet18_like", "mobilenetv2_like", "bert_like", "lstm"):
        path = tmp_path / f"{name}.onnx"
        tm.export(name, path)
        cm = compile(str(path), options=CompileOptions(target="cuda", cache_dir=str(tmp_path)))
        COMPILED[name] = len(cm.artifact.summary["kernels"])
        assert cm.artifact.summary["cubin_bytes"] > 0


@needs_nvrtc
def test_gpu_check_dry_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """examples/gpu_check.py, the one command a GPU machine runs, checked without one."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import gpu_check

    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry-run", "--no-torch", "--models", "light_squeezenet",
                           "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["dry_run"] and r["models"][0]["model"] == "light_squeezenet"
    assert r["models"][0]["kernels"] > 0 and r["models"][0]["cubin_bytes"] > 0
    assert r["models"][0]["tf32_mma_kernels"] > 0 and r["models"][0]["fp16_mma_kernels"] > 0
    # the CUDA C of each precision ran on this CPU and matched onnxruntime (with a C++ compiler)
    from minicc.codegen.cuda.host import host_compiler
    if host_compiler() is not None:
        assert all(r["models"][0][f"{p}host_matches_onnxruntime"] for p in ("", "tf32_", "fp16_"))
    # the GPU tests ran on tests/host_cupy.py's device (this CPU), all of them
    assert r["tests"]["rc"] == 0 and "passed" in r["tests"]["summary"], r["tests"]
    assert "skipped" not in r["tests"]["summary"] and "would_run" in r["bench"]
    assert any("tf32" in x for x in r["bench"]["would_run"])


@needs_nvrtc
def test_cuda_source_dump_and_launch_bounds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cm = compile(parse(GRAPHS["matmul_relu"]), options=CompileOptions(
        target="cuda", dump=("cuda", "loops"), cache_dir=str(tmp_path)))
    src = cm.report.dumps["cuda"]
    assert 'extern "C" __global__ void __launch_bounds__(' in src
    assert "__restrict__" in src and "__shared__" in src and "__syncthreads();" in src
    assert "block.y" in cm.report.dumps["loops"] and "thread.x" in cm.report.dumps["loops"]
    step = next(s for s in cm.artifact.steps if isinstance(s, Launch))
    assert step.block[0] * step.block[1] <= 1024


def test_nvrtc_errors_are_toolchain_errors() -> None:
    from minicc.codegen.cuda.nvrtc import compile_cuda
    from minicc.errors import ToolchainError

    if NVRTC is not None:
        with pytest.raises(ToolchainError, match="NVRTC is not available"):
            compile_cuda("int main() {}")
        return
    with pytest.raises(ToolchainError, match=r"(?s)NVRTC failed.*repro: nvcc"):
        compile_cuda('extern "C" __global__ void k() { undefined_thing(); }')


def test_running_cuda_without_a_gpu_is_a_clear_error(tmp_path) -> None:  # type: ignore
    if GPU is None:
        pytest.skip("a GPU is present")
    if NVRTC is not None:
        pytest.skip("NVRTC unavailable")
    from minicc.errors import ArtifactError

    cm = compile(parse(GRAPHS["softmax"]), options=CompileOptions(target="cuda",
                                                                 cache_dir=str(tmp_path)))
    with pytest.raises(ArtifactError, match="needs a CUDA device"):
        cm.run({"x": np.zeros((3, 70), np.float32)})


# ---- on a GPU ------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(GPU is not None, reason=f"no CUDA device: {GPU}")
@pytest.mark.parametrize("name", ["squeezenet", "resnet50", "shufflenet", "bvlc_alexnet"])
def test_light_models_on_gpu_match_onnxruntime(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    from minicc.bench import he_weights

    proto = he_weights(onnx.load(light_model_path(name)))   # (activations that keep their scale)
    cm = compile(proto, options=CompileOptions(target="cuda"))
    x = {i.name: np.random.default_rng(0).random([d.dim_value for d in
                                                  i.type.tensor_type.shape.dim]).astype(np.float32)
         for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}}
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, x)
    got = cm.run(x)
    for o, r in zip(sess.get_outputs(), ref):
        np.testing.assert_allclose(got[o.name], r, rtol=1e-3, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(GPU is not None, reason=f"no CUDA device: {GPU}")
def test_gpu_matmul_and_graph_replay() -> None:
    m = parse(GRAPHS["matmul_relu"])
    cm = compile(m, options=CompileOptions(target="cuda", cuda_graph=True))
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((19, 20)).astype(np.float32),
             "b": rng.standard_normal((20, 35)).astype(np.float32)}
    ref = interpret(m, feeds)["r"]
    for _ in range(2):  # the second run replays the captured graph
        np.testing.assert_allclose(cm.run(feeds)["r"], ref, rtol=1e-4, atol=1e-4)



@pytest.mark.cuda
@pytest.mark.skipif(GPU is not None, reason=f"no CUDA device: {GPU}")
def test_a_saved_cuda_model_loads_and_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """build -> save -> load -> run on the GPU: the same outputs as the model compiled."""
    from minicc import load

    m = parse(GRAPHS["softmax"])
    cm = compile(m, options=CompileOptions(target="cuda", cache=False))
    x = {"x": np.random.default_rng(0).standard_normal((3, 70)).astype(np.float32)}
    cm.save(tmp_path / "m.mcc")
    again = load(tmp_path / "m.mcc")
    assert again.target == "cuda"
    np.testing.assert_array_equal(again.run(x)["y"], cm.run(x)["y"])
    np.testing.assert_allclose(again.run(x)["y"], interpret(m, x)["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(GPU is not None, reason=f"no CUDA device: {GPU}")
def test_profile_times_every_kernel_on_the_gpu() -> None:
    """`minicc profile --target cuda`: CUDA events around each launch, one row per kernel."""
    from minicc.profile import profile

    p = profile(parse(GRAPHS["layer_norm"]), repeat=3, target="cuda")
    assert p.target == "cuda" and p.kernels and all(k.ms > 0 for k in p.kernels)
    assert p.total_ms > 0 and len(p.runs) == 3


def test_grid_stride_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import minicc.ir.loops.gpu as gpu

    monkeypatch.setattr(gpu, "MAX_BLOCKS", 2)
    m = parse("func @main(%x: f32[1000]) -> (f32[1000]) {\n  %y = tanh(%x) : f32[1000]\n"
              "  return %y\n}")
    g = fuse(m.main).groups[0]
    bufs = {v: Buffer(f"b{i}", v.type.dtype, (1000,)) for i, v in enumerate([g.inputs()[0],
                                                                              g.output])}
    k = lower_gpu(ctx_for(g, bufs, {}, target="cuda")).kernel
    # a grid of MAX_BLOCKS blocks of threads, looped over: split by both, the grid loop inside
    assert [s.name for s in k.trace][:3] == ["split", "split", "reorder"], k.trace
    _run_gpu_schedule(m)
