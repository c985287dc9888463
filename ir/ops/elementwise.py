"""Elementwise and broadcasting ops: one op per scalar primitive, plus activations with attributes.

Each op's compute definition is its scalar expression applied to broadcast loads; its numpy
reference is written independently so the two check each other.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.ir.compute import Compute, Expr, as_expr, axes, broadcast_index, call, cast, load, select
from minicc.ir.registry import Attr, Cost, FusionKind, OpDef, check, io_bytes, register_op
from minicc.ir.scalar import SCALARS, apply_scalar
from minicc.ir.types import UNKNOWN, DType, Shape, TensorType


def broadcast_shapes(*shapes: Shape) -> Shape:
    """numpy broadcasting over static and symbolic dims."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        static = {d for d in dims if isinstance(d, int) and d != 1}
        syms = {d for d in dims if isinstance(d, str)}
        check(len(static) <= 1, "shapes " + " and ".join(
            f"[{','.join(map(str, s))}]" for s in shapes) + " do not broadcast")
        if static:
            out.append(static.pop())
        elif len(syms) == 1 and UNKNOWN not in syms:
            out.append(syms.pop())
        elif syms:
            out.append(UNKNOWN)
        else:
            out.append(1)
    return tuple(out)


class Elementwise(OpDef):
    """Shared machinery: broadcast inference, loads, and `expr` applied per element."""

    kind = FusionKind.ELEMWISE
    domain = "any"           # operand element types accepted: any | float | int | bool | number
    flops = 1                # per output element, for the cost model
    same_dtype = True

    def expr(self, args: list[Expr], attrs: Mapping[str, Any]) -> Expr:
        raise NotImplementedError

    def np_ref(self, args: list[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def result_dtype(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> DType:
        return ins[0].dtype

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        if self.same_dtype:
            if len({t.dtype for t in ins}) != 1:
                check(False, "operands must have one dtype, got " + ", ".join(map(str, ins)))
        _check_domain(self.domain, ins[0].dtype)
        shape = broadcast_shapes(*(t.shape for t in ins))
        return [TensorType(self.result_dtype(ins, attrs), shape)]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        with np.errstate(all="ignore"):
            out = self.np_ref([np.asarray(x) for x in ins], attrs)
        return [np.asarray(out).astype(self.result_dtype(
            [TensorType.of(np.asarray(x)) for x in ins], attrs).np, copy=False)]

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute]:
        ax = axes(outs[0].rank)
        args: list[Expr] = [load(i, t, broadcast_index(t, ax)) for i, t in enumerate(ins)]
        return [Compute(ax, self.expr(args, attrs))]

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        n = outs[0].numel or 0
        return Cost(n * self.flops, io_bytes(ins, outs))


def _check_domain(domain: str, dt: DType) -> None:
    ok = {"any": True, "float": dt.is_float, "int": dt.is_int, "bool": dt == DType.BOOL,
          "number": dt != DType.BOOL}[domain]
    check(ok, f"element type {dt.value} not accepted (needs {domain})")


def _primitive_op(prim: str, *, kind: FusionKind | None = None, flops: int = 1) -> None:
    """Register an op that is exactly one scalar primitive (exp, add, lt...)."""
    s = SCALARS[prim]
    is_unary = s.arity == 1
    dom = {"any": "number"}.get(s.domain, s.domain) if prim not in ("eq", "ne") else "any"

    class _Prim(Elementwise):
        name = prim
        inputs = (s.arity, s.arity)
        domain = dom
        doc = f"y = {prim}({', '.join('abc'[:s.arity])}) elementwise" + (
            "" if is_unary else ", with numpy broadcasting")

        def expr(self, args: list[Expr], attrs: Mapping[str, Any]) -> Expr:
            return call(prim, *args)

        def np_ref(self, args: list[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
            return apply_scalar(prim, *args)

        def result_dtype(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> DType:
            return s.result_dtype(*(t.dtype for t in ins))

    _Prim.kind = kind if kind is not None else (
        FusionKind.ELEMWISE if is_unary else FusionKind.BROADCAST)
    _Prim.flops = flops
    _Prim.__name__ = _Prim.__qualname__ = f"Op_{prim}"
    register_op(_Prim)


_TRANSCENDENTAL = {"exp", "log", "tanh", "sigmoid", "erf", "sin", "cos", "tan", "asin", "acos",
                   "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "softplus", "pow"}
for _p in SCALARS:
    if _p in ("floordiv", "ne", "isposinf", "isneginf"):
        continue  # index arithmetic and helper predicates, not graph ops
    _primitive_op(_p, flops=8 if _p in _TRANSCENDENTAL else 1)


class _Activation(Elementwise):
    """A unary float op with attributes, defined by an expression over primitives."""

    inputs = (1, 1)
    domain = "float"
    flops = 4


@register_op
class LeakyRelu(_Activation):
    name = "leaky_relu"
    attrs = {"alpha": Attr("float", 0.01)}
    doc = "y = x if x >= 0 else alpha * x"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return select(a[0].lt(0.0), a[0] * at["alpha"], a[0])

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return np.where(a[0] < 0, a[0] * at["alpha"], a[0])


@register_op
class Elu(_Activation):
    name = "elu"
    attrs = {"alpha": Attr("float", 1.0)}
    doc = "y = x if x > 0 else alpha * (exp(x) - 1)"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return select(a[0].gt(0.0), a[0], (call("exp", a[0]) - 1.0) * at["alpha"])

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return np.where(a[0] > 0, a[0], at["alpha"] * (np.exp(a[0]) - 1))


@register_op
class Celu(_Activation):
    name = "celu"
    attrs = {"alpha": Attr("float", 1.0)}
    doc = "y = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        al = at["alpha"]
        return call("max", a[0], 0.0) + call("min", (call("exp", a[0] / al) - 1.0) * al, 0.0)

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        al = at["alpha"]
        return np.maximum(0, a[0]) + np.minimum(0, al * (np.exp(a[0] / al) - 1))


@register_op
class Selu(_Activation):
    name = "selu"
    attrs = {"alpha": Attr("float", 1.67326319217681884765625),
             "gamma": Attr("float", 1.05070102214813232421875)}
    doc = "y = gamma * (x if x > 0 else alpha * (exp(x) - 1))"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return select(a[0].gt(0.0), a[0] * at["gamma"],
                      (call("exp", a[0]) * at["alpha"] - at["alpha"]) * at["gamma"])

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        x = a[0]
        return np.where(x > 0, at["gamma"] * x, at["gamma"] * (at["alpha"] * np.exp(x)
                                                               - at["alpha"]))


@register_op
class HardSigmoid(_Activation):
    name = "hard_sigmoid"
    attrs = {"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)}
    doc = "y = clip(alpha * x + beta, 0, 1)"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return call("min", call("max", a[0] * at["alpha"] + at["beta"], 0.0), 1.0)

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return np.clip(a[0] * at["alpha"] + at["beta"], 0, 1)


@register_op
class HardSwish(_Activation):
    name = "hard_swish"
    doc = "y = x * clip(x / 6 + 0.5, 0, 1)"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return a[0] * call("min", call("max", a[0] * (1.0 / 6.0) + 0.5, 0.0), 1.0)

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return a[0] * np.clip(a[0] / 6 + 0.5, 0, 1)


@register_op
class ThresholdedRelu(_Activation):
    name = "thresholded_relu"
    attrs = {"alpha": Attr("float", 1.0)}
    doc = "y = x if x > alpha else 0"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return select(a[0].gt(at["alpha"]), a[0], 0.0)

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return np.where(a[0] > at["alpha"], a[0], 0)


@register_op
class Shrink(_Activation):
    name = "shrink"
    attrs = {"bias": Attr("float", 0.0), "lambd": Attr("float", 0.5)}
    domain = "number"
    doc = "y = x + bias if x < -lambd; x - bias if x > lambd; else 0"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        x, dt = a[0], a[0].dtype
        lam, b = as_expr(at["lambd"], DType.F64), as_expr(at["bias"], DType.F64)
        xf = cast(x, DType.F64)
        return cast(select(xf.lt(-at["lambd"]), xf + b, select(xf.gt(lam), xf - b, 0.0)), dt)

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        x = a[0].astype(np.float64)
        lam, b = at["lambd"], at["bias"]
        return np.where(x < -lam, x + b, np.where(x > lam, x - b, 0))


@register_op
class Softsign(_Activation):
    name = "softsign"
    doc = "y = x / (1 + |x|)"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return a[0] / (call("abs", a[0]) + 1.0)

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return a[0] / (1 + np.abs(a[0]))


@register_op
class Mish(_Activation):
    name = "mish"
    doc = "y = x * tanh(softplus(x))"
    flops = 20

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return a[0] * call("tanh", call("softplus", a[0]))

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        x = a[0].astype(np.float64)
        return x * np.tanh(np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0))


@register_op
class Gelu(_Activation):
    name = "gelu"
    attrs = {"approximate": Attr("str", "none")}
    doc = "y = x * Phi(x) (exact with erf, or the tanh approximation)"
    flops = 12

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        x = a[0]
        if at["approximate"] == "tanh":
            inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
            return x * 0.5 * (call("tanh", inner) + 1.0)
        return x * 0.5 * (call("erf", x * (1.0 / math.sqrt(2.0))) + 1.0)

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        x = a[0].astype(np.float64)
        if at["approximate"] == "tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        erf = np.vectorize(math.erf)(x / math.sqrt(2)) if x.size else x
        return 0.5 * x * (1 + erf)

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        check(attrs["approximate"] in ("none", "tanh"),
              f"approximate must be 'none' or 'tanh', got '{attrs['approximate']}'")
        return super().infer(ins, attrs)


@register_op
class Clip(_Activation):
    name = "clip"
    attrs = {"min": Attr("float", -math.inf), "max": Attr("float", math.inf)}
    domain = "number"
    flops = 2
    doc = "y = min(max(x, min), max)"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        x = a[0]
        lo, hi = at["min"], at["max"]
        if x.dtype.is_int:
            info = np.iinfo(x.dtype.np)
            lo, hi = int(max(lo, info.min)), int(min(hi, info.max))
        out = call("max", x, lo) if at["min"] != -math.inf else x
        return call("min", out, hi) if at["max"] != math.inf else out

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        x = a[0]
        lo, hi = at["min"], at["max"]
        out = np.maximum(x, np.array(lo).astype(x.dtype)) if lo != -math.inf else x
        return np.minimum(out, np.array(hi).astype(x.dtype)) if hi != math.inf else out


@register_op
class Cast(Elementwise):
    name = "cast"
    inputs = (1, 1)
    attrs = {"to": Attr("dtype")}
    doc = "y = x converted to dtype `to` (float to int truncates toward zero)"

    def result_dtype(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> DType:
        return attrs["to"]

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        x = a[0]
        if at["to"] == DType.BOOL and x.dtype != DType.BOOL:
            return x.ne(0)
        return cast(x, at["to"])

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return a[0].astype(at["to"].np)


@register_op
class PRelu(Elementwise):
    name = "prelu"
    inputs = (2, 2)
    kind = FusionKind.BROADCAST
    domain = "number"
    doc = "y = x if x >= 0 else slope * x (slope broadcasts)"

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return select(a[0].lt(0), a[0] * a[1], a[0])

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return np.where(a[0] < 0, a[0] * a[1], a[0])


@register_op
class Where(Elementwise):
    name = "where"
    inputs = (3, 3)
    kind = FusionKind.BROADCAST
    same_dtype = False
    doc = "y = a if cond else b (all three broadcast)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        check(ins[0].dtype == DType.BOOL, f"condition must be bool, got {ins[0]}")
        check(ins[1].dtype == ins[2].dtype, f"branches differ in dtype: {ins[1]} vs {ins[2]}")
        return [TensorType(ins[1].dtype, broadcast_shapes(*(t.shape for t in ins)))]

    def result_dtype(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> DType:
        return ins[1].dtype

    def expr(self, a: list[Expr], at: Mapping[str, Any]) -> Expr:
        return select(a[0], a[1], a[2])

    def np_ref(self, a: list[np.ndarray], at: Mapping[str, Any]) -> np.ndarray:
        return np.where(a[0], a[1], a[2])

