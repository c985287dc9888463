"""Fold constant scales and offsets through chains of elementwise ops, into the weights of the
conv or matmul that feeds them where they can.

    mul(mul(x, a), b)          -> mul(x, a*b)
    add(add(x, a), b)          -> add(x, a+b)
    mul(add(x, a), b)          -> add(mul(x, b), a*b)
    mul(clip(x, l, h), c)      -> clip(mul(x, c), l*c, h*c)          c a positive scalar
    add(clip(x, l, h), c)      -> clip(add(x, c), l+c, h+c)          c a scalar
    round(clip(x, l, h))       -> clip(round(x), round(l), round(h))
    clip(clip(x, a, b), c, d)  -> clip(x, max(a, c), min(b, d))
    mul(conv(x, w, b), c)      -> conv(x, w*c, b*c)                  c one value per channel
    mul(matmul(x, w), c)       -> matmul(x, w*c)                     w a constant matrix
    (relu is clip(0, inf))

Why: an INT8 layer's epilogue is the dequantize, the bias, the activation and the next layer's
quantize, as the rewrite (int8.py) and QDQ import write them:
cast, mul, add, clip, mul, round, add, clip, cast: eleven vector ops and seven constants per
output vector, which with sixteen accumulators spill to the stack. Folded, it is cast, mul, add,
round, add, clip, cast; a float layer (a depthwise conv) that quantizes its output loses the
quantize's multiply into its weights. Every rule holds exactly in real arithmetic; in floats a
folded product rounds once instead of twice (within an ulp), and the clip rules are exact
(rounding is monotonic). Only f32 values, and only through values with one user, so nothing is
computed twice.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.rewrite import Rewriter, rewrite
from minicc.ir.registry import full_attrs
from minicc.ir.types import DType

Clip = tuple[Value, float, float]


class _Folder:
    def __init__(self, rw: Rewriter):
        self.rw = rw
        self.b = rw.b

    # -- what a value is -----------------------------------------------------------------

    def _single(self, v: Value) -> Op | None:
        """The producer of `v` when `v` is an f32 value with one user (so folding into it
        computes nothing twice)."""
        if v.type.dtype != DType.F32 or self.rw.users(v) != 1:
            return None
        return self.rw.producer(v)

    def _const_operand(self, op: Op) -> tuple[Value, np.ndarray] | None:
        """(x, c) for a binary op with one constant f32 operand c (either side; for sub only
        the right), whose result has x's shape."""
        if len(op.inputs) != 2:
            return None
        sides = ((0, 1),) if op.kind == "sub" else ((0, 1), (1, 0))
        for i, j in sides:
            c = self.rw.const(op.inputs[j])
            x = op.inputs[i]
            if c is not None and c.dtype == np.float32 and x.type == op.outputs[0].type \
                    and bool(np.all(np.isfinite(c))):
                return x, c
        return None

    def _clip(self, v: Value) -> Clip | None:
        p = self._single(v)
        if p is None:
            return None
        if p.kind == "relu":
            return p.inputs[0], 0.0, math.inf
        if p.kind == "clip":
            at = full_attrs("clip", p.attrs)
            return p.inputs[0], float(at["min"]), float(at["max"])
        return None

    # -- emitting, with the rules applied ------------------------------------------------

    def clip(self, x: Value, lo: float, hi: float, like: Op) -> Value:
        inner = self._clip(x)
        if inner is not None and max(lo, inner[1]) <= min(hi, inner[2]):
            x, lo, hi = inner[0], max(lo, inner[1]), min(hi, inner[2])
        return self.b.op1("clip", [x], {"min": lo, "max": hi}, like.outputs[0].name_hint,
                          like.loc)

    # Each emitter applies the first rule that fits and recurses on what is left; with
    # `keep=False` it returns None when no rule fits (the visitor then keeps the op as it is).

    def mul(self, x: Value, c: np.ndarray, like: Op, keep: bool = True) -> Value | None:
        p = self._single(x)
        if p is not None:
            if p.kind == "mul" and (xc := self._const_operand(p)):
                return self.mul(xc[0], _f32(xc[1].astype(np.float64) * c), like)
            if p.kind in ("add", "sub") and (xc := self._const_operand(p)):
                a = xc[1].astype(np.float64) * (1 if p.kind == "add" else -1)
                return self._binary("add", self.mul(xc[0], c, like), _f32(a * c), like)
            k = _scalar(c)
            if k is not None and k > 0 and (cl := self._clip(x)):
                inner = self.mul(cl[0], c, like)
                return self.clip(inner, _bound(cl[1], k, np.multiply),
                                 _bound(cl[2], k, np.multiply), like)
            folded = self._into_weights(p, c, like)
            if folded is not None:
                return folded
        return self._binary("mul", x, c, like) if keep else None

    def add(self, x: Value, c: np.ndarray, like: Op, keep: bool = True) -> Value | None:
        p = self._single(x)
        if p is not None:
            if p.kind in ("add", "sub") and (xc := self._const_operand(p)):
                a = xc[1].astype(np.float64) * (1 if p.kind == "add" else -1)
                return self.add(xc[0], _f32(a + c), like)
            k = _scalar(c)
            if k is not None and (cl := self._clip(x)):
                return self.clip(self.add(cl[0], c, like), _bound(cl[1], k, np.add),
                                 _bound(cl[2], k, np.add), like)
        return self._binary("add", x, c, like) if keep else None

    def round(self, x: Value, like: Op) -> Value:
        cl = self._clip(x)
        if cl is None:
            return self.b.op1("round", [x], None, like.outputs[0].name_hint, like.loc)
        inner = self.round(cl[0], like)
        return self.clip(inner, _round(cl[1]), _round(cl[2]), like)

    def _binary(self, kind: str, x: Value, c: np.ndarray, like: Op) -> Value:
        return self.b.op1(kind, [x, self.b.const(c)], None, like.outputs[0].name_hint,
                          like.loc)

    def _into_weights(self, p: Op, c: np.ndarray, like: Op) -> Value | None:
        """conv(x, w, b) * c with c one value per output channel, or matmul(x, w) * c with c
        one value per column: the scale goes into the constant weights (and bias)."""
        out = p.outputs[0]
        if c.ndim > out.type.rank:
            return None
        cs = c.reshape((1,) * (out.type.rank - c.ndim) + c.shape)
        w = self.rw.const(p.inputs[1]) if len(p.inputs) > 1 else None
        if w is None or w.dtype != np.float32:
            return None
        if p.kind == "conv" and out.type.rank >= 3:
            if any(d != 1 for k, d in enumerate(cs.shape) if k != 1):
                return None
            m = w.shape[0]
            per = cs.reshape(-1)
            if per.size not in (1, m):
                return None
            per = np.broadcast_to(per.astype(np.float64), (m,))
            ins = [p.inputs[0], self.b.const(_f32(w * per.reshape((m,) + (1,) * (w.ndim - 1))))]
            if len(p.inputs) > 2:
                bias = self.rw.const(p.inputs[2])
                if bias is None:
                    return None
                ins.append(self.b.const(_f32(bias.astype(np.float64) * per)))
            return self.b.op1("conv", ins, p.attrs, like.outputs[0].name_hint, like.loc)
        if p.kind == "matmul" and w.ndim == 2 and len(p.inputs) == 2:
            if any(d != 1 for d in cs.shape[:-1]) or cs.shape[-1] not in (1, w.shape[1]):
                return None
            per = np.broadcast_to(cs.reshape(-1).astype(np.float64), (w.shape[1],))
            return self.b.op1("matmul", [p.inputs[0], self.b.const(_f32(w * per))], p.attrs,
                              like.outputs[0].name_hint, like.loc)
        return None


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64).astype(np.float32)


def _scalar(c: np.ndarray) -> float | None:
    return float(c.reshape(-1)[0]) if c.size == 1 else None


def _bound(bound: float, k: float, fn: np.ufunc) -> float:
    """A clip bound moved through `fn(., k)` as the f32 kernel computes it (so the clip's
    exactness argument holds bit for bit)."""
    return float(fn(np.float32(bound), np.float32(k))) if math.isfinite(bound) else bound


def _round(bound: float) -> float:
    return float(np.round(np.float32(bound))) if math.isfinite(bound) else bound


def _visit(rw: Rewriter, op: Op, ins: list[Value]) -> Sequence[Value] | None:
    out = op.outputs[0]
    if out.type.dtype != DType.F32 or op.kind not in ("mul", "add", "sub", "round", "clip",
                                                      "relu"):
        return None
    f = _Folder(rw)
    if op.kind in ("mul", "add", "sub"):
        rebuilt = Op(op.kind, tuple(ins), op.outputs, op.attrs, op.loc)
        xc = f._const_operand(rebuilt)
        if xc is None:
            return None
        x, c = xc
        if op.kind == "mul":
            res = f.mul(x, c, op, keep=False)
        else:
            res = f.add(x, c if op.kind == "add" else _f32(-c.astype(np.float64)), op, keep=False)
        return None if res is None else [res]
    if op.kind == "round":
        return [f.round(ins[0], op)] if f._clip(ins[0]) else None
    lo, hi = (0.0, math.inf) if op.kind == "relu" else (
        float(full_attrs("clip", op.attrs)["min"]), float(full_attrs("clip", op.attrs)["max"]))
    return [f.clip(ins[0], lo, hi, op)] if f._clip(ins[0]) else None


def fold_scales(f: Function) -> Function:
    """Fold constant scales and offsets through elementwise chains and into weights."""
    return rewrite(f, _visit)
