"""Lowering: a fused group's compute definitions inlined into one loop nest (an unscheduled
Kernel), the input of every schedule.

`Inliner` substitutes each producer's definition into its consumer's loads, so fused
intermediates never reach memory. `build_nest` wraps the group's inlined output expression in
one loop per output axis (axes of extent 1 become index 0) and stores it; reductions stay
`Reduce` expressions until the schedule's `compute_at` step.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from minicc.errors import CodegenError
from minicc.ir.compute import Compute, Const, Expr, Load, Var, cast
from minicc.ir.graph import Op, Value
from minicc.ir.loops.exprs import map_expr, rename_reductions, simplify, substitute
from minicc.ir.loops.nodes import BufLoad, Buffer, For, Kernel, Stmt, Store
from minicc.ir.passes.fuse import Group
from minicc.ir.registry import full_attrs, get_op
from minicc.ir.types import DType

I64 = DType.I64


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
                 stop: Op | None = None,
                 stop_expr: Callable[[tuple[Expr, ...]], Expr] | None = None):
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


def leaf_loader(bufs: Mapping[Value, Buffer], consts: Mapping[Value, np.ndarray]
                ) -> Callable[[Value, tuple[Expr, ...]], Expr]:
    """Outside values: one-value constants as immediates, everything else from its buffer."""
    def leaf(v: Value, idx: tuple[Expr, ...]) -> Expr:
        c = const_scalar(v, consts)
        return c if c is not None else BufLoad(bufs[v], idx, v.type.dtype)
    return leaf


def kernel_params(group: Group, bufs: Mapping[Value, Buffer],
                  consts: Mapping[Value, np.ndarray]) -> tuple[tuple[Buffer, ...],
                                                               tuple[str, ...]]:
    """The group's inputs (constants as weights; one-value constants are immediates, not
    parameters), then its output."""
    params, roles = [], []
    for v in group.inputs():
        if const_scalar(v, consts) is not None:
            continue
        params.append(bufs[v])
        roles.append("weight" if v in consts else "in")
    params.append(bufs[group.output])
    roles.append("out")
    return tuple(params), tuple(roles)


def group_flops(group: Group) -> int:
    return sum(get_op(op.kind).cost([v.type for v in op.inputs], [v.type for v in op.outputs],
                                    full_attrs(op.kind, op.attrs)).flops for op in group.ops)


def build_nest(name: str, group: Group, bufs: Mapping[Value, Buffer],
               consts: Mapping[Value, np.ndarray]) -> Kernel:
    """The group as an unscheduled loop nest: a loop per output axis of extent > 1 (one loop of
    extent 1 when there is none), the inlined definition stored at every point."""
    out = bufs[group.output]
    axes = [Var(f"i{k}") for k in range(len(out.shape))]
    body = simplify(Inliner(group, leaf_loader(bufs, consts)).expr(group.root, axes))
    unit = {axes[k].name: Const(0, I64) for k, d in enumerate(out.shape) if d == 1}
    body = substitute(body, unit)
    index = tuple(Const(0, I64) if axes[k].name in unit else axes[k]
                  for k in range(len(out.shape)))
    loops = [(axes[k], d) for k, d in enumerate(out.shape) if d != 1]
    stmt: Stmt = Store(out, index, cast(body, out.dtype))
    if not loops:
        loops = [(Var("i0"), 1)]
    for v, d in reversed(loops):
        stmt = For(v, Const(d, I64), stmt)
    params, roles = kernel_params(group, bufs, consts)
    return Kernel(name, params, roles, stmt, flops=group_flops(group))


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
