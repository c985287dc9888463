"""Wide global loads in GPU kernels: what a `vector(W)` loop means there.

In a GPU kernel a `vector(4)` (or `vector(2)`) loop whose body reads one global buffer at W
consecutive elements is one 16-byte (8-byte) access: CUDA renders it as a float4 (float2) load
whose lanes feed the body's W stores, or, around an `async_copy` whose destination is also
consecutive, as one 16-byte (8-byte) cp.async. Such accesses must start at a multiple of W
elements (buffers themselves are 64-byte aligned: the memory plan, the weights block and shared
arrays): the template that writes the loop promises it, and the emulator checks it at every
iteration, because a misaligned wide load faults on the GPU. Any other vector loop of a GPU
kernel is rendered as an unrolled scalar loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from minicc.ir.compute import Call, Cast, Const, Expr, Select
from minicc.ir.loops.exprs import flat_offset, free_vars, linear_coef
from minicc.ir.loops.nodes import AsyncCopy, BufLoad, For, LoopKind, Scope, Store

WIDTHS = (2, 4)


@dataclass(frozen=True)
class Wide:
    """A vector loop that is one wide access: `load` is the global read (its index still holds
    the loop variable)."""

    width: int
    load: BufLoad
    copy: bool                      # the body is an async copy (else a store)


def _global_loads(e: Expr, under_select: bool = False) -> list[tuple[BufLoad, bool]]:
    out: list[tuple[BufLoad, bool]] = []
    if isinstance(e, BufLoad):
        if e.buf.scope not in (Scope.LOCAL, Scope.SHARED):
            out.append((e, under_select))
        return out
    if isinstance(e, Select):
        return (_global_loads(e.cond, under_select) + _global_loads(e.a, True)
                + _global_loads(e.b, True))
    for x in (e.args if isinstance(e, Call) else (e.x,) if isinstance(e, Cast) else ()):
        out.extend(_global_loads(x, under_select))
    return out


def _consecutive(index: tuple[Expr, ...], shape: tuple[int, ...], var: str) -> bool:
    return linear_coef(flat_offset(index, shape), var) == 1


def wide_access(s: For) -> Wide | None:
    """The wide access a GPU kernel's vector loop `s` is, or None (rendered as scalars)."""
    if s.kind != LoopKind.VECTOR or not isinstance(s.extent, Const) or \
            int(s.extent.value) not in WIDTHS:
        return None
    w, var, body = int(s.extent.value), s.var.name, s.body
    if isinstance(body, AsyncCopy):
        if body.src.dtype.itemsize != 4 or body.dst.scope != Scope.SHARED or \
                (body.cond is not None and var in free_vars(body.cond)):
            return None
        if _consecutive(body.src_index, body.src.shape, var) and \
                _consecutive(body.dst_index, body.dst.shape, var):
            return Wide(w, BufLoad(body.src, body.src_index, body.src.dtype), True)
        return None
    if not isinstance(body, Store):
        return None
    loads = _global_loads(body.value)
    if len(loads) != 1 or loads[0][1]:
        return None
    ld = loads[0][0]
    if ld.buf.dtype.itemsize != 4 or not _consecutive(ld.index, ld.buf.shape, var):
        return None
    return Wide(w, ld, False)
