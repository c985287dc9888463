"""Fold inference BatchNormalization into the preceding Conv (and a following Mul/Add by
per-channel constants into the Conv's weights and bias). A BatchNorm with no Conv to fold into
becomes a Mul and an Add by constants, which fuse as an epilogue.

    %c = conv(%x, %w, %b)                      %c = conv(%x, %w', %b')
    %y = batch_norm(%c, %s, %t, %m, %v)   ->   (w' = w * s/sqrt(v+eps), b' = (b-m) * s/sqrt(v+eps) + t)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.rewrite import Rewriter, rewrite
from minicc.ir.registry import full_attrs


def _conv_of(rw: Rewriter, v: Value) -> Op | None:
    """The conv producing v, when v has no other user and its weights are constants."""
    p = rw.producer(v)
    if p is None or p.kind != "conv" or rw.users(v) != 1:
        return None
    if rw.const(p.inputs[1]) is None or (len(p.inputs) == 3 and rw.const(p.inputs[2]) is None):
        return None
    return p


def _channel_vector(a: np.ndarray, out_rank: int, channels: int) -> np.ndarray | None:
    """a as a [C] vector if it broadcasts along axis 1 of a rank-`out_rank` tensor only."""
    if a.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - a.ndim) + a.shape
    if any(d != 1 for k, d in enumerate(shape) if k != 1):
        return None
    if shape[1] not in (1, channels):
        return None
    return np.broadcast_to(a.reshape(-1), (channels,)).astype(np.float64)


def _rebuild_conv(rw: Rewriter, conv: Op, scale: np.ndarray, shift: np.ndarray, out: Op
                  ) -> Sequence[Value]:
    w = rw.const(conv.inputs[1])
    assert w is not None
    m = w.shape[0]
    b = rw.const(conv.inputs[2]).astype(np.float64) if len(conv.inputs) == 3 else np.zeros(m)  # type: ignore
    dt = conv.inputs[1].type.dtype.np
    # float32 weights scaled in float32 (f16 ones too, then rounded once; f64 ones in f64):
    # converting every weight to float64 and back took 0.6 s of light_resnet50's compile
    work = np.promote_types(dt, np.float32)
    w2 = (w.astype(work, copy=False) * scale.astype(work).reshape((m,) + (1,) * (w.ndim - 1))
          ).astype(dt, copy=False)
    b2 = (b * scale + shift).astype(dt)
    wv = rw.b.const(w2, (conv.inputs[1].name_hint or "w") + "_folded")
    bv = rw.b.const(b2, (conv.inputs[1].name_hint or "w") + "_bias")
    return rw.b.op("conv", [conv.inputs[0], wv, bv], conv.attrs, out.outputs[0].name_hint,
                   out.loc)


def _visit(rw: Rewriter, op: Op, ins: list[Value]) -> Sequence[Value] | None:
    if op.kind == "batch_norm":
        params = [rw.const(v) for v in ins[1:]]
        if any(p is None for p in params):
            return None
        s, t, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
        eps = full_attrs("batch_norm", op.attrs)["epsilon"]
        scale = s / np.sqrt(var + eps)
        shift = t - mean * scale
        conv = _conv_of(rw, ins[0])
        if conv is not None:
            return _rebuild_conv(rw, conv, scale, shift, op)
        x = ins[0]
        dt = x.type.dtype.np
        shape = [-1] + [1] * (x.type.rank - 2)
        sv = rw.b.const(scale.astype(dt).reshape(shape), (op.outputs[0].name_hint or "bn") + "_s")
        tv = rw.b.const(shift.astype(dt).reshape(shape), (op.outputs[0].name_hint or "bn") + "_t")
        y = rw.b.op1("mul", [x, sv], name=None, loc=op.loc)
        return rw.b.op("add", [y, tv], None, op.outputs[0].name_hint, op.loc)
    if op.kind in ("mul", "add"):
        for i in (0, 1):
            conv = _conv_of(rw, ins[i])
            c = rw.const(ins[1 - i])
            if conv is None or c is None or op.outputs[0].type != ins[i].type:
                continue
            m = int(conv.outputs[0].type.shape[1])  # type: ignore[arg-type]
            vec = _channel_vector(c, ins[i].type.rank, m)
            if vec is None:
                continue
            if op.kind == "mul":
                return _rebuild_conv(rw, conv, vec, np.zeros(m), op)
            return _rebuild_conv(rw, conv, np.ones(m), vec, op)
    return None


def fold_batch_norm(f: Function) -> Function:
    return rewrite(f, _visit)
