"""Converters for shape and data-movement ONNX ops. Shape operands (Reshape's shape, Slice's
starts, Pad's pads...) must be known at import: constants, or shape values whose entries may be
symbolic dims (from Shape ops on inputs with a dynamic batch)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minicc.frontend.context import NodeContext, onnx_dtype
from minicc.frontend.registry import converter
from minicc.ir.graph import Value
from minicc.ir.types import UNKNOWN, Dim

INT_MAX = 2 ** 63 - 1


def reshape_to(ctx: NodeContext, x: Value, dims: Sequence[Dim], out: int | None = 0) -> Value:
    if tuple(dims) == x.type.shape:
        return x
    return ctx.op("reshape", [x], {"shape": list(dims)}, out=out)


def _product(ctx: NodeContext, dims: Sequence[Dim]) -> Dim | None:
    """Product of dims as one dim: an int, a lone symbol, or None when not expressible."""
    if all(isinstance(d, int) for d in dims):
        return int(np.prod(dims, dtype=np.int64)) if dims else 1
    syms = [d for d in dims if isinstance(d, str)]
    rest = [d for d in dims if isinstance(d, int)]
    if len(syms) == 1 and syms[0] != UNKNOWN and int(np.prod(rest, dtype=np.int64)) == 1:
        return syms[0]
    return None


@converter("Reshape", since=5)
def reshape_v5(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    target = list(ctx.dims(1, "the target shape"))
    allowzero = ctx.attr("allowzero", 0)
    for k, d in enumerate(target):
        if d == 0 and not allowzero:
            if k >= x.type.rank:
                raise ctx.error(f"shape entry {k} is 0 (copy) but the input {x.type} has no dim "
                                f"{k}")
            target[k] = x.type.shape[k]
        elif isinstance(d, int) and d < -1:
            raise ctx.error(f"invalid shape entry {d} in {target}")
    if UNKNOWN in target:
        raise ctx.error(f"cannot copy an unknown dim into the target shape {target}; give "
                        "static input shapes")
    return [ctx.op("reshape", [x], {"shape": target})]


@converter("Reshape", since=1)
def reshape_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    target = [x.type.shape[k] if d == 0 else d for k, d in enumerate(ctx.req_attr("shape"))]
    return [ctx.op("reshape", [x], {"shape": target})]


@converter("Flatten", since=1)
def flatten_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    r = x.type.rank
    axis = ctx.attr("axis", 1)
    axis = axis + r if axis < 0 else axis
    if not 0 <= axis <= r:
        raise ctx.error(f"axis {ctx.attr('axis', 1)} out of range for {x.type}")
    left, right = _product(ctx, x.type.shape[:axis]), _product(ctx, x.type.shape[axis:])
    if left is None and right is None:
        raise ctx.error(f"cannot flatten {x.type}: too many unknown dims")
    return [reshape_to(ctx, x, [-1 if left is None else left, -1 if right is None else right])]


def _squeeze(ctx: NodeContext, axes: list[int] | None) -> Value:
    x = ctx.input(0)
    r = x.type.rank
    if axes is None:
        if not all(isinstance(d, int) for d in x.type.shape):
            raise ctx.error(f"squeeze without axes needs a static shape, got {x.type}")
        axes = [k for k, d in enumerate(x.type.shape) if d == 1]
    axes = [a + r if a < 0 else a for a in axes]
    for a in axes:
        if not 0 <= a < r or x.type.shape[a] not in (1, UNKNOWN) and not isinstance(
                x.type.shape[a], str):
            raise ctx.error(f"cannot squeeze axis {a} of {x.type}")
    return reshape_to(ctx, x, [d for k, d in enumerate(x.type.shape) if k not in axes])


@converter("Squeeze", since=1)
def squeeze_v1(ctx: NodeContext) -> Sequence[Value]:
    ax = ctx.attr("axes")
    return [_squeeze(ctx, list(ax) if ax else None)]


@converter("Squeeze", since=13)
def squeeze_v13(ctx: NodeContext) -> Sequence[Value]:
    ax = [int(a) for a in ctx.require_const(1, "axes").reshape(-1)] if ctx.has(1) else None
    return [_squeeze(ctx, ax)]


def _unsqueeze(ctx: NodeContext, axes: list[int]) -> Value:
    x = ctx.input(0)
    r = x.type.rank + len(axes)
    axes = sorted(a + r if a < 0 else a for a in axes)
    if len(set(axes)) != len(axes) or any(not 0 <= a < r for a in axes):
        raise ctx.error(f"bad axes {axes} for {x.type}")
    it = iter(x.type.shape)
    return reshape_to(ctx, x, [1 if k in axes else next(it) for k in range(r)])


@converter("Unsqueeze", since=1)
def unsqueeze_v1(ctx: NodeContext) -> Sequence[Value]:
    return [_unsqueeze(ctx, list(ctx.req_attr("axes")))]


@converter("Unsqueeze", since=13)
def unsqueeze_v13(ctx: NodeContext) -> Sequence[Value]:
    return [_unsqueeze(ctx, [int(a) for a in ctx.require_const(1, "axes").reshape(-1)])]


@converter("Transpose", since=1)
def transpose_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    perm = ctx.attr("perm") or list(reversed(range(x.type.rank)))
    if list(perm) == list(range(x.type.rank)):
        return [x]
    return [ctx.op("transpose", [x], {"perm": list(perm)})]


@converter("Concat", since=4)
def concat_v4(ctx: NodeContext) -> Sequence[Value]:
    xs = [v for v in ctx.inputs()]
    axis = ctx.req_attr("axis")
    nonempty = [v for v in xs if v.type.rank == 0 or v.type.shape[axis] != 0] or xs[:1]
    if len(nonempty) == 1:
        return [nonempty[0]]
    return [ctx.op("concat", nonempty, {"axis": axis})]


def _split(ctx: NodeContext, sizes: list[int] | None, num: int | None) -> list[Value]:
    x = ctx.input(0)
    axis = ctx.attr("axis", 0)
    axis = axis + x.type.rank if axis < 0 else axis
    n = x.type.shape[axis]
    nout = len(ctx.node.output)
    if sizes is None:
        if not isinstance(n, int):
            raise ctx.error(f"splitting symbolic dim {n} needs explicit sizes")
        parts = num or nout
        chunk = -(-n // parts)
        sizes = [min(chunk, n - k * chunk) for k in range(parts)]
    if isinstance(n, int) and sum(sizes) != n:
        raise ctx.error(f"split sizes {sizes} do not add up to dim {axis} of {x.type}")
    outs, start = [], 0
    for k, s in enumerate(sizes):
        outs.append(ctx.op("slice", [x], {"starts": [start], "ends": [start + s],
                                          "axes": [axis]}, out=k))
        start += s
    return outs


@converter("Split", since=2)
def split_v2(ctx: NodeContext) -> Sequence[Value]:
    s = ctx.attr("split")
    return _split(ctx, list(s) if s else None, None)


@converter("Split", since=13)
def split_v13(ctx: NodeContext) -> Sequence[Value]:
    sizes = [int(v) for v in ctx.require_const(1, "split").reshape(-1)] if ctx.has(1) else None
    return _split(ctx, sizes, ctx.attr("num_outputs"))


@converter("Slice", since=1)
def slice_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    starts, ends = list(ctx.req_attr("starts")), list(ctx.req_attr("ends"))
    axes = list(ctx.attr("axes", range(len(starts))))
    return [_slice(ctx, x, starts, ends, axes, [1] * len(starts))]


@converter("Slice", since=10)
def slice_v10(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)

    def ints(i: int, what: str) -> list[int]:
        return [int(v) for v in ctx.require_const(i, what).reshape(-1)]
    starts, ends = ints(1, "starts"), ints(2, "ends")
    axes = ints(3, "axes") if ctx.has(3) else list(range(len(starts)))
    steps = ints(4, "steps") if ctx.has(4) else [1] * len(starts)
    return [_slice(ctx, x, starts, ends, axes, steps)]


def _slice(ctx: NodeContext, x: Value, starts: list[int], ends: list[int], axes: list[int],
           steps: list[int]) -> Value:
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        raise ctx.error("starts, ends, axes and steps differ in length")
    r = x.type.rank
    keep = []
    for s, e, a, p in zip(starts, ends, axes, steps):
        a = a + r if a < 0 else a
        if not 0 <= a < r:
            raise ctx.error(f"axis {a} out of range for {x.type}")
        e = max(min(e, INT_MAX // 2), -INT_MAX // 2)
        s = max(min(s, INT_MAX // 2), -INT_MAX // 2)
        d = x.type.shape[a]
        if s == 0 and p == 1 and (isinstance(d, int) and e >= d or e >= 2 ** 31 - 1):
            continue  # the whole axis
        keep.append((s, e, a, p))
    if not keep:
        return x
    s, e, a, p = zip(*keep)
    return ctx.op("slice", [x], {"starts": list(s), "ends": list(e), "axes": list(a),
                                 "steps": list(p)})


@converter("Gather", since=1)
def gather_v1(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("gather", [ctx.input(0), ctx.input(1)], {"axis": ctx.attr("axis", 0)})]


@converter("GatherElements", since=11)
def gather_elements_v11(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("gather_elements", [ctx.input(0), ctx.input(1)],
                   {"axis": ctx.attr("axis", 0)})]


@converter("GatherND", since=11)
def gather_nd_v11(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("gather_nd", [ctx.input(0), ctx.input(1)],
                   {"batch_dims": ctx.attr("batch_dims", 0)})]


@converter(["ScatterElements", "Scatter"], since=9)
def scatter_elements_v11(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("scatter_elements", [ctx.input(0), ctx.input(1), ctx.input(2)],
                   {"axis": ctx.attr("axis", 0), "reduction": ctx.attr("reduction", "none")})]


@converter("ScatterND", since=11)
def scatter_nd_v11(ctx: NodeContext) -> Sequence[Value]:
    return [ctx.op("scatter_nd", [ctx.input(0), ctx.input(1), ctx.input(2)],
                   {"reduction": ctx.attr("reduction", "none")})]


@converter("Expand", since=8)
def expand_v8(ctx: NodeContext) -> Sequence[Value]:
    dims = ctx.dims(1, "the target shape")
    return [ctx.op("broadcast_to", [ctx.input(0)], {"shape": list(dims)})]


@converter("Tile", since=6)
def tile_v6(ctx: NodeContext) -> Sequence[Value]:
    reps = [int(v) for v in ctx.require_const(1, "repeats").reshape(-1)]
    return [ctx.op("tile", [ctx.input(0)], {"repeats": reps})]


def _pad(ctx: NodeContext, pads: list[int], value: float, axes: list[int] | None) -> Value:
    x = ctx.input(0)
    r = x.type.rank
    mode = ctx.attr("mode", "constant")
    if axes is not None:
        full = [0] * (2 * r)
        n = len(axes)
        for k, a in enumerate(axes):
            a = a + r if a < 0 else a
            full[a], full[a + r] = pads[k], pads[k + n]
        pads = full
    if len(pads) != 2 * r:
        raise ctx.error(f"pads {pads} need {2 * r} entries for {x.type}")
    if not any(pads):
        return x
    return ctx.op("pad", [x], {"pads": pads, "mode": mode, "value": value})


@converter("Pad", since=2)
def pad_v2(ctx: NodeContext) -> Sequence[Value]:
    return [_pad(ctx, list(ctx.req_attr("pads")), ctx.attr("value", 0.0), None)]


@converter("Pad", since=11)
def pad_v11(ctx: NodeContext) -> Sequence[Value]:
    pads = [int(v) for v in ctx.require_const(1, "pads").reshape(-1)]
    value = 0.0
    if ctx.has(2):
        c = ctx.require_const(2, "constant_value")
        value = float(c.reshape(-1)[0]) if c.size else 0.0
    axes = [int(v) for v in ctx.require_const(3, "axes").reshape(-1)] if ctx.has(3) else None
    return [_pad(ctx, pads, value, axes)]


def _resize(ctx: NodeContext, scales: list[float] | None, sizes: list[int] | None,
            ctm: str, mode: str, nearest_mode: str) -> Value:
    x = ctx.input(0)
    shape = x.type.shape
    if not all(isinstance(d, int) for d in shape):
        raise ctx.error(f"needs a static input shape, got {x.type}")
    r = x.type.rank
    axes = ctx.attr("axes")
    if axes is not None:
        axes = [a + r if a < 0 else a for a in axes]

    def full(v: list, fill: float) -> list:
        if axes is None:
            return v
        out = [fill] * r
        for k, a in enumerate(axes):
            out[a] = v[k]
        return out
    if mode == "cubic":
        raise ctx.unsupported("mode 'cubic' is not supported (nearest, linear)")
    if ctm == "tf_crop_and_resize":
        raise ctx.unsupported("coordinate_transformation_mode 'tf_crop_and_resize' is not supported")
    if ctx.attr("antialias", 0):
        raise ctx.unsupported("antialias=1 is not supported")
    if sizes is not None:
        sizes = [int(s) for s in full(sizes, 0)]
        if axes is not None:
            sizes = [s if axes is None or k in axes else int(shape[k])  # type: ignore
                     for k, s in enumerate(sizes)]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            sel = axes if axes is not None else list(range(r))
            ratios = [sizes[a] / int(shape[a]) for a in sel]  # type: ignore[arg-type]
            s = min(ratios) if policy == "not_larger" else max(ratios)
            for a in sel:
                sizes[a] = int(round(s * int(shape[a])))  # type: ignore[arg-type]
            scl = [s if k in sel else 1.0 for k in range(r)]
        else:
            scl = [sizes[k] / int(shape[k]) for k in range(r)]  # type: ignore[arg-type]
    elif scales is not None:
        scl = [float(s) for s in full(scales, 1.0)]
        if len(scl) != r:
            raise ctx.error(f"scales {scl} need {r} entries")
        sizes = [int(np.floor(int(d) * s)) for d, s in zip(shape, scl)]  # type: ignore
    else:
        raise ctx.error("needs scales or sizes")
    if len(sizes) != r:
        raise ctx.error(f"sizes {sizes} need {r} entries")
    return ctx.op("resize", [x], {"sizes": sizes, "scales": scl, "mode": mode,
                                  "coordinate_transformation_mode": ctm,
                                  "nearest_mode": nearest_mode})


@converter("Resize", since=10)
def resize_v10(ctx: NodeContext) -> Sequence[Value]:
    scales = [float(v) for v in ctx.require_const(1, "scales").reshape(-1)]
    return [_resize(ctx, scales, None, "asymmetric", ctx.attr("mode", "nearest"), "floor")]


@converter("Resize", since=11)
def resize_v11(ctx: NodeContext) -> Sequence[Value]:
    scales = sizes = None
    if ctx.has(3):
        sizes = [int(v) for v in ctx.require_const(3, "sizes").reshape(-1)]
    if ctx.has(2) and sizes is None:
        s = ctx.require_const(2, "scales").reshape(-1)
        scales = [float(v) for v in s] if s.size else None
    return [_resize(ctx, scales, sizes, ctx.attr("coordinate_transformation_mode", "half_pixel"),
                    ctx.attr("mode", "nearest"), ctx.attr("nearest_mode", "round_prefer_floor"))]


@converter("Upsample", since=7)
def upsample_v7(ctx: NodeContext) -> Sequence[Value]:
    scales = ctx.req_attr("scales")
    return [_resize(ctx, list(scales), None, "asymmetric", ctx.attr("mode", "nearest"), "floor")]


@converter("Upsample", since=9)
def upsample_v9(ctx: NodeContext) -> Sequence[Value]:
    scales = [float(v) for v in ctx.require_const(1, "scales").reshape(-1)]
    return [_resize(ctx, scales, None, "asymmetric", ctx.attr("mode", "nearest"), "floor")]


@converter("DepthToSpace", since=1)
def depth_to_space_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    bs = ctx.req_attr("blocksize")
    n, c, h, w = x.type.shape
    if not isinstance(c, int) or c % (bs * bs):
        raise ctx.error(f"channels {c} not divisible by blocksize^2 = {bs * bs}")
    if ctx.attr("mode", "DCR") == "DCR":
        t = reshape_to(ctx, x, [n, bs, bs, c // (bs * bs), h, w], out=None)
        t = ctx.op("transpose", [t], {"perm": [0, 3, 4, 1, 5, 2]}, out=None)
    else:
        t = reshape_to(ctx, x, [n, c // (bs * bs), bs, bs, h, w], out=None)
        t = ctx.op("transpose", [t], {"perm": [0, 1, 4, 2, 5, 3]}, out=None)
    hh = h * bs if isinstance(h, int) else -1
    ww = w * bs if isinstance(w, int) else -1
    return [reshape_to(ctx, t, [n, c // (bs * bs), hh, ww])]


@converter("SpaceToDepth", since=1)
def space_to_depth_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    bs = ctx.req_attr("blocksize")
    n, c, h, w = x.type.shape
    if not (isinstance(h, int) and isinstance(w, int)) or h % bs or w % bs:
        raise ctx.error(f"spatial dims {h}x{w} must be static multiples of blocksize {bs}")
    t = reshape_to(ctx, x, [n, c, h // bs, bs, w // bs, bs], out=None)
    perm = [0, 3, 5, 1, 2, 4] if ctx.attr("mode", "DCR") == "DCR" else [0, 1, 3, 5, 2, 4]
    t = ctx.op("transpose", [t], {"perm": perm}, out=None)
    cc = c * bs * bs if isinstance(c, int) else -1
    return [reshape_to(ctx, t, [n, cc, h // bs, w // bs])]


@converter("Shape", since=1)
def shape_v1(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.input(0)
    r = x.type.rank
    start, end = ctx.attr("start", 0), ctx.attr("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    dims = x.type.shape[start:end]
    if all(isinstance(d, int) for d in dims):
        return [ctx.const_value(np.array(dims, dtype=np.int64), 0)]
    v = ctx.op("shape", [x], {"start": start, "end": end})
    ctx.s.shape_vals[v] = tuple(dims)
    return [v]


@converter("Size", since=1)
def size_v1(ctx: NodeContext) -> Sequence[Value]:
    t = ctx.type(0)
    if t.numel is None:   # known at run time (a dim the data decides): onnx's reference
        raise ctx.unsupported(f"Size of {t}, whose shape is not static")
    return [ctx.const_value(np.array(t.numel, dtype=np.int64), 0)]


@converter("ConstantOfShape", since=9)
def constant_of_shape_v9(ctx: NodeContext) -> Sequence[Value]:
    value = ctx.attr("value")
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    value = np.asarray(value).reshape(-1)[:1]
    dims = ctx.dims(0, "the shape")
    if all(isinstance(d, int) for d in dims):
        arr = np.broadcast_to(value.reshape(()), tuple(int(d) for d in dims))
        return [ctx.const_value(arr, 0)]
    scalar = ctx.s.b.const(value.reshape([1] * len(dims)))
    return [ctx.op("broadcast_to", [scalar], {"shape": list(dims)})]


@converter("Range", since=11)
def range_v11(ctx: NodeContext) -> Sequence[Value]:
    start, limit, delta = (ctx.require_const(i, n) for i, n in enumerate(("start", "limit",
                                                                           "delta")))
    if float(delta) == 0:
        raise ctx.error("delta must not be 0")
    dt = start.dtype
    n = max(int(np.ceil((limit.item() - start.item()) / delta.item())), 0)
    arr = (start.item() + np.arange(n) * delta.item()).astype(dt)
    return [ctx.const_value(arr, 0)]


@converter("OneHot", since=9)
def one_hot_v9(ctx: NodeContext) -> Sequence[Value]:
    depth = int(np.asarray(ctx.require_const(1, "depth")).reshape(-1)[0])
    return [ctx.op("one_hot", [ctx.input(0), ctx.input(2)], {"depth": depth,
                                                              "axis": ctx.attr("axis", -1)})]


@converter("Trilu", since=14)
def trilu_v14(ctx: NodeContext) -> Sequence[Value]:
    k = int(np.asarray(ctx.require_const(1, "k")).reshape(-1)[0]) if ctx.has(1) else 0
    return [ctx.op("trilu", [ctx.input(0)], {"upper": bool(ctx.attr("upper", 1)), "k": k})]


@converter("NonZero", since=9)
def nonzero_v9(ctx: NodeContext) -> Sequence[Value]:
    x = ctx.const(0)
    if x is None:     # its size depends on the data: onnx's reference, a host step
        raise ctx.unsupported("a run-time input (the output size depends on its values)")
    return [ctx.const_value(np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1), 0)]


@converter("EyeLike", since=9)
def eye_like_v9(ctx: NodeContext) -> Sequence[Value]:
    t = ctx.type(0)
    if t.rank != 2 or not t.is_static:
        raise ctx.error(f"needs a static 2-D input, got {t}")
    dt = onnx_dtype(ctx.attr("dtype"), ctx.name) if ctx.has_attr("dtype") else t.dtype
    arr = np.eye(int(t.shape[0]), int(t.shape[1]), k=ctx.attr("k", 0), dtype=dt.np)  # type: ignore
    return [ctx.const_value(arr, 0)]

