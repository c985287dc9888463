"""Injective data-movement ops and constants: const, reshape, transpose, slice, concat, pad,
broadcast_to, tile, gather, gather_elements, resize, and the runtime `shape` op.

Shape-like operands are attributes here; the frontend folds ONNX's shape tensors into them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import InterpreterError
from minicc.ir.compute import (Compute, Const, Expr, axes, both, broadcast_index, call, cast,
                               flat_index, load, select, unflat_index)
from minicc.ir.ops.elementwise import broadcast_shapes
from minicc.ir.registry import Attr, Cost, FusionKind, OpDef, check, io_bytes, norm_axis, register_op
from minicc.ir.types import UNKNOWN, Dim, DType, TensorType

I64 = DType.I64


class _Move(OpDef):
    """Data movement: no flops, bytes in and out."""

    kind = FusionKind.INJECTIVE

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        return Cost(0, io_bytes(ins, outs))


@register_op
class ConstOp(_Move):
    name = "const"
    inputs = (0, 0)
    attrs = {"value": Attr("tensor")}
    doc = "a constant tensor (weights print as a digest; small ones inline)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        return [attrs["value"].type]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        v = attrs["value"]
        if v.array is None:
            raise InterpreterError(
                f"constant blob<\"{v.digest}\"> : {v.type} has no data: the module was parsed "
                "without its weights. Pass weights= to parse(), or keep the .npz written beside "
                "the .mir file")
        return [v.array]


def _resolve_reshape(src: Sequence[Dim], target: Sequence[Dim]) -> tuple[Dim, ...]:
    """Output dims of a reshape: fills one -1 when the element counts allow it."""
    check(sum(1 for d in target if d == -1) <= 1, f"more than one -1 in shape {list(target)}")
    if -1 not in target:
        if all(isinstance(d, int) for d in list(src) + list(target)):
            check(int(np.prod(src)) == int(np.prod(target)),
                  f"cannot reshape {list(src)} ({int(np.prod(src))} elements) to {list(target)}")
        return tuple(target)
    # cancel symbols common to both sides, then divide the static products
    rest = [d for d in src]
    known: list[Dim] = []
    for d in target:
        if d == -1:
            continue
        if isinstance(d, str) and d in rest:
            rest.remove(d)
        else:
            known.append(d)
    if any(isinstance(d, str) for d in rest + known):
        return tuple(UNKNOWN if d == -1 else d for d in target)
    num, den = int(np.prod(rest)), int(np.prod(known))  # type: ignore[arg-type]
    check(den != 0 and num % den == 0, f"cannot reshape {list(src)} to {list(target)}")
    return tuple(num // den if d == -1 else d for d in target)


@register_op
class Reshape(_Move):
    name = "reshape"
    view = True
    inputs = (1, 1)
    attrs = {"shape": Attr("dims")}
    doc = "same elements, new shape (row-major); one -1 is inferred, symbols name dims"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        return [ins[0].with_shape(_resolve_reshape(ins[0].shape, attrs["shape"]))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        shape = [d if isinstance(d, int) else -1 for d in attrs["shape"]]
        try:
            return [ins[0].reshape(shape)]
        except ValueError as e:
            raise InterpreterError(f"reshape of {list(ins[0].shape)} to {list(attrs['shape'])}: "
                                   f"{e}") from None

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        src_shape = [int(d) for d in ins[0].shape]  # type: ignore[arg-type]
        dst_shape = [int(d) for d in outs[0].shape]  # type: ignore[arg-type]
        ox = axes(len(dst_shape))
        # dims shared at the front and the back map one to one; only the middle is re-split
        # (keeps index arithmetic simple, so loads stay contiguous)
        pre = 0
        while pre < min(len(src_shape), len(dst_shape)) and src_shape[pre] == dst_shape[pre]:
            pre += 1
        suf = 0
        while (suf < min(len(src_shape), len(dst_shape)) - pre
               and src_shape[-1 - suf] == dst_shape[-1 - suf]):
            suf += 1
        mid_dst = dst_shape[pre:len(dst_shape) - suf]
        mid_src = src_shape[pre:len(src_shape) - suf]
        flat = flat_index(ox[pre:len(dst_shape) - suf], mid_dst)
        src = list(ox[:pre]) + list(unflat_index(flat, mid_src)) + list(
            ox[len(dst_shape) - suf:])
        return [Compute(ox, load(0, ins[0], src))]


@register_op
class Transpose(_Move):
    name = "transpose"
    inputs = (1, 1)
    attrs = {"perm": Attr("ints")}
    doc = "y[i_perm[0], ...] permutes axes: y.shape[k] = x.shape[perm[k]]"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        p = attrs["perm"]
        check(sorted(p) == list(range(ins[0].rank)), f"perm {list(p)} is not a permutation of "
              f"{ins[0].rank} axes")
        return [ins[0].with_shape(tuple(ins[0].shape[k] for k in p))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        return [np.ascontiguousarray(np.transpose(ins[0], attrs["perm"]))]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        p = attrs["perm"]
        ox = axes(outs[0].rank)
        idx: list[Expr] = [Const(0, I64)] * len(p)
        for k, src in enumerate(p):
            idx[src] = ox[k]
        return [Compute(ox, load(0, ins[0], idx))]


def slice_params(dim: int, start: int, end: int, step: int) -> tuple[int, int, int]:
    """ONNX/numpy slice clamping: returns (start, step, count)."""
    check(step != 0, "slice step must not be 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        count = max(0, -(-(end - start) // step))
    else:
        start, end = min(max(start, -1), dim - 1), min(max(end, -1), dim - 1)
        count = max(0, -(-(start - end) // -step))
    return start, step, count


@register_op
class Slice(_Move):
    name = "slice"
    inputs = (1, 1)
    attrs = {"starts": Attr("ints"), "ends": Attr("ints"), "axes": Attr("ints"),
             "steps": Attr("ints", ())}
    doc = "x[starts:ends:steps] along `axes`, with ONNX clamping of out-of-range bounds"

    def _params(self, shape: Sequence[Dim], attrs: Mapping[str, Any]) -> dict[int, tuple]:
        ax = [norm_axis(a, len(shape)) for a in attrs["axes"]]
        st, en = attrs["starts"], attrs["ends"]
        sp = attrs["steps"] or (1,) * len(ax)
        check(len(st) == len(en) == len(ax) == len(sp), "starts/ends/axes/steps lengths differ")
        check(len(set(ax)) == len(ax), f"repeated axes {list(ax)}")
        return {a: (s, e, p) for a, s, e, p in zip(ax, st, en, sp)}

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        shape = list(ins[0].shape)
        for a, (s, e, p) in self._params(shape, attrs).items():
            d = shape[a]
            if isinstance(d, int):
                shape[a] = slice_params(d, s, e, p)[2]
            elif not (s == 0 and p == 1 and e >= 2 ** 31 - 1):
                shape[a] = UNKNOWN
        return [ins[0].with_shape(tuple(shape))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        sl = [slice(None)] * x.ndim
        for a, (s, e, p) in self._params(x.shape, attrs).items():
            st, step, n = slice_params(x.shape[a], s, e, p)
            sl[a] = slice(st, st + step * n if st + step * n >= 0 else None, step) if n else \
                slice(0, 0)
        return [np.ascontiguousarray(x[tuple(sl)])]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        x = ins[0]
        ox = axes(x.rank)
        idx: list[Expr] = list(ox)
        for a, (s, e, p) in self._params(x.shape, attrs).items():
            st, step, _ = slice_params(int(x.shape[a]), s, e, p)  # type: ignore[arg-type]
            idx[a] = ox[a] * step + st
        return [Compute(ox, load(0, x, idx))]


@register_op
class Concat(_Move):
    name = "concat"
    inputs = (1, -1)
    attrs = {"axis": Attr("int")}
    doc = "join operands along `axis`"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        r = ins[0].rank
        a = norm_axis(attrs["axis"], r)
        def listed() -> str:     # built only for an error: 80-operand concats are common
            return ", ".join(map(str, ins))
        if len({t.dtype for t in ins}) != 1:
            check(False, "operands differ in dtype: " + listed())
        total: Dim = 0
        for t in ins:
            if t.rank != r:
                check(False, f"ranks differ: {listed()}")
            for k in range(r):
                if k != a and isinstance(t.shape[k], int) and isinstance(ins[0].shape[k], int) \
                        and t.shape[k] != ins[0].shape[k]:
                    check(False, f"dim {k} differs: {listed()}")
            d = t.shape[a]
            total = total + d if isinstance(total, int) and isinstance(d, int) else UNKNOWN
        shape = list(ins[0].shape)
        shape[a] = total
        for k in range(r):  # prefer a static dim from any operand
            if k != a and not isinstance(shape[k], int):
                shape[k] = next((t.shape[k] for t in ins if isinstance(t.shape[k], int)),
                                shape[k])
        return [ins[0].with_shape(tuple(shape))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        return [np.concatenate(ins, axis=norm_axis(attrs["axis"], ins[0].ndim))]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        a = norm_axis(attrs["axis"], ins[0].rank)
        ox = axes(outs[0].rank)
        offs = np.cumsum([0] + [int(t.shape[a]) for t in ins])  # type: ignore[arg-type]
        body: Expr | None = None
        for i in reversed(range(len(ins))):
            if ins[i].shape[a] == 0:
                continue
            idx = list(ox)
            idx[a] = ox[a] - int(offs[i])
            ld = load(i, ins[i], idx)
            body = ld if body is None else select(ox[a].lt(int(offs[i + 1])), ld, body)
        assert body is not None
        return [Compute(ox, body)]


@register_op
class Pad(_Move):
    name = "pad"
    inputs = (1, 1)
    attrs = {"pads": Attr("ints"), "mode": Attr("str", "constant"), "value": Attr("float", 0.0)}
    doc = "pad each axis by pads[k] before and pads[rank+k] after (constant/reflect/edge/wrap)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        t = ins[0]
        p = attrs["pads"]
        check(len(p) == 2 * t.rank, f"pads has {len(p)} entries for rank {t.rank}")
        check(attrs["mode"] in ("constant", "reflect", "edge", "wrap"),
              f"unknown mode '{attrs['mode']}'")
        shape = tuple(d + p[k] + p[k + t.rank] if isinstance(d, int) else UNKNOWN
                      for k, d in enumerate(t.shape))
        check(all(not isinstance(d, int) or d >= 0 for d in shape), f"negative size {shape}")
        if attrs["mode"] in ("reflect", "edge", "wrap"):
            # a mirror of an axis of d elements has d - 1 to give (onnxruntime: pads < d); an
            # edge or a wrap (any number of times round) needs an element to repeat
            for k, d in enumerate(t.shape):
                if not isinstance(d, int):
                    continue
                most = d - 1 if attrs["mode"] == "reflect" else 10 ** 18
                if max(p[k], p[k + t.rank]) <= 0:
                    continue
                check(d > 0, f"{attrs['mode']} padding of axis {k}, which is empty")
                check(max(p[k], p[k + t.rank]) <= most,
                      f"{attrs['mode']} pads {p[k]}, {p[k + t.rank]} on axis {k} of size {d}: "
                      f"at most {most}")
        return [t.with_shape(shape)]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        r = x.ndim
        p = attrs["pads"]
        # negative pads crop
        crop = tuple(slice(max(-p[k], 0), x.shape[k] - max(-p[k + r], 0)) for k in range(r))
        x = x[crop]
        width = [(max(p[k], 0), max(p[k + r], 0)) for k in range(r)]
        mode = attrs["mode"]
        if mode == "constant":
            return [np.pad(x, width, constant_values=np.array(attrs["value"]).astype(x.dtype))]
        return [np.pad(x, width, mode={"edge": "edge", "reflect": "reflect", "wrap": "wrap"}[mode])]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        t = ins[0]
        p = attrs["pads"]
        ox = axes(t.rank)
        idx: list[Expr] = []
        conds = []
        for k in range(t.rank):
            n = int(t.shape[k])  # type: ignore[arg-type]
            i = ox[k] - p[k]
            if attrs["mode"] == "constant":
                if p[k] or p[k + t.rank]:
                    conds.append(both(i.ge(0), i.lt(n)))
            elif attrs["mode"] == "edge":
                i = call("min", call("max", i, 0), n - 1)
            elif attrs["mode"] == "wrap":
                i = (i % n + n) % n
            else:  # reflect: mirror without repeating the edge
                period = 2 * (n - 1) if n > 1 else 1
                m = (i % period + period) % period
                i = select(m.lt(n), m, period - m)
            idx.append(i)
        body: Expr = load(0, t, idx)
        cond = both(*conds)
        if cond is not None:
            body = select(cond, body, Const(_cast_value(attrs["value"], t.dtype), t.dtype))
        return [Compute(ox, body)]


def _cast_value(v: float, dt: DType) -> Any:
    if dt.is_float:
        return float(v)
    if dt == DType.BOOL:
        return bool(v)
    return int(v)


@register_op
class BroadcastTo(_Move):
    name = "broadcast_to"
    inputs = (1, 1)
    attrs = {"shape": Attr("dims")}
    kind = FusionKind.BROADCAST
    doc = "ONNX Expand: broadcast x with `shape` (numpy rules, either side may be 1)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        target = tuple(UNKNOWN if d == -1 else d for d in attrs["shape"])
        return [ins[0].with_shape(broadcast_shapes(ins[0].shape, target))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        target = [d if isinstance(d, int) and d >= 0 else 1 for d in attrs["shape"]]
        shape = np.broadcast_shapes(ins[0].shape, tuple(target))
        return [np.ascontiguousarray(np.broadcast_to(ins[0], shape))]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        ox = axes(outs[0].rank)
        return [Compute(ox, load(0, ins[0], broadcast_index(ins[0], ox)))]


@register_op
class Tile(_Move):
    name = "tile"
    inputs = (1, 1)
    attrs = {"repeats": Attr("ints")}
    doc = "repeat x `repeats[k]` times along each axis"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        t, r = ins[0], attrs["repeats"]
        check(len(r) == t.rank and all(x >= 0 for x in r), f"repeats {list(r)} for {t}")
        return [t.with_shape(tuple(d * k if isinstance(d, int) else (d if k == 1 else UNKNOWN)
                                   for d, k in zip(t.shape, r)))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        return [np.tile(ins[0], attrs["repeats"])]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        t = ins[0]
        ox = axes(t.rank)
        return [Compute(ox, load(0, t, [ox[k] % int(d) if int(d) != 1 else 0  # type: ignore
                                        for k, d in enumerate(t.shape)]))]


def _wrap_index(ix: Expr, n: int) -> Expr:
    """Negative indices count from the end (ONNX Gather)."""
    ix = cast(ix, I64)
    return select(ix.lt(0), ix + n, ix)


@register_op
class Gather(_Move):
    name = "gather"
    inputs = (2, 2)
    attrs = {"axis": Attr("int", 0)}
    doc = "y = take(data, indices, axis) (negative indices count from the end)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        d, i = ins
        a = norm_axis(attrs["axis"], d.rank)
        check(i.dtype in (DType.I32, DType.I64), f"indices must be i32 or i64, got {i}")
        return [d.with_shape(d.shape[:a] + i.shape + d.shape[a + 1:])]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        d, i = ins
        a = norm_axis(attrs["axis"], d.ndim)
        n = d.shape[a]
        if i.size and (i.min() < -n or i.max() >= n):
            raise InterpreterError(f"gather: index out of range [{-n}, {n}) "
                                   f"(got {int(i.min())}..{int(i.max())})")
        return [np.take(d, i.astype(np.int64), axis=a)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        d, i = ins
        a = norm_axis(attrs["axis"], d.rank)
        ox = axes(outs[0].rank)
        q = i.rank
        ix = _wrap_index(load(1, i, ox[a:a + q]), int(d.shape[a]))  # type: ignore[arg-type]
        return [Compute(ox, load(0, d, list(ox[:a]) + [ix] + list(ox[a + q:])))]


@register_op
class GatherElements(_Move):
    name = "gather_elements"
    inputs = (2, 2)
    attrs = {"axis": Attr("int", 0)}
    doc = "y[i][j] = data[index[i][j]][j] along `axis` (torch.gather)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        d, i = ins
        norm_axis(attrs["axis"], d.rank)
        check(i.rank == d.rank, f"indices rank {i.rank} differs from data rank {d.rank}")
        check(i.dtype in (DType.I32, DType.I64), f"indices must be i32 or i64, got {i}")
        return [d.with_shape(i.shape)]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        d, i = ins
        a = norm_axis(attrs["axis"], d.ndim)
        ii = i.astype(np.int64)
        ii = np.where(ii < 0, ii + d.shape[a], ii)
        grid = list(np.indices(ii.shape, sparse=True))
        grid[a] = ii
        return [d[tuple(grid)]]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        d, i = ins
        a = norm_axis(attrs["axis"], d.rank)
        ox = axes(d.rank)
        idx: list[Expr] = list(ox)
        idx[a] = _wrap_index(load(1, i, ox), int(d.shape[a]))  # type: ignore[arg-type]
        return [Compute(ox, load(0, d, idx))]


RESIZE_COORD = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
                "tf_half_pixel_for_nearest", "half_pixel_symmetric")
RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@register_op
class Resize(_Move):
    name = "resize"
    inputs = (1, 1)
    attrs = {"sizes": Attr("ints"), "scales": Attr("floats"), "mode": Attr("str", "nearest"),
             "coordinate_transformation_mode": Attr("str", "half_pixel"),
             "nearest_mode": Attr("str", "round_prefer_floor")}
    doc = "resize to `sizes` with nearest or (n-)linear interpolation; `scales` drive the " \
          "coordinate transform"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        t = ins[0]
        check(len(attrs["sizes"]) == t.rank and len(attrs["scales"]) == t.rank,
              f"sizes/scales need {t.rank} entries")
        check(attrs["mode"] in ("nearest", "linear"), f"mode '{attrs['mode']}' not supported "
              "(nearest, linear)")
        check(attrs["coordinate_transformation_mode"] in RESIZE_COORD,
              f"unknown coordinate_transformation_mode '{attrs['coordinate_transformation_mode']}'")
        check(attrs["nearest_mode"] in RESIZE_NEAREST,
              f"unknown nearest_mode '{attrs['nearest_mode']}'")
        check(t.dtype.is_float or attrs["mode"] == "nearest", "linear resize needs floats")
        return [t.with_shape(tuple(attrs["sizes"]))]

    @staticmethod
    def source_coord(o: np.ndarray, n_in: int, n_out: int, scale: float, mode: str) -> np.ndarray:
        o = o.astype(np.float64)
        n_int, n_out = n_out, n_in * scale  # ONNX uses the unrounded length in the transforms
        if mode == "asymmetric":
            return o / scale
        if mode == "align_corners":
            return o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o)
        if mode == "pytorch_half_pixel":
            return (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(o)
        if mode == "tf_half_pixel_for_nearest":
            return (o + 0.5) / scale
        if mode == "half_pixel_symmetric":
            adj = n_int / n_out
            center = n_in / 2
            off = center * (1 - adj)
            return off + (o + 0.5) / scale - 0.5
        return (o + 0.5) / scale - 0.5

    @staticmethod
    def nearest(x: np.ndarray, mode: str) -> np.ndarray:
        if mode == "round_prefer_floor":
            return np.where(x - np.floor(x) == 0.5, np.floor(x), np.round(x))
        if mode == "round_prefer_ceil":
            return np.where(x - np.floor(x) == 0.5, np.ceil(x), np.round(x))
        return np.floor(x) if mode == "floor" else np.ceil(x)

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        out = x.astype(np.float64) if attrs["mode"] == "linear" else x
        ctm = attrs["coordinate_transformation_mode"]
        for a, (n_out, sc) in enumerate(zip(attrs["sizes"], attrs["scales"])):
            n_in = x.shape[a]
            if n_out == n_in and sc == 1.0:
                continue
            src = self.source_coord(np.arange(n_out), n_in, n_out, sc, ctm)
            if attrs["mode"] == "nearest":
                idx = np.clip(self.nearest(src, attrs["nearest_mode"]), 0, n_in - 1).astype(int)
                out = np.take(out, idx, axis=a)
            else:
                src = np.clip(src, 0, n_in - 1)
                lo = np.floor(src).astype(int)
                hi = np.minimum(lo + 1, n_in - 1)
                w = (src - lo).reshape([-1 if k == a else 1 for k in range(x.ndim)])
                out = np.take(out, lo, axis=a) * (1 - w) + np.take(out, hi, axis=a) * w
        return [np.ascontiguousarray(out.astype(x.dtype))]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        t = ins[0]
        ox = axes(t.rank)
        ctm = attrs["coordinate_transformation_mode"]
        F = DType.F64
        per_axis: list[tuple] = []
        for a, (n_out, sc) in enumerate(zip(attrs["sizes"], attrs["scales"])):
            n_in = int(t.shape[a])  # type: ignore[arg-type]
            if n_out == n_in and sc == 1.0:
                per_axis.append((ox[a], None, None))
                continue
            if attrs["mode"] == "nearest" and ctm == "asymmetric" and float(sc).is_integer() \
                    and n_out == n_in * int(sc) and attrs["nearest_mode"] in ("floor",
                                                                            "round_prefer_floor"):
                # an integer upsampling (PyTorch's nearest): the source index in integers,
                # exactly what the f64 expression floors to, without f64 divisions per lane
                k = int(sc)
                bias = 0 if attrs["nearest_mode"] == "floor" else k - 1 - k // 2
                per_axis.append((call("min", call("floordiv", ox[a] + bias, k), n_in - 1)
                                 if bias else call("floordiv", ox[a], k), None, None))
                continue
            o = cast(ox[a], F)
            src = _coord_expr(o, n_in, n_out, sc, ctm)
            if attrs["mode"] == "nearest":
                r = _nearest_expr(src, attrs["nearest_mode"])
                per_axis.append((call("min", call("max", cast(r, I64), 0), n_in - 1), None, None))
            else:
                s = call("min", call("max", src, 0.0), float(n_in - 1))
                lo = cast(call("floor", s), I64)
                hi = call("min", lo + 1, n_in - 1)
                per_axis.append((lo, hi, s - cast(lo, F)))
        # n-linear: sum over the 2^k corners of the interpolated axes
        lin = [k for k, (_, hi, _) in enumerate(per_axis) if hi is not None]
        body: Expr | None = None
        for corner in range(1 << len(lin)):
            idx = [p[0] for p in per_axis]
            wgt: Expr | None = None
            for j, k in enumerate(lin):
                lo, hi, w = per_axis[k]
                take_hi = (corner >> j) & 1
                idx[k] = hi if take_hi else lo
                f = w if take_hi else (1.0 - w)
                wgt = f if wgt is None else wgt * f
            term: Expr = load(0, t, idx)
            if wgt is not None:
                term = cast(term, F) * wgt
            body = term if body is None else body + term
        assert body is not None
        return [Compute(ox, cast(body, t.dtype))]


def _coord_expr(o: Expr, n_in: int, n_out: int, scale: float, mode: str) -> Expr:
    n_int, n_out = n_out, n_in * scale  # type: ignore[assignment]  (unrounded, as ONNX)
    if mode == "asymmetric":
        return o / scale
    if mode == "align_corners":
        return o * ((n_in - 1) / (n_out - 1)) if n_out > 1 else o * 0.0
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if n_out > 1 else o * 0.0
    if mode == "tf_half_pixel_for_nearest":
        return (o + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adj = n_int / n_out
        return (o + 0.5) / scale - 0.5 + (n_in / 2) * (1 - adj)
    return (o + 0.5) / scale - 0.5


def _nearest_expr(x: Expr, mode: str) -> Expr:
    fl = call("floor", x)
    if mode == "floor":
        return fl
    if mode == "ceil":
        return call("ceil", x)
    half = (x - fl).eq(0.5)
    tie = fl if mode == "round_prefer_floor" else call("ceil", x)
    return select(half, tie, call("floor", x + 0.5))


@register_op
class ShapeOp(OpDef):
    name = "shape"
    host = True
    inputs = (1, 1)
    attrs = {"start": Attr("int", 0), "end": Attr("int", 2 ** 62)}
    kind = FusionKind.OPAQUE
    doc = "the run-time shape of x as i64 (only left where dims are symbolic)"

    def _range(self, rank: int, attrs: Mapping[str, Any]) -> tuple[int, int]:
        s, e = attrs["start"], attrs["end"]
        s = min(max(s + rank if s < 0 else s, 0), rank)
        e = min(max(e + rank if e < 0 else e, 0), rank)
        return s, max(s, e)

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        s, e = self._range(ins[0].rank, attrs)
        return [TensorType(I64, (e - s,))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        s, e = self._range(ins[0].ndim, attrs)
        return [np.array(ins[0].shape[s:e], dtype=np.int64)]

