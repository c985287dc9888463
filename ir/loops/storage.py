"""Storage precision: a kernel rewritten to keep some of its float32 tensors as float16 in
memory while every computation stays float32 (`--precision fp16`). A load from such a buffer
becomes a load of f16 widened to f32 (vcvtph2ps with F16C); a store narrows its value to f16
(round to nearest even). Registers, accumulators and per-thread scratch keep f32.
"""

from __future__ import annotations

from typing import Mapping

from minicc.ir.compute import Cast, Expr
from minicc.ir.loops.exprs import map_expr
from minicc.ir.loops.nodes import (Allocate, BufLoad, Buffer, For, IfThen, Kernel, Prefetch,
                                   Seq, Stmt, Store)
from minicc.ir.types import DType

F16, F32 = DType.F16, DType.F32


def half_buffer(b: Buffer) -> Buffer:
    return Buffer(b.name, F16, b.shape, b.scope)


def _expr(e: Expr, new: Mapping[Buffer, Buffer]) -> Expr:
    def f(x: Expr) -> Expr | None:
        if isinstance(x, BufLoad) and x.buf in new:
            idx = tuple(map_expr(i, f) for i in x.index)
            return Cast(BufLoad(new[x.buf], idx, F16), F32)
        return None
    return map_expr(e, f)


def _stmt(s: Stmt, new: Mapping[Buffer, Buffer]) -> Stmt:
    if isinstance(s, For):
        return For(s.var, _expr(s.extent, new), _stmt(s.body, new), s.kind, s.lanes)
    if isinstance(s, Store):
        idx = tuple(_expr(i, new) for i in s.index)
        v = _expr(s.value, new)
        if s.buf in new:
            return Store(new[s.buf], idx, Cast(v, F16))
        return Store(s.buf, idx, v)
    if isinstance(s, Prefetch):
        return Prefetch(new.get(s.buf, s.buf), tuple(_expr(i, new) for i in s.index))
    if isinstance(s, Seq):
        return Seq(tuple(_stmt(x, new) for x in s.stmts))
    if isinstance(s, IfThen):
        return IfThen(_expr(s.cond, new), _stmt(s.then, new),
                      _stmt(s.else_, new) if s.else_ is not None else None)
    if isinstance(s, Allocate):
        return Allocate(s.buf, _stmt(s.body, new))
    return s


def store_half(k: Kernel, which: set[Buffer]) -> tuple[Kernel, dict[Buffer, Buffer]]:
    """`k` with the f32 parameters in `which` stored as f16; and the old -> new buffers."""
    new = {b: half_buffer(b) for b in k.params if b in which and b.dtype == F32}
    if not new:
        return k, {}
    return Kernel(k.name, tuple(new.get(b, b) for b in k.params), k.roles, _stmt(k.body, new),
                  k.trace, k.knobs, k.flops, k.schedule), new
