"""Algebraic simplification: identity ops disappear, chains collapse.

    reshape to the same shape, cast to the same dtype, identity transpose, broadcast_to
    the same shape, x * 1, x + 0, zero padding -> x
    reshape(reshape(x)) -> reshape(x);  transpose(transpose(x, p), q) -> transpose(x, p o q)
    conv(pad(x, constant 0 on spatial dims)) -> conv(x) with the pads added
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.rewrite import Rewriter, rewrite
from minicc.ir.registry import full_attrs


def _is_splat_of(rw: Rewriter, v: Value, x: float) -> bool:
    a = rw.const(v)
    if a is None or a.size == 0:
        return False
    flat = a.reshape(-1)
    return bool(np.all(flat[:1] == x)) and (a.size == 1 or all(s == 0 for s in a.strides)
                                           or bool(np.all(flat == x)))


def _visit(rw: Rewriter, op: Op, ins: list[Value]) -> Sequence[Value] | None:
    out = op.outputs[0]
    k = op.kind
    if k in ("reshape", "broadcast_to", "cast") and ins[0].type == out.type:
        return [ins[0]]
    if k == "transpose":
        perm = list(op.attrs["perm"])
        if perm == list(range(len(perm))):
            return [ins[0]]
        p = rw.producer(ins[0])
        if p is not None and p.kind == "transpose":
            inner = list(p.attrs["perm"])
            comp = [inner[i] for i in perm]
            if comp == list(range(len(comp))):
                return [p.inputs[0]]
            return rw.b.op("transpose", [p.inputs[0]], {"perm": comp}, out.name_hint, op.loc)
    if k == "reshape":
        p = rw.producer(ins[0])
        if p is not None and p.kind == "reshape":
            return rw.b.op("reshape", [p.inputs[0]], {"shape": list(out.type.shape)},
                           out.name_hint, op.loc)
    if k in ("mul", "add", "sub"):
        unit = 1.0 if k == "mul" else 0.0
        for i in ((0, 1) if k != "sub" else (0,)):
            x, c = ins[i], ins[1 - i]
            if x.type == out.type and _is_splat_of(rw, c, unit):
                return [x]
    if k == "pad" and not any(op.attrs["pads"]):
        return [ins[0]]
    if k == "conv":
        p = rw.producer(ins[0])
        if p is not None and p.kind == "pad":
            at = full_attrs("pad", p.attrs)
            pads = list(at["pads"])
            r = len(pads) // 2
            if at["mode"] == "constant" and at["value"] == 0.0 and not any(
                    pads[:2] + pads[r:r + 2]) and all(x >= 0 for x in pads):
                ca = full_attrs("conv", op.attrs)
                nd = r - 2
                cp = list(ca["pads"]) or [0] * (2 * nd)
                new = [cp[i] + pads[2 + i] for i in range(nd)] + \
                      [cp[nd + i] + pads[r + 2 + i] for i in range(nd)]
                attrs = dict(op.attrs)
                attrs["pads"] = new
                return rw.b.op("conv", [p.inputs[0]] + ins[1:], attrs, out.name_hint, op.loc)
    return None


def simplify(f: Function) -> Function:
    return rewrite(f, _visit)
