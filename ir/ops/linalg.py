"""Linear algebra: matmul (numpy semantics, batched and broadcast) and einsum."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.ir.compute import Compute, Expr, Reduce, Var, axes, load
from minicc.ir.ops.elementwise import broadcast_shapes
from minicc.ir.registry import Attr, Cost, FusionKind, OpDef, check, io_bytes, register_op
from minicc.ir.types import Dim, TensorType, dims_compatible


@register_op
class MatMul(OpDef):
    name = "matmul"
    template = "matmul_gemm"
    inputs = (2, 2)
    kind = FusionKind.COMPLEX
    doc = "numpy matmul: [..., M, K] x [..., K, N] -> [..., M, N]; 1-D operands are promoted"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        a, b = ins
        if a.dtype != b.dtype:
            check(False, f"operand dtypes differ: {a} vs {b}")
        check(a.rank >= 1 and b.rank >= 1, "operands must have rank >= 1")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.rank >= 2 else b.shape[0]
        if not dims_compatible(ka, kb):
            check(False, f"contraction dims differ: {a} x {b}")
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        shape: tuple[Dim, ...] = batch
        if a.rank >= 2:
            shape += (a.shape[-2],)
        if b.rank >= 2:
            shape += (b.shape[-1],)
        return [TensorType(a.dtype, shape)]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        a, b = ins
        if a.dtype.kind in "iu":  # numpy matmul on ints is exact but slow; fine for a reference
            return [np.matmul(a, b).astype(a.dtype)]
        return [np.matmul(a, b)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        a, b = ins
        out = outs[0]
        ox = axes(out.rank)
        nb = out.rank - (a.rank >= 2) - (b.rank >= 2)
        batch = ox[:nb]
        k = Var("k")
        kn = int(a.shape[-1])  # type: ignore[arg-type]
        ia: list[Expr] = []
        if a.rank >= 2:
            off = nb - (a.rank - 2)
            ia = [0 if a.shape[j] == 1 else batch[off + j] for j in range(a.rank - 2)]  # type: ignore
            ia += [ox[nb], k]
        else:
            ia = [k]
        if b.rank >= 2:
            off = nb - (b.rank - 2)
            ib = [0 if b.shape[j] == 1 else batch[off + j] for j in range(b.rank - 2)]  # type: ignore
            ib += [k, ox[-1]]
        else:
            ib = [k]
        body = load(0, a, ia) * load(1, b, ib)
        return [Compute(ox, Reduce("sum", ((k, kn),), body, a.dtype))]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        k = ins[0].shape[-1]
        n = outs[0].numel or 0
        return Cost(2 * n * (k if isinstance(k, int) else 0), io_bytes(ins, outs))


_EQ = re.compile(r"^\s*([a-zA-Z.]*(?:\s*,\s*[a-zA-Z.]*)*)\s*(?:->\s*([a-zA-Z.]*)\s*)?$")


def parse_einsum(eq: str, ranks: Sequence[int]) -> tuple[list[str], str]:
    """Split an einsum equation into input subscripts and output subscripts, with '...' expanded
    into upper-case letters and an implicit output (sorted letters used once) made explicit."""
    m = _EQ.match(eq)
    check(m is not None, f"malformed einsum equation '{eq}'")
    assert m is not None
    terms = [t.strip() for t in m.group(1).split(",")]
    check(len(terms) == len(ranks), f"equation '{eq}' has {len(terms)} operands, got {len(ranks)}")
    ell = 0
    for t, r in zip(terms, ranks):
        if "..." in t:
            ell = max(ell, r - (len(t) - 3))
    ell_letters = "".join(chr(ord("A") + i) for i in range(ell))
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            n = r - (len(t) - 3)
            t = t.replace("...", ell_letters[ell - n:])
        check(len(t) == r, f"subscripts '{t}' do not match operand rank {r}")
        out_terms.append(t)
    if m.group(2) is not None:
        out = m.group(2).replace("...", ell_letters)
    else:
        letters = "".join(out_terms)
        out = ell_letters + "".join(sorted(c for c in set(letters) if c.islower()
                                           and letters.count(c) == 1))
    return out_terms, out


@register_op
class Einsum(OpDef):
    name = "einsum"
    inputs = (1, -1)
    attrs = {"equation": Attr("str")}
    kind = FusionKind.COMPLEX
    doc = "Einstein summation over the operands (numpy.einsum semantics)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        terms, out = parse_einsum(attrs["equation"], [t.rank for t in ins])
        check(len({t.dtype for t in ins}) == 1, "operands must share one dtype")
        sizes: dict[str, Dim] = {}
        for t, ty in zip(terms, ins):
            for c, d in zip(t, ty.shape):
                if c in sizes and sizes[c] != d:
                    if sizes[c] == 1:
                        sizes[c] = d
                    elif d != 1:
                        check(dims_compatible(sizes[c], d), f"index '{c}' has sizes {sizes[c]} "
                              f"and {d}")
                else:
                    sizes.setdefault(c, d)
        for c in out:
            check(c in sizes, f"output index '{c}' does not appear in the inputs")
        return [TensorType(ins[0].dtype, tuple(sizes[c] for c in out))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        terms, out = parse_einsum(attrs["equation"], [x.ndim for x in ins])
        letters = sorted(set("".join(terms) + out))
        remap = {c: chr(ord("a") + i) for i, c in enumerate(letters)}
        eq = ",".join("".join(remap[c] for c in t) for t in terms) + "->" + "".join(
            remap[c] for c in out)
        return [np.asarray(np.einsum(eq, *ins), dtype=ins[0].dtype)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        terms, out = parse_einsum(attrs["equation"], [t.rank for t in ins])
        sizes: dict[str, int] = {}
        for t, ty in zip(terms, ins):
            for c, d in zip(t, ty.shape):
                sizes[c] = max(sizes.get(c, 1), int(d))  # type: ignore[arg-type]
        ox = axes(len(out))
        var = {c: ox[i] for i, c in enumerate(out)}
        red = [c for c in sorted(sizes) if c not in var]
        for c in red:
            var[c] = Var(f"r_{c}")
        body: Expr | None = None
        for i, (t, ty) in enumerate(zip(terms, ins)):
            ld = load(i, ty, [0 if ty.shape[j] == 1 and sizes[c] != 1 else var[c]
                              for j, c in enumerate(t)])
            body = ld if body is None else body * ld
        assert body is not None
        if red:
            body = Reduce("sum", tuple((var[c], sizes[c]) for c in red), body, ins[0].dtype)
        return [Compute(ox, body)]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        terms, out = parse_einsum(attrs["equation"], [t.rank for t in ins])
        sizes: dict[str, int] = {}
        for t, ty in zip(terms, ins):
            for c, d in zip(t, ty.shape):
                if isinstance(d, int):
                    sizes[c] = max(sizes.get(c, 1), d)
        n = int(np.prod(list(sizes.values()))) if sizes else 1
        return Cost(n * len(ins), io_bytes(ins, outs))
