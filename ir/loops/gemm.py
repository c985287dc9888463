"""The CPU GEMM template: convolutions (as implicit GEMM) and matmuls with their fused epilogue,
register-blocked for SIMD FMA. Its schedule is data like every other: the steps

    tile(MR=6, NR=32, KC=256, NC=224)    the register block MR x NR, the K block, the N block
    pack(A, at=compile|mr|none)          A packed at compile time (constant weights), per
                                         (mr, kc) block at run time, or read in place
    pack(B, at=compile|kc)               B packed at compile time, or per (nc, kc) block into a
                                         per-thread panel (im2col for a conv, whole output rows)
    vectorize(l, 16)                     the lanes of one vector register
    parallel(nc|b|mc|kc)                 threads share column blocks, the batch or row tiles;
                                         or K blocks, each into its partial C (a shared
                                         buffer), then after a barrier the output rows,
                                         summing the partials through the epilogue

are the knobs a `GemmPlan` holds, and `GemmKernel` builds the loop nest they describe. Blocking
follows BLIS: B is the vector operand, A is broadcast. The micro-kernel keeps an MR x NR tile of
accumulators in registers (NR/lanes vectors per row), broadcasting one A element and loading
NR/lanes B vectors per k. Partial sums over K blocks go through C; the epilogue (bias, folded
BN, activation, residual add) runs on the last block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import ScheduleError
from minicc.ir.compute import Const, Expr, Var, call, select
from minicc.ir.loops.gemm_views import (GemmView, add, c64, div, emin, gemm_view, mul, quads,
                                        vloop, word)
from minicc.ir.loops.nodes import (Allocate, Barrier, BufLoad, Buffer, For, IfThen, Kernel,
                                   LoopKind, Prefetch, Scope, Stmt, Store, seq)
from minicc.ir.loops.primitives import subst_stmt
from minicc.ir.loops.schedule import KnobSpace, LowerCtx, Lowered, Rule
from minicc.ir.loops.trace import Step, int_kwargs, step
from minicc.ir.types import DType

F32, I32 = DType.F32, DType.I32
# how far ahead the micro-kernel prefetches A's weights packed at compile time (see
# GemmKernel.prefetch_a): a Xeon, a 6 x 4-vector tile whose weights stream from memory once,
# 71 GFLOP/s without, 80 at 256 bytes ahead, 155 at 1 KiB, 162 from 2 KiB on; 12 x 2 vectors:
# 84, 143 at 1 KiB, 163 at 4 KiB; light_resnet50 at 1 thread 56.3 ms at 4 KiB, 55.1 at 8 KiB,
# 55.5 at 16 KiB (2 threads: 30.8, 30.2)
PREFETCH_BYTES = 8192
# and B's micro-panel rows (GemmKernel.prefetch_b): minilm_like 5.44 ms at 4 KiB, 5.49 at 8
PREFETCH_B_BYTES = 4096
# float convs with K up to this take it in one block (AVX-512, 32 registers): a Xeon, 1 thread,
# squeezenet's 1x1 conv 512 -> 1000 at 13x13 1.10 -> 0.99 ms in one block of 512 against two
# of 256, the whole model 3.5% faster at 1 and 2 threads; resnet50 and inception_v2 even
ONE_K_BLOCK = 640
# int8 GEMMs of few K words (a MobileNet's 1x1 convs of 8-32 channels) are epilogue-bound: 3 or
# 2 rows of accumulators keep each row's requantization constants in registers where 8 rows
# spill them (Zen 4, mobilenetv2_like int8 at 1 thread: 45.3 -> 42.5 us a run; K <= 64 or
# rows of 4 no better, 1 row worse; mobilenetv2_224 even)
INT8_FEW_K = 32
INT8_FEW_K_ROWS = (3, 2)
L1_SETS = 64       # 64-byte lines: 48 KiB 12-way (Xeon) and 32 KiB 8-way (Zen) alike
SPLIT_K_MAX_M, SPLIT_K_MAX_N, SPLIT_K_MAX_C = 160, 1024, 1 << 16      # (see _split_k)
SERIAL, PARALLEL, VECTOR, UNROLL = (LoopKind.SERIAL, LoopKind.PARALLEL, LoopKind.VECTOR,
                                    LoopKind.UNROLL)


@dataclass(frozen=True)
class GemmPlan:
    mr: int
    nr: int
    kc: int
    nc: int
    lanes: int
    pack_a: str         # compile | mr | none | panel
    pack_b: str         # compile | kc
    parallel: str       # none | nc | b | mc | kc
    threads: int


def plan_from_steps(v: GemmView, steps: Sequence[Step], threads: int) -> GemmPlan:
    """The plan the steps describe; ScheduleError naming the step that does not fit."""
    got: dict[str, Any] = {"pack_a": _a_packings(v)[0],
                           "pack_b": "compile" if v.b_const is not None and v.panel is None
                           else "kc", "parallel": "none"}
    for st in steps:
        if st.name == "tile":
            got.update(int_kwargs(st, ("MR", "NR", "KC", "NC")))
        elif st.name == "pack" and st.args in (("A",), ("B",)):
            got["pack_" + str(st.args[0]).lower()] = st.get("at")
        elif st.name == "vectorize" and len(st.args) == 2 and st.args[0] == "l" and \
                isinstance(st.args[1], int):
            got["lanes"] = st.args[1]
        elif st.name == "parallel" and len(st.args) == 1:
            got["parallel"] = st.args[0]
        else:
            raise ScheduleError(f"{st}: not a step of the gemm template (tile, pack, "
                                "vectorize, parallel)")
    missing = [k for k in ("mr", "nr", "kc", "nc", "lanes") if k not in got]
    if missing:
        raise ScheduleError(f"gemm template: the steps do not set {', '.join(missing)}")
    p = GemmPlan(got["mr"], got["nr"], got["kc"], got["nc"], got["lanes"], got["pack_a"],
                 got["pack_b"], got["parallel"], threads)
    _check_plan(v, p)
    return p


def _check_plan(v: GemmView, p: GemmPlan) -> None:
    def bad(why: str) -> ScheduleError:
        return ScheduleError(f"gemm template ({v.name}): {why}")
    if min(p.mr, p.nr, p.kc, p.nc, p.lanes) < 1 or p.nr % p.lanes:
        raise bad(f"tile MR={p.mr} NR={p.nr} KC={p.kc} NC={p.nc} must be positive, NR a "
                  f"multiple of the {p.lanes} lanes")
    if p.kc > v.K:
        raise bad(f"KC={p.kc} exceeds K={v.K}")
    if v.int8 and p.kc != v.K:
        raise bad(f"an int8 GEMM takes the whole K in one block: KC={p.kc} must be K={v.K}")
    if v.int8 and (p.pack_a, p.pack_b) != _int8_packing(v):
        raise bad(f"an int8 GEMM packs A at={_int8_packing(v)[0]} and B at="
                  f"{_int8_packing(v)[1]} (words of four K values)")
    if p.pack_a not in _a_packings(v):
        raise bad(f"pack(A, at={p.pack_a}) does not fit an A that is "
                  f"{'constant' if v.a_const is not None else 'computed at run time'}")
    if p.pack_a == "panel" and p.parallel == "mc":
        raise bad("pack(A, at=panel) packs every row at once: threads share columns (nc)")
    if p.pack_b not in _b_packings(v):
        raise bad(f"pack(B, at={p.pack_b}) does not fit this B")
    if p.pack_b == "compile" and p.nc % p.nr:
        raise bad(f"B packed at compile time needs NC={p.nc} to be a multiple of NR={p.nr}")
    if v.row is not None and p.nc % v.row:
        raise bad(f"a conv's N block spans whole output rows: NC={p.nc} must be a multiple "
                  f"of the row length {v.row}")
    if p.parallel not in ("none", "nc", "b", "mc", "kc") or (p.parallel == "b" and v.batch < 2):
        raise bad(f"parallel({p.parallel}) is not nc, mc, kc or b (b needs a batch)")
    if p.parallel == "kc" and (v.int8 or v.batch > 1 or p.pack_a != "compile"):
        raise bad("parallel(kc) (threads share K, then sum their partial tiles) takes a float "
                  "GEMM of one batch with A packed at compile time")


def _a_packings(v: GemmView) -> tuple[str, ...]:
    """compile (constant weights), mr (a panel per row tile and K block), none (A read in
    place), panel (a conv with pixels as rows: the im2col panel of every output row, once per
    K block)."""
    if v.a_panel is not None:
        return ("panel",)
    return ("compile", "none") if v.a_const is not None else ("mr", "none")


def _pixel_rows(v: GemmView, target: Any) -> GemmView:
    """A conv over a small map with its pixels as the rows of the GEMM and the output channels
    as the vector columns, where padding the pixels to whole tiles of NR columns wastes much
    more than padding them to MR rows: 7x7 maps (49 pixels) are 64 columns as 4 tiles of 16,
    54 rows as 9 tiles of 6. The epilogue then gathers and scatters along the channels, so K
    must be long enough to pay for it. With 16 vector registers (AVX2): resnet50's 3x3 convs
    at 7x7 (K = 4608) 12% faster, its 1x1 convs 2048 -> 512 7%, 512 -> 2048 (K = 512) none.
    With 32 (AVX-512), a map of fewer pixels than a vector (the 2x2 and 3x3 maps of a CNN's
    last stages at small inputs) leaves most lanes of every tile idle: pixel rows there (Zen 4,
    1 thread: a 3x3 conv of 128 ch at 2x2 2.9x faster, 256 ch at 3x3 1.31x, 1x1 256 -> 1024
    at 3x3 1.10x; resnet18_like at 64x64 386 -> 238 us), int8 convs too (their A, the
    activations, then packed per row tile from the taps); on Zen 4, whose conv tiles are one
    vector wide (_tall_tiles), also by the padding rule (7x7: 3x3 conv of 512 ch 1.11x, 1x1
    2048 -> 512 1.17x, 512 -> 2048 1.11x; a 4x4 map, exactly one vector, stays: 0.87-0.91x
    as rows; 14x14 0.64x)."""
    if v.pixel_rows is None or v.M % (2 * target.lanes) or v.batch != 1:
        return v
    if v.int8:      # (A then packed per row tile from the taps: only where the waste is big)
        return v.pixel_rows() if v.N < target.lanes and v.K >= 256 else v
    if target.vector_registers >= 32:
        if v.K < 256:
            return v
        if v.N < target.lanes:
            return v.pixel_rows()
        if not target.split_zmm:
            return v
        nr = target.lanes
    else:
        if v.K < 1024:
            return v
        nr = 2 * target.lanes
    mr = 6
    cols, rows = -(-v.N // nr) * nr / v.N, -(-v.N // mr) * mr / v.N
    return v.pixel_rows() if cols > 1.15 * rows else v


def _b_packings(v: GemmView) -> tuple[str, ...]:
    """compile (a constant B), kc (a panel per K block), none (B read in place: a 1x1 conv's
    input rows are already contiguous along the output pixels)."""
    if v.b_const is not None and v.panel is None:
        return ("compile", "kc")
    return ("kc", "none") if v.b_direct and not v.int8 else ("kc",)


def _even_rows(oh: int, most: int, threads: int, least: int) -> int | None:
    """Output rows per column block (at most `most`, at least `least`) that share the OH rows
    of a conv evenly among threads taking contiguous blocks, the most rows first; None if no
    count is within 5% of an even share. (yolov8n_like's 40x40 maps in blocks of 6 rows: 7
    blocks, one thread 24 rows and the other 16; in blocks of 5, 20 and 20.)"""
    for r in range(most, max(1, least) - 1, -1):
        nblk = -(-oh // r)
        chunk = -(-nblk // threads)
        work = max(min(oh, (t + 1) * chunk * r) - min(oh, t * chunk * r)
                   for t in range(threads))
        if work * threads <= 1.05 * oh:
            return r
    return None


def _tall_tiles(v: GemmView, target: Any) -> bool:
    """16 rows x 1 vector for a float convolution on Zen 4 (32 registers, half-rate 512-bit
    FMAs): each broadcast of an A (weight) element feeds one FMA, so LLVM folds it into the
    FMA's memory operand. 5-7% faster than 8 x 2 vectors on every CNN measured there
    (resnet50, squeezenet, inception_v1, yolov8n_like; mobilenetv2_224 3%); matmuls with
    constant B (the encoders) lose 4% that way and keep 8 x 2. Where two 512-bit FMAs issue per
    cycle (Intel) it is load-bound, 17 loads to 16 FMAs: 3-20% slower than 12 x 2 on resnet50's
    conv shapes (a Xeon, 1 thread: a 1x1 conv 512 -> 128 at 28x28 116 against 127 GFLOP/s, a
    3x3 conv of 512 ch at 7x7 93 against 113)."""
    return not v.int8 and v.row is not None and target.vector_registers >= 32 and \
        target.split_zmm


def _runtime_operands(v: GemmView, target: Any) -> bool:
    """A float matmul of two run-time operands (attention's products, a plain MatMul) where
    two full-width FMAs issue per cycle: 12 rows x 2 vectors, K blocks of up to 512 (half the
    passes over C) and A read in place (12 rows 4 KiB apart still fit the 12-way L1). A Xeon,
    GEMM 1024^3: 140.7 -> 154.5 GFLOP/s at 1 thread (A packed per row tile: 145.2), 270.6 ->
    307.8 at 2."""
    return v.row is None and v.a_const is None and v.b_const is None and v.a_panel is None \
        and not v.int8 and target.vector_registers >= 32 and not target.split_zmm


def _one_column_tile(n: int, lanes: int, registers: int) -> tuple[tuple[int, ...], int]:
    """Rows and columns of a tile that holds every column of a conv over a small map (a 7x7
    map's 49 pixels in 4 vectors, 6 rows): each weight, broadcast once, feeds every pixel, so
    the weights (which dominate these convs' traffic: 9.4 MB for a 3x3 conv of 512 channels)
    stream once. A Xeon, 1 thread, six such convs chained: 79 GFLOP/s as 8 x 2 vectors over
    two column tiles, 93 as 6 x 4 (97 with K blocks of 1152)."""
    vecs = -(-n // lanes)
    most = min(16, (registers - vecs - 1) // vecs)
    return tuple(range(most, max(1, most - 2) - 1, -1)), vecs * lanes


def _tiles_16_registers(v: GemmView, lanes: int) -> tuple[tuple[int, ...], int]:
    """Register tiles where there are 16 vector registers (AVX2): the 8 x 2 vectors of
    AVX-512 need 19 and spill (Zen 3, 1 thread: GEMM 1024^3 at 22 GFLOP/s of an 90 peak,
    yolov8n_like 107 ms against onnxruntime's 46). Convolutions and matmuls of two run-time
    operands take 6 (or 4) rows x 2 vectors, matmuls with constant B 4 rows x 3 vectors (12
    accumulators either way): measured there, GEMM 1024^3 62 GFLOP/s (4 x 3: 55),
    yolov8n_like 65 ms (4 x 3: 79), mobilenetv2_224 26 -> 18.5 ms, minilm_like 30 -> 16.6 ms
    (6 x 2 for its weight matmuls: 21 ms)."""
    if v.row is None and v.b_const is not None:
        return (4,), 3 * lanes
    # 6 rows unless that pads more than 1/8 of M (4 x 2 vectors is 8 accumulators: fewer
    # than FMA latency x pipes keep busy): resnet50 200 -> 185 ms, yolov8n_like 70 -> 63 ms
    return ((6,) if -(-v.M // 6) * 6 <= v.M * 1.125 else (6, 4)), 2 * lanes


def _panel_stride(cols: int) -> int:
    """The row length (4-byte elements) of a B panel `cols` wide: one cache line longer where
    the rows would be a multiple of 1 KiB. A conv at 28x28 in blocks of 9 rows (252 columns,
    rows of 1 KiB) ran 1.35x slower than with rows of 1088 bytes (Zen 3: 128 ch 3x3, 5.8 ->
    4.3 ms); other lengths measured (4, 13, 14 lines; 7x7 and 14x14 maps) gain nothing and
    lose up to 15% with the extra line."""
    lines = -(-cols // 16)
    return (lines + (lines % 16 == 0)) * 16


def _whole_rows(oh: int, most: int, row: int, nr: int) -> int:
    """Output rows per column block (at most `most`) that split the OH rows into equal
    blocks, of whole register tiles where that leaves at least 64 columns: the blocked loops
    then have no tail block and no masked tile. Zen 3, a 1x1 conv of 128 -> 512 ch at 28x28:
    blocks of 9 rows (252 columns) 1.95 ms, of 7 (196) 1.58, of 4 (112, 7 whole tiles)
    1.42; resnet50's 28x28 convs 1.1-1.7x faster in blocks of 4 rows than of 9."""
    for r in range(most, 0, -1):
        if oh % r == 0 and r * row % nr == 0 and r * row >= 64:
            return r
    for r in range(most, (most + 1) // 2 - 1, -1):
        if oh % r == 0:
            return r
    return most


def _share_row_tiles(v: GemmView, target: Any, threads: int, mr: int) -> bool:
    """Threads take row tiles (output channels) of a conv, not column blocks, on 16-register
    targets where there are at least 128 rows, 8 row tiles per thread, split within 1/16: each
    thread then streams half the weights instead of all of them, and packs every B panel
    itself. Zen 3, 2 threads: resnet50's 3x3 convs at 14x14 (256 ch) 1.49 -> 1.39 ms, at 28x28
    (128 ch) 1.42 -> 1.34; a 3x3 conv of 64 ch at 56x56 (11 row tiles) 1.35 -> 1.50 and
    dbnet_like's 1x1 convs to 96 ch at 160x160 0.95 -> 1.15 ms (their panels, packed twice,
    cost more than the weights), so not there."""
    if threads < 2 or v.row is None or v.int8 or v.batch >= threads or \
            target.vector_registers >= 32:
        return False
    nmr = -(-v.M // mr)
    share = -(-nmr // threads)
    return v.M >= 128 and nmr >= 8 * threads and share * threads <= nmr * (1 + 1 / 16)


def _split_k(v: GemmView, threads: int) -> bool:
    """Threads share K (parallel(kc)) for a 1x1 conv that narrows its channels, few output
    channels (M <= 160, K >= 3 M) over maps of up to 1024 pixels and a partial C of at most
    64K floats (SPLIT_K_*): each core reads the input channels it wrote itself (the depthwise
    conv before it shares channels), and what crosses between the cores is a partial C, a
    third or less of B. The other core's writes cost about 19 us per 300 KB to read here (a
    384 -> 64 ch 1x1 conv at 14x14, its input written by one thread: 54 us alone, 80 after).
    A Xeon, 2 threads: MobileNetV2's
    projections at 14x14 0.057-0.059 -> 0.042-0.046 ms, at 28x28 0.062-0.065 -> 0.055-0.056,
    at 7x7 0.074 -> 0.067; mobilenetv2_224 2.2-3.7% faster, squeezenet 2.4%, efficientnet
    1.1%. Not for ResNet-50's 512 -> 128 at 28x28 (1.5% slower each: a large partial C), nor
    over 55x55 maps (squeezenet 1.8% slower), nor for 3x3 convs (10% slower)."""
    return (threads > 1 and v.b_direct and not v.int8 and v.batch == 1 and v.a_const is not None
            and v.M <= SPLIT_K_MAX_M and v.K >= 3 * v.M and v.N <= SPLIT_K_MAX_N
            and v.M * v.N <= SPLIT_K_MAX_C)


def _b_in_place(v: GemmView, mr: int, nr: int) -> bool:
    """A 1x1 conv with few output channels reads its input in place (pack(B, at=none)) rather
    than copying it into micro-panels first: a copy costs about as much per element as M
    FMAs do, so with M <= 32 it was a fifth of the kernel. Only where the micro-panel it reads
    in place (K <= 64 rows of NR floats, rows a whole map apart) stays in L1: rows on whole
    cache lines and at most 16 of its lines in any L1 set (an image's rows 2^k lines apart
    share a few sets), or one row tile (each B element read once). Xeon, per kernel in the
    model, 1 / 2 threads: dbnet_like's 16 -> 16 ch at 320x320 673 -> 539 / 479 -> 275 us, its
    24 -> 4 ch head 538 -> 497 / 377 -> 227, yolov8n_like's 32 -> 32 ch at 80x80 4-24% faster,
    mobilenetv2_224's 32 -> 16 ch at 112x112 145 -> 114 / 115 -> 88; but dbnet_like's 64 -> 24
    ch at 160x160 (rows 1600 lines apart: two sets) 714 -> 849 at 1 thread, and M = 24 at
    56x56 with K = 96-144 1.2-1.4x slower at 2 threads (the remote half of B no longer
    streams)."""
    if not v.b_direct or v.int8 or v.M > 32 or v.K > 64 or (v.N * 4) % 64:
        return False
    if v.M <= mr:
        return True
    lines = v.N * 4 // 64                         # between two rows of B
    sets = min(L1_SETS, (L1_SETS // math.gcd(lines, L1_SETS)) * (nr * 4 // 64))
    return v.K * (nr * 4 // 64) <= 16 * sets


def _even_k(K: int, nc: int) -> int:
    """K blocks of about 384 rows, of equal length (K = 512: one block, not 384 + 128), while
    the B panel (KC x NC floats) stays within 400 KiB of L2. Zen 3, 1 thread: resnet50's
    1x1 convs 512 -> 2048 at 7x7 2.3 -> 2.0 ms; the rest of resnet50 and squeezenet even."""
    nkc = max(1, round(K / 384))
    while -(-K // nkc) * nc * 4 > 400 * 1024 and nkc < K:
        nkc += 1
    return -(-K // nkc)


def _int8_packing(v: GemmView) -> tuple[str, str]:
    """int8 operands are read as words of four K values, so both are packed: constants at
    compile time, activations at run time."""
    return ("compile" if v.a_const is not None else "mr",
            "compile" if v.b_const is not None and v.panel is None else "kc")


def _pack_const(arr: np.ndarray, block: int, rows_axis: int) -> np.ndarray:
    """[batches, R, C] -> panels [batches, ceil(R'/block), other, block] where R' is the axis
    `rows_axis` (1: rows M of A, 2: columns N of B) padded with zeros to whole blocks. One
    copy, straight into the panels, in runs of `block` elements (moving the axis first made
    two, one of them element by element: light_resnet50's 2048 x 1000 classifier took 95 ms;
    padding first made two, and each fresh page costs)."""
    dt = np.int32 if arr.dtype == np.int32 else np.float32
    g, n, other = arr.shape[0], arr.shape[rows_axis], arr.shape[3 - rows_axis]
    whole, rest = divmod(n, block)
    out = (np.zeros if rest else np.empty)((g, whole + (rest > 0), other, block), dt)
    if rows_axis == 1:       # [g, M, K] -> [g, M/b, b, K] -> [g, M/b, K, b]
        dst = out.transpose(0, 1, 3, 2)
        dst[:, :whole] = arr[:, :whole * block].reshape(g, whole, block, other)
        if rest:
            dst[:, whole, :rest] = arr[:, whole * block:]
    else:                    # [g, K, N] -> [g, K, N/b, b] -> [g, N/b, K, b]
        dst = out.transpose(0, 2, 1, 3)
        dst[:, :, :whole] = arr[:, :, :whole * block].reshape(g, other, whole, block)
        if rest:
            dst[:, :, whole, :rest] = arr[:, :, whole * block:]
    return out


def _words(arr: np.ndarray, k_axis: int) -> np.ndarray:
    """int8 [batches, R, C] -> int32 words of four consecutive K values (axis `k_axis`, padded
    with zeros to a multiple of 4), little-endian: the layout vpdpbusd reads."""
    a = np.moveaxis(arr.astype(np.int8), k_axis, -1)
    k = a.shape[-1]
    a = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, quads(k) * 4 - k)])
    w = np.ascontiguousarray(a).view(np.int32)               # [..., K/4]
    return np.ascontiguousarray(np.moveaxis(w, -1, k_axis))


class GemmKernel:
    """Builds the kernel a plan describes (see the module docstring). An int8 view (u8 x s8)
    runs over int32 words of four K values: the same blocking, `dpbusd` for the FMA, int32
    accumulators, and the whole K in one block (partial sums have nowhere to go in a u8 C)."""

    def __init__(self, v: GemmView, p: GemmPlan):
        self.v, self.p = v, p
        self.i8 = v.int8
        self.dt = I32 if v.int8 else F32                  # the packed operands and accumulators
        self.ncpad = -(-p.nc // p.nr) * p.nr
        self.nkc, self.nnc, self.nmr = -(-v.K // p.kc), -(-v.N // p.nc), -(-v.M // p.mr)
        self.b: Expr = Var("b") if v.batch > 1 else c64(0)   # (a batch of one is index 0)
        self.nc, self.kc, self.mr, self.nr = Var("nc"), Var("kc"), Var("mr"), Var("nr")
        self.kk, self.i, self.jo, self.ln = Var("kk"), Var("i"), Var("jo"), Var("l")
        self.kcur = emin(p.kc, add(v.K, mul(self.kc, -p.kc)))   # rows in this K block
        if self.i8:
            self.kcur = c64(quads(v.K))                            # words: one K block
        self.valid = emin(p.nc, add(v.N, mul(self.nc, -p.nc)))  # columns in this N block
        self.jl = add(mul(self.jo, p.lanes), self.ln)            # column within the tile
        self.m_abs = add(mul(self.mr, p.mr), self.i)
        self.n0 = add(mul(self.nc, p.nc), mul(self.nr, p.nr))
        self.k_abs = add(mul(self.kc, p.kc), self.kk)
        self.packed: dict[Buffer, np.ndarray] = {}
        self.scratch: list[Buffer] = []
        self.a_weights: Buffer | None = None      # A packed at compile time ([g][M/MR][K][MR])
        self.b_ahead: Any = None     # (k steps, column) -> a prefetch of B's micro-panel
        self.part: Buffer | None = None           # parallel(kc): the partial tiles (shared)

    def operand_a(self) -> tuple[Expr, Stmt | None]:
        """The A element the micro-kernel broadcasts, and the statement packing it (if any)."""
        v, p = self.v, self.p
        if p.pack_a == "panel":           # the pixels' im2col rows [KC][pixels], all of them
            assert v.a_panel is not None and v.a_row is not None and v.a_rows is not None
            cols = self.nmr * p.mr
            slack = -v.a_row % p.lanes     # (a row's last vector is stored whole)
            apan = Buffer(f"{v.name}_apan", F32, (p.kc, _panel_stride(max(cols, v.M + slack))),
                          Scope.SCRATCH)
            self.scratch.append(apan)
            fill = v.a_panel(apan, self.b, self.kc, self.kcur, c64(0), p.kc, v.a_rows, p.lanes)
            return BufLoad(apan, (self.kk, self.m_abs), F32), seq(
                fill, self.zero_tail(apan, c64(v.M), cols))
        if p.pack_a == "compile":
            assert v.a_const is not None
            src = _words(v.a_const, 2) if self.i8 else v.a_const
            arr = _pack_const(src, p.mr, 1)                       # [g][M/MR][K][MR]
            buf = Buffer(f"{v.name}_w", self.dt, arr.shape, Scope.GLOBAL)
            self.packed[buf] = arr
            self.a_weights = buf
            return BufLoad(buf, (v.a_batch(self.b), self.mr, self.k_abs, self.i), self.dt), None
        if self.i8:                          # u8 activations: four K values to a word per row
            apack = Buffer(f"{v.name}_apack", I32, (p.mr, quads(v.K)), Scope.SCRATCH)
            self.scratch.append(apack)
            ai, kq = Var("ai"), Var("kq")
            m = emin(add(mul(self.mr, p.mr), ai), v.M - 1)

            def byte(j: int) -> Expr:
                k = add(mul(kq, 4), j)
                val = v.a_load(self.b, m, emin(k, v.K - 1))
                return select(k.lt(v.K), val, Const(0, DType.U8)) if v.K % 4 else val
            fill = For(ai, c64(p.mr), For(kq, self.kcur, Store(apack, (ai, kq), word(byte))))
            return BufLoad(apack, (self.i, self.kk), I32), fill
        if p.pack_a == "none":
            return v.a_load(self.b, emin(self.m_abs, v.M - 1), self.k_abs), None
        # A rows read in place sit a row apart: rows a multiple of 4 KiB long all map to one
        # cache set. Copy the MR x KC panel once per (mr, kc) into contiguous scratch.
        apack = Buffer(f"{v.name}_apack", F32, (p.mr, p.kc), Scope.SCRATCH)
        self.scratch.append(apack)
        ai = Var("ai")
        fill = For(ai, c64(p.mr), vloop(self.kk, self.kcur, lambda kv: Store(
            apack, (ai, kv), v.a_load(self.b, emin(add(mul(self.mr, p.mr), ai), v.M - 1),
                                      add(mul(self.kc, p.kc), kv))), p.lanes))
        return BufLoad(apack, (self.i, self.kk), F32), fill

    def operand_b(self) -> tuple[Expr, Stmt | None]:
        """The B vector the micro-kernel loads, and the statement packing its panel (if any)."""
        v, p = self.v, self.p
        if p.pack_b == "none":               # in place: masked past N by the view's own load
            return v.b_load(self.b, self.k_abs, add(self.n0, self.jl)), None
        if p.pack_b == "compile":
            assert v.b_const is not None
            src = _words(v.b_const, 1) if self.i8 else v.b_const
            arr = _pack_const(src, p.nr, 2)                       # [1][N/NR][K][NR]
            buf = Buffer(f"{v.name}_w", self.dt, arr.shape, Scope.GLOBAL)
            self.packed[buf] = arr
            self.b_ahead = lambda d, j: Prefetch(buf, (v.b_batch(self.b), div(self.n0, p.nr),
                                                       add(self.k_abs, d), c64(j)))
            return BufLoad(buf, (v.b_batch(self.b), div(self.n0, p.nr), self.k_abs, self.jl),
                           self.dt), None
        rows = quads(v.K) if self.i8 else p.kc
        if (v.panel is None or v.b_direct) and not self.i8:
            # micro-panels [NC/NR][KC][NR]: the micro-kernel streams one contiguous NR x KC
            # panel (BLIS's layout), not NR columns of KC rows NC apart. A 1x1 conv's B is its
            # input as it lies, so it packs this way too (a conv's im2col rows do not: a row
            # of pixels straddles micro-panels). Xeon: 384 -> 64 ch at 14x14, 70.9 -> 68.0 us;
            # light_resnet50 2.8% faster at 1 thread, 2.1% at 2, yolov8n_like 3.4% at 2
            col = Buffer(f"{v.name}_col", self.dt, (self.ncpad // p.nr, rows, p.nr),
                         Scope.SCRATCH)
            self.scratch.insert(0, col)
            t, j = Var("t"), Var("j")
            guard = v.N % p.nc or p.nc % p.nr      # columns past N read as zeros

            def mcell(jv: Expr) -> Stmt:
                n = add(mul(self.nc, p.nc), mul(t, p.nr), jv)
                val = v.b_load(self.b, self.k_abs, n)
                return Store(col, (t, self.kk, jv), select(n.lt(v.N), val, Const(0.0, F32))
                             if guard else val)
            # rows of B outer: each is read once, front to back, into the NC/NR panels (panels
            # outer read NR columns of every row per panel; a 14x14 map's 784-byte rows
            # straddle lines): GEMM 1024^3 12.69 -> 12.37 ms, light_resnet50 1.7% at 1 thread
            fill = For(self.kk, self.kcur, For(t, c64(self.ncpad // p.nr),
                                               vloop(j, c64(p.nr), mcell, p.lanes)))
            self.b_ahead = lambda d, jj: Prefetch(col, (self.nr, add(self.kk, d), c64(jj)))
            return BufLoad(col, (self.nr, self.kk, self.jl), self.dt), fill
        slack = -v.row % p.lanes if v.row and v.panel is not None and not self.i8 else 0
        col = Buffer(f"{v.name}_col", self.dt,
                     (rows, _panel_stride(max(self.ncpad, p.nc + slack))), Scope.SCRATCH)
        self.scratch.insert(0, col)
        if v.panel is not None:
            fill = v.panel(col, self.b, self.kc, self.kcur, self.nc, p.kc,
                           p.nc // (v.row or 1), p.lanes)
            if not self.i8:
                fill = seq(fill, self.zero_tail(col, self.valid, self.ncpad))
        else:
            j = Var("j")
            guard = v.N % p.nc or p.nc % p.nr      # columns past N read as zeros

            def cell(jv: Expr) -> Stmt:
                n = add(mul(self.nc, p.nc), jv)
                val = v.b_load(self.b, self.k_abs, n)
                return Store(col, (self.kk, jv), select(n.lt(v.N), val, Const(0.0, F32))
                             if guard else val)
            fill = For(self.kk, self.kcur, vloop(j, c64(self.ncpad), cell, p.lanes))
        return BufLoad(col, (self.kk, add(mul(self.nr, p.nr), self.jl)), self.dt), fill

    def prefetch_a(self) -> Stmt | None:
        """A prefetch, each k step, of the weights PREFETCH_BYTES ahead of the ones the
        micro-kernel broadcasts: inside a model they stream from memory (earlier kernels
        evicted them; deep layers' weights exceed L2), and the hardware prefetchers kept the
        FMAs waiting (see PREFETCH_BYTES). Past this row tile's slice of the K block comes the
        next row tile's slice: with one K block, the next addresses; with several, the same
        block one row tile on. (Past the last tile it prefetches beyond the weights, which a
        prefetch may.)"""
        buf = self.a_weights
        if buf is None:
            return None
        v, p = self.v, self.p
        d = max(1, PREFETCH_BYTES // (p.mr * buf.dtype.itemsize))
        g = v.a_batch(self.b)
        if self.nkc == 1:
            return Prefetch(buf, (g, self.mr, add(self.k_abs, d), c64(0)))
        d = min(d, p.kc)        # (at most one row tile on: the same k in the next one)
        on = add(self.kk, d).lt(self.kcur)          # still within this row tile's slice
        return Prefetch(buf, (g, add(self.mr, select(on, c64(0), c64(1))),
                              add(self.k_abs, add(c64(d), mul(select(on, c64(0), self.kcur),
                                                               -1))), c64(0)))

    def prefetch_b(self) -> Stmt | None:
        """Prefetches, each k step, of the B micro-panel row PREFETCH_B_BYTES ahead (every cache
        line of its NR columns), where B is packed in micro-panels (a matmul's B, constant or
        run-time): the weights of a MiniLM's projections stream from memory, a run-time panel
        from L2. A Xeon, 1 thread: minilm_like 7.18 -> 5.79 ms, crnn_like 9.37 -> 8.94, GEMM
        1024^3 153 -> 157 GFLOP/s. Not for a conv's im2col panel (rows of whole output rows):
        resnet50 and yolov8n_like measured within noise."""
        if self.b_ahead is None:
            return None
        p = self.p
        d = max(1, PREFETCH_B_BYTES // (p.nr * 4))
        return seq(*[self.b_ahead(d, j) for j in range(0, p.nr, 64 // 4)])

    def zero_tail(self, panel: Buffer, start: Expr, end: int) -> Stmt | None:
        """Zeros in columns start..end of every K row of a conv panel the panel builder filled
        up to `start` (and a vector's overrun past it): the micro-kernel's last tile reads
        them, and whatever an earlier kernel left in the arena there may be denormal floats,
        which cost Intel cores a microcode assist per FMA (a 3x3 conv of 512 ch at 7x7, 49 of
        64 columns valid: 2.3 ms with zeros there, 98 ms with denormals)."""
        if isinstance(start, Const) and int(start.value) >= end:   # type: ignore[arg-type]
            return None
        j = Var("z")
        return For(self.kk, self.kcur, vloop(j, add(c64(end), mul(start, -1)), lambda jv: Store(
            panel, (self.kk, add(start, jv)), Const(0.0, F32)), self.p.lanes))

    def half_tail(self) -> bool:
        """Whether a block's last register tile may have at most half of NR's columns valid
        (N = 196, a 14x14 map: 6 tiles of 32 and one of 4), so that it is worth a micro-kernel
        over half the vectors. A Xeon, 1 thread: a 1x1 conv of 576 -> 96 ch at 14x14 0.164 ->
        0.150 ms; light_resnet50 1.4% faster, efficientnet_b0_like 5%."""
        v, p = self.v, self.p
        if self.i8 or p.nr % (2 * p.lanes):
            return False
        tails = {v.N % p.nc % p.nr, p.nc % p.nr} - {0}
        return any(t <= p.nr // 2 for t in tails)

    def per_cell(self, st: Stmt, guarded: bool) -> Stmt:
        """`st` for every (i, column) of the tile: the tail tile masked, tail rows skipped."""
        v, p = self.v, self.p
        full = v.N % p.nc == 0 and p.nc % p.nr == 0

        def cols(n: Expr) -> Stmt:
            return For(self.jo, c64(p.nr // p.lanes), For(self.ln, n, st, VECTOR, p.lanes),
                       UNROLL)
        body = cols(c64(p.lanes))
        if guarded and not full:
            # only the block's last tile is masked: AVX2's masked loads and stores
            # (vmaskmovps) are slow on AMD (Zen 3, a 3x3 conv of 128 ch at 28x28 in blocks
            # of 7 rows: 5.1 -> 4.0 ms)
            ncols = emin(p.lanes, add(self.valid, mul(add(mul(self.nr, p.nr),
                                                          mul(self.jo, p.lanes)), -1)))
            body = IfThen(add(mul(self.nr, p.nr), p.nr).le(self.valid), body, cols(ncols))
        if v.M % p.mr and guarded:
            body = IfThen(self.m_abs.lt(v.M), body)
        return For(self.i, c64(p.mr), body, UNROLL)

    def tile(self, a_val: Expr, b_val: Expr) -> Stmt:
        """One MR x NR register tile: initialize (or reload partial sums), FMAs over this K
        block, store (the epilogue on the last K block)."""
        v, p = self.v, self.p
        acc = Buffer(f"{v.name}_acc", self.dt, (p.mr, p.nr), Scope.LOCAL)
        acc_ij = BufLoad(acc, (self.i, self.jl), self.dt)
        if self.i8:       # dpbusd(acc, u8 word, s8 word)
            u, s = (a_val, b_val) if v.a_unsigned else (b_val, a_val)
            fma = Store(acc, (self.i, self.jl), call("dpbusd", acc_ij, u, s))
        else:
            fma = Store(acc, (self.i, self.jl), call("add", acc_ij, call("mul", a_val, b_val)))

        def micro_of(vectors: int) -> Stmt:
            return For(self.kk, self.kcur, seq(
                self.prefetch_a(), self.prefetch_b(),
                For(self.i, c64(p.mr), For(self.jo, c64(vectors), For(
                    self.ln, c64(p.lanes), fma, VECTOR, p.lanes), UNROLL), UNROLL)))
        micro = micro_of(p.nr // p.lanes)
        if self.half_tail():
            # a last tile with at most half its columns valid runs half the FMAs (the other
            # accumulators stay zero, and the store masks them off)
            left = add(self.valid, mul(self.nr, -p.nr))
            micro = IfThen(left.le(c64(p.nr // 2)), micro_of(p.nr // p.lanes // 2), micro)
        out_idx = v.out_index(self.b, self.m_abs, add(self.n0, self.jl))
        start: Expr = Const(0 if self.i8 else 0.0, self.dt)
        epi = v.epilogue
        if v.zp_rows is not None and v.epilogue_from_init is not None and p.parallel != "kc":
            # int8 with a zero point: the sums start at -zp x sum w (one broadcast per row)
            # rather than have it subtracted from every vector in the epilogue
            start, epi = v.zp_rows(self.b, self.m_abs), v.epilogue_from_init
        init: Stmt = self.per_cell(Store(acc, (self.i, self.jl), start), False)
        final = self.per_cell(Store(v.out, out_idx, epi(
            acc_ij, self.b, self.m_abs, add(self.n0, self.jl))), True)
        store = final
        if p.parallel == "kc":      # this K block's partial tile, summed after the barrier
            part = self.partials()
            init = self.per_cell(Store(acc, (self.i, self.jl), Const(0.0, F32)), False)
            store = self.per_cell(Store(part, (self.kc, self.m_abs, add(self.n0, self.jl)),
                                        acc_ij), False)
        elif self.nkc > 1 and p.pack_a == "panel":
            # partial sums in scratch laid out as the tile (C itself has the pixels along
            # the vectors: each reload would be a gather and each store a scatter)
            part = Buffer(f"{v.name}_part", self.dt, (self.nmr * p.mr, self.ncpad),
                          Scope.SCRATCH)
            self.scratch.append(part)
            pidx = (self.m_abs, add(mul(self.nr, p.nr), self.jl))
            init = IfThen(self.kc.eq(0), init, self.per_cell(
                Store(acc, (self.i, self.jl), BufLoad(part, pidx, F32)), False))
            store = IfThen(self.kc.eq(self.nkc - 1), final,
                           self.per_cell(Store(part, pidx, acc_ij), False))
        elif self.nkc > 1:
            init = IfThen(self.kc.eq(0), init, self.per_cell(
                Store(acc, (self.i, self.jl), BufLoad(v.out, out_idx, F32)), True))
            store = IfThen(self.kc.eq(self.nkc - 1), final,
                           self.per_cell(Store(v.out, out_idx, acc_ij), True))
        return Allocate(acc, seq(init, micro, store))

    def loops(self, a_fill: Stmt | None, b_fill: Stmt | None, tile: Stmt) -> Stmt:
        """The blocked loops around the tile, with the threads' share as the plan says."""
        v, p = self.v, self.p
        n_tiles = div(add(self.valid, p.nr - 1), p.nr)
        rows: Stmt = For(self.mr, c64(self.nmr), seq(a_fill, For(self.nr, n_tiles, tile)))
        if p.pack_a == "panel":
            # A's panel once per K block; each B micro-panel (KC x NR) stays in L1 while
            # every row tile passes over it
            b_fill = seq(a_fill, b_fill)
            rows = For(self.nr, n_tiles, For(self.mr, c64(self.nmr), tile))
        if p.parallel == "mc":      # few columns, many rows: threads take row tiles
            chunk = -(-self.nmr // p.threads)
            mc, mi = Var("mc"), Var("mi")
            rows = For(mi, emin(chunk, add(self.nmr, mul(mc, -chunk))), subst_stmt(
                seq(a_fill, For(self.nr, n_tiles, tile)), {"mr": add(mul(mc, chunk), mi)}))
        if p.parallel == "kc":
            return self.split_k(b_fill, rows)
        kloop = For(self.kc, c64(self.nkc), seq(b_fill, rows))
        nc_kind = PARALLEL if p.parallel == "nc" and self.nnc > 1 else SERIAL
        body: Stmt = For(self.nc, c64(self.nnc), kloop, nc_kind)
        if v.prologue is not None:      # (every thread, into its own scratch)
            body = seq(v.prologue(self.b, p.lanes), body)
        if v.batch > 1:
            body = For(self.b, c64(v.batch), body,  # type: ignore[arg-type]
                       PARALLEL if p.parallel == "b" else SERIAL)
        if p.parallel == "mc":
            body = For(mc, c64(p.threads), body, PARALLEL)
        return body

    def partials(self) -> Buffer:
        """parallel(kc): every K block's partial C, [K blocks][row tiles x MR][columns], one
        buffer all the threads write (each its own blocks) and then read."""
        v, p = self.v, self.p
        if self.part is None:
            cols = (self.nnc - 1) * p.nc + self.ncpad
            self.part = Buffer(f"{v.name}_part", F32, (self.nkc, self.nmr * p.mr, cols),
                               Scope.SHARED)
            self.scratch.append(self.part)
        return self.part

    def split_k(self, b_fill: Stmt | None, rows: Stmt) -> Stmt:
        """parallel(kc): the threads share the K blocks, each running every row and column
        tile over its blocks into their partial tiles; a barrier; then they share the output
        rows, each summing the partials of its rows through the epilogue. What crosses
        between the cores is the partial C (M x N per block) instead of B (K x N): the 1x1
        projections of a MobileNet (K 6x M) read their input where the depthwise conv before
        them wrote it, each core its own channels."""
        v, p = self.v, self.p
        part = self.partials()
        work = For(self.kc, c64(self.nkc), For(self.nc, c64(self.nnc), seq(b_fill, rows)),
                   PARALLEL)
        chunk = -(-v.M // p.threads)
        mc, mi, n = Var("mc"), Var("mi"), Var("n")
        m = add(mul(mc, chunk), mi)
        b = c64(0)

        def cell(nv: Expr) -> Stmt:
            total: Expr = BufLoad(part, (c64(0), m, nv), F32)
            for k in range(1, self.nkc):
                total = call("add", total, BufLoad(part, (c64(k), m, nv), F32))
            return Store(v.out, v.out_index(b, m, nv), v.epilogue(total, b, m, nv))
        sums = For(mc, c64(p.threads), For(mi, emin(chunk, add(c64(v.M), mul(mc, -chunk))),
                                           vloop(n, c64(v.N), cell, p.lanes)), PARALLEL)
        return seq(work, Barrier(), sums)

    def kernel(self) -> Kernel:
        self.packed.update(self.v.extra)
        a_val, a_fill = self.operand_a()
        b_val, b_fill = self.operand_b()
        body = self.loops(a_fill, b_fill, self.tile(a_val, b_val))
        v, p = self.v, self.p
        drop = [v.a_param if p.pack_a == "compile" else None,
                v.b_param if p.pack_b == "compile" else None]
        params, roles = v.without(*drop)
        self.scratch += list(v.scratch)
        extra = list(self.packed) + self.scratch
        return Kernel(v.name, params + tuple(extra),
                      roles + ("weight",) * len(self.packed) + tuple(
                          "shared" if b.scope == Scope.SHARED else "scratch"
                          for b in self.scratch),
                      body, flops=v.flops)


# ---- the rule -------------------------------------------------------------------------------

def _pixel_rows_defaults(v: GemmView, threads: int, lanes: int) -> dict[str, Any]:
    """6 pixels x 2 vectors of channels; K in equal blocks of at most 384, so that the B
    micro-panel (KC x NR) stays in L1 while the row tiles pass over it; the channels split
    between threads. Zen 3, 1 thread, a 3x3 conv of 512 ch at 7x7: 4.6-5.0 ms as 64 columns,
    3.8-4.4 ms with the pixels as rows in K blocks of 192-384 (1152: 4.7)."""
    nr = 2 * lanes
    nkc = -(-v.K // 384)
    kc = -(-v.K // nkc)
    nc = -(-v.N // nr) * nr
    if threads > 1 and v.N >= 2 * threads * nr:
        share = -(-v.N // threads)
        nc = -(-share // nr) * nr
    return {"MR": min(6, v.M), "NR": nr, "KC": kc, "NC": nc,
            "parallel": "none" if threads == 1 or nc >= v.N else "nc",
            "pack_a": "panel", "pack_b": "compile"}


class CpuGemm(Rule):
    """`cpu.gemm`: the template for groups whose anchor op names a GEMM view in the registry."""

    name = "cpu.gemm"

    def view(self, ctx: LowerCtx) -> GemmView | None:
        """The GEMM in the orientation the defaults take (see _pixel_rows)."""
        def make() -> GemmView | None:
            v = self.plain_view(ctx)
            return _pixel_rows(v, ctx.target) if v is not None else None
        return ctx.memo("gemm_view_cpu", make)

    def plain_view(self, ctx: LowerCtx) -> GemmView | None:
        return ctx.memo("gemm_view", lambda: gemm_view(ctx.name, ctx.group, ctx.bufs,
                                                       ctx.consts))

    def applies(self, ctx: LowerCtx) -> bool:
        return ctx.opts.opt_level >= 1 and self.view(ctx) is not None

    def space(self, ctx: LowerCtx) -> KnobSpace:
        v = self.view(ctx)
        assert v is not None
        L = ctx.target.lanes
        nc = self.defaults(ctx)["NC"]
        if v.row is not None:
            oh = v.N // v.row
            ncs = sorted({r * v.row for r in (1, 2, 4, 8, 16, 32, 64) if r <= oh} | {nc})
        else:
            ncs = sorted({min(n, -(-v.N // (4 * L)) * 4 * L) for n in (64, 128, 256, 512, 1024)}
                         | {nc})
        par = ["none"] if ctx.threads == 1 else ["none", "nc", "mc"] + (
            ["b"] if v.batch > 1 else []) \
            + (["kc"] if v.batch == 1 and v.a_const is not None and not v.int8 else [])
        if v.a_panel is not None:
            ncs = sorted({n for n in (2 * L, 4 * L, 8 * L, 16 * L, 32 * L) if n < v.N} |
                         {-(-v.N // (2 * L)) * 2 * L, nc})
            par = [x for x in par if x != "mc"]
        if v.int8:
            pa, pb = _int8_packing(v)
            return {"MR": tuple(range(1, min(8, v.M) + 1)), "NR": (L, 2 * L, 4 * L),
                    "KC": (v.K,), "NC": tuple(ncs), "parallel": tuple(par), "pack_a": (pa,),
                    "pack_b": (pb,)}
        return {"MR": tuple(range(1, min(16, v.M) + 1)), "NR": (L, 2 * L, 3 * L, 4 * L),
                "KC": tuple(sorted({min(k, v.K) for k in (32, 64, 128, 256, 512)})),
                "NC": tuple(ncs), "parallel": tuple(par),
                "pack_a": _a_packings(v), "pack_b": _b_packings(v)}

    def invalid(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> str | None:
        if knobs["parallel"] == "kc" and knobs["pack_a"] != "compile":
            return "parallel(kc) takes A packed at compile time"
        if knobs["pack_b"] == "compile" and knobs["NC"] % knobs["NR"]:
            return f"B packed at compile time needs NC={knobs['NC']} a multiple of NR"
        vecs = knobs["NR"] // ctx.target.lanes
        # accumulators, the B vectors and one broadcast of A (AVX-512 folds a broadcast into
        # the FMA's memory operand, {1to16}, where each broadcast feeds one FMA)
        folds = vecs == 1 and ctx.target.vector_registers >= 32
        if knobs["MR"] * vecs + vecs + (not folds) > ctx.target.vector_registers:
            return (f"an MR={knobs['MR']} x NR={knobs['NR']} tile needs more than the "
                    f"{ctx.target.vector_registers} vector registers")
        return None

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """8 (or 6) x 2 vectors of accumulators, or for float convolutions with 32 registers 16
        (12, 8) x 1 vector (see _tall_tiles); K blocks of 256, N blocks of 256 (a conv: as many
        whole output rows as fit, or as split evenly among the threads, see _even_rows);
        threads share the batch, else the column blocks, else (few columns, many rows: the late
        layers of a CNN) the row tiles; a 1x1 conv that narrows its channels splits K instead
        (see _split_k)."""
        v = self.view(ctx)
        assert v is not None
        th, L = ctx.default_threads, ctx.target.lanes
        if v.a_panel is not None:
            return _pixel_rows_defaults(v, th, L)
        # 8 rows x 2 vectors (16 accumulators) unless 6 rows waste fewer on the last row tile
        rows, nr = ((16, 12, 8), L) if _tall_tiles(v, ctx.target) else ((8, 6), 2 * L)
        full_rate = ctx.target.vector_registers >= 32 and not ctx.target.split_zmm and \
            v.row is not None and not v.int8
        runtime = _runtime_operands(v, ctx.target)
        if full_rate or runtime:
            rows = (12, 10, 8)    # 24 accumulators: two FMAs a cycle for each load port pair
            if 2 * L < v.N <= 4 * L:
                rows, nr = _one_column_tile(v.N, L, ctx.target.vector_registers)
        if ctx.target.vector_registers < 32 and not v.int8:
            rows, nr = _tiles_16_registers(v, L)
        if v.int8 and v.K <= INT8_FEW_K:
            rows = INT8_FEW_K_ROWS
        if v.int8 and v.row is not None and v.N <= L:
            nr = L      # a map of a vector or less (2x2, 4x4): 2 vectors would be half waste
        mr = min(v.M, min(rows, key=lambda r: (-(-v.M // r) * r, -r)))
        if (full_rate and nr >= v.N) or runtime:   # the most rows padding M by < 1/10
            mr = min(v.M, next((r for r in rows if -(-v.M // r) * r < 1.1 * v.M), mr))
        kc = min(256, v.K)
        if ctx.target.vector_registers < 32 and v.row is not None:
            kc = min(384, v.K)   # Zen 3, 1 thread: resnet50 184 -> 169 ms, dbnet_like 200 -> 181
        if v.int8:          # the whole K at once: keep the B panel (K x NC bytes) near 128 KiB
            kc = v.K
        few_rows = th > 1 and v.batch < th and -(-v.M // mr) < 2 * th
        share_rows = _share_row_tiles(v, ctx.target, th, mr)
        even = None
        if v.row is not None:
            oh = v.N // v.row
            rows = max(1, min(256 // v.row, oh))
            if v.int8:
                rows = max(1, min(rows, (1 << 17) // (v.K * v.row)))
            if th > 1 and v.batch < th and not share_rows:
                even = _even_rows(oh, rows, th, -(-4 * nr // v.row))
            if even is not None:
                rows = even
            elif few_rows:
                rows = max(1, min(rows, -(-oh // th)))  # share columns (rows of the output)
            elif ctx.target.vector_registers < 32 and not v.int8:
                rows = _whole_rows(oh, rows, v.row, nr)
            nc = rows * v.row
        else:
            nc = max(nr, min(256 // nr * nr, -(-v.N // nr) * nr))
            if few_rows:   # too few row tiles to share: give every thread its own column blocks
                nc = max(nr, min(nc, -(-(-(-v.N // th)) // nr) * nr))
        if ctx.target.vector_registers < 32 and v.row is not None and not v.int8:
            kc = _even_k(v.K, nc)
        elif full_rate and nr >= v.N:
            kc = min(v.K, 1152)   # the B panel (KC x NR) stays in L2, A streams in long runs
        elif full_rate and v.K <= ONE_K_BLOCK:
            kc = v.K              # one K block: no partial sums stored and reloaded
        nnc, nmr = -(-v.N // nc), -(-v.M // mr)
        par = "none" if th == 1 else "mc" if share_rows else "nc" if even is not None else \
            "mc" if v.batch < th and nnc < 2 * th and nmr >= 2 * th else \
            "b" if v.batch >= th else "nc"
        pa, pb = _int8_packing(v)       # (the float defaults too)
        if runtime:
            kc, pa = min(512, v.K), "none"
        if pa == "compile" and _split_k(v, th):
            par, kc = "kc", -(-v.K // th)       # a K block per thread
        elif pb == "kc" and _b_in_place(v, mr, nr):
            pb = "none"
        return {"MR": mr, "NR": nr, "KC": kc, "NC": nc, "parallel": par, "pack_a": pa,
                "pack_b": pb}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        out = [step("tile", MR=knobs["MR"], NR=knobs["NR"], KC=knobs["KC"], NC=knobs["NC"]),
               step("pack", "A", at=knobs["pack_a"]), step("pack", "B", at=knobs["pack_b"]),
               step("vectorize", "l", ctx.target.lanes)]
        if knobs["parallel"] != "none":
            out.append(step("parallel", knobs["parallel"]))
        return out

    def apply(self, ctx: LowerCtx, steps: Sequence[Step]) -> Lowered:
        # the orientation is the schedule's: pack(A, at=panel) takes the pixels as rows
        at = next((st.get("at") for st in steps if st.name == "pack" and st.args == ("A",)),
                  None)
        v = self.plain_view(ctx)
        assert v is not None
        # (an int8 conv's A is its weights, packed at compile time; packed per row tile
        # (`mr`), A is the activations: the pixels are the rows)
        if (at == "panel" or v.int8 and at == "mr") and v.pixel_rows is not None:
            v = ctx.memo("gemm_view_rows", v.pixel_rows)
        g = GemmKernel(v, plan_from_steps(v, steps, ctx.threads))
        k = g.kernel()
        return Lowered(k, dict(g.packed))
