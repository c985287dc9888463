"""Opaque and data-dependent ops: top_k, scatter/gather variants, one_hot, trilu.

These have no compute definition worth fusing (or none at all); the compiled path runs them as
their own kernels or on the host.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import InterpreterError
from minicc.ir.compute import Compute, Const, axes, cast, load, select
from minicc.ir.registry import Attr, Cost, FusionKind, OpDef, check, io_bytes, norm_axis, register_op
from minicc.ir.types import UNKNOWN, DType, TensorType


@register_op
class TopK(OpDef):
    name = "top_k"
    host = True
    inputs = (1, 1)
    attrs = {"k": Attr("int"), "axis": Attr("int", -1), "largest": Attr("bool", True),
             "sorted": Attr("bool", True)}
    kind = FusionKind.OPAQUE
    doc = "the k largest (or smallest) values along `axis` and their i64 indices; ties keep " \
          "the lower index first"

    def num_outputs(self, attrs: Mapping[str, Any]) -> int:
        return 2

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        t = ins[0]
        a = norm_axis(attrs["axis"], t.rank)
        k = attrs["k"]
        check(k >= 0, f"k must be >= 0, got {k}")
        if isinstance(t.shape[a], int):
            check(k <= t.shape[a], f"k={k} exceeds dim {a} of {t}")
        shape = t.shape[:a] + (k,) + t.shape[a + 1:]
        return [t.with_shape(shape), TensorType(DType.I64, shape)]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        a = norm_axis(attrs["axis"], x.ndim)
        k = attrs["k"]
        key = -x if attrs["largest"] else x
        if x.dtype.kind == "u" and attrs["largest"]:
            key = np.iinfo(x.dtype).max - x
        idx = np.argsort(key, axis=a, kind="stable")
        idx = np.take(idx, np.arange(k), axis=a)
        return [np.take_along_axis(x, idx, axis=a), idx.astype(np.int64)]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        n = ins[0].numel or 0
        return Cost(n * max(1, int(np.log2(max(attrs["k"], 2)))), io_bytes(ins, outs))


@register_op
class ScatterElements(OpDef):
    name = "scatter_elements"
    host = True
    inputs = (3, 3)
    attrs = {"axis": Attr("int", 0), "reduction": Attr("str", "none")}
    kind = FusionKind.OPAQUE
    doc = "copy of data with data[index[i][j]][j] = updates[i][j] along `axis`"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        d, i, u = ins
        norm_axis(attrs["axis"], d.rank)
        check(i.dtype in (DType.I32, DType.I64), f"indices must be i32/i64, got {i}")
        check(u.dtype == d.dtype and u.rank == d.rank == i.rank, f"bad operands {d}, {i}, {u}")
        check(attrs["reduction"] in ("none", "add", "mul", "max", "min"),
              f"unknown reduction '{attrs['reduction']}'")
        return [d]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        d, i, u = ins
        a = norm_axis(attrs["axis"], d.ndim)
        out = d.copy()
        ii = np.where(i < 0, i + d.shape[a], i).astype(np.int64)
        red = attrs["reduction"]
        for pos in np.ndindex(*i.shape):
            tgt = list(pos)
            tgt[a] = ii[pos]
            t = tuple(tgt)
            v = u[pos]
            out[t] = v if red == "none" else {"add": out[t] + v, "mul": out[t] * v,
                                              "max": max(out[t], v), "min": min(out[t], v)}[red]
        return [out]


@register_op
class ScatterND(OpDef):
    name = "scatter_nd"
    host = True
    inputs = (3, 3)
    attrs = {"reduction": Attr("str", "none")}
    kind = FusionKind.OPAQUE
    doc = "copy of data with slices at `indices` replaced (or reduced) by `updates`"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        d, i, u = ins
        check(i.dtype == DType.I64, f"indices must be i64, got {i}")
        check(u.dtype == d.dtype, f"updates dtype {u} differs from data {d}")
        return [d]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        d, i, u = ins
        out = d.copy()
        red = attrs["reduction"]
        for pos in np.ndindex(*i.shape[:-1]):
            t = tuple(int(x) for x in i[pos])
            v = u[pos]
            out[t] = v if red == "none" else {"add": out[t] + v, "mul": out[t] * v,
                                              "max": np.maximum(out[t], v),
                                              "min": np.minimum(out[t], v)}[red]
        return [out]


@register_op
class GatherND(OpDef):
    name = "gather_nd"
    host = True
    inputs = (2, 2)
    attrs = {"batch_dims": Attr("int", 0)}
    kind = FusionKind.OPAQUE
    doc = "slices of data addressed by the last axis of indices (after batch_dims)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        d, i = ins
        b = attrs["batch_dims"]
        check(i.dtype == DType.I64, f"indices must be i64, got {i}")
        q = i.shape[-1]
        check(isinstance(q, int) and q <= d.rank - b, f"index depth {q} too large for {d}")
        return [d.with_shape(i.shape[:-1] + d.shape[b + q:])]  # type: ignore[operator]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        d, i = ins
        b = attrs["batch_dims"]
        bshape = d.shape[:b]
        q = i.shape[-1]
        out_inner = i.shape[b:-1] + d.shape[b + q:]
        out = np.empty(bshape + out_inner, dtype=d.dtype)
        for bpos in np.ndindex(*bshape):
            db, ib = d[bpos], i[bpos]
            for pos in np.ndindex(*ib.shape[:-1]):
                idx = tuple(int(x) for x in ib[pos])
                out[bpos + pos] = db[idx]
        return [out]


@register_op
class OneHot(OpDef):
    name = "one_hot"
    inputs = (2, 2)
    attrs = {"depth": Attr("int"), "axis": Attr("int", -1)}
    kind = FusionKind.INJECTIVE
    doc = "one-hot of integer indices along a new `axis`; values = [off, on] (2nd operand)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        i, v = ins
        a = norm_axis(attrs["axis"], i.rank + 1)
        check(v.rank == 1 and v.shape[0] in (2, UNKNOWN), f"values must be [2], got {v}")
        return [TensorType(v.dtype, i.shape[:a] + (attrs["depth"],) + i.shape[a:])]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        i, v = ins
        depth = attrs["depth"]
        a = norm_axis(attrs["axis"], i.ndim + 1)
        ii = np.where(i < 0, i + depth, i).astype(np.int64)
        hot = np.expand_dims(ii, a) == np.arange(depth).reshape(
            [-1 if k == a else 1 for k in range(i.ndim + 1)])
        return [np.where(hot, v[1], v[0]).astype(v.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        i, v = ins
        depth = attrs["depth"]
        a = norm_axis(attrs["axis"], i.rank + 1)
        ox = axes(i.rank + 1)
        ix = cast(load(0, i, list(ox[:a]) + list(ox[a + 1:])), DType.I64)
        ix = select(ix.lt(0), ix + depth, ix)
        return [Compute(ox, select(ix.eq(ox[a]), load(1, v, [Const(1, DType.I64)]),
                                   load(1, v, [Const(0, DType.I64)])))]


@register_op
class Trilu(OpDef):
    name = "trilu"
    inputs = (1, 1)
    attrs = {"upper": Attr("bool", True), "k": Attr("int", 0)}
    kind = FusionKind.INJECTIVE
    doc = "keep the upper (or lower) triangle of the last two axes, shifted by diagonal k"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        check(ins[0].rank >= 2, f"needs rank >= 2, got {ins[0]}")
        return [ins[0]]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        fn = np.triu if attrs["upper"] else np.tril
        return [fn(x, attrs["k"]).astype(x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        t = ins[0]
        ox = axes(t.rank)
        i, j = ox[-2], ox[-1]
        keep = (j - i).ge(attrs["k"]) if attrs["upper"] else (j - i).le(attrs["k"])
        zero = Const(0.0 if t.dtype.is_float else (False if t.dtype == DType.BOOL else 0), t.dtype)
        return [Compute(ox, select(keep, load(0, t, ox), zero))]


def check_index_range(name: str, idx: np.ndarray, n: int) -> None:
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise InterpreterError(f"{name}: index out of range [{-n}, {n})")
