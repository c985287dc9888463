"""GPU schedules on the loop IR: the same fused groups and compute definitions as the CPU path,
bound to thread blocks and threads.

- elementwise / injective groups: one thread per output element (blocks of 256 threads);
- reductions whose rows are independent (softmax, layer norm, pooling over a row, reduce ops):
  one block per row, threads stride over the row and combine with a block all-reduce (warp
  shuffles, then one value per warp through shared memory);
- matmul and convolution (implicit GEMM): a BM x BN output tile per block, staged through
  shared memory BK columns at a time (padded against bank conflicts), each thread accumulating
  a TM x TN register tile in a strided layout (so shared-memory reads and global stores are
  conflict-free and coalesced), with the fused epilogue in the same kernel.

Knobs (for the autotuner): threads per block, BM, BN, BK, TM, TN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from minicc.errors import CodegenError
from minicc.ir.compute import Const, Expr, Reduce, Var, both, call, cast, select, unflat_index
from minicc.ir.graph import Value
from minicc.ir.loops.exprs import free_vars, map_expr, reduces_in, simplify, substitute
from minicc.ir.loops.gemm import GemmSpec, Knobs, add, c64, conv_spec, div, emin, matmul_spec, \
    mod, mul
from minicc.ir.loops.lower import (Inliner, _Emitter, _params, _reduce_init, _widen, const_scalar)
from minicc.ir.loops.nodes import (Allocate, Barrier, BlockAllReduce, BufLoad, Buffer, For, IfThen,
                                   Kernel, LoopKind, Scope, Stmt, Store, seq)
from minicc.ir.passes.fuse import Group
from minicc.ir.registry import full_attrs, get_op
from minicc.ir.types import DType

I64 = DType.I64
F32 = DType.F32
MAX_BLOCKS = 1 << 16   # elementwise grids stop growing here and loop (grid-stride)
CUDA_DTYPES = {DType.F32, DType.F64, DType.I32, DType.I64, DType.I8, DType.U8, DType.I16,
               DType.U16, DType.U32, DType.U64, DType.BOOL}


@dataclass
class GpuKnobs:
    threads: int = 256     # elementwise and reduction blocks
    bm: int = 128          # GEMM block tile
    bn: int = 128
    bk: int = 8
    tm: int = 8            # per-thread register tile
    tn: int = 8

    def as_dict(self) -> dict:
        return dict(vars(self))


def _flops(group: Group) -> int:
    return sum(get_op(op.kind).cost([v.type for v in op.inputs], [v.type for v in op.outputs],
                                    full_attrs(op.kind, op.attrs)).flops for op in group.ops)


def _check_dtypes(group: Group) -> None:
    for op in group.ops:
        for v in list(op.inputs) + list(op.outputs):
            if v.type.dtype not in CUDA_DTYPES:
                raise CodegenError(f"cuda: {op.describe()} uses {v.type.dtype.value}, which the "
                                   "CUDA backend does not support yet")


def lower_group_gpu(name: str, group: Group, bufs: Mapping[Value, Buffer],
                    consts: Mapping[Value, np.ndarray], knobs: GpuKnobs | None = None
                    ) -> tuple[Kernel, dict[int, tuple[Buffer, np.ndarray]]]:
    kn = knobs or GpuKnobs()
    _check_dtypes(group)
    if group.anchor is not None and group.anchor.kind in ("conv", "matmul"):
        r = lower_gemm_gpu(name, group, bufs, consts, kn)
        if r is not None:
            return r
    return lower_generic_gpu(name, group, bufs, consts, kn), {}


# ---- generic: elementwise, injective, reductions --------------------------------------------

def lower_generic_gpu(name: str, group: Group, bufs: Mapping[Value, Buffer],
                      consts: Mapping[Value, np.ndarray], kn: GpuKnobs) -> Kernel:
    out_buf = bufs[group.output]
    shape = out_buf.shape
    ox = [Var(f"i{k}") for k in range(len(shape))]

    def leaf(v: Value, idx: tuple[Expr, ...]) -> Expr:
        c = const_scalar(v, consts)
        return c if c is not None else BufLoad(bufs[v], idx, v.type.dtype)
    body = simplify(Inliner(group, leaf).expr(group.root, ox))
    for k, d in enumerate(shape):
        if d == 1:
            body = substitute(body, {ox[k].name: Const(0, I64)})
    reds = reduces_in(body)
    free = set().union(*(free_vars(r) for r in reds)) if reds else set()
    row_axes = [k for k in range(len(shape)) if ox[k].name in free and shape[k] > 1]
    inner_axes = [k for k in range(len(shape)) if k not in row_axes and shape[k] > 1]
    params, roles = _params(group, bufs, consts, out_buf)
    trace: list[str] = [f"inline {'+'.join(op.kind for op in group.ops)}"]
    if reds and _row_reducible(reds) and (inner_axes or _red_size(reds) >= 64):
        stmt = _row_reduce(body, reds, ox, shape, row_axes, inner_axes, out_buf, kn, trace)
    else:
        stmt = _per_element(body, ox, shape, out_buf, kn, trace)
    return Kernel(name, params, roles, stmt, tuple(trace), kn.as_dict(), _flops(group))


def _red_size(reds: list[Reduce]) -> int:
    return max(int(np.prod([n for _, n in r.axes])) for r in reds)


def _row_reducible(reds: list[Reduce]) -> bool:
    """Reductions a block can share: sum/max/min/prod whose bodies hold no reduction that
    depends on their own variables."""
    for r in reds:
        if r.op not in ("sum", "max", "min", "prod"):
            return False
        rv = {v.name for v, _ in r.axes}
        if any(free_vars(x) & rv for x in reduces_in(r.body)):
            return False
    return True


def _per_element(body: Expr, ox: list[Var], shape: tuple[int, ...], out: Buffer,
                 kn: GpuKnobs, trace: list[str]) -> Stmt:
    n = int(np.prod(shape)) if shape else 1
    t = min(kn.threads, max(32, -(-n // 32) * 32))
    nb = min(-(-n // t), MAX_BLOCKS)        # beyond that, a grid-stride loop
    steps = -(-n // (nb * t))
    bx, tx, it = Var("bx"), Var("tx"), Var("it")
    p = add(mul(add(mul(it, nb), bx), t), tx) if steps > 1 else add(mul(bx, t), tx)
    idx = unflat_index(p, list(shape)) if shape else ()
    sub = {v.name: e for v, e in zip(ox, idx)}
    b2 = substitute(body, sub)
    em = _Emitter(None, 1)

    def cont() -> Stmt:
        return Store(out, tuple(idx), cast(em.replace(b2), out.dtype))
    inner = em.emit_reduces(em.ready(b2, {"bx", "tx"}), {"bx", "tx"}, cont)
    guarded: Stmt = inner if n == nb * t * steps else IfThen(p.lt(n), inner)
    if steps > 1:
        guarded = For(it, c64(steps), guarded)
    trace += [f"one thread per output: {n} outputs, {nb} blocks of {t}" +
              (f", grid-stride loop of {steps}" if steps > 1 else ""),
              "bind bx to block.x, tx to thread.x"]
    return For(bx, c64(nb), For(tx, c64(t), guarded, LoopKind.THREAD_X), LoopKind.BLOCK_X)


def _row_reduce(body: Expr, reds: list[Reduce], ox: list[Var], shape: tuple[int, ...],
                row_axes: list[int], inner_axes: list[int], out: Buffer, kn: GpuKnobs,
                trace: list[str]) -> Stmt:
    rows = int(np.prod([shape[k] for k in row_axes])) if row_axes else 1
    n_inner = int(np.prod([shape[k] for k in inner_axes])) if inner_axes else 1
    width = max(n_inner, _red_size(reds))
    t = min(kn.threads, max(32, 1 << (max(width, 1) - 1).bit_length()))
    t = max(32, t // 32 * 32)
    bx, tx = Var("bx"), Var("tx")
    sub: dict[str, Expr] = {}
    rdims = [shape[k] for k in row_axes]
    for k, e in zip(row_axes, unflat_index(bx, rdims) if rdims else ()):
        sub[ox[k].name] = e
    for k in range(len(shape)):
        if shape[k] == 1:
            sub[ox[k].name] = Const(0, I64)
    b1 = substitute(body, sub)
    done: dict[Reduce, Expr] = {}
    stmts: list[Stmt] = []
    allocs: list[Buffer] = []
    for i, r0 in enumerate(_order_reduces(b1)):
        r = _replace(r0, done)
        acc_dt = F32 if r.dtype == DType.F16 else r.dtype
        acc = Buffer(f"acc{i}", acc_dt, (1,), Scope.LOCAL)
        smem = Buffer(f"red{i}", acc_dt, (32,), Scope.SHARED)
        allocs += [acc, smem]
        n = int(np.prod([e for _, e in r.axes]))
        j = Var(f"j{i}")
        q = add(mul(j, t), tx)
        rsub = {v.name: e for (v, _), e in zip(r.axes, unflat_index(q, [e for _, e in r.axes]))}
        val = substitute(r.body, rsub)
        cur = BufLoad(acc, (Const(0, I64),), acc_dt)
        upd = _combine(r.op, cur, _widen(val, acc_dt) if r.op in ("sum", "prod") else val)
        loop_body: Stmt = Store(acc, (Const(0, I64),), upd)
        if n % t:
            loop_body = IfThen(q.lt(n), loop_body)
        stmts += [Store(acc, (Const(0, I64),), _reduce_init(r.op, acc_dt)),
                  For(j, c64(-(-n // t)), loop_body),
                  BlockAllReduce(r.op, acc, smem)]
        done[r0] = cast(cur, r.dtype)
    j = Var("jo")
    c = add(mul(j, t), tx)
    isub = {ox[k].name: e for k, e in zip(inner_axes, unflat_index(c, [shape[k] for k in
                                                                         inner_axes]))}
    val = substitute(_replace(b1, done), isub)
    idx = tuple(isub.get(v.name, sub.get(v.name, v)) for v in ox)
    st: Stmt = Store(out, idx, cast(val, out.dtype))
    if n_inner % t:
        st = IfThen(c.lt(n_inner), st)
    stmts.append(For(j, c64(-(-n_inner // t)), st))
    inner: Stmt = seq(*stmts)
    for b in allocs:
        inner = Allocate(b, inner)
    trace += [f"one block per row: {rows} rows, {t} threads; block all-reduce "
              f"(warp shuffles + shared memory) for {len(done)} reduction(s)"]
    return For(bx, c64(rows), For(tx, c64(t), inner, LoopKind.THREAD_X), LoopKind.BLOCK_X)


def _combine(op: str, a: Expr, b: Expr) -> Expr:
    return {"sum": lambda: call("add", a, b), "prod": lambda: call("mul", a, b),
            "max": lambda: call("max", a, b), "min": lambda: call("min", a, b)}[op]()


def _order_reduces(e: Expr) -> list[Reduce]:
    """Reduces in an order where each comes after the ones its body uses."""
    out: list[Reduce] = []

    def visit(x: Expr) -> None:
        for r in reduces_in(x):
            for inner in reduces_in(r.body):
                visit(inner)
            if r not in out:
                for inner in reduces_in(r.body):
                    if inner not in out:
                        out.append(inner)
                out.append(r)
    visit(e)
    return out


def _replace(e: Expr, done: dict[Reduce, Expr]) -> Expr:
    def f(x: Expr) -> Expr | None:
        if isinstance(x, Reduce) and x in done:
            return done[x]
        if isinstance(x, Reduce):
            return Reduce(x.op, x.axes, _replace(x.body, done), x.dtype)
        return None
    return map_expr(e, f)


# ---- GEMM: shared-memory tiling --------------------------------------------------------------

def lower_gemm_gpu(name: str, group: Group, bufs: Mapping[Value, Buffer],
                   consts: Mapping[Value, np.ndarray], kn: GpuKnobs
                   ) -> tuple[Kernel, dict[int, tuple[Buffer, np.ndarray]]] | None:
    anchor = group.anchor
    assert anchor is not None
    if group.output.type.dtype != F32:
        return None
    cpu_knobs = Knobs(mr=1, nr=16, kc=1 << 30, nc=1 << 30)
    if anchor.kind == "conv":
        r = conv_spec(name, group, bufs, consts, cpu_knobs)
        if r is None:
            return None
        spec, _ = r
        w = anchor.inputs[1]
        wb = bufs[w]
        m_, cg, kh, kw = (int(d) for d in w.type.shape)  # type: ignore[arg-type]
        g = full_attrs("conv", anchor.attrs)["group"]
        mg = m_ // g

        wsplat = const_scalar(w, consts)   # a splat weight is an immediate, not a buffer

        def a_load(bg: Expr, m: Expr, k: Expr) -> Expr:
            if wsplat is not None:
                return wsplat
            return BufLoad(wb, (add(mul(mod(bg, g), mg), m), div(k, kh * kw),
                                mod(div(k, kw), kh), mod(k, kw)), F32)
        spec.a_packed, spec.a_load = None, a_load
    else:
        r = matmul_spec(name, group, bufs, consts, Knobs(mr=1, nr=16, kc=1 << 30,
                                                         nc=1 << 30))
        if r is None:
            return None
        spec, _ = r
        bv = anchor.inputs[1]
        if spec.b_packed is not None:  # use the weight as it is: [K, N] row-major
            bb = bufs[bv]
            bsplat = const_scalar(bv, consts)

            def b_load(bi: Expr, k: Expr, n: Expr) -> Expr:
                if bsplat is not None:
                    return bsplat
                return BufLoad(bb, (c64(0),) * (len(bb.shape) - 2) + (k, n), F32)
            spec.b_packed, spec.b_load = None, b_load
    params, roles = _params(group, bufs, consts, bufs[group.output])
    return gemm_gpu_kernel(spec, params, roles, kn), {}


def gemm_gpu_kernel(s: GemmSpec, params: tuple[Buffer, ...], roles: tuple[str, ...],
                    kn: GpuKnobs) -> Kernel:
    BM, BN, BK, TM, TN = kn.bm, kn.bn, kn.bk, kn.tm, kn.tn
    # small problems: smaller tiles so the grid has work for the SMs
    while BM > 32 and s.M <= BM // 2:
        BM //= 2
        TM = max(1, TM // 2)
    while BN > 32 and s.N <= BN // 2:
        BN //= 2
        TN = max(1, TN // 2)
    tyn, txn = BM // TM, BN // TN
    nthreads = tyn * txn
    if nthreads > 1024 or nthreads < 32:
        raise CodegenError(f"cuda: GEMM tile {BM}x{BN}/{TM}x{TN} gives {nthreads} threads")
    pad_a = 4
    As = Buffer(f"{s.name}_As", F32, (BK, BM + pad_a), Scope.SHARED)
    Bs = Buffer(f"{s.name}_Bs", F32, (BK, BN), Scope.SHARED)
    acc = Buffer(f"{s.name}_acc", F32, (TM, TN), Scope.LOCAL)
    b: Expr = Var("b") if s.batch > 1 else c64(0)
    by, bx, ty, tx = Var("by"), Var("bx"), Var("ty"), Var("tx")
    kt, kk, i, j, e = Var("kt"), Var("kk"), Var("i"), Var("j"), Var("e")
    m0, n0 = mul(by, BM), mul(bx, BN)
    tid = add(mul(ty, txn), tx)
    assert s.a_load is not None and s.b_load is not None
    # cooperative loads: thread `tid` fills elements tid, tid + nthreads, ... of each tile
    na, nb = BM * BK, BK * BN
    ea = add(mul(e, nthreads), tid)
    ar, ac = div(ea, BK), mod(ea, BK)                 # A tile row (m) and column (k)
    am, ak = add(m0, ar), add(mul(kt, BK), ac)
    a_val = s.a_load(b, emin(am, s.M - 1), emin(ak, s.K - 1))
    a_ok = [am.lt(s.M)] if s.M % BM else []
    if s.K % BK:
        a_ok.append(ak.lt(s.K))
    cond = both(*a_ok)
    a_st: Stmt = Store(As, (ac, ar), select(cond, a_val, Const(0.0, F32)) if cond is not None
                       else a_val)
    eb = add(mul(e, nthreads), tid)
    br, bc = div(eb, BN), mod(eb, BN)                 # B tile row (k) and column (n)
    bk_, bn_ = add(mul(kt, BK), br), add(n0, bc)
    b_val = s.b_load(b, emin(bk_, s.K - 1), emin(bn_, s.N - 1))
    b_ok = [bn_.lt(s.N)] if s.N % BN else []
    if s.K % BK:
        b_ok.append(bk_.lt(s.K))
    cond = both(*b_ok)
    b_st: Stmt = Store(Bs, (br, bc), select(cond, b_val, Const(0.0, F32)) if cond is not None
                       else b_val)
    loads = seq(For(e, c64(-(-na // nthreads)), a_st if na % nthreads == 0 else
                    IfThen(ea.lt(na), a_st), LoopKind.UNROLL),
                For(e, c64(-(-nb // nthreads)), b_st if nb % nthreads == 0 else
                    IfThen(eb.lt(nb), b_st), LoopKind.UNROLL))
    # the thread's rows are ty + tyn*i, columns tx + txn*j (strided: conflict-free, coalesced)
    row, col = add(ty, mul(tyn, i)), add(tx, mul(txn, j))
    fma = Store(acc, (i, j), call("add", BufLoad(acc, (i, j), F32), call(
        "mul", BufLoad(As, (kk, row), F32), BufLoad(Bs, (kk, col), F32))))
    compute = For(kk, c64(BK), For(i, c64(TM), For(j, c64(TN), fma, LoopKind.UNROLL),
                                    LoopKind.UNROLL), LoopKind.UNROLL)
    kloop = For(kt, c64(-(-s.K // BK)), seq(loads, Barrier(), compute, Barrier()))
    init = For(i, c64(TM), For(j, c64(TN), Store(acc, (i, j), Const(0.0, F32)), LoopKind.UNROLL),
               LoopKind.UNROLL)
    m_abs, n_abs = add(m0, row), add(n0, col)
    out_st: Stmt = Store(s.out, s.out_index(b, m_abs, n_abs),
                         s.epilogue(BufLoad(acc, (i, j), F32), b, m_abs, n_abs))
    ok = both(*([m_abs.lt(s.M)] if s.M % BM else []) + ([n_abs.lt(s.N)] if s.N % BN else []))
    if ok is not None:
        out_st = IfThen(ok, out_st)
    store = For(i, c64(TM), For(j, c64(TN), out_st, LoopKind.UNROLL), LoopKind.UNROLL)
    per_thread = Allocate(acc, seq(init, kloop, store))
    body: Stmt = For(ty, c64(tyn), For(tx, c64(txn), per_thread, LoopKind.THREAD_X),
                     LoopKind.THREAD_Y)
    body = Allocate(As, Allocate(Bs, body))
    body = For(bx, c64(-(-s.N // BN)), body, LoopKind.BLOCK_X)
    body = For(by, c64(-(-s.M // BM)), body, LoopKind.BLOCK_Y)
    if s.batch > 1:
        body = For(b, c64(s.batch), body, LoopKind.BLOCK_Z)  # type: ignore[arg-type]
    trace = (f"gemm M={s.M} N={s.N} K={s.K} batch={s.batch}",
             f"block tile {BM}x{BN}, BK={BK}, thread tile {TM}x{TN} (strided), "
             f"{nthreads} threads",
             f"stage A^T [{BK}x{BM}+{pad_a}] and B [{BK}x{BN}] in shared memory",
             "bind by/bx to block.y/x, ty/tx to thread.y/x; epilogue fused")
    kn2 = {"threads": nthreads, "bm": BM, "bn": BN, "bk": BK, "tm": TM, "tn": TN}
    return Kernel(s.name, params, roles, body, trace, kn2, s.flops)
