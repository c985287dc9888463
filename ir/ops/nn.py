"""Neural-network ops: convolution (N-d, grouped), transposed convolution, pooling and
normalizations. Padding is explicit (`pads` = begins then ends); the frontend resolves ONNX's
auto_pad from static shapes.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.ir.compute import (Compute, Const, Expr, Reduce, Var, axes, both, broadcast_index, call,
                               cast, in_range, load, select)
from minicc.ir.registry import Attr, Cost, FusionKind, OpDef, check, io_bytes, norm_axis, register_op
from minicc.ir.types import UNKNOWN, Dim, DType, TensorType


def _spatial(attrs: Mapping[str, Any], key: str, nd: int, default: int) -> tuple[int, ...]:
    v = attrs[key]
    if not v:
        return (default,) * nd
    check(len(v) == nd, f"'{key}' has {len(v)} entries for {nd} spatial dims")
    return tuple(v)


def _pads(attrs: Mapping[str, Any], nd: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    p = attrs["pads"]
    if not p:
        return (0,) * nd, (0,) * nd
    check(len(p) == 2 * nd, f"'pads' has {len(p)} entries for {nd} spatial dims (needs {2*nd})")
    check(all(x >= 0 for x in p), f"negative pads {list(p)}")
    return tuple(p[:nd]), tuple(p[nd:])


def conv_out_dim(n: Dim, k: int, s: int, d: int, pb: int, pe: int, ceil: bool = False) -> Dim:
    if not isinstance(n, int):
        return UNKNOWN
    span = n + pb + pe - d * (k - 1) - 1
    check(span >= 0, f"window {k} (dilation {d}) larger than padded input {n + pb + pe}")
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + pb:  # the last window must start inside the input or left pad
            out -= 1
        return out
    return span // s + 1


CONV_ATTRS = {"strides": Attr("ints", ()), "pads": Attr("ints", ()),
              "dilations": Attr("ints", ()), "group": Attr("int", 1)}


@register_op
class Conv(OpDef):
    name = "conv"
    template = "conv2d_gemm"
    inputs = (2, 3)
    attrs = CONV_ATTRS
    kind = FusionKind.COMPLEX
    doc = "N-d grouped convolution: X[N,C,...] * W[M,C/group,k...] (+ B[M])"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        x, w = ins[0], ins[1]
        check(x.rank >= 3 and w.rank == x.rank, f"needs X[N,C,...] and W[M,C/g,...] of equal "
              f"rank, got {x} and {w}")
        check(x.dtype == w.dtype and x.dtype.is_float, f"needs float X and W, got {x}, {w}")
        nd = x.rank - 2
        g = attrs["group"]
        check(g >= 1, f"group must be >= 1, got {g}")
        c, m = x.shape[1], w.shape[0]
        if isinstance(c, int) and isinstance(w.shape[1], int):
            check(c == w.shape[1] * g, f"X has {c} channels but W expects {w.shape[1]} x "
                  f"group {g}")
        if isinstance(m, int):
            check(m % g == 0, f"{m} output channels not divisible by group {g}")
        if len(ins) == 3:
            check(ins[2].rank == 1 and ins[2].shape[0] in (m, UNKNOWN) or isinstance(
                ins[2].shape[0], str), f"bias must be [{m}], got {ins[2]}")
        s = _spatial(attrs, "strides", nd, 1)
        d = _spatial(attrs, "dilations", nd, 1)
        pb, pe = _pads(attrs, nd)
        ks = w.shape[2:]
        check(all(isinstance(k, int) for k in ks), f"kernel shape must be static, got {w}")
        sp = tuple(conv_out_dim(x.shape[2 + i], ks[i], s[i], d[i], pb[i], pe[i])  # type: ignore
                   for i in range(nd))
        return [TensorType(x.dtype, (x.shape[0], m) + sp)]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x, w = ins[0], ins[1]
        nd = x.ndim - 2
        s = _spatial(attrs, "strides", nd, 1)
        d = _spatial(attrs, "dilations", nd, 1)
        pb, pe = _pads(attrs, nd)
        g = attrs["group"]
        n, c = x.shape[:2]
        m = w.shape[0]
        ks = w.shape[2:]
        xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)))
        out_sp = [conv_out_dim(x.shape[2 + i], ks[i], s[i], d[i], pb[i], pe[i]) for i in range(nd)]
        cg, mg = c // g, m // g
        xg = xp.reshape((n, g, cg) + xp.shape[2:])
        wg = w.reshape((g, mg, cg) + tuple(ks))
        p = int(np.prod(out_sp))
        acc = np.zeros((n, g, mg, p), dtype=np.float64 if x.dtype == np.float64 else np.float32)
        for kpos in itertools.product(*(range(k) for k in ks)):
            sl = tuple(slice(kpos[i] * d[i], kpos[i] * d[i] + (out_sp[i] - 1) * s[i] + 1, s[i])
                       for i in range(nd))
            patch = xg[(slice(None),) * 3 + sl].reshape(n, g, cg, p)
            acc += np.matmul(wg[(slice(None),) * 3 + kpos], patch)
        out = acc.reshape((n, m) + tuple(out_sp)).astype(x.dtype)
        if len(ins) == 3:
            out += ins[2].reshape((1, m) + (1,) * nd)
        return [out]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x, w = ins[0], ins[1]
        nd = x.rank - 2
        s = _spatial(attrs, "strides", nd, 1)
        d = _spatial(attrs, "dilations", nd, 1)
        pb, _ = _pads(attrs, nd)
        g = attrs["group"]
        m = int(w.shape[0])  # type: ignore[arg-type]
        cg = int(w.shape[1])  # type: ignore[arg-type]
        ox = axes(outs[0].rank)
        rc = Var("rc")
        rk = [Var(f"rk{i}") for i in range(nd)]
        chan = rc if g == 1 else (ox[1] // (m // g)) * cg + rc
        pos = [ox[2 + i] * s[i] + rk[i] * d[i] - pb[i] for i in range(nd)]
        cond = both(*(in_range(p, int(x.shape[2 + i])) for i, p in enumerate(pos)))  # type: ignore
        xv: Expr = load(0, x, [ox[0], chan] + pos)
        if cond is not None:
            xv = select(cond, xv, 0.0)
        body = xv * load(1, w, [ox[1], rc] + rk)
        red = ((rc, cg),) + tuple((rk[i], int(w.shape[2 + i])) for i in range(nd))  # type: ignore
        out: Expr = Reduce("sum", red, body, x.dtype)
        if len(ins) == 3:
            out = out + load(2, ins[2], [ox[1]])
        return [Compute(ox, out)]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        w = ins[1]
        per = int(np.prod([d for d in w.shape[1:] if isinstance(d, int)]))
        return Cost(2 * (outs[0].numel or 0) * per, io_bytes(ins, outs))


@register_op
class ConvTranspose(OpDef):
    name = "conv_transpose"
    inputs = (2, 3)
    attrs = {**CONV_ATTRS, "output_padding": Attr("ints", ())}
    kind = FusionKind.COMPLEX
    doc = "N-d transposed convolution: X[N,C,...], W[C,M/group,k...] (+ B[M])"

    def _geom(self, x: TensorType | np.ndarray, w: Any, attrs: Mapping[str, Any]) -> tuple:
        nd = len(x.shape) - 2
        s = _spatial(attrs, "strides", nd, 1)
        d = _spatial(attrs, "dilations", nd, 1)
        op = _spatial(attrs, "output_padding", nd, 0)
        pb, pe = _pads(attrs, nd)
        ks = tuple(int(k) for k in w.shape[2:])
        out = []
        for i in range(nd):
            n = x.shape[2 + i]
            out.append(UNKNOWN if not isinstance(n, (int, np.integer)) else
                       s[i] * (int(n) - 1) + op[i] + (ks[i] - 1) * d[i] + 1 - pb[i] - pe[i])
        return nd, s, d, pb, pe, ks, tuple(out)

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        x, w = ins[0], ins[1]
        check(x.rank >= 3 and w.rank == x.rank, f"needs X[N,C,...] and W[C,M/g,...], got {x}, {w}")
        check(x.dtype == w.dtype and x.dtype.is_float, f"needs float X and W, got {x}, {w}")
        check(all(isinstance(k, int) for k in w.shape[1:]), f"kernel shape must be static: {w}")
        g = attrs["group"]
        if isinstance(x.shape[1], int) and isinstance(w.shape[0], int):
            check(x.shape[1] == w.shape[0], f"X has {x.shape[1]} channels, W has {w.shape[0]}")
        _, _, _, _, _, _, sp = self._geom(x, w, attrs)
        check(all(not isinstance(v, int) or v > 0 for v in sp), f"empty output {sp}")
        return [TensorType(x.dtype, (x.shape[0], int(w.shape[1]) * g) + sp)]  # type: ignore

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x, w = ins[0], ins[1]
        nd, s, d, pb, pe, ks, sp = self._geom(x, w, attrs)
        g = attrs["group"]
        n, c = x.shape[:2]
        mg = w.shape[1]
        cg = c // g
        full = [s[i] * (x.shape[2 + i] - 1) + (ks[i] - 1) * d[i] + 1 + max(sp[i] + pb[i] -
                (s[i] * (x.shape[2 + i] - 1) + (ks[i] - 1) * d[i] + 1), 0) for i in range(nd)]
        acc = np.zeros((n, g, mg) + tuple(full), dtype=np.float64)
        xg = x.reshape((n, g, cg) + x.shape[2:]).astype(np.float64)
        wg = w.reshape((g, cg, mg) + ks).astype(np.float64)
        for kpos in itertools.product(*(range(k) for k in ks)):
            contrib = np.einsum("ngc...,gcm->ngm...", xg, wg[(slice(None),) * 3 + kpos])
            sl = tuple(slice(kpos[i] * d[i], kpos[i] * d[i] + (x.shape[2 + i] - 1) * s[i] + 1,
                             s[i]) for i in range(nd))
            acc[(slice(None),) * 3 + sl] += contrib
        crop = tuple(slice(pb[i], pb[i] + sp[i]) for i in range(nd))
        out = acc[(slice(None),) * 3 + crop].reshape((n, g * mg) + tuple(sp))
        if len(ins) == 3:
            out = out + ins[2].reshape((1, g * mg) + (1,) * nd)
        return [out.astype(x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x, w = ins[0], ins[1]
        nd, s, d, pb, _, ks, _ = self._geom(x, w, attrs)
        g = attrs["group"]
        mg = int(w.shape[1])  # type: ignore[arg-type]
        cg = int(x.shape[1]) // g  # type: ignore[arg-type]
        ox = axes(outs[0].rank)
        rc = Var("rc")
        rk = [Var(f"rk{i}") for i in range(nd)]
        chan = rc if g == 1 else (ox[1] // mg) * cg + rc
        conds: list[Expr | None] = []
        pos: list[Expr] = []
        for i in range(nd):
            t = ox[2 + i] + pb[i] - rk[i] * d[i]
            q = t // s[i]
            conds.append(t.ge(0))
            if s[i] != 1:
                conds.append((t % s[i]).eq(0))
            conds.append(q.lt(int(x.shape[2 + i])))  # type: ignore[arg-type]
            pos.append(q)
        xv = select(both(*conds), load(0, x, [ox[0], chan] + pos), 0.0)  # type: ignore[arg-type]
        body = xv * load(1, w, [chan, ox[1] % mg if g > 1 else ox[1]] + rk)
        red = ((rc, cg),) + tuple((rk[i], ks[i]) for i in range(nd))
        out: Expr = Reduce("sum", red, body, x.dtype)
        if len(ins) == 3:
            out = out + load(2, ins[2], [ox[1]])
        return [Compute(ox, out)]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        w = ins[1]
        per = int(np.prod([d for d in w.shape[1:] if isinstance(d, int)]))
        return Cost(2 * (ins[0].numel or 0) * per, io_bytes(ins, outs))


POOL_ATTRS = {"kernel_shape": Attr("ints"), "strides": Attr("ints", ()),
              "pads": Attr("ints", ()), "dilations": Attr("ints", ()),
              "ceil_mode": Attr("bool", False)}


class _Pool(OpDef):
    inputs = (1, 1)
    kind = FusionKind.REDUCE

    def geom(self, shape: Sequence[Dim], attrs: Mapping[str, Any]) -> tuple:
        nd = len(shape) - 2
        ks = tuple(attrs["kernel_shape"])
        check(len(ks) == nd, f"kernel_shape {list(ks)} does not match {nd} spatial dims")
        s = _spatial(attrs, "strides", nd, 1)
        d = _spatial(attrs, "dilations", nd, 1)
        pb, pe = _pads(attrs, nd)
        sp = tuple(conv_out_dim(shape[2 + i], ks[i], s[i], d[i], pb[i], pe[i], attrs["ceil_mode"])
                   for i in range(nd))
        return nd, ks, s, d, pb, pe, sp

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        x = ins[0]
        check(x.rank >= 3, f"needs X[N,C,...], got {x}")
        check(x.dtype != DType.BOOL, f"cannot pool {x}")
        *_, sp = self.geom(x.shape, attrs)
        return [x.with_shape(x.shape[:2] + sp)]

    def windows(self, x: np.ndarray, attrs: Mapping[str, Any], fill: float) -> tuple:
        """Padded input and an iterator of strided window views, one per kernel offset."""
        nd, ks, s, d, pb, pe, sp = self.geom(x.shape, attrs)
        extra = [max(0, (sp[i] - 1) * s[i] + (ks[i] - 1) * d[i] + 1 - (x.shape[2 + i] + pb[i] +
                                                                        pe[i])) for i in range(nd)]
        xp = np.pad(x, [(0, 0), (0, 0)] + [(pb[i], pe[i] + extra[i]) for i in range(nd)],
                    constant_values=fill)

        def views():
            for kpos in itertools.product(*(range(k) for k in ks)):
                sl = tuple(slice(kpos[i] * d[i], kpos[i] * d[i] + (sp[i] - 1) * s[i] + 1, s[i])
                           for i in range(nd))
                yield kpos, xp[(slice(None),) * 2 + sl]
        return (nd, ks, s, d, pb, pe, sp), views()

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        k = int(np.prod(attrs["kernel_shape"]))
        return Cost((outs[0].numel or 0) * k, io_bytes(ins, outs))

    def window_index(self, x: TensorType, ox: Sequence[Var], attrs: Mapping[str, Any]) -> tuple:
        nd, ks, s, d, pb, pe, sp = self.geom(x.shape, attrs)
        rk = [Var(f"rk{i}") for i in range(nd)]
        pos = [ox[2 + i] * s[i] + rk[i] * d[i] - pb[i] for i in range(nd)]
        conds: list[Expr | None] = []
        for i, p in enumerate(pos):
            n = int(x.shape[2 + i])  # type: ignore[arg-type]
            if not isinstance(sp[i], int) or isinstance(p, Var):
                conds.append(in_range(p, n))
                continue
            # only the sides a window can cross: squeezenet's 3x3 stride-2 pools have none,
            # and a select per tap kept them from being plain strided loads
            if pb[i] > 0:
                conds.append(p.ge(0))
            if (sp[i] - 1) * s[i] + (ks[i] - 1) * d[i] - pb[i] >= n:
                conds.append(p.lt(n))
        cond = both(*conds)
        return rk, pos, cond, tuple((rk[i], ks[i]) for i in range(nd))


@register_op
class MaxPool(_Pool):
    name = "max_pool"
    attrs = POOL_ATTRS
    doc = "max over each window (padding never wins)"

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        _, views = self.windows(x, attrs, fill)
        out = None
        for _, v in views:
            out = v.copy() if out is None else np.maximum(out, v)
        return [np.asarray(out, dtype=x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x = ins[0]
        ox = axes(x.rank)
        rk, pos, cond, red = self.window_index(x, ox, attrs)
        v: Expr = load(0, x, [ox[0], ox[1]] + pos)
        if cond is not None:
            low = -math.inf if x.dtype.is_float else int(np.iinfo(x.dtype.np).min)
            v = select(cond, v, low)
        return [Compute(ox, Reduce("max", red, v, x.dtype))]


@register_op
class AvgPool(_Pool):
    name = "avg_pool"
    attrs = {**POOL_ATTRS, "count_include_pad": Attr("bool", False)}
    doc = "mean over each window; the divisor counts pads only with count_include_pad"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        check(ins[0].dtype.is_float, f"needs a float tensor, got {ins[0]}")
        return super().infer(ins, attrs)

    def _divisor(self, shape: Sequence[int], attrs: Mapping[str, Any]) -> np.ndarray:
        """Per-output-position element count (ONNX/onnxruntime rule), shape [1,1,*out]."""
        nd, ks, s, d, pb, pe, sp = self.geom(shape, attrs)
        counts = []
        for i in range(nd):
            o = np.arange(sp[i])
            start = o * s[i] - pb[i]
            end = np.minimum(start + (ks[i] - 1) * d[i] + 1, shape[2 + i] + pe[i])
            if attrs["count_include_pad"]:
                c = (end - start + d[i] - 1) // d[i]
            else:
                k = np.arange(ks[i])
                pos = start[:, None] + k[None, :] * d[i]
                c = ((pos >= 0) & (pos < shape[2 + i])).sum(axis=1)
            counts.append(c)
        div = counts[0]
        for c in counts[1:]:
            div = np.multiply.outer(div, c)
        return np.asarray(div, dtype=np.float64).reshape((1, 1) + tuple(sp))

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        _, views = self.windows(x, attrs, 0.0)
        acc = None
        for _, v in views:
            acc = v.astype(np.float64) if acc is None else acc + v
        out = acc / np.maximum(self._divisor(x.shape, attrs), 1)
        return [out.astype(x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x = ins[0]
        ox = axes(x.rank)
        rk, pos, cond, red = self.window_index(x, ox, attrs)
        v: Expr = load(0, x, [ox[0], ox[1]] + pos)
        if cond is not None:
            v = select(cond, v, 0.0)
        total = Reduce("sum", red, v, x.dtype)
        nd, ks, s, d, pb, pe, sp = self.geom(x.shape, attrs)
        # divisor: product over spatial dims of the per-dim count, as an index expression
        div: Expr | None = None
        for i in range(nd):
            start = ox[2 + i] * s[i] - pb[i]
            n = int(x.shape[2 + i])  # type: ignore[arg-type]
            if attrs["count_include_pad"]:
                end = call("min", start + ((ks[i] - 1) * d[i] + 1), n + pe[i])
                c = (end - start + (d[i] - 1)) // d[i]
            else:
                c = Const(0, DType.I64)
                for k in range(ks[i]):
                    p = start + k * d[i]
                    c = c + select(both(p.ge(0), p.lt(n)), 1, 0)  # type: ignore[arg-type]
            div = c if div is None else div * c
        assert div is not None
        return [Compute(ox, total / cast(call("max", div, 1), x.dtype))]


@register_op
class BatchNorm(OpDef):
    name = "batch_norm"
    inputs = (5, 5)
    attrs = {"epsilon": Attr("float", 1e-5)}
    kind = FusionKind.BROADCAST
    doc = "inference batch norm over channel axis 1: (x - mean) / sqrt(var + eps) * scale + bias"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        x = ins[0]
        check(x.rank >= 2 and x.dtype.is_float, f"needs float X[N,C,...], got {x}")
        for name, t in zip(("scale", "bias", "mean", "var"), ins[1:]):
            check(t.rank == 1 and (t.shape[0] == x.shape[1] or not isinstance(t.shape[0], int)
                                   or not isinstance(x.shape[1], int)),
                  f"{name} must be [{x.shape[1]}], got {t}")
        return [x]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x, sc, b, m, v = ins
        sh = (1, -1) + (1,) * (x.ndim - 2)
        inv = 1.0 / np.sqrt(v.astype(np.float64) + attrs["epsilon"])
        y = (x - m.reshape(sh)) * (inv * sc).reshape(sh) + b.reshape(sh)
        return [y.astype(x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x = ins[0]
        ox = axes(x.rank)
        c = [ox[1]]
        xv = load(0, x, ox)
        inv = call("sqrt", load(4, ins[4], c) + attrs["epsilon"])
        y = (xv - load(3, ins[3], c)) / inv * load(1, ins[1], c) + load(2, ins[2], c)
        return [Compute(ox, y)]


def _shifted_mean(x: TensorType, outer: Sequence[Expr], r: Sequence[Var], sp: Sequence[int],
                  n: float) -> Expr:
    """The mean over the trailing axes, summed as deviations from the first element: exact
    for a constant row (the norm of a constant row is then exactly its bias, where a plain sum
    is off by some ulps that the division by sqrt(eps) blows up) and smaller sums otherwise."""
    pivot = load(0, x, tuple(outer) + (Const(0, DType.I64),) * len(sp))
    body = load(0, x, tuple(outer) + tuple(r)) - pivot
    return pivot + Reduce("sum", tuple(zip(r, sp)), body, x.dtype) / n


@register_op
class InstanceNorm(OpDef):
    name = "instance_norm"
    inputs = (3, 3)
    attrs = {"epsilon": Attr("float", 1e-5)}
    kind = FusionKind.REDUCE
    doc = "normalize each (n, c) over the spatial dims, then scale[c] and bias[c]"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        x = ins[0]
        check(x.rank >= 3 and x.dtype.is_float, f"needs float X[N,C,...], got {x}")
        return [x]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x, sc, b = ins
        ax = tuple(range(2, x.ndim))
        xd = x.astype(np.float64)
        mean = xd.mean(axis=ax, keepdims=True)
        var = ((xd - mean) ** 2).mean(axis=ax, keepdims=True)
        sh = (1, -1) + (1,) * (x.ndim - 2)
        y = (xd - mean) / np.sqrt(var + attrs["epsilon"]) * sc.reshape(sh) + b.reshape(sh)
        return [y.astype(x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x = ins[0]
        ox = axes(x.rank)
        sp = [int(d) for d in x.shape[2:]]  # type: ignore[arg-type]
        n = float(np.prod(sp))
        r = [Var(f"r{i}") for i in range(len(sp))]
        q = [Var(f"q{i}") for i in range(len(sp))]
        mean = _shifted_mean(x, ox[:2], r, sp, n)
        dev = load(0, x, ox[:2] + tuple(q)) - mean
        var = Reduce("sum", tuple(zip(q, sp)), dev * dev, x.dtype) / n
        y = (load(0, x, ox) - mean) / call("sqrt", var + attrs["epsilon"])
        return [Compute(ox, y * load(1, ins[1], [ox[1]]) + load(2, ins[2], [ox[1]]))]


@register_op
class LayerNorm(OpDef):
    name = "layer_norm"
    inputs = (2, 3)
    attrs = {"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5)}
    kind = FusionKind.REDUCE
    doc = "normalize over dims [axis, rank), then * scale (+ bias), both broadcast"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        x = ins[0]
        check(x.dtype.is_float, f"needs a float tensor, got {x}")
        norm_axis(attrs["axis"], x.rank)
        for t in ins[1:]:
            check(t.dtype == x.dtype, f"scale/bias dtype {t} differs from {x}")
        return [x]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        ax = tuple(range(norm_axis(attrs["axis"], x.ndim), x.ndim))
        xd = x.astype(np.float64)
        mean = xd.mean(axis=ax, keepdims=True)
        var = ((xd - mean) ** 2).mean(axis=ax, keepdims=True)
        y = (xd - mean) / np.sqrt(var + attrs["epsilon"]) * ins[1]
        if len(ins) == 3:
            y = y + ins[2]
        return [y.astype(x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x = ins[0]
        a = norm_axis(attrs["axis"], x.rank)
        ox = axes(x.rank)
        sp = [int(d) for d in x.shape[a:]]  # type: ignore[arg-type]
        n = float(np.prod(sp))
        r = [Var(f"r{i}") for i in range(len(sp))]
        q = [Var(f"q{i}") for i in range(len(sp))]
        mean = _shifted_mean(x, ox[:a], r, sp, n)
        dev = load(0, x, ox[:a] + tuple(q)) - mean
        var = Reduce("sum", tuple(zip(q, sp)), dev * dev, x.dtype) / n
        y = (load(0, x, ox) - mean) / call("sqrt", var + attrs["epsilon"])
        y = y * load(1, ins[1], broadcast_index(ins[1], ox))
        if len(ins) == 3:
            y = y + load(2, ins[2], broadcast_index(ins[2], ox))
        return [Compute(ox, y)]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        return Cost(8 * (ins[0].numel or 0), io_bytes(ins, outs))


@register_op
class LRN(OpDef):
    name = "lrn"
    inputs = (1, 1)
    attrs = {"size": Attr("int"), "alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75),
             "bias": Attr("float", 1.0)}
    kind = FusionKind.REDUCE
    doc = "local response normalization across channels: x / (bias + alpha/size * sum x^2)^beta"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        check(ins[0].rank >= 3 and ins[0].dtype.is_float, f"needs float X[N,C,...], got {ins[0]}")
        check(attrs["size"] >= 1, "size must be >= 1")
        return [ins[0]]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        size = attrs["size"]
        lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
        sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
        c = x.shape[1]
        s = sum(sq[:, k:k + c] for k in range(size))
        y = x / (attrs["bias"] + attrs["alpha"] / size * s) ** attrs["beta"]
        return [y.astype(x.dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x = ins[0]
        size = attrs["size"]
        lo = (size - 1) // 2
        ox = axes(x.rank)
        r = Var("r")
        ch = ox[1] + r - lo
        idx = list(ox)
        idx[1] = ch
        v = load(0, x, idx)
        sq = select(both(ch.ge(0), ch.lt(int(x.shape[1]))), v * v, 0.0)  # type: ignore[arg-type]
        s = Reduce("sum", ((r, size),), sq, x.dtype)
        den = call("pow", s * (attrs["alpha"] / size) + attrs["bias"], attrs["beta"])
        return [Compute(ox, load(0, x, ox) / den)]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        return Cost((ins[0].numel or 0) * (2 * attrs["size"] + 10), io_bytes(ins, outs))
