"""Converters for elementwise ONNX ops: unary math, activations, binary arithmetic and logic,
comparisons, Cast/CastLike, Clip, Where, and the variadic Sum/Mean/Max/Min."""

from __future__ import annotations

from typing import Sequence

from minicc.frontend.context import NodeContext, onnx_dtype
from minicc.frontend.registry import converter
from minicc.ir.graph import Value
from minicc.ir.types import DType

_UNARY = {
    "Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
    "Reciprocal": "reciprocal", "Floor": "floor", "Ceil": "ceil", "Tanh": "tanh",
    "Sigmoid": "sigmoid", "Erf": "erf", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin",
    "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh",
    "Acosh": "acosh", "Atanh": "atanh", "Sign": "sign", "Relu": "relu", "Not": "not",
    "IsNaN": "isnan", "Softplus": "softplus", "Softsign": "softsign", "HardSwish": "hard_swish",
    "Mish": "mish", "BitwiseNot": "bitnot", "Round": "round",
}


@converter(list(_UNARY), since=1)
def unary_v1(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op(_UNARY[ctx.node.op_type], [ctx.input(0)])]


_ACT = {"LeakyRelu": ("leaky_relu", {"alpha": 0.01}), "Elu": ("elu", {"alpha": 1.0}),
        "Selu": ("selu", {"alpha": 1.67326319217681884765625,
                          "gamma": 1.05070102214813232421875}),
        "Celu": ("celu", {"alpha": 1.0}), "HardSigmoid": ("hard_sigmoid", {"alpha": 0.2,
                                                                          "beta": 0.5}),
        "ThresholdedRelu": ("thresholded_relu", {"alpha": 1.0}),
        "Shrink": ("shrink", {"bias": 0.0, "lambd": 0.5}),
        "Gelu": ("gelu", {"approximate": "none"})}


@converter(list(_ACT), since=1)
def activation_v1(ctx: NodeContext) -> Sequence[Value]:
    kind, defaults = _ACT[ctx.node.op_type]
    attrs = {k: ctx.attr(k, d) for k, d in defaults.items()}
    return [ctx.op(kind, [ctx.input(0)], attrs)]


@converter("IsInf", since=10)
def isinf_v10(ctx: NodeContext) -> Sequence[Value]:
    neg, pos = ctx.attr("detect_negative", 1), ctx.attr("detect_positive", 1)
    x = ctx.input(0)
    if neg and pos:
        return [ctx.op("isinf", [x])]
    if not neg and not pos:
        return [ctx.op("and", [ctx.op("isinf", [x], out=None),
                               ctx.op("isnan", [x], out=None)])]
    y = ctx.op("isinf", [x], out=None)
    zero = ctx.scalar(0, x.type.dtype)
    sign = ctx.op("gt" if pos else "lt", [x, zero], out=None)
    return [ctx.op("and", [y, sign])]


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Equal": "eq",
           "Less": "lt", "Greater": "gt", "LessOrEqual": "le", "GreaterOrEqual": "ge",
           "And": "and", "Or": "or", "Xor": "xor", "BitwiseAnd": "bitand",
           "BitwiseOr": "bitor", "BitwiseXor": "bitxor"}


@converter(list(_BINARY), since=7)
def binary_v7(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op(_BINARY[ctx.node.op_type], [ctx.input(0), ctx.input(1)])]


def legacy_broadcast(ctx: NodeContext, a: Value, b: Value) -> Value:
    """Opsets before 7: with broadcast=1 and `axis`, b's dims align with a's from `axis` on."""
    if not ctx.attr("broadcast", 0) or not ctx.has_attr("axis"):
        return b
    r, rb = a.type.rank, b.type.rank
    axis = ctx.attr("axis") % max(r, 1)
    shape = [1] * axis + list(b.type.shape) + [1] * (r - axis - rb)
    if len(shape) != r:
        raise ctx.error(f"cannot broadcast {b.type} into {a.type} at axis {axis}")
    return ctx.op("reshape", [b], {"shape": shape}, out=None)


_LEGACY = ["Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "And", "Or", "Xor"]


@converter(_LEGACY, since=1)
def binary_v1(ctx: NodeContext) -> Sequence[Value]:
    a = ctx.input(0)
    return [ctx.op(_BINARY[ctx.node.op_type], [a, legacy_broadcast(ctx, a, ctx.input(1))])]


@converter("Pow", since=1)
def pow_v1(ctx: NodeContext) -> Sequence[Value]:
    a = ctx.input(0)
    return [ctx.op("pow", [a, legacy_broadcast(ctx, a, ctx.input(1))])]


@converter("Swish", since=24)
def swish_v24(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    alpha = ctx.attr("alpha", 1.0)
    ax = x if alpha == 1.0 else ctx.op("mul", [x, ctx.scalar(alpha, x.type.dtype)], out=None)
    return [ctx.op("mul", [x, ctx.op("sigmoid", [ax], out=None)])]


@converter("PRelu", since=1)
def prelu_v7(ctx: NodeContext) -> Sequence[Value]:
    x, slope = ctx.input(0), ctx.input(1)
    # ONNX allows a slope of shape [C] for x [N,C,H,W] only through unidirectional broadcast;
    # models exported from frameworks use [C,1,1]. A 1-D slope matching dim 1 is reshaped.
    if slope.type.rank == 1 and x.type.rank > 2 and slope.type.shape[0] == x.type.shape[1] \
            and slope.type.shape[0] != x.type.shape[-1]:
        slope = ctx.op("reshape", [slope], {"shape": [-1] + [1] * (x.type.rank - 2)}, out=None)
    return [ctx.op("prelu", [x, slope])]


@converter("Pow", since=7)
def pow_v7(ctx: NodeContext) -> Sequence[Value]:
    x, y = ctx.input(0), ctx.input(1)
    if y.type.dtype != x.type.dtype:
        y = ctx.op("cast", [y], {"to": x.type.dtype}, out=None)
    c = ctx.s.b.const_value(y)
    if c is not None and c.size == 1 and x.type.dtype.is_float:
        e = float(c.reshape(-1)[0])
        if e == 2.0:  # x*x is exact and what every backend wants
            return [ctx.op("mul", [x, x])]
        if e == 0.5:
            return [ctx.op("sqrt", [x])]
    return [ctx.op("pow", [x, y])]


@converter("Mod", since=10)
def mod_v10(ctx: NodeContext) -> Sequence[Value]:
    fmod = ctx.attr("fmod", 0)
    return [ctx.op("fmod" if fmod else "mod", [ctx.input(0), ctx.input(1)])]


@converter("BitShift", since=11)
def bitshift_v11(ctx: NodeContext) -> Sequence[Value]:
    d = ctx.req_attr("direction")
    return [ctx.op("shl" if d == "LEFT" else "shr", [ctx.input(0), ctx.input(1)])]


_VARIADIC = {"Sum": "add", "Max": "max", "Min": "min", "Mean": "add"}


@converter(list(_VARIADIC), since=1)
def variadic_v1(ctx: NodeContext) -> Sequence[Value]:
    xs = ctx.inputs()
    kind = _VARIADIC[ctx.node.op_type]
    if not xs:
        raise ctx.error("needs at least one input")
    mean = ctx.node.op_type == "Mean"
    if len(xs) == 1:
        return [xs[0]]
    acc = xs[0]
    for i, x in enumerate(xs[1:]):
        last = i == len(xs) - 2 and not mean
        acc = ctx.op(kind, [acc, x], out=0 if last else None)
    if mean:
        n = ctx.scalar(len(xs), acc.type.dtype)
        acc = ctx.op("div", [acc, n])
    return [acc]


def _cast(ctx: NodeContext, to: DType) -> Value:
    """cast, or the host's convert where either side is a storage-only type (bf16, float8,
    float4, int4, int2), with Cast's saturate and round_mode."""
    x = ctx.input(0)
    if not (to.storage_only or x.type.dtype.storage_only):
        return ctx.op("cast", [x], {"to": to})
    return ctx.op("convert", [x], {"to": to, "saturate": bool(ctx.attr("saturate", 1)),
                                   "round_mode": ctx.attr("round_mode", "up")})


@converter("Cast", since=6)
def cast_v6(ctx: NodeContext) -> Sequence[Value]:
    return [_cast(ctx, onnx_dtype(ctx.req_attr("to"), f"Cast node '{ctx.name}'"))]


@converter("BitCast", since=26)
def bitcast_v26(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("bitcast", [ctx.input(0)],
                   {"to": onnx_dtype(ctx.req_attr("to"), f"BitCast node '{ctx.name}'")})]


@converter("CastLike", since=15)
def castlike_v15(ctx: NodeContext) -> Sequence[Value]:
    return [_cast(ctx, ctx.type(1).dtype)]


@converter("Clip", since=6)
def clip_v6(ctx: NodeContext) -> Sequence[Value]:
    attrs = {k: ctx.attr(k) for k in ("min", "max") if ctx.has_attr(k)}
    return [ctx.op("clip", [ctx.input(0)], attrs)]


@converter("Clip", since=11)
def clip_v11(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    lo, hi = ctx.const(1), ctx.const(2)
    attrs = {}
    dynamic = (ctx.has(1) and lo is None) or (ctx.has(2) and hi is None)
    if dynamic:  # bounds computed at run time: max/min ops
        y = x
        if ctx.has(1):
            y = ctx.op("max", [y, ctx.input(1)], out=None if ctx.has(2) else 0)
        if ctx.has(2):
            y = ctx.op("min", [y, ctx.input(2)])
        return [y]
    if lo is not None:
        attrs["min"] = float(lo.reshape(-1)[0])
    if hi is not None:
        attrs["max"] = float(hi.reshape(-1)[0])
    if x.type.dtype.is_int and attrs:
        # float bounds are exact for the integer ranges models use, but not for all of int64:
        big = [v for v in attrs.values() if abs(v) >= 2 ** 53]
        if big:
            raise ctx.error(f"integer clip bound {big[0]} is not exactly representable")
    return [ctx.op("clip", [x], attrs)]


@converter("Where", since=9)
def where_v9(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("where", [ctx.input(0), ctx.input(1), ctx.input(2)])]

