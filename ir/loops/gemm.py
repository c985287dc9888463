"""The GEMM template: convolutions (as implicit GEMM) and matmuls with their fused epilogue.

    C[b, m, n] = epilogue(sum_k A(b, m, k) * B(b, k, n))

Blocking follows BLIS. B is the vector operand: either packed at compile time (constant
weights, panels [N/NR][K][NR]) or packed at run time into a per-thread scratch panel col[KC][NC]
(im2col for a conv: the gather and the zero padding happen once per panel, not per FMA). A is
the broadcast operand: constant weights packed as [M/MR][K][MR], or activations read in place.
The micro-kernel keeps an MR x NR tile of accumulators in registers (NR/16 zmm per row),
broadcasting one A element and loading NR/16 B vectors per k. Partial sums over K blocks go
through C; the epilogue (bias, folded BN, activation, residual add) runs on the last block.

Knobs (the autotuner's space): MR, NR, KC, NC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from minicc.ir.compute import Const, Expr, Var, both, call, cast, select
from minicc.ir.graph import Value
from minicc.ir.loops.exprs import simplify
from minicc.ir.loops.lower import LANES, Inliner, _params, const_scalar
from minicc.ir.loops.nodes import (Allocate, BufLoad, Buffer, For, IfThen, Kernel, LoopKind,
                                   Scope, Stmt, Store, seq)
from minicc.ir.passes.fuse import Group
from minicc.ir.registry import full_attrs
from minicc.ir.types import DType

I64 = DType.I64
F32 = DType.F32


def c64(v: int) -> Const:
    return Const(int(v), I64)


def add(*xs: Expr | int) -> Expr:
    out: Expr = c64(0)
    for x in xs:
        out = simplify(call("add", out, x if isinstance(x, Expr) else c64(x)))
    return out


def mul(a: Expr | int, b: Expr | int) -> Expr:
    a = a if isinstance(a, Expr) else c64(a)
    b = b if isinstance(b, Expr) else c64(b)
    return simplify(call("mul", a, b))


def div(a: Expr, b: int) -> Expr:
    return simplify(call("floordiv", a, c64(b)))


def mod(a: Expr, b: int) -> Expr:
    return simplify(call("mod", a, c64(b)))


def emin(a: Expr | int, b: Expr | int) -> Expr:
    a = a if isinstance(a, Expr) else c64(a)
    b = b if isinstance(b, Expr) else c64(b)
    return simplify(call("min", a, b))


@dataclass
class Knobs:
    mr: int = 6
    nr: int = 32
    kc: int = 256
    nc: int = 256

    def as_dict(self) -> dict:
        return {"MR": self.mr, "NR": self.nr, "KC": self.kc, "NC": self.nc}


@dataclass
class GemmSpec:
    """The GEMM a group computes. Index callbacks take expressions of (batch, row, col)."""

    name: str
    batch: int
    M: int
    N: int
    K: int
    # A: packed constant [batch_a][M/MR][K][MR] (a_packed) or a callback (b, m, k) -> Expr
    a_packed: Buffer | None
    a_batch: Callable[[Expr], Expr]          # batch index into a_packed
    a_load: Callable[[Expr, Expr, Expr], Expr] | None
    # B: packed constant [batch_b][N/NR][K][NR] (b_packed) or a callback for run-time packing
    b_packed: Buffer | None
    b_batch: Callable[[Expr], Expr]
    b_load: Callable[[Expr, Expr, Expr], Expr] | None   # (b, k, n) -> value (guards included)
    out: Buffer                               # viewed as [batch, M, N] through out_index
    out_index: Callable[[Expr, Expr, Expr], tuple[Expr, ...]]
    epilogue: Callable[[Expr, Expr, Expr, Expr], Expr]  # (acc, b, m, n) -> value stored
    knobs: Knobs = field(default_factory=Knobs)
    flops: int = 0
    # a custom packer (col, b, kc, kcur, nc) -> Stmt filling col[kk, j] for this block, and the
    # block width it needs (a conv packs whole output rows: no division per element)
    pack: Callable[[Buffer, Expr, Expr, Expr, Expr], Stmt] | None = None
    block_cols: int | None = None


def gemm_kernel(spec: GemmSpec, params: tuple[Buffer, ...], roles: tuple[str, ...],
                threads: int) -> Kernel:
    s, kn = spec, spec.knobs
    L = LANES
    MR, NR = kn.mr, kn.nr
    KC = min(kn.kc, s.K)
    if s.block_cols is not None:
        NC = s.block_cols
    else:
        NC = max(NR, min(kn.nc, -(-s.N // NR) * NR))
        if threads > 1 and s.batch < threads and -(-s.M // MR) < 2 * threads:
            # too few row tiles to share: give every thread its own column blocks
            NC = max(NR, min(NC, -(-(-(-s.N // threads)) // NR) * NR))
    ncpad = -(-NC // NR) * NR
    nkc = -(-s.K // KC)
    nnc = -(-s.N // NC)
    nmr = -(-s.M // MR)
    b: Expr = Var("b") if s.batch > 1 else c64(0)   # (a batch of one folds to index 0)
    nc, kc = Var("nc"), Var("kc")
    mr, nr, kk = Var("mr"), Var("nr"), Var("kk")
    i, jo, ln, j = Var("i"), Var("jo"), Var("l"), Var("j")
    kcur = emin(KC, add(s.K, mul(kc, -KC)))                       # rows in this K block
    valid = emin(NC, add(s.N, mul(nc, -NC)))                      # columns in this N block
    col = None
    pack: Stmt | None = None
    if s.b_packed is None:
        col = Buffer(f"{s.name}_col", F32, (KC, ncpad), Scope.SCRATCH)
        if s.pack is not None:
            pack = s.pack(col, b, kc, kcur, nc)
        else:
            assert s.b_load is not None
            kabs = add(mul(kc, KC), kk)
            nabs = add(mul(nc, NC), j)
            val = s.b_load(b, kabs, nabs)
            val = select(nabs.lt(s.N), val, Const(0.0, F32)) if s.N % NC else val
            pack = For(kk, kcur, vloop(j, c64(ncpad), lambda jv: Store(
                col, (kk, jv), _subst_j(val, j, jv))))
    acc = Buffer(f"{s.name}_acc", F32, (MR, NR), Scope.LOCAL)
    nvec = NR // L
    jl = add(mul(jo, L), ln)                                      # column within the tile
    m_abs = add(mul(mr, MR), i)
    n0 = add(mul(nc, NC), mul(nr, NR))
    n_abs = add(n0, jl)
    # A element (broadcast) and B vector for (i, kk, jl)
    k_abs = add(mul(kc, KC), kk)
    apack = None
    a_pack: Stmt | None = None
    if s.a_packed is not None:
        a_val: Expr = BufLoad(s.a_packed, (s.a_batch(b), mr, k_abs, i), F32)
    else:
        # A rows read in place sit a row apart: rows a multiple of 4 KiB long all map to one
        # cache set. Copy the MR x KC panel once per (mr, kc) into contiguous scratch.
        assert s.a_load is not None
        apack = Buffer(f"{s.name}_apack", F32, (MR, KC), Scope.SCRATCH)
        ai = Var("ai")
        a_pack = For(ai, c64(MR), vloop(kk, kcur, lambda kv: Store(
            apack, (ai, kv), s.a_load(b, emin(add(mul(mr, MR), ai), s.M - 1),
                                      add(mul(kc, KC), kv)))))
        a_val = BufLoad(apack, (i, kk), F32)
    if s.b_packed is not None:
        b_val: Expr = BufLoad(s.b_packed, (s.b_batch(b), div(n0, NR), k_abs, jl), F32)
    else:
        assert col is not None
        b_val = BufLoad(col, (kk, add(mul(nr, NR), jl)), F32)
    acc_ij = BufLoad(acc, (i, jl), F32)
    fma = Store(acc, (i, jl), call("add", acc_ij, call("mul", a_val, b_val)))
    micro = For(kk, kcur, For(i, c64(MR), For(jo, c64(nvec), For(
        ln, c64(L), fma, LoopKind.VECTOR, L), LoopKind.UNROLL), LoopKind.UNROLL))
    # columns left in this tile (the tail tile is masked)
    ncols = emin(L, add(valid, mul(add(mul(nr, NR), mul(jo, L)), -1)))
    out_idx = s.out_index(b, m_abs, n_abs)
    zero = Store(acc, (i, jl), Const(0.0, F32))
    load_c = Store(acc, (i, jl), BufLoad(s.out, out_idx, F32))
    row_ok = m_abs.lt(s.M) if s.M % MR else None

    def per_cell(st: Stmt, guarded: bool) -> Stmt:
        full = s.N % NC == 0 and NC % NR == 0
        body: Stmt = For(ln, c64(L) if full or not guarded else ncols, st, LoopKind.VECTOR, L)
        body = For(jo, c64(nvec), body, LoopKind.UNROLL)
        if row_ok is not None and guarded:
            body = IfThen(row_ok, body)
        return For(i, c64(MR), body, LoopKind.UNROLL)

    init_zero = per_cell(zero, False)
    if nkc > 1:
        init = IfThen(kc.eq(0), init_zero, per_cell(load_c, True))
    else:
        init = init_zero
    final = Store(s.out, out_idx, s.epilogue(acc_ij, b, m_abs, n_abs))
    partial = Store(s.out, out_idx, acc_ij)
    if nkc > 1:
        store = IfThen(kc.eq(nkc - 1), per_cell(final, True), per_cell(partial, True))
    else:
        store = per_cell(final, True)
    tile = Allocate(acc, seq(init, micro, store))
    n_tiles = div(add(valid, NR - 1), NR)
    inner: Stmt = For(mr, c64(nmr), seq(a_pack, For(nr, n_tiles, tile)))
    par = LoopKind.PARALLEL if threads > 1 else LoopKind.SERIAL
    # threads share the batch, else the column blocks, else (few columns, many rows: the late
    # layers of a CNN) the row tiles, each thread packing its own copy of the B panel
    split_rows = threads > 1 and s.batch < threads and nnc < 2 * threads and nmr >= 2 * threads
    if split_rows:
        chunk = -(-nmr // threads)
        mc, mi = Var("mc"), Var("mi")
        from minicc.ir.loops.primitives import subst_stmt

        rows_here = emin(chunk, add(nmr, mul(mc, -chunk)))
        inner = For(mi, rows_here, subst_stmt(seq(a_pack, For(nr, n_tiles, tile)),
                                              {"mr": add(mul(mc, chunk), mi)}))
    kloop = For(kc, c64(nkc), seq(pack, inner))
    if split_rows:
        body: Stmt = For(nc, c64(nnc), kloop)
        if s.batch > 1:
            body = For(b, c64(s.batch), body)  # type: ignore[arg-type]
        body = For(mc, c64(threads), body, par)
    elif s.batch >= threads and threads > 1:
        body = For(b, c64(s.batch), For(nc, c64(nnc), kloop), par)  # type: ignore[arg-type]
    else:
        body = For(nc, c64(nnc), kloop, par if nnc > 1 else LoopKind.SERIAL)
        if s.batch > 1:
            body = For(b, c64(s.batch), body)  # type: ignore[arg-type]
    ps = list(params)
    rs = list(roles)
    for scratch in (col, apack):
        if scratch is not None:
            ps.append(scratch)
            rs.append("scratch")
    trace = (f"gemm M={s.M} N={s.N} K={s.K} batch={s.batch}",
             f"tile MR={MR} NR={NR} KC={KC} NC={NC}",
             "A " + ("packed const" if s.a_packed is not None else "packed per (mr, kc)"),
             "B " + ("packed const" if s.b_packed is not None else "packed per block"),
             "vectorize l by 16; unroll i, jo",
             "parallel " + ("row tiles" if split_rows else "batch" if s.batch >= threads > 1
                            else "column blocks") if threads > 1 else "serial")
    return Kernel(s.name, tuple(ps), tuple(rs), body, trace,
                  {**kn.as_dict(), "KC": KC, "NC": NC}, s.flops)


def _subst_j(e: Expr, j: Var, new: Expr) -> Expr:
    from minicc.ir.loops.exprs import substitute

    return substitute(e, {j.name: new})


def vloop(v: Var, extent: Expr, body: Callable[[Expr], Stmt], lanes: int = LANES) -> Stmt:
    """for v in 0..extent vectorized by `lanes`, the tail masked; `body` gets v's expression."""
    vo, vv = Var(f"{v.name}.o"), Var(f"{v.name}.v")
    if isinstance(extent, Const) and extent.value <= lanes:  # type: ignore[operator]
        return For(vv, extent, body(vv), LoopKind.VECTOR, lanes)
    n_o = div(add(extent, lanes - 1), lanes)
    rem = emin(lanes, add(extent, mul(vo, -lanes)))
    return For(vo, n_o, For(vv, rem, body(add(mul(vo, lanes), vv)), LoopKind.VECTOR, lanes))


# ---- groups -> specs ------------------------------------------------------------------------

def _epilogue(group: Group, bufs: Mapping[Value, Buffer], consts: Mapping[Value, np.ndarray],
              index: Callable[[Expr, Expr, Expr], tuple[Expr, ...]],
              anchor_value: Callable[[Expr, tuple[Expr, ...]], Expr]
              ) -> Callable[[Expr, Expr, Expr, Expr], Expr]:
    """The group's root expression with the anchor's result replaced by the accumulator."""
    def leaf(v: Value, idx: tuple[Expr, ...]) -> Expr:
        c = const_scalar(v, consts)
        return c if c is not None else BufLoad(bufs[v], idx, v.type.dtype)

    def epi(accv: Expr, b: Expr, m: Expr, n: Expr) -> Expr:
        idx = index(b, m, n)
        inl = Inliner(group, leaf, stop=group.anchor,
                      stop_expr=lambda ix: anchor_value(accv, ix))
        return cast(simplify(inl.expr(group.root, idx)), group.output.type.dtype)
    return epi


def conv_spec(name: str, group: Group, bufs: Mapping[Value, Buffer],
              consts: Mapping[Value, np.ndarray], knobs: Knobs, threads: int = 1
              ) -> tuple[GemmSpec, dict[int, tuple[Buffer, np.ndarray]]] | None:
    conv = group.anchor
    assert conv is not None
    x, w = conv.inputs[0], conv.inputs[1]
    if w not in consts or x.type.dtype != DType.F32 or x.type.rank != 4:
        return None
    at = full_attrs("conv", conv.attrs)
    n_, c_, h_, w_ = (int(d) for d in x.type.shape)  # type: ignore[arg-type]
    m_, cg, kh_, kw_ = (int(d) for d in w.type.shape)  # type: ignore[arg-type]
    g = at["group"]
    if cg == 1 and g > 1:
        return None  # depthwise: the generic loop nest vectorizes it better
    out = conv.outputs[0]
    oh_, ow_ = int(out.type.shape[2]), int(out.type.shape[3])  # type: ignore[arg-type]
    sh, sw = (at["strides"] or (1, 1))
    dh, dw = (at["dilations"] or (1, 1))
    pads = at["pads"] or (0, 0, 0, 0)
    pt, pl = pads[0], pads[1]
    mg = m_ // g
    K = cg * kh_ * kw_
    MR = knobs.mr
    mpad = -(-mg // MR) * MR
    wk = consts[w].astype(np.float32).reshape(g, mg, K)
    wp = np.zeros((g, mpad, K), np.float32)
    wp[:, :mg] = wk
    packed = np.ascontiguousarray(wp.reshape(g, mpad // MR, MR, K).transpose(0, 1, 3, 2))
    a_buf = Buffer(f"{name}_w", F32, packed.shape, Scope.GLOBAL)
    xb = bufs[x]
    P = oh_ * ow_

    def b_load(bg: Expr, k: Expr, p: Expr) -> Expr:
        nb, gi = div(bg, g), mod(bg, g)
        c = add(mul(gi, cg), div(k, kh_ * kw_))
        ky = mod(div(k, kw_), kh_)
        kx = mod(k, kw_)
        oy, ox = div(p, ow_), mod(p, ow_)
        iy = add(mul(oy, sh), mul(ky, dh), -pt)
        ix = add(mul(ox, sw), mul(kx, dw), -pl)
        conds = []
        if pt or (oh_ - 1) * sh + (kh_ - 1) * dh - pt >= h_:
            conds += [iy.ge(0), iy.lt(h_)]
        if pl or (ow_ - 1) * sw + (kw_ - 1) * dw - pl >= w_:
            conds += [ix.ge(0), ix.lt(w_)]
        if P % knobs.nc or P < knobs.nc:
            conds.append(p.lt(P))
        v: Expr = BufLoad(xb, (nb, c, iy, ix), F32)
        cond = both(*conds)
        return select(cond, v, Const(0.0, F32)) if cond is not None else v

    ob = bufs[group.output]

    def out_index(bg: Expr, m: Expr, p: Expr) -> tuple[Expr, ...]:
        return (div(bg, g), add(mul(mod(bg, g), mg), m), div(p, ow_), mod(p, ow_))

    bias = conv.inputs[2] if len(conv.inputs) == 3 else None

    def anchor_value(accv: Expr, ix: tuple[Expr, ...]) -> Expr:
        if bias is None:
            return accv
        c = const_scalar(bias, consts)
        return call("add", accv, c if c is not None else BufLoad(bufs[bias], (ix[1],), F32))

    epi = _epilogue(group, bufs, consts, lambda bg, m, p: out_index(bg, m, p), anchor_value)
    rows = max(1, min(knobs.nc // ow_, oh_))
    if threads > 1 and n_ * g < threads and -(-mg // knobs.mr) < 2 * threads:
        rows = max(1, min(rows, -(-oh_ // threads)))  # share columns (rows of the output)
    KC = min(knobs.kc, K)

    def pack(col: Buffer, bg: Expr, kc: Expr, kcur: Expr, nc: Expr) -> Stmt:
        """col[kk, r*OW + ox] = X[n, c, oy*s + ky*d - pt, ox*s + kx*d - pl] (0 in the pad)."""
        kk, r, ox = Var("kk"), Var("r"), Var("ox")
        k = add(mul(kc, KC), kk)
        nb, gi = div(bg, g), mod(bg, g)
        c = add(mul(gi, cg), div(k, kh_ * kw_))
        ky, kx = mod(div(k, kw_), kh_), mod(k, kw_)
        oy = add(mul(nc, rows), r)
        iy = add(mul(oy, sh), mul(ky, dh), -pt)
        rows_here = emin(rows, add(oh_, mul(nc, -rows)))

        def cell(oxe: Expr) -> Stmt:
            ix = add(mul(oxe, sw), mul(kx, dw), -pl)
            conds = []
            if pt or (oh_ - 1) * sh + (kh_ - 1) * dh - pt >= h_:
                conds += [iy.ge(0), iy.lt(h_)]
            if pl or (ow_ - 1) * sw + (kw_ - 1) * dw - pl >= w_:
                conds += [ix.ge(0), ix.lt(w_)]
            v: Expr = BufLoad(xb, (nb, c, iy, ix), F32)
            cond = both(*conds)
            if cond is not None:
                v = select(cond, v, Const(0.0, F32))
            return Store(col, (kk, add(mul(r, ow_), oxe)), v)
        return For(kk, kcur, For(r, rows_here, vloop(ox, c64(ow_), cell)))

    spec = GemmSpec(name, n_ * g, mg, P, K, a_buf, lambda bg: mod(bg, g), None, None,
                    lambda bg: c64(0), b_load, ob, out_index, epi, knobs,
                    flops=2 * n_ * m_ * P * K, pack=pack, block_cols=rows * ow_)
    return spec, {id(a_buf): (a_buf, packed)}


def matmul_spec(name: str, group: Group, bufs: Mapping[Value, Buffer],
                consts: Mapping[Value, np.ndarray], knobs: Knobs
                ) -> tuple[GemmSpec, dict[int, tuple[Buffer, np.ndarray]]] | None:
    mm = group.anchor
    assert mm is not None
    a, bv = mm.inputs
    if a.type.dtype != DType.F32 or a.type.rank < 2 or bv.type.rank < 2:
        return None
    out = mm.outputs[0]
    oshape = [int(d) for d in out.type.shape]  # type: ignore[misc]
    batch_shape = oshape[:-2]
    batch = int(np.prod(batch_shape)) if batch_shape else 1
    M, N = oshape[-2], oshape[-1]
    K = int(a.type.shape[-1])  # type: ignore[arg-type]
    ashape = [int(d) for d in a.type.shape]  # type: ignore[misc]
    bshape = [int(d) for d in bv.type.shape]  # type: ignore[misc]
    kn = Knobs(min(knobs.mr, M), knobs.nr, knobs.kc, knobs.nc)
    packed: dict[int, tuple[Buffer, np.ndarray]] = {}

    def batch_index(shape: list[int], bi: Expr) -> tuple[Expr, ...]:
        """Index of batch position `bi` (flat over the output batch dims) into an operand."""
        nb = len(shape) - 2
        idx: list[Expr] = []
        rem = bi
        dims = batch_shape
        for d_pos in range(len(dims)):
            stride = int(np.prod(dims[d_pos + 1:])) if d_pos + 1 < len(dims) else 1
            q = mod(div(rem, stride), dims[d_pos])
            off = len(dims) - nb
            if d_pos >= off:
                idx.append(c64(0) if shape[d_pos - off] == 1 else q)
        return tuple(idx)

    bb = bufs.get(bv)
    if bv in consts and (len(bshape) == 2 or all(d == 1 for d in bshape[:-2])):
        w = consts[bv].astype(np.float32).reshape(K, N)
        npad = -(-N // kn.nr) * kn.nr
        wp = np.zeros((K, npad), np.float32)
        wp[:, :N] = w
        arr = np.ascontiguousarray(wp.reshape(K, npad // kn.nr, kn.nr).transpose(1, 0, 2)
                                   ).reshape(1, npad // kn.nr, K, kn.nr)
        b_buf = Buffer(f"{name}_w", F32, arr.shape, Scope.GLOBAL)
        packed[id(b_buf)] = (b_buf, arr)
        b_load = None
    else:
        b_buf = None
        assert bb is not None

        def b_load(bi: Expr, k: Expr, n: Expr) -> Expr:  # type: ignore[misc]
            return BufLoad(bb, batch_index(bshape, bi) + (k, n), F32)
    ab = bufs[a]

    def a_load(bi: Expr, m: Expr, k: Expr) -> Expr:
        return BufLoad(ab, batch_index(ashape, bi) + (m, k), F32)
    ob = bufs[group.output]

    def out_index(bi: Expr, m: Expr, n: Expr) -> tuple[Expr, ...]:
        idx = []
        for d_pos, d in enumerate(batch_shape):
            stride = int(np.prod(batch_shape[d_pos + 1:])) if d_pos + 1 < len(batch_shape) else 1
            idx.append(mod(div(bi, stride), d))
        return tuple(idx) + (m, n)

    epi = _epilogue(group, bufs, consts, out_index, lambda accv, ix: accv)
    spec = GemmSpec(name, batch, M, N, K, None, lambda bi: c64(0), a_load, b_buf,
                    lambda bi: c64(0), b_load, ob, out_index, epi, kn,
                    flops=2 * batch * M * N * K)
    return spec, packed


def lower_gemm(name: str, group: Group, bufs: Mapping[Value, Buffer],
               consts: Mapping[Value, np.ndarray], threads: int, knobs: Knobs | None = None
               ) -> tuple[Kernel, dict[int, tuple[Buffer, np.ndarray]]] | None:
    """The GEMM-template kernel for a conv/matmul group, or None if it does not apply."""
    anchor = group.anchor
    if anchor is None:
        return None
    kn = knobs or Knobs()
    if anchor.kind == "conv":
        r = conv_spec(name, group, bufs, consts, kn, threads)
    elif anchor.kind == "matmul":
        r = matmul_spec(name, group, bufs, consts, kn)
    else:
        return None
    if r is None:
        return None
    spec, packed = r
    params, roles = _params(group, bufs, consts, bufs[group.output])
    # the anchor's constant weight is replaced by its packed form
    keep = [(p, ro) for p, ro in zip(params, roles)
            if not (anchor.kind == "conv" and p is bufs.get(anchor.inputs[1]))
            and not (anchor.kind == "matmul" and spec.b_packed is not None
                     and p is bufs.get(anchor.inputs[1]))]
    ps = [p for p, _ in keep] + [b for b, _ in packed.values()]
    rs = [r for _, r in keep] + ["weight"] * len(packed)
    return gemm_kernel(spec, tuple(ps), tuple(rs), threads), packed

