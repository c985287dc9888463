"""Lowering: a fused group's compute definitions inlined into one loop nest (a Kernel).

`inline_group` substitutes each producer's definition into its consumer's loads, so fused
intermediates never reach memory. `lower_generic` builds the loop nest for elementwise, injective
and reduction groups: unit axes dropped, contiguous axes merged, reductions computed into local
accumulators at the outermost loop that binds their free variables (softmax's max and sum are
computed once per row, not once per element), the innermost axis vectorized, the outermost
parallel. Complex groups (conv, matmul) use the GEMM template in `ir/loops/gemm.py`.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from minicc.errors import CodegenError
from minicc.ir.compute import (Call, Compute, Const, Expr, Load, Reduce, Var, call, cast,
                               select)
from minicc.ir.graph import Op, Value
from minicc.ir.loops.exprs import (flat_offset, free_vars, linear_coef, map_expr, reduces_in,
                                   rename_reductions, simplify, substitute)
from minicc.ir.loops.nodes import (Allocate, BufLoad, Buffer, For, Kernel, LoopKind, Scope, Stmt,
                                   Store, seq)
from minicc.ir.passes.fuse import Group
from minicc.ir.registry import full_attrs, get_op
from minicc.ir.types import DType

I64 = DType.I64
LANES = 16   # f32 lanes of an AVX-512 register


def const_scalar(v: Value, consts: Mapping[Value, np.ndarray]) -> Expr | None:
    """A constant that is one value (a scalar or a splat) becomes an immediate."""
    a = consts.get(v)
    if a is None:
        return None
    if a.size == 1 or (a.size > 0 and all(s == 0 for s in a.strides)):
        x = a.reshape(-1)[0]
        dt = v.type.dtype
        return Const(float(x) if dt.is_float else (bool(x) if dt == DType.BOOL else int(x)), dt)
    return None


def op_compute(op: Op) -> Compute:
    d = get_op(op.kind)
    comps = d.compute([v.type for v in op.inputs], [v.type for v in op.outputs],
                      full_attrs(op.kind, op.attrs))
    if not comps:
        raise CodegenError(f"op '{op.kind}' has no compute definition and cannot be lowered")
    return comps[0]


class Inliner:
    """Inline a group's ops into one expression. `leaf(v, index)` renders an outside value."""

    def __init__(self, group: Group, leaf: Callable[[Value, tuple[Expr, ...]], Expr],
                 stop: Op | None = None, stop_expr: Callable[[tuple[Expr, ...]], Expr] | None
                 = None):
        self.by_out = {op.outputs[0]: op for op in group.ops}
        self.leaf = leaf
        self.stop, self.stop_expr = stop, stop_expr
        self.n = 0

    def expr(self, op: Op, index: Sequence[Expr]) -> Expr:
        if op is self.stop and self.stop_expr is not None:
            return self.stop_expr(tuple(index))
        c = op_compute(op)
        self.n += 1
        body = rename_reductions(c.body, f"{self.n}")
        body = substitute(body, {a.name: i for a, i in zip(c.axes, index)})

        def f(x: Expr) -> Expr | None:
            if isinstance(x, Load):
                v = op.inputs[x.input]
                idx = tuple(simplify(map_expr(i, f)) for i in x.index)
                p = self.by_out.get(v)
                if p is not None:
                    return self.expr(p, idx)
                return self.leaf(v, idx)
            return None
        return map_expr(body, f)


def format_compute(group: Group) -> str:
    """The group's inlined compute definition before any scheduling (`--dump-ir compute`)."""
    from minicc.ir.loops.printer import format_expr

    out = group.output
    ax = [Var(f"i{k}") for k in range(out.type.rank)]

    def leaf(v: Value, idx: tuple[Expr, ...]) -> Expr:
        name = v.name_hint or "t"
        return BufLoad(Buffer(name, v.type.dtype, tuple(int(d) for d in v.type.shape)),
                       idx, v.type.dtype)
    try:
        body = simplify(Inliner(group, leaf).expr(group.root, ax))
    except CodegenError as e:
        return f"{group.describe()}: {e}"
    idx = ", ".join(v.name for v in ax)
    return (f"{group.describe()}\n  {out.name_hint or 'out'}[{idx}] = {format_expr(body)}"
            f"  : {out.type}")


def _loads(e: Expr) -> list[BufLoad]:
    out: list[BufLoad] = []

    def f(x: Expr) -> Expr | None:
        if isinstance(x, BufLoad):
            out.append(x)
            for i in x.index:
                map_expr(i, f)
            return x
        return None
    map_expr(e, f)
    return out


def _reduce_init(op: str, dt: DType) -> Expr:
    if op in ("sum",):
        return Const(0.0 if dt.is_float else 0, dt)
    if op == "prod":
        return Const(1.0 if dt.is_float else 1, dt)
    if op in ("max", "argmax"):
        return Const(-math.inf, dt) if dt.is_float else Const(int(np.iinfo(dt.np).min), dt)
    if op in ("min", "argmin"):
        return Const(math.inf, dt) if dt.is_float else Const(int(np.iinfo(dt.np).max), dt)
    raise CodegenError(f"unknown reducer {op}")


class _Emitter:
    """Builds statements for an expression whose Reduce nodes become accumulator loops."""

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
        # f16 sums accumulate in f32 (as numpy and onnxruntime do), rounding once at the end
        acc_dt = DType.F32 if r.dtype == DType.F16 and r.op in ("sum", "prod") else r.dtype
        acc = Buffer(f"acc{self.n}", acc_dt, shape, Scope.LOCAL)
        stmts: list[Stmt] = [Store(acc, idx, _reduce_init(r.op, acc_dt if r.op not in (
            "argmax", "argmin") else _body_dtype(r)))]
        pos_buf = None
        if r.op in ("argmax", "argmin"):
            pos_buf = Buffer(f"pos{self.n}", I64, shape, Scope.LOCAL)
            vbuf = Buffer(f"acc{self.n}", _body_dtype(r), shape, Scope.LOCAL)
            acc = vbuf
            stmts = [Store(vbuf, idx, _reduce_init(r.op, _body_dtype(r))),
                     Store(pos_buf, idx, Const(0, I64))]
        inner_bound = bound | rvars

        def update() -> Stmt:
            body = _widen(self.replace(r.body), acc.dtype) if r.op in ("sum", "prod") else \
                self.replace(r.body)
            cur = BufLoad(acc, idx, acc.dtype)
            if r.op == "sum":
                return Store(acc, idx, call("add", cur, body))
            if r.op == "prod":
                return Store(acc, idx, call("mul", cur, body))
            if r.op in ("max", "min"):
                return Store(acc, idx, call(r.op, cur, body))
            assert pos_buf is not None
            better = body.gt(cur) if r.op == "argmax" else body.lt(cur)
            flat: Expr = Const(0, I64)
            for v, n in r.axes:
                flat = simplify(call("add", simplify(call("mul", flat, Const(n, I64))), v))
            return seq(Store(pos_buf, idx, select(better, flat, BufLoad(pos_buf, idx, I64))),
                       Store(acc, idx, select(better, body, cur)))

        def inner() -> Stmt:
            return self.emit_reduces(self.ready(r.body, inner_bound), inner_bound, update)
        loop = inner()
        for v, n in reversed(r.axes):
            loop = For(v, Const(n, I64), loop)
        stmts.append(loop)
        self.done[r] = BufLoad(pos_buf, idx, I64) if pos_buf is not None else cast(BufLoad(
            acc, idx, acc.dtype), r.dtype)
        rest = self.emit_reduces(rs[1:], bound, cont)
        body = seq(*stmts, rest)
        if pos_buf is not None:
            body = Allocate(pos_buf, body)
        return Allocate(acc, body)


def _widen(e: Expr, dt: DType) -> Expr:
    """e evaluated in the wider type dt: products and sums of f16 values are not rounded to f16
    on the way into an f32 accumulator (numpy's half matmul does the same)."""
    if e.dtype == dt:
        return e
    if isinstance(e, Call) and e.fn in ("mul", "add", "sub") and e.dtype == DType.F16:
        return call(e.fn, *(_widen(a, dt) for a in e.args))
    return cast(e, dt)


def _body_dtype(r: Reduce) -> DType:
    return r.body.dtype


def _try_merge(axes: list[tuple[Var, int]], exprs: dict[int, Expr], loads: list[BufLoad],
               out_buf: Buffer) -> tuple[list[tuple[Var, int]], dict[int, Expr]]:
    """Merge the innermost loop axes while every access stays affine in the merged variable."""
    while len(axes) >= 2:
        (a, ea), (b, eb) = axes[-2], axes[-1]
        q = Var(f"{a.name}_{b.name}")
        sub = {a.name: call("floordiv", q, Const(eb, I64)), b.name: call("mod", q, Const(eb, I64))}
        new_exprs = {k: substitute(e, sub) for k, e in exprs.items()}
        ok = True
        for ld in loads:
            idx = tuple(substitute(i, sub) for i in ld.index)
            if linear_coef(flat_offset(idx, ld.buf.shape), q.name) is None:
                ok = False
                break
        if ok:
            idx = tuple(new_exprs.get(k, Const(0, I64)) for k in range(len(out_buf.shape)))
            ok = linear_coef(flat_offset(idx, out_buf.shape), q.name) is not None
        if not ok:
            break
        axes = axes[:-2] + [(q, ea * eb)]
        exprs = new_exprs
        loads = [BufLoad(ld.buf, tuple(substitute(i, sub) for i in ld.index), ld.dtype)
                 for ld in loads]
    return axes, exprs


def lower_generic(name: str, group: Group, bufs: Mapping[Value, Buffer],
                  consts: Mapping[Value, np.ndarray], threads_ok: bool = True,
                  lanes: int = LANES) -> Kernel:
    """Loop nest for an elementwise / injective / reduction group (see the module docstring)."""
    out_v = group.output
    out_buf = bufs[out_v]
    shape = out_buf.shape
    orig = [Var(f"i{k}") for k in range(len(shape))]

    def leaf(v: Value, idx: tuple[Expr, ...]) -> Expr:
        c = const_scalar(v, consts)
        return c if c is not None else BufLoad(bufs[v], idx, v.type.dtype)
    body = Inliner(group, leaf).expr(group.root, orig)
    body = simplify(body)
    # loop axes: non-unit output dims; each original axis maps to an expression of loop vars
    exprs: dict[int, Expr] = {}
    axes: list[tuple[Var, int]] = []
    for k, d in enumerate(shape):
        if d == 1:
            exprs[k] = Const(0, I64)
        else:
            exprs[k] = orig[k]
            axes.append((orig[k], d))
    body = substitute(body, {orig[k].name: e for k, e in exprs.items() if isinstance(e, Const)})
    loads = _loads(body)
    axes, exprs = _try_merge(axes, exprs, loads, out_buf)
    # substitute merged axes into the body
    sub = {orig[k].name: e for k, e in exprs.items() if not (isinstance(e, Var) and
                                                              e.name == orig[k].name)}
    body = substitute(body, sub)
    # reductions want their free vars bound outside the other loops
    red_free = set().union(*(free_vars(r) for r in reduces_in(body))) if reduces_in(body) \
        else set()
    outer = [a for a in axes if a[0].name in red_free]
    inner = [a for a in axes if a[0].name not in red_free]
    order = outer + inner
    vec = order[-1] if order and out_buf.dtype != DType.BOOL or (order and True) else None
    trace = [f"inline {'+'.join(op.kind for op in group.ops)}",
             f"loops {[f'{v.name}<{n}' for v, n in order]}"]
    vec_lane: Var | None = None
    loop_exprs: dict[str, Expr] = {}
    if vec is not None:
        v, n = vec
        lanes_used = lanes
        vo, vi = Var(f"{v.name}.o"), Var(f"{v.name}.v")
        vec_lane = vi
        if n <= lanes_used:
            loop_exprs[v.name] = vi
        else:
            loop_exprs[v.name] = simplify(call("add", call("mul", vo, Const(lanes_used, I64)), vi))
        trace.append(f"vectorize {v.name} by {lanes_used}")
    body = substitute(body, loop_exprs)
    store_idx = tuple(substitute(exprs.get(k, Const(0, I64)), loop_exprs)
                      for k in range(len(shape)))
    em = _Emitter(vec_lane.name if vec_lane is not None else None, lanes)

    def build(level: int, bound: set[str]) -> Stmt:
        def cont() -> Stmt:
            if level == len(order):
                return Store(out_buf, store_idx, cast(em.replace(body), out_buf.dtype))
            v, n = order[level]
            if vec is not None and v is vec[0]:
                vi = vec_lane
                assert vi is not None
                if n <= lanes:
                    inner_s = build(level + 1, bound | {vi.name})
                    return For(vi, Const(n, I64), inner_s, LoopKind.VECTOR, lanes)
                vo = Var(f"{v.name}.o")
                rem = simplify(call("min", Const(lanes, I64),
                                    call("sub", Const(n, I64),
                                         call("mul", vo, Const(lanes, I64)))))
                inner_s = build(level + 1, bound | {vi.name, vo.name})
                return For(vo, Const(-(-n // lanes), I64), For(vi, rem, inner_s, LoopKind.VECTOR,
                                                               lanes))
            return For(v, Const(n, I64), build(level + 1, bound | {v.name}))
        cur = em.replace(body)
        return em.emit_reduces(em.ready(cur, bound), bound, cont)
    stmt = build(0, set())
    stmt = _parallelize(stmt, out_buf.numel) if threads_ok else stmt
    params, roles = _params(group, bufs, consts, out_buf)
    flops = sum(get_op(op.kind).cost([v.type for v in op.inputs], [v.type for v in op.outputs],
                                     full_attrs(op.kind, op.attrs)).flops for op in group.ops)
    return Kernel(name, params, roles, stmt, tuple(trace), {}, flops)


def _parallelize(s: Stmt, work: int) -> Stmt:
    """Mark the outermost loop with more than one iteration parallel (for big enough kernels)."""
    if work < 1 << 14:
        return s
    if isinstance(s, For) and s.kind == LoopKind.SERIAL and isinstance(s.extent, Const):
        if s.extent.value > 1:  # type: ignore[operator]
            return For(s.var, s.extent, s.body, LoopKind.PARALLEL)
        return For(s.var, s.extent, _parallelize(s.body, work), s.kind)
    return s


def _params(group: Group, bufs: Mapping[Value, Buffer], consts: Mapping[Value, np.ndarray],
            out_buf: Buffer) -> tuple[tuple[Buffer, ...], tuple[str, ...]]:
    params, roles = [], []
    for v in group.inputs():
        if const_scalar(v, consts) is not None:
            continue
        params.append(bufs[v])
        roles.append("weight" if v in consts else "in")
    params.append(out_buf)
    roles.append("out")
    return tuple(params), tuple(roles)

