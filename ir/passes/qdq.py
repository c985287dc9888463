"""Quantized ONNX models (QDQ, as onnxruntime's quantize_static writes them) onto the INT8
kernels. The importer turns DequantizeLinear into float arithmetic and constant folding turns
the weights' DequantizeLinear into float constants; this pass finds a Conv or MatMul whose
activation is a dequantized integer tensor and whose weights are integers times a per-channel
scale, and computes it in integers instead:

    %d = mul(sub(cast(%xq, f32), zp), s)      %u = %xq (u8), or %xq + 128 as u8 (s8, zp + 128)
    %y = conv(%d, %w, %b)              ->     %a = conv_integer(%u, %w8) {zero_point}
                                              %y = cast(%a, f32) * (s * s_w) + %b

The weights' scale is recovered from the folded values (max |w| / 127, or 2 max |w| / 255 for
the [-128, 127] range) and used only when every weight is that scale times an integer in s8;
otherwise the layer stays float. The arithmetic is the model's own: what a Q/DQ pair means.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.rewrite import Rewriter, rewrite
from minicc.ir.registry import full_attrs
from minicc.ir.types import DType


def _scalar(rw: Rewriter, v: Value) -> float | None:
    c = rw.const(v)
    if c is None or c.size != 1:
        return None
    return float(c.reshape(-1)[0])


def dequantized(rw: Rewriter, v: Value) -> tuple[Value, float, int] | None:
    """(integer tensor, scale, zero point) when `v` is DequantizeLinear of a u8/s8 tensor."""
    p = rw.producer(v)
    if p is None or p.kind != "mul":
        return None
    for i in (0, 1):
        s = _scalar(rw, p.inputs[1 - i])
        if s is None or s <= 0:
            continue
        inner = rw.producer(p.inputs[i])
        zp = 0.0
        if inner is not None and inner.kind == "sub":
            z = _scalar(rw, inner.inputs[1])
            if z is None:
                continue
            zp, inner = z, rw.producer(inner.inputs[0])
        if inner is None or inner.kind != "cast":
            continue
        x = inner.inputs[0]
        if x.type.dtype in (DType.U8, DType.I8) and zp == int(zp):
            return x, s, int(zp)
    return None


def integer_weights(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(s8 weights, per-channel scales along `axis`) when `w` is exactly such a product."""
    red = tuple(k for k in range(w.ndim) if k != axis)
    w64 = w.astype(np.float64)
    m = np.max(np.abs(w64), axis=red, keepdims=True)
    for qmax in (127.0, 127.5):
        s = np.where(m > 0, m / qmax, 1.0)
        q = np.rint(w64 / s)
        if np.all(np.abs(q * s - w64) <= 1e-5 * np.maximum(m, 1e-30)) and \
                q.min() >= -128 and q.max() <= 127:
            return q.astype(np.int8), s.reshape(-1)
    return None


def _visit(rw: Rewriter, op: Op, ins: list[Value]) -> Sequence[Value] | None:
    if op.kind not in ("conv", "matmul") or op.inputs[0].type.dtype != DType.F32:
        return None
    dq = dequantized(rw, ins[0])
    w = rw.const(ins[1])
    if dq is None or w is None:
        return None
    if op.kind == "conv" and (ins[0].type.rank != 4 or (len(ins) == 3 and
                                                        rw.const(ins[2]) is None)):
        return None
    if op.kind == "matmul" and w.ndim != 2:
        return None
    axis = 0 if op.kind == "conv" else 1
    iw = integer_weights(w, axis)
    if iw is None:
        return None
    w8, s_w = iw
    x, s_x, zp = dq
    b = rw.b
    if x.type.dtype == DType.I8:         # s8 activations: shift into u8 for vpdpbusd
        x = b.op1("cast", [b.op1("add", [b.op1("cast", [x], {"to": DType.I32}, loc=op.loc),
                                         b.const(np.array(128, np.int32))], loc=op.loc)],
                  {"to": DType.U8}, loc=op.loc)
        zp += 128
    if not 0 <= zp <= 255:
        return None
    if op.kind == "conv":
        at = dict(full_attrs("conv", op.attrs), zero_point=zp)
        acc = b.op1("conv_integer", [x, b.const(w8)], at, loc=op.loc)
        shape: tuple[int, ...] = (1, -1, 1, 1)
    else:
        acc = b.op1("matmul_integer", [x, b.const(w8)], {"zero_point": zp}, loc=op.loc)
        shape = (-1,)
    y = b.op1("mul", [b.op1("cast", [acc], {"to": DType.F32}, loc=op.loc),
                      b.const((s_x * s_w).astype(np.float32).reshape(shape))], loc=op.loc)
    if op.kind == "conv" and len(ins) == 3:
        bias = rw.const(ins[2])
        assert bias is not None
        return b.op("add", [y, b.const(bias.astype(np.float32).reshape(shape))], None,
                    op.outputs[0].name_hint, op.loc)
    return [y]


def qdq_to_int8(f: Function) -> Function:
    return rewrite(f, _visit)
