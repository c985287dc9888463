"""The CPU Winograd template: 3x3 stride-1 convolutions as F(2x2, 3x3) or F(4x4, 3x3) (Lavin
and Gray, 2016).

Each m x m block of outputs (a tile t) comes from the (m+2)-square input patch d around it:

    input    V[xi,nu][c][t] = (B^T d B)[xi][nu]
    GEMM     Y[xi,nu][m][t] = sum_c U[xi,nu][m][c] V[xi,nu][c][t]     U = G g G^T (compile time)
    output   y[m][m*ty + a][m*tx + b] = (A^T Y A)[a][b], then the group's epilogue

F(2x2, 3x3) runs sixteen GEMMs of K = C where the direct conv runs one of K = 9C: 2.25x fewer
multiply-adds. F(4x4, 3x3) runs 36 GEMMs over a quarter of the tiles: 4x fewer, for longer
transforms, U 4x the weights, and a few times F(2x2, 3x3)'s rounding (transform entries up to 8
and down to 1/24: about 6e-6 of the largest output against 5e-7). The GEMMs are the GEMM
template's own micro-kernel (gemm.py: U packed at compile time, V read in place, partial sums
in Y). The input transform vectorizes along the tiles of a row (lanes read every m-th input
column); the output transform along the output columns (lane ox reads tile ox // m and takes
column ox % m of its block), with the bias, activation and residual of the group on the way out.

Tile rows go in blocks whose V and Y stay in L2 (RB rows, the GEMMs' columns padded to NR as
little as the rows allow). Scratch is per thread, so threads take whole blocks
(`parallel(blk)`), or each transforms the whole input itself and runs its share of the output
channels (`parallel(m)`, where U is past L2): one parallel loop, no barrier.

Knobs: `tile(F, MR, NR, KC, RB)` (F: the output tile side, 2 or 4; MR, NR, KC: the GEMMs'),
`parallel(blk | m)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import ScheduleError
from minicc.ir.compute import Const, Expr, Var, both, call, select
from minicc.ir.loops.gemm import GemmKernel, GemmPlan
from minicc.ir.loops.gemm_views import (GemmView, _Conv, _conv_geometry, add, c64, div, emin,
                                        epilogue, mod, mul)
from minicc.ir.loops.nest import const_scalar, group_flops, kernel_params
from minicc.ir.loops.nodes import (Allocate, BufLoad, Buffer, For, IfThen, Kernel, LoopKind,
                                   Scope, Stmt, Store, seq)
from minicc.ir.loops.primitives import subst_stmt
from minicc.ir.loops.schedule import KnobSpace, LowerCtx, Lowered, Rule
from minicc.ir.loops.trace import Step, int_kwargs, step
from minicc.ir.registry import get_op
from minicc.ir.types import DType

F32 = DType.F32
SERIAL, PARALLEL, VECTOR, UNROLL = (LoopKind.SERIAL, LoopKind.PARALLEL, LoopKind.VECTOR,
                                    LoopKind.UNROLL)
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
# F(4x4, 3x3): 6x6 input patches, 36 GEMMs, 4x fewer multiply-adds than the direct conv
BT4 = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G4 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT4 = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)
MATRICES = {2: (BT, G, AT), 4: (BT4, G4, AT4)}      # output tile side m -> (B^T, G, A^T)
# the default: where F(2x2, 3x3) measured faster than the GEMM template (see CpuWinograd)
MIN_CHANNELS, MIN_TILES = 16, 25
BLOCK_BYTES = 1 << 20
U_L2_BYTES = 1 << 20         # transformed weights that stay in L2 from block to block
L2_BYTES = 2 << 20           # V and Y of one block where U is past L2 (see _rows_per_block)
U_MAX_BYTES = 6 << 20        # past this, U's traffic outweighs the saved multiply-adds
U4_MAX_BYTES = 5 << 19       # F(4x4, 3x3)'s U, 36 C M floats: 128 x 128 channels (2.25 MiB)


def winograd_geometry(ctx: LowerCtx) -> _Conv | None:
    """The conv's geometry when the group's anchor is a float 3x3 conv with stride 1, no
    dilation, one group, constant weights and at most one pixel of padding on a side."""
    a = ctx.group.anchor
    if a is None or get_op(a.kind).template != "conv2d_gemm" or a.inputs[1] not in ctx.consts \
            or a.inputs[0].type.dtype != F32 or a.kind != "conv":
        return None
    cv = _conv_geometry(ctx.group)
    if cv is None or (cv.kh, cv.kw, cv.sh, cv.sw, cv.dh, cv.dw, cv.g) != (3, 3, 1, 1, 1, 1, 1):
        return None
    if not (0 <= cv.pt <= 1 and 0 <= cv.pl <= 1) or 0 in (cv.n, cv.c, cv.m, cv.oh, cv.ow):
        return None
    return cv


def transformed_weights(w: np.ndarray, m: int = 2) -> np.ndarray:
    """U[xi*n + nu][m][c] = (G g[m, c] G^T)[xi][nu] (n = m + 2), in f32."""
    g = MATRICES[m][1]
    u = np.einsum("xa,mcab,yb->xymc", g, w.astype(np.float64), g)
    return u.reshape((m + 2) ** 2, w.shape[0], w.shape[1]).astype(np.float32)


def _combo(coef: np.ndarray, terms: list[Expr]) -> Expr:
    """sum_k coef[k] * terms[k]: adds and subtracts, and a multiply for coefficients other
    than +-1 (F(4x4, 3x3)'s 2, 4, 5 and 8)."""
    out: Expr | None = None
    for c, t in zip(coef, terms):
        if c == 0:
            continue
        mag = abs(float(c))
        term = t if mag == 1 else call("mul", t, Const(mag, F32))
        if out is None:
            out = term if c > 0 else call("neg", term)
        else:
            out = call("add" if c > 0 else "sub", out, term)
    assert out is not None
    return out


@dataclass(frozen=True)
class WinoPlan:
    mr: int
    nr: int
    kc: int
    rb: int             # tile rows per block: the transforms and GEMMs run block by block
    parallel: str       # none | m (threads share the output channels) | blk (the blocks)
    f: int = 2          # the output tile's side: F(2x2, 3x3) or F(4x4, 3x3)


class WinogradKernel:
    def __init__(self, ctx: LowerCtx, cv: _Conv, p: WinoPlan):
        self.ctx, self.cv, self.p = ctx, cv, p
        self.L = ctx.target.lanes
        self.m = p.f                                            # output tile side
        self.n = p.f + 2                                        # input patch side
        self.nn = self.n * self.n                               # transformed components
        self.BT, _, self.AT = MATRICES[p.f]
        self.th, self.tw = -(-cv.oh // p.f), -(-cv.ow // p.f)
        self.rb = min(p.rb, self.th)
        self.nblk = -(-self.th // self.rb)
        # threads taking whole blocks take equal rows: the blocks (a multiple of the threads)
        # split the tile rows within one (a 56x56 map's 14 rows in blocks of at most 4: 3, 4,
        # 3, 4, not 4, 4, 4, 2, one thread 8 rows and the other 6; light_resnet50's F(4x4)
        # convs at 2 threads scaled 1.44-1.54x)
        self.even = p.parallel == "blk" and ctx.threads > 1 and self.nblk >= ctx.threads
        if self.even:
            self.nblk = -(-self.nblk // ctx.threads) * ctx.threads
        self.t = self.rb * self.tw                              # tiles of a block
        self.tp = -(-self.t // p.nr) * p.nr                     # columns of the GEMMs
        conv = ctx.group.anchor
        assert conv is not None
        self.conv = conv

    def input_transform(self, b: Expr, blk: Expr, V: Buffer, dl: Buffer, tl: Buffer) -> Stmt:
        """V[:, c, (ty - ty0)*TW + tx] for every channel and tile of the block's rows, vectors
        of tiles along a row."""
        cv, L = self.cv, self.L
        x = self.ctx.bufs[self.conv.inputs[0]]
        c, tr, xo, ln, i, j = Var("c"), Var("tr"), Var("xo"), Var("l"), Var("i"), Var("j")
        ty = add(self.start(blk), tr)
        tx = add(mul(xo, L), ln)
        rem = emin(L, add(c64(self.tw), mul(xo, -L)))

        def vec(body: Stmt) -> Stmt:
            return For(ln, rem, body, VECTOR, L)
        m, n, BTm = self.m, self.n, self.BT
        iy, ix = add(mul(ty, m), i, -cv.pt), add(mul(tx, m), j, -cv.pl)
        conds = []
        if cv.pt or m * self.th + n - m - cv.pt > cv.h:
            conds += [iy.ge(0), iy.lt(cv.h)]
        if cv.pl or m * self.tw + n - m - cv.pl > cv.w:
            conds += [ix.ge(0), ix.lt(cv.w)]
        cond = both(*conds)
        val: Expr = BufLoad(x, (b, c, iy, ix), F32)
        if cond is not None:
            val = select(cond, val, Const(0.0, F32))
        load = For(i, c64(n), For(j, c64(n), vec(Store(dl, (add(mul(i, n), j), ln), val)),
                                  UNROLL), UNROLL)
        d = [[BufLoad(dl, (c64(n * a + e), ln), F32) for e in range(n)] for a in range(n)]
        rows = seq(*(vec(seq(*(Store(tl, (c64(n * a + nu), ln), _combo(BTm[nu], d[a]))
                               for nu in range(n)))) for a in range(n)))
        tt = [[BufLoad(tl, (c64(n * a + nu), ln), F32) for nu in range(n)] for a in range(n)]
        col = add(mul(tr, self.tw), tx)
        cols = seq(*(vec(seq(*(Store(V, (c64(n * xi + nu), c, col),
                                     _combo(BTm[xi], [tt[a][nu] for a in range(n)]))
                               for xi in range(n)))) for nu in range(n)))
        per_vec = Allocate(dl, Allocate(tl, seq(load, rows, cols)))
        return For(c, c64(cv.c), For(tr, self.rows(blk), For(xo, c64(-(-self.tw // L)),
                                                             per_vec)))

    def start(self, blk: Expr) -> Expr:
        """The first tile row of block `blk`."""
        return div(mul(blk, self.th), self.nblk) if self.even else mul(blk, self.rb)

    def rows(self, blk: Expr) -> Expr:
        """Tile rows in block `blk` (the last may have fewer; even blocks differ by one)."""
        if self.even:
            return add(self.start(add(blk, 1)), mul(self.start(blk), -1))
        return emin(self.rb, add(c64(self.th), mul(blk, -self.rb)))

    def zero_tails(self, buf: Buffer, start: int) -> Stmt | None:
        """Zeros in the columns of `buf` from `start` on, which the GEMMs (V) or the output
        transform (Y) read but nothing writes: denormal garbage there costs an assist per
        operation on Intel cores (see gemm.py zero_tail)."""
        width = buf.shape[2]
        if width == start:
            return None
        r, c, ln = Var("zr"), Var("zc"), Var("zl")
        n = width - start
        V, rows = buf, buf.shape[1]
        body: Stmt = For(ln, c64(min(n, self.L)), Store(V, (r, c, add(start, ln)),
                                                         Const(0.0, F32)), VECTOR, self.L)
        if n > self.L:
            zo = Var("zo")
            body = For(zo, c64(-(-n // self.L)), For(ln, emin(self.L, add(c64(n), mul(
                zo, -self.L))), Store(V, (r, c, add(start, mul(zo, self.L), ln)),
                Const(0.0, F32)), VECTOR, self.L))
        return For(r, c64(self.nn), For(c, c64(rows), body))

    def output_transform(self, b: Expr, blk: Expr, m: Expr, Y: Buffer, yl: Buffer) -> Stmt:
        """out[b, m, 2ty + a, ox] = epilogue((A^T Y A)[a][ox % 2]) for a vector of ox."""
        cv, L = self.cv, self.L
        ctx, conv = self.ctx, self.conv
        bias = conv.inputs[2] if len(conv.inputs) == 3 else None

        def out_index(bb: Expr, mm: Expr, q: Expr) -> tuple[Expr, ...]:
            return (bb, mm, div(q, cv.ow), mod(q, cv.ow))

        def anchor_value(accv: Expr, idx: tuple[Expr, ...]) -> Expr:
            if bias is None:
                return accv
            k = const_scalar(bias, ctx.consts)
            return call("add", accv, k if k is not None else
                        BufLoad(ctx.bufs[bias], (idx[1],), F32))
        epi = epilogue(ctx.group, ctx.bufs, ctx.consts, out_index, anchor_value)
        tr, xo, ln, comp = Var("tr"), Var("xo"), Var("l"), Var("k")
        ty = add(self.start(blk), tr)
        ox = add(mul(xo, L), ln)
        rem = emin(L, add(c64(cv.ow), mul(xo, -L)))
        f, n, ATm = self.m, self.n, self.AT
        t = add(mul(tr, self.tw), div(ox, f))
        # whole vectors of Y even in the row's last, partial vector (Y's rows are padded for
        # it, see lowered): lane ox reads tile ox // f as one short load and a shuffle, where a
        # masked load would be a gather
        load = For(comp, c64(self.nn), For(ln, c64(L), Store(yl, (comp, ln), BufLoad(
            Y, (comp, m, t), F32)), VECTOR, L), UNROLL)
        yv = [[BufLoad(yl, (c64(n * xi + nu), ln), F32) for nu in range(n)] for xi in range(n)]
        col = mod(ox, f)                      # the lane's column in its tile
        stores = []
        for a in range(f):
            s = [_combo(ATm[a], [yv[xi][nu] for xi in range(n)]) for nu in range(n)]
            val = _combo(ATm[f - 1], s)
            for bcol in range(f - 2, -1, -1):
                val = select(col.eq(bcol), _combo(ATm[bcol], s), val)
            oy = add(mul(ty, f), a)
            q = add(mul(oy, cv.ow), ox)
            st: Stmt = For(ln, rem, Store(ctx.bufs[ctx.group.output], out_index(b, m, q),
                                          epi(val, b, m, q)), VECTOR, L)
            if a and cv.oh % f and a >= cv.oh % f:
                st = IfThen(oy.lt(cv.oh), st)
            stores.append(st)
        return For(tr, self.rows(blk), For(xo, c64(-(-cv.ow // L)), Allocate(yl, seq(
            load, *stores))))

    def lowered(self) -> Lowered:
        cv, p, L, ctx = self.cv, self.p, self.L, self.ctx
        name = ctx.name
        nn = self.nn
        V = Buffer(f"{name}_v", F32, (nn, cv.c, self.tp), Scope.SCRATCH)
        # Y's rows reach past the last tile as far as the output transform's whole vectors read
        nxv = -(-cv.ow // L)
        yp = max(self.tp, (self.rb - 1) * self.tw + (nxv * L - 1) // self.m + 1)
        Y = Buffer(f"{name}_y", F32, (nn, cv.m, yp), Scope.SCRATCH)
        dl = Buffer(f"{name}_d", F32, (nn, L), Scope.LOCAL)
        tl = Buffer(f"{name}_t", F32, (nn, L), Scope.LOCAL)
        yl = Buffer(f"{name}_yl", F32, (nn, L), Scope.LOCAL)
        u = transformed_weights(ctx.consts[self.conv.inputs[1]], self.m)
        view = GemmView(
            f"{name}_g", nn, cv.m, self.tp, cv.c,
            lambda bg, mm, k: Const(0.0, F32),            # A is packed at compile time
            lambda bg, k, n: BufLoad(V, (bg, k, n), F32), Y,
            lambda bg, mm, n: (bg, mm, n), lambda acc, bg, mm, n: acc, (), (), 0,
            a_const=u, a_batch=lambda bg: bg, b_direct=True)
        g = GemmKernel(view, GemmPlan(p.mr, p.nr, p.kc, self.tp, L, "compile", "none", "none",
                                      1))
        a_val, _ = g.operand_a()
        b_val, _ = g.operand_b()
        tile = g.tile(a_val, b_val)
        nmr = -(-cv.m // p.mr)
        threads = ctx.threads if p.parallel == "m" else 1
        chunk = -(-nmr // threads)                      # row tiles per thread
        mc, mi = Var("mc"), Var("mi")
        mr_of = add(mul(mc, chunk), mi)
        rows = For(mi, emin(chunk, add(c64(nmr), mul(mc, -chunk))), subst_stmt(
            For(g.nr, c64(self.tp // p.nr), tile), {g.mr.name: mr_of, g.nc.name: c64(0)}))
        gemm = For(g.b, c64(nn), For(g.kc, c64(-(-cv.c // p.kc)), rows))
        img, blk = Var("img"), Var("blk")
        m_ = Var("m")
        m0 = mul(mul(mc, chunk), p.mr)
        m_cnt = emin(chunk * p.mr, add(c64(cv.m), mul(m0, -1)))
        out = For(m_, m_cnt, self.output_transform(img, blk, add(m0, m_), Y, yl))
        per_block = seq(self.input_transform(img, blk, V, dl, tl), gemm, out)
        # (a last block of fewer rows leaves the previous block's finite values in V's
        # columns past its tiles: their GEMM results are computed and never read)
        blocks = For(blk, c64(self.nblk), per_block, PARALLEL if p.parallel == "blk"
                     else SERIAL)
        # (V's columns past the fewest tiles a block has: a thread's first block may be short)
        low = self.th // self.nblk * self.tw if self.even else self.t
        body = seq(self.zero_tails(V, low), self.zero_tails(Y, self.tp),
                   For(img, c64(cv.n), blocks))
        body = For(mc, c64(threads), body, PARALLEL if threads > 1 else SERIAL)
        params, roles = kernel_params(ctx.group, ctx.bufs, ctx.consts)
        wb = ctx.bufs.get(self.conv.inputs[1])
        keep = [(q, r) for q, r in zip(params, roles) if q is not wb]
        packed = dict(g.packed)
        kparams = tuple(q for q, _ in keep) + tuple(packed) + (V, Y)
        kroles = tuple(r for _, r in keep) + ("weight",) * len(packed) + ("scratch", "scratch")
        return Lowered(Kernel(name, kparams, kroles, body, flops=group_flops(ctx.group)),
                       packed)


def plan_from_steps(steps: Sequence[Step], threads: int) -> WinoPlan:
    got: dict[str, Any] = {"parallel": "none"}
    for st in steps:
        if st.name == "tile":
            got.update(int_kwargs(st, ("F", "MR", "NR", "KC", "RB")))
        elif st.name == "parallel" and st.args in (("m",), ("blk",)):
            got["parallel"] = st.args[0]
        else:
            raise ScheduleError(f"{st}: not a step of the winograd template (tile, "
                                "parallel(m), parallel(blk))")
    missing = [k for k in ("mr", "nr", "kc", "rb") if k not in got]
    if missing:
        raise ScheduleError(f"winograd template: the steps do not set {', '.join(missing)}")
    f = got.get("f", 2)
    if f not in MATRICES:
        raise ScheduleError(f"winograd template: tile(F={f}): F(2x2, 3x3) or F(4x4, 3x3) "
                            "(F=2 or F=4)")
    return WinoPlan(got["mr"], got["nr"], got["kc"], got["rb"],
                    got["parallel"] if threads > 1 else "none", f)


def _rows_per_block(cv: _Conv, th: int, tw: int, f: int = 2, nr: int = 32,
                    threads: int = 1) -> int:
    """Tile rows per block: V and Y of a block (16 x (C + M) x its tiles) within BLOCK_BYTES,
    so they stay in L2 between the transforms and the GEMMs; all rows where they fit. Each
    block streams U (16 C M floats) again, so where U is past L2 a thread takes one block
    while V and Y fit L2 (with 2 threads, at most two blocks). Inside a model U comes from
    memory (earlier kernels evicted it), so one pass over it is what counts: a Xeon, 1 thread,
    caches flushed before each run, 256 ch at 14x14 (U 4 MiB) 2.03 ms in two blocks, 1.56 in
    one; 128 ch at 28x28 (F=4) 1.29 -> 1.16 ms; 192 -> 256 ch at 14x14 1.63 -> 1.23 ms (with
    the caches warm, three chained convs of 256 ch at 14x14 were 1.69x faster than the GEMM
    template in two blocks, 1.42x in one). 64 ch at 56x56: blocks of 4 rows 1.47x, one 1.29x."""
    per_row = (f + 2) ** 2 * (cv.c + cv.m) * tw * 4
    most = max(1, min(th, BLOCK_BYTES // per_row))
    if _u_bytes(cv, f) > U_L2_BYTES:
        most = max(most, -(-th // 2) if threads > 1 else min(th, L2_BYTES // per_row))

    def columns(rows: list[int]) -> int:     # each block's columns padded to NR
        return sum(-(-r * tw // nr) * nr for r in rows)

    def cost(rb: int) -> tuple[int, int, int]:
        """GEMM columns of the busiest thread taking whole blocks in turn, of all threads, and
        the busiest thread's tile rows."""
        nblk = -(-th // rb)
        chunk = -(-nblk // max(1, min(threads, nblk)))
        shares = [[min(rb, th - k * rb) for k in range(t0, min(nblk, t0 + chunk))]
                  for t0 in range(0, nblk, chunk)]
        return (max(columns(sh) for sh in shares), sum(columns(sh) for sh in shares),
                max(sum(sh) for sh in shares))

    def uneven(rb: int) -> bool:       # as many blocks as threads or more, but not shared
        nblk = -(-th // rb)             # evenly (fewer: one block per thread, see defaults)
        return threads <= nblk and not even_blocks(nblk, threads)
    # with threads, blocks they share evenly first: 14 tile rows in blocks of 6 are 3 blocks,
    # and the threads then shared the channels instead, each transforming the whole input.
    # A Xeon, 2 threads, in blocks of 4: 64 -> 192 ch at 56x56 (F=4) 1.34 -> 1.06 ms;
    # densenet121's twelve 128 -> 32 ch at 28x28 3.46 -> 2.32 ms in all, squeezenet's two 3x3
    # convs at 27x27 0.342 -> 0.291. Then the fewest padded columns on the busiest thread
    # (40 tile rows of 40 tiles at 2 threads in blocks of 4, 800 columns each, not of 12, 960
    # and 640: yolov8n_like's convs at 80x80 and 40x40 0-26% faster; 7 rows of 7 tiles in
    # blocks of 4 and 3, 32 columns each, not one block of 64 shared by channels: inception's
    # at 14x14 1.2-1.33x faster), then in all (blocks of 5 and 2 tile rows of 7 tiles pad 49
    # tiles to 96 columns, of 4 and 3 to 64; 14 rows of 14 tiles in blocks of 4, not of 7:
    # 1.1-1.15x), then the busiest thread's fewest tile rows (10 rows in blocks of 5, not of 6
    # and 4: yolov8n_like_640's 128 ch at 20x20 4-7% faster), then the largest blocks
    return min(range(most, 0, -1), key=lambda rb: (uneven(rb), *cost(rb), -rb))


def even_blocks(nblk: int, threads: int) -> bool:
    """Whether `threads` can take whole blocks within a quarter of an even share."""
    return nblk >= threads and -(-nblk // threads) * threads <= 1.25 * nblk


def _f4_pays(cv: _Conv) -> bool:
    """F(4x4, 3x3) over F(2x2, 3x3): 36 GEMMs of a quarter the tiles (1.78x fewer
    multiply-adds again) for transforms twice as long and U 36/16 as large. A Xeon, 1 thread,
    three chained convs: 1.28-1.49x faster from 48 channels at 28x28 and up (64 at 56x56 1.38x,
    96 and 128 at 28x28 1.49x and 1.38x, 64 at 40x40 1.35x); slower with 16-32 channels
    (0.92-0.96x: the transforms dominate), at 14x14 (0.75x: 4 tiles to a row), and with
    U past L2 (256 channels: 0.3x)."""
    th, tw = -(-cv.oh // 4), -(-cv.ow // 4)
    return min(cv.c, cv.m) >= 48 and th * tw >= 36 and _u_bytes(cv, 4) <= U4_MAX_BYTES


def _u_bytes(cv: _Conv, f: int = 2) -> int:
    return (f + 2) ** 2 * cv.c * cv.m * 4


class CpuWinograd(Rule):
    """`cpu.winograd`: float 3x3 stride-1 convs as F(2x2, 3x3), the epilogue fused."""

    name = "cpu.winograd"

    def geometry(self, ctx: LowerCtx) -> _Conv | None:
        return ctx.memo("winograd", lambda: winograd_geometry(ctx))

    def legal(self, ctx: LowerCtx) -> bool:
        """The template can build this conv (a schedule text may ask for it)."""
        return ctx.opts.opt_level >= 1 and self.geometry(ctx) is not None

    def applies(self, ctx: LowerCtx) -> bool:
        """The default for the convs where it measured faster than the GEMM template: at
        least MIN_CHANNELS in and out, MIN_TILES output tiles (10x10 outputs or more; at 7x7 the
        weights dominate, and U is 16/9 of them) and U within U_MAX_BYTES (a Xeon, 1 thread:
        512 ch at 14x14, U 16 MiB, 0.59x of the GEMM template). On AVX2 too: x86-64-v3 code on
        the same Xeon, three chained convs, 1.42x (256 ch at 14x14) to 1.76x (32 ch at 80x80)
        faster than the GEMM template's AVX2 tiles (not measured on an AMD AVX2 core)."""
        cv = self.geometry(ctx) if self.legal(ctx) else None
        return cv is not None and min(cv.c, cv.m) >= MIN_CHANNELS and \
            (-(-cv.oh // 2)) * (-(-cv.ow // 2)) >= MIN_TILES and \
            _u_bytes(cv) <= U_MAX_BYTES

    def space(self, ctx: LowerCtx) -> KnobSpace:
        cv = self.geometry(ctx)
        assert cv is not None
        L = ctx.target.lanes
        th = -(-cv.oh // 2)
        return {"F": (2, 4), "MR": tuple(range(1, min(16, cv.m) + 1)), "NR": (L, 2 * L, 4 * L),
                "KC": tuple(sorted({min(k, cv.c) for k in (32, 64, 128, 256, 512)})),
                "RB": tuple(sorted({min(r, th) for r in (1, 2, 4, 8, 16, th)})),
                "parallel": ("none", "m", "blk") if ctx.threads > 1 else ("none",)}

    def invalid(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> str | None:
        vecs = knobs["NR"] // ctx.target.lanes
        if knobs["MR"] * vecs + vecs + 1 > ctx.target.vector_registers:
            return (f"an MR={knobs['MR']} x NR={knobs['NR']} tile needs more than the "
                    f"{ctx.target.vector_registers} vector registers")
        return None

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """12 (10, 8) rows x 2 vectors, the most rows that pad M by under a tenth; K blocks of
        256 channels; threads take whole blocks of tile rows where those split evenly, else
        share the output channels."""
        cv = self.geometry(ctx)
        assert cv is not None
        rows = (12, 10, 8) if ctx.target.vector_registers >= 32 else (6, 4)
        mr = min(cv.m, next((r for r in rows if -(-cv.m // r) * r < 1.1 * cv.m), rows[-1]))
        f = 4 if _f4_pays(cv) else 2
        th, tw = -(-cv.oh // f), -(-cv.ow // f)
        rb = _rows_per_block(cv, th, tw, f, 2 * ctx.target.lanes, ctx.threads)
        par = "none"
        if ctx.threads > 1:      # whole blocks per thread where they split evenly
            nblk = -(-th // rb)
            if nblk < ctx.threads and th >= ctx.threads and _u_bytes(cv, f) <= U_L2_BYTES:
                # one block per thread, as large as can be: a 13x13 map's 7 tile rows in
                # blocks of 4 and 3 (0.53 ms for five convs of 64 -> 256 -> 64 ch, 2 threads;
                # in blocks of 2, 14 tiles padded to 32 columns: 0.85 ms)
                rb = -(-th // ctx.threads)
                nblk = -(-th // rb)
            # also where U is past L2 (each thread then streams all of it): a Xeon, 2 threads,
            # 128 ch at 28x28 (F=4, U 2.3 MiB, blocks of 4 and 3 rows) 0.48 -> 0.40 ms against
            # sharing the channels, 256 ch at 14x14 (U 4 MiB) 0.56 -> 0.52, 192 -> 384 ch at
            # 14x14 0.57 -> 0.54, 256 ch at 28x28 2.27 -> 2.06
            par = "blk" if even_blocks(nblk, ctx.threads) else "m"
        return {"F": f, "MR": mr, "NR": 2 * ctx.target.lanes, "KC": min(256, cv.c),
                "RB": rb, "parallel": par}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        out = [step("tile", F=knobs["F"], MR=knobs["MR"], NR=knobs["NR"], KC=knobs["KC"],
                    RB=knobs["RB"])]
        if knobs["parallel"] != "none":
            out.append(step("parallel", knobs["parallel"]))
        return out

    def apply(self, ctx: LowerCtx, steps: Sequence[Step]) -> Lowered:
        cv = self.geometry(ctx)
        assert cv is not None
        p = plan_from_steps(steps, ctx.threads)
        if p.nr % ctx.target.lanes or min(p.mr, p.nr, p.kc, p.rb) < 1 or p.kc > cv.c:
            raise ScheduleError(f"winograd template ({ctx.name}): tile MR={p.mr} NR={p.nr} "
                                f"KC={p.kc} must be positive, NR a multiple of "
                                f"{ctx.target.lanes}, KC at most C={cv.c}")
        return WinogradKernel(ctx, cv, p).lowered()
