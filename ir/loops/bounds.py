"""Index arithmetic simplified with the ranges of the loop variables.

Reshapes and transposes inline into index trees such as `((i2 * 320 + i3) // 320) % 2`, which
is `i2 % 2` only because i3 < 320: the plain simplifier (exprs.simplify) does not know that.
Left as they are, such an index is a division per lane and a gather (dbnet_like's depth-to-space
shuffle after its transposed convs took 7.5 ms for 9.8 MB). Floor division and modulo by a
positive constant obey, for any integers q and r,

    (q * c + r) // c = q + r // c        (q * c + r) % c = r % c

and r // c = k, r % c = r - k * c where k * c <= r < (k + 1) * c: the ranges decide that.
"""

from __future__ import annotations

from typing import Mapping

from minicc.ir.compute import Call, Const, Expr, Var, call
from minicc.ir.loops.exprs import simplify
from minicc.ir.loops.nodes import BufLoad
from minicc.ir.types import DType

I64 = DType.I64
Range = tuple[int, int]          # inclusive


def interval(e: Expr, ranges: Mapping[str, Range]) -> Range | None:
    """Bounds of an i64 index expression, or None where they are not known."""
    if isinstance(e, Const):
        return (e.value, e.value) if isinstance(e.value, int) else None  # type: ignore
    if isinstance(e, Var):
        return ranges.get(e.name)
    if not isinstance(e, Call) or e.dtype != I64:
        return None
    args = [interval(a, ranges) for a in e.args]
    if e.fn == "neg" and args[0] is not None:
        return (-args[0][1], -args[0][0])
    if len(args) != 2:
        return None
    a, b = args
    if e.fn == "mod" and b is not None and b[0] == b[1] and b[0] > 0:
        c = b[0]
        if a is not None and a[0] // c == a[1] // c:
            return (a[0] % c, a[1] % c)
        return (0, c - 1)
    if a is None or b is None:
        return None
    if e.fn == "add":
        return (a[0] + b[0], a[1] + b[1])
    if e.fn == "sub":
        return (a[0] - b[1], a[1] - b[0])
    if e.fn == "mul":
        ps = [x * y for x in a for y in b]
        return (min(ps), max(ps))
    if e.fn == "floordiv" and b[0] == b[1] and b[0] > 0:
        return (a[0] // b[0], a[1] // b[0])
    if e.fn == "min":
        return (min(a[0], b[0]), min(a[1], b[1]))
    if e.fn == "max":
        return (max(a[0], b[0]), max(a[1], b[1]))
    return None


def _terms(e: Expr) -> list[Expr]:
    if isinstance(e, Call) and e.fn == "add":
        return _terms(e.args[0]) + _terms(e.args[1])
    return [e]


def _coef(t: Expr) -> tuple[Expr | None, int]:
    """t as (x, k) with t = x * k (x None: the constant k)."""
    if isinstance(t, Const) and isinstance(t.value, int):
        return None, t.value
    if isinstance(t, Call) and t.fn == "mul":
        a, b = t.args
        if isinstance(b, Const) and isinstance(b.value, int):
            return a, b.value
        if isinstance(a, Const) and isinstance(a.value, int):
            return b, a.value
    return t, 1


def _sum(ts: list[Expr]) -> Expr:
    out: Expr = Const(0, I64)
    for t in ts:
        out = call("add", out, t)
    return out


def _divmod(fn: str, x: Expr, c: int, ranges: Mapping[str, Range]) -> Expr | None:
    """x // c or x % c with the multiples of c taken out and the rest decided by its range."""
    q: list[Expr] = []
    rest: list[Expr] = []
    for t in _terms(x):
        v, k = _coef(t)
        if k % c == 0:
            q.append(Const(k // c, I64) if v is None else call("mul", v, Const(k // c, I64)))
        else:
            rest.append(t)
    r = _sum(rest)
    iv = interval(r, ranges)
    whole = iv is not None and iv[0] // c == iv[1] // c
    if not whole:
        # v * k + r' with c a multiple of k and 0 <= r' < k: (v * k + r') // c = v // (c / k)
        # and (v * k + r') % c = (v % (c / k)) * k + r'  (i2 * 320 + i3 // 640 = i2 // 2)
        for j, t in enumerate(rest):
            v, k = _coef(t)
            if v is None or k <= 1 or c % k:
                continue
            others = _sum(rest[:j] + rest[j + 1:])
            ov = interval(others, ranges)
            if ov is None or ov[0] < 0 or ov[1] >= k:
                continue
            m = Const(c // k, I64)
            if fn == "floordiv":
                inner = simplify_ranged(call("floordiv", v, m), ranges)
                return simplify(call("add", _sum(q), inner))
            inner = simplify_ranged(call("mod", v, m), ranges)
            return simplify(call("add", call("mul", inner, Const(k, I64)), others))
    if not q and not whole:
        return None
    if fn == "floordiv":
        part = Const(iv[0] // c, I64) if whole and iv is not None else \
            call("floordiv", r, Const(c, I64))
        return simplify(call("add", _sum(q), part))
    if whole:
        return simplify(call("add", r, Const(-(iv[0] // c) * c, I64)))  # type: ignore[index]
    return call("mod", r, Const(c, I64))


def simplify_ranged(e: Expr, ranges: Mapping[str, Range]) -> Expr:
    """`e` with its integer divisions and modulos by constants simplified where the ranges of
    its variables allow (bottom-up, so an inner result feeds the outer rule)."""
    if isinstance(e, BufLoad):
        return BufLoad(e.buf, tuple(simplify_ranged(i, ranges) for i in e.index), e.dtype)
    if not isinstance(e, Call):
        if hasattr(e, "__dataclass_fields__") and not isinstance(e, (Var, Const)):
            return _rebuild(e, ranges)
        return e
    args = tuple(simplify_ranged(a, ranges) for a in e.args)
    if e.dtype == I64 and e.fn in ("floordiv", "mod") and isinstance(args[1], Const) and \
            isinstance(args[1].value, int) and args[1].value > 0:
        got = _divmod(e.fn, args[0], args[1].value, ranges)
        if got is not None:
            return got
    return e if args == e.args else call(e.fn, *args)


def _rebuild(e: Expr, ranges: Mapping[str, Range]) -> Expr:
    """Select, Cast and the like: their expression fields simplified."""
    from dataclasses import fields, replace

    ch = {}
    for f in fields(e):     # type: ignore[arg-type]
        x = getattr(e, f.name)
        if isinstance(x, Expr):
            y = simplify_ranged(x, ranges)
            if y is not x:
                ch[f.name] = y
    return replace(e, **ch) if ch else e      # type: ignore[type-var]


def linear_terms(e: Expr) -> tuple[frozenset, int]:
    """e as (its non-constant terms, each with its summed coefficient, and its constant), sums
    under constant factors distributed: two expressions that differ by a constant have equal
    first parts."""
    coefs: dict[Expr, int] = {}
    const = 0

    def walk(x: Expr, k: int) -> None:
        nonlocal const
        if isinstance(x, Const) and isinstance(x.value, int):
            const += k * x.value
            return
        if isinstance(x, Call) and x.dtype == I64:
            if x.fn == "add":
                walk(x.args[0], k)
                walk(x.args[1], k)
                return
            if x.fn == "sub":
                walk(x.args[0], k)
                walk(x.args[1], -k)
                return
            if x.fn == "neg":
                walk(x.args[0], -k)
                return
            if x.fn == "mul":
                a, b = x.args
                if isinstance(b, Const) and isinstance(b.value, int):
                    walk(a, k * b.value)
                    return
                if isinstance(a, Const) and isinstance(a.value, int):
                    walk(b, k * a.value)
                    return
        coefs[x] = coefs.get(x, 0) + k
    walk(e, 1)
    return frozenset((v, k) for v, k in coefs.items() if k), const
