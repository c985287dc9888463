"""The CPU pooling template: 2-D max and average pools, read in place, in NCHW.

The generic loop nest computes each output vector from its window alone: kh x kw masked loads
(at stride 2 each two loads and a shuffle) and as many maxes or adds, and an average pool
divides by a window count it works out per lane. This template takes a register tile of RY
output rows by RX vectors of a row per (image, channel) plane. Each input row the tile reaches
is reduced along the row once (kw loads, lanes outside the image masked to the pad value:
-inf for max, 0 for average), and that row's result goes into every output row whose window
holds it: a 3x3 stride-1 window costs about 1.25 row passes and 3 combines per output vector
instead of 9 loads and 9 combines. An average multiplies by the reciprocal of the window's
count (ONNX's rule, with or without the pads), a constant per output pixel.

Its steps are the knobs: `tile(RX=2, RY=8)` (vectors per row, output rows per tile) and
`parallel(t)` (threads share the planes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import ScheduleError
from minicc.ir.compute import Const, Expr, Var, call, cast, select
from minicc.ir.graph import Op
from minicc.ir.loops.exprs import simplify
from minicc.ir.loops.gemm_views import add, c64, div, emax, emin, mod, mul
from minicc.ir.loops.nest import Inliner, group_flops, kernel_params, leaf_loader
from minicc.ir.loops.nodes import (Allocate, BufLoad, Buffer, For, IfThen, Kernel, LoopKind, Scope,
                                   Stmt, Store, seq)
from minicc.ir.loops.schedule import KnobSpace, LowerCtx, Lowered, Rule
from minicc.ir.loops.trace import Step, int_kwargs, step
from minicc.ir.registry import FusionKind, full_attrs, get_op
from minicc.ir.types import DType

F32 = DType.F32
SERIAL, PARALLEL, VECTOR, UNROLL = (LoopKind.SERIAL, LoopKind.PARALLEL, LoopKind.VECTOR,
                                    LoopKind.UNROLL)
MAX_WINDOW = 7             # kernels up to 7x7 (wider ones stay with the generic nest)
MAX_REGS = 16              # RX x RY vectors of results in registers


@dataclass(frozen=True)
class PoolGeometry:
    op: Op
    kind: str               # "max" or "avg"
    n: int
    c: int
    h: int
    w: int
    oh: int
    ow: int
    kh: int
    kw: int
    s: int
    pt: int
    pl: int


def pool_geometry(ctx: LowerCtx) -> PoolGeometry | None:
    """The pool when the group is a 2-D float max or average pool, one stride of 1 or 2 for
    both axes, no dilation, a window of up to MAX_WINDOW, whatever its pads. Its input is a
    tensor in memory or computed in the group by injective ops (squeezenet's concat: each tap
    loads from the concatenated tensor its channel falls in); elementwise ops after it are
    its epilogue."""
    ops = ctx.group.ops
    pools = [k for k, op in enumerate(ops) if op.kind in ("max_pool", "avg_pool")]
    if len(pools) != 1:
        return None
    op = ops[pools[0]]
    x = op.inputs[0]
    if x in ctx.consts or x.type.dtype != F32 or x.type.rank != 4 or \
            op.outputs[0].type.dtype != F32:
        return None
    before, after = ops[:pools[0]], ops[pools[0] + 1:]
    if any(get_op(o.kind).kind > FusionKind.INJECTIVE for o in before) or \
            (not before and x not in ctx.bufs) or \
            (before and before[-1].outputs[0] is not x) or \
            any(get_op(o.kind).kind > FusionKind.BROADCAST for o in after) or \
            ctx.group.output.type.shape != op.outputs[0].type.shape:
        return None
    shape = x.type.shape
    if not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    attrs = full_attrs(op.kind, op.attrs)
    _, ks, s, d, pb, _, sp = get_op(op.kind).geom(shape, attrs)
    if len(ks) != 2 or s[0] != s[1] or s[0] not in (1, 2) or tuple(d) != (1, 1) or \
            max(ks) > MAX_WINDOW or min(sp) < 1:
        return None
    n, c, h, w = shape
    return PoolGeometry(op, "max" if op.kind == "max_pool" else "avg", n, c, h, w, sp[0], sp[1],
                        ks[0], ks[1], s[0], pb[0], pb[1])


@dataclass(frozen=True)
class PoolPlan:
    rx: int
    ry: int
    parallel: bool


def plan_from_steps(steps: Sequence[Step], name: str = "") -> PoolPlan:
    where = f"pool template ({name})" if name else "pool template"
    got: dict[str, Any] = {"parallel": False}
    for st in steps:
        if st.name == "tile":
            got.update(int_kwargs(st, ("RX", "RY")))
        elif st.name == "parallel" and st.args == ("t",):
            got["parallel"] = True
        else:
            raise ScheduleError(f"{st}: not a step of the pool template (tile, parallel(t))")
    rx, ry = got.get("rx", 0), got.get("ry", 0)
    if rx < 1 or ry < 1:
        raise ScheduleError(f"{where}: the steps must set tile(RX=..., RY=...), both at least 1")
    if rx * ry > MAX_REGS:
        raise ScheduleError(f"{where}: RX x RY = {rx * ry} vectors of results; at most "
                            f"{MAX_REGS} stay in registers")
    return PoolPlan(rx, ry, got["parallel"])


def pool_kernel(ctx: LowerCtx, g: PoolGeometry, p: PoolPlan) -> Lowered:
    """The kernel of the module docstring."""
    L = ctx.target.lanes
    name, bufs, consts = ctx.name, ctx.bufs, ctx.consts
    leaf = leaf_loader(bufs, consts)
    xv = g.op.inputs[0]
    made = {o.outputs[0]: o for o in ctx.group.ops}.get(xv)

    def x_at(idx: tuple[Expr, ...]) -> Expr:
        """The pool's input at idx: from its buffer, or from the ops before it in the group."""
        if made is None:
            return BufLoad(bufs[xv], idx, F32)
        return Inliner(ctx.group, leaf).expr(made, idx)
    ry, rx = min(p.ry, g.oh), min(p.rx, -(-g.ow // L))
    is_max = g.kind == "max"
    fill = Const(-np.inf if is_max else 0.0, F32)

    def comb(a: Expr, b: Expr) -> Expr:
        return call("max" if is_max else "add", a, b)

    acc = Buffer(f"{name}_regs", F32, (ry * rx, L), Scope.LOCAL)
    hv = Buffer(f"{name}_row", F32, (rx, L), Scope.LOCAL)
    t, yt, xt, i, ln = Var("t"), Var("yt"), Var("xt"), Var("i"), Var("l")
    b = div(t, g.c) if g.n > 1 else c64(0)
    c = mod(t, g.c)
    y0, x0 = mul(yt, ry), mul(xt, rx * L)
    xi = add(x0, mul(i, L), ln)                     # the lane's output column

    def cells(body: Stmt) -> Stmt:
        return For(i, c64(rx), For(ln, c64(L), body, VECTOR, L), UNROLL)

    def reduce(edge: bool) -> Stmt:
        """The tile's windows: at an edge, every tap outside the image (or past the last
        column) masked to the pad value; inside, plain loads."""
        body: list[Stmt] = [For(Var("r"), c64(ry), cells(Store(
            acc, (add(mul(Var("r"), rx), i), ln), fill)), UNROLL)]
        for j in range((ry - 1) * g.s + g.kh):      # the input rows the tile reaches
            iy = add(mul(y0, g.s), j - g.pt)
            row_in = call("and", iy.ge(c64(0)), iy.lt(c64(g.h)))
            iyc = emin(emax(iy, 0), g.h - 1) if edge else iy    # an address inside the plane
            along: Expr | None = None
            for kx in range(g.kw):
                ix = add(mul(xi, g.s), kx - g.pl)
                v = x_at((b, c, iyc, ix))
                if edge:
                    v = select(call("and", row_in, call("and", ix.ge(c64(0)),
                                                        ix.lt(c64(g.w)))), v, fill)
                along = v if along is None else comb(along, v)
            assert along is not None
            row = [cells(Store(hv, (i, ln), along))]
            for r in range(ry):
                if 0 <= j - r * g.s < g.kh:
                    a = (add(c64(r * rx), i), ln)
                    row.append(cells(Store(acc, a, comb(BufLoad(acc, a, F32),
                                                        BufLoad(hv, (i, ln), F32)))))
            body.append(seq(*row))
        return seq(*body)

    # a tile whose every window lies inside the image (most of a big map's) needs no masks
    inside = call("and", call("and", add(mul(y0, g.s), -g.pt).ge(c64(0)),
                              add(mul(add(y0, ry - 1), g.s), g.kh - 1 - g.pt).lt(c64(g.h))),
                  call("and", add(mul(x0, g.s), -g.pl).ge(c64(0)),
                       add(mul(add(x0, rx * L - 1), g.s), g.kw - 1 - g.pl).lt(c64(g.w))))
    windows: Stmt = IfThen(inside, reduce(False), reduce(True))

    params, roles = kernel_params(ctx.group, bufs, consts)
    packed: dict[Buffer, np.ndarray] = {}
    inv = None
    if not is_max:      # 1 / the window's count, per output pixel (ONNX's rule)
        attrs = full_attrs(g.op.kind, g.op.attrs)
        div_ = get_op("avg_pool")._divisor(g.op.inputs[0].type.shape, attrs)
        arr = np.ascontiguousarray((1.0 / np.maximum(div_.reshape(g.oh, g.ow), 1))
                                   .astype(np.float32))          # (the op's own rule)
        inv = Buffer(f"{name}_inv", F32, arr.shape, Scope.GLOBAL)
        packed[inv] = arr
        params, roles = params + (inv,), roles + ("weight",)

    out = bufs[ctx.group.output]

    def result(sums: Expr, q_row: Expr, ox: Expr) -> Expr:
        """The group's output at (b, c, row, ox) from the window's max or sum."""
        oy = div(q_row, g.ow)
        v = sums if inv is None else call("mul", sums, BufLoad(inv, (oy, ox), F32))
        inl = Inliner(ctx.group, leaf, stop=g.op, stop_expr=lambda ix: v)
        return cast(simplify(inl.expr(ctx.group.root, (b, c, oy, ox))),
                    ctx.group.output.type.dtype)

    stores: list[Stmt] = []
    for r in range(ry):
        sums = BufLoad(acc, (add(c64(r * rx), i), ln), F32)
        q_row = mul(add(y0, r), g.ow)
        col0 = add(x0, mul(i, L))

        def px(ox: Expr, q_row: Expr = q_row, sums: Expr = sums) -> Stmt:
            return Store(out, (b, c, div(q_row, g.ow), ox), result(sums, q_row, ox))
        vec: Stmt = For(ln, emin(L, add(c64(g.ow), mul(col0, -1))), px(add(col0, ln)),
                        VECTOR, L)
        if g.ow % (rx * L) and -(-g.ow // L) % rx:      # a vector past the last column
            vec = IfThen(col0.lt(c64(g.ow)), vec)
        st: Stmt = For(i, c64(rx), vec, UNROLL)
        stores.append(st if g.oh % ry == 0 else IfThen(add(y0, r).lt(c64(g.oh)), st))
    tile = Allocate(acc, Allocate(hv, seq(windows, *stores)))
    nest = For(t, c64(g.n * g.c), For(yt, c64(-(-g.oh // ry)),
                                        For(xt, c64(-(-g.ow // (rx * L))), tile)),
               PARALLEL if p.parallel else SERIAL)
    return Lowered(Kernel(name, params, roles, nest, flops=group_flops(ctx.group)), packed)


def default_tile(g: PoolGeometry, lanes: int) -> tuple[int, int]:
    """(RX, RY): two vectors of a row where it has them, and as many rows as fill MAX_REGS / 2
    accumulators (a row's result and the loads need the rest): 8 rows of one vector."""
    rx = min(2, -(-g.ow // lanes))
    return rx, min(g.oh, 8 // rx)


class CpuPool(Rule):
    """`cpu.pool`: max and average pools read in place (see the module docstring)."""

    name = "cpu.pool"

    def geometry(self, ctx: LowerCtx) -> PoolGeometry | None:
        return ctx.memo("pool", lambda: pool_geometry(ctx))

    def applies(self, ctx: LowerCtx) -> bool:
        return ctx.opts.opt_level >= 1 and self.geometry(ctx) is not None

    def space(self, ctx: LowerCtx) -> KnobSpace:
        g = self.geometry(ctx)
        assert g is not None
        return {"RX": tuple(range(1, min(4, -(-g.ow // ctx.target.lanes)) + 1)),
                "RY": tuple(sorted({r for r in (1, 2, 3, 4, 5, 6, 7, 8, 16) if r < g.oh}
                                   | {min(g.oh, 16)})),
                "parallel": (False, True) if ctx.threads > 1 else (False,)}

    def invalid(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> str | None:
        if knobs["RX"] * knobs["RY"] > MAX_REGS:
            return f"RX x RY = {knobs['RX'] * knobs['RY']} vectors of results; at most {MAX_REGS}"
        return None

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        g = self.geometry(ctx)
        assert g is not None
        rx, ry = default_tile(g, ctx.target.lanes)
        return {"RX": rx, "RY": ry, "parallel": ctx.threads > 1}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        out = [step("tile", RX=knobs["RX"], RY=knobs["RY"])]
        if knobs["parallel"]:
            out.append(step("parallel", "t"))
        return out

    def apply(self, ctx: LowerCtx, steps: Sequence[Step]) -> Lowered:
        g = self.geometry(ctx)
        assert g is not None
        return pool_kernel(ctx, g, plan_from_steps(steps, ctx.name))
