"""Convolutions and matmuls seen as batched GEMMs with a fused epilogue, for the GEMM templates:

    C[b, m, n] = epilogue(sum_k A(b, m, k) * B(b, k, n), b, m, n)

An op names its view in the registry (`OpDef.template`); `VIEWS` maps that name to the builder
here, so no code in ir/loops tests op kinds. A view is target-neutral: it gives element loads of
both operands (guards and padding included), their constant values where they are constants (for
packing at compile time), where results go, and the epilogue. The CPU template (gemm.py) packs
operands into panels; the GPU template (gpu_gemm.py) stages tiles in shared memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np

from minicc.ir.compute import Const, Expr, Var, both, call, cast, select
from minicc.ir.graph import Op, Value
from minicc.ir.loops.exprs import add, c64, div, emax, emin, mod, mul, simplify  # noqa: F401
from minicc.ir.loops.nest import Inliner, const_scalar, group_flops, kernel_params, leaf_loader
from minicc.ir.loops.nodes import (BufLoad, Buffer, For, IfThen, LoopKind, Scope, Stmt, Store,
                                   seq)
from minicc.ir.passes.fuse import Group
from minicc.ir.registry import full_attrs, get_op
from minicc.ir.types import DType

I64 = DType.I64
I32 = DType.I32
F32 = DType.F32
Index3 = Callable[[Expr, Expr, Expr], Expr]


# A row panel packer (conv): (col, b, kc, kcur, nc, KC, rows, lanes) -> a Stmt filling
# col[kk, r*row + x] for this block of K rows and output rows
Panel = Callable[[Buffer, Expr, Expr, Expr, Expr, int, int, int], Stmt]


def vloop(v: Var, extent: Expr, body: Callable[[Expr], Stmt], lanes: int) -> Stmt:
    """for v in 0..extent vectorized by `lanes`, the tail masked; `body` gets v's expression."""
    vo, vv = Var(f"{v.name}.o"), Var(f"{v.name}.v")
    if isinstance(extent, Const) and extent.value <= lanes:  # type: ignore[operator]
        return For(vv, extent, body(vv), LoopKind.VECTOR, lanes)
    if isinstance(extent, Const):
        # whole vectors with a constant lane count (no mask to compute), then one masked tail
        n, tail = divmod(int(extent.value), lanes)   # type: ignore[arg-type]
        main: Stmt = For(vo, c64(n), For(vv, c64(lanes), body(add(mul(vo, lanes), vv)),
                                         LoopKind.VECTOR, lanes))
        if not tail:
            return main
        rest = For(vv, c64(tail), body(add(n * lanes, vv)), LoopKind.VECTOR, lanes)
        return seq(main, rest)
    n_o = div(add(extent, lanes - 1), lanes)
    rem = emin(lanes, add(extent, mul(vo, -lanes)))
    return For(vo, n_o, For(vv, rem, body(add(mul(vo, lanes), vv)), LoopKind.VECTOR, lanes))


@dataclass
class GemmView:
    """A group as a batched GEMM. Loads take expressions of (batch, row, column)."""

    name: str
    batch: int
    M: int
    N: int
    K: int
    a_load: Index3                      # A(b, m, k), read as it is
    b_load: Index3                      # B(b, k, n), zero where it is padding
    out: Buffer
    out_index: Callable[[Expr, Expr, Expr], tuple[Expr, ...]]
    epilogue: Callable[[Expr, Expr, Expr, Expr], Expr]   # (acc, b, m, n) -> value stored
    params: tuple[Buffer, ...]          # the kernel's parameters with both operands read as is
    roles: tuple[str, ...]
    flops: int                          # the group's, from the registry's cost functions
    a_const: np.ndarray | None = None   # A as [batches, M, K] when it is a constant
    a_batch: Callable[[Expr], Expr] = field(default=lambda b: c64(0))
    a_param: Buffer | None = None       # the parameter holding A (dropped once A is packed)
    b_const: np.ndarray | None = None   # B as [batches, K, N] when it is a constant
    b_batch: Callable[[Expr], Expr] = field(default=lambda b: c64(0))
    b_param: Buffer | None = None
    panel: Panel | None = None          # conv: packs whole output rows
    row: int | None = None              # conv: the output row length a panel block spans
    int8: bool = False                  # u8 x s8 -> int32 (conv_integer, matmul_integer)
    a_unsigned: bool = False            # int8: A holds the u8 activations (else B does)
    b_direct: bool = False              # B(b, k, n) is contiguous along n: read it in place
    extra: dict[Buffer, np.ndarray] = field(default_factory=dict)  # constants the epilogue reads
    a_panel: Panel | None = None        # conv with pixels as rows: packs A (all output rows)
    a_row: int | None = None            #   the output row length, and the number of rows
    a_rows: int | None = None
    pixel_rows: Callable[[], "GemmView"] | None = None   # conv: the view with pixels as rows
    prologue: Callable[[Expr, int], Stmt] | None = None  # (b, lanes): run per batch b before
    scratch: tuple[Buffer, ...] = ()                     # its blocks, into these buffers
    # int8 conv: the sums may start at zp_rows(m) (-zero point x row m's weight sum) where
    # the K blocks run on one thread, and then end in epilogue_from_init (no subtraction)
    zp_rows: Callable[[Expr, Expr], Expr] | None = None      # (b, m) -> int32
    epilogue_from_init: Callable[[Expr, Expr, Expr, Expr], Expr] | None = None

    def without(self, *drop: Buffer | None) -> tuple[tuple[Buffer, ...], tuple[str, ...]]:
        """The parameters and roles without the given buffers (operands packed elsewhere)."""
        keep = [(p, r) for p, r in zip(self.params, self.roles) if not any(p is d for d in drop)]
        return tuple(p for p, _ in keep), tuple(r for _, r in keep)


def epilogue(group: Group, bufs: Mapping[Value, Buffer], consts: Mapping[Value, np.ndarray],
             index: Callable[[Expr, Expr, Expr], tuple[Expr, ...]],
             anchor_value: Callable[[Expr, tuple[Expr, ...]], Expr]
             ) -> Callable[[Expr, Expr, Expr, Expr], Expr]:
    """The group's root expression with the anchor's result replaced by the accumulator."""
    leaf = leaf_loader(bufs, consts)

    def epi(accv: Expr, b: Expr, m: Expr, n: Expr) -> Expr:
        inl = Inliner(group, leaf, stop=group.anchor,
                      stop_expr=lambda ix: anchor_value(accv, ix))
        return cast(simplify(inl.expr(group.root, index(b, m, n))), group.output.type.dtype)
    return epi


Builder = Callable[[str, Group, Mapping[Value, Buffer], Mapping[Value, np.ndarray]],
                   "GemmView | None"]
VIEWS: dict[str, Builder] = {}


def view_builder(name: str) -> Callable[[Builder], Builder]:
    def reg(fn: Builder) -> Builder:
        if name in VIEWS:
            raise ValueError(f"GEMM view '{name}' registered twice")
        VIEWS[name] = fn
        return fn
    return reg


def gemm_view(name: str, group: Group, bufs: Mapping[Value, Buffer],
              consts: Mapping[Value, np.ndarray]) -> GemmView | None:
    """The group's GEMM view, when its anchor op names one in the registry and it applies."""
    if group.anchor is None:
        return None
    template = get_op(group.anchor.kind).template
    builder = VIEWS.get(template) if template else None
    v = builder(name, group, bufs, consts) if builder is not None else None
    if v is not None and 0 in (v.batch, v.M, v.N, v.K):
        return None     # an empty GEMM: the generic loop nest handles zero extents
    return v


# ---- conv2d as implicit GEMM ----------------------------------------------------------------

@dataclass(frozen=True)
class _Conv:
    """A 2-D convolution's geometry (batch n, groups g, mg output channels per group, cg input
    channels per group)."""

    n: int
    c: int
    h: int
    w: int
    m: int
    cg: int
    kh: int
    kw: int
    g: int
    oh: int
    ow: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int

    @property
    def mg(self) -> int:
        return self.m // self.g

    def in_image(self, iy: Expr, ix: Expr) -> Expr | None:
        """The bounds checks a padded or overhanging window needs (None: always inside)."""
        conds = []
        if self.pt or (self.oh - 1) * self.sh + (self.kh - 1) * self.dh - self.pt >= self.h:
            conds += [iy.ge(0), iy.lt(self.h)]
        if self.pl or (self.ow - 1) * self.sw + (self.kw - 1) * self.dw - self.pl >= self.w:
            conds += [ix.ge(0), ix.lt(self.w)]
        return both(*conds)

    def window(self, k: Expr, oy: Expr, ox: Expr) -> tuple[Expr, Expr, Expr]:
        """(channel within the group, y, x) that reduction index k reads at (oy, ox), counted
        in the padded input (the padding's first row and column are 0)."""
        ky, kx = mod(div(k, self.kw), self.kh), mod(k, self.kw)
        return (div(k, self.kh * self.kw), add(mul(oy, self.sh), mul(ky, self.dh)),
                add(mul(ox, self.sw), mul(kx, self.dw)))

    def tap(self, bg: Expr, k: Expr, oy: Expr, ox: Expr) -> tuple[Expr, Expr, Expr, Expr]:
        """(image, channel, y, x) of the input X reads for reduction index k at (oy, ox)."""
        c, y, x = self.window(k, oy, ox)
        return (div(bg, self.g), add(mul(mod(bg, self.g), self.cg), c), add(y, -self.pt),
                add(x, -self.pl))


def _conv_geometry(group: Group) -> _Conv | None:
    conv = group.anchor
    assert conv is not None
    x, w = conv.inputs[0], conv.inputs[1]
    if x.type.dtype not in (F32, DType.U8) or x.type.rank != 4:
        return None
    at = full_attrs(conv.kind, conv.attrs)
    n, c, h, wd = (int(d) for d in x.type.shape)  # type: ignore[arg-type]
    m, cg, kh, kw = (int(d) for d in w.type.shape)  # type: ignore[arg-type]
    out = conv.outputs[0]
    oh, ow = int(out.type.shape[2]), int(out.type.shape[3])  # type: ignore[arg-type]
    sh, sw = at["strides"] or (1, 1)
    dh, dw = at["dilations"] or (1, 1)
    pads = at["pads"] or (0, 0, 0, 0)
    return _Conv(n, c, h, wd, m, cg, kh, kw, at["group"], oh, ow, sh, sw, dh, dw, pads[0],
                 pads[1])


def _x_range(cv: _Conv, kx: int) -> tuple[int, int]:
    """The output columns [lo, hi) whose tap kx reads inside the input row."""
    off = kx * cv.dw - cv.pl                  # ix = ox * sw + off
    lo = min(cv.ow, max(0, -(-(-off) // cv.sw)))
    hi = min(cv.ow, (cv.w - 1 - off) // cv.sw + 1)
    return lo, max(lo, hi)


def _conv_panel(cv: _Conv, xb: Buffer) -> Panel:
    def panel(col: Buffer, bg: Expr, kc: Expr, kcur: Expr, nc: Expr, KC: int, rows: int,
              lanes: int) -> Stmt:
        """col[kk, r*OW + ox] = X[n, c, oy*s + ky*d - pt, ox*s + kx*d - pl] (0 in the pad).

        The taps kx are unrolled, so which vectors of a row reach into the left or right pad
        is known here: only those select, the rest copy (Zen 3: a 96 -> 24 ch 3x3 conv at
        160x160 spent 45% of its time here when every vector computed its bounds); a row in
        the top or bottom pad is zeros."""
        q, r, vo, vv = Var("q"), Var("r"), Var("ox.o"), Var("ox.v")
        k0 = mul(kc, KC)
        qa = add(div(k0, cv.kw), q)                          # (channel, ky) of these rows
        nq = add(div(add(k0, kcur, cv.kw - 1), cv.kw), mul(div(k0, cv.kw), -1))
        c = add(mul(mod(bg, cv.g), cv.cg), div(qa, cv.kh))
        ky = mod(qa, cv.kh)
        oy = add(mul(nc, rows), r)
        iy = add(mul(oy, cv.sh), mul(ky, cv.dh), -cv.pt)
        rows_here = emin(rows, add(cv.oh, mul(nc, -rows)))
        y_pad = cv.pt or (cv.oh - 1) * cv.sh + (cv.kh - 1) * cv.dh - cv.pt >= cv.h
        nvec = -(-cv.ow // lanes)

        def tap_row(kx: int, kk: Expr) -> Stmt:
            off = kx * cv.dw - cv.pl
            lo, hi = _x_range(cv, kx)
            ja = -(-lo // lanes)
            jb = max(ja, hi // lanes)                        # vectors [ja, jb) lie inside

            def cell(oxe: Expr, guard: bool, zero: bool = False) -> Stmt:
                ix = add(mul(oxe, cv.sw), off)
                v: Expr = Const(0.0, F32) if zero else BufLoad(
                    xb, (div(bg, cv.g), c, iy, ix), F32)
                if guard and not zero:
                    v = select(both(ix.ge(0), ix.lt(cv.w)), v, Const(0.0, F32))
                return Store(col, (kk, add(mul(r, cv.ow), oxe)), v)

            def vec(j: int, zero: bool = False) -> Stmt:
                return For(vv, c64(lanes), cell(add(j * lanes, vv), True, zero), LoopKind.VECTOR,
                           lanes)
            inside = For(vo, c64(jb - ja), For(vv, c64(lanes), cell(
                add(mul(add(vo, ja), lanes), vv), False), LoopKind.VECTOR, lanes)) \
                if jb > ja else None
            copy = seq(*[vec(j) for j in range(ja)], inside,
                       *[vec(j) for j in range(jb, nvec)])
            if not y_pad:
                return For(r, rows_here, copy)
            zeros = seq(*[vec(j, True) for j in range(nvec)])
            return For(r, rows_here, IfThen(both(iy.ge(0), iy.lt(cv.h)), copy, zeros))

        taps = []
        for kx in range(cv.kw):
            kk = add(mul(qa, cv.kw), kx, mul(k0, -1))
            taps.append(IfThen(both(kk.ge(0), kk.lt(kcur)), tap_row(kx, kk)))
        return For(q, nq, seq(*taps))
    return panel


def word(byte: Callable[[int], Expr]) -> Expr:
    """An int32 of four bytes, byte(j) (u8 or s8 values) at bits 8j..8j+7 (little-endian)."""
    out: Expr = Const(0, I32)
    for j in range(4):
        b = call("bitand", cast(byte(j), I32), Const(0xFF, I32))
        out = call("bitor", out, call("shl", b, Const(8 * j, I32)) if j else b)
    return out


def _conv_panel_i8(cv: _Conv, xb: Buffer, zp: Expr) -> Panel:
    def panel(col: Buffer, bg: Expr, kc: Expr, kcur: Expr, nc: Expr, KC: int, rows: int,
              lanes: int) -> Stmt:
        """col[kq, r*OW + ox] = the four u8 taps k = 4kq..4kq+3 at (oy, ox), as one int32
        (the zero point in the pad; 0 past K, where the weights are 0 too)."""
        kq, r, ox = Var("kq"), Var("r"), Var("ox")
        oy = add(mul(nc, rows), r)
        rows_here = emin(rows, add(cv.oh, mul(nc, -rows)))
        K = cv.cg * cv.kh * cv.kw

        def cell(oxe: Expr) -> Stmt:
            def byte(j: int) -> Expr:
                k = add(mul(kq, 4), j)
                nb, c, iy, ix = cv.tap(bg, emin(k, K - 1), oy, oxe)
                v: Expr = BufLoad(xb, (nb, c, iy, ix), DType.U8)
                cond = both(cv.in_image(iy, ix), k.lt(K) if K % 4 else None)
                if cond is not None:
                    v = select(cond, v, zp)
                return v
            return Store(col, (kq, add(mul(r, cv.ow), oxe)), word(byte))
        return For(kq, kcur, For(r, rows_here, vloop(ox, c64(cv.ow), cell, lanes)))
    return panel


# an int8 conv with padding copies its (image, group) input, padded with the zero point, into
# scratch where that is at most this many bytes (see _padded_input)
PAD_COPY_BYTES = 256 << 10


def _padded_input(name: str, cv: _Conv, xb: Buffer, zp: Expr
                  ) -> tuple[Panel, Callable[[Expr, int], Stmt], Buffer] | None:
    """A panel builder that reads a copy of the input padded with the zero point, and the
    copy: the plain panel checks every byte of every word against the image's edges, lane by
    lane (resnet18_like's 3-channel 7x7 stride-2 stem, 37 words of 16 lanes per pixel row,
    about 100 instructions a vector: int8 0.041 ms against fp32's 0.046). None where nothing
    needs padding or the copy would be large."""
    if cv.in_image(Var("y"), Var("x")) is None:
        return None
    hp = (cv.oh - 1) * cv.sh + (cv.kh - 1) * cv.dh + 1
    wp = (cv.ow - 1) * cv.sw + (cv.kw - 1) * cv.dw + 1
    if cv.cg * hp * wp > PAD_COPY_BYTES:
        return None
    xp = Buffer(f"{name}_xpad", DType.U8, (cv.cg, hp, wp), Scope.SCRATCH)
    K = cv.cg * cv.kh * cv.kw

    def copy(bg: Expr, lanes: int) -> Stmt:
        c, r = Var("pc"), Var("pr")
        ch = add(mul(mod(bg, cv.g), cv.cg), c)

        def cell(q: Expr) -> Stmt:
            iy, ix = add(r, -cv.pt), add(q, -cv.pl)
            inside = both(iy.ge(0), iy.lt(cv.h), ix.ge(0), ix.lt(cv.w))
            return Store(xp, (c, r, q), select(inside, BufLoad(
                xb, (div(bg, cv.g), ch, iy, ix), DType.U8), zp))
        return For(c, c64(cv.cg), For(r, c64(hp), vloop(Var("pq"), c64(wp), cell, lanes)))

    def panel(col: Buffer, bg: Expr, kc: Expr, kcur: Expr, nc: Expr, KC: int, rows: int,
              lanes: int) -> Stmt:
        """col[kq, r*OW + ox] = the four u8 taps k = 4kq..4kq+3 at (oy, ox) from the padded
        copy (past K the last tap again: its weights are 0)."""
        kq, r, ox = Var("kq"), Var("r"), Var("ox")
        oy = add(mul(nc, rows), r)
        rows_here = emin(rows, add(cv.oh, mul(nc, -rows)))

        def cell(oxe: Expr) -> Stmt:
            def byte(j: int) -> Expr:
                return BufLoad(xp, cv.window(emin(add(mul(kq, 4), j), K - 1), oy, oxe),
                               DType.U8)
            return Store(col, (kq, add(mul(r, cv.ow), oxe)), word(byte))
        return For(kq, kcur, For(r, rows_here, vloop(ox, c64(cv.ow), cell, lanes)))
    return panel, copy, xp


def quads(K: int) -> int:
    """int32 words of four bytes along a K of `K` elements."""
    return -(-K // 4)


@view_builder("conv2d_gemm")
def conv_view(name: str, group: Group, bufs: Mapping[Value, Buffer],
              consts: Mapping[Value, np.ndarray]) -> GemmView | None:
    """Implicit GEMM: M = output channels per group, N = output pixels, K = cg*kh*kw; one GEMM
    per (image, group). The weights (A) must be constant; depthwise convs are left to the
    generic loop nest, which vectorizes them better."""
    conv = group.anchor
    assert conv is not None
    x, w = conv.inputs[0], conv.inputs[1]
    cv = _conv_geometry(group)
    if cv is None or w not in consts or (cv.cg == 1 and cv.g > 1):
        return None
    if x.type.dtype == DType.U8:
        return _conv_view_i8(name, group, bufs, consts, cv)
    mg, K, P = cv.mg, cv.cg * cv.kh * cv.kw, cv.oh * cv.ow
    xb, wb = bufs[x], bufs.get(w)
    wsplat = const_scalar(w, consts)

    def a_load(bg: Expr, m: Expr, k: Expr) -> Expr:
        if wsplat is not None:
            return wsplat
        assert wb is not None
        return BufLoad(wb, (add(mul(mod(bg, cv.g), mg), m), div(k, cv.kh * cv.kw),
                            mod(div(k, cv.kw), cv.kh), mod(k, cv.kw)), F32)

    def b_load(bg: Expr, k: Expr, p: Expr) -> Expr:
        nb, c, iy, ix = cv.tap(bg, k, div(p, cv.ow), mod(p, cv.ow))
        cond = both(cv.in_image(iy, ix), p.lt(P))
        v: Expr = BufLoad(xb, (nb, c, iy, ix), F32)
        return select(cond, v, Const(0.0, F32)) if cond is not None else v

    def out_index(bg: Expr, m: Expr, p: Expr) -> tuple[Expr, ...]:
        return (div(bg, cv.g), add(mul(mod(bg, cv.g), mg), m), div(p, cv.ow), mod(p, cv.ow))

    bias = conv.inputs[2] if len(conv.inputs) == 3 else None

    def anchor_value(accv: Expr, ix: tuple[Expr, ...]) -> Expr:
        if bias is None:
            return accv
        c = const_scalar(bias, consts)
        return call("add", accv, c if c is not None else BufLoad(bufs[bias], (ix[1],), F32))

    params, roles = kernel_params(group, bufs, consts)
    v = GemmView(
        name, cv.n * cv.g, mg, P, K, a_load, b_load, bufs[group.output], out_index,
        epilogue(group, bufs, consts, out_index, anchor_value), params, roles,
        group_flops(group), a_const=np.asarray(consts[w], np.float32).reshape(cv.g, mg, K),
        a_batch=lambda bg: mod(bg, cv.g), a_param=wb if wsplat is None else None,
        panel=_conv_panel(cv, xb), row=cv.ow,
        b_direct=cv.kh == cv.kw == cv.sh == cv.sw == 1 and not (cv.pt or cv.pl) and
        cv.oh == cv.h and cv.ow == cv.w)
    if P == 1 and wsplat is None:
        return transposed(v)
    if wsplat is None and cv.g == 1:
        v.pixel_rows = lambda: replace(transposed(v), a_panel=v.panel, a_row=cv.ow,
                                       a_rows=cv.oh)
    return v


def transposed(v: GemmView) -> GemmView:
    """C^T = B^T A^T: the same GEMM with the operands' roles swapped. A conv over a 1x1 map
    (squeeze-excite, a classifier head) has one column: as is, one lane of each vector would
    work; swapped, the output channels fill the lanes and the weights stream through as the
    packed B panels."""
    a_load, b_load, out_index, epi = v.a_load, v.b_load, v.out_index, v.epilogue
    return GemmView(
        v.name, v.batch, v.N, v.M, v.K,
        lambda b, m, k: b_load(b, k, m), lambda b, k, n: a_load(b, n, k), v.out,
        lambda b, m, n: out_index(b, n, m), lambda acc, b, m, n: epi(acc, b, n, m),
        v.params, v.roles, v.flops,
        b_const=np.ascontiguousarray(v.a_const.transpose(0, 2, 1)) if v.a_const is not None
        else None, b_batch=v.a_batch, b_param=v.a_param, extra=v.extra)


def _zero_point(op_: Op, bufs: Mapping[Value, Buffer]) -> Expr:
    """The activation's zero point as a u8 expression: the attribute, or the run-time operand
    (dynamic quantization)."""
    if len(op_.inputs) == 3:
        z = op_.inputs[2]
        return BufLoad(bufs[z], (c64(0),) * z.type.rank, DType.U8)
    return Const(full_attrs(op_.kind, op_.attrs)["zero_point"], DType.U8)


def _zp_correction(name: str, zp: Expr, wsum: np.ndarray, index: int
                   ) -> tuple[Callable[[Expr, tuple[Expr, ...]], Expr], dict[Buffer, np.ndarray]]:
    """sum (x - zp) w = sum x w - zp * sum w: the int8 kernels multiply the stored u8 values,
    and the epilogue subtracts zp times each output channel's weight sum (a constant)."""
    if isinstance(zp, Const) and zp.value == 0:
        return (lambda accv, ix: accv), {}
    buf = Buffer(f"{name}_wsum", I32, (len(wsum),))
    arr = wsum.astype(np.int64).astype(np.int32)
    z = cast(zp, I32)
    return (lambda accv, ix: call("sub", accv, call("mul", z, BufLoad(buf, (ix[index],), I32)))
            ), {buf: arr}


def _conv_view_i8(name: str, group: Group, bufs: Mapping[Value, Buffer],
                  consts: Mapping[Value, np.ndarray], cv: _Conv) -> GemmView:
    """conv_integer as implicit GEMM: A = the s8 weights (packed at compile time), B = the u8
    activations (packed four K values to an int32 per column)."""
    conv = group.anchor
    assert conv is not None
    x, w = conv.inputs[0], conv.inputs[1]
    zp = _zero_point(conv, bufs)
    mg, K, P = cv.mg, cv.cg * cv.kh * cv.kw, cv.oh * cv.ow
    xb = bufs[x]
    wq = consts[w].astype(np.int8).reshape(cv.g, mg, K)

    def out_index(bg: Expr, m: Expr, p: Expr) -> tuple[Expr, ...]:
        return (div(bg, cv.g), add(mul(mod(bg, cv.g), mg), m), div(p, cv.ow), mod(p, cv.ow))

    wb = bufs.get(w)

    def a_load(bg: Expr, m: Expr, k: Expr) -> Expr:     # for the GPU template (the CPU packs)
        assert wb is not None
        return BufLoad(wb, (add(mul(mod(bg, cv.g), mg), m), div(k, cv.kh * cv.kw),
                            mod(div(k, cv.kw), cv.kh), mod(k, cv.kw)), DType.I8)

    def b_load(bg: Expr, k: Expr, p: Expr) -> Expr:
        nb, c, iy, ix = cv.tap(bg, k, div(p, cv.ow), mod(p, cv.ow))
        cond = cv.in_image(iy, ix)
        v: Expr = BufLoad(xb, (nb, c, iy, ix), DType.U8)
        return select(cond, v, zp) if cond is not None else v

    anchor_value, extra = _zp_correction(name, zp, wq.reshape(cv.m, K).sum(axis=1), 1)

    def zp_rows(bg: Expr, m: Expr) -> Expr:
        """Where the sums of row m of group bg start: -zp x that channel's weight sum."""
        (wsum,) = extra             # _zp_correction's one buffer
        return call("neg", call("mul", cast(zp, I32), BufLoad(
            wsum, (add(mul(mod(bg, cv.g), mg), emin(m, mg - 1)),), I32)))
    params, roles = kernel_params(group, bufs, consts)
    padded = _padded_input(name, cv, xb, zp)
    panel, prologue, scratch = (padded[0], padded[1], (padded[2],)) if padded is not None \
        else (_conv_panel_i8(cv, xb, zp), None, ())
    v = GemmView(
        name, cv.n * cv.g, mg, P, K, a_load, b_load, bufs[group.output], out_index,
        epilogue(group, bufs, consts, out_index, anchor_value), params, roles,
        group_flops(group), a_const=wq, a_batch=lambda bg: mod(bg, cv.g),
        a_param=bufs.get(w), panel=panel, row=cv.ow, int8=True, extra=extra,
        prologue=prologue, scratch=scratch, zp_rows=zp_rows if extra else None,
        epilogue_from_init=epilogue(group, bufs, consts, out_index, lambda accv, ix: accv))
    if cv.g == 1:
        # pixels as rows: the u8 activations are A (words of four K values packed per row
        # tile from the taps), the s8 weights B (packed at compile time, channels in lanes)
        v.pixel_rows = lambda: replace(transposed(v), int8=True, a_unsigned=True)
    return v


# ---- matmul ---------------------------------------------------------------------------------

def _batch_index(shape: list[int], batch_shape: list[int], bi: Expr) -> tuple[Expr, ...]:
    """Index of batch position `bi` (flat over the output's batch dims) into an operand of
    `shape` (numpy broadcasting over the leading dims)."""
    nb = len(shape) - 2
    off = len(batch_shape) - nb
    idx: list[Expr] = []
    for d_pos in range(len(batch_shape)):
        stride = int(np.prod(batch_shape[d_pos + 1:])) if d_pos + 1 < len(batch_shape) else 1
        if d_pos >= off:
            q = mod(div(bi, stride), batch_shape[d_pos])
            idx.append(c64(0) if shape[d_pos - off] == 1 else q)
    return tuple(idx)


@view_builder("matmul_gemm")
def matmul_view(name: str, group: Group, bufs: Mapping[Value, Buffer],
                consts: Mapping[Value, np.ndarray]) -> GemmView | None:
    """numpy matmul with broadcast batch dims; B is constant (weights) or an activation."""
    mm = group.anchor
    assert mm is not None
    a, bv = mm.inputs[0], mm.inputs[1]
    i8 = a.type.dtype == DType.U8
    if a.type.dtype not in (F32, DType.U8) or a.type.rank < 2 or bv.type.rank < 2:
        return None
    oshape = [int(d) for d in mm.outputs[0].type.shape]  # type: ignore[misc]
    batch_shape = oshape[:-2]
    batch = int(np.prod(batch_shape)) if batch_shape else 1
    M, N = oshape[-2], oshape[-1]
    K = int(a.type.shape[-1])  # type: ignore[arg-type]
    ashape = [int(d) for d in a.type.shape]  # type: ignore[misc]
    bshape = [int(d) for d in bv.type.shape]  # type: ignore[misc]
    ab, bb = bufs[a], bufs.get(bv)
    bsplat = const_scalar(bv, consts)

    def a_load(bi: Expr, m: Expr, k: Expr) -> Expr:
        return BufLoad(ab, _batch_index(ashape, batch_shape, bi) + (m, k), a.type.dtype)

    def b_load(bi: Expr, k: Expr, n: Expr) -> Expr:
        if bsplat is not None:
            return bsplat
        assert bb is not None
        return BufLoad(bb, _batch_index(bshape, batch_shape, bi) + (k, n), bv.type.dtype)

    def out_index(bi: Expr, m: Expr, n: Expr) -> tuple[Expr, ...]:
        idx = []
        for d_pos, d in enumerate(batch_shape):
            stride = int(np.prod(batch_shape[d_pos + 1:])) if d_pos + 1 < len(batch_shape) else 1
            idx.append(mod(div(bi, stride), d))
        return tuple(idx) + (m, n)

    if batch > 1 and ashape[:-2] == batch_shape and all(d == 1 for d in bshape[:-2]):
        # One B for every batch: the batches are one GEMM of batch*M rows (an RNN's input
        # projection, [seq, 1, in] @ [in, 4h], is 80 GEMMs of one row each otherwise). A and
        # the output are contiguous, so row r of the tall GEMM is batch r // M, row r % M.
        rows_m, per_batch = batch * M, M
        batch, M = 1, rows_m
        a_rows, out_rows = a_load, out_index

        def a_load(bi: Expr, m: Expr, k: Expr) -> Expr:
            return a_rows(div(m, per_batch), mod(m, per_batch), k)

        def out_index(bi: Expr, m: Expr, n: Expr) -> tuple[Expr, ...]:
            return out_rows(div(m, per_batch), mod(m, per_batch), n)

    b_const = None
    if bv in consts and (len(bshape) == 2 or all(d == 1 for d in bshape[:-2])):
        b_const = consts[bv].astype(np.int8 if i8 else np.float32).reshape(1, K, N)
    params, roles = kernel_params(group, bufs, consts)
    if i8:
        if b_const is None or bsplat is not None:
            return None       # u8 x u8 activations or batched weights: the generic loop nest
        anchor_value, extra = _zp_correction(name, _zero_point(mm, bufs),
                                             b_const[0].sum(axis=0), -1)
        return GemmView(
            name, batch, M, N, K, a_load, b_load, bufs[group.output], out_index,
            epilogue(group, bufs, consts, out_index, anchor_value), params, roles,
            group_flops(group), a_param=ab, b_const=b_const, b_param=bb, int8=True,
            a_unsigned=True, extra=extra)
    return GemmView(
        name, batch, M, N, K, a_load, b_load, bufs[group.output], out_index,
        epilogue(group, bufs, consts, out_index, lambda accv, ix: accv), params, roles,
        group_flops(group), a_param=ab, b_const=b_const,
        b_param=bb if b_const is not None and bsplat is None else None)
