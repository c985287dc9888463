"""GPU: the `block_reduce(threads)` step. A loop nest whose reductions read a subset of its loops
(the row loops) becomes one thread block per row: each reduction is strided over the block's
threads into a per-thread accumulator and combined across the block (`BlockAllReduce`: warp
shuffles, then one value per warp through shared memory); then the threads share the row's
outputs.

    for i0 in 0..8 { for i1 in 0..100 { y[i0, i1] = x[i0, i1] / sum[k<100](x[i0, k]) } }
    --block_reduce(128)-->
    for bx in 0..8 block.x { for tx in 0..128 thread.x { alloc acc0, red0 {
        acc0[0] = 0; for j0 in 0..1 { if j0*128 + tx < 100 { acc0[0] += x[bx, j0*128 + tx] } }
        acc0[0] = block_all_reduce.sum(acc0[0]) via red0
        for jo in 0..1 { if jo*128 + tx < 100 { y[bx, jo*128 + tx] = x[...] / acc0[0] } } } } }
"""

from __future__ import annotations

import numpy as np

from minicc.errors import ScheduleError
from minicc.ir.compute import Const, Expr, Reduce, Var, call, cast, unflat_index
from minicc.ir.loops.exprs import free_vars, map_expr, reduces_in, simplify, substitute
from minicc.ir.loops.nodes import (Allocate, BlockAllReduce, BufLoad, Buffer, For, IfThen,
                                   LoopKind, Scope, Stmt, Store, band, seq)
from minicc.ir.loops.reductions import reduce_init, reduction_vars, widen
from minicc.ir.types import DType

I64 = DType.I64
F32 = DType.F32


def row_reducible(reds: list[Reduce]) -> bool:
    """Reductions a block can share: sum/max/min/prod whose bodies hold no reduction that
    depends on their own variables."""
    for r in reds:
        if r.op not in ("sum", "max", "min", "prod"):
            return False
        rv = {v.name for v, _ in r.axes}
        if any(free_vars(x) & rv for x in reduces_in(r.body)):
            return False
    return True


def reduction_size(reds: list[Reduce]) -> int:
    return max(int(np.prod([n for _, n in r.axes])) for r in reds)


def _c(v: int) -> Const:
    return Const(int(v), I64)


def _strided(j: Var, t: int, tx: Var) -> Expr:
    return simplify(call("add", call("mul", j, _c(t)), tx))


def _combine(op: str, a: Expr, b: Expr) -> Expr:
    return call({"sum": "add", "prod": "mul", "max": "max", "min": "min"}[op], a, b)


def _order(e: Expr) -> list[Reduce]:
    """Reduces in an order where each comes after the ones its body uses."""
    out: list[Reduce] = []

    def visit(x: Expr) -> None:
        for r in reduces_in(x):
            for inner in reduces_in(r.body):
                visit(inner)
            if r not in out:
                out.extend(i for i in reduces_in(r.body) if i not in out)
                out.append(r)
    visit(e)
    return out


def _replace(e: Expr, done: dict[Reduce, Expr]) -> Expr:
    def f(x: Expr) -> Expr | None:
        if isinstance(x, Reduce):
            return done[x] if x in done else Reduce(x.op, x.axes, _replace(x.body, done),
                                                    x.dtype)
        return None
    return map_expr(e, f)


def _reduction(i: int, r: Reduce, t: int, tx: Var) -> tuple[list[Stmt], list[Buffer], Expr]:
    """Statements computing reduction `r` across the block, its buffers, and its value."""
    acc_dt = F32 if r.dtype == DType.F16 else r.dtype
    acc = Buffer(f"acc{i}", acc_dt, (1,), Scope.LOCAL)
    smem = Buffer(f"red{i}", acc_dt, (32,), Scope.SHARED)
    n = int(np.prod([e for _, e in r.axes]))
    j = Var(f"j{i}")
    q = _strided(j, t, tx)
    val = substitute(r.body, {v.name: e for (v, _), e in zip(r.axes, unflat_index(
        q, [e for _, e in r.axes]))})
    cur = BufLoad(acc, (_c(0),), acc_dt)
    upd: Stmt = Store(acc, (_c(0),), _combine(r.op, cur, widen(val, acc_dt) if r.op in (
        "sum", "prod") else val))
    if n % t:
        upd = IfThen(q.lt(n), upd)
    stmts = [Store(acc, (_c(0),), reduce_init(r.op, acc_dt)), For(j, _c(-(-n // t)), upd),
             BlockAllReduce(r.op, acc, smem)]
    return stmts, [acc, smem], cast(cur, r.dtype)


def block_reduce(s: Stmt, threads: int) -> Stmt:
    """See the module docstring. `s` is a band of loops holding one store."""
    if not isinstance(threads, int) or threads < 32 or threads > 1024 or threads % 32:
        raise ScheduleError(f"block_reduce({threads}): threads must be a multiple of 32 "
                            "from 32 to 1024")
    axes, st = band(s)
    if not isinstance(st, Store) or not reduces_in(st.value):
        raise ScheduleError(f"block_reduce({threads}): needs loops around one store that "
                            "reduces")
    red = reduction_vars(s)[0]
    rows = [(a, e) for a, e in axes if a in red]
    inner = [(a, e) for a, e in axes if a not in red]
    bx, tx = Var("bx"), Var("tx")
    sub = dict(zip((a for a, _ in rows), unflat_index(bx, [e for _, e in rows]) if rows else ()))
    value = substitute(st.value, sub)
    done: dict[Reduce, Expr] = {}
    stmts: list[Stmt] = []
    allocs: list[Buffer] = []
    for i, r0 in enumerate(_order(value)):
        more, bufs, val = _reduction(i, _replace(r0, done), threads, tx)
        stmts += more
        allocs += bufs
        done[r0] = val
    n_inner = int(np.prod([e for _, e in inner])) if inner else 1
    jo = Var("jo")
    c = _strided(jo, threads, tx)
    isub = dict(zip((a for a, _ in inner), unflat_index(c, [e for _, e in inner])))
    out: Stmt = Store(st.buf, tuple(substitute(substitute(x, sub), isub) for x in st.index),
                      substitute(_replace(value, done), isub))
    if n_inner % threads:
        out = IfThen(c.lt(n_inner), out)
    body: Stmt = seq(*stmts, For(jo, _c(-(-n_inner // threads)), out))
    for b in allocs:
        body = Allocate(b, body)
    n_rows = int(np.prod([e for _, e in rows])) if rows else 1
    return For(bx, _c(n_rows), For(tx, _c(threads), body, LoopKind.THREAD_X), LoopKind.BLOCK_X)
