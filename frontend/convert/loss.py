"""Converters for the loss ops that appear in exported models and the ONNX suite:
NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, built from gathers and reductions."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.frontend.context import NodeContext
from minicc.frontend.registry import converter
from minicc.ir.graph import Value


def nll(ctx: NodeContext, logp: Value, target: Value, weight: Value | None, out: int) -> Value:
    """-logp[n, target[n, ...], ...] * weight[target], reduced as the node asks."""
    reduction = ctx.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise ctx.error(f"unknown reduction '{reduction}'")
    dt = logp.type.dtype
    t = target
    mask = None
    if ctx.has_attr("ignore_index"):
        ii = ctx.scalar(ctx.attr("ignore_index"), t.type.dtype)
        mask = ctx.op("not", [ctx.op("eq", [t, ii], out=None)], out=None)
        t = ctx.op("where", [mask, t, ctx.scalar(0, t.type.dtype)], out=None)
    tshape = list(t.type.shape)
    idx = ctx.op("reshape", [t], {"shape": tshape[:1] + [1] + tshape[1:]}, out=None)
    picked = ctx.op("gather_elements", [logp, idx], {"axis": 1}, out=None)
    picked = ctx.op("reshape", [picked], {"shape": tshape}, out=None)
    w = ctx.op("gather", [weight, t], {"axis": 0}, out=None) if weight is not None else None
    if mask is not None:
        m = ctx.op("cast", [mask], {"to": dt}, out=None)
        w = m if w is None else ctx.op("mul", [w, m], out=None)
    loss = ctx.op("neg", [picked], out=None)
    if w is not None:
        loss = ctx.op("mul", [loss, w], out=None if reduction != "none" else out)
    if reduction == "none":
        return loss if w is not None else ctx.op("neg", [picked], out=out)
    axes = list(range(loss.type.rank))
    total = ctx.op("reduce_sum", [loss], {"axes": axes, "keepdims": False},
                   out=out if reduction == "sum" else None)
    if reduction == "sum":
        return total
    if w is None:
        n = int(np.prod([int(d) for d in tshape]))  # type: ignore[arg-type]
        return ctx.op("div", [total, ctx.scalar(float(n), dt)], out=out)
    wsum = ctx.op("reduce_sum", [w if w.type.shape == loss.type.shape else
                                 ctx.op("broadcast_to", [w], {"shape": tshape}, out=None)],
                  {"axes": axes, "keepdims": False}, out=None)
    return ctx.op("div", [total, wsum], out=out)


@converter("NegativeLogLikelihoodLoss", since=12)
def nll_loss_v12(ctx: NodeContext) -> Sequence[Value]:
    return [nll(ctx, ctx.input(0), ctx.input(1), ctx.opt(2), 0)]


@converter("SoftmaxCrossEntropyLoss", since=12)
def sce_loss_v12(ctx: NodeContext) -> Sequence[Value]:
    scores = ctx.input(0)
    logp = ctx.op("log_softmax", [scores], {"axis": 1}, out=1 if ctx.out_name(1) else None)
    return [nll(ctx, logp, ctx.input(1), ctx.opt(2), 0), logp]
