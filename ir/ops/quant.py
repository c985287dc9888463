"""Integer convolution and matmul: u8 activations (with a zero point) times s8 weights, summed in
int32, as ONNX's ConvInteger and MatMulInteger define them. The quantization pass and the
importer of quantized models both produce them; the float epilogue (scale, bias, activation,
requantization) is ordinary elementwise ops that fuse into the same kernel.

Why u8 x s8: that is what AVX-512 VNNI's `vpdpbusd` multiplies (four byte products summed into
an int32 lane, without the 16-bit saturation of `vpmaddubsw`), so the GEMM template can use it
directly. Symmetric s8 activations are stored shifted by 128 (zero point 128).
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.ir.compute import (Compute, Const, Expr, Reduce, Var, axes, both, cast, in_range, load,
                               select)
from minicc.ir.ops.linalg import MatMul
from minicc.ir.ops.nn import CONV_ATTRS, Conv, _pads, _spatial, conv_out_dim
from minicc.ir.registry import Attr, check, register_op
from minicc.ir.types import DType, TensorType

I32 = DType.I32
ZP = {"zero_point": Attr("int", 0, "the activation's zero point (padding reads it), unless "
                                    "a third operand gives it at run time")}


def _check_int8(ins: Sequence[TensorType], zp: int) -> None:
    x, w = ins[0], ins[1]
    check(x.dtype == DType.U8 and w.dtype == DType.I8,
          f"needs u8 activations and s8 weights, got {x} and {w}")
    check(0 <= zp <= 255, f"zero point {zp} is not a u8 value")
    if len(ins) == 3:
        check(ins[2].dtype == DType.U8 and ins[2].numel == 1 and zp == 0,
              f"a run-time zero point is one u8 value (and the attribute 0), got {ins[2]}")


def _infer_int32(base: Any, ins: Sequence[TensorType], attrs: Mapping[str, Any]
                 ) -> list[TensorType]:
    """The float op's result shape (checked on the two operands), typed int32."""
    _check_int8(ins, attrs["zero_point"])
    f = [TensorType(DType.F32, t.shape) for t in ins[:2]]
    return [TensorType(I32, base.infer(f, attrs)[0].shape)]


def zero_point(ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> int:
    return int(np.asarray(ins[2]).reshape(-1)[0]) if len(ins) == 3 else attrs["zero_point"]


def zero_point_expr(ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> Expr:
    """The zero point as an int32 expression: the attribute, or the run-time operand."""
    if len(ins) == 3:
        return cast(load(2, ins[2], [0] * ins[2].rank), I32)
    return Const(attrs["zero_point"], I32)


@register_op
class ConvInteger(Conv):
    name = "conv_integer"
    template = "conv2d_gemm"
    inputs = (2, 3)
    attrs = {**CONV_ATTRS, **ZP}
    doc = ("2-D grouped convolution in integers: sum (X[N,C,H,W] - zero_point) * W[M,C/g,kh,kw]"
           " as int32; the padding holds the zero point (a real 0)")

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        return _infer_int32(super(), ins, attrs)

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x, w = ins[0], ins[1]
        zp = zero_point(ins, attrs)
        nd = x.ndim - 2
        s = _spatial(attrs, "strides", nd, 1)
        d = _spatial(attrs, "dilations", nd, 1)
        pb, pe = _pads(attrs, nd)
        g = attrs["group"]
        xs = x.astype(np.int64) - zp                   # the padding is zero_point: 0 after this
        xp = np.pad(xs, [(0, 0), (0, 0)] + list(zip(pb, pe)))
        n, c = x.shape[:2]
        m, ks = w.shape[0], w.shape[2:]
        out_sp = [conv_out_dim(x.shape[2 + i], ks[i], s[i], d[i], pb[i], pe[i])
                  for i in range(nd)]
        cg, mg, p = c // g, m // g, int(np.prod(out_sp))
        xg = xp.reshape((n, g, cg) + xp.shape[2:])
        wg = w.astype(np.int64).reshape((g, mg, cg) + tuple(ks))
        acc = np.zeros((n, g, mg, p), np.int64)
        for kpos in itertools.product(*(range(k) for k in ks)):
            sl = tuple(slice(kpos[i] * d[i], kpos[i] * d[i] + (out_sp[i] - 1) * s[i] + 1, s[i])
                       for i in range(nd))
            patch = xg[(slice(None),) * 3 + sl].reshape(n, g, cg, p)
            acc += np.matmul(wg[(slice(None),) * 3 + kpos], patch)
        return [acc.reshape((n, m) + tuple(out_sp)).astype(np.int32)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x, w = ins[0], ins[1]
        zp = zero_point_expr(ins, attrs)
        nd = x.rank - 2
        s = _spatial(attrs, "strides", nd, 1)
        d = _spatial(attrs, "dilations", nd, 1)
        pb, _ = _pads(attrs, nd)
        g = attrs["group"]
        m, cg = int(w.shape[0]), int(w.shape[1])  # type: ignore[arg-type]
        ox = axes(outs[0].rank)
        rc = Var("rc")
        rk = [Var(f"rk{i}") for i in range(nd)]
        chan = rc if g == 1 else (ox[1] // (m // g)) * cg + rc
        pos = [ox[2 + i] * s[i] + rk[i] * d[i] - pb[i] for i in range(nd)]
        cond = both(*(in_range(p, int(x.shape[2 + i])) for i, p in enumerate(pos)))  # type: ignore
        xv: Expr = cast(load(0, x, [ox[0], chan] + pos), I32)
        if cond is not None:
            xv = select(cond, xv, zp)
        body = (xv - zp) * cast(load(1, w, [ox[1], rc] + rk), I32)
        red = ((rc, cg),) + tuple((rk[i], int(w.shape[2 + i])) for i in range(nd))  # type: ignore
        return [Compute(ox, Reduce("sum", red, body, I32))]


@register_op
class MatMulInteger(MatMul):
    name = "matmul_integer"
    template = "matmul_gemm"
    inputs = (2, 3)
    attrs = ZP
    doc = "numpy matmul in integers: sum (A[..., M, K] - zero_point) * B[..., K, N] as int32"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        return _infer_int32(super(), ins, attrs)

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        a, b = ins[0], ins[1]
        acc = np.matmul(a.astype(np.float64) - zero_point(ins, attrs), b.astype(np.float64))
        return [np.rint(acc).astype(np.int32)]          # exact: |acc| < 2^53

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        """The float matmul's definition with the loads widened and A shifted by its zero
        point."""
        c = super().compute(ins[:2], outs, attrs)[0]
        red = c.body
        assert isinstance(red, Reduce)
        a_ld, b_ld = red.body.args                          # type: ignore[attr-defined]
        body = (cast(a_ld, I32) - zero_point_expr(ins, attrs)) * cast(b_ld, I32)
        return [Compute(c.axes, Reduce("sum", red.axes, body, I32))]
