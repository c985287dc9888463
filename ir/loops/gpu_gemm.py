"""The GPU GEMM template (`gpu.gemm`): matmul and implicit-GEMM convolution from their GEMM views
(gemm_views.py), a BM x BN output tile per thread block, staged through shared memory BK columns
at a time, each thread accumulating a TM x TN register tile in a strided layout (so shared-memory
reads and global stores are conflict-free and coalesced), the fused epilogue in the same kernel.

Steps (the knobs): `tile(BM=128, BN=128, BK=8, TM=8, TN=8)`, `cache_shared(A, pad=4)` (the A^T
tile, padded by `pad` floats per row against bank conflicts) and `cache_shared(B, pad=0)`;
`cache_shared(A, pad=4, vec=4)` reads A from global memory a float4 at a time (four consecutive
K values; B: four consecutive N values), where the operand is read in place with every row
starting on a 16-byte boundary (see wide_operand and ir/loops/wide.py).
An int8 view (u8 x s8) tiles int32 words of four K values instead (BK words per step) and
accumulates with `dpbusd`, which CUDA renders with `__dp4a`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from minicc.errors import ScheduleError
from minicc.ir.compute import Call, Const, Expr, Select, Var, both, call, select
from minicc.ir.loops.exprs import flat_offset, linear_coef, simplify, substitute
from minicc.ir.loops.gemm_views import (GemmView, Index3, add, c64, div, emin, gemm_view, mod,
                                        mul, quads, word)
from minicc.ir.loops.nodes import (Allocate, Barrier, BufLoad, Buffer, For, IfThen, Kernel,
                                   LoopKind, Scope, Stmt, Store, seq)
from minicc.ir.loops.schedule import KnobSpace, LowerCtx, Lowered, Rule
from minicc.ir.loops.trace import Step, int_kwargs, step
from minicc.ir.types import DType

F32, I32 = DType.F32, DType.I32
UNROLL = LoopKind.UNROLL


def _tile_of(steps: Sequence[Step]) -> dict[str, int]:
    t: dict[str, int] = {"pad_a": 4, "pad_b": 0, "vec_a": 1, "vec_b": 1}
    for st in steps:
        if st.name == "tile":
            t.update(int_kwargs(st, ("BM", "BN", "BK", "TM", "TN")))
        elif st.name == "cache_shared" and st.args in (("A",), ("B",)):
            kw = int_kwargs(st, ("pad", "vec"))
            t["pad_" + str(st.args[0]).lower()] = kw.get("pad", 0)
            t["vec_" + str(st.args[0]).lower()] = kw.get("vec", 1)
        else:
            raise ScheduleError(f"{st}: not a step of the gpu gemm template (tile, "
                                "cache_shared)")
    missing = [k for k in ("bm", "bn", "bk", "tm", "tn") if k not in t]
    if missing:
        raise ScheduleError(f"gpu gemm template: the steps do not set {', '.join(missing)}")
    if any(t[k] < 1 for k in ("bm", "bn", "bk", "tm", "tn")) or t["bm"] % t["tm"] or \
            t["bn"] % t["tn"] or min(t["pad_a"], t["pad_b"]) < 0:
        raise ScheduleError(f"gpu gemm template: tile {t} must be positive with TM | BM, "
                            "TN | BN")
    n = (t["bm"] // t["tm"]) * (t["bn"] // t["tn"])
    if not 32 <= n <= 1024:
        raise ScheduleError(f"gpu gemm template: tile {t['bm']}x{t['bn']}/{t['tm']}x{t['tn']} "
                            f"gives {n} threads per block (32 to 1024)")
    if t["vec_a"] not in (1, 4) or t["vec_b"] not in (1, 4):
        raise ScheduleError("gpu gemm template: cache_shared(vec=...) is 1 or 4 elements")
    return t


def _inside(cond: Expr, bounds: Mapping[str, int]) -> bool:
    """Whether `cond` only says an element is inside the problem (v < bound, and-ed)."""
    if isinstance(cond, Call) and cond.fn == "and":
        return all(_inside(a, bounds) for a in cond.args)
    return (isinstance(cond, Call) and cond.fn == "lt" and isinstance(cond.args[0], Var)
            and isinstance(cond.args[1], Const) and cond.args[0].name in bounds
            and int(cond.args[1].value) >= bounds[cond.args[0].name])


def unguarded(e: Expr) -> Expr:
    """An operand load without its zero-outside guard (for wide loads, whose quad conditions
    say the same for the whole quad; wide_operand checks that the guard says no more)."""
    if isinstance(e, Select) and isinstance(e.b, Const) and float(e.b.value) == 0.0:
        return e.a
    return e


def wide_operand(load: Index3, rows: int, n: int, batch: int = 1) -> bool:
    """Whether an operand read as load(batch, x, y), `rows` x `n`, can be read four elements
    of y at a time (A's K, B's N): a plain f32 load from global memory (guarded at most by
    x < rows, y < n), consecutive along y, every row start and every batch's start a multiple
    of four elements from a 16-byte aligned buffer start, and y a multiple of four long (quads
    are all in or all out of the problem)."""
    e = load(Var("b"), Var("x"), Var("y"))
    if isinstance(e, Select):
        if not _inside(e.cond, {"x": rows, "y": n}):
            return False
        e = unguarded(e)
    if n % 4 or not isinstance(e, BufLoad) or e.dtype != F32 or e.buf.scope == Scope.SHARED or \
            batch > 4096:
        return False
    off = flat_offset(e.index, e.buf.shape)
    cx = linear_coef(off, "x")
    if linear_coef(off, "y") != 1 or cx is None or cx % 4:
        return False
    for bi in range(batch):     # (a broadcast batch is read through b % batches)
        base = simplify(substitute(off, {"b": c64(bi), "x": c64(0), "y": c64(0)}))
        if not isinstance(base, Const) or int(base.value) % 4:
            return False
    return True


def wide_operands(ctx: LowerCtx) -> tuple[bool, bool]:
    """Whether the group's A and B can be read four f32 at a time (cache_shared(vec=4)), for
    every GPU GEMM template (int8 tiles hold words built of bytes: never)."""
    def make() -> tuple[bool, bool]:
        v = group_view(ctx)
        if v is None or v.int8:
            return False, False
        return (wide_operand(v.a_load, v.M, v.K, v.batch),
                wide_operand(v.b_load, v.K, v.N, v.batch))
    return ctx.memo("gpu_wide", make)


def wide_refusal(ctx: LowerCtx, vec_a: int, vec_b: int) -> str | None:
    """Why a schedule's cache_shared(vec=4) cannot be had here, or None."""
    wa, wb = wide_operands(ctx)
    if vec_a == 4 and not wa or vec_b == 4 and not wb:
        return ("cache_shared(vec=4) reads four consecutive f32 from a 16-byte boundary: this "
                "operand is not stored that way (a fused producer, a conv's gather, an odd row "
                "length, f16 or int8)")
    return None


def wide_tile_load(tile: Buffer, nthreads: int, tid: Expr, e: Var, rows: int, cols: int,
                   cell: Any) -> Stmt:
    """Like _cooperative_load, a quad of four consecutive columns per thread and step:
    `cell(r, c0, j)` gives (tile index, value, condition) for column c0 + j, the value one
    float4 load's lane (a vector(4) loop, see ir/loops/wide.py) and the condition (None: always)
    the same for the whole quad; where it fails the quad is stored as zeros."""
    q = cols // 4
    n = rows * q
    flat = add(mul(e, nthreads), tid)
    j = Var("j")
    idx, val, ok = cell(div(flat, q), mul(mod(flat, q), 4), j)
    st: Stmt = For(j, c64(4), Store(tile, idx, val), LoopKind.VECTOR, 4)
    if ok is not None:
        zero = Const(0.0, F32) if val.dtype == F32 else Const(0, val.dtype)
        st = IfThen(ok, st, For(j, c64(4), Store(tile, idx, zero), UNROLL))
    return For(e, c64(-(-n // nthreads)), st if n % nthreads == 0 else IfThen(flat.lt(n), st),
               UNROLL)


def _cooperative_load(tile: Buffer, nthreads: int, tid: Expr, e: Var, rows: int, cols: int,
                      cell: Any) -> Stmt:
    """Thread `tid` fills elements tid, tid + nthreads, ... of a rows x cols tile; `cell(r, c)`
    gives (index into the tile, value)."""
    n = rows * cols
    flat = add(mul(e, nthreads), tid)
    idx, val = cell(div(flat, cols), mod(flat, cols))
    st: Stmt = Store(tile, idx, val)
    return For(e, c64(-(-n // nthreads)), st if n % nthreads == 0 else IfThen(flat.lt(n), st),
               UNROLL)


def _guarded(val: Expr, conds: list[Expr]) -> Expr:
    cond = both(*conds)
    zero = Const(0.0, F32) if val.dtype == F32 else Const(0, val.dtype)
    return select(cond, val, zero) if cond is not None else val


def gemm_gpu_kernel(v: GemmView, t: Mapping[str, int]) -> Kernel:
    """The float kernel, or for an int8 view the same tiling over int32 words of four K values
    (shared tiles of words, int32 accumulators, `dpbusd`: __dp4a)."""
    BM, BN, BK, TM, TN = t["bm"], t["bn"], t["bk"], t["tm"], t["tn"]
    tyn, txn = BM // TM, BN // TN
    nthreads = tyn * txn
    dt = I32 if v.int8 else F32
    K = quads(v.K) if v.int8 else v.K                 # words of four along K for int8
    As = Buffer(f"{v.name}_As", dt, (BK, BM + t["pad_a"]), Scope.SHARED)
    Bs = Buffer(f"{v.name}_Bs", dt, (BK, BN + t["pad_b"]), Scope.SHARED)
    acc = Buffer(f"{v.name}_acc", dt, (TM, TN), Scope.LOCAL)
    b: Expr = Var("b") if v.batch > 1 else c64(0)
    by, bx, ty, tx = Var("by"), Var("bx"), Var("ty"), Var("tx")
    kt, kk, i, j, e = Var("kt"), Var("kk"), Var("i"), Var("j"), Var("e")
    m0, n0 = mul(by, BM), mul(bx, BN)
    tid = add(mul(ty, txn), tx)

    def element(load: Any, m: Expr, k: Expr, conds: list[Expr]) -> Expr:
        """One operand element (float), or the word of four at K positions 4k..4k+3 (int8),
        zero outside the problem."""
        if not v.int8:
            return _guarded(load(m, emin(k, v.K - 1)), conds + ([k.lt(v.K)] if v.K % BK else []))

        def byte(j: int) -> Expr:
            kj = add(mul(k, 4), j)
            return _guarded(load(m, emin(kj, v.K - 1)), conds + [kj.lt(v.K)])
        return word(byte)

    def a_cell(r: Expr, c: Expr) -> tuple[tuple[Expr, ...], Expr]:   # A tile row m, column k
        am, ak = add(m0, r), add(mul(kt, BK), c)
        conds = [am.lt(v.M)] if v.M % BM else []
        return (c, r), element(lambda m, k: v.a_load(b, emin(am, v.M - 1), k), am, ak, conds)

    def b_cell(r: Expr, c: Expr) -> tuple[tuple[Expr, ...], Expr]:   # B tile row k, column n
        bk, bn = add(mul(kt, BK), r), add(n0, c)
        conds = [bn.lt(v.N)] if v.N % BN else []
        return (r, c), element(lambda n, k: v.b_load(b, k, emin(bn, v.N - 1)), bn, bk, conds)

    def a_quad(r: Expr, c0: Expr, j: Var) -> tuple[tuple[Expr, ...], Expr, Expr | None]:
        am, ak = add(m0, r), add(mul(kt, BK), c0)
        ok = both(*([am.lt(v.M)] if v.M % BM else []) + ([ak.lt(v.K)] if v.K % BK else []))
        return (add(c0, j), r), unguarded(v.a_load(b, emin(am, v.M - 1), add(ak, j))), ok

    def b_quad(r: Expr, c0: Expr, j: Var) -> tuple[tuple[Expr, ...], Expr, Expr | None]:
        bk, bn = add(mul(kt, BK), r), add(n0, c0)
        ok = both(*([bn.lt(v.N)] if v.N % BN else []) + ([bk.lt(v.K)] if v.K % BK else []))
        return (r, add(c0, j)), unguarded(v.b_load(b, emin(bk, v.K - 1), add(bn, j))), ok

    loads = seq(wide_tile_load(As, nthreads, tid, e, BM, BK, a_quad) if t["vec_a"] == 4 else
                _cooperative_load(As, nthreads, tid, e, BM, BK, a_cell),
                wide_tile_load(Bs, nthreads, tid, e, BK, BN, b_quad) if t["vec_b"] == 4 else
                _cooperative_load(Bs, nthreads, tid, e, BK, BN, b_cell))
    # the thread's rows are ty + tyn*i, columns tx + txn*j (strided: conflict-free, coalesced)
    row, col = add(ty, mul(tyn, i)), add(tx, mul(txn, j))
    a_v, b_v, acc_ij = BufLoad(As, (kk, row), dt), BufLoad(Bs, (kk, col), dt), BufLoad(
        acc, (i, j), dt)
    if v.int8:
        u, s = (a_v, b_v) if v.a_unsigned else (b_v, a_v)
        fma = Store(acc, (i, j), call("dpbusd", acc_ij, u, s))
    else:
        fma = Store(acc, (i, j), call("add", acc_ij, call("mul", a_v, b_v)))
    compute = For(kk, c64(BK), For(i, c64(TM), For(j, c64(TN), fma, UNROLL), UNROLL), UNROLL)
    kloop = For(kt, c64(-(-K // BK)), seq(loads, Barrier(), compute, Barrier()))
    init = For(i, c64(TM), For(j, c64(TN), Store(acc, (i, j), Const(
        0 if v.int8 else 0.0, dt)), UNROLL), UNROLL)
    m_abs, n_abs = add(m0, row), add(n0, col)
    out_st: Stmt = Store(v.out, v.out_index(b, m_abs, n_abs),
                         v.epilogue(acc_ij, b, m_abs, n_abs))
    ok = both(*([m_abs.lt(v.M)] if v.M % BM else []) + ([n_abs.lt(v.N)] if v.N % BN else []))
    if ok is not None:
        out_st = IfThen(ok, out_st)
    store = For(i, c64(TM), For(j, c64(TN), out_st, UNROLL), UNROLL)
    body: Stmt = For(ty, c64(tyn), For(tx, c64(txn), Allocate(acc, seq(init, kloop, store)),
                                         LoopKind.THREAD_X), LoopKind.THREAD_Y)
    body = For(bx, c64(-(-v.N // BN)), Allocate(As, Allocate(Bs, body)), LoopKind.BLOCK_X)
    body = For(by, c64(-(-v.M // BM)), body, LoopKind.BLOCK_Y)
    if v.batch > 1:
        body = For(b, c64(v.batch), body, LoopKind.BLOCK_Z)  # type: ignore[arg-type]
    return gemm_kernel(v, body)


def gemm_kernel(v: GemmView, body: Stmt) -> Kernel:
    """The kernel of a GPU GEMM template: the view's parameters, then the constants its
    epilogue reads (zero-point sums) as weights."""
    extra = tuple(v.extra)
    return Kernel(v.name, v.params + extra, v.roles + ("weight",) * len(extra), body,
                  flops=v.flops)


def group_view(ctx: LowerCtx) -> GemmView | None:
    """The group's GEMM view, built once per group for every GPU GEMM template."""
    return ctx.memo("gemm_view", lambda: gemm_view(ctx.name, ctx.group, ctx.bufs, ctx.consts))


def sm_version(arch: str) -> int:
    """sm_90 -> 90 (0 where the name holds no number)."""
    digits = "".join(ch for ch in arch if ch.isdigit())
    return int(digits) if digits else 0


class GpuGemm(Rule):
    name = "gpu.gemm"

    def view(self, ctx: LowerCtx) -> GemmView | None:
        return group_view(ctx)

    def applies(self, ctx: LowerCtx) -> bool:
        v = self.view(ctx)
        return v is not None and (ctx.group.output.type.dtype == F32 or v.int8)

    def space(self, ctx: LowerCtx) -> KnobSpace:
        wa, wb = wide_operands(ctx)
        return {"BM": (32, 64, 128), "BN": (32, 64, 128), "BK": (8, 16, 32),
                "TM": (2, 4, 8), "TN": (2, 4, 8), "pad": (0, 4),
                "vec_a": (1, 4) if wa else (1,), "vec_b": (1, 4) if wb else (1,)}

    def invalid(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> str | None:
        n = (knobs["BM"] // knobs["TM"]) * (knobs["BN"] // knobs["TN"])
        if not 32 <= n <= 1024:
            return f"{n} threads per block (32 to 1024)"
        why = wide_refusal(ctx, knobs.get("vec_a", 1), knobs.get("vec_b", 1))
        if why is not None:
            return why
        if knobs.get("vec_a", 1) == 4 and knobs["BK"] % 4 or \
                knobs.get("vec_b", 1) == 4 and knobs["BN"] % 4:
            return "cache_shared(vec=4) takes tiles a multiple of four long in K (A), N (B)"
        return None

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """128 x 128 tiles of 8 x 8 per thread; halved (with the thread tile) while a problem
        fits in half a tile, so small problems still spread over the SMs."""
        v = self.view(ctx)
        assert v is not None
        bm, bn, tm, tn = 128, 128, 8, 8
        while bm > 32 and v.M <= bm // 2:
            bm, tm = bm // 2, max(1, tm // 2)
        while bn > 32 and v.N <= bn // 2:
            bn, tn = bn // 2, max(1, tn // 2)
        # float4 loads stay off until a GPU measures them (a tuner knob; gpu_check times both)
        return {"BM": bm, "BN": bn, "BK": 8, "TM": tm, "TN": tn, "pad": 4, "vec_a": 1,
                "vec_b": 1}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        def vec(k: str) -> dict[str, int]:
            return {"vec": 4} if knobs.get(k, 1) == 4 else {}
        return [step("tile", BM=knobs["BM"], BN=knobs["BN"], BK=knobs["BK"], TM=knobs["TM"],
                     TN=knobs["TN"]), step("cache_shared", "A", pad=knobs["pad"], **vec("vec_a")),
                step("cache_shared", "B", pad=0, **vec("vec_b"))]

    def apply(self, ctx: LowerCtx, steps: Sequence[Step]) -> Lowered:
        v = self.view(ctx)
        assert v is not None
        t = _tile_of(steps)
        knobs = {"BM": t["bm"], "BN": t["bn"], "BK": t["bk"], "TM": t["tm"], "TN": t["tn"],
                 "vec_a": t["vec_a"], "vec_b": t["vec_b"]}
        why = self.invalid(ctx, knobs)
        if why is not None:
            raise ScheduleError(f"gpu gemm template: {why}")
        return Lowered(gemm_gpu_kernel(v, t), dict(v.extra))
