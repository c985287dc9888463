"""Tensor cores (`--precision tf32|fp16` on the CUDA target): the `gpu.mma` template in the
loop-IR emulator, which runs each warp's mma.sync from its 32 lanes' fragment registers in the
PTX layout (ir/loops/mma.py); the NVRTC compile of the kernels; and, where a GPU is, the same
kernels on it."""

from __future__ import annotations

import numpy as np
import pytest

import minicc
from minicc.codegen.cuda.nvrtc import nvrtc_available
from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Module
from minicc.ir.interpret import interpret
from minicc.ir.loops import gpu_mma
from minicc.ir.loops.gpu import lower_gpu
from minicc.ir.loops.interp import buffer_arrays, run_kernel
from minicc.ir.loops.nodes import Buffer, WarpMma, walk
from minicc.ir.loops.parser import check_roundtrip
from minicc.ir.loops.trace import format_schedule
from minicc.ir.parser import parse
from minicc.ir.passes.fuse import fuse
from minicc.ir.scalar import round_tf32
from minicc.ir.types import DType, TensorType
from minicc.runtime.cuda import cuda_device_available
from tests.loops.util import ctx_for

NVRTC = nvrtc_available()
GPU = cuda_device_available()
needs_nvrtc = pytest.mark.skipif(NVRTC is not None, reason=f"NVRTC unavailable: {NVRTC}")
TENSOR_CORE: dict[str, tuple[int, int]] = {}    # model -> (mma kernels, all kernels): CI log


def matmul(m: int, k: int, n: int, batch: tuple[int, ...] = ()) -> Module:
    b = ", ".join(map(str, batch)) + ", " if batch else ""
    return parse(f"func @main(%a: f32[{b}{m},{k}], %b: f32[{b}{k},{n}]) -> (f32[{b}{m},{n}]) {{\n"
                 f"  %c = matmul(%a, %b) : f32[{b}{m},{n}]\n  %r = relu(%c) : f32[{b}{m},{n}]\n"
                 "  return %r\n}")


def conv(xs: tuple, ws: tuple, attrs: dict) -> Module:
    b = GraphBuilder()
    x = b.input(TensorType(DType.F32, xs), "x")
    rng = np.random.default_rng(1)
    w = b.const(rng.standard_normal(ws).astype(np.float32), "w")
    bias = b.const(rng.standard_normal(ws[0]).astype(np.float32), "bias")
    y = b.op1("relu", [b.op1("conv", [x, w, bias], attrs)])
    return Module((b.finish([y], ["y"]),))


def emulate(m: Module, precision: str, rounded: bool = False, knobs: dict | None = None
            ) -> tuple[dict, dict, list[str]]:
    """Every group lowered for the CUDA target at `precision` and run in the emulator: the
    outputs, the interpreter's (on operands rounded as the tensor cores read them where
    `rounded`), and the kernels' schedules."""
    f = m.main
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
             for n, v in zip(f.input_names, f.inputs)}
    env = {v: feeds[n] for n, v in zip(f.input_names, f.inputs)}
    consts = {op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"}
    env.update(consts)
    scheds = []
    for g in fuse(f).groups:
        if g.is_view:
            env[g.output] = env[g.ops[0].inputs[0]].reshape([int(d) for d in
                                                            g.output.type.shape])
            continue
        vals = list(g.inputs()) + [g.output]
        bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
                for i, v in enumerate(vals)}
        ctx = ctx_for(g, bufs, consts, target="cuda", precision=precision)
        point = None
        if knobs is not None and gpu_mma.GpuMma().applies(ctx):
            point = {**gpu_mma.GpuMma().defaults(ctx), **knobs}
        k = lower_gpu(ctx, point).kernel
        scheds.append(format_schedule(k.schedule, k.trace))
        check_roundtrip(k, "in the mma test")
        arrs = buffer_arrays(k, **{bufs[v].name: np.ascontiguousarray(env[v])
                                   for v in g.inputs()})
        run_kernel(k, arrs)
        env[g.output] = arrs[bufs[g.output].name]
    got = {n: env[v] for n, v in zip(f.output_names, f.outputs)}
    if rounded:
        r = (lambda a: round_tf32(a)) if precision == "tf32" else \
            (lambda a: a.astype(np.float16).astype(np.float32))
        feeds = {n: r(a) for n, a in feeds.items()}
    return got, interpret(m, feeds), scheds


@pytest.mark.parametrize("precision", ["tf32", "fp16"])
@pytest.mark.parametrize("shape", [(40, 20, 35, ()), (16, 8, 8, ()), (9, 12, 5, (2,))])
def test_mma_matmul_in_the_emulator(precision: str, shape: tuple) -> None:
    """Ragged M, N and K (tails in every dimension), a batch; against the reference on the
    operands rounded as the tensor core reads them: only the summation order differs."""
    got, ref, scheds = emulate(matmul(*shape), precision, rounded=True)
    assert all(s.startswith("gpu.mma") for s in scheds), scheds
    np.testing.assert_allclose(got["r"], ref["r"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["tf32", "fp16"])
@pytest.mark.parametrize("xs,ws,attrs", [((1, 3, 9, 8), (5, 3, 3, 3), {"pads": [1, 1, 1, 1],
                                                                       "strides": [2, 2]}),
                                         ((2, 8, 5, 5), (20, 8, 1, 1), {})])
def test_mma_convolution_in_the_emulator(precision: str, xs: tuple, ws: tuple,
                                         attrs: dict) -> None:
    """Implicit-GEMM convolution with bias and ReLU fused in the epilogue: within the
    precision's own tolerance of the float32 interpreter (10 mantissa bits per operand)."""
    got, ref, scheds = emulate(conv(xs, ws, attrs), precision)
    assert scheds[0].startswith("gpu.mma") and "mma(m16n8k" in scheds[0]
    scale = float(np.abs(ref["y"]).max())
    np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-2, atol=2e-3 * scale)


def test_a_wrong_fragment_layout_is_caught_by_the_emulator(monkeypatch) -> None:
    """The emulator gathers each lane's registers by the PTX layout, not by the template's:
    a template that loads A's registers 1 and 2 swapped computes a wrong product there."""
    step, regs = gpu_mma.A_LAYOUT["m16n8k8.tf32"]
    swapped = [regs[0], regs[2], regs[1], regs[3]]
    monkeypatch.setattr(gpu_mma, "A_LAYOUT", {**gpu_mma.A_LAYOUT,
                                              "m16n8k8.tf32": (step, swapped)})
    got, ref, _ = emulate(matmul(16, 8, 8), "tf32", rounded=True)
    assert not np.allclose(got["r"], ref["r"], rtol=1e-3, atol=1e-3)


PIPE = {"BM": 32, "BN": 32, "BK": 16, "WM": 16, "WN": 16}


def piped(stages: int) -> str:
    """A pipelined schedule within 48 KiB of shared memory: 128 x 128 tiles at 2 stages,
    128 x 64 at 3."""
    bn = 128 if stages == 2 else 64
    return (f"gpu.mma: tile(BM=128, BN={bn}, BK=16, WM=64, WN=32); cache_shared(A, pad=4); "
            f"cache_shared(B, pad=8); mma(m16n8k8.tf32); pipeline(stages={stages})")


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("m", [lambda: matmul(40, 52, 35), lambda: matmul(16, 8, 24),
                               lambda: conv((1, 3, 9, 8), (5, 3, 3, 3),
                                            {"pads": [1, 1, 1, 1], "strides": [2, 2]})])
def test_pipelined_tiles_in_the_emulator(stages: int, m) -> None:  # type: ignore[no-untyped-def]
    """`pipeline(stages=2|3)`: tiles staged raw by cp.async into rotating shared buffers while
    the warps compute on the previous one (K of 1 to 4 tiles: fewer tiles than stages too, and
    a conv's zero padding by the zero-fill form); the same products as without."""
    mod = m()
    got, ref, scheds = emulate(mod, "tf32", rounded=True, knobs={**PIPE, "stages": stages})
    assert f"pipeline(stages={stages})" in scheds[0], scheds
    plain, _, _ = emulate(mod, "tf32", rounded=True, knobs={**PIPE, "stages": 1})
    for k in ref:
        np.testing.assert_allclose(got[k], plain[k], rtol=1e-6, atol=1e-6)
        if "r" in ref:                   # (the matmuls: against the rounded reference)
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5)


def test_a_missing_async_wait_is_caught_by_the_emulator(monkeypatch) -> None:
    """Waiting for one group fewer than the pipeline needs computes on a tile whose copies have
    not landed: the emulator keeps them pending until the wait, as the GPU does."""
    from minicc.ir.loops import nodes

    monkeypatch.setattr(gpu_mma, "AsyncWait", lambda n: nodes.AsyncWait(n + 1))
    got, ref, _ = emulate(matmul(40, 52, 35), "tf32", rounded=True,
                          knobs={**PIPE, "stages": 2})
    assert not np.allclose(got["r"], ref["r"], rtol=1e-3, atol=1e-3)


def test_pipelining_needs_plain_operands_and_tf32() -> None:
    m = matmul(32, 16, 24)
    text = ("gpu.mma: tile(BM=32, BN=32, BK=16, WM=16, WN=16); cache_shared(A, pad=4); "
            "cache_shared(B, pad=8); mma({}); pipeline(stages=2)")
    with pytest.raises(minicc.MiniccError, match=r"pipeline\(stages>1\) stages f32 tiles"):
        minicc.compile(m, target="cuda", precision="fp16", cache=False,
                       schedules={"k0_relu": text.format("m16n8k16.f16")})
    # what cp.async can copy: an f32 element as it is in memory, or zero where a condition
    # fails; not one a fused op computes or a conversion makes
    from minicc.ir.compute import Cast, Const, Var, call, select
    from minicc.ir.loops.nodes import BufLoad

    x = Buffer("x", DType.F32, (4, 4))
    h = Buffer("h", DType.F16, (4, 4))
    i, j = Var("i"), Var("j")
    ld = BufLoad(x, (i, j), DType.F32)
    assert gpu_mma._plain(ld) == (ld, None)
    assert gpu_mma._plain(select(i.lt(2), ld, Const(0.0, DType.F32))) == (ld, i.lt(2))
    for bad in (call("add", ld, ld), Cast(BufLoad(h, (i, j), DType.F16), DType.F32),
                select(i.lt(2), ld, Const(1.0, DType.F32))):
        assert gpu_mma._plain(bad) is None


def test_round_tf32_rounds_to_nearest_ties_away() -> None:
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -10)                 # TF32's spacing at 1
    x = np.array([1 + 2.0 ** -11, -(1 + 2.0 ** -11), 1 + 2.0 ** -12, 1 + 3 * 2.0 ** -12,
                  np.inf, -np.inf, 3.0e38], np.float32)
    got = round_tf32(x)
    np.testing.assert_array_equal(got[:6], [one + ulp, -(one + ulp), one, one + ulp, np.inf,
                                            -np.inf])
    assert np.isnan(round_tf32(np.array([np.nan], np.float32)))[0]
    bits = got.view(np.uint32)
    assert not (bits[:4] & 0x1FFF).any()         # 13 low mantissa bits cleared


def test_precision_tf32_is_for_the_cuda_target() -> None:
    with pytest.raises(minicc.MiniccError, match="tf32 is the GPU's tensor-core math"):
        minicc.compile(matmul(8, 8, 8), precision="tf32")


def test_tf32_before_sm80_keeps_the_fp32_template() -> None:
    f = matmul(32, 16, 24).main
    g = [g for g in fuse(f).groups if not g.is_view][0]
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    k = lower_gpu(ctx_for(g, bufs, {}, target="cuda", precision="tf32",
                          cuda_arch="sm_75")).kernel
    assert k.schedule.startswith("gpu.gemm") and not any(isinstance(s, WarpMma)
                                                         for s in walk(k.body))


def test_a_bad_mma_schedule_names_the_problem() -> None:
    m = matmul(32, 16, 24)
    name = "k0_relu"
    with pytest.raises(minicc.MiniccError, match="WM=24 must be a multiple of 16"):
        minicc.compile(m, target="cuda", precision="tf32", cache=False, schedules={
            name: "gpu.mma: tile(BM=48, BN=32, BK=32, WM=24, WN=16); cache_shared(A, pad=4); "
                  "cache_shared(B, pad=8); mma(m16n8k8.tf32)"})


@needs_nvrtc
def test_pipelined_kernels_compile_with_nvrtc() -> None:
    for stages in (2, 3):
        cm = minicc.compile(matmul(256, 96, 200), target="cuda", precision="tf32",
                            dump=("cuda",), cache=False,
                            schedules={"k0_relu": piped(stages)})
        src = cm.report.dumps["cuda"]
        assert "cp.async.ca.shared.global" in src and \
            f"minicc_cp_async_wait<{stages - 1}>();" in src
        assert cm.artifact.summary["cubin_bytes"] > 0


@needs_nvrtc
@pytest.mark.parametrize("precision,ptx", [("tf32", "m16n8k8.row.col.f32.tf32.tf32.f32"),
                                           ("fp16", "m16n8k16.row.col.f32.f16.f16.f32")])
def test_tensor_core_kernels_compile_with_nvrtc(precision: str, ptx: str) -> None:
    cm = minicc.compile(matmul(256, 96, 200), target="cuda", precision=precision,
                        dump=("cuda",), cache=False)
    src = cm.report.dumps["cuda"]
    assert f"mma.sync.aligned.{ptx}" in src
    assert cm.artifact.summary["kernels"][0]["schedule"].startswith("gpu.mma")
    assert cm.artifact.summary["cubin_bytes"] > 0


@needs_nvrtc
@pytest.mark.parametrize("name,precision,least", [("squeezenet", "fp16", 26),
                                                  ("resnet50", "tf32", 53)])
def test_light_models_compile_for_tensor_cores(name: str, precision: str, least: int) -> None:
    """Every conv and matmul of the model on the tensor-core template, through NVRTC (the CI
    log counts them)."""
    from minicc.demo import light_model_path

    cm = minicc.compile(light_model_path(name), target="cuda", precision=precision,
                        cache=False)
    scheds = [k["schedule"] for k in cm.artifact.summary["kernels"]]
    n = sum(s.startswith("gpu.mma") for s in scheds)
    assert n >= least, scheds
    assert cm.artifact.summary["cubin_bytes"] > 0
    TENSOR_CORE[f"{name} ({precision})"] = (n, len(scheds))


@pytest.mark.cuda
@pytest.mark.skipif(GPU is not None, reason=f"no CUDA device: {GPU}")
@pytest.mark.parametrize("precision,stages", [("tf32", 1), ("fp16", 1), ("tf32", 2),
                                              ("tf32", 3), ("fp16", 0)])
def test_tensor_core_matmul_on_the_gpu(precision: str, stages: int) -> None:
    """On the GPU: the mma kernels (and the cp.async pipelined ones; fp16 with scalar fragment
    loads, stages 0 here, besides the default ldmatrix) against numpy on the rounded operands
    (rtol 1e-3)."""
    m = matmul(300, 200, 260)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 200)).astype(np.float32)
    b = rng.standard_normal((200, 260)).astype(np.float32)
    sched = None if stages == 1 else {"k0_relu": piped(stages)} if stages > 1 else {
        "k0_relu": "gpu.mma: tile(BM=128, BN=128, BK=32, WM=64, WN=32); cache_shared(A, pad=4);"
                   " cache_shared(B, pad=8); mma(m16n8k16.f16)"}
    cm = minicc.compile(m, target="cuda", precision=precision, schedules=sched)
    got = np.asarray(cm.run({"a": a, "b": b})["r"])
    r = round_tf32 if precision == "tf32" else (lambda x: x.astype(np.float16).astype(
        np.float32))
    want = np.maximum(r(a).astype(np.float64) @ r(b).astype(np.float64), 0)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def int8_text(shape: str, bm: int = 32, bn: int = 32, bk: int = 8, wm: int = 16,
              wn: int = 16) -> str:
    return (f"gpu.mma: tile(BM={bm}, BN={bn}, BK={bk}, WM={wm}, WN={wn}); cache_shared(A, "
            f"pad=4); cache_shared(B, pad=8); mma({shape})")


def emulate_int8(mod: Module, x: np.ndarray, shape: str) -> tuple[np.ndarray, np.ndarray]:
    f = mod.main
    consts = {op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"}
    env = {f.inputs[0]: x, **consts}
    for g in fuse(f).groups:
        vals = list(g.inputs()) + [g.output]
        bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
                for i, v in enumerate(vals)}
        low = lower_gpu(ctx_for(g, bufs, consts, target="cuda",
                                schedules={"k": int8_text(shape)}))
        k = low.kernel
        assert any(isinstance(s, WarpMma) and s.shape == shape for s in walk(k.body))
        check_roundtrip(k, "in the int8 mma test")
        arrs = buffer_arrays(k, **{bufs[v].name: np.ascontiguousarray(env[v])
                                   for v in g.inputs()},
                             **{b.name: a for b, a in low.packed.items()})   # zero-point sums
        run_kernel(k, arrs)
        env[g.output] = arrs[bufs[g.output].name]
    return env[f.outputs[0]], interpret(mod, {"x": x})["y"]


@pytest.mark.parametrize("make,shape", [
    (lambda: __import__("tests.codegen.test_int8", fromlist=["x"]).conv_model(
        5, 20, 7, 3, 7, 1, 1), "m16n8k32.s8u8"),                # K = 45: a word tail
    (lambda: __import__("tests.codegen.test_int8", fromlist=["x"]).matmul_model(
        19, 70, 21, 5), "m16n8k32.u8s8")])
def test_int8_mma_in_the_emulator_is_exact(make, shape: str) -> None:  # type: ignore
    """The int8 tensor cores on words of four values (u8 x s8 into int32), asked for by a
    schedule (gpu.gemm's __dp4a stays the default until a GPU measures both): exactly the
    interpreter's integers, tails in M, N and K."""
    mod, x = make()
    got, want = emulate_int8(mod, x, shape)
    np.testing.assert_array_equal(got, want)


def test_an_int8_mma_of_the_wrong_operand_types_is_refused() -> None:
    from tests.codegen.test_int8 import matmul_model

    mod, x = matmul_model(19, 70, 21, 5)
    with pytest.raises(minicc.MiniccError, match=r"takes m16n8k32.u8s8"):
        emulate_int8(mod, x, "m16n8k32.s8u8")


@needs_nvrtc
def test_int8_mma_compiles_with_nvrtc() -> None:
    from tests.codegen.test_int8 import conv_model

    mod, _ = conv_model(16, 32, 14, 3, 7, 1, 1)
    cm = minicc.compile(mod, target="cuda", dump=("cuda",), cache=False,
                        schedules={"k0_relu": int8_text("m16n8k32.s8u8", 64, 64, 16, 32, 32)})
    assert "mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32" in cm.report.dumps["cuda"]
    assert cm.artifact.summary["cubin_bytes"] > 0
    default = minicc.compile(mod, target="cuda", cache=False)     # __dp4a by default
    assert default.artifact.summary["kernels"][0]["schedule"].startswith("gpu.gemm")


@pytest.mark.cuda
@pytest.mark.skipif(GPU is not None, reason=f"no CUDA device: {GPU}")
def test_int8_mma_on_the_gpu_is_exact() -> None:
    from tests.codegen.test_int8 import conv_model, matmul_model

    for (mod, x), shape in ((conv_model(16, 32, 14, 3, 7, 1, 1), "m16n8k32.s8u8"),
                            (matmul_model(70, 100, 90, 5), "m16n8k32.u8s8")):
        name = "k0_relu" if shape.endswith("s8u8") else "k0_matmul_integer"
        cm = minicc.compile(mod, target="cuda", cache=False, schedules={
            name: int8_text(shape, 64, 64, 16, 32, 32)})
        want = interpret(mod, {"x": x})["y"]
        np.testing.assert_array_equal(np.asarray(cm.run({"x": x})["y"]), want)


@needs_nvrtc
def test_a_tensor_core_compile_says_what_it_got() -> None:
    m = matmul(64, 32, 48)
    old = minicc.compile(m, target="cuda", cuda_arch="sm_75", precision="tf32", cache=False)
    assert any("sm_75 has no tf32 tensor cores" in n for n in old.report.notes), \
        old.report.notes
    new = minicc.compile(m, target="cuda", precision="fp16", cache=False)
    assert "precision fp16: 1 of 1 kernels on the tensor cores" in new.report.notes


def test_fp16_fragments_by_ldmatrix_in_the_emulator(monkeypatch) -> None:
    """FP16 loads its fragments with ldmatrix by default (x4 for A, x2.trans for B): the same
    products as scalar fragment loads; and the emulator gathers ldmatrix's rows by lane as the
    instruction does, so B loaded without `.trans` gives a wrong product there."""
    from minicc.ir.loops import nodes

    m = matmul(40, 52, 35)
    got, ref, scheds = emulate(m, "fp16", rounded=True)
    assert "ldmatrix(A, B)" in scheds[0], scheds
    plain, _, sp = emulate(m, "fp16", rounded=True, knobs={"ldmatrix": False, "pad_a": 4})
    assert "ldmatrix" not in sp[0]
    np.testing.assert_allclose(got["r"], plain["r"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["r"], ref["r"], rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(gpu_mma, "WarpLdmatrix",
                        lambda n, t, *a: nodes.WarpLdmatrix(n, False, *a))
    wrong, _, _ = emulate(m, "fp16", rounded=True)
    assert not np.allclose(wrong["r"], ref["r"], rtol=1e-3, atol=1e-3)


def test_ldmatrix_schedules_are_checked() -> None:
    m = matmul(32, 16, 24)
    base = ("gpu.mma: tile(BM=32, BN=32, BK=16, WM=16, WN=16); cache_shared(A, pad={}); "
            "cache_shared(B, pad=8); mma({}); ldmatrix(A, B)")
    with pytest.raises(minicc.MiniccError, match="ldmatrix loads 16-bit fragments"):
        minicc.compile(m, target="cuda", precision="tf32", cache=False,
                       schedules={"k0_relu": base.format(8, "m16n8k8.tf32")})
    with pytest.raises(minicc.MiniccError, match="must be multiples of 8"):
        minicc.compile(m, target="cuda", precision="fp16", cache=False,
                       schedules={"k0_relu": base.format(4, "m16n8k16.f16")})


@needs_nvrtc
def test_ldmatrix_compiles_with_nvrtc() -> None:
    cm = minicc.compile(matmul(256, 96, 200), target="cuda", precision="fp16",
                        dump=("cuda",), cache=False)
    src = cm.report.dumps["cuda"]
    assert "minicc_ldmatrix_x4(" in src.split("extern")[1] and "minicc_ldmatrix_x2_t(" in src
    assert "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16" in src
