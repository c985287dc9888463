"""Converters for ONNX reductions (ReduceX, ArgMax/ArgMin, CumSum), with axes given as an
attribute (older opsets) or a constant input (ReduceSum 13+, the others 18+)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.frontend.context import NodeContext
from minicc.frontend.registry import converter
from minicc.ir.graph import Value

_REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def _axes(ctx: NodeContext, from_input: bool) -> list[int] | None:
    """Normalized axes; None means 'no-op' (empty axes with noop_with_empty_axes)."""
    rank = ctx.type(0).rank
    if from_input:
        ax = [int(a) for a in ctx.require_const(1, "axes").reshape(-1)] if ctx.has(1) else []
    else:
        ax = list(ctx.attr("axes", []))
    if not ax:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        return list(range(rank))
    for a in ax:
        if not -rank <= a < max(rank, 1):
            raise ctx.error(f"axis {a} out of range for {ctx.type(0)}")
    return sorted({a % rank if rank else 0 for a in ax})


def _reduce(ctx: NodeContext, from_input: bool) -> Value:
    x = ctx.input(0)
    ax = _axes(ctx, from_input)
    if ax is None:
        return x
    if x.type.rank == 0:
        ax = []
    kd = bool(ctx.attr("keepdims", 1))
    op = ctx.node.op_type
    if not ax:  # reducing a scalar: the value itself
        return x
    attrs = {"axes": ax, "keepdims": kd}

    def red(kind: str, v: Value, out: int | None = 0) -> Value:
        return ctx.op(kind, [v], attrs, out=out)

    if op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"):
        kind = {"ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max",
                "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod"}[op]
        if x.type.dtype.value == "bool" and kind in ("reduce_max", "reduce_min"):
            xi = ctx.op("cast", [x], {"to": "u8"}, out=None)
            return ctx.op("cast", [red(kind, xi, None)], {"to": "bool"})
        return red(kind, x)
    if op == "ReduceL1":
        return red("reduce_sum", ctx.op("abs", [x], out=None))
    if op == "ReduceSumSquare":
        return red("reduce_sum", ctx.op("mul", [x, x], out=None))
    if op == "ReduceL2":
        s = red("reduce_sum", ctx.op("mul", [x, x], out=None), None)
        if x.type.dtype.is_int:
            f = ctx.op("cast", [s], {"to": "f64"}, out=None)
            return ctx.op("cast", [ctx.op("sqrt", [f], out=None)], {"to": x.type.dtype})
        return ctx.op("sqrt", [s])
    if op == "ReduceLogSum":
        return ctx.op("log", [red("reduce_sum", x, None)])
    # ReduceLogSumExp, stable: m + log(sum(exp(x - m)))
    m = ctx.op("reduce_max", [x], {"axes": ax, "keepdims": True}, out=None)
    mf = m
    e = ctx.op("exp", [ctx.op("sub", [x, mf], out=None)], out=None)
    s = ctx.op("log", [red("reduce_sum", e, None)], out=None)
    mk = mf if kd else ctx.op("reshape", [mf], {"shape": list(s.type.shape)}, out=None)
    return ctx.op("add", [s, mk])


@converter(_REDUCE, since=1)
def reduce_v1(ctx: NodeContext) -> Sequence[Value]:
    return [_reduce(ctx, from_input=False)]


@converter("ReduceSum", since=13)
def reduce_sum_v13(ctx: NodeContext) -> Sequence[Value]:
    return [_reduce(ctx, from_input=True)]


@converter([r for r in _REDUCE if r != "ReduceSum"], since=18)
def reduce_v18(ctx: NodeContext) -> Sequence[Value]:
    return [_reduce(ctx, from_input=True)]


@converter(["ArgMax", "ArgMin"], since=1)
def argmax_v1(ctx: NodeContext) -> Sequence[Value]:
    kind = "argmax" if ctx.node.op_type == "ArgMax" else "argmin"
    return [ctx.op(kind, [ctx.input(0)], {"axis": ctx.attr("axis", 0),
                                          "keepdims": bool(ctx.attr("keepdims", 1)),
                                          "select_last_index":
                                              bool(ctx.attr("select_last_index", 0))})]


@converter("CumSum", since=11)
def cumsum_v11(ctx: NodeContext) -> Sequence[Value]:
    axis = int(np.asarray(ctx.require_const(1, "axis")).reshape(-1)[0])
    return [ctx.op("cumsum", [ctx.input(0)], {"axis": axis,
                                              "exclusive": bool(ctx.attr("exclusive", 0)),
                                              "reverse": bool(ctx.attr("reverse", 0))})]
