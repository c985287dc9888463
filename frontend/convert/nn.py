"""Converters for neural-network ONNX ops: Conv, ConvTranspose, pooling, normalizations, MatMul,
Gemm, Einsum, Softmax/LogSoftmax/Hardmax."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.frontend.context import NodeContext
from minicc.frontend.registry import converter
from minicc.ir.graph import Value
from minicc.ir.types import Dim


def resolve_auto_pad(ctx: NodeContext, spatial: Sequence[Dim], kernel: Sequence[int],
                     strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """Explicit pads (begins then ends) for ONNX's auto_pad."""
    mode = ctx.attr("auto_pad", "NOTSET")
    nd = len(kernel)
    if mode in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * 2 * nd))
        if len(pads) != 2 * nd:
            raise ctx.error(f"pads {pads} need {2 * nd} entries")
        return pads
    if mode == "VALID":
        return [0] * 2 * nd
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.error(f"unknown auto_pad '{mode}'")
    begins, ends = [], []
    for i in range(nd):
        n = spatial[i]
        if not isinstance(n, int):
            raise ctx.error(f"auto_pad={mode} needs static spatial dims, got {list(spatial)}; "
                            "give static input shapes")
        out = -(-n // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - n)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _spatial_attrs(ctx: NodeContext, nd: int) -> tuple[list[int], list[int]]:
    strides = list(ctx.attr("strides", [1] * nd))
    dil = list(ctx.attr("dilations", [1] * nd))
    if len(strides) != nd or len(dil) != nd:
        raise ctx.error(f"strides {strides} / dilations {dil} need {nd} entries")
    return strides, dil


@converter("Conv", since=1)
def conv_v1(ctx: NodeContext) -> Sequence[Value]:
    x, w = ctx.input(0), ctx.input(1)
    if x.type.rank < 3:
        raise ctx.error(f"input must be [N,C,spatial...], got {x.type}")
    nd = x.type.rank - 2
    kernel = [int(k) for k in w.type.shape[2:]]  # type: ignore[arg-type]
    strides, dil = _spatial_attrs(ctx, nd)
    pads = resolve_auto_pad(ctx, x.type.shape[2:], kernel, strides, dil)
    ins = [x, w] + ([ctx.input(2)] if ctx.has(2) else [])
    return [ctx.op("conv", ins, {"strides": strides, "dilations": dil, "pads": pads,
                                 "group": ctx.attr("group", 1)})]


@converter("ConvTranspose", since=1)
def conv_transpose_v1(ctx: NodeContext) -> Sequence[Value]:
    x, w = ctx.input(0), ctx.input(1)
    nd = x.type.rank - 2
    kernel = [int(k) for k in w.type.shape[2:]]  # type: ignore[arg-type]
    strides, dil = _spatial_attrs(ctx, nd)
    outpad = list(ctx.attr("output_padding", [0] * nd))
    out_shape = ctx.attr("output_shape")
    mode = ctx.attr("auto_pad", "NOTSET")
    if out_shape is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
        spatial = x.type.shape[2:]
        if not all(isinstance(d, int) for d in spatial):
            raise ctx.error("output_shape/auto_pad need static spatial dims")
        if out_shape is None:
            out_shape = [int(d) * s for d, s in zip(spatial, strides)]  # type: ignore
        out_shape = list(out_shape)[-nd:]
        begins, ends = [], []
        for i in range(nd):
            total = (strides[i] * (int(spatial[i]) - 1) + outpad[i] + (kernel[i] - 1) * dil[i]
                     + 1 - out_shape[i])
            if total < 0:  # the requested output is larger: grow output_padding instead
                outpad[i] -= total
                total = 0
            half = total // 2
            if mode == "SAME_UPPER":
                begins.append(half)
                ends.append(total - half)
            else:
                begins.append(total - half)
                ends.append(half)
        pads = begins + ends
    elif mode == "VALID":
        pads = [0] * 2 * nd
    else:
        pads = list(ctx.attr("pads", [0] * 2 * nd))
    ins = [x, w] + ([ctx.input(2)] if ctx.has(2) else [])
    return [ctx.op("conv_transpose", ins, {"strides": strides, "dilations": dil, "pads": pads,
                                           "group": ctx.attr("group", 1),
                                           "output_padding": outpad})]


def _pool(ctx: NodeContext, kind: str) -> Value:
    x = ctx.input(0)
    nd = x.type.rank - 2
    kernel = list(ctx.req_attr("kernel_shape"))
    if len(kernel) != nd:
        raise ctx.error(f"kernel_shape {kernel} does not match input {x.type}")
    strides, dil = _spatial_attrs(ctx, nd)
    pads = resolve_auto_pad(ctx, x.type.shape[2:], kernel, strides, dil)
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dil, "pads": pads,
             "ceil_mode": bool(ctx.attr("ceil_mode", 0))}
    if kind == "avg_pool":
        attrs["count_include_pad"] = bool(ctx.attr("count_include_pad", 0))
    return ctx.op(kind, [x], attrs)


@converter("MaxPool", since=1)
def max_pool_v1(ctx: NodeContext) -> Sequence[Value | None]:
    if ctx.attr("storage_order", 0) and len(ctx.node.output) > 1:
        raise ctx.unsupported("storage_order=1 with an Indices output is not supported")
    return [_pool(ctx, "max_pool"), None]


@converter("AveragePool", since=1)
def avg_pool_v1(ctx: NodeContext) -> Sequence[Value]:
    return [_pool(ctx, "avg_pool")]


@converter(["GlobalAveragePool", "GlobalMaxPool"], since=1)
def global_pool_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    kind = "reduce_mean" if ctx.node.op_type == "GlobalAveragePool" else "reduce_max"
    return [ctx.op(kind, [x], {"axes": list(range(2, x.type.rank)), "keepdims": True})]


@converter("LRN", since=1)
def lrn_v1(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("lrn", [ctx.input(0)], {"size": ctx.req_attr("size"),
                                           "alpha": ctx.attr("alpha", 1e-4),
                                           "beta": ctx.attr("beta", 0.75),
                                           "bias": ctx.attr("bias", 1.0)})]


@converter("BatchNormalization", since=1)
def batch_norm_v1(ctx: NodeContext) -> Sequence[Value | None]:
    if ctx.attr("training_mode", 0):
        raise ctx.unsupported("training_mode=1 is not supported (inference only)")
    if ctx.attr("spatial", 1) != 1:
        raise ctx.unsupported("spatial=0 is not supported")
    ins = [ctx.input(i) for i in range(5)]
    y = ctx.op("batch_norm", ins, {"epsilon": ctx.attr("epsilon", 1e-5)})
    return [y] + [None] * (len(ctx.node.output) - 1)


@converter("InstanceNormalization", since=6)
def instance_norm_v6(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("instance_norm", [ctx.input(0), ctx.input(1), ctx.input(2)],
                   {"epsilon": ctx.attr("epsilon", 1e-5)})]


@converter("LayerNormalization", since=17)
def layer_norm_v17(ctx: NodeContext) -> Sequence[Value | None]:
    x = ctx.input(0)
    ins = [x, ctx.input(1)] + ([ctx.input(2)] if ctx.has(2) else [])
    axis, eps = ctx.attr("axis", -1), ctx.attr("epsilon", 1e-5)
    y = ctx.op("layer_norm", ins, {"axis": axis, "epsilon": eps})
    outs: list[Value | None] = [y, None, None]
    if ctx.out_name(1) or ctx.out_name(2):  # Mean and InvStdDev, computed beside the fused op
        axes = list(range(axis % x.type.rank, x.type.rank))
        mean = ctx.op("reduce_mean", [x], {"axes": axes}, out=1)
        d = ctx.op("sub", [x, mean], out=None)
        var = ctx.op("reduce_mean", [ctx.op("mul", [d, d], out=None)], {"axes": axes}, out=None)
        std = ctx.op("sqrt", [ctx.op("add", [var, ctx.scalar(eps, x.type.dtype)], out=None)],
                     out=None)
        outs[1:] = [mean, ctx.op("reciprocal", [std], out=2)]
    return outs


@converter("RMSNormalization", since=23)
def rms_norm_v23(ctx: NodeContext) -> Sequence[Value]:
    x, scale = ctx.input(0), ctx.input(1)
    axis = ctx.attr("axis", -1) % x.type.rank
    axes = list(range(axis, x.type.rank))
    ms = ctx.op("reduce_mean", [ctx.op("mul", [x, x], out=None)], {"axes": axes}, out=None)
    eps = ctx.scalar(ctx.attr("epsilon", 1e-5), x.type.dtype)
    rms = ctx.op("sqrt", [ctx.op("add", [ms, eps], out=None)], out=None)
    return [ctx.op("mul", [ctx.op("div", [x, rms], out=None), scale])]


@converter("LpNormalization", since=1)
def lp_norm_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    p = ctx.attr("p", 2)
    axes = [ctx.attr("axis", -1) % x.type.rank]
    if p == 1:
        n = ctx.op("reduce_sum", [ctx.op("abs", [x], out=None)], {"axes": axes}, out=None)
    elif p == 2:
        s = ctx.op("reduce_sum", [ctx.op("mul", [x, x], out=None)], {"axes": axes}, out=None)
        n = ctx.op("sqrt", [s], out=None)
    else:
        raise ctx.error(f"p must be 1 or 2, got {p}")
    zero = ctx.scalar(0, x.type.dtype)
    safe = ctx.op("where", [ctx.op("eq", [n, zero], out=None), ctx.scalar(1, x.type.dtype), n],
                  out=None)
    return [ctx.op("div", [x, safe])]


@converter("LpPool", since=2)
def lp_pool_v2(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    p = float(ctx.attr("p", 2))
    nd = x.type.rank - 2
    kernel = list(ctx.req_attr("kernel_shape"))
    strides, dil = _spatial_attrs(ctx, nd)
    pads = resolve_auto_pad(ctx, x.type.shape[2:], kernel, strides, dil)
    xp = ctx.op("pow", [ctx.op("abs", [x], out=None), ctx.scalar(p, x.type.dtype)], out=None)
    avg = ctx.op("avg_pool", [xp], {"kernel_shape": kernel, "strides": strides,
                                    "dilations": dil, "pads": pads, "count_include_pad": True,
                                    "ceil_mode": bool(ctx.attr("ceil_mode", 0))}, out=None)
    n = float(np.prod(kernel))
    s = ctx.op("mul", [avg, ctx.scalar(n, x.type.dtype)], out=None)
    return [ctx.op("pow", [s, ctx.scalar(1.0 / p, x.type.dtype)])]


@converter("GroupNormalization", since=18)
def group_norm_v18(ctx: NodeContext) -> Sequence[Value]:
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    g = ctx.req_attr("num_groups")
    shape = x.type.shape
    if not all(isinstance(d, int) for d in shape[1:]):
        raise ctx.error(f"needs static channel and spatial dims, got {x.type}")
    c = int(shape[1])  # type: ignore[arg-type]
    if c % g:
        raise ctx.error(f"{c} channels not divisible by num_groups {g}")
    per = c // g * int(np.prod(shape[2:]))  # type: ignore[arg-type]
    grouped = ctx.op("reshape", [x], {"shape": [shape[0], g, per]}, out=None)
    ones = ctx.s.b.const(np.ones(per, dtype=x.type.dtype.np))
    normed = ctx.op("layer_norm", [grouped, ones], {"axis": -1,
                                                    "epsilon": ctx.attr("epsilon", 1e-5)},
                    out=None)
    y = ctx.op("reshape", [normed], {"shape": list(shape)}, out=None)
    bshape = [-1] + [1] * (x.type.rank - 2)
    if ctx.opset < 21 and scale.type.shape[0] == g != c:  # v18: per-group scale and bias
        rep = [c // g] + [1] * (x.type.rank - 2)
        scale = ctx.op("reshape", [scale], {"shape": [g, 1] + [1] * (x.type.rank - 2)}, out=None)
        scale = ctx.op("tile", [scale], {"repeats": rep}, out=None)
        bias = ctx.op("reshape", [bias], {"shape": [g, 1] + [1] * (x.type.rank - 2)}, out=None)
        bias = ctx.op("tile", [bias], {"repeats": rep}, out=None)
    scale = ctx.op("reshape", [scale], {"shape": bshape}, out=None)
    bias = ctx.op("reshape", [bias], {"shape": bshape}, out=None)
    return [ctx.op("add", [ctx.op("mul", [y, scale], out=None), bias])]


@converter("MeanVarianceNormalization", since=9)
def mvn_v9(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    axes = [a % x.type.rank for a in ctx.attr("axes", [0, 2, 3])]
    mean = ctx.op("reduce_mean", [x], {"axes": axes}, out=None)
    d = ctx.op("sub", [x, mean], out=None)
    var = ctx.op("reduce_mean", [ctx.op("mul", [d, d], out=None)], {"axes": axes}, out=None)
    eps = ctx.scalar(1e-9, x.type.dtype)
    std = ctx.op("sqrt", [ctx.op("add", [var, eps], out=None)], out=None)
    return [ctx.op("div", [d, std])]


@converter("MatMul", since=1)
def matmul_v1(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("matmul", [ctx.input(0), ctx.input(1)])]


@converter("Gemm", since=1)
def gemm_v1(ctx: NodeContext) -> Sequence[Value]:
    a, b = ctx.input(0), ctx.input(1)
    if a.type.rank != 2 or b.type.rank != 2:
        raise ctx.error(f"A and B must be 2-D, got {a.type} and {b.type}")
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if ctx.attr("transA", 0):
        a = ctx.op("transpose", [a], {"perm": [1, 0]}, out=None)
    if ctx.attr("transB", 0):
        b = ctx.op("transpose", [b], {"perm": [1, 0]}, out=None)
    has_c = ctx.has(2) and beta != 0.0
    y = ctx.op("matmul", [a, b], out=None if (alpha != 1.0 or has_c) else 0)
    if alpha != 1.0:
        y = ctx.op("mul", [y, ctx.scalar(alpha, y.type.dtype)], out=None if has_c else 0)
    if has_c:
        c = ctx.input(2)
        if beta != 1.0:
            c = ctx.op("mul", [c, ctx.scalar(beta, c.type.dtype)], out=None)
        y = ctx.op("add", [y, c])
    return [y]


@converter("Einsum", since=12)
def einsum_v12(ctx: NodeContext) -> Sequence[Value]:
    eq = ctx.req_attr("equation").replace(" ", "")
    return [ctx.op("einsum", ctx.inputs(), {"equation": eq})]


def _coerced_2d(ctx: NodeContext, kind: str, axis: int) -> Value:
    """Softmax-family before opset 13: over the input flattened to 2-D at `axis`."""
    x = ctx.input(0)
    r = x.type.rank
    axis = axis % r if r else 0
    if axis == r - 1:
        return ctx.op(kind, [x], {"axis": -1})
    flat = ctx.op("reshape", [x], {"shape": list(x.type.shape[:axis]) + [-1]}, out=None)
    y = ctx.op(kind, [flat], {"axis": -1}, out=None)
    return ctx.op("reshape", [y], {"shape": list(x.type.shape)})


@converter(["Softmax", "LogSoftmax"], since=1)
def softmax_v1(ctx: NodeContext) -> Sequence[Value]:
    kind = "softmax" if ctx.node.op_type == "Softmax" else "log_softmax"
    return [_coerced_2d(ctx, kind, ctx.attr("axis", 1))]


@converter(["Softmax", "LogSoftmax"], since=13)
def softmax_v13(ctx: NodeContext) -> Sequence[Value]:
    kind = "softmax" if ctx.node.op_type == "Softmax" else "log_softmax"
    return [ctx.op(kind, [ctx.input(0)], {"axis": ctx.attr("axis", -1)})]


def _hardmax(ctx: NodeContext, x: Value, axis: int, out: int | None) -> Value:
    n = x.type.shape[axis]
    if not isinstance(n, int):
        raise ctx.error(f"needs a static size along axis {axis}, got {x.type}")
    idx = ctx.op("argmax", [x], {"axis": axis, "keepdims": True}, out=None)
    iota = ctx.s.b.const(np.arange(n, dtype=np.int64).reshape(
        [n if k == axis else 1 for k in range(x.type.rank)]))
    hot = ctx.op("eq", [idx, iota], out=None)
    return ctx.op("cast", [hot], {"to": x.type.dtype}, out=out)


@converter("Hardmax", since=1)
def hardmax_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    axis = ctx.attr("axis", 1) % max(x.type.rank, 1)
    flat = ctx.op("reshape", [x], {"shape": list(x.type.shape[:axis]) + [-1]}, out=None)
    y = _hardmax(ctx, flat, flat.type.rank - 1, None)
    return [ctx.op("reshape", [y], {"shape": list(x.type.shape)})]


@converter("Hardmax", since=13)
def hardmax_v13(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    return [_hardmax(ctx, x, ctx.attr("axis", -1) % x.type.rank, 0)]
