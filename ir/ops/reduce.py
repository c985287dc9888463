"""Reductions: reduce_{sum,mean,max,min,prod}, argmax/argmin, softmax and log_softmax.

Axes are normalized (non-negative, sorted, non-empty) by the frontend; `keepdims` keeps the reduced
axes as size 1.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from minicc.ir.compute import Compute, Const, Expr, Reduce, Var, axes, call, load, select
from minicc.ir.registry import (Attr, Cost, FusionKind, OpDef, check, io_bytes, norm_axis,
                                register_op)
from minicc.ir.types import DType, TensorType


def _norm_axes(ax: Sequence[int], rank: int) -> tuple[int, ...]:
    out = sorted({norm_axis(a, rank) for a in ax})
    check(len(out) == len(ax), f"repeated axes {list(ax)}")
    return tuple(out)


def reduced_shape(t: TensorType, ax: Sequence[int], keepdims: bool) -> tuple:
    return tuple(1 if k in ax else d for k, d in enumerate(t.shape) if keepdims or k not in ax)


def _reduce_load(t: TensorType, out_ax: Sequence[Var], ax: Sequence[int], keepdims: bool,
                 prefix: str = "r") -> tuple[tuple[tuple[Var, int], ...], Expr]:
    """Reduction variables over `ax` and the load of the input at (output, reduction) position."""
    rvars = tuple((Var(f"{prefix}{k}"), int(t.shape[k])) for k in ax)  # type: ignore[arg-type]
    idx: list[Expr] = []
    it = iter(out_ax)
    rit = iter(rvars)
    for k in range(t.rank):
        if k in ax:
            idx.append(next(rit)[0])
            if keepdims:
                next(it)
        else:
            idx.append(next(it))
    return rvars, load(0, t, idx)


class _ReduceOp(OpDef):
    inputs = (1, 1)
    attrs = {"axes": Attr("ints"), "keepdims": Attr("bool", True)}
    kind = FusionKind.REDUCE
    np_fn = staticmethod(np.sum)
    reducer = "sum"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        t = ins[0]
        ax = _norm_axes(attrs["axes"], t.rank)
        check(len(ax) > 0, "axes must not be empty (the frontend resolves 'all axes')")
        check(t.dtype != DType.BOOL, "cannot reduce bool")
        return [t.with_shape(reduced_shape(t, ax, attrs["keepdims"]))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        ax = _norm_axes(attrs["axes"], x.ndim)
        with np.errstate(all="ignore"):
            if x.size == 0 and self.reducer in ("max", "min"):
                shape = [1 if k in ax else d for k, d in enumerate(x.shape)]
                fill = {"max": -np.inf, "min": np.inf}[self.reducer]
                if x.dtype.kind in "iu":
                    info = np.iinfo(x.dtype)
                    fill = info.min if self.reducer == "max" else info.max
                out = np.full(shape, fill, dtype=x.dtype)
                if not attrs["keepdims"]:
                    out = out.reshape([d for k, d in enumerate(shape) if k not in ax])
                return [out]
            out = self.np_fn(x, axis=ax, keepdims=attrs["keepdims"])
        return [np.asarray(out).astype(x.dtype, copy=False)]

    def body(self, t: TensorType, rvars: tuple, ld: Expr, n: int) -> Expr:
        return Reduce(self.reducer, rvars, ld, t.dtype)

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        t = ins[0]
        ax = _norm_axes(attrs["axes"], t.rank)
        out_ax = axes(outs[0].rank)
        rvars, ld = _reduce_load(t, out_ax, ax, attrs["keepdims"])
        n = int(np.prod([d for _, d in rvars]))
        return [Compute(out_ax, self.body(t, rvars, ld, n))]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        return Cost(ins[0].numel or 0, io_bytes(ins, outs))


@register_op
class ReduceSum(_ReduceOp):
    name = "reduce_sum"
    doc = "sum over `axes`"


@register_op
class ReduceMean(_ReduceOp):
    name = "reduce_mean"
    np_fn = staticmethod(np.mean)
    doc = "mean over `axes`"

    def body(self, t: TensorType, rvars: tuple, ld: Expr, n: int) -> Expr:
        """The spec leaves the mean of nothing undefined; it is 0 here, as in onnxruntime."""
        s = Reduce("sum", rvars, ld, t.dtype)
        n = max(n, 1)
        return s / Const(n if t.dtype.is_int else float(n), t.dtype)

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        ax = _norm_axes(attrs["axes"], x.ndim)
        if x.size == 0 or any(x.shape[a] == 0 for a in ax):
            return [np.sum(x, axis=ax, keepdims=attrs["keepdims"]).astype(x.dtype)]
        if x.dtype.kind in "iu":
            ax = _norm_axes(attrs["axes"], x.ndim)
            n = int(np.prod([x.shape[a] for a in ax]))
            s = np.sum(x, axis=ax, keepdims=attrs["keepdims"]).astype(x.dtype)
            return [(np.trunc(s / n)).astype(x.dtype)]
        return super().reference(ins, attrs)


@register_op
class ReduceMax(_ReduceOp):
    name = "reduce_max"
    np_fn = staticmethod(np.max)
    reducer = "max"
    doc = "max over `axes`"


@register_op
class ReduceMin(_ReduceOp):
    name = "reduce_min"
    np_fn = staticmethod(np.min)
    reducer = "min"
    doc = "min over `axes`"


@register_op
class ReduceProd(_ReduceOp):
    name = "reduce_prod"
    np_fn = staticmethod(np.prod)
    reducer = "prod"
    doc = "product over `axes`"


class _ArgOp(OpDef):
    inputs = (1, 1)
    attrs = {"axis": Attr("int", 0), "keepdims": Attr("bool", True),
             "select_last_index": Attr("bool", False)}
    kind = FusionKind.REDUCE
    reducer = "argmax"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        t = ins[0]
        ax = norm_axis(attrs["axis"], t.rank)
        check(isinstance(t.shape[ax], str) or t.shape[ax] > 0, "cannot reduce an empty axis")
        return [TensorType(DType.I64, reduced_shape(t, (ax,), attrs["keepdims"]))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        ax = norm_axis(attrs["axis"], x.ndim)
        fn = np.argmax if self.reducer == "argmax" else np.argmin
        if attrs["select_last_index"]:
            n = x.shape[ax]
            out = n - 1 - fn(np.flip(x, axis=ax), axis=ax)
        else:
            out = fn(x, axis=ax)
        if attrs["keepdims"]:
            out = np.expand_dims(out, ax)
        return [np.asarray(out, dtype=np.int64)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        t = ins[0]
        ax = norm_axis(attrs["axis"], t.rank)
        out_ax = axes(outs[0].rank)
        rvars, ld = _reduce_load(t, out_ax, (ax,), attrs["keepdims"])
        if attrs["select_last_index"]:
            (r, n), = rvars
            idx = list(ld.index)  # type: ignore[attr-defined]
            idx[ax] = (n - 1) - r
            ld = load(0, t, idx)
            return [Compute(out_ax, (n - 1) - Reduce(self.reducer, rvars, ld, DType.I64))]
        return [Compute(out_ax, Reduce(self.reducer, rvars, ld, DType.I64))]


@register_op
class ArgMax(_ArgOp):
    name = "argmax"
    doc = "index of the first maximum along `axis` (last with select_last_index)"


@register_op
class ArgMin(_ArgOp):
    name = "argmin"
    reducer = "argmin"
    doc = "index of the first minimum along `axis` (last with select_last_index)"


@register_op
class Softmax(OpDef):
    name = "softmax"
    inputs = (1, 1)
    attrs = {"axis": Attr("int", -1)}
    kind = FusionKind.REDUCE
    log = False
    doc = "y = exp(x - max(x)) / sum(exp(x - max(x))) along `axis`"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        norm_axis(attrs["axis"], ins[0].rank)
        check(ins[0].dtype.is_float, f"needs a float tensor, got {ins[0]}")
        return [ins[0]]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        ax = norm_axis(attrs["axis"], x.ndim)
        if x.size == 0:
            return [x.copy()]
        z = x - x.max(axis=ax, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=ax, keepdims=True)
        return [(z - np.log(s) if self.log else e / s).astype(x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        t = ins[0]
        ax = norm_axis(attrs["axis"], t.rank)
        out_ax = axes(t.rank)
        n = int(t.shape[ax])  # type: ignore[arg-type]
        x = load(0, t, out_ax)

        def at(v: Var) -> Expr:
            idx = list(out_ax)
            idx[ax] = v
            return load(0, t, idx)

        r, q = Var("r"), Var("q")
        mx = Reduce("max", ((q, n),), at(q), t.dtype)
        s = Reduce("sum", ((r, n),), call("exp", at(r) - mx), t.dtype)
        if self.log:
            return [Compute(out_ax, x - mx - call("log", s))]
        return [Compute(out_ax, call("exp", x - mx) / s)]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        return Cost(12 * (ins[0].numel or 0), io_bytes(ins, outs))


@register_op
class LogSoftmax(Softmax):
    name = "log_softmax"
    log = True
    doc = "y = x - max(x) - log(sum(exp(x - max(x)))) along `axis`"


@register_op
class CumSum(OpDef):
    name = "cumsum"
    host = True
    inputs = (1, 1)
    attrs = {"axis": Attr("int"), "exclusive": Attr("bool", False),
             "reverse": Attr("bool", False)}
    kind = FusionKind.OPAQUE
    doc = "running sum along `axis` (optionally exclusive and/or reversed)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        norm_axis(attrs["axis"], ins[0].rank)
        return [ins[0]]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        ax = norm_axis(attrs["axis"], x.ndim)
        if attrs["reverse"]:
            x = np.flip(x, ax)
        y = np.cumsum(x, axis=ax, dtype=x.dtype)
        if attrs["exclusive"]:
            y = y - x
        if attrs["reverse"]:
            y = np.flip(y, ax)
        return [np.ascontiguousarray(y)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        t = ins[0]
        ax = norm_axis(attrs["axis"], t.rank)
        out_ax = axes(t.rank)
        n = int(t.shape[ax])  # type: ignore[arg-type]
        r = Var("r")
        idx = list(out_ax)
        idx[ax] = r
        i = out_ax[ax]
        if attrs["reverse"]:
            keep = r.gt(i) if attrs["exclusive"] else r.ge(i)
        else:
            keep = r.lt(i) if attrs["exclusive"] else r.le(i)
        body = select(keep, load(0, t, idx), Const(0, t.dtype) if not t.dtype.is_float
                      else Const(0.0, t.dtype))
        return [Compute(out_ax, Reduce("sum", ((r, n),), body, t.dtype))]

