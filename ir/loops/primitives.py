"""Schedule primitives: pure functions Stmt -> Stmt on loop nests, recorded in a trace.

    for i in 0..100 {S(i)}   --split(i, 16)-->   for i.o in 0..7 { for i.i in 0..min(16, 100 - i.o*16)
                                                     { S(i.o*16 + i.i) } }
    for i in 0..A { for j in 0..B {S(i, j)} }   --fuse(i, j)-->   for i_j in 0..A*B
                                                                  { S(i_j // B, i_j % B) }
    reorder(i, j): swaps perfectly nested loops; vectorize / unroll / parallel mark a loop.

A `Schedule` applies primitives to a kernel and keeps the trace; `replay` re-applies a trace to
the unscheduled kernel (TVM's `sch.trace`), which the tests check gives the same loop nest.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from minicc.errors import ScheduleError
from minicc.ir.compute import Const, Expr, Var, call
from minicc.ir.loops.exprs import simplify, substitute
from minicc.ir.loops.nodes import Allocate, For, IfThen, Kernel, LoopKind, Seq, Stmt, Store
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
    if isinstance(s, (IfThen,)):
        t, hit = _on_loop(s.then, var, f)
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


def split(s: Stmt, var: str, factor: int) -> Stmt:
    if factor < 1:
        raise ScheduleError(f"split({var}, {factor}): the factor must be >= 1")

    def f(lp: For) -> Stmt:
        o, i = Var(f"{var}.o"), Var(f"{var}.i")
        n = lp.extent
        outer = simplify(call("floordiv", call("add", n, Const(factor - 1, I64)),
                              Const(factor, I64)))
        exact = isinstance(n, Const) and n.value % factor == 0  # type: ignore[operator]
        inner_ext = Const(factor, I64) if exact else simplify(
            call("min", Const(factor, I64), call("sub", n, call("mul", o, Const(factor, I64)))))
        body = subst_stmt(lp.body, {var: simplify(call("add", call("mul", o, Const(factor, I64)),
                                                       i))})
        return For(o, outer, For(i, inner_ext, body), lp.kind)
    return _apply(s, var, f, f"split({var}, {factor})")


def fuse(s: Stmt, outer: str, inner: str) -> Stmt:
    def f(lp: For) -> Stmt:
        if not isinstance(lp.body, For) or lp.body.var.name != inner:
            raise ScheduleError(f"fuse({outer}, {inner}): '{inner}' is not directly inside "
                                f"'{outer}'")
        b = lp.body
        if not isinstance(b.extent, Const):
            raise ScheduleError(f"fuse({outer}, {inner}): '{inner}' has a variable extent")
        q = Var(f"{outer}_{inner}")
        body = subst_stmt(b.body, {outer: call("floordiv", q, b.extent),
                                   inner: call("mod", q, b.extent)})
        return For(q, simplify(call("mul", lp.extent, b.extent)), body, lp.kind)
    return _apply(s, outer, f, f"fuse({outer}, {inner})")


def reorder(s: Stmt, outer: str, inner: str) -> Stmt:
    """Swap two perfectly nested loops (legal when neither extent depends on the other)."""
    def f(lp: For) -> Stmt:
        if not isinstance(lp.body, For) or lp.body.var.name != inner:
            raise ScheduleError(f"reorder({outer}, {inner}): not perfectly nested")
        b = lp.body
        if outer in repr(b.extent):
            raise ScheduleError(f"reorder({outer}, {inner}): the extent of '{inner}' depends "
                                f"on '{outer}'")
        return For(b.var, b.extent, For(lp.var, lp.extent, b.body, lp.kind, lp.lanes),
                   b.kind, b.lanes)
    return _apply(s, outer, f, f"reorder({outer}, {inner})")


def _mark(kind: LoopKind, lanes: int = 0) -> Callable[[Stmt, str], Stmt]:
    def prim(s: Stmt, var: str) -> Stmt:
        def f(lp: For) -> Stmt:
            if kind == LoopKind.UNROLL and not isinstance(lp.extent, Const):
                raise ScheduleError(f"unroll({var}): the extent is not a constant")
            if kind == LoopKind.VECTOR and isinstance(lp.extent, Const) and \
                    lp.extent.value > lanes:  # type: ignore[operator]
                raise ScheduleError(f"vectorize({var}): extent {lp.extent.value} > {lanes} "
                                    f"lanes; split it first")
            return For(lp.var, lp.extent, lp.body, kind, lanes)
        return _apply(s, var, f, f"{kind.value}({var})")
    return prim


unroll = _mark(LoopKind.UNROLL)
parallel = _mark(LoopKind.PARALLEL)


def vectorize(s: Stmt, var: str, lanes: int = 16) -> Stmt:
    return _mark(LoopKind.VECTOR, lanes)(s, var)


PRIMITIVES: dict[str, Callable[..., Stmt]] = {
    "split": split, "fuse": fuse, "reorder": reorder, "unroll": unroll, "parallel": parallel,
    "vectorize": vectorize}


@dataclass
class Schedule:
    kernel: Kernel
    trace: list[tuple[str, tuple]] = field(default_factory=list)

    def apply(self, name: str, *args: object) -> Schedule:
        body = PRIMITIVES[name](self.kernel.body, *args)
        self.kernel = replace(self.kernel, body=body, trace=self.kernel.trace + (
            f"{name}({', '.join(map(str, args))})",))
        self.trace.append((name, args))
        return self


def replay(k: Kernel, trace: list[tuple[str, tuple]]) -> Kernel:
    s = Schedule(k)
    for name, args in trace:
        s.apply(name, *args)
    return s.kernel

