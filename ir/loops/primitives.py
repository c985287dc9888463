"""Schedule primitives: pure functions Stmt -> Stmt on loop nests, applied by name from a trace.

    for i in 0..100 {S(i)}   --split(i, 16)-->
        for i.o in 0..7 { for i.i in 0..min(16, 100 - i.o*16) { S(i.o*16 + i.i) } }
    split(i, 16, guard=true): for i.o in 0..7 { for i.i in 0..16 { if i.o*16 + i.i < 100 {S} } }
    for i in 0..A { for j in 0..B {S(i, j)} }   --fuse(i, j)-->   for i_j in 0..A*B
                                                                  { S(i_j // B, i_j % B) }
    reorder(j, i): permutes a perfectly nested band of loops into the order given.
    vectorize(i, lanes) / unroll(i) / parallel(i) / bind(i, block.x): mark a loop.
    compute_at(): reductions into accumulators (ir/loops/reductions.py).
    block_reduce(threads): GPU, one thread block per row of a reduction (block_reduce.py).

Each primitive checks that it is legal and raises ScheduleError naming the loop when it is not.
`apply_steps` runs a list of trace Steps through this table (TVM's trace replay).
"""

from __future__ import annotations

from typing import Callable

from minicc.errors import ScheduleError
from minicc.ir.compute import Call, Const, Expr, Var, call
from minicc.ir.loops.exprs import free_vars, simplify, substitute
from minicc.ir.loops.nodes import (Allocate, For, IfThen, Kernel, LoopKind, Prefetch, Seq, Stmt,
                                   Store, walk)
from minicc.ir.loops.block_reduce import block_reduce
from minicc.ir.loops.reductions import compute_at
from minicc.ir.loops.trace import Step
from minicc.ir.types import DType

I64 = DType.I64


def subst_stmt(s: Stmt, mapping: dict[str, Expr]) -> Stmt:
    """Replace free loop variables in every expression of a statement."""
    def e(x: Expr) -> Expr:
        return substitute(x, mapping)
    if isinstance(s, For):
        inner = {k: v for k, v in mapping.items() if k != s.var.name}
        return For(s.var, e(s.extent), subst_stmt(s.body, inner), s.kind, s.lanes)
    if isinstance(s, Store):
        return Store(s.buf, tuple(e(i) for i in s.index), e(s.value))
    if isinstance(s, Prefetch):
        return Prefetch(s.buf, tuple(e(i) for i in s.index))
    if isinstance(s, Seq):
        return Seq(tuple(subst_stmt(x, mapping) for x in s.stmts))
    if isinstance(s, IfThen):
        return IfThen(e(s.cond), subst_stmt(s.then, mapping),
                      subst_stmt(s.else_, mapping) if s.else_ is not None else None)
    if isinstance(s, Allocate):
        return Allocate(s.buf, subst_stmt(s.body, mapping))
    return s


def _on_loop(s: Stmt, var: str, f: Callable[[For], Stmt]) -> tuple[Stmt, bool]:
    if isinstance(s, For):
        if s.var.name == var:
            return f(s), True
        body, hit = _on_loop(s.body, var, f)
        return (For(s.var, s.extent, body, s.kind, s.lanes), True) if hit else (s, False)
    if isinstance(s, Seq):
        out, hit = [], False
        for x in s.stmts:
            y, h = _on_loop(x, var, f) if not hit else (x, False)
            out.append(y)
            hit = hit or h
        return Seq(tuple(out)), hit
    if isinstance(s, IfThen):
        t, hit = _on_loop(s.then, var, f)
        if not hit and s.else_ is not None:
            e, hit = _on_loop(s.else_, var, f)
            return IfThen(s.cond, s.then, e), hit
        return IfThen(s.cond, t, s.else_), hit
    if isinstance(s, Allocate):
        b, hit = _on_loop(s.body, var, f)
        return Allocate(s.buf, b), hit
    return s, False


def _apply(s: Stmt, var: str, f: Callable[[For], Stmt], what: str) -> Stmt:
    out, hit = _on_loop(s, var, f)
    if not hit:
        raise ScheduleError(f"{what}: no loop named '{var}'")
    return out


def _c(v: int) -> Const:
    return Const(int(v), I64)


def split(s: Stmt, var: str, factor: int, guard: bool = False) -> Stmt:
    """var -> var.o (outer), var.i (inner, `factor` iterations). At a tail the inner extent is
    `min(factor, n - var.o*factor)`, or with `guard` the inner loop keeps `factor` iterations and
    its body runs under `if var.o*factor + var.i < n` (GPU threads need constant extents)."""
    if not isinstance(factor, int) or factor < 1:
        raise ScheduleError(f"split({var}, {factor}): the factor must be an integer >= 1")

    def f(lp: For) -> Stmt:
        if lp.kind != LoopKind.SERIAL:
            raise ScheduleError(f"split({var}, {factor}): '{var}' is already {lp.kind.value}")
        o, i = Var(f"{var}.o"), Var(f"{var}.i")
        n = lp.extent
        outer = simplify(call("floordiv", call("add", n, _c(factor - 1)), _c(factor)))
        exact = isinstance(n, Const) and n.value % factor == 0  # type: ignore[operator]
        pos = simplify(call("add", call("mul", o, _c(factor)), i))
        body = subst_stmt(lp.body, {var: pos})
        if exact or guard:
            inner_ext: Expr = _c(factor)
            if not exact:
                body = IfThen(pos.lt(n), body)
        else:
            inner_ext = simplify(call("min", _c(factor), call("sub", n, call("mul", o,
                                                                            _c(factor)))))
        return For(o, outer, For(i, inner_ext, body))
    return _apply(s, var, f, f"split({var}, {factor})")


def fuse(s: Stmt, outer: str, inner: str) -> Stmt:
    """Two directly nested loops -> one, named `outer_inner`."""
    def f(lp: For) -> Stmt:
        if not isinstance(lp.body, For) or lp.body.var.name != inner:
            raise ScheduleError(f"fuse({outer}, {inner}): '{inner}' is not directly inside "
                                f"'{outer}'")
        b = lp.body
        if not isinstance(b.extent, Const) or not isinstance(lp.extent, Const):
            raise ScheduleError(f"fuse({outer}, {inner}): the loops need constant extents")
        if lp.kind != LoopKind.SERIAL or b.kind != LoopKind.SERIAL:
            raise ScheduleError(f"fuse({outer}, {inner}): only serial loops fuse")
        q = Var(f"{outer}_{inner}")
        body = subst_stmt(b.body, {outer: call("floordiv", q, b.extent),
                                   inner: call("mod", q, b.extent)})
        return For(q, simplify(call("mul", lp.extent, b.extent)), body, lp.kind)
    return _apply(s, outer, f, f"fuse({outer}, {inner})")


def reorder(s: Stmt, *order: str) -> Stmt:
    """Permute a perfectly nested band of loops (the loops named, outermost first in the
    band as it stands) into the order given. Legal when no extent depends on a loop that moves
    inside it."""
    what = f"reorder({', '.join(order)})"
    if len(set(order)) != len(order) or len(order) < 2:
        raise ScheduleError(f"{what}: name two or more different loops")

    def f(lp: For) -> Stmt:
        band: list[For] = [lp]
        while len(band) < len(order):
            nxt = band[-1].body
            if not isinstance(nxt, For):
                raise ScheduleError(f"{what}: the loops are not perfectly nested")
            band.append(nxt)
        names = [x.var.name for x in band]
        if sorted(names) != sorted(order):
            raise ScheduleError(f"{what}: the band here is {', '.join(names)}")
        by = {x.var.name: x for x in band}
        body = band[-1].body
        for k in range(len(order) - 1, -1, -1):
            lpk = by[order[k]]
            inside = free_vars(lpk.extent) & set(order[k + 1:])
            if inside:
                raise ScheduleError(f"{what}: the extent of '{order[k]}' depends on "
                                    f"{', '.join(sorted(inside))}, which would run inside it")
            body = For(lpk.var, lpk.extent, body, lpk.kind, lpk.lanes)
        return body

    first = _outermost_of(s, set(order))
    if first is None:
        raise ScheduleError(f"{what}: no loop named '{order[0]}'")
    return _apply(s, first, f, what)


def _outermost_of(s: Stmt, names: set[str]) -> str | None:
    for x in walk(s):
        if isinstance(x, For) and x.var.name in names:
            return x.var.name
    return None


def _mark(kind: LoopKind) -> Callable[..., Stmt]:
    def prim(s: Stmt, var: str) -> Stmt:
        def f(lp: For) -> Stmt:
            if lp.kind != LoopKind.SERIAL:
                raise ScheduleError(f"{kind.value}({var}): '{var}' is already {lp.kind.value}")
            if kind == LoopKind.UNROLL and not isinstance(lp.extent, Const):
                raise ScheduleError(f"unroll({var}): the extent is not a constant")
            return For(lp.var, lp.extent, lp.body, kind)
        return _apply(s, var, f, f"{kind.value}({var})")
    return prim


unroll = _mark(LoopKind.UNROLL)


def parallel(s: Stmt, var: str) -> Stmt:
    """Threads take static chunks of the loop's iterations (one parallel loop per kernel: every
    thread runs the code around it, so the iterations must write disjoint elements)."""
    kinds = {x.kind for x in walk(s) if isinstance(x, For)}
    if LoopKind.PARALLEL in kinds:
        raise ScheduleError(f"parallel({var}): the kernel already has a parallel loop")
    if any(k.is_block or k.is_thread for k in kinds):
        raise ScheduleError(f"parallel({var}): the kernel is bound to GPU blocks and threads")
    return _mark(LoopKind.PARALLEL)(s, var)


def vectorize(s: Stmt, var: str, lanes: int) -> Stmt:
    """Run the loop's body once with `lanes`-wide vectors; its extent must be at most `lanes`
    (a constant, or `min(lanes, ...)` from a split). Vector loops do not nest."""
    def f(lp: For) -> Stmt:
        what = f"vectorize({var}, {lanes})"
        if lp.kind != LoopKind.SERIAL:
            raise ScheduleError(f"{what}: '{var}' is already {lp.kind.value}")
        ext = lp.extent
        ok = _at_most(ext, lanes)
        if not ok:
            raise ScheduleError(f"{what}: extent {ext!r} may exceed {lanes} lanes; split it first")
        if any(isinstance(x, For) and x.kind == LoopKind.VECTOR for x in walk(lp.body)):
            raise ScheduleError(f"{what}: a vector loop is already inside '{var}'")
        for x in walk(lp.body):
            if isinstance(x, Store) and var in free_vars(x.value) and \
                    not any(var in free_vars(i) for i in x.index):
                raise ScheduleError(f"{what}: the store to {x.buf.name} would write one element "
                                    "from every lane (a reduction over the loop)")
        return For(lp.var, lp.extent, lp.body, LoopKind.VECTOR, lanes)
    if not isinstance(lanes, int) or lanes < 1:
        raise ScheduleError(f"vectorize({var}, {lanes}): lanes must be a positive integer")
    out = _apply(s, var, f, f"vectorize({var}, {lanes})")
    vecs = [x for x in walk(out) if isinstance(x, For) and x.kind == LoopKind.VECTOR]
    if any(v.var.name != var and _contains(v, var) for v in vecs):
        raise ScheduleError(f"vectorize({var}, {lanes}): '{var}' is inside another vector loop")
    return out


def _at_most(e: Expr, n: int) -> bool:
    """e <= n for every value of its variables: a constant, or a min() with such an operand."""
    if isinstance(e, Const):
        return e.value <= n  # type: ignore[operator]
    return isinstance(e, Call) and e.fn == "min" and any(_at_most(a, n) for a in e.args)


def _contains(lp: For, var: str) -> bool:
    return any(isinstance(x, For) and x.var.name == var for x in walk(lp.body))


BIND_KINDS = {k.value: k for k in LoopKind if k.is_block or k.is_thread}


def bind(s: Stmt, var: str, axis: str) -> Stmt:
    """GPU: the loop's iterations become thread blocks (block.x/y/z) or threads of a block
    (thread.x/y/z); the extent must be a constant (it sets the launch configuration)."""
    kind = BIND_KINDS.get(axis)
    if kind is None:
        raise ScheduleError(f"bind({var}, {axis}): bind to one of {', '.join(BIND_KINDS)}")
    used = {x.kind for x in walk(s) if isinstance(x, For)}
    if kind in used:
        raise ScheduleError(f"bind({var}, {axis}): a loop is already bound to {axis}")
    if LoopKind.PARALLEL in used:
        raise ScheduleError(f"bind({var}, {axis}): the kernel has a CPU parallel loop")

    def f(lp: For) -> Stmt:
        if lp.kind != LoopKind.SERIAL or not isinstance(lp.extent, Const):
            raise ScheduleError(f"bind({var}, {axis}): needs a serial loop of constant extent")
        return For(lp.var, lp.extent, lp.body, kind)
    return _apply(s, var, f, f"bind({var}, {axis})")


PRIMITIVES: dict[str, Callable[..., Stmt]] = {
    "split": split, "fuse": fuse, "reorder": reorder, "vectorize": vectorize,
    "unroll": unroll, "parallel": parallel, "bind": bind, "compute_at": compute_at,
    "block_reduce": block_reduce}


def apply_step(body: Stmt, st: Step) -> Stmt:
    fn = PRIMITIVES.get(st.name)
    if fn is None:
        raise ScheduleError(f"unknown schedule step '{st.name}' (steps: "
                            f"{', '.join(PRIMITIVES)})")
    try:
        return fn(body, *st.args, **dict(st.kwargs))
    except TypeError as e:
        raise ScheduleError(f"{st}: bad arguments ({e})") from None


def apply_steps(k: Kernel, steps: tuple[Step, ...] | list[Step]) -> Kernel:
    """The kernel with `steps` applied in order, recorded as its trace."""
    from dataclasses import replace

    body = k.body
    for st in steps:
        try:
            body = apply_step(body, st)
        except ScheduleError as e:
            raise ScheduleError(f"kernel {k.name}: {e}") from None
    return replace(k, body=body, trace=k.trace + tuple(steps))
