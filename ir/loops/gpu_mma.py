"""The tensor-core GEMM template (`gpu.mma`, `--precision tf32|fp16` on the CUDA target, sm_80
and later): matmul and implicit-GEMM convolution from their GEMM views, as the `gpu.gemm`
template tiles them, but each warp computes its WM x WN part of the block's tile with
`mma.sync` (WarpMma: 16 x 8 tiles, K steps of 8 for TF32 and 16 for FP16, f32 accumulators).
An int8 GEMM (u8 x s8, as the int8 templates pack it: words of four K values) takes it when a
schedule asks, `mma(m16n8k32.u8s8)` or `s8u8` (which operand is unsigned), int32 accumulators.

A block stages BM x BK of A (rows m, columns k) and BK x BN of B in shared memory, rounded to
TF32 or converted to FP16 on the way in, rows padded (`cache_shared(A, pad=4)`) so that the
fragment loads of a warp's 32 lanes hit 32 different banks; each lane then loads its fragment
registers from shared memory in the PTX layout (ir/loops/mma.py) and the warp issues one mma
per 16 x 8 tile. The epilogue (bias, activation, residual: the fused group) runs on each
lane's accumulators at their (row, column) and stores straight to global memory.

Steps: `tile(BM=128, BN=128, BK=32, WM=64, WN=32)`, `cache_shared(A, pad=4)`,
`cache_shared(B, pad=8)`, `mma(m16n8k8.tf32)` (or `mma(m16n8k16.f16)`), and optionally
`pipeline(stages=2)` (2 to 4, TF32): the tiles are staged raw by `cp.async` into `stages`
shared buffers, the copies of the next tiles in flight while the warps compute on this one
(rounded to TF32 as the fragments are loaded). Off by default until measured on a GPU; a knob
for the tuner (its shared buffers need BK=16 at 128 x 128 to stay within 48 KiB). With FP16,
`ldmatrix(A, B)` (the default there) loads each A fragment with one `ldmatrix.x4` and each B
fragment with one `ldmatrix.x2.trans` instead of 8 and 4 scalar shared loads.
`cache_shared(A, pad=4, vec=4)` (and B) reads the operand four f32 at a time where it is stored
that way (gpu_gemm.wide_operand): one float4 load per thread and step, or with the pipeline one
16-byte cp.async. Off by default until measured on a GPU (gpu_check times both).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from minicc.errors import ScheduleError
from minicc.ir.compute import Cast, Const, Expr, Select, Var, both, call
from minicc.ir.loops.gemm_views import GemmView, add, c64, div, emin, mod, mul, quads, word
from minicc.ir.loops.gpu_gemm import (_guarded, gemm_kernel, group_view, sm_version,
                                      unguarded, wide_operands, wide_refusal,
                                      wide_tile_load)
from minicc.ir.loops.mma import A_LAYOUT, B_LAYOUT, C_LAYOUT, is_int8
from minicc.ir.loops.nodes import (MMA_SHAPES, Allocate, AsyncCommit, AsyncCopy, AsyncWait,
                                   Barrier, BufLoad, Buffer, For, IfThen, Kernel, LoopKind, Scope,
                                   Stmt, Store, WarpLdmatrix, WarpMma, seq)
from minicc.ir.loops.schedule import KnobSpace, LowerCtx, Lowered, Rule
from minicc.ir.loops.trace import Step, int_kwargs, step
from minicc.ir.types import DType

F16, F32, I32 = DType.F16, DType.F32, DType.I32
UNROLL = LoopKind.UNROLL
SHAPE_OF = {"tf32": "m16n8k8.tf32", "fp16": "m16n8k16.f16"}
SHARED_LIMIT = 48 * 1024            # static shared memory per block


def _tile_of(steps: Sequence[Step]) -> dict[str, Any]:
    t: dict[str, Any] = {"pad_a": 4, "pad_b": 8, "stages": 1, "ldmatrix": False, "vec_a": 1,
                         "vec_b": 1}
    for st in steps:
        if st.name == "tile":
            t.update(int_kwargs(st, ("BM", "BN", "BK", "WM", "WN")))
        elif st.name == "cache_shared" and st.args in (("A",), ("B",)):
            kw = int_kwargs(st, ("pad", "vec"))
            t["pad_" + str(st.args[0]).lower()] = kw.get("pad", 0)
            t["vec_" + str(st.args[0]).lower()] = kw.get("vec", 1)
        elif st.name == "mma" and len(st.args) == 1:
            t["shape"] = str(st.args[0])
        elif st.name == "pipeline":
            t["stages"] = int_kwargs(st, ("stages",)).get("stages", 1)
        elif st.name == "ldmatrix" and st.args == ("A", "B"):
            t["ldmatrix"] = True
        else:
            raise ScheduleError(f"{st}: not a step of the gpu mma template (tile, "
                                "cache_shared, mma, pipeline, ldmatrix)")
    missing = [k for k in ("bm", "bn", "bk", "wm", "wn", "shape") if k not in t]
    if missing:
        raise ScheduleError(f"gpu mma template: the steps do not set {', '.join(missing)}")
    if t["shape"] not in MMA_SHAPES:
        raise ScheduleError(f"gpu mma template: mma({t['shape']}) is not one of "
                            f"{', '.join(MMA_SHAPES)}")
    why = _invalid(t["bm"], t["bn"], t["bk"], t["wm"], t["wn"], t["pad_a"], t["pad_b"],
                   t["shape"], t["stages"], t["ldmatrix"], t["vec_a"], t["vec_b"])
    if why:
        raise ScheduleError(f"gpu mma template: {why}")
    return t


def _invalid(bm: int, bn: int, bk: int, wm: int, wn: int, pad_a: int, pad_b: int,
             shape: str, stages: int = 1, ldmatrix: bool = False, vec_a: int = 1,
             vec_b: int = 1) -> str | None:
    M, N, K = MMA_SHAPES[shape][:3]
    if vec_a not in (1, 4) or vec_b not in (1, 4):
        return "cache_shared(vec=...) is 1 or 4 elements"
    if (vec_a == 4 or vec_b == 4) and is_int8(shape):
        return "cache_shared(vec=4) reads f32 operands (int8 tiles hold words built of bytes)"
    if vec_a == 4 and (bk % 4 or stages > 1 and (bk + pad_a) % 4) or \
            vec_b == 4 and (bn % 4 or stages > 1 and (bn + pad_b) % 4):
        return ("cache_shared(vec=4) takes tiles a multiple of four long along K (A), N (B), "
                "and with pipeline(stages>1) rows (with their pad) a multiple of four: its "
                "16-byte cp.async lands on 16-byte boundaries")
    if ldmatrix and not shape.endswith("f16"):
        return "ldmatrix loads 16-bit fragments: with mma(m16n8k16.f16)"
    if ldmatrix and ((bk + pad_a) % 8 or (bn + pad_b) % 8):
        return (f"ldmatrix reads rows of 16 bytes at 16-byte boundaries: BK + pad of A "
                f"({bk} + {pad_a}) and BN + pad of B ({bn} + {pad_b}) must be multiples of 8")
    if stages not in (1, 2, 3, 4):
        return f"pipeline(stages={stages}): 1 to 4 stages"
    if stages > 1 and not shape.endswith("tf32"):
        return ("pipeline(stages>1) stages f32 tiles with cp.async: with tf32 (fp16 stores "
                "tensors as f16)")
    if min(bm, bn, bk, wm, wn) < 1 or min(pad_a, pad_b) < 0:
        return "tile sizes must be positive and pads not negative"
    if wm % M or wn % N or bm % wm or bn % wn or bk % K:
        return (f"WM={wm} must be a multiple of {M}, WN={wn} of {N}, BK={bk} of {K}, and the "
                f"warp tile must divide the block tile ({bm}x{bn})")
    warps = (bm // wm) * (bn // wn)
    if not 1 <= warps <= 32:
        return f"{warps} warps per block (1 to 32)"
    item = 2 if shape.endswith("f16") else 4        # (int8: a word of four values)
    smem = stages * item * (bm * (bk + pad_a) + bk * (bn + pad_b))
    if smem > SHARED_LIMIT:
        return f"the shared tiles take {smem} bytes (at most {SHARED_LIMIT})"
    return None


def _plain(e: Expr) -> tuple[BufLoad, Expr | None] | None:
    """An operand element read straight from a 4-byte global buffer (or 0 where a condition
    fails, a conv's padding): what cp.async can copy. Else None (a fused producer computes it,
    or it is converted)."""
    cond = None
    if isinstance(e, Select) and isinstance(e.b, Const) and float(e.b.value) == 0.0:
        cond, e = e.cond, e.a
    if isinstance(e, BufLoad) and e.dtype == F32 and e.buf.scope != Scope.SHARED:
        return e, cond
    return None


def async_operands(v: GemmView) -> bool:
    """Whether both operands of the view can be staged by cp.async (pipeline(stages>1))."""
    b, m, k, n = Var("b"), Var("m"), Var("k"), Var("n")
    return _plain(v.a_load(b, m, k)) is not None and _plain(v.b_load(b, k, n)) is not None


def mma_gpu_kernel(v: GemmView, t: Mapping[str, Any]) -> Kernel:
    shape = t["shape"]
    BM, BN, BK, WM, WN = t["bm"], t["bn"], t["bk"], t["wm"], t["wn"]
    S = t.get("stages", 1)
    SM, SN, SK, nA, nB, _ = MMA_SHAPES[shape]
    MT, NT = WM // SM, WN // SN
    WX = BN // WN
    nwarps = (BM // WM) * WX
    nthreads = 32 * nwarps
    half = shape.endswith("f16")
    i8 = is_int8(shape)
    if i8 != v.int8 or (i8 and shape.endswith("u8s8") != v.a_unsigned):
        want = ("m16n8k32.u8s8" if v.a_unsigned else "m16n8k32.s8u8") if v.int8 else \
            "m16n8k8.tf32 or m16n8k16.f16"
        raise ScheduleError(f"gpu mma template: mma({shape}) does not fit this GEMM's operand "
                            f"types (it takes {want})")
    rt = I32 if i8 else F16 if half else F32   # the registers' type (int8: words of four)
    K = quads(v.K) if i8 else v.K              # (int8: in words)
    piped = S > 1
    if piped and not async_operands(v):
        raise ScheduleError("gpu mma template: pipeline(stages>1) copies the operands with "
                            "cp.async, so they must be read straight from memory (here a fused "
                            "op computes one)")
    st = F32 if piped else rt                  # shared tiles: raw f32 for cp.async
    lead = (S,) if piped else ()
    As = Buffer(f"{v.name}_As", st, lead + (BM, BK + t["pad_a"]), Scope.SHARED)
    Bs = Buffer(f"{v.name}_Bs", st, lead + (BK, BN + t["pad_b"]), Scope.SHARED)
    acc = Buffer(f"{v.name}_acc", I32 if i8 else F32, (MT, NT, 4), Scope.LOCAL)
    af = Buffer(f"{v.name}_af", rt, (MT, nA), Scope.LOCAL)
    bf = Buffer(f"{v.name}_bf", rt, (NT, nB), Scope.LOCAL)
    b: Expr = Var("b") if v.batch > 1 else c64(0)
    by, bx, warp, lane = Var("by"), Var("bx"), Var("warp"), Var("lane")
    kt, ks, mt, nt, e = Var("kt"), Var("ks"), Var("mt"), Var("nt"), Var("e")
    m0, n0 = mul(by, BM), mul(bx, BN)
    tid = add(mul(warp, 32), lane)
    g, tg = div(lane, 4), mod(lane, 4)
    wm0, wn0 = mul(div(warp, WX), WM), mul(mod(warp, WX), WN)

    def operand(x: Expr) -> Expr:
        """An operand as the tensor core reads it: TF32-rounded f32, or f16 (int8: the word)."""
        if i8:
            return x
        x = x if x.dtype == F32 else Cast(x, F32)
        return Cast(x, F16) if half else call("tf32", x)

    def words(load: Any, k: Expr, conds: list[Expr]) -> Expr:
        """int8: the word of the four values at K 4k..4k+3 (0 past K)."""
        def byte(j: int) -> Expr:
            kj = add(mul(k, 4), j)
            return _guarded(load(emin(kj, v.K - 1)), conds + [kj.lt(v.K)])
        return word(byte)

    def a_elem(r: Expr, c: Expr, tile: Expr) -> tuple[Expr, list[Expr]]:   # A row m, col k
        am, ak = add(m0, r), add(mul(tile, BK), c)
        conds = ([am.lt(v.M)] if v.M % BM else []) + ([ak.lt(K)] if K % BK else [])
        if i8:
            return words(lambda k: v.a_load(b, emin(am, v.M - 1), k), ak,
                         [am.lt(v.M)] if v.M % BM else []), []
        return v.a_load(b, emin(am, v.M - 1), emin(ak, v.K - 1)), conds

    def b_elem(r: Expr, c: Expr, tile: Expr) -> tuple[Expr, list[Expr]]:   # B row k, col n
        bk, bn = add(mul(tile, BK), r), add(n0, c)
        conds = ([bn.lt(v.N)] if v.N % BN else []) + ([bk.lt(K)] if K % BK else [])
        if i8:
            return words(lambda k: v.b_load(b, k, emin(bn, v.N - 1)), bk,
                         [bn.lt(v.N)] if v.N % BN else []), []
        return v.b_load(b, emin(bk, v.K - 1), emin(bn, v.N - 1)), conds

    def a_quad(tile: Expr) -> Any:
        def cell(r: Expr, c0: Expr, j: Var) -> tuple[tuple[Expr, ...], Expr, Expr | None]:
            am, ak = add(m0, r), add(mul(tile, BK), c0)
            ok = both(*([am.lt(v.M)] if v.M % BM else []) + ([ak.lt(K)] if K % BK else []))
            return (r, add(c0, j)), unguarded(v.a_load(b, emin(am, v.M - 1), add(ak, j))), ok
        return cell

    def b_quad(tile: Expr) -> Any:
        def cell(r: Expr, c0: Expr, j: Var) -> tuple[tuple[Expr, ...], Expr, Expr | None]:
            bk, bn = add(mul(tile, BK), r), add(n0, c0)
            ok = both(*([bn.lt(v.N)] if v.N % BN else []) + ([bk.lt(K)] if K % BK else []))
            return (r, add(c0, j)), unguarded(v.b_load(b, emin(bk, v.K - 1), add(bn, j))), ok
        return cell

    def wide_load(buf: Buffer, rows: int, cols: int, quad: Any, stage: Expr | None) -> Stmt:
        """Four consecutive elements per thread and step: one float4 load (converted lane by
        lane), or (pipelined) one 16-byte cp.async, zero-filled where the quad is outside."""
        if stage is None:
            def conv(r: Expr, c0: Expr, j: Var) -> Any:
                idx, x, ok = quad(r, c0, j)
                return idx, operand(x), ok
            return wide_tile_load(buf, nthreads, tid, e, rows, cols, conv)
        q = cols // 4
        n = rows * q
        flat = add(mul(e, nthreads), tid)
        j = Var("j")
        (r, c), x, ok = quad(div(flat, q), mul(mod(flat, q), 4), j)
        one: Stmt = For(j, c64(4), AsyncCopy(buf, (stage, r, c), x.buf, x.index, ok),
                        LoopKind.VECTOR, 4)
        return For(e, c64(-(-n // nthreads)), one if n % nthreads == 0 else
                   IfThen(flat.lt(n), one), UNROLL)

    def load_tile(tile: Expr, stage: Expr | None) -> Stmt:
        """The block's threads fill the A and B tiles of K tile `tile`: stores of the converted
        operands, or (pipelined) async copies into stage `stage`; four elements at a time
        where cache_shared(vec=4) asks."""
        out = []
        for buf, rows, cols, elem, quad, wide in (
                (As, BM, BK, a_elem, a_quad, t.get("vec_a", 1) == 4),
                (Bs, BK, BN, b_elem, b_quad, t.get("vec_b", 1) == 4)):
            if wide:
                out.append(wide_load(buf, rows, cols, quad(tile), stage))
                continue
            n = rows * cols
            flat = add(mul(e, nthreads), tid)
            r, c = div(flat, cols), mod(flat, cols)
            x, conds = elem(r, c, tile)
            if stage is None:
                one: Stmt = Store(buf, (r, c), _guarded(operand(x), conds))
            else:
                ld, cond = _plain(x)  # type: ignore[misc]
                one = AsyncCopy(buf, (stage, r, c), ld.buf, ld.index,
                                both(*conds, *([cond] if cond is not None else [])))
            out.append(For(e, c64(-(-n // nthreads)), one if n % nthreads == 0 else
                           IfThen(flat.lt(n), one), UNROLL))
        return seq(*out)

    def compute(stage: Expr | None) -> Stmt:
        ct, a_regs = A_LAYOUT[shape]
        kstep, b_regs = B_LAYOUT[shape]
        k0 = mul(ks, SK)
        pre = (stage,) if stage is not None else ()

        def frag(buf: Buffer, idx: tuple[Expr, ...]) -> Expr:
            x = BufLoad(buf, pre + idx, st)
            return operand(x) if piped else x
        if t.get("ldmatrix"):
            # A's 16 x 16 as four 8 x 8 matrices (lane l points at row l % 16, columns
            # 8 (l // 16) on): a0a1, a2a3, a4a5, a6a7 in one ldmatrix.x4; B's 16 x 8 as two,
            # transposed (lanes 0-15 point at rows k0..k0+15): b0b1, b2b3
            frag_a: list[Stmt] = [WarpLdmatrix(4, False, af, (mt,), As, (
                add(wm0, mul(mt, SM), mod(lane, 16)), add(k0, mul(div(lane, 16), 8))))]
            frag_b: list[Stmt] = [WarpLdmatrix(2, True, bf, (nt,), Bs, (
                add(k0, mod(lane, 16)), add(wn0, mul(nt, SN))))]
        else:
            frag_a = [Store(af, (mt, c64(r)), frag(As, (add(wm0, mul(mt, SM), g, dr),
                                                        add(k0, mul(tg, ct), dc))))
                      for r, (dr, dc) in enumerate(a_regs)]
            frag_b = [Store(bf, (nt, c64(r)), frag(Bs, (add(k0, mul(tg, kstep), dk),
                                                        add(wn0, mul(nt, SN), g))))
                      for r, dk in enumerate(b_regs)]
        step_k = seq(For(mt, c64(MT), seq(*frag_a), UNROLL),
                     For(nt, c64(NT), seq(*frag_b), UNROLL),
                     For(mt, c64(MT), For(nt, c64(NT), WarpMma(shape, acc, (mt, nt), af,
                                                               (mt,), bf, (nt,)), UNROLL),
                         UNROLL))
        return For(ks, c64(BK // SK), step_k, UNROLL)

    nk = -(-K // BK)
    if not piped:
        kloop: Stmt = For(kt, c64(nk), seq(load_tile(kt, None), Barrier(), compute(None),
                                           Barrier()))
    else:
        # tiles 0 .. S-2 in flight first; then each step queues tile kt+S-1 into the stage
        # step kt-1 finished reading, waits for tile kt (S-1 newer groups may be in flight),
        # and computes on it while the copies of the next S-1 tiles proceed
        prologue = [seq(load_tile(c64(s), c64(s)) if s < nk else seq(), AsyncCommit())
                    for s in range(S - 1)]
        nxt = add(kt, S - 1)
        kloop = seq(*prologue, For(kt, c64(nk), seq(
            IfThen(nxt.lt(nk), load_tile(nxt, mod(nxt, S))), AsyncCommit(), AsyncWait(S - 1),
            Barrier(), compute(mod(kt, S)), Barrier())))
    r = Var("r")
    init = For(mt, c64(MT), For(nt, c64(NT), For(r, c64(4), Store(acc, (mt, nt, r), Const(
        0 if i8 else 0.0, acc.dtype)), UNROLL),
                                UNROLL), UNROLL)
    outs = []
    for q, (dr, dc) in enumerate(C_LAYOUT):
        m_abs = add(m0, wm0, mul(mt, SM), g, dr)
        n_abs = add(n0, wn0, mul(nt, SN), mul(tg, 2), dc)
        val = BufLoad(acc, (mt, nt, c64(q)), acc.dtype)
        out: Stmt = Store(v.out, v.out_index(b, m_abs, n_abs), v.epilogue(val, b, m_abs, n_abs))
        ok = both(*([m_abs.lt(v.M)] if v.M % BM else []) + ([n_abs.lt(v.N)] if v.N % BN
                                                             else []))
        outs.append(IfThen(ok, out) if ok is not None else out)
    store = For(mt, c64(MT), For(nt, c64(NT), seq(*outs), UNROLL), UNROLL)
    body: Stmt = For(warp, c64(nwarps), For(lane, c64(32), Allocate(acc, Allocate(af, Allocate(
        bf, seq(init, kloop, store)))), LoopKind.THREAD_X), LoopKind.THREAD_Y)
    body = For(bx, c64(-(-v.N // BN)), Allocate(As, Allocate(Bs, body)), LoopKind.BLOCK_X)
    body = For(by, c64(-(-v.M // BM)), body, LoopKind.BLOCK_Y)
    if v.batch > 1:
        body = For(b, c64(v.batch), body, LoopKind.BLOCK_Z)  # type: ignore[arg-type]
    return gemm_kernel(v, body)


def tensor_core_precision(ctx: LowerCtx) -> str | None:
    """'tf32' or 'fp16' where this compile asks the GPU's tensor cores for its GEMMs, else
    None (they need sm_80 or later: Ampere, Hopper)."""
    p = ctx.opts.precision
    if p not in SHAPE_OF or not ctx.target.gpu:
        return None
    return p if sm_version(ctx.opts.cuda_arch) >= 80 else None


class GpuMma(Rule):
    name = "gpu.mma"

    def view(self, ctx: LowerCtx) -> GemmView | None:
        return group_view(ctx)

    def applies(self, ctx: LowerCtx) -> bool:
        if tensor_core_precision(ctx) is None:
            return False
        v = self.view(ctx)
        return v is not None and not v.int8 and ctx.group.output.type.dtype == F32

    def legal(self, ctx: LowerCtx) -> bool:
        """What a schedule text may ask of it beyond the default: also the int8 GEMMs on the
        int8 tensor cores (`mma(m16n8k32.u8s8)`, sm_80+), which stay on `gpu.gemm`'s __dp4a by
        default until a GPU has measured which pays."""
        if self.applies(ctx):
            return True
        v = self.view(ctx)
        return bool(ctx.target.gpu and v is not None and v.int8 and
                    sm_version(ctx.opts.cuda_arch) >= 80)

    def space(self, ctx: LowerCtx) -> KnobSpace:
        wa, wb = wide_operands(ctx)
        return {"BM": (32, 64, 128), "BN": (32, 64, 128), "BK": (16, 32), "WM": (16, 32, 64),
                "WN": (8, 16, 32, 64), "pad_a": (0, 4, 8), "pad_b": (0, 4, 8),
                "stages": (1, 2, 3), "ldmatrix": (False, True),
                "vec_a": (1, 4) if wa else (1,), "vec_b": (1, 4) if wb else (1,)}

    def invalid(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> str | None:
        shape = SHAPE_OF[tensor_core_precision(ctx) or "tf32"]
        stages = knobs.get("stages", 1)
        if stages > 1:
            v = self.view(ctx)
            if v is None or not async_operands(v):
                return "pipeline(stages>1) needs operands read straight from memory"
        va, vb = knobs.get("vec_a", 1), knobs.get("vec_b", 1)
        why = wide_refusal(ctx, va, vb)
        if why is not None:
            return why
        return _invalid(knobs["BM"], knobs["BN"], knobs["BK"], knobs["WM"], knobs["WN"],
                        knobs["pad_a"], knobs["pad_b"], shape, stages,
                        knobs.get("ldmatrix", False), va, vb)

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """128 x 128 blocks of eight 64 x 32 warp tiles (4 x 4 mmas each, 64 accumulators a
        lane), K in steps of 32; halved while a problem fits in half a tile, so small problems
        still spread over the SMs. Rows of A padded by 4 words and of B by 8: a warp's fragment
        loads then touch 32 different banks (A: lane (g, t) reads row g, column t of a tile
        36 words wide; B: row t, column g of one 136 wide)."""
        v = self.view(ctx)
        assert v is not None
        bm, bn, wm, wn = 128, 128, 64, 32
        while bm > 32 and v.M <= bm // 2:
            bm, wm = bm // 2, min(wm, bm // 2)
        while bn > 32 and v.N <= bn // 2:
            bn, wn = bn // 2, min(wn, bn // 2)
        half = tensor_core_precision(ctx) == "fp16"
        # FP16 fragments by ldmatrix: its rows start at 16-byte boundaries, so A's rows are
        # padded by 8 halves (a row of 40: eight rows of one matrix still in different banks)
        # float4 loads (vec_a, vec_b) stay off until a GPU measures them (gpu_check times both)
        return {"BM": bm, "BN": bn, "BK": 32, "WM": wm, "WN": wn, "pad_a": 8 if half else 4,
                "pad_b": 8, "stages": 1, "ldmatrix": half, "vec_a": 1, "vec_b": 1}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        shape = SHAPE_OF[tensor_core_precision(ctx) or "tf32"]
        def vec(k: str) -> dict[str, int]:
            return {"vec": 4} if knobs.get(k, 1) == 4 else {}
        return [step("tile", BM=knobs["BM"], BN=knobs["BN"], BK=knobs["BK"], WM=knobs["WM"],
                     WN=knobs["WN"]), step("cache_shared", "A", pad=knobs["pad_a"],
                                           **vec("vec_a")),
                step("cache_shared", "B", pad=knobs["pad_b"], **vec("vec_b")),
                step("mma", shape)] + (
                    [step("pipeline", stages=knobs["stages"])] if knobs.get("stages", 1) > 1
                    else []) + ([step("ldmatrix", "A", "B")] if knobs.get("ldmatrix") else [])

    def apply(self, ctx: LowerCtx, steps: Sequence[Step]) -> Lowered:
        v = self.view(ctx)
        assert v is not None
        t = _tile_of(steps)
        why = wide_refusal(ctx, t["vec_a"], t["vec_b"])
        if why is not None:
            raise ScheduleError(f"gpu mma template: {why}")
        return Lowered(mma_gpu_kernel(v, t), dict(v.extra))
