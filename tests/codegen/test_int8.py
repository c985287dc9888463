"""The int8 GEMM template: conv_integer and matmul_integer through vpdpbusd (AVX-512 VNNI) and
through the portable fallback (x86-64-v4 has no VNNI), exactly equal to the integer reference,
for shapes with tails in every dimension (K not a multiple of 4, M and N not of the tile)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicc
from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Module
from minicc.ir.interpret import interpret
from minicc.ir.types import DType, TensorType
from minicc.codegen.llvm.target import cpu_target
from minicc.runtime.llvm_host import host_features

VNNI = "+avx512vnni" in host_features()[1].split(",")


def conv_model(c: int, m: int, h: int, k: int, zp: int, pad: int, stride: int,
               group: int = 1, seed: int = 0) -> tuple[Module, np.ndarray]:
    """u8 x -> conv_integer -> cast -> * scale -> relu (a quantized conv's shape)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input(TensorType(DType.U8, (1, c, h, h)), "x")
    w = b.const(rng.integers(-127, 128, (m, c // group, k, k)).astype(np.int8), "w")
    acc = b.op1("conv_integer", [x, w], {"pads": [pad] * 4, "strides": [stride] * 2,
                                          "zero_point": zp, "group": group})
    s = b.const((rng.random((1, m, 1, 1)) * 0.01).astype(np.float32), "s")
    y = b.op1("relu", [b.op1("mul", [b.op1("cast", [acc], {"to": DType.F32}), s])])
    return Module((b.finish([y], ["y"]),)), rng.integers(0, 256, (1, c, h, h)).astype(np.uint8)


def matmul_model(M: int, K: int, N: int, zp: int, seed: int = 0, batch: tuple[int, ...] = ()
                 ) -> tuple[Module, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input(TensorType(DType.U8, batch + (M, K)), "x")
    w = b.const(rng.integers(-128, 128, (K, N)).astype(np.int8), "w")
    acc = b.op1("matmul_integer", [x, w], {"zero_point": zp})
    return Module((b.finish([acc], ["y"]),)), rng.integers(0, 256, batch + (M, K)).astype(
        np.uint8)


def run(mod: Module, x: np.ndarray, **kw: Any) -> tuple[np.ndarray, Any]:
    cm = minicc.compile(mod, threads=1, **kw)
    return np.asarray(cm.run({"x": x})["y"]), cm


AVX512 = "+avx512f" in host_features()[1].split(",")
# the depthwise dot kernel's needs (ir/loops/depthwise.py dot_fits): VNNI, VBMI, 16 lanes
DOT = {"+avx512vnni", "+avx512vbmi"} <= set(host_features()[1].split(",")) and \
    cpu_target().lanes == 16
# the portable fallback on a CPU without VNNI: AVX-512 where this machine runs it, else AVX2
CPUS = ["native", "x86-64-v4" if AVX512 else "x86-64-v3"]


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("shape", [(16, 32, 14, 3, 7, 1, 1), (3, 8, 9, 3, 0, 1, 2),
                                   (64, 64, 14, 1, 128, 0, 1), (5, 7, 6, 3, 255, 2, 1)])
def test_conv_integer_gemm_is_exact(shape: tuple[int, ...], cpu: str) -> None:
    mod, x = conv_model(*shape)
    got, cm = run(mod, x, cpu=cpu)
    assert cm.artifact.summary["kernels"][0]["schedule"].startswith("cpu.gemm:")
    np.testing.assert_array_equal(got, interpret(mod, {"x": x})["y"])


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("shape", [(64, 384, 96, 3), (5, 37, 19, 0), (1, 8, 16, 200)])
def test_matmul_integer_gemm_is_exact(shape: tuple[int, ...], cpu: str) -> None:
    mod, x = matmul_model(*shape)
    got, cm = run(mod, x, cpu=cpu)
    assert "pack(A, at=mr)" in cm.artifact.summary["kernels"][0]["schedule"]
    np.testing.assert_array_equal(got, interpret(mod, {"x": x})["y"])


def dw_model(c: int, h: int, w: int, k: int, zp: int, pads: list[int], stride: int,
             dilation: int = 1, seed: int = 0) -> tuple[Module, np.ndarray]:
    """u8 x -> depthwise conv_integer -> cast -> * scale -> requantize to u8 (a quantized
    depthwise layer's kernel, whole)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input(TensorType(DType.U8, (1, c, h, w)), "x")
    wt = b.const(rng.integers(-128, 128, (c, 1, k, k)).astype(np.int8), "w")
    acc = b.op1("conv_integer", [x, wt], {"pads": pads, "strides": [stride] * 2, "group": c,
                                           "dilations": [dilation] * 2, "zero_point": zp})
    s = b.const((rng.random((1, c, 1, 1)) * 0.02).astype(np.float32), "s")
    y = b.op1("round", [b.op1("mul", [b.op1("cast", [acc], {"to": DType.F32}), s])])
    y = b.op1("cast", [b.op1("clip", [b.op1("add", [y, b.const(np.float32(100.0))])],
                             {"min": 0.0, "max": 255.0})], {"to": DType.U8})
    return Module((b.finish([y], ["y"]),)), rng.integers(0, 256, (1, c, h, w)).astype(np.uint8)


def test_batched_matmul_integer_by_one_weight_is_one_tall_gemm() -> None:
    mod, x = matmul_model(1, 37, 19, 3, batch=(6, 5))
    got, cm = run(mod, x)
    assert "MR=1," not in cm.artifact.summary["kernels"][0]["schedule"]
    np.testing.assert_array_equal(got, interpret(mod, {"x": x})["y"])


@pytest.mark.parametrize("shape", [(8, 10, 10, 3, 5, [1] * 4, 1, 1), (19, 15, 13, 3, 128, [1] * 4,
                                                                     2, 1),
                                   (6, 11, 9, 3, 255, [2] * 4, 1, 2), (7, 16, 17, 5, 0,
                                                                       [0, 1, 2, 0], 3, 1),
                                   (144, 4, 4, 3, 77, [1] * 4, 1, 1)])
def test_depthwise_conv_integer_takes_the_depthwise_template_exactly(shape: tuple) -> None:
    """Stride, dilation, asymmetric pads and every zero point: the padding must read as the
    zero point, and the f32 sums must equal the int32 ones (the requantized u8 output compared
    exactly)."""
    mod, x = dw_model(*shape)
    got, cm = run(mod, x)
    assert cm.artifact.summary["kernels"][0]["schedule"].startswith("cpu.depthwise:")
    want = interpret(mod, {"x": x})["y"]
    np.testing.assert_array_equal(got, want)
    if shape[-2] <= 2 and shape[-1] == 1:     # stride 1 or 2, no dilation: also read in place
        name = cm.artifact.summary["kernels"][0]["name"]
        got, cm = run(mod, x, schedules={name: "cpu.depthwise: tile(RX=1, RY=3); vectorize(x)"})
        assert "vectorize(x)" in cm.artifact.summary["kernels"][0]["schedule"]
        np.testing.assert_array_equal(got, want)


@settings(max_examples=12, deadline=None)
@given(c=st.integers(2, 40), h=st.integers(1, 13), w=st.integers(1, 19), k=st.sampled_from([3, 5]),
       zp=st.integers(0, 255), pads=st.lists(st.integers(0, 2), min_size=4, max_size=4),
       stride=st.integers(1, 2), cpu=st.sampled_from(CPUS), seed=st.integers(0, 99))
def test_depthwise_conv_integer_defaults_are_exact(c: int, h: int, w: int, k: int, zp: int,
                                                   pads: list[int], stride: int, cpu: str,
                                                   seed: int) -> None:
    """The int8 defaults, dot (VNNI and VBMI: four taps per vpdpbusd, the words gathered by
    byte shuffles from a plane padded with the zero point) where the CPU has them, else the
    direct kernel (each tap's u8 row widened in registers, lanes outside the image read as
    the zero point), and the direct kernel forced where dot is the default: the requantized
    output equals the interpreter's on every shape, pad and zero point, AVX-512 and AVX2."""
    h, w = max(h, k - pads[0] - pads[2]), max(w, k - pads[1] - pads[3])   # a non-empty output
    mod, x = dw_model(c, h, w, k, zp, pads, stride, seed=seed)
    got, cm = run(mod, x, cpu=cpu)
    want = interpret(mod, {"x": x})["y"]
    sched = cm.artifact.summary["kernels"][0]["schedule"]
    assert sched.startswith("cpu.depthwise:")
    assert ("dot" in sched) == (cpu == "native" and DOT)
    np.testing.assert_array_equal(got, want)
    if "dot" in sched:
        name = cm.artifact.summary["kernels"][0]["name"]
        got, cm = run(mod, x, cpu=cpu, schedules={
            name: "cpu.depthwise: tile(RX=1, RY=2); vectorize(x)"})
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not DOT, reason="this CPU has no AVX-512 VNNI and VBMI")
@pytest.mark.parametrize("shape", [(144, 4, 4, 3, 77, [1] * 4, 1), (8, 8, 8, 5, 200, [2] * 4, 2),
                                   (5, 3, 40, 3, 9, [1, 0, 1, 2], 2)])
def test_the_dot_kernel_gathers_its_words_with_byte_shuffles(shape: tuple) -> None:
    """One or two loads of the span (a 5x5 stride-2 conv onto 4x4 spans 76 bytes) and a
    vpermt2b per word, no gathers; exact."""
    mod, x = dw_model(*shape)
    got, cm = run(mod, x)
    np.testing.assert_array_equal(got, interpret(mod, {"x": x})["y"])
    asm = minicc.compile(mod, threads=1, dump=("asm",), cache=False).report.dumps["asm"]
    assert "vpdpbusd" in asm and ("vpermt2b" in asm or "vpermb" in asm)
    assert "gather" not in asm


def test_dot_is_refused_where_it_cannot_run() -> None:
    from minicc.errors import MiniccError

    mod, x = dw_model(16, 8, 8, 3, 3, [1] * 4, 1)
    with pytest.raises(MiniccError, match="dot needs an int8 conv, AVX-512 VNNI and VBMI"):
        minicc.compile(mod, threads=1, cpu="x86-64-v3",
                       schedules={"k0_cast": "cpu.depthwise: tile(RX=1); dot()"})


def test_a_depthwise_conv_integer_with_too_many_taps_for_f32_takes_the_loop_nest() -> None:
    from minicc.ir.loops.depthwise import EXACT_TAPS

    k = int(np.ceil(np.sqrt(EXACT_TAPS + 1)))
    mod, x = dw_model(2, k, k, k, 0, [0] * 4, 1)
    got, cm = run(mod, x)
    assert cm.artifact.summary["kernels"][0]["schedule"].startswith("cpu.loops")
    np.testing.assert_array_equal(got, interpret(mod, {"x": x})["y"])


@pytest.mark.skipif(not VNNI, reason="this CPU has no AVX-512 VNNI")
def test_vnni_is_used_where_the_cpu_has_it() -> None:
    mod, _ = conv_model(16, 32, 14, 3, 7, 1, 1)
    native = minicc.compile(mod, threads=1, dump=("asm",), cache=False).report.dumps["asm"]
    v4 = minicc.compile(mod, threads=1, cpu="x86-64-v4", dump=("asm",),
                        cache=False).report.dumps["asm"]
    assert "vpdpbusd" in native and "vpdpbusd" not in v4


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(128, 64, 4, 3, 7, 1, 2), (64, 32, 2, 3, 200, 1, 1),
                                   (256, 32, 3, 1, 0, 0, 1)])
def test_an_int8_conv_onto_a_tiny_map_takes_pixels_as_rows_exactly(
        shape: tuple[int, ...], threads: int, cpu: str) -> None:
    """Onto 2x2 and 3x3 maps (fewer pixels than a vector) the u8 activations are A, packed
    per row tile from the taps (the zero point where they fall in the padding), and the s8
    weights B: `pack(A, at=mr)`; the same int32 sums as the interpreter."""
    from minicc.codegen.llvm.target import cpu_target

    c, m, h, k, zp, pad, stride = shape
    pixels = ((h + 2 * pad - k) // stride + 1) ** 2
    mod, x = conv_model(*shape)
    cm = minicc.compile(mod, threads=threads, cpu=cpu)
    sched = cm.artifact.summary["kernels"][0]["schedule"]
    rows = "pack(A, at=mr)" in sched and "pack(B, at=compile)" in sched
    assert rows == (pixels < cpu_target(cpu).lanes), sched
    np.testing.assert_array_equal(np.asarray(cm.run({"x": x})["y"]),
                                  interpret(mod, {"x": x})["y"])


@settings(max_examples=12, deadline=None)
@given(c=st.integers(1, 9), m=st.integers(1, 20), h=st.integers(3, 9), k=st.sampled_from([1, 3]),
       zp=st.integers(0, 255), stride=st.integers(1, 2), seed=st.integers(0, 9))
def test_conv_integer_schedules_keep_semantics(c: int, m: int, h: int, k: int, zp: int,
                                               stride: int, seed: int) -> None:
    mod, x = conv_model(c, m, h, k, zp, k // 2, stride, seed=seed)
    got, _ = run(mod, x)
    np.testing.assert_array_equal(got, interpret(mod, {"x": x})["y"])


def test_the_knob_space_of_an_int8_gemm_is_one_k_block() -> None:
    from minicc.ir.loops.gemm import CpuGemm

    mod, _ = conv_model(16, 32, 14, 3, 7, 1, 1)
    cm = minicc.compile(mod, threads=1)
    sched = cm.artifact.summary["kernels"][0]["schedule"]
    assert "KC=144" in sched and "pack(A, at=compile)" in sched and "pack(B, at=kc)" in sched
    bad = sched.replace("KC=144", "KC=64")
    with pytest.raises(minicc.MiniccError, match="whole K in one block"):
        minicc.compile(mod, threads=1, schedules={cm.artifact.summary["kernels"][0]["name"]:
                                                  bad})
    assert CpuGemm.name == "cpu.gemm"


@pytest.mark.parametrize("make", [lambda: conv_model(64, 256, 7, 3, 9, 1, 1),
                                  lambda: matmul_model(37, 65, 200, 5)])
def test_int8_gemms_on_two_threads(make: Any) -> None:
    mod, x = make()
    cm = minicc.compile(mod, threads=2)
    got = np.asarray(cm.run({"x": x})["y"])
    assert "parallel(" in cm.artifact.summary["kernels"][0]["schedule"]
    np.testing.assert_array_equal(got, interpret(mod, {"x": x})["y"])


def _grouped_padded(seed: int = 0) -> tuple[Module, np.ndarray]:
    """A batch of two, two groups, asymmetric padding, strides 2 x 1, dilation 2 x 1."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input(TensorType(DType.U8, (2, 4, 11, 10)), "x")
    w = b.const(rng.integers(-127, 128, (6, 2, 3, 3)).astype(np.int8), "w")
    acc = b.op1("conv_integer", [x, w], {"pads": [1, 2, 0, 1], "strides": [2, 1],
                                          "dilations": [2, 1], "zero_point": 37, "group": 2})
    y = b.op1("cast", [acc], {"to": DType.F32})
    return Module((b.finish([y], ["y"]),)), rng.integers(0, 256, (2, 4, 11, 10)).astype(np.uint8)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_padded_int8_conv_reads_a_zero_point_padded_copy(threads: int,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """An int8 conv with padding first copies each (image, group) input into per-thread scratch
    padded with the zero point, so its panel checks no edges: exact either way, and the plain
    panel where the copy would pass PAD_COPY_BYTES."""
    from minicc.ir.loops import gemm_views

    mod, x = _grouped_padded()
    want = interpret(mod, {"x": x})["y"]
    cm = minicc.compile(mod, threads=threads, cache=False)
    assert "_xpad" in cm.artifact.source
    np.testing.assert_array_equal(np.asarray(cm.run({"x": x})["y"]), want)
    monkeypatch.setattr(gemm_views, "PAD_COPY_BYTES", 0)
    plain = minicc.compile(mod, threads=threads, cache=False)
    assert "_xpad" not in plain.artifact.source
    np.testing.assert_array_equal(np.asarray(plain.run({"x": x})["y"]), want)


# ---- the GPU template: run in the loop-IR interpreter, compiled by NVRTC ----------------------

def run_gpu_groups(mod: Module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lower every group with the GPU schedules and run them in the loop-IR interpreter."""
    from minicc.ir.loops.gpu import lower_gpu
    from minicc.ir.loops.interp import buffer_arrays, run_kernel
    from minicc.ir.loops.nodes import Buffer
    from minicc.ir.passes.fuse import fuse
    from tests.loops.util import ctx_for

    f = mod.main
    env: dict[Any, np.ndarray] = {v: feeds[n] for n, v in zip(f.input_names, f.inputs)}
    consts = {op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"}
    env.update(consts)
    schedules = []
    for g in fuse(f).groups:
        vals = list(g.inputs()) + [g.output]
        bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
                for i, v in enumerate(vals)}
        low = lower_gpu(ctx_for(g, bufs, consts, target="cuda"))
        schedules.append(low.origin + ":" + low.kernel.name)
        arrays = {bufs[v].name: np.ascontiguousarray(env[v]) for v in g.inputs()}
        arrays.update({b.name: a for b, a in low.packed.items()})
        arrs = buffer_arrays(low.kernel, **arrays)
        run_kernel(low.kernel, arrs)
        env[g.output] = arrs[bufs[g.output].name]
    return {n: env[v] for n, v in zip(f.output_names, f.outputs)}


@pytest.mark.parametrize("make", [lambda: conv_model(5, 7, 6, 3, 200, 1, 2),
                                  lambda: conv_model(16, 40, 9, 1, 0, 0, 1),
                                  lambda: matmul_model(5, 37, 19, 9),
                                  lambda: matmul_model(40, 64, 70, 0)])
def test_gpu_int8_gemm_in_the_interpreter(make: Any) -> None:
    from minicc.ir.loops.gpu_gemm import GpuGemm
    from minicc.ir.loops.nodes import Buffer
    from minicc.ir.passes.fuse import fuse
    from tests.loops.util import ctx_for

    mod, x = make()
    got = run_gpu_groups(mod, {"x": x})["y"]
    np.testing.assert_array_equal(got, interpret(mod, {"x": x})["y"])
    g = fuse(mod.main).groups[0]
    vals = list(g.inputs()) + [g.output]
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(vals)}
    consts = {op.output: op.attrs["value"].array for op in mod.main.ops if op.kind == "const"}
    assert GpuGemm().applies(ctx_for(g, bufs, consts, target="cuda"))


def test_gpu_int8_gemm_compiles_with_nvrtc() -> None:
    from minicc.codegen.cuda.nvrtc import nvrtc_available

    why = nvrtc_available()
    if why is not None:
        pytest.skip(f"no NVRTC: {why}")
    mod, _ = conv_model(16, 32, 14, 3, 7, 1, 1)
    cm = minicc.compile(mod, target="cuda", dump=("cuda",), cache=False)
    src = cm.report.dumps["cuda"]
    assert cm.artifact.summary["kernels"][0]["schedule"].startswith("gpu.gemm")
    assert "__dp4a" in src and "minicc_dpbusd(" in src


def requant_model(dst: DType, zp: int, lo: float | None, hi: float | None, n: int
                  ) -> Module:
    """f32 x -> round(x * 0.5) [+ zp] -> clip -> cast (a QuantizeLinear's shape)."""
    b = GraphBuilder()
    x = b.input(TensorType(DType.F32, (n,)), "x")
    q = b.op1("round", [b.op1("mul", [x, b.const(np.array(0.5, np.float32))])])
    if zp:
        q = b.op1("add", [q, b.const(np.array(zp, np.float32))])
    if lo is not None or hi is not None:
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        q = b.op1("clip", [q], attrs)
    return Module((b.finish([b.op1("cast", [q], {"to": dst})], ["y"]),))


@pytest.mark.parametrize("dst,zp,lo,hi", [(DType.U8, 139, 0.0, 255.0), (DType.U8, 0, 0.0, 255.0),
                                          (DType.I8, -3, -128.0, 127.0), (DType.I8, 0, -127.0,
                                                                            127.0),
                                          (DType.U8, 7, 7.0, 200.0), (DType.I32, 5, -1000.0,
                                                                     None)])
def test_a_quantizing_epilogue_rounds_half_to_even_and_saturates(dst: DType, zp: int,
                                                                 lo: float | None,
                                                                 hi: float | None) -> None:
    """A quantizing epilogue as compiled: ties go to even (as numpy and ONNX round), values far
    out of range clamp, in vector bodies and in the tail, exactly as the interpreter."""
    rng = np.random.default_rng(0)
    ties = np.arange(-600, 601, dtype=np.float32)          # x * 0.5: every .5 tie
    far = np.array([-1e9, -3e5, 4e5, 2e9, 1e30, -1e30], np.float32)
    x = np.concatenate([ties, far, (rng.standard_normal(500) * 300).astype(np.float32),
                        np.ones(3, np.float32)])              # a tail of 3 after 16-lane vectors
    mod = requant_model(dst, zp, lo, hi, x.size)
    if hi is None:                                           # no upper clip: stay in i32's range
        x = np.clip(x, -1e6, 1e6)
    cm = minicc.compile(mod, threads=1, cache=False)
    got = np.asarray(cm.run({"x": x})["y"])
    want = interpret(mod, {"x": x})["y"]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cpu", CPUS + (["x86-64-v3"] if AVX512 else []))
@pytest.mark.parametrize("dtype,lo,hi", [(DType.U8, 0.0, 255.0), (DType.U8, 0.0, 6.0),
                                         (DType.I8, -128.0, 127.0), (DType.I8, -3.0, 100.0)])
def test_requantize_takes_the_short_path_exactly(cpu: str, dtype: DType, lo: float,
                                                 hi: float) -> None:
    """cast(clip(round(x), lo, hi)) to u8/s8 (cvtps2dq, an integer max, a truncate): the same
    bytes as the interpreter for halves (to even), values past either bound, past the int32
    range and infinities."""
    for w in (37, 33, 17):      # tails of 5 lanes and of one (whose store must be one byte)
        b = GraphBuilder()
        x = b.input(TensorType(DType.F32, (7, w)), "x")
        y = b.op1("cast", [b.op1("clip", [b.op1("round", [x])], {"min": lo, "max": hi})],
                  {"to": dtype})
        mod = Module((b.finish([y], ["y"]),))
        rng = np.random.default_rng(3)
        v = np.concatenate([np.arange(-200, 300, 0.5), [1e10, -1e10, 3e9, -3e9, np.inf,
                                                        -np.inf, 127.5, 128.5, -128.5, 254.5,
                                                        255.5]])
        xv = rng.permutation(np.resize(v, 7 * w)).astype(np.float32).reshape(7, w)
        cm = minicc.compile(mod, threads=1, cpu=cpu)
        got = np.asarray(cm.run({"x": xv})["y"])
        np.testing.assert_array_equal(got, interpret(mod, {"x": xv})["y"])
