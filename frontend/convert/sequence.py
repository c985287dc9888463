"""Sequences whose structure is known at import: SequenceEmpty/Construct/Insert/Erase/At/Length,
ConcatFromSequence and SplitToSequence, with positions and split sizes known at compile time.

Such a sequence is a list of IR values the importer holds (`Seq`), not an IR value: it exists
only while the graph is converted, and every tensor taken out of it is an ordinary value, so
the ops around it compile and fuse as usual. A position that is a graph input is bound to its
value (NeedsConstantError: the backend adapter and `minicc run` bind it), as for a Reshape's
shape. Sequences that are graph inputs or outputs, or that cross a Loop, are refused.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.frontend.context import NodeContext, onnx_dtype
from minicc.frontend.registry import converter
from minicc.ir.graph import Value
from minicc.ir.types import DType


class Seq:
    """A sequence of tensors known at import: its values in order and its element type."""

    def __init__(self, items: Sequence[Value], dtype: DType | None):
        self.items = tuple(items)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"Seq({len(self.items)} x {self.dtype.value if self.dtype else '?'})"


def _seq(ctx: NodeContext, i: int) -> Seq:
    name = ctx.node.input[i] if i < len(ctx.node.input) else ""
    v = ctx.s.env.get(name)
    if not isinstance(v, Seq):
        raise ctx.error(f"input {i} ('{name}') must be a sequence, got a tensor")
    return v


def _tensor(ctx: NodeContext, i: int, seq: Seq) -> Value:
    v = ctx.input(i)
    if seq.dtype is not None and v.type.dtype != seq.dtype:
        raise ctx.error(f"a {v.type.dtype.value} tensor into a sequence of {seq.dtype.value}")
    return v


def _pos(ctx: NodeContext, i: int, n: int, default: int, insert: bool = False) -> int:
    if not ctx.has(i):
        return default
    p = int(np.asarray(ctx.require_const(i, "the position")).reshape(-1)[0])
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        raise ctx.error(f"position {p} is out of range for a sequence of {n}")
    return p + n if p < 0 else p


@converter("SequenceEmpty", since=11)
def sequence_empty_v11(ctx: NodeContext) -> Sequence[Seq]:
    dt = onnx_dtype(ctx.attr("dtype"), ctx.name) if ctx.has_attr("dtype") else DType.F32
    return [Seq([], dt)]


@converter("SequenceConstruct", since=11)
def sequence_construct_v11(ctx: NodeContext) -> Sequence[Seq]:
    xs = ctx.inputs()
    dts = {v.type.dtype for v in xs}
    if len(dts) != 1:
        raise ctx.error(f"tensors of {sorted(d.value for d in dts)} in one sequence")
    return [Seq(xs, xs[0].type.dtype)]


@converter("SequenceInsert", since=11)
def sequence_insert_v11(ctx: NodeContext) -> Sequence[Seq]:
    s = _seq(ctx, 0)
    v = _tensor(ctx, 1, s)
    items = list(s.items)
    items.insert(_pos(ctx, 2, len(items), len(items), insert=True), v)
    return [Seq(items, v.type.dtype)]


@converter("SequenceErase", since=11)
def sequence_erase_v11(ctx: NodeContext) -> Sequence[Seq]:
    s = _seq(ctx, 0)
    if not s.items:
        raise ctx.error("erasing from an empty sequence")
    items = list(s.items)
    del items[_pos(ctx, 1, len(items), len(items) - 1)]
    return [Seq(items, s.dtype)]


@converter("SequenceAt", since=11)
def sequence_at_v11(ctx: NodeContext) -> Sequence[Value]:
    s = _seq(ctx, 0)
    if not ctx.has(1):
        raise ctx.error("needs a position")
    return [s.items[_pos(ctx, 1, len(s.items), 0)]]


@converter("SequenceLength", since=11)
def sequence_length_v11(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.const_value(np.array(len(_seq(ctx, 0).items), np.int64), 0)]


@converter("ConcatFromSequence", since=11)
def concat_from_sequence_v11(ctx: NodeContext) -> Sequence[Value]:
    from minicc.frontend.convert.shape import reshape_to

    s = _seq(ctx, 0)
    if not s.items:
        raise ctx.error("concatenating an empty sequence")
    axis, new = int(ctx.req_attr("axis")), bool(ctx.attr("new_axis", 0))
    r = s.items[0].type.rank + (1 if new else 0)
    if not -r <= axis < r:
        raise ctx.error(f"axis {axis} is out of range for rank {r}")
    axis %= r
    xs = list(s.items)
    if new:
        xs = [reshape_to(ctx, x, x.type.shape[:axis] + (1,) + x.type.shape[axis:], None)
              for x in xs]
    return [xs[0] if len(xs) == 1 else ctx.op("concat", xs, {"axis": axis})]


@converter("SplitToSequence", since=11)
def split_to_sequence_v11(ctx: NodeContext) -> Sequence[Seq]:
    from minicc.frontend.convert.shape import reshape_to

    x = ctx.input(0)
    r = x.type.rank
    axis = int(ctx.attr("axis", 0))
    if not -r <= axis < r:
        raise ctx.error(f"axis {axis} is out of range for {x.type}")
    axis %= r
    n = x.type.shape[axis]
    if not isinstance(n, int):
        raise ctx.error(f"splitting along a symbolic dim ({x.type}) needs static shapes")
    keep = True
    if ctx.has(1):
        sp = np.asarray(ctx.require_const(1, "split")).astype(np.int64)
        if sp.ndim == 0:
            c = int(sp)
            if c <= 0:
                raise ctx.error(f"split {c} must be positive")
            sizes = [min(c, n - k) for k in range(0, n, c)]
        else:
            sizes = [int(v) for v in sp]
            if sum(sizes) != n or min(sizes, default=1) < 0:
                raise ctx.error(f"split sizes {sizes} do not add up to dim {axis} of {x.type}")
    else:
        sizes, keep = [1] * n, bool(ctx.attr("keepdims", 1))
    items, start = [], 0
    for s in sizes:
        v = ctx.op("slice", [x], {"starts": [start], "ends": [start + s], "axes": [axis]}, None)
        if not keep:
            v = reshape_to(ctx, v, v.type.shape[:axis] + v.type.shape[axis + 1:], None)
        items.append(v)
        start += s
    return [Seq(items, x.type.dtype)]
