"""Converters for Constant, Identity, Dropout and TopK."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.frontend.context import NodeContext
from minicc.frontend.registry import converter
from minicc.ir.graph import Value


@converter("Constant", since=1)
def constant_v1(ctx: NodeContext) -> Sequence[Value]:
    for key, dt in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if ctx.has_attr(key):
            v = ctx.attr(key)
            arr = np.asarray(v) if dt is None else np.asarray(v, dtype=dt)
            return [ctx.const_value(arr, 0)]
    given = ", ".join(a.name for a in ctx.node.attribute) or "none"
    raise ctx.error(f"needs a value, value_float(s) or value_int(s) attribute (has: {given}); "
                    "sparse and string constants are not supported")


@converter("Identity", since=1)
def identity_v1(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.input(0)]


@converter("Dropout", since=1)
def dropout_v1(ctx: NodeContext) -> Sequence[Value | None]:
    """Inference: the identity. The mask output, when used, is all ones (true)."""
    if ctx.opset >= 12 and ctx.has(2):
        mode = ctx.const(2)
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            raise ctx.unsupported("training_mode must be a constant false (inference only)")
    x = ctx.input(0)
    outs: list[Value | None] = [x]
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        if not x.type.is_static:
            raise ctx.error("the mask output needs a static input shape")
        dt = np.bool_ if ctx.opset >= 10 else x.type.dtype.np
        outs.append(ctx.const_value(np.broadcast_to(np.ones((), dt),
                                                    tuple(x.type.shape)), 1))  # type: ignore
    return outs


@converter("TopK", since=1)
def topk_v1(ctx: NodeContext) -> Sequence[Value]:
    return list(ctx.op_n("top_k", [ctx.input(0)], {"k": ctx.req_attr("k"),
                                                   "axis": ctx.attr("axis", -1)}))


@converter("TopK", since=10)
def topk_v10(ctx: NodeContext) -> Sequence[Value]:
    if ctx.const(1) is None:  # the output size depends on k: onnx's reference, a host step
        raise ctx.unsupported("k known only at run time")
    k = int(np.asarray(ctx.require_const(1, "k")).reshape(-1)[0])
    return list(ctx.op_n("top_k", [ctx.input(0)], {"k": k, "axis": ctx.attr("axis", -1),
                                                   "largest": bool(ctx.attr("largest", 1)),
                                                   "sorted": bool(ctx.attr("sorted", 1))}))
