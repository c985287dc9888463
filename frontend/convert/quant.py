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
        raise ctx.error(f"quantizing to {qt.value} is not supported (integer types only)")
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
        raise ctx.error(f"dequantizing {x.type.dtype.value} is not supported (integer types only)")
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
