"""The INT8 rewrite: float convolutions and matmuls with constant weights become integer ones.

    %y = conv(%x, %w, %b)          %q = cast(clip(round(%x * (1/s_x)) + zp, 0, 255), u8)
                           ->      %a = conv_integer(%q, %w8) {zero_point=zp}      (int32)
                                   %y = cast(%a, f32) * (s_x * s_w) + %b

Weights are quantized per output channel, symmetric, to s8 in [-127, 127] (s_w = max|w| / 127);
activations per tensor with the (scale, zero point) calibration gave them. The quantize
multiplies by the scale's reciprocal: a division costs several times a multiply in every
epilogue (mobilenetv2_224 int8, 4.42 -> 3.86 ms), and the two differ only where x / s_x lies
within an ulp of a rounding tie (one step, rarely, which calibration's error already dwarfs). Everything after
the integer op is ordinary elementwise arithmetic, so the fusion pass puts it (and the next
layer's quantize) in the same kernel's epilogue: a conv-relu-conv chain reads and writes u8 and
requantizes in registers. One quantize per activation, shared by all its users; it moves up
through max pooling, reshapes and transposes (which then carry u8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.rewrite import Rewriter, rewrite
from minicc.ir.registry import full_attrs
from minicc.ir.types import DType


PASS_THROUGH = frozenset({"max_pool", "reshape", "transpose"})
# float users that read a quantized activation's dequantized value instead of the float one
DEQUANTIZED_USERS = frozenset({"add", "sub", "mul"})


@dataclass(frozen=True)
class Quantizable:
    """An op the rewrite can make integer, and the activation it quantizes."""

    op: Op
    activation: Value
    name: str                 # the ONNX node it came from (or the printed value name)


def layer_name(op: Op) -> str:
    return op.loc.node if op.loc and op.loc.node else (op.outputs[0].name_hint or op.kind)


def quantizable(f: Function, depthwise: bool = True) -> list[Quantizable]:
    """Convs (2-D, constant weights) and matmuls by a constant 2-D matrix, in order."""
    consts = {op.output: op for op in f.ops if op.kind == "const"}
    out = []
    for op in f.ops:
        if op.kind == "conv" and op.inputs[1] in consts and op.inputs[0].type.rank == 4 and \
                op.inputs[0].type.dtype == DType.F32 and \
                (len(op.inputs) < 3 or op.inputs[2] in consts):
            g = full_attrs("conv", op.attrs)["group"]
            if g > 1 and op.inputs[1].type.shape[1] == 1 and not depthwise:
                continue
            out.append(Quantizable(op, op.inputs[0], layer_name(op)))
        elif op.kind == "matmul" and op.inputs[1] in consts and op.inputs[1].type.rank == 2 \
                and op.inputs[0].type.dtype == DType.F32 and op.inputs[0].type.rank >= 2:
            out.append(Quantizable(op, op.inputs[0], layer_name(op)))
    return out


def quantize_weights(w: np.ndarray, axis: int, per_channel: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric s8 weights, one scale per channel along `axis` (or one for all), and the
    scales (one per channel either way)."""
    red = tuple(k for k in range(w.ndim) if k != axis or not per_channel)
    m = np.max(np.abs(w.astype(np.float64)), axis=red, keepdims=True)
    s = np.where(m > 0, m / 127.0, 1.0)
    q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
    return q, np.broadcast_to(s, [w.shape[k] if k == axis else 1 for k in range(w.ndim)]
                              ).reshape(-1).copy()


def dequantized_skips(f: Function, activations: set[Value], integer_ops: set[Op]
                      ) -> set[Value]:
    """The quantized activations whose other users (a residual add, say) all read the
    dequantized value, as a QDQ graph's skip connection does: the producer then writes only
    u8 (its quantize fuses into its epilogue) and the add reads u8, instead of a kernel of its
    own quantizing an f32 copy. The skip path then carries the activation's quantization error,
    as it does in onnxruntime's QDQ models."""
    out = set()
    for v in activations:
        others = [u for u in f.users.get(v, []) if u not in integer_ops]
        if others and v not in f.outputs and v.type.dtype == DType.F32 and \
                all(u.kind in DEQUANTIZED_USERS for u in others):
            out.add(v)
    return out


def int8_rewrite(f: Function, qparams: Mapping[Value, tuple[float, int]],
                 only: set[Op] | None = None, per_channel: bool = True) -> Function:
    """Make integer every op of `quantizable(f)` whose activation has qparams (and, when
    `only` is given, that is in it)."""
    todo = {q.op: q for q in quantizable(f) if q.activation in qparams
            and (only is None or q.op in only)}
    shared: dict[Value, Value] = {}
    producers, users = f.producers, f.users
    skips = dequantized_skips(f, {q.activation for q in todo.values()}, set(todo))

    def pass_through(old: Value) -> tuple[Value, list[Op]]:
        """Quantizing commutes with max pooling and with moving elements (it is monotonic and
        elementwise): quantize before them, so they move u8, and a conv's epilogue writes u8.
        The activation itself may have other users where they all read it dequantized (a
        ResNet's stem pool feeds the first block's conv and its skip add): they read the
        pooled u8 then. resnet18_like int8, 1 thread: the stem conv writes u8 and the pool
        moves a quarter of the bytes."""
        chain: list[Op] = []
        while True:
            p = producers.get(old)
            alone = len(users.get(old, [])) == 1 or (not chain and old in skips)
            if p is None or p.kind not in PASS_THROUGH or not alone or \
                    old in f.outputs or p.inputs[0].type.dtype != DType.F32:
                return old, chain
            chain.insert(0, p)
            old = p.inputs[0]

    def quantize(rw: Rewriter, x: Value, old: Value, op: Op) -> Value:
        if old in shared:
            return shared[old]
        s, zp = qparams[old]
        src, chain = pass_through(old)
        b = rw.b
        sv = b.const(np.array(1.0 / np.float32(s), np.float32))
        q = b.op1("round", [b.op1("mul", [rw.map[src] if chain else x, sv], loc=op.loc)],
                  loc=op.loc)
        if zp:
            q = b.op1("add", [q, b.const(np.array(zp, np.float32))], loc=op.loc)
        q = b.op1("clip", [q], {"min": 0.0, "max": 255.0}, loc=op.loc)
        q = b.op1("cast", [q], {"to": DType.U8}, name=(src.name_hint or "x") + "_q", loc=op.loc)
        for p in chain:
            q = b.op1(p.kind, [q], p.attrs, name=(p.outputs[0].name_hint or "x") + "_q",
                      loc=p.loc)
        shared[old] = q
        return q

    def dequantized(rw: Rewriter, op: Op, ins: list[Value]) -> Sequence[Value] | None:
        if not any(v in skips for v in op.inputs):
            return None
        b = rw.b
        new = list(ins)
        for i, v in enumerate(op.inputs):
            if v in skips:
                s, zp = qparams[v]
                y = b.op1("cast", [quantize(rw, ins[i], v, op)], {"to": DType.F32}, loc=op.loc)
                y = b.op1("mul", [y, b.const(np.array(s, np.float32))], loc=op.loc)
                if zp:
                    y = b.op1("add", [y, b.const(np.array(-zp * s, np.float32))], loc=op.loc)
                new[i] = y
        return b.op(op.kind, new, op.attrs, [v.name_hint for v in op.outputs], op.loc)

    def visit(rw: Rewriter, op: Op, ins: list[Value]) -> Sequence[Value] | None:
        q = todo.get(op)
        if q is None:
            return dequantized(rw, op, ins)
        s_x, zp = qparams[op.inputs[0]]
        xq = quantize(rw, ins[0], op.inputs[0], op)
        w = rw.const(ins[1])
        assert w is not None
        b = rw.b
        if op.kind == "conv":
            wq, s_w = quantize_weights(w, 0, per_channel)
            at = dict(full_attrs("conv", op.attrs), zero_point=zp)
            acc = b.op1("conv_integer", [xq, b.const(wq)], at, loc=op.loc)
            shape = (1, -1, 1, 1)
        else:
            wq, s_w = quantize_weights(w, 1, per_channel)
            acc = b.op1("matmul_integer", [xq, b.const(wq)], {"zero_point": zp}, loc=op.loc)
            shape = (-1,)
        y = b.op1("cast", [acc], {"to": DType.F32}, loc=op.loc)
        scale = (s_x * s_w).astype(np.float32).reshape(shape)
        y = b.op1("mul", [y, b.const(scale)], loc=op.loc)
        if op.kind == "conv" and len(ins) == 3:
            bias = rw.const(ins[2])
            assert bias is not None
            return b.op("add", [y, b.const(bias.astype(np.float32).reshape(shape))],
                        None, op.outputs[0].name_hint, op.loc)
        return [y]

    return rewrite(f, visit)
