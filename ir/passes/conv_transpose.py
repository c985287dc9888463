"""A transposed convolution whose kernel equals its stride (the 2x2 stride-2 upsampling of
segmentation and OCR heads) as a 1x1 convolution and a depth-to-space shuffle. The windows do
not overlap, so every output pixel is one input pixel times one weight tap:

    y[n, co, h*s + ky, w*s + kx] = sum_ci x[n, ci, h, w] W[ci, co, ky, kx] + b[co]
    %c = conv(%x, %W')        W'[(co*s + ky)*s + kx, ci] = W[ci, co, ky, kx], b' = b repeated
    %y = reshape(transpose(reshape(%c, [n, co, s, s, h, w]), [0, 1, 4, 2, 5, 3]), [n, co, h*s, w*s])

The conv runs on the GEMM template; the loop nest of conv_transpose, a reduction with a
divisibility test per tap, ran at 1.4 GFLOP/s (dbnet_like: 109 of 190 ms).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.rewrite import Rewriter, rewrite
from minicc.ir.registry import full_attrs


def _visit(rw: Rewriter, op: Op, ins: list[Value]) -> Sequence[Value] | None:
    if op.kind != "conv_transpose" or ins[0].type.rank != 4:
        return None
    w = rw.const(ins[1])
    b = rw.const(ins[2]) if len(ins) == 3 else None
    if w is None or (len(ins) == 3 and b is None):
        return None
    at = full_attrs("conv_transpose", op.attrs)
    ks = tuple(int(k) for k in w.shape[2:])
    strides = tuple(at["strides"]) or (1, 1)
    if (at["group"] != 1 or strides != ks or any(at["pads"]) or any(at["output_padding"])
            or any(d != 1 for d in at["dilations"])):
        return None
    n, cin, h, wd = ins[0].type.shape
    if not all(isinstance(d, int) for d in (n, cin, h, wd)):
        return None
    s0, s1 = ks
    cout = int(w.shape[1])
    w2 = np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(cout * s0 * s1, cin, 1, 1)
    bias = np.zeros(cout, w.dtype) if b is None else b
    b2 = np.repeat(bias, s0 * s1).astype(w.dtype)
    hint = ins[1].name_hint or "w"
    c = rw.b.op1("conv", [ins[0], rw.b.const(w2, hint + "_as_conv"),
                          rw.b.const(b2, hint + "_as_conv_bias")], {}, loc=op.loc)
    r = rw.b.op1("reshape", [c], {"shape": [n, cout, s0, s1, h, wd]}, loc=op.loc)
    t = rw.b.op1("transpose", [r], {"perm": [0, 1, 4, 2, 5, 3]}, loc=op.loc)
    return rw.b.op("reshape", [t], {"shape": [n, cout, h * s0, wd * s1]},
                   op.outputs[0].name_hint, op.loc)


def conv_transpose_as_conv(f: Function) -> Function:
    return rewrite(f, _visit)
