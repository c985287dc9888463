"""Reductions into accumulators: the `compute_at` step of every schedule.

A loop nest from lowering holds `Reduce` expressions in its stores. `compute_at` computes each one
into a LOCAL accumulator at the outermost point where every variable it reads is bound (softmax's
max and sum once per row, not once per element), innermost reductions first, and replaces it by
a load of the accumulator. A reduction that reads the lane variable of a vector loop gets one
accumulator per lane.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from minicc.errors import CodegenError
from minicc.ir.compute import Call, Const, Expr, Reduce, Var, call, cast, select
from minicc.ir.loops.exprs import (add, expr_loads, flat_offset, free_vars, linear_coef,
                                   map_expr, mul, reduces_in, simplify, substitute)
from minicc.ir.loops.nodes import (Allocate, BufLoad, Buffer, For, IfThen, LoopKind, Scope, Seq,
                                   Stmt, Store, seq, walk)
from minicc.ir.types import DType

I64 = DType.I64
PARTIALS = 4    # vectors of partial results a contiguous reduction keeps (see _lane_split)


def reduce_init(op: str, dt: DType) -> Expr:
    if op in ("sum",):
        return Const(0.0 if dt.is_float else 0, dt)
    if op == "prod":
        return Const(1.0 if dt.is_float else 1, dt)
    if op in ("max", "argmax"):
        return Const(-math.inf, dt) if dt.is_float else Const(int(np.iinfo(dt.np).min), dt)
    if op in ("min", "argmin"):
        return Const(math.inf, dt) if dt.is_float else Const(int(np.iinfo(dt.np).max), dt)
    raise CodegenError(f"unknown reducer {op}")


def widen(e: Expr, dt: DType) -> Expr:
    """e evaluated in the wider type dt: products and sums of f16 values are not rounded to f16
    on the way into an f32 accumulator (numpy's half matmul does the same)."""
    if e.dtype == dt:
        return e
    if isinstance(e, Call) and e.fn in ("mul", "add", "sub") and e.dtype == DType.F16:
        return call(e.fn, *(widen(a, dt) for a in e.args))
    return cast(e, dt)


class Emitter:
    """Builds statements for expressions whose Reduce nodes become accumulator loops."""

    def __init__(self, vec_var: str | None, lanes: int):
        self.vec_var = vec_var
        self.lanes = lanes
        self.done: dict[Reduce, Expr] = {}
        self.n = 0

    def lane_index(self, r: Reduce) -> tuple[tuple[Expr, ...], tuple[int, ...]]:
        if self.vec_var is not None and self.vec_var in free_vars(r):
            return (Var(self.vec_var),), (self.lanes,)
        return (Const(0, I64),), (1,)

    def replace(self, e: Expr) -> Expr:
        def f(x: Expr) -> Expr | None:
            if isinstance(x, Reduce) and x in self.done:
                return self.done[x]
            return None
        return map_expr(e, f)

    def ready(self, e: Expr, bound: set[str]) -> list[Reduce]:
        """Reduces in `e` (not yet emitted) whose free vars are all bound."""
        return [r for r in reduces_in(self.replace(e)) if free_vars(r) <= bound]

    def emit_reduces(self, rs: list[Reduce], bound: set[str], cont: Callable[[], Stmt]) -> Stmt:
        """Allocate and compute each reduce in `rs`, then continue with `cont()` inside."""
        if not rs:
            return cont()
        r = rs[0]
        if r in self.done:
            return self.emit_reduces(rs[1:], bound, cont)
        # inner reduces that do not depend on r's own variables are computed first, outside
        rvars = {v.name for v, _ in r.axes}
        pre = [x for x in self.ready(r.body, bound) if not (free_vars(x) & rvars)]
        if pre:
            return self.emit_reduces(pre + rs, bound, cont)
        self.n += 1
        idx, shape = self.lane_index(r)
        arg = r.op in ("argmax", "argmin")
        # f16 sums accumulate in f32 (as numpy and onnxruntime do), rounding once at the end
        acc_dt = DType.F32 if r.dtype == DType.F16 and r.op in ("sum", "prod") else \
            (r.body.dtype if arg else r.dtype)
        acc = Buffer(f"acc{self.n}", acc_dt, shape, Scope.LOCAL)
        pos = Buffer(f"pos{self.n}", I64, shape, Scope.LOCAL) if arg else None
        init: list[Stmt] = [Store(acc, idx, reduce_init(r.op, acc_dt))]
        if pos is not None:
            init.append(Store(pos, idx, Const(0, I64)))
        inner_bound = bound | rvars

        def inner() -> Stmt:
            return self.emit_reduces(self.ready(r.body, inner_bound), inner_bound,
                                     lambda: self._update(r, acc, pos, idx))
        split = self._lanes_for(r, acc_dt, idx, inner_bound)
        if split:
            loop = self._lane_split(r, acc, idx)
        else:
            loop = inner()
            for v, n in reversed(r.axes):
                loop = For(v, Const(n, I64), loop)
        self.done[r] = BufLoad(pos, idx, I64) if pos is not None else cast(
            BufLoad(acc, idx, acc.dtype), r.dtype)
        body = seq(*init, loop, self.emit_reduces(rs[1:], bound, cont))
        if pos is not None:
            body = Allocate(pos, body)
        return Allocate(acc, body)

    def _lanes_for(self, r: Reduce, acc_dt: DType, idx: tuple[Expr, ...],
                   inner_bound: set[str]) -> bool:
        """Whether `r` can run `lanes` partial results at once: a float sum, max or min with
        one accumulator, no reduction inside it, its innermost axis at least a vector long and
        read contiguously (the last index of every load, coefficient 1)."""
        if self.lanes < 2 or r.op not in ("sum", "max", "min") or acc_dt != DType.F32 or \
                idx != (Const(0, I64),) or self.ready(r.body, inner_bound):
            return False
        if reduces_in(self.replace(r.body)):
            return False
        axes, body = self._flat_tail(r)
        v, n = axes[-1]
        if n < self.lanes:
            return False
        for ld in expr_loads(body):
            off = flat_offset(ld.index, ld.buf.shape)
            if linear_coef(off, v.name) not in (0, 1):
                return False
        return True

    def _flat_tail(self, r: Reduce) -> tuple[list[tuple[Var, int]], Expr]:
        """r's axes and body with its innermost axes merged into one where every load reads
        them as the whole trailing dimensions of its buffer, in order (a global average pool's
        H and W: one run of H*W contiguous elements, vectors across rows, not W at a time)."""
        body = self.replace(r.body)
        axes = list(r.axes)
        t = len(axes)
        while t >= 2:
            run = axes[-t:]
            names = [v.name for v, _ in run]
            ok = True
            for ld in expr_loads(body):
                if len(ld.index) < t or [getattr(i, "name", None) for i in ld.index[-t:]] \
                        != names or list(ld.buf.shape[-t + 1:]) != [n for _, n in run[1:]] or \
                        any(set(names) & free_vars(i) for i in ld.index[:-t]):
                    ok = False
                    break
            if ok:
                break
            t -= 1
        if t < 2:
            return axes, body
        run = axes[-t:]
        flat = Var(f"{run[0][0].name}.f")
        stride, sub = 1, {}
        for k, (v, n) in enumerate(reversed(run)):
            digit = simplify(call("floordiv", flat, Const(stride, I64))) if stride > 1 else flat
            sub[v.name] = digit if k == t - 1 else simplify(call("mod", digit, Const(n, I64)))
            stride *= n
        return axes[:-t] + [(flat, stride)], substitute(body, sub)

    def _lane_split(self, r: Reduce, acc: Buffer, idx: tuple[Expr, ...]) -> Stmt:
        """The innermost axis split by the vector width into P x `lanes` partial accumulators
        (P = PARTIALS vectors, fewer for short runs: independent chains, so the adds overlap
        instead of waiting on each other), the leftover vectors into the first one, the tail
        into its first lane, then combined into `acc` (a horizontal reduction):

            for p in 0..4 { for l in 0..16 vector { part[p*16+l] = init } }
            for k.o in 0..n/64 { for p in 0..4 unroll { for l in 0..16 vector {
                part[p*16+l] = op(part[p*16+l], body((k.o*4 + p)*16 + l)) } } }
            for k.r in 0..(n%64)/16 { for l in 0..16 vector { part[l] = op(part[l], ...) } }
            for k.t in 0..n%16 { part[0] = op(part[0], body(n/16*16 + k.t)) }
            for l in 0..64 { acc[0] = op(acc[0], part[l]) }
        """
        axes, body = self._flat_tail(r)
        (v, n), L = axes[-1], self.lanes
        P = max(1, min(PARTIALS, n // L))
        self.n += 1
        part = Buffer(f"part{self.n}", acc.dtype, (P * L,), Scope.LOCAL)
        lane, vo, vt = Var(f"{v.name}.l"), Var(f"{v.name}.o"), Var(f"{v.name}.t")
        vp, vr = Var(f"{v.name}.p"), Var(f"{v.name}.r")
        fn = {"sum": "add", "max": "max", "min": "min"}[r.op]

        def upd(at: Expr, k: Expr) -> Stmt:
            val = widen(substitute(body, {v.name: k}), acc.dtype)
            return Store(part, (at,), call(fn, BufLoad(part, (at,), acc.dtype), val))

        def over_rest(st: Stmt) -> Stmt:
            for u, m in reversed(axes[:-1]):
                st = For(u, Const(m, I64), st)
            return st
        main: Stmt = For(vo, Const(n // (P * L), I64), For(vp, Const(P, I64), For(
            lane, Const(L, I64), upd(add(mul(vp, L), lane), add(mul(vo, P * L), mul(vp, L),
                                                                 lane)),
            LoopKind.VECTOR, L), LoopKind.UNROLL if P > 1 else LoopKind.SERIAL))
        rest: Stmt | None = None
        if n % (P * L) >= L:
            rest = over_rest(For(vr, Const(n % (P * L) // L, I64), For(lane, Const(L, I64), upd(
                lane, add(mul(vr, L), lane, Const(n // (P * L) * P * L, I64))),
                LoopKind.VECTOR, L)))
        tail: Stmt | None = None
        if n % L:
            tail = over_rest(For(vt, Const(n % L, I64), upd(Const(0, I64), add(
                vt, Const(n // L * L, I64)))))
        init = For(vp, Const(P, I64), For(lane, Const(L, I64), Store(
            part, (add(mul(vp, L), lane),), reduce_init(r.op, acc.dtype)), LoopKind.VECTOR, L))
        combine = For(lane, Const(P * L, I64), Store(acc, idx, call(
            fn, BufLoad(acc, idx, acc.dtype), BufLoad(part, (lane,), acc.dtype))))
        return Allocate(part, seq(init, over_rest(main), rest, tail, combine))

    def _update(self, r: Reduce, acc: Buffer, pos: Buffer | None,
                idx: tuple[Expr, ...]) -> Stmt:
        body = self.replace(r.body)
        if r.op in ("sum", "prod"):
            body = widen(body, acc.dtype)
        cur = BufLoad(acc, idx, acc.dtype)
        if r.op in ("sum", "prod"):
            return Store(acc, idx, call("add" if r.op == "sum" else "mul", cur, body))
        if r.op in ("max", "min"):
            return Store(acc, idx, call(r.op, cur, body))
        assert pos is not None
        better = body.gt(cur) if r.op == "argmax" else body.lt(cur)
        flat: Expr = Const(0, I64)
        for v, n in r.axes:
            flat = simplify(call("add", simplify(call("mul", flat, Const(n, I64))), v))
        return seq(Store(pos, idx, select(better, flat, BufLoad(pos, idx, I64))),
                   Store(acc, idx, select(better, body, cur)))


def _stores(s: Stmt) -> list[Store]:
    return [x for x in walk(s) if isinstance(x, Store)]


def compute_at(s: Stmt, lanes: int = 1) -> Stmt:
    """Every reduction computed into an accumulator at the outermost loop that binds what it
    reads (see the module docstring). Before and after, for a row softmax:

        for i in 0..4 { y[i, j] ... = exp(x[i, j] - max[k<8](x[i, k])) ... }
        for i in 0..4 { alloc acc1 { acc1[0] = -inf; for k in 0..8 { acc1[0] = max(...) }
                        for j in 0..8 { y[i, j] = exp(x[i, j] - acc1[0]) ... } } }

    With no vector loop, `lanes` (compute_at(lanes=16)) vectorizes the reductions themselves
    where they read a contiguous run (Emitter._lane_split)."""
    vec = next(((x.var.name, x.lanes) for x in walk(s) if isinstance(x, For)
                and x.kind == LoopKind.VECTOR), (None, lanes))
    em = Emitter(vec[0], vec[1])

    def go(x: Stmt, bound: set[str]) -> Stmt:
        if isinstance(x, IfThen):   # inside a guard: what it guards may read out of bounds
            return descend(x, bound)
        ready = [r for st in _stores(x) for r in em.ready(st.value, bound)]
        return em.emit_reduces(list(dict.fromkeys(ready)), bound, lambda: descend(x, bound))

    def descend(x: Stmt, bound: set[str]) -> Stmt:
        if isinstance(x, For):
            return For(x.var, x.extent, go(x.body, bound | {x.var.name}), x.kind, x.lanes)
        if isinstance(x, Store):
            return Store(x.buf, x.index, em.replace(x.value))
        if isinstance(x, Seq):
            return Seq(tuple(go(y, bound) for y in x.stmts))
        if isinstance(x, IfThen):
            return IfThen(x.cond, go(x.then, bound),
                          go(x.else_, bound) if x.else_ is not None else None)
        if isinstance(x, Allocate):
            return Allocate(x.buf, go(x.body, bound))
        return x
    return go(s, set())


def has_reduces(s: Stmt) -> bool:
    return any(reduces_in(st.value) for st in _stores(s))


def reduction_vars(s: Stmt) -> tuple[set[str], bool]:
    """Loop variables the reductions in `s` read, and whether one reads none (a whole-tensor
    reduction, computed before every loop)."""
    free = [free_vars(r) for st in _stores(s) for r in reduces_in(st.value)]
    return set().union(*free) if free else set(), any(not f for f in free)
