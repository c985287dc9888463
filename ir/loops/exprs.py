"""Expression utilities shared by lowering, scheduling and codegen: substitution, free variables,
simplification of index arithmetic, and affine analysis (is an index linear in a loop var?)."""

from __future__ import annotations

import functools
import itertools
from typing import Callable, Mapping

from minicc.ir.compute import Call, Cast, Const, Expr, Load, Reduce, Select, Var, call
from minicc.ir.loops.nodes import BufLoad, For, IfThen, Stmt, Store
from minicc.ir.types import DType

I64 = DType.I64
_fresh = itertools.count()


def fresh(prefix: str) -> Var:
    return Var(f"{prefix}.{next(_fresh)}")


def map_expr(e: Expr, f: Callable[[Expr], Expr | None]) -> Expr:
    """Rebuild `e` bottom-up; `f` may replace a node (return None to keep the rebuilt one)."""
    r = f(e)
    if r is not None:
        return r
    if isinstance(e, Call):
        return call(e.fn, *(map_expr(a, f) for a in e.args))
    if isinstance(e, Select):
        return Select(map_expr(e.cond, f), map_expr(e.a, f), map_expr(e.b, f), e.dtype)
    if isinstance(e, Cast):
        x = map_expr(e.x, f)
        return x if x.dtype == e.dtype else Cast(x, e.dtype)
    if isinstance(e, Load):
        return Load(e.input, tuple(map_expr(i, f) for i in e.index), e.dtype)
    if isinstance(e, BufLoad):
        return BufLoad(e.buf, tuple(map_expr(i, f) for i in e.index), e.dtype)
    if isinstance(e, Reduce):
        return Reduce(e.op, e.axes, map_expr(e.body, f), e.dtype)
    return e


def substitute(e: Expr, mapping: Mapping[str, Expr]) -> Expr:
    """Replace free variables by expressions (bound reduction vars are never in `mapping`)."""
    if not mapping:
        return e

    def f(x: Expr) -> Expr | None:
        if isinstance(x, Var) and x.name in mapping:
            return mapping[x.name]
        return None
    return simplify(map_expr(e, f))


def rename_reductions(e: Expr, tag: str) -> Expr:
    """Give every reduction variable in `e` a fresh name (before inlining it elsewhere)."""
    names: dict[str, Var] = {}

    def f(x: Expr) -> Expr | None:
        if isinstance(x, Var) and x.name in names:
            return names[x.name]
        if isinstance(x, Reduce):
            for v, _ in x.axes:
                names.setdefault(v.name, Var(f"{v.name}.{tag}"))
            return Reduce(x.op, tuple((names[v.name], n) for v, n in x.axes),
                          map_expr(x.body, f), x.dtype)
        return None
    return map_expr(e, f)


@functools.lru_cache(maxsize=1 << 16)    # codegen asks again for every subtree it caches
def free_vars(e: Expr) -> frozenset[str]:
    if isinstance(e, Var):
        return frozenset([e.name])
    if isinstance(e, Call):
        return frozenset().union(*(free_vars(a) for a in e.args)) if e.args else frozenset()
    if isinstance(e, Select):
        return free_vars(e.cond) | free_vars(e.a) | free_vars(e.b)
    if isinstance(e, Cast):
        return free_vars(e.x)
    if isinstance(e, (Load, BufLoad)):
        return frozenset().union(*(free_vars(i) for i in e.index)) if e.index else frozenset()
    if isinstance(e, Reduce):
        return free_vars(e.body) - {v.name for v, _ in e.axes}
    return frozenset()


def expr_loads(e: Expr) -> list[BufLoad]:
    """Every buffer load in `e`, including loads inside other loads' indices."""
    out: list[BufLoad] = []

    def f(x: Expr) -> Expr | None:
        if isinstance(x, BufLoad):
            out.append(x)
            for i in x.index:
                map_expr(i, f)
            return x
        return None
    map_expr(e, f)
    return out


def loads_in(s: Stmt) -> list[BufLoad]:
    """The loads in one statement's own expressions (not in the statements nested in it)."""
    if isinstance(s, Store):
        return expr_loads(s.value) + [ld for i in s.index for ld in expr_loads(i)]
    if isinstance(s, For):
        return expr_loads(s.extent)
    if isinstance(s, IfThen):
        return expr_loads(s.cond)
    return []


def reduces_in(e: Expr) -> list[Reduce]:
    """Reduce nodes in `e`, outermost first, without duplicates."""
    out: list[Reduce] = []
    seen: set[Reduce] = set()

    def f(x: Expr) -> Expr | None:
        if isinstance(x, Reduce):
            if x not in seen:
                seen.add(x)
                out.append(x)
            return x  # do not descend: nested reduces belong to this one
        return None
    map_expr(e, f)
    return out


# ---- simplification --------------------------------------------------------------------------

# index arithmetic, simplified as it is built (ints as i64 constants)

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


def emax(a: Expr | int, b: Expr | int) -> Expr:
    a = a if isinstance(a, Expr) else c64(a)
    b = b if isinstance(b, Expr) else c64(b)
    return simplify(call("max", a, b))


def simplify(e: Expr) -> Expr:
    """Fold integer constants and the identities index arithmetic produces."""
    def f(x: Expr) -> Expr | None:
        if isinstance(x, Call) and x.dtype == I64 and x.fn in _INT_RULES:
            args = tuple(simplify(a) for a in x.args)
            r = _INT_RULES[x.fn](*args)
            return r if r is not None else Call(x.fn, args, x.dtype)
        return None
    return map_expr(e, f)


def _c(x: Expr) -> int | None:
    return x.value if isinstance(x, Const) and isinstance(x.value, int) else None  # type: ignore


def _add(a: Expr, b: Expr) -> Expr | None:
    ca, cb = _c(a), _c(b)
    if ca is not None and cb is not None:
        return Const(ca + cb, I64)
    if cb == 0:
        return a
    if ca == 0:
        return b
    if ca is not None:  # constants to the right
        return _add(b, a) or Call("add", (b, a), I64)
    # (x + c1) + c2 -> x + (c1 + c2)
    if cb is not None and isinstance(a, Call) and a.fn == "add" and _c(a.args[1]) is not None:
        return _add(a.args[0], Const(_c(a.args[1]) + cb, I64)) or Call(  # type: ignore
            "add", (a.args[0], Const(_c(a.args[1]) + cb, I64)), I64)  # type: ignore
    # (e // c) * c + e % c -> e
    m = _divmod_pair(a, b) or _divmod_pair(b, a)
    if m is not None:
        return m
    return None


def _divmod_pair(a: Expr, b: Expr) -> Expr | None:
    if (isinstance(a, Call) and a.fn == "mul" and isinstance(b, Call) and b.fn == "mod"):
        q, c = a.args
        if isinstance(q, Call) and q.fn == "floordiv" and q.args[1] == c == b.args[1] \
                and q.args[0] == b.args[0]:
            return q.args[0]
    return None


def _sub(a: Expr, b: Expr) -> Expr | None:
    ca, cb = _c(a), _c(b)
    if ca is not None and cb is not None:
        return Const(ca - cb, I64)
    if cb == 0:
        return a
    if a == b:
        return Const(0, I64)
    if cb is not None:
        return _add(a, Const(-cb, I64)) or Call("add", (a, Const(-cb, I64)), I64)
    return None


def _mul(a: Expr, b: Expr) -> Expr | None:
    ca, cb = _c(a), _c(b)
    if ca is not None and cb is not None:
        return Const(ca * cb, I64)
    if ca == 0 or cb == 0:
        return Const(0, I64)
    if cb == 1:
        return a
    if ca == 1:
        return b
    if ca is not None:
        return Call("mul", (b, a), I64)
    return None


def _floordiv(a: Expr, b: Expr) -> Expr | None:
    ca, cb = _c(a), _c(b)
    if cb == 1:
        return a
    if ca is not None and cb is not None and cb != 0:
        return Const(ca // cb, I64)
    return None


def _mod(a: Expr, b: Expr) -> Expr | None:
    ca, cb = _c(a), _c(b)
    if cb == 1:
        return Const(0, I64)
    if ca is not None and cb is not None and cb != 0:
        return Const(ca % cb, I64)
    return None


def _minmax(fn: str) -> Callable[[Expr, Expr], Expr | None]:
    def rule(a: Expr, b: Expr) -> Expr | None:
        ca, cb = _c(a), _c(b)
        if ca is not None and cb is not None:
            return Const(min(ca, cb) if fn == "min" else max(ca, cb), I64)
        if a == b:
            return a
        return None
    return rule


_INT_RULES: dict[str, Callable[..., Expr | None]] = {
    "add": _add, "sub": _sub, "mul": _mul, "floordiv": _floordiv, "mod": _mod,
    "min": _minmax("min"), "max": _minmax("max")}


# ---- affine analysis -------------------------------------------------------------------------

def linear_coef(e: Expr, var: str) -> int | None:
    """d e / d var when `e` is affine in `var` with an integer coefficient, else None."""
    if var not in free_vars(e):
        return 0
    if isinstance(e, Var):
        return 1
    if isinstance(e, Call):
        if e.fn in ("add", "sub"):
            a, b = linear_coef(e.args[0], var), linear_coef(e.args[1], var)
            if a is None or b is None:
                return None
            return a + b if e.fn == "add" else a - b
        if e.fn == "mul":
            ca, cb = _c(e.args[0]), _c(e.args[1])
            if cb is not None:
                k = linear_coef(e.args[0], var)
                return None if k is None else k * cb
            if ca is not None:
                k = linear_coef(e.args[1], var)
                return None if k is None else k * ca
        if e.fn == "neg":
            k = linear_coef(e.args[0], var)
            return None if k is None else -k
    if isinstance(e, Cast) and e.dtype == I64 and e.x.dtype.is_int:
        return linear_coef(e.x, var)
    return None


def flat_offset(index: tuple[Expr, ...], shape: tuple[int, ...]) -> Expr:
    """Row-major element offset of `index` in `shape`, simplified.

    Digits of one flat index split by `unflat_index` ((p // S) % d for each dim) merge back, so a
    reshape or a conv epilogue over (oh, ow) = (p // OW, p % OW) addresses memory as `p` and
    stays vectorizable.
    """
    strides, st = [], 1
    for d in reversed(shape):
        strides.append(st)
        st *= d
    strides.reverse()
    terms: list[list] = []   # [base, divisor, modulus or None, coef]: ((base // div) % mod) * coef
    rest: list[tuple[Expr, int]] = []
    for i, c in zip(index, strides):
        t = _digit(simplify(i))
        if t is None:
            rest.append((i, c))
        else:
            terms.append([t[0], t[1], t[2], c])
    merged = True
    while merged:
        merged = False
        for a in terms:
            for b in terms:
                if a is b or a[0] != b[0] or b[2] is None:
                    continue
                if a[1] == b[1] * b[2] and a[3] == b[3] * b[2]:
                    a[:] = [b[0], b[1], None if a[2] is None else a[2] * b[2], b[3]]
                    terms.remove(b)
                    merged = True
                    break
            if merged:
                break
    out: Expr = Const(0, I64)
    for base, div, mod, coef in terms:
        e = base if div == 1 else call("floordiv", base, Const(div, I64))
        if mod is not None:
            e = call("mod", e, Const(mod, I64))
        out = simplify(call("add", out, simplify(call("mul", e, Const(coef, I64)))))
    for i, c in rest:
        out = simplify(call("add", out, simplify(call("mul", i, Const(c, I64)))))
    return out


def _digit(e: Expr) -> tuple[Expr, int, int | None] | None:
    """Match ((base // div) % mod), (base // div), (base % mod) or base itself."""
    mod = None
    if isinstance(e, Call) and e.fn == "mod" and _c(e.args[1]) is not None:
        mod = _c(e.args[1])
        e = e.args[0]
    if isinstance(e, Call) and e.fn == "floordiv" and _c(e.args[1]) is not None:
        return e.args[0], _c(e.args[1]), mod  # type: ignore[return-value]
    if isinstance(e, Const):
        return None
    return e, 1, mod


def expr_size(e: Expr) -> int:
    n = 1
    if isinstance(e, Call):
        n += sum(expr_size(a) for a in e.args)
    elif isinstance(e, Select):
        n += expr_size(e.cond) + expr_size(e.a) + expr_size(e.b)
    elif isinstance(e, Cast):
        n += expr_size(e.x)
    elif isinstance(e, (Load, BufLoad)):
        n += sum(expr_size(i) for i in e.index)
    elif isinstance(e, Reduce):
        n += expr_size(e.body)
    return n
