"""Converters for QuantizeLinear and DequantizeLinear (per-tensor, per-axis and blocked),
lowered to float arithmetic, rounding, saturation and casts."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.frontend.context import NodeContext, onnx_dtype
from minicc.frontend.registry import converter
from minicc.ir.graph import Value
from minicc.ir.types import DType


def _align(ctx: NodeContext, p: Value, x: Value) -> Value:
    """Shape a scale or zero point for broadcasting against x: scalar, per-axis or blocked."""
    if p.type.rank == 0 or p.type.numel == 1:
        return p
    r = x.type.rank
    axis = ctx.attr("axis", 1) % r
    if p.type.rank == 1:
        return ctx.op("reshape", [p], {"shape": [-1 if k == axis else 1 for k in range(r)]},
                      out=None)
    block = ctx.attr("block_size", 0)
    n = x.type.shape[axis]
    if not block or not isinstance(n, int):
        raise ctx.error(f"scale {p.type} needs block_size and a static axis for {x.type}")
    idx = ctx.s.b.const(np.arange(n, dtype=np.int64) // block)
    return ctx.op("gather", [p, idx], {"axis": axis}, out=None)


def _check_scale(ctx: NodeContext) -> None:
    """A constant scale must be positive and finite: zero would divide by zero (inf and NaN
    downstream), which onnxruntime refuses too."""
    s = ctx.const(1)
    if s is not None and s.size and not np.all(np.isfinite(s) & (s > 0)):
        bad = s.reshape(-1)[~(np.isfinite(s.reshape(-1)) & (s.reshape(-1) > 0))][0]
        raise ctx.error(f"scale '{ctx.node.input[1]}' holds {float(bad)!r}: a quantization scale "
                        "must be positive and finite")


@converter("QuantizeLinear", since=10)
def quantize_v10(ctx: NodeContext) -> Sequence[Value]:
    _check_scale(ctx)
    x, scale = ctx.input(0), ctx.input(1)
    zp = ctx.opt(2)
    if zp is not None:
        qt = zp.type.dtype
    elif ctx.attr("output_dtype", 0):
        qt = onnx_dtype(ctx.attr("output_dtype"), f"QuantizeLinear node '{ctx.name}'")
    else:
        qt = DType.U8
    if not qt.is_int:
        raise ctx.unsupported(f"quantizing to {qt.value} is not supported (integer types only)")
    ft = x.type.dtype if x.type.dtype.is_float else DType.F32
    xf = x if x.type.dtype == ft else ctx.op("cast", [x], {"to": ft}, out=None)
    s = _align(ctx, scale if scale.type.dtype == ft else ctx.op("cast", [scale], {"to": ft},
                                                                 out=None), x)
    q = ctx.op("round", [ctx.op("div", [xf, s], out=None)], out=None)
    if zp is not None:
        q = ctx.op("add", [q, _align(ctx, ctx.op("cast", [zp], {"to": ft}, out=None), x)],
                   out=None)
    info = np.iinfo(qt.np)
    q = ctx.op("clip", [q], {"min": float(info.min), "max": float(info.max)}, out=None)
    return [ctx.op("cast", [q], {"to": qt})]


@converter("DequantizeLinear", since=10)
def dequantize_v10(ctx: NodeContext) -> Sequence[Value]:
    _check_scale(ctx)
    x, scale = ctx.input(0), ctx.input(1)
    if not x.type.dtype.is_int:
        raise ctx.unsupported(f"dequantizing {x.type.dtype.value} is not supported (integer types only)")
    ft = scale.type.dtype
    if ctx.attr("output_dtype", 0):
        ft = onnx_dtype(ctx.attr("output_dtype"), f"DequantizeLinear node '{ctx.name}'")
    xf = ctx.op("cast", [x], {"to": DType.F32}, out=None)
    zp = ctx.opt(2)
    if zp is not None:
        xf = ctx.op("sub", [xf, _align(ctx, ctx.op("cast", [zp], {"to": DType.F32}, out=None),
                                       x)], out=None)
    s = scale if scale.type.dtype == DType.F32 else ctx.op("cast", [scale], {"to": DType.F32},
                                                           out=None)
    y = ctx.op("mul", [xf, _align(ctx, s, x)], out=None if ft != DType.F32 else 0)
    return [y if ft == DType.F32 else ctx.op("cast", [y], {"to": ft})]


def _integer_operands(ctx: NodeContext) -> tuple[Value, Value, Value | None, int]:
    """(u8 activation, s8 weights, run-time zero point or None, constant zero point) for
    ConvInteger / MatMulInteger. A constant weight zero point is folded into the weights (it
    must leave them in s8); u8 weights are shifted to s8 that way too."""
    x, w = ctx.input(0), ctx.input(1)
    if x.type.dtype != DType.U8:
        raise ctx.unsupported(f"needs u8 activations (got {x.type.dtype.value}): s8 x s8 integer "
                        "convolutions are not supported yet")
    wc = ctx.const(1)
    wz = ctx.const(3) if ctx.has(3) else np.zeros((), np.int64)
    if wc is None or wz is None:
        raise ctx.unsupported("needs constant weights and weight zero point (integer weights computed "
                        "at run time are not supported)")
    axis_shape = [-1] + [1] * (wc.ndim - 1) if ctx.node.op_type == "ConvInteger" else [1, -1]
    shifted = wc.astype(np.int64) - (wz.astype(np.int64).reshape(axis_shape) if wz.size > 1
                                    else int(wz.reshape(-1)[0]) if wz.size else 0)
    if shifted.min() < -128 or shifted.max() > 127:
        raise ctx.error("weights minus their zero point leave the s8 range; not supported")
    w8 = ctx.const_value(shifted.astype(np.int8), out=None)
    zpc, zpv = 0, None
    if ctx.has(2):
        z = ctx.const(2)
        if z is not None:
            if z.size != 1:
                raise ctx.error("a per-row activation zero point is not supported")
            zpc = int(z.reshape(-1)[0])
        else:
            zpv = ctx.input(2)
            if zpv.type.numel != 1 or zpv.type.dtype != DType.U8:
                raise ctx.error(f"activation zero point must be one u8 value, got {zpv.type}")
    return x, w8, zpv, zpc


@converter("ConvInteger", since=10)
def conv_integer_v10(ctx: NodeContext) -> Sequence[Value]:
    from minicc.frontend.convert.nn import _spatial_attrs, resolve_auto_pad

    x, w8, zpv, zpc = _integer_operands(ctx)
    if x.type.rank != 4:
        raise ctx.error(f"only 2-D integer convolutions are supported, got input {x.type}")
    kernel = [int(k) for k in w8.type.shape[2:]]  # type: ignore[arg-type]
    strides, dil = _spatial_attrs(ctx, 2)
    pads = resolve_auto_pad(ctx, x.type.shape[2:], kernel, strides, dil)
    ins = [x, w8] + ([zpv] if zpv is not None else [])
    return [ctx.op("conv_integer", ins, {"strides": strides, "dilations": dil, "pads": pads,
                                         "group": ctx.attr("group", 1), "zero_point": zpc})]


@converter("MatMulInteger", since=10)
def matmul_integer_v10(ctx: NodeContext) -> Sequence[Value]:
    x, w8, zpv, zpc = _integer_operands(ctx)
    ins = [x, w8] + ([zpv] if zpv is not None else [])
    return [ctx.op("matmul_integer", ins, {"zero_point": zpc})]


@converter("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear_v11(ctx: NodeContext) -> Sequence[Value]:
    """y = saturate(round(x / scale) + zp) in u8 with scale and zero point from x's range
    (always including 0): scale = (max - min) / 255, zp = saturate(round(-min / scale))."""
    x = ctx.input(0)
    if x.type.dtype != DType.F32:
        raise ctx.error(f"needs f32 input, got {x.type}")
    axes = list(range(x.type.rank))
    zero = ctx.const_value(np.array(0.0, np.float32), out=None)
    lo = ctx.op("min", [ctx.op("reduce_min", [x], {"axes": axes, "keepdims": False}, out=None),
                        zero], out=None)
    hi = ctx.op("max", [ctx.op("reduce_max", [x], {"axes": axes, "keepdims": False}, out=None),
                        zero], out=None)
    scale = ctx.op("div", [ctx.op("sub", [hi, lo], out=None),
                           ctx.const_value(np.array(255.0, np.float32), out=None)], out=1)
    zpf = ctx.op("clip", [ctx.op("round", [ctx.op("div", [ctx.op("neg", [lo], out=None), scale],
                                                  out=None)], out=None)],
                 {"min": 0.0, "max": 255.0}, out=None)
    zp = ctx.op("cast", [zpf], {"to": DType.U8}, out=2)
    q = ctx.op("add", [ctx.op("round", [ctx.op("div", [x, scale], out=None)], out=None), zpf],
               out=None)
    y = ctx.op("cast", [ctx.op("clip", [q], {"min": 0.0, "max": 255.0}, out=None)],
               {"to": DType.U8}, out=0)
    return [y, scale, zp]


def _qlinear_operands(ctx: NodeContext, x_i: int, w_i: int, axis_of_w: int
                      ) -> tuple[Value, int, float, Value, np.ndarray]:
    """QLinear* operands: (u8 activation, its zero point, its scale, s8 weights, the weights'
    per-channel scales). s8 activations are shifted into u8 (zero point + 128); a weight zero
    point is folded into the weights. Scales and zero points must be constants."""
    names = [ctx.node.input[i] if ctx.has(i) else "" for i in range(len(ctx.node.input))]
    consts = {i: ctx.const(i) for i in range(len(names)) if ctx.has(i)}
    need = [x_i + 1, x_i + 2, w_i, w_i + 1, w_i + 2]
    missing = [names[i] for i in need if i < len(names) and consts.get(i) is None and ctx.has(i)]
    if missing or any(not ctx.has(i) for i in (x_i + 1, w_i, w_i + 1)):
        raise ctx.unsupported("needs constant weights, scales and zero points (got run-time "
                        f"{', '.join(missing) or 'operands'})")
    x = ctx.input(x_i)
    xs = consts[x_i + 1]
    xz = consts.get(x_i + 2, np.zeros((), np.uint8))
    if xs.size != 1 or xz.size != 1 or float(xs.reshape(-1)[0]) <= 0:
        raise ctx.error("the activation's scale and zero point must be one positive value")
    zp = int(xz.reshape(-1)[0])
    if x.type.dtype == DType.I8:
        x = ctx.op("cast", [ctx.op("add", [ctx.op("cast", [x], {"to": DType.I32}, out=None),
                                           ctx.scalar(128, DType.I32)], out=None)],
                   {"to": DType.U8}, out=None)
        zp += 128
    elif x.type.dtype != DType.U8:
        raise ctx.error(f"activation must be u8 or s8, got {x.type}")
    w = consts[w_i].astype(np.int64)
    ws = consts[w_i + 1].astype(np.float64).reshape(-1)
    wz = consts.get(w_i + 2, np.zeros(1, np.int64)).astype(np.int64).reshape(-1)
    if np.any(ws <= 0):
        raise ctx.error("a weight scale is zero or negative")
    shape = [1] * w.ndim
    shape[axis_of_w] = -1
    w = w - (wz.reshape(shape) if wz.size > 1 else int(wz[0]))
    if w.min() < -128 or w.max() > 127:
        raise ctx.error("weights minus their zero point leave the s8 range; not supported")
    n = w.shape[axis_of_w]
    ws = np.broadcast_to(ws, (n,)) if ws.size == 1 else ws
    return x, zp, float(xs.reshape(-1)[0]), ctx.const_value(w.astype(np.int8), out=None), ws


def _requantize(ctx: NodeContext, y: Value, ys_i: int) -> Value:
    """y (f32) -> the output's integer type with its scale and zero point, as QuantizeLinear."""
    ys, yz = ctx.const(ys_i), ctx.const(ys_i + 1) if ctx.has(ys_i + 1) else None
    if ys is None or ys.size != 1 or float(ys.reshape(-1)[0]) <= 0 or (
            ctx.has(ys_i + 1) and (yz is None or yz.size != 1)):
        raise ctx.error("the output's scale and zero point must be constants, one each")
    qt = ctx.type(ys_i + 1).dtype if ctx.has(ys_i + 1) else DType.U8
    q = ctx.op("round", [ctx.op("div", [y, ctx.scalar(float(ys.reshape(-1)[0]), DType.F32)],
                                out=None)], out=None)
    if yz is not None and int(yz.reshape(-1)[0]):
        q = ctx.op("add", [q, ctx.scalar(float(yz.reshape(-1)[0]), DType.F32)], out=None)
    info = np.iinfo(qt.np)
    q = ctx.op("clip", [q], {"min": float(info.min), "max": float(info.max)}, out=None)
    return ctx.op("cast", [q], {"to": qt})


@converter("QLinearConv", since=10)
def qlinear_conv_v10(ctx: NodeContext) -> Sequence[Value]:
    """x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp[, B]: conv_integer, scaled, the int32
    bias (scale x_scale * w_scale) added, requantized."""
    from minicc.frontend.convert.nn import _spatial_attrs, resolve_auto_pad

    x, zp, xs, w8, ws = _qlinear_operands(ctx, 0, 3, 0)
    if x.type.rank != 4:
        raise ctx.error(f"only 2-D integer convolutions are supported, got input {x.type}")
    kernel = [int(k) for k in w8.type.shape[2:]]  # type: ignore[arg-type]
    strides, dil = _spatial_attrs(ctx, 2)
    pads = resolve_auto_pad(ctx, x.type.shape[2:], kernel, strides, dil)
    acc = ctx.op("conv_integer", [x, w8], {"strides": strides, "dilations": dil, "pads": pads,
                                           "group": ctx.attr("group", 1), "zero_point": zp},
                 out=None)
    scale = (xs * ws).astype(np.float32)
    y = ctx.op("mul", [ctx.op("cast", [acc], {"to": DType.F32}, out=None),
                       ctx.const_value(scale.reshape(1, -1, 1, 1), out=None)], out=None)
    if ctx.has(8):
        b = ctx.const(8)
        if b is None:
            raise ctx.error("needs a constant bias")
        y = ctx.op("add", [y, ctx.const_value((b.astype(np.float64) * scale).astype(
            np.float32).reshape(1, -1, 1, 1), out=None)], out=None)
    return [_requantize(ctx, y, 6)]


@converter("QLinearMatMul", since=10)
def qlinear_matmul_v10(ctx: NodeContext) -> Sequence[Value]:
    """a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp: matmul_integer by constant
    weights (per-column scales), scaled, requantized."""
    if ctx.type(3).rank != 2:
        raise ctx.unsupported("only a constant 2-D right operand is supported")
    x, zp, xs, w8, ws = _qlinear_operands(ctx, 0, 3, 1)
    acc = ctx.op("matmul_integer", [x, w8], {"zero_point": zp}, out=None)
    y = ctx.op("mul", [ctx.op("cast", [acc], {"to": DType.F32}, out=None),
                       ctx.const_value((xs * ws).astype(np.float32), out=None)], out=None)
    return [_requantize(ctx, y, 6)]


def _dequantized(ctx: NodeContext, x_i: int) -> Value:
    """Input x_i as float: (x - zero point) * scale, with the scale and zero point (per tensor)
    at x_i + 1 and x_i + 2."""
    s = ctx.const(x_i + 1)
    z = ctx.const(x_i + 2) if ctx.has(x_i + 2) else np.zeros((), np.uint8)
    if s is None or z is None or s.size != 1 or z.size != 1:
        raise ctx.error(f"input {x_i}'s scale and zero point must be constants, one each")
    if not (np.isfinite(s).all() and float(s.reshape(-1)[0]) > 0):
        raise ctx.error(f"scale '{ctx.node.input[x_i + 1]}' holds {float(s.reshape(-1)[0])!r}: "
                        "a quantization scale must be positive and finite")
    x = ctx.input(x_i)
    if x.type.dtype not in (DType.U8, DType.I8):
        raise ctx.error(f"input {x_i} must be u8 or s8, got {x.type}")
    xf = ctx.op("cast", [x], {"to": DType.F32}, out=None)
    if int(z.reshape(-1)[0]):
        xf = ctx.op("sub", [xf, ctx.scalar(float(z.reshape(-1)[0]), DType.F32)], out=None)
    return ctx.op("mul", [xf, ctx.scalar(float(s.reshape(-1)[0]), DType.F32)], out=None)


@converter(["QLinearAdd", "QLinearMul"], since=1, domain="com.microsoft")
def qlinear_binary_v1(ctx: NodeContext) -> Sequence[Value]:
    """onnxruntime's QLinearAdd / QLinearMul (A, A_scale, A_zp, B, B_scale, B_zp, C_scale,
    C_zp), as the QOperator format writes residual adds: both sides dequantized, added or
    multiplied (numpy broadcasting), requantized; the fusion pass puts it in one kernel."""
    a, b = _dequantized(ctx, 0), _dequantized(ctx, 3)
    kind = "add" if ctx.node.op_type == "QLinearAdd" else "mul"
    return [_requantize(ctx, ctx.op(kind, [a, b], out=None), 6)]
