"""Float4 global loads on the CUDA target (`cache_shared(A|B, vec=4)` in `gpu.gemm` and
`gpu.mma`, a vector(4) loop in the loop IR, ir/loops/wide.py): the kernels in the loop-IR
emulator against the interpreter, the emulator's alignment check, the CUDA they render and its
NVRTC compile."""

from __future__ import annotations

import numpy as np
import pytest

from minicc.codegen.cuda.nvrtc import compile_cuda, nvrtc_available
from minicc.codegen.cuda.render import PRELUDE, render_kernel
from minicc.errors import InterpreterError, ScheduleError
from minicc.ir.loops import gpu_gemm, gpu_mma
from minicc.ir.loops.gpu import lower_gpu
from minicc.ir.loops.interp import buffer_arrays, run_kernel
from minicc.ir.loops.nodes import AsyncCopy, Buffer, For, LoopKind, Store, walk
from minicc.ir.loops.parser import check_roundtrip
from minicc.ir.loops.trace import format_schedule
from minicc.ir.loops.wide import wide_access
from minicc.ir.passes.fuse import fuse
from minicc.ir.scalar import round_tf32
from tests.codegen.test_mma import conv, matmul
from tests.loops.util import ctx_for

NVRTC = nvrtc_available()
needs_nvrtc = pytest.mark.skipif(NVRTC is not None, reason=f"NVRTC unavailable: {NVRTC}")


def lowered(m, precision: str = "fp32", knobs: dict | None = None) -> list:
    """(kernel, group, buffers, rule) per non-view group, lowered for the CUDA target with
    `knobs` over the defaults of the rule that takes it."""
    f = m.main
    consts = {op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"}
    out = []
    for g in fuse(f).groups:
        if g.is_view:
            continue
        vals = list(g.inputs()) + [g.output]
        bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
                for i, v in enumerate(vals)}
        ctx = ctx_for(g, bufs, consts, target="cuda", precision=precision)
        rule = next(r for r in (gpu_mma.GpuMma(), gpu_gemm.GpuGemm()) if r.applies(ctx))
        point = {**rule.defaults(ctx), **(knobs or {})}
        out.append((lower_gpu(ctx, point).kernel, g, bufs, rule, ctx))
    return out


def emulate(m, precision: str = "fp32", knobs: dict | None = None) -> tuple[dict, list]:
    """The model's outputs from its kernels in the emulator, and the kernels."""
    f = m.main
    rng = np.random.default_rng(0)
    env = {v: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
           for v in f.inputs}
    env.update({op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"})
    feeds = {n: env[v] for n, v in zip(f.input_names, f.inputs)}
    kernels = []
    for k, g, bufs, _, _ in lowered(m, precision, knobs):
        check_roundtrip(k, "in the wide-load test")
        arrs = buffer_arrays(k, **{bufs[v].name: np.ascontiguousarray(env[v])
                                   for v in g.inputs()})
        run_kernel(k, arrs)
        env[g.output] = arrs[bufs[g.output].name]
        kernels.append(k)
    return {n: env[v] for n, v in zip(f.output_names, f.outputs)}, kernels, feeds


def wide_loops(k) -> list:
    return [s for s in walk(k.body) if isinstance(s, For) and s.kind == LoopKind.VECTOR
            and wide_access(s) is not None]


@pytest.mark.parametrize("shape", [(40, 20, 36, ()), (64, 32, 64, ()), (9, 12, 8, (2,))])
def test_float4_loads_in_the_fp32_gemm(shape: tuple) -> None:
    """Tails in M, N (a whole quad out) and K (BK=8 over K=20: the last quad zero-filled), a
    batch: the same product as the interpreter, with both operands read a float4 at a time."""
    from minicc.ir.interpret import interpret

    m = matmul(*shape)
    got, ks, feeds = emulate(m, knobs={"vec_a": 4, "vec_b": 4})
    sched = format_schedule(ks[0].schedule, ks[0].trace)
    assert "cache_shared(A, pad=4, vec=4)" in sched and "cache_shared(B, pad=0, vec=4)" in sched
    assert len(wide_loops(ks[0])) == 2
    ref = interpret(m, feeds)
    np.testing.assert_allclose(got["r"], ref["r"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stages", [1, 2])
def test_float4_loads_and_16_byte_async_copies_in_the_tf32_mma(stages: int) -> None:
    """TF32 tensor cores with both tiles staged four elements at a time: stored after rounding
    (stages=1) or copied raw by a 16-byte cp.async into the rotating buffers (stages=2)."""
    from minicc.ir.interpret import interpret

    m = matmul(40, 24, 36)
    knobs = {"BM": 32, "BN": 32, "BK": 16, "WM": 16, "WN": 16, "stages": stages,
             "vec_a": 4, "vec_b": 4}
    got, ks, feeds = emulate(m, "tf32", knobs)
    wl = wide_loops(ks[0])
    # (pipelined: the prologue's copies of the first tiles, then the main loop's)
    assert len(wl) == (4 if stages > 1 else 2)
    assert all(isinstance(s.body, AsyncCopy) == (stages > 1) for s in wl)
    ref = interpret(m, {n: round_tf32(a) for n, a in feeds.items()})
    np.testing.assert_allclose(got["r"], ref["r"], rtol=1e-5, atol=1e-5)


def test_which_operands_can_be_read_wide() -> None:
    """A 1x1 conv reads its input in place (B wide where the map is a multiple of 4 pixels);
    a 3x3 conv gathers B (never wide), its weights are rows of C*9 (wide when that is a
    multiple of 4); a matmul with K=6 has rows starting off 16-byte boundaries."""
    def wide(m) -> tuple[bool, bool]:
        _, _, _, _, ctx = lowered(m)[0]
        return gpu_gemm.wide_operands(ctx)
    assert wide(conv((1, 8, 4, 4), (16, 8, 1, 1), {})) == (True, True)
    assert wide(conv((1, 8, 3, 3), (16, 8, 1, 1), {})) == (True, False)
    assert wide(conv((1, 4, 6, 6), (8, 4, 3, 3), {"pads": [1, 1, 1, 1]})) == (True, False)
    assert wide(conv((1, 3, 6, 6), (8, 3, 3, 3), {"pads": [1, 1, 1, 1]})) == (False, False)
    assert wide(matmul(8, 6, 8)) == (False, True)


def test_a_float4_load_where_the_operand_is_not_aligned_is_refused() -> None:
    with pytest.raises(ScheduleError, match="vec_a=4"):
        lowered(matmul(8, 6, 8), knobs={"vec_a": 4})
    with pytest.raises(ScheduleError, match="vec_a=4"):
        lowered(matmul(8, 6, 8), "tf32", knobs={"BM": 32, "BN": 32, "BK": 16, "WM": 16,
                                               "WN": 16, "vec_a": 4})


def test_a_misaligned_float4_load_is_caught_by_the_emulator(monkeypatch) -> None:
    """A template that believed rows of K=10 can be read four at a time: the second row starts
    at element 10, and the emulator stops there as the GPU would fault."""
    monkeypatch.setattr(gpu_gemm, "wide_operand", lambda *a: True)
    with pytest.raises(InterpreterError, match="16-byte access .* not 16-byte aligned"):
        emulate(matmul(8, 10, 8), knobs={"vec_a": 4})


def test_the_cuda_source_reads_float4() -> None:
    (k, *_), = lowered(matmul(64, 32, 64), knobs={"vec_a": 4, "vec_b": 4})
    src, _ = render_kernel(k)
    assert src.count("*reinterpret_cast<const float4*>(") == 2
    (k, *_), = lowered(matmul(64, 32, 64), "tf32", knobs={"BM": 32, "BN": 32, "BK": 16,
                                                         "WM": 16, "WN": 16, "stages": 2,
                                                         "vec_a": 4, "vec_b": 4})
    src, _ = render_kernel(k)
    assert "minicc_cp_async16(" in src and "minicc_cp_async4(" not in src.split("}\n\n")[-1]


def test_other_vector_loops_are_not_wide() -> None:
    """Only a vector loop of 2 or 4 over consecutive elements is one wide access."""
    from minicc.ir.compute import Var
    from minicc.ir.loops.gemm_views import c64, mul
    from minicc.ir.loops.nodes import BufLoad, Scope
    from minicc.ir.types import DType

    a = Buffer("a", DType.F32, (64,))
    s = Buffer("s", DType.F32, (64,), Scope.SHARED)
    j = Var("j")
    assert wide_access(For(j, c64(4), Store(s, (j,), BufLoad(a, (j,), DType.F32)),
                           LoopKind.VECTOR, 4)) is not None
    assert wide_access(For(j, c64(4), Store(s, (j,), BufLoad(a, (mul(j, 2),), DType.F32)),
                           LoopKind.VECTOR, 4)) is None          # strided
    assert wide_access(For(j, c64(3), Store(s, (j,), BufLoad(a, (j,), DType.F32)),
                           LoopKind.VECTOR, 4)) is None          # not 2 or 4
    assert wide_access(For(j, c64(4), Store(s, (j,), BufLoad(s, (j,), DType.F32)),
                           LoopKind.VECTOR, 4)) is None          # shared, not global


@needs_nvrtc
def test_float4_kernels_compile_with_nvrtc() -> None:
    for precision, knobs in (("fp32", {"vec_a": 4, "vec_b": 4}),
                             ("tf32", {"BM": 32, "BN": 32, "BK": 16, "WM": 16, "WN": 16,
                                       "stages": 2, "vec_a": 4, "vec_b": 4}),
                             ("tf32", {"vec_a": 4, "vec_b": 4})):
        for k, *_ in lowered(conv((1, 8, 8, 8), (16, 8, 1, 1), {}), precision, knobs):
            src, _ = render_kernel(k)
            compile_cuda(PRELUDE + src, "sm_90")


def test_the_gemm_variants_gpu_check_times_compile() -> None:
    """Every GEMM schedule examples/gpu_check.py times on a GPU applies as written (a bad
    schedule text would cost a GPU session its benchmark): the vec=4 ones read float4 or copy
    16 bytes at a time, the others do not."""
    import sys
    from pathlib import Path

    from minicc import CompileOptions, compile
    from minicc.ir.parser import parse

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import bench_gpu

    n = 256
    m = parse(f"func @main(%a: f32[{n},{n}], %b: f32[{n},{n}]) -> (f32[{n},{n}]) {{\n"
              f"  %c = matmul(%a, %b) : f32[{n},{n}]\n  return %c\n}}\n")
    for p, sched in bench_gpu.GEMM_VARIANTS:
        cm = compile(m, options=CompileOptions(target="cuda", precision=p, schedules={
            "k0_matmul": sched} if sched else None))
        kernel = cm.artifact.source.split('extern "C"')[-1]
        wide = "float4" in kernel or "minicc_cp_async16(" in kernel
        assert wide == ("vec=4" in (sched or "")), (p, sched)
