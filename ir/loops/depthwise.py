"""The CPU depthwise-convolution template: a direct kernel per channel plane, in NCHW.

A depthwise conv (one input channel per output channel) reduces over the taps only, so the
GEMM template does not fit it, and the generic loop nest vectorizes it along one output row
(few lanes busy on the 7x7 and 14x14 maps of a MobileNet, gathers at stride 2, a bounds check
per tap). This template runs each (image, channel) plane in three steps:

    pack     the zero-padded input plane, split into s x s polyphase planes for stride s:
             S[pr*s + pc][a*Ws + m] = X[n, c, a*s + pr - pt, m*s + pc - pl]
             (the padding is the same for every plane: zeroed once per call, never copied)
    compute  over the flat index j = oy*Ws + ox of a Ws-wide output (ox >= OW is thrown away),
             every tap (ky, kx) is one contiguous vector load at a constant offset:
             acc[j] += S[(ky*d % s)*s + kx*d % s][j + (ky*d // s)*Ws + kx*d // s] * W[c, ky, kx]
             RX vectors of j in registers, the weight broadcast once per tap
    unpack   out[n, c, oy, ox] = epilogue(acc[oy*Ws + ox])    contiguous rows, the fused
                                                              bias, activation and residual

A conv of stride 1 or 2 without dilation can skip pack and unpack (`vectorize(x)`, the direct
kernel; the default where direct_default says): a register tile of RY output rows by RX
vectors of a row, each input row the tile's taps reach loaded once per column tap (lanes
outside the image masked off) and multiplied into every output row it is a tap of, the
epilogue applied to the registers (a polynomial one, SiLU's, over the band's sums in scratch).
MobileNetV2's depthwise convs 15-40% faster than through the planes.

An int8 conv (conv_integer: u8 activations, s8 weights) takes the same steps: the pack widens
each u8 to f32 and subtracts the zero point (so the zeroed padding is the zero point, as the op
defines it), the weights are widened as they are broadcast (the direct kernel takes them
widened at compile time), and the sums are exact (see EXACT_TAPS), so the epilogue's
requantization sees the int32 result the op defines. The planes hold f32 because the taps are
FMAs either way; what int8 saves is the u8 reads and writes. The direct kernel widens each u8
row it loads; it is the default for int8 too (Zen 4, MobileNetV2 with --int8-depthwise: the
kernels 3243 -> 3095 us in all, the 64x64 mobilenetv2_like 85 -> 75 us a run).

Planes too big for L1 with their flat output (a 112x112 map's, 100 KB) are taken in bands of
RY output rows: each band packs only the rows its taps reach (a row outside the image zeroed
where it falls), computes and unpacks, so the scratch stays in L1.

An int8 conv on a CPU with AVX-512 VNNI and VBMI takes `dot()` by default (see dot_kernel):
four taps of a kernel row per vpdpbusd word, each word gathered for 16 pixels by one byte
shuffle from a u8 copy of the plane bordered with the zero point. Zen 4, MobileNetV2-like
(64x64) int8 at 1 thread, its eight depthwise convs (`minicc profile`): 37 us with f32 taps
(the direct kernel), 11 us in dot(); kept float (reading the f32 expansion), 29 us.

No transposes and no gathers: the layout stays the model's. Its steps are the knobs:
`tile(RX=4, RY=8)` (vectors per register tile, output rows per band; RY left out: the whole
plane; with `vectorize(x)` or `dot()`, the rows of the register tile), `vectorize(x)`,
`vectorize(c)` or `dot()`, and `parallel(t)` (threads share the planes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import ScheduleError
from minicc.ir.compute import Const, Expr, Var, call, cast, select
from minicc.ir.loops.gemm_views import (_Conv, _conv_geometry, add, c64, div, emax, emin,
                                        epilogue, mod, mul, vloop)
from minicc.ir.loops.nest import const_scalar, group_flops, kernel_params
from minicc.ir.loops.nodes import (Allocate, BufLoad, Buffer, For, IfThen, Kernel, LoopKind, Scope,
                                   Stmt, Store, seq)
from minicc.ir.loops.schedule import KnobSpace, LowerCtx, Lowered, Rule
from minicc.ir.loops.trace import Step, int_kwargs, step
from minicc.ir.registry import full_attrs, get_op
from minicc.ir.types import DType

F32 = DType.F32
# int8 depthwise convs sum in f32: |x - zp| <= 255 and |w| <= 128, so up to 2^24 / (255 * 128)
# taps every partial sum is an integer f32 holds exactly, and the result equals the int32 one
EXACT_TAPS = (1 << 24) // (255 * 128)
LANES_MAX_PIXELS = 16      # output maps of up to 4x4 put channels in the lanes by default,
LANES_MAX_PIXELS_S1 = 64   # and stride-1 maps of up to 8x8 (see DepthwiseRule.defaults)
BAND_BYTES = 16 << 10      # a plane's scratch past this is taken in bands of rows
BAND_ELEMENTS = 512        # of about this many plane columns (see band_rows)
# ops whose epilogue is a few vector instructions (see direct_default)
CHEAP_EPILOGUE = {"conv", "add", "sub", "mul", "div", "clip", "relu", "max", "min",
                  "leaky_relu", "hard_sigmoid", "hard_swish"}
DOT_BLOCK_BYTES = 4 << 10  # the dot kernel's planes packed at a time: up to 8 in this much
DOT_RY = 8                 # the dot kernel's output rows per register tile (rows mode):
#                            mobilenetv2_like int8 42.4 us a run in tiles of 4, 42.0 in 8,
#                            41.5 in 16 (Zen 4); mobilenetv2_224 even (2.46-2.49 ms)
DIRECT_RY = 6              # output rows per register tile of the direct kernel (direct_tile)
SERIAL, PARALLEL, VECTOR, UNROLL = (LoopKind.SERIAL, LoopKind.PARALLEL, LoopKind.VECTOR,
                                    LoopKind.UNROLL)


def depthwise_geometry(ctx: LowerCtx) -> _Conv | None:
    """The conv's geometry when the group's anchor is a 2-D depthwise conv (one input channel
    per group, one output channel per input channel) with constant weights and one stride for
    both axes: a float conv, or a conv_integer with its zero point an attribute and few enough
    taps that the float sums stay exact."""
    a = ctx.group.anchor
    if a is None or get_op(a.kind).template != "conv2d_gemm" or a.inputs[1] not in ctx.consts:
        return None
    if a.inputs[0].type.dtype == DType.U8:
        w = ctx.consts[a.inputs[1]]
        if len(a.inputs) != 2 or w.ndim != 4 or w.shape[2] * w.shape[3] > EXACT_TAPS:
            return None
    elif a.inputs[0].type.dtype != F32:
        return None
    cv = _conv_geometry(ctx.group)
    if cv is None or cv.cg != 1 or not (cv.g == cv.c == cv.m) or cv.g == 1 or \
            0 in (cv.n, cv.h, cv.w, cv.oh, cv.ow):
        return None
    return cv if cv.sh == cv.sw else None


@dataclass(frozen=True)
class Planes:
    """The polyphase planes of one input plane: s*s planes of hs rows of ws columns (ws is also
    the width of the flat output), enough rows that every vector of j reads inside them."""

    s: int
    hs: int
    ws: int
    nvec: int       # vectors of j covering the OH x Ws flat output

    @staticmethod
    def of(cv: _Conv, lanes: int, rows: int | None = None) -> "Planes":
        """For a band of `rows` output rows (default: all of them)."""
        s = cv.sh
        ry, rx = (cv.kh - 1) * cv.dh // s, (cv.kw - 1) * cv.dw // s   # the largest tap offsets
        ws = cv.ow + rx
        nvec = -(-(rows or cv.oh) * ws // lanes)
        # the last vector reads up to nvec*lanes - 1 + ry*ws + rx
        hs = -(-(nvec * lanes + ry * ws + rx) // ws)
        return Planes(s, hs, ws, nvec)


@dataclass(frozen=True)
class DwPlan:
    rx: int
    parallel: bool
    lanes: bool = False     # channels in the vector lanes (small maps), not pixels
    ry: int | None = None   # output rows per band (None: the whole plane at once)
    direct: bool = False    # output rows in the lanes, taps read from the input in place
    dot: bool = False       # int8 with VNNI: four taps of a kernel row per vpdpbusd word


class DepthwiseKernel:
    """Builds the kernel a plan describes (see the module docstring)."""

    def __init__(self, ctx: LowerCtx, cv: _Conv, p: DwPlan):
        self.ctx, self.cv, self.p = ctx, cv, p
        self.L = ctx.target.lanes
        self.ry = min(p.ry or cv.oh, cv.oh)
        self.pl = Planes.of(cv, self.L, self.ry)
        conv = ctx.group.anchor
        assert conv is not None
        self.conv = conv
        self.i8 = conv.inputs[0].type.dtype == DType.U8
        self.zp = float(full_attrs(conv.kind, conv.attrs)["zero_point"]) if self.i8 else 0.0

    def value(self, v: Expr) -> Expr:
        """An input element as the f32 the taps multiply (int8: widened, zero point off)."""
        if self.i8:
            return call("sub", cast(v, F32), Const(self.zp, F32))
        return v

    def lowered(self) -> Lowered:
        if self.p.lanes:
            return self.lanes_kernel()
        if self.p.dot:
            return self.dot_kernel()
        if self.p.direct:
            return self.direct_kernel()
        return Lowered(self.kernel())

    def _epilogue(self) -> tuple[Any, Any]:
        """(out_index, epi) for the group's output."""
        cv, conv, consts, bufs = self.cv, self.conv, self.ctx.consts, self.ctx.bufs
        bias = conv.inputs[2] if len(conv.inputs) == 3 else None

        def out_index(bb: Expr, m: Expr, q: Expr) -> tuple[Expr, ...]:
            return (bb, m, div(q, cv.ow), mod(q, cv.ow))

        def anchor_value(accv: Expr, idx: tuple[Expr, ...]) -> Expr:
            if self.i8:
                return cast(accv, DType.I32)
            if bias is None:
                return accv
            k = const_scalar(bias, consts)
            return call("add", accv, k if k is not None else BufLoad(bufs[bias], (idx[1],), F32))
        return out_index, epilogue(self.ctx.group, bufs, consts, out_index, anchor_value)

    def lanes_kernel(self) -> Lowered:
        """Channels in the lanes, for maps too small to fill vectors with pixels: per block of
        L channels, the padded window region transposed to [pixel][channel] (the padding
        zeroed once per call), one FMA per tap and output pixel with the tap's L weights
        (packed [block][tap][channel] at compile time), and the outputs transposed back through
        the epilogue."""
        cv, p, L = self.cv, self.p, self.L
        name, bufs, consts = self.ctx.name, self.ctx.bufs, self.ctx.consts
        conv = self.conv
        x = bufs[conv.inputs[0]]
        s, P = cv.sh, cv.oh * cv.ow
        hp, wp = (cv.oh - 1) * s + (cv.kh - 1) * cv.dh + 1, (cv.ow - 1) * s + (cv.kw - 1) * cv.dw + 1
        cb_n = -(-cv.c // L)
        taps = cv.kh * cv.kw
        w = np.zeros((cb_n * L, taps), np.float32)
        w[:cv.c] = consts[conv.inputs[1]].astype(np.float32).reshape(cv.c, taps)
        wt_arr = np.ascontiguousarray(w.reshape(cb_n, L, taps).transpose(0, 2, 1))
        wt = Buffer(f"{name}_wl", F32, wt_arr.shape, Scope.GLOBAL)
        win = Buffer(f"{name}_win", F32, (hp * wp, L), Scope.SCRATCH)
        ob = Buffer(f"{name}_acc", F32, (P, L), Scope.SCRATCH)
        acc = Buffer(f"{name}_regs", F32, (p.rx, L), Scope.LOCAL)

        t, e, ln = Var("t"), Var("e"), Var("l")
        b = div(t, cb_n) if cv.n > 1 else c64(0)
        cb = mod(t, cb_n)
        zero = For(e, c64(hp * wp), For(ln, c64(L), Store(win, (e, ln), Const(0.0, F32)),
                                         VECTOR, L))
        # pack: window rows r hold image row r - pt (the others stay zero)
        r0, r1 = max(0, cv.pt), min(hp, cv.h + cv.pt)
        q0, q1 = max(0, cv.pl), min(wp, cv.w + cv.pl)
        r, q = Var("r"), Var("q")
        ch = emin(add(mul(cb, L), ln), cv.c - 1)       # tail lanes reread the last channel
        pack = For(r, c64(r1 - r0), For(q, c64(q1 - q0), For(ln, c64(L), Store(
            win, (add(mul(add(r, r0), wp), q, q0), ln),
            self.value(BufLoad(x, (b, ch, add(r, r0 - cv.pt), add(q, q0 - cv.pl)), x.dtype))),
            VECTOR, L)))
        # compute: RX output pixels, a vector of L channels each
        jt, i, ky, kx = Var("jt"), Var("i"), Var("ky"), Var("kx")
        pix = emin(add(mul(jt, p.rx), i), P - 1)       # a short last tile redoes a pixel
        oy, ox = div(pix, cv.ow), mod(pix, cv.ow)
        row = add(mul(add(mul(oy, s), mul(ky, cv.dh)), wp), mul(ox, s), mul(kx, cv.dw))

        def cells(body: Stmt) -> Stmt:
            return For(i, c64(p.rx), For(ln, c64(L), body, VECTOR, L), UNROLL)
        acc_il = BufLoad(acc, (i, ln), F32)
        fma = Store(acc, (i, ln), call("add", acc_il, call(
            "mul", BufLoad(win, (row, ln), F32),
            BufLoad(wt, (cb, add(mul(ky, cv.kw), kx), ln), F32))))
        tile = Allocate(acc, seq(
            cells(Store(acc, (i, ln), Const(0.0, F32))),
            For(ky, c64(cv.kh), For(kx, c64(cv.kw), cells(fma))),
            cells(Store(ob, (pix, ln), acc_il))))
        compute = For(jt, c64(-(-P // p.rx)), tile)
        # unpack: per channel of the block, its output plane, with the epilogue
        out_index, epi = self._epilogue()
        c_ = Var("c")
        chan = add(mul(cb, L), c_)

        def px(pe: Expr) -> Stmt:
            return Store(bufs[self.ctx.group.output], out_index(b, chan, pe),
                         epi(BufLoad(ob, (pe, c_), F32), b, chan, pe))
        unpack = For(c_, emin(L, add(c64(cv.c), mul(cb, -L))), vloop(Var("p"), c64(P), px, L))

        body = seq(zero, For(t, c64(cv.n * cb_n), seq(pack, compute, unpack),
                             PARALLEL if p.parallel else SERIAL))
        params, roles = kernel_params(self.ctx.group, bufs, consts)
        k = Kernel(name, params + (wt, win, ob), roles + ("weight", "scratch", "scratch"), body,
                   flops=group_flops(self.ctx.group))
        return Lowered(k, {wt: wt_arr})

    def dot_kernel(self) -> Lowered:
        """int8 where the CPU has AVX-512 VNNI and VBMI: per (image, channel) plane, the u8 plane
        copied into scratch between borders of the zero point (filled once per call), then per
        vector of output pixels (a row's, or whole rows of a map narrower than a vector) and
        per four taps of a kernel row, one int32 word of the four input bytes per pixel (one
        byte shuffle, see the renderer's byte_word) into one `dpbusd` with the channel's four
        s8 weights: a 3x3 conv is three vpdpbusd per 16 pixels where the f32 kernels take
        nine FMAs and nine widenings. The borders hold the zero point, so the sums start
        at -zero point x sum(w) to come out as the op's int32."""
        cv, L = self.cv, self.L
        name, bufs, consts = self.ctx.name, self.ctx.bufs, self.ctx.consts
        x, out = bufs[self.conv.inputs[0]], bufs[self.ctx.group.output]
        s, U8, I32 = cv.sh, DType.U8, DType.I32
        hp = (cv.oh - 1) * s + (cv.kh - 1) * cv.dh + 1
        wp = (cv.ow - 1) * s + (cv.kw - 1) * cv.dw + 1
        rpv = dot_rows_per_vector(cv, L)            # output rows per vector (0: a row's part)
        nxv = -(-cv.ow // L)
        ry = max(1, min(self.p.ry or DOT_RY, cv.oh))   # rows mode: output rows per tile
        # the furthest byte any lane reads (lanes past the map read beyond it, thrown away)
        last_oy = (-(-cv.oh // rpv) * rpv if rpv else -(-cv.oh // ry) * ry) - 1
        last_ox = cv.ow - 1 if rpv else nxv * L - 1
        need = (last_oy * s + (cv.kh - 1) * cv.dh) * wp + last_ox * s + (cv.kw - 1) * cv.dw + 1
        size = -(-max(need, hp * wp) // 64) * 64
        # planes packed a block at a time before any is read: a plane's loads right after its
        # own stores would wait for them to reach the cache (no store forwarding into a wider
        # load), 60 cycles a plane for 144 ch at 4x4 against 25 in blocks of 8
        cbn = max(1, min(8, cv.c, DOT_BLOCK_BYTES // size))
        nblk = -(-cv.c // cbn)
        sp = Buffer(f"{name}_plane", U8, (cbn, size), Scope.SCRATCH)
        # weights: the s8 taps of each kernel row in words of four (little-endian), zero-filled
        gpr = -(-cv.kw // 4)
        w8 = consts[self.conv.inputs[1]].reshape(cv.c, cv.kh, cv.kw).astype(np.int8)
        wq = np.zeros((cv.c, cv.kh, gpr * 4), np.int8)
        wq[:, :, :cv.kw] = w8
        w_arr = np.ascontiguousarray(wq).view("<i4").reshape(cv.c, cv.kh * gpr).astype(np.int32)
        # the sums start at -zero point x sum(w) (the borders' share), not zero
        corr_arr = (-int(self.zp) * w8.reshape(cv.c, -1).astype(np.int64).sum(1)).astype(np.int32)
        wb = Buffer(f"{name}_w4", I32, w_arr.shape, Scope.GLOBAL)
        cb = Buffer(f"{name}_zpw", I32, corr_arr.shape, Scope.GLOBAL)
        acc = Buffer(f"{name}_acc", I32, (1 if rpv else ry, L), Scope.LOCAL)
        wv = Buffer(f"{name}_word", I32, (L,), Scope.LOCAL)

        t, e, ln, cc = Var("t"), Var("e"), Var("l"), Var("cc")
        b = div(t, nblk) if cv.n > 1 else c64(0)
        c = add(mul(mod(t, nblk), cbn), cc)
        fill = For(cc, c64(cbn), vloop(e, c64(size), lambda ev: Store(
            sp, (cc, ev), Const(int(self.zp), U8)), L))
        r, q = Var("r"), Var("q")
        r0, r1 = max(0, cv.pt), min(hp, cv.h + cv.pt)
        q0, q1 = max(0, cv.pl), min(wp, cv.w + cv.pl)
        block = emin(cbn, add(c64(cv.c), mul(mod(t, nblk), -cbn)))    # planes in this block
        pack = For(cc, block, For(r, c64(max(0, r1 - r0)), vloop(
            q, c64(max(0, q1 - q0)), lambda qv: Store(
                sp, (cc, add(mul(add(r, r0), wp), qv, q0)),
                BufLoad(x, (b, c, add(r, r0 - cv.pt), add(qv, q0 - cv.pl)), U8)), L)))

        def word(row: Expr, ox: Expr, kx0: int) -> Expr:
            """Taps kx0..kx0+3 of plane row `row` for output column ox, a byte each."""
            w: Expr | None = None
            for k in range(min(4, cv.kw - kx0)):
                at = add(mul(row, wp), mul(ox, s), (kx0 + k) * cv.dw)
                byte = cast(BufLoad(sp, (cc, at), U8), I32)
                term = byte if k == 0 else call("shl", byte, Const(8 * k, I32))
                w = term if w is None else call("bitor", w, term)
            assert w is not None
            return w

        def vec(body: Stmt) -> Stmt:
            return For(ln, c64(L), body, VECTOR, L)

        def dots(oy0: Expr, rows: int, ox: Expr, oy_lane: Expr = c64(0)) -> Stmt:
            """`rows` output rows from oy0 (+ oy_lane per lane): each plane row the taps
            reach made into words once, each word into every row it is a tap of."""
            body: list[Stmt] = [vec(Store(acc, (c64(r_), ln), BufLoad(cb, (c,), I32)))
                                for r_ in range(rows)]
            reach: dict[int, list[tuple[int, int]]] = {}
            for r_ in range(rows):
                for ky in range(cv.kh):
                    reach.setdefault(r_ * s + ky * cv.dh, []).append((r_, ky))
            for d in sorted(reach):
                row = add(mul(add(oy0, oy_lane), s), d)
                for g in range(gpr):
                    body.append(vec(Store(wv, (ln,), word(row, ox, 4 * g))))
                    for r_, ky in reach[d]:
                        a = (c64(r_), ln)
                        body.append(vec(Store(acc, a, call(
                            "dpbusd", BufLoad(acc, a, I32), BufLoad(wv, (ln,), I32),
                            BufLoad(wb, (c, c64(ky * gpr + g)), I32)))))
            return Allocate(wv, seq(*body))

        out_index, epi = self._epilogue()

        def sums(r_: int) -> Expr:
            return BufLoad(acc, (c64(r_), ln), I32)
        v = Var("v")
        if rpv:         # whole output rows per vector: the flat index of the plane in the lanes
            j = add(mul(v, L), ln)
            nv = -(-cv.oh // rpv)
            store = For(ln, emin(L, add(c64(cv.oh * cv.ow), mul(v, -L))), Store(
                out, out_index(b, c, j), epi(sums(0), b, c, j)), VECTOR, L)
            compute = For(v, c64(nv), Allocate(acc, seq(
                dots(mul(v, rpv), 1, mod(ln, cv.ow), div(ln, cv.ow)), store)))
        else:           # tiles of ry output rows by a vector of a row (lanes past it unused)
            yt, xv = Var("yt"), Var("xv")
            ox = add(mul(xv, L), ln)
            stores: list[Stmt] = []
            for r_ in range(ry):
                jq = add(mul(add(mul(yt, ry), r_), cv.ow), ox)
                st: Stmt = For(ln, emin(L, add(c64(cv.ow), mul(xv, -L))), Store(
                    out, out_index(b, c, jq), epi(sums(r_), b, c, jq)), VECTOR, L)
                if cv.oh % ry:
                    st = IfThen(add(mul(yt, ry), r_).lt(c64(cv.oh)), st)
                stores.append(st)
            compute = For(yt, c64(-(-cv.oh // ry)), For(xv, c64(nxv), Allocate(
                acc, seq(dots(mul(yt, ry), ry, ox), *stores))))
        body = seq(fill, For(t, c64(cv.n * nblk), seq(pack, For(cc, block, compute)),
                             PARALLEL if self.p.parallel else SERIAL))
        params, roles = kernel_params(self.ctx.group, bufs, consts)
        k = Kernel(name, params + (wb, cb, sp), roles + ("weight", "weight", "scratch"), body,
                   flops=group_flops(self.ctx.group))
        return Lowered(k, {wb: w_arr, cb: corr_arr})

    def direct_kernel(self) -> Lowered:
        """Stride 1 or 2, no dilation: a tile of RY output rows x RX vectors of each row in
        registers; each input row the tile's taps reach is loaded once per column tap (lanes
        outside the image masked to zero; at stride 2 every other element) and feeds every
        output row it is a tap of. No padded copy of the plane and no flat output to unpack:
        a cheap epilogue runs on the accumulators, any other over the band's sums in scratch
        (see cheap_epilogue)."""
        cv, p, L = self.cv, self.p, self.L
        name, bufs, consts = self.ctx.name, self.ctx.bufs, self.ctx.consts
        x = bufs[self.conv.inputs[0]]
        # int8: the s8 weights widened to f32 [channel, tap] at compile time, not per tap
        w_arr = np.ascontiguousarray(consts[self.conv.inputs[1]].astype(np.float32).reshape(
            cv.c, cv.kh * cv.kw)) if self.i8 else None
        wb = Buffer(f"{name}_wd", F32, (cv.c, cv.kh * cv.kw), Scope.GLOBAL) if self.i8 else \
            bufs[self.conv.inputs[1]]
        ry, rx = min(p.ry or DIRECT_RY, cv.oh), p.rx
        acc = Buffer(f"{name}_regs", F32, (ry * rx, L), Scope.LOCAL)
        xv = Buffer(f"{name}_row", F32, (rx, L), Scope.LOCAL)
        t, yt, xt = Var("t"), Var("yt"), Var("xt")
        i, ln = Var("i"), Var("l")
        b = div(t, cv.c) if cv.n > 1 else c64(0)
        c = mod(t, cv.c)
        y0, x0 = mul(yt, ry), mul(xt, rx * L)
        xi = add(x0, mul(i, L), ln)                     # the lane's output column

        def cells(body: Stmt) -> Stmt:
            return For(i, c64(rx), For(ln, c64(L), body, VECTOR, L), UNROLL)
        taps: list[Stmt] = [For(Var("r"), c64(ry), cells(Store(
            acc, (add(mul(Var("r"), rx), i), ln), Const(0.0, F32))), UNROLL)]
        sd = cv.sh
        for j in range((ry - 1) * sd + cv.kh):          # the input rows the tile reaches
            iy = add(mul(y0, sd), j - cv.pt)
            row_in = call("and", iy.ge(c64(0)), iy.lt(c64(cv.h)))
            iyc = emin(emax(iy, 0), cv.h - 1)           # an address inside the plane
            for kx in range(cv.kw):
                ix = add(mul(xi, sd), kx - cv.pl)
                inside = call("and", row_in, call("and", ix.ge(c64(0)), ix.lt(c64(cv.w))))
                load = cells(Store(xv, (i, ln), select(
                    inside, self.value(BufLoad(x, (b, c, iyc, ix), x.dtype)),
                    Const(0.0, F32))))
                fmas = []
                for r in range(ry):
                    ky = j - r * sd
                    if 0 <= ky < cv.kh:
                        a = (add(c64(r * rx), i), ln)
                        tap = (c, c64(ky * cv.kw + kx)) if self.i8 else \
                            (c, c64(0), c64(ky), c64(kx))
                        wv = BufLoad(wb, tap, F32)
                        fmas.append(cells(Store(acc, a, call("add", BufLoad(acc, a, F32), call(
                            "mul", BufLoad(xv, (i, ln), F32), wv)))))
                taps.append(seq(load, *fmas))
        out_index, epi = self._epilogue()
        out = bufs[self.ctx.group.output]
        # an epilogue with a polynomial (SiLU) applied to the registers would spill the tile's
        # sums and weights: the band's sums go to scratch in whole vectors (a load of what a
        # masked store wrote waits for the store to retire), and the epilogue runs over them
        split = not cheap_epilogue(self.ctx.group)
        width = -(-cv.ow // (rx * L)) * rx * L
        band_buf = Buffer(f"{name}_band", F32, (ry, width), Scope.SCRATCH)
        stores: list[Stmt] = []
        for r in range(ry):
            sums = BufLoad(acc, (add(c64(r * rx), i), ln), F32)
            if split:           # whole vectors, the columns past the map too
                stores.append(cells(Store(band_buf, (c64(r), add(x0, mul(i, L), ln)), sums)))
                continue
            q_row = mul(add(y0, r), cv.ow)

            def px(ox: Expr, q_row: Expr = q_row, sums: Expr = sums) -> Stmt:
                q = add(q_row, ox)
                return Store(out, out_index(b, c, q), epi(sums, b, c, q))
            col0 = add(x0, mul(i, L))
            vec: Stmt = For(ln, emin(L, add(c64(cv.ow), mul(col0, -1))), px(add(col0, ln)),
                            VECTOR, L)
            if cv.ow % (rx * L) and -(-cv.ow // L) % rx:      # a vector past the last column
                vec = IfThen(col0.lt(c64(cv.ow)), vec)
            row = For(i, c64(rx), vec, UNROLL)
            stores.append(row if cv.oh % ry == 0 else
                          IfThen(add(y0, r).lt(c64(cv.oh)), row))
        tile = Allocate(acc, Allocate(xv, seq(*taps, *stores)))
        band: Stmt = For(xt, c64(-(-cv.ow // (rx * L))), tile)
        if split:
            oy = Var("oy")

            def fin(ox: Expr) -> Stmt:
                q = add(mul(add(y0, oy), cv.ow), ox)
                return Store(out, out_index(b, c, q), epi(BufLoad(band_buf, (oy, ox), F32),
                                                          b, c, q))
            band = seq(band, For(oy, emin(ry, add(c64(cv.oh), mul(y0, -1))),
                                 vloop(Var("ox"), c64(cv.ow), fin, L)))
        body = For(t, c64(cv.n * cv.c), For(yt, c64(-(-cv.oh // ry)), band),
                   PARALLEL if p.parallel else SERIAL)
        params, roles = kernel_params(self.ctx.group, bufs, consts)
        packed = {}
        if w_arr is not None:
            params, roles, packed = params + (wb,), roles + ("weight",), {wb: w_arr}
        if split:
            params, roles = params + (band_buf,), roles + ("scratch",)
        return Lowered(Kernel(name, params, roles, body, flops=group_flops(self.ctx.group)),
                       packed)

    def kernel(self) -> Kernel:
        cv, p, L, pl = self.cv, self.p, self.L, self.pl
        name, bufs, consts = self.ctx.name, self.ctx.bufs, self.ctx.consts
        conv = self.conv
        x, wb = bufs[conv.inputs[0]], bufs[conv.inputs[1]]
        s, ry = pl.s, self.ry
        nb = -(-cv.oh // ry)                    # bands of ry output rows
        sp = Buffer(f"{name}_planes", F32, (s * s, pl.hs * pl.ws), Scope.SCRATCH)
        ob = Buffer(f"{name}_acc", F32, (pl.nvec * L,), Scope.SCRATCH)
        acc = Buffer(f"{name}_regs", F32, (p.rx, L), Scope.LOCAL)

        t, bd = Var("t"), Var("bd")
        b = div(t, cv.c) if cv.n > 1 else c64(0)
        c = mod(t, cv.c)
        y0 = mul(bd, ry) if nb > 1 else c64(0)      # the band's first output row

        # pack: the padded plane, split by the phases of the stride. The padding columns are
        # the same for every plane, so they are zeroed once per call and only the inside is
        # copied; with bands, a band row outside the image is zeroed where it falls.
        e, a = Var("e"), Var("a")
        zero = For(Var("ph"), c64(s * s), vloop(e, c64(pl.hs * pl.ws), lambda ev: Store(
            sp, (Var("ph"), ev), Const(0.0, F32)), L))
        copies = []
        for pr in range(s):
            for pc in range(s):
                m0, m1 = max(0, -((pc - cv.pl) // s)), min(pl.ws, (cv.w - 1 + cv.pl - pc) // s + 1)
                if m1 <= m0:
                    continue

                def row(ar: Expr, zeros: bool = False, pr: int = pr, pc: int = pc,
                        m0: int = m0, m1: int = m1) -> Stmt:
                    """Band row ar of phase plane (pr, pc): image row (y0 + ar)*s + pr - pt."""
                    def cell(m: Expr) -> Stmt:
                        mr = add(m, m0)
                        dst = (c64(pr * s + pc), add(mul(ar, pl.ws), mr))
                        if zeros:
                            return Store(sp, dst, Const(0.0, F32))
                        v = self.value(BufLoad(x, (b, c, add(mul(add(y0, ar), s), pr - cv.pt),
                                                   add(mul(mr, s), pc - cv.pl)), x.dtype))
                        return Store(sp, dst, v)
                    return vloop(Var("m"), c64(m1 - m0), cell, L)
                if nb == 1:
                    a0 = max(0, -((pr - cv.pt) // s))
                    a1 = min(pl.hs, (cv.h - 1 + cv.pt - pr) // s + 1)
                    if a1 > a0:
                        copies.append(For(a, c64(a1 - a0), row(add(a, a0))))
                    continue
                iy = add(mul(add(y0, a), s), pr - cv.pt)
                inside = call("and", iy.ge(c64(0)), iy.lt(c64(cv.h)))
                copies.append(For(a, c64(pl.hs), IfThen(inside, row(a), row(a, True))))
        pack = seq(*copies)

        # compute: RX vectors of the flat output in registers, one vector load per tap
        jt, i, ky, kx, ln = Var("jt"), Var("i"), Var("ky"), Var("kx"), Var("l")
        jv = emin(add(mul(jt, p.rx), i), pl.nvec - 1)   # a short last tile redoes a vector
        j = add(mul(jv, L), ln)
        oy_, ox_ = mul(ky, cv.dh), mul(kx, cv.dw)
        phase = add(mul(mod(oy_, s), s), mod(ox_, s)) if s > 1 else c64(0)
        off = add(mul(div(oy_, s), pl.ws), div(ox_, s)) if s > 1 else add(mul(oy_, pl.ws), ox_)

        def cells(body: Stmt) -> Stmt:
            return For(i, c64(p.rx), For(ln, c64(L), body, VECTOR, L), UNROLL)
        acc_il = BufLoad(acc, (i, ln), F32)
        tap = BufLoad(sp, (phase, add(j, off)), F32)
        wv = cast(BufLoad(wb, (c, c64(0), ky, kx), wb.dtype), F32)
        fma = Store(acc, (i, ln), call("add", acc_il, call("mul", tap, wv)))
        tile = Allocate(acc, seq(
            cells(Store(acc, (i, ln), Const(0.0, F32))),
            For(ky, c64(cv.kh), For(kx, c64(cv.kw), cells(fma))),
            cells(Store(ob, (j,), acc_il))))
        compute = For(jt, c64(-(-pl.nvec // p.rx)), tile)

        # unpack: the band's output rows, with the epilogue
        out_index, epi = self._epilogue()
        oy = Var("oy")

        def px(oxe: Expr) -> Stmt:
            q = add(mul(add(y0, oy), cv.ow), oxe)
            return Store(bufs[self.ctx.group.output], out_index(b, c, q),
                         epi(BufLoad(ob, (add(mul(oy, pl.ws), oxe),), F32), b, c, q))
        rows = c64(ry) if cv.oh % ry == 0 or nb == 1 else emin(ry, add(c64(cv.oh), mul(y0, -1)))
        unpack = For(oy, rows, vloop(Var("ox"), c64(cv.ow), px, L))

        plane = seq(pack, compute, unpack)
        if nb > 1:
            plane = For(bd, c64(nb), plane)
        body = seq(zero, For(t, c64(cv.n * cv.c), plane, PARALLEL if p.parallel else SERIAL))
        params, roles = kernel_params(self.ctx.group, bufs, consts)
        return Kernel(name, params + (sp, ob), roles + ("scratch", "scratch"), body,
                      flops=group_flops(self.ctx.group))


def band_rows(cv: _Conv, lanes: int, threads: int) -> int | None:
    """Output rows per band where a whole plane's scratch (its polyphase planes and the flat
    output) would not fit in L1 with room to spare (BAND_BYTES): about BAND_ELEMENTS input
    columns of the planes per band at 1 thread, 4 times as many with more (where half of a
    plane comes from the other core, longer runs measured better). MobileNetV2 on a Xeon:
    alone, 32 ch 3x3 at 112x112 0.21 -> 0.18 ms in bands of 4 rows, 144 ch at 56x56 0.22 ->
    0.17 ms in bands of 8, 96 ch stride 2 onto 56x56 0.36 -> 0.25 ms in bands of 4; the whole
    model 4% faster at 1 thread; at 2, even with the whole plane (and 2-5% ahead of the short
    bands); the whole plane (None) where it fits."""
    pl = Planes.of(cv, lanes)
    if (pl.s * pl.s * pl.hs * pl.ws + pl.nvec * lanes) * 4 <= BAND_BYTES:
        return None
    per = BAND_ELEMENTS * (1 if threads == 1 else 4)
    ry = max(1, per // (pl.ws * pl.s))
    ry = -(-cv.oh // -(-cv.oh // ry))       # the same bands, as even as they can be
    return ry if ry < cv.oh else None


def plan_from_steps(steps: Sequence[Step], name: str = "", cv: _Conv | None = None) -> DwPlan:
    where = f"depthwise template ({name})" if name else "depthwise template"
    got: dict[str, Any] = {"parallel": False, "lanes": False, "direct": False, "dot": False}
    for st in steps:
        if st.name == "dot" and not st.args:
            got["dot"] = True
        elif st.name == "tile":
            got.update(int_kwargs(st, ("RX", "RY")))
        elif st.name == "parallel" and st.args == ("t",):
            got["parallel"] = True
        elif st.name == "vectorize" and st.args == ("c",):
            got["lanes"] = True
        elif st.name == "vectorize" and st.args == ("x",):
            got["direct"] = True
        else:
            raise ScheduleError(f"{st}: not a step of the depthwise template (tile, "
                                "vectorize(c), vectorize(x), dot, parallel)")
    if not 1 <= got.get("rx", 0) <= 16:
        raise ScheduleError(f"{where}: the steps must set tile(RX=1..16)")
    ry = got.get("ry")
    if ry is not None and ry < 1:
        raise ScheduleError(f"{where}: tile(RY={ry}) must be at least one output row per band")
    if ry is not None and got["lanes"]:
        raise ScheduleError(f"{where}: tile(RY={ry}) bands the pixels in the lanes; with "
                            "vectorize(c) (channels in the lanes) leave RY out")
    if got["lanes"] and got["direct"]:
        raise ScheduleError(f"{where}: vectorize(c) and vectorize(x) put different things in "
                            "the lanes; take one")
    if got["direct"] and cv is not None and not direct_fits(cv):
        raise ScheduleError(f"{where}: vectorize(x) reads the taps in place, which needs "
                            f"stride 1 or 2 and no dilation (this conv: stride {cv.sh}, "
                            f"dilation {cv.dh}x{cv.dw})")
    if got["direct"] and got["rx"] * (ry or DIRECT_RY) > 16:
        raise ScheduleError(f"{where}: vectorize(x) holds RX x RY = "
                            f"{got['rx'] * (ry or DIRECT_RY)} vectors of sums; at most 16")
    if got["dot"] and (got["lanes"] or got["direct"]):
        raise ScheduleError(f"{where}: dot reads pixels in the lanes from its own copy of the "
                            "plane; leave vectorize(c) and vectorize(x) out")
    return DwPlan(got["rx"], got["parallel"], got["lanes"], got.get("ry"), got["direct"],
                  got["dot"])


def dot_rows_per_vector(cv: _Conv, lanes: int) -> int:
    """Output rows per vector of the dot kernel: whole rows where they divide a vector (a 4x4
    or 8x8 map), else 0 (each row in vectors of its own)."""
    return lanes // cv.ow if cv.ow < lanes and lanes % cv.ow == 0 else 0


def dot_fits(ctx: LowerCtx, cv: _Conv) -> bool:
    """The dot kernel's needs: a u8 conv (the s8 weights fit vpdpbusd as they are), AVX-512
    VNNI with VBMI's byte shuffles (16 lanes of words), and each word's four bytes for a
    vector of pixels within 127 bytes of the plane (so one shuffle of two vectors gathers
    them; a stride-2 conv onto a 4x4 map reads 9 rows of its input per vector)."""
    conv = ctx.group.anchor
    feats = ctx.target.features
    if conv is None or conv.inputs[0].type.dtype != DType.U8 or ctx.target.lanes != 16 or \
            "avx512vnni" not in feats or "avx512vbmi" not in feats:
        return False
    s, L = cv.sh, ctx.target.lanes
    wp = (cv.ow - 1) * s + (cv.kw - 1) * cv.dw + 1
    rpv = dot_rows_per_vector(cv, L)
    rows, cols = (rpv, cv.ow) if rpv else (1, L)        # every lane reads, past the map too
    span = (rows - 1) * s * wp + (cols - 1) * s + min(4, cv.kw) * cv.dw
    return span <= 4 * L * 2 - 1


def direct_fits(cv: _Conv) -> bool:
    """The direct kernel reads each tap as a vector of an input row (stride 2: every other
    element, two loads and a shuffle): strides 1 and 2, no dilation."""
    return cv.sh == cv.sw and cv.sh <= 2 and cv.dh == cv.dw == 1


def cheap_epilogue(group: Any) -> bool:
    """An epilogue of a few vector instructions, applied to the direct kernel's registers; any
    other (SiLU's sigmoid) runs over the band's sums in scratch (see direct_kernel)."""
    return all(op.kind in CHEAP_EPILOGUE for op in group.ops)


def direct_default(cv: _Conv, lanes: int, cheap_epilogue: bool) -> bool:
    """Where the direct kernel is the default: every stride-1 conv, and stride 2 (columns read
    at stride 2: two loads and a shuffle) except, for SiLU, onto rows of more than two
    vectors. A Xeon, per kernel in the model at 1 and 2 threads, against the planes:
    MobileNetV2's (ReLU6) at stride 1 0.60-0.86x, 144 ch stride 2 onto 28x28 0.71-0.76x, 96
    ch onto 56x56 0.95-1.04x, 192 ch onto 14x14 0.98 / 0.74x, 576 ch onto 7x7 0.68 / 0.63x,
    the 64x64 one's 48 ch onto 16x16 0.80x and 72 ch onto 8x8 0.68x (1 thread);
    MobileNetV3's (ReLU, HardSwish) at 14x14 0.76-0.88x, onto 14x14 1.03 / 0.77x and 7x7
    0.95 / 0.89x, the rest even; EfficientNet-B0's (SiLU) at 14x14 0.69x (5x5) and 0.88x
    (3x3), 5x5 at 28x28 0.88x, 144 ch stride 2 onto 28x28 0.94x, onto 14x14 1.03 / 0.75x and
    7x7 0.99 / 0.97x, but 96 ch stride 2 onto 56x56 1.13x."""
    if not direct_fits(cv):
        return False
    if cv.sh == 2:
        return cheap_epilogue or cv.ow <= 2 * lanes
    return True


def direct_tile(cv: _Conv, lanes: int, cheap_epilogue: bool) -> tuple[int, int]:
    """(RX, RY) of the direct kernel: one vector of 6 rows (the best of 3-8 for MobileNetV2's
    maps: 32 ch at 112x112 108 us against 117 in 4 rows, 384 ch at 14x14 22.8 against 27.3),
    4 for rows of two vectors (28x28: 37 us against 46 in 6 rows or 47 in 7, whatever the
    padding); with the epilogue in a second pass (SiLU), 7 rows where they divide the map,
    else 8 (EfficientNet-B0's 5x5 at 14x14 193 -> 133 us against 6 rows); at stride 2 two
    vectors of 4 rows (7 with SiLU); onto rows of one vector, as many rows as divide the map
    from 4 to 8 (7 of 14x14: 4 rows were 1.29x slower for MobileNetV2's 192 ch)."""
    if cv.sh == 2 and cv.ow <= lanes:
        return 1, cv.oh if cv.oh <= 8 else next((r for r in (8, 7, 6, 5, 4) if cv.oh % r == 0), 8)
    if cv.sh == 2:
        return min(2, -(-cv.ow // lanes)), min(cv.oh, 4 if cheap_epilogue else 7)
    if not cheap_epilogue:
        return 1, min(cv.oh, 7 if cv.oh % 7 == 0 else 8)
    return 1, min(cv.oh, 4 if lanes < cv.ow <= 2 * lanes else 6)


class CpuDepthwise(Rule):
    """`cpu.depthwise`: float and int8 depthwise convs with their fused epilogue."""

    name = "cpu.depthwise"

    def geometry(self, ctx: LowerCtx) -> _Conv | None:
        return ctx.memo("depthwise", lambda: depthwise_geometry(ctx))

    def applies(self, ctx: LowerCtx) -> bool:
        return ctx.opts.opt_level >= 1 and self.geometry(ctx) is not None

    def _nvec(self, ctx: LowerCtx) -> int:
        cv = self.geometry(ctx)
        assert cv is not None
        return Planes.of(cv, ctx.target.lanes).nvec

    def space(self, ctx: LowerCtx) -> KnobSpace:
        cv = self.geometry(ctx)
        assert cv is not None
        return {"lanes": (False, True), "direct": (False, True) if direct_fits(cv) else (False,),
                "dot": (False, True) if dot_fits(ctx, cv) else (False,),
                "RY": tuple(sorted({r for r in (1, 2, 3, 4, 5, 6, 7, 8, 16, 32) if r < cv.oh}
                                   | {cv.oh, band_rows(cv, ctx.target.lanes, ctx.threads)
                                      or cv.oh})),
                "RX": tuple(range(1, max(self._nvec(ctx), min(cv.oh * cv.ow, 12)) + 1)),
                "parallel": (False, True) if ctx.threads > 1 else (False,)}

    def invalid(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> str | None:
        cv = self.geometry(ctx)
        assert cv is not None
        if knobs.get("dot") and (knobs.get("direct") or knobs.get("lanes")):
            return "dot puts pixels in the lanes from its own copy of the plane: no " \
                "vectorize(c) or vectorize(x) with it"
        if knobs.get("dot"):
            return None if min(knobs.get("RY") or DOT_RY, cv.oh) <= 16 else \
                "dot holds RY rows of sums: at most 16"
        if not knobs.get("direct"):
            return None
        if knobs.get("lanes"):
            return "vectorize(x) and vectorize(c) put different things in the lanes"
        ry = min(knobs.get("RY") or DIRECT_RY, cv.oh)
        if knobs["RX"] * ry > 16:
            return f"vectorize(x) holds RX x RY = {knobs['RX'] * ry} vectors of sums; at most 16"
        if knobs["RX"] > -(-cv.ow // ctx.target.lanes):
            return f"RX={knobs['RX']} vectors is more than a row of {cv.ow} pixels"
        return None

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """Pixels in the lanes: read in place (the direct kernel) where direct_default says,
        else from polyphase planes, up to 6 vectors per register tile, as even as the plane
        allows; channels in the lanes instead where a plane's output
        leaves most pixel lanes idle or costs more in per-plane steps than in taps
        (LANES_MAX_PIXELS); threads share the planes or channel blocks."""
        cv = self.geometry(ctx)
        assert cv is not None
        # A Xeon, 960 ch 3x3 at 7x7: 47 us per plane, 31 with channels in the lanes at 1
        # thread, and 65 against 23 at 2 (MobileNetV2's last stage); at 10x10 even, at 14x14
        # and for stride 2 onto 7x7 the planes are ahead
        # Zen 4 (slow gathers, see Target.fast_gather), MobileNetV2-like at 64x64, 1 thread,
        # int8 model: 96 ch at 8x8 8.9 -> 4.4 us in the direct kernel, 96 ch stride 2 onto 4x4
        # 4.8 -> 2.7, 144 ch at 4x4 3.4 -> 3.2; 960 ch at 7x7 (MobileNetV2's) even
        most = LANES_MAX_PIXELS_S1 if cv.sh == cv.sw == 1 else LANES_MAX_PIXELS
        lanes = cv.oh * cv.ow <= most and cv.c >= ctx.target.lanes and \
            (ctx.target.fast_gather or not direct_fits(cv))
        if dot_fits(ctx, cv):
            return {"lanes": False, "direct": False, "dot": True, "RX": 1,
                    "RY": min(DOT_RY, cv.oh),
                    "parallel": ctx.default_threads > 1}
        cheap = cheap_epilogue(ctx.group)
        if not lanes and direct_default(cv, ctx.target.lanes, cheap):
            rx, ry = direct_tile(cv, ctx.target.lanes, cheap)
            return {"lanes": False, "direct": True, "dot": False, "RX": rx, "RY": ry,
                    "parallel": ctx.default_threads > 1}
        ry = (None if lanes else band_rows(cv, ctx.target.lanes, ctx.threads)) or cv.oh
        n = cv.oh * cv.ow if lanes else Planes.of(cv, ctx.target.lanes, ry).nvec
        ntile = -(-n // 6)
        return {"lanes": lanes, "direct": False, "dot": False, "RX": -(-n // ntile), "RY": ry,
                "parallel": ctx.default_threads > 1}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        cv = self.geometry(ctx)
        assert cv is not None
        ry = knobs.get("RY")
        if knobs.get("dot"):
            return [step("tile", RX=1, RY=min(ry or DOT_RY, cv.oh)), step("dot")] + \
                ([step("parallel", "t")] if knobs["parallel"] else [])
        if knobs.get("direct") and not knobs.get("lanes"):
            ry = min(ry or DIRECT_RY, cv.oh)
            rx = max(1, min(knobs["RX"], 16 // ry, -(-cv.ow // ctx.target.lanes)))
            out = [step("tile", RX=rx, RY=ry), step("vectorize", "x")]
        else:
            out = [step("tile", RX=knobs["RX"]) if ry is None or ry >= cv.oh or
                   knobs.get("lanes") else step("tile", RX=knobs["RX"], RY=ry)]
        if knobs.get("lanes"):
            out.append(step("vectorize", "c"))
        if knobs["parallel"]:
            out.append(step("parallel", "t"))
        return out

    def apply(self, ctx: LowerCtx, steps: Sequence[Step]) -> Lowered:
        cv = self.geometry(ctx)
        assert cv is not None
        plan = plan_from_steps(steps, ctx.name, cv)
        if plan.dot and not dot_fits(ctx, cv):
            raise ScheduleError(f"depthwise template ({ctx.name}): dot needs an int8 conv, "
                                "AVX-512 VNNI and VBMI, and each vector's taps within 127 "
                                "bytes of the plane")
        return DepthwiseKernel(ctx, cv, plan).lowered()
