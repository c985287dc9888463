"""Compute definitions: an op's output element as an index expression over its input elements.

`Compute(axes, body)` says `out[axes...] = body`; `body` is built from `Var` (index variables),
`Const`, `Load(input, index)`, `Call(primitive, args)` (primitives from `ir.scalar`), `Select`,
`Cast` and `Reduce` (reduction over named axes). Lowering inlines these into loop nests (TVM's
tensor expressions play the same role). `evaluate` runs a definition with numpy so every
definition is tested against the op's reference.

NOTE: a Load whose index can leave the input's bounds must sit under a Select that masks it
(padding, borders); `evaluate` clips such indices and relies on the mask, as generated code will.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from minicc.ir.scalar import SCALARS, apply_scalar
from minicc.ir.types import DType, TensorType

Number = Union[int, float, bool]


class Expr:
    """Base of expression nodes; arithmetic operators build `Call` nodes."""

    dtype: DType

    def _bin(self, name: str, other: ExprLike, rev: bool = False) -> Expr:
        o = as_expr(other, self.dtype)
        return call(name, o, self) if rev else call(name, self, o)

    def __add__(self, o: ExprLike) -> Expr: return self._bin("add", o)
    def __radd__(self, o: ExprLike) -> Expr: return self._bin("add", o, True)
    def __sub__(self, o: ExprLike) -> Expr: return self._bin("sub", o)
    def __rsub__(self, o: ExprLike) -> Expr: return self._bin("sub", o, True)
    def __mul__(self, o: ExprLike) -> Expr: return self._bin("mul", o)
    def __rmul__(self, o: ExprLike) -> Expr: return self._bin("mul", o, True)
    def __truediv__(self, o: ExprLike) -> Expr: return self._bin("div", o)
    def __rtruediv__(self, o: ExprLike) -> Expr: return self._bin("div", o, True)
    def __floordiv__(self, o: ExprLike) -> Expr: return self._bin("floordiv", o)
    def __mod__(self, o: ExprLike) -> Expr: return self._bin("mod", o)
    def __neg__(self) -> Expr: return call("neg", self)

    def lt(self, o: ExprLike) -> Expr: return self._bin("lt", o)
    def le(self, o: ExprLike) -> Expr: return self._bin("le", o)
    def gt(self, o: ExprLike) -> Expr: return self._bin("gt", o)
    def ge(self, o: ExprLike) -> Expr: return self._bin("ge", o)
    def eq(self, o: ExprLike) -> Expr: return self._bin("eq", o)
    def ne(self, o: ExprLike) -> Expr: return self._bin("ne", o)


    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d.pop("_hash", None)      # str hashes differ between processes: never pickle one
        return d


def cached_hash(cls: type) -> type:
    """Keep a node's hash once computed: index trees are hashed at every level as codegen
    looks them up (the generated dataclass hash walks the whole tree each time)."""
    raw = cls.__hash__

    def __hash__(self: Expr) -> int:
        d = self.__dict__
        h = d.get("_hash")
        if h is None:
            h = d["_hash"] = raw(self)      # (frozen: the field-less cache goes around it)
        return h
    cls.__hash__ = __hash__  # type: ignore[assignment]
    return cls


ExprLike = Union[Expr, Number]


@cached_hash
@dataclass(frozen=True, eq=True)
class Var(Expr):
    """An index variable (an output axis or a reduction axis)."""

    name: str
    dtype: DType = DType.I64

    def __repr__(self) -> str:
        return self.name


@cached_hash
@dataclass(frozen=True, eq=True)
class Const(Expr):
    value: Number
    dtype: DType

    def __repr__(self) -> str:
        return repr(self.value)


@cached_hash
@dataclass(frozen=True, eq=True)
class Load(Expr):
    """Element `index` of input number `input` of the op."""

    input: int
    index: tuple[Expr, ...]
    dtype: DType

    def __repr__(self) -> str:
        return f"in{self.input}[{', '.join(map(repr, self.index))}]"


@cached_hash
@dataclass(frozen=True, eq=True)
class Call(Expr):
    fn: str
    args: tuple[Expr, ...]
    dtype: DType

    def __repr__(self) -> str:
        return f"{self.fn}({', '.join(map(repr, self.args))})"


@cached_hash
@dataclass(frozen=True, eq=True)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr
    dtype: DType

    def __repr__(self) -> str:
        return f"select({self.cond!r}, {self.a!r}, {self.b!r})"


@cached_hash
@dataclass(frozen=True, eq=True)
class Cast(Expr):
    x: Expr
    dtype: DType

    def __repr__(self) -> str:
        return f"cast<{self.dtype.value}>({self.x!r})"


REDUCERS = ("sum", "prod", "max", "min", "argmax", "argmin")


@cached_hash
@dataclass(frozen=True, eq=True)
class Reduce(Expr):
    """Reduce `body` over `axes` (variable, extent). argmax/argmin yield the flat i64 position
    of the first extreme element in the row-major order of `axes`."""

    op: str
    axes: tuple[tuple[Var, int], ...]
    body: Expr
    dtype: DType

    def __repr__(self) -> str:
        ax = ", ".join(f"{v.name}<{n}" for v, n in self.axes)
        return f"{self.op}[{ax}]({self.body!r})"


@dataclass(frozen=True)
class Compute:
    """`out[axes] = body` for one output of an op."""

    axes: tuple[Var, ...]
    body: Expr

    def __repr__(self) -> str:
        return f"out[{', '.join(v.name for v in self.axes)}] = {self.body!r}"


# ---- constructors ----------------------------------------------------------------------------

def as_expr(x: ExprLike, dtype: DType = DType.I64) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, (bool, np.bool_)):
        return Const(bool(x), DType.BOOL)
    if dtype.is_float:
        return Const(float(x), dtype)
    if dtype == DType.BOOL:
        return Const(bool(x), dtype)
    return Const(int(x), dtype)


def call(fn: str, *args: ExprLike) -> Expr:
    s = SCALARS[fn]
    if len(args) != s.arity:
        raise ValueError(f"primitive {fn} takes {s.arity} operands, got {len(args)}")
    first = next((a for a in args if isinstance(a, Expr)), None)
    dt = first.dtype if first is not None else DType.I64
    ex = tuple(as_expr(a, dt) for a in args)
    # index arithmetic on int constants folds right away, which keeps definitions small.
    if all(isinstance(a, Const) for a in ex) and dt == DType.I64 and fn in _FOLD:
        return Const(int(_FOLD[fn](*(a.value for a in ex))), DType.I64)  # type: ignore[union-attr]
    if fn in ("add", "sub") and isinstance(ex[1], Const) and ex[1].value == 0:
        return ex[0]
    if fn == "add" and isinstance(ex[0], Const) and ex[0].value == 0:
        return ex[1]
    if fn == "mul" and dt == DType.I64:
        if isinstance(ex[1], Const) and ex[1].value == 1:
            return ex[0]
        if isinstance(ex[0], Const) and ex[0].value == 1:
            return ex[1]
        if any(isinstance(a, Const) and a.value == 0 for a in ex):
            return Const(0, DType.I64)
    if fn in ("floordiv",) and isinstance(ex[1], Const) and ex[1].value == 1:
        return ex[0]
    return Call(fn, ex, s.result_dtype(*(a.dtype for a in ex)))


_FOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b, "min": min, "max": max}


def select(cond: Expr, a: ExprLike, b: ExprLike) -> Expr:
    first = a if isinstance(a, Expr) else b
    dt = first.dtype if isinstance(first, Expr) else DType.F32
    ea, eb = as_expr(a, dt), as_expr(b, dt)
    if isinstance(cond, Const):
        return ea if cond.value else eb
    return Select(cond, ea, eb, ea.dtype)


def cast(x: Expr, dtype: DType) -> Expr:
    return x if x.dtype == dtype else Cast(x, dtype)


def both(*conds: Expr | None) -> Expr | None:
    """Conjunction of the non-None conditions (None when there are none)."""
    cs = [c for c in conds if c is not None]
    if not cs:
        return None
    out = cs[0]
    for c in cs[1:]:
        out = call("and", out, c)
    return out


def in_range(i: Expr, n: int) -> Expr | None:
    """`0 <= i < n`, or None when that is statically true."""
    if isinstance(i, Var):
        return None
    return both(i.ge(0), i.lt(n))


def axes(n: int, prefix: str = "i") -> tuple[Var, ...]:
    return tuple(Var(f"{prefix}{k}") for k in range(n))


def broadcast_index(t: TensorType, out_axes: Sequence[Expr]) -> tuple[Expr, ...]:
    """Index into `t` for output position `out_axes` under numpy broadcasting."""
    off = len(out_axes) - t.rank
    return tuple(Const(0, DType.I64) if d == 1 else out_axes[off + k]
                 for k, d in enumerate(t.shape))


def load(i: int, t: TensorType, index: Sequence[ExprLike]) -> Load:
    return Load(i, tuple(as_expr(x) for x in index), t.dtype)


def flat_index(index: Sequence[Expr], shape: Sequence[int]) -> Expr:
    out: Expr = Const(0, DType.I64)
    for i, d in zip(index, shape):
        out = out * d + i
    return out


def unflat_index(flat: Expr, shape: Sequence[int]) -> tuple[Expr, ...]:
    """Row-major multi-index of `flat` in `shape` (the inverse of `flat_index`)."""
    out: list[Expr] = []
    for k, d in enumerate(shape):
        stride = int(np.prod(shape[k + 1:], dtype=np.int64))
        if d == 1:
            out.append(Const(0, DType.I64))
            continue
        e = flat // stride
        out.append(e if k == 0 else e % d)
    return tuple(out)


# ---- evaluation with numpy ------------------------------------------------------------------

def evaluate(comp: Compute, out_type: TensorType, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Run a compute definition over the whole output with numpy index grids."""
    shape = tuple(int(d) for d in out_type.shape)  # type: ignore[arg-type]
    rank = len(shape)
    env: dict[str, np.ndarray] = {}
    for k, (v, n) in enumerate(zip(comp.axes, shape)):
        g = np.arange(n, dtype=np.int64).reshape([n if j == k else 1 for j in range(rank)])
        env[v.name] = g
    res = _Eval(inputs).run(comp.body, env, rank)
    return np.broadcast_to(np.asarray(res, dtype=out_type.dtype.np), shape).copy()


class _Eval:
    def __init__(self, inputs: Sequence[np.ndarray]):
        self.inputs = [np.asarray(x) for x in inputs]

    def run(self, e: Expr, env: dict[str, np.ndarray], rank: int) -> np.ndarray:
        if isinstance(e, Var):
            return env[e.name]
        if isinstance(e, Const):
            return np.asarray(e.value, dtype=e.dtype.np)
        if isinstance(e, Load):
            arr = self.inputs[e.input]
            idx = []
            for k, ix in enumerate(e.index):
                v = np.asarray(self.run(ix, env, rank)).astype(np.int64)
                idx.append(np.clip(v, 0, max(arr.shape[k] - 1, 0)))
            if arr.size == 0:
                return np.zeros((1,) * rank, dtype=arr.dtype)
            return arr[tuple(idx)] if idx else arr[()]
        if isinstance(e, Call):
            return apply_scalar(e.fn, *(self.run(a, env, rank) for a in e.args))
        if isinstance(e, Select):
            c = self.run(e.cond, env, rank)
            return np.where(c, self.run(e.a, env, rank), self.run(e.b, env, rank)).astype(
                e.dtype.np)
        if isinstance(e, Cast):
            with np.errstate(all="ignore"):
                return np.asarray(self.run(e.x, env, rank)).astype(e.dtype.np)
        if isinstance(e, Reduce):
            k = len(e.axes)
            inner = {n: a.reshape(a.shape + (1,) * k) if a.ndim == rank else a
                     for n, a in env.items()}
            for j, (v, n) in enumerate(e.axes):
                inner[v.name] = np.arange(n, dtype=np.int64).reshape(
                    (1,) * rank + tuple(n if q == j else 1 for q in range(k)))
            body = self.run(e.body, inner, rank + k)
            full = np.broadcast_to(body, np.broadcast_shapes(
                np.shape(body), (1,) * rank + tuple(n for _, n in e.axes)))
            red = tuple(range(rank, rank + k))
            with np.errstate(all="ignore"):
                if e.op == "sum":
                    return full.sum(axis=red, dtype=e.dtype.np)
                if e.op == "prod":
                    return full.prod(axis=red, dtype=e.dtype.np)
                if e.op == "max":
                    return full.max(axis=red)
                if e.op == "min":
                    return full.min(axis=red)
                if e.op in ("argmax", "argmin"):
                    flat = full.reshape(full.shape[:rank] + (-1,))
                    pick = flat.argmax if e.op == "argmax" else flat.argmin
                    return pick(axis=-1).astype(np.int64)
            raise ValueError(f"unknown reducer {e.op}")
        raise TypeError(f"not an expression: {e!r}")
