"""Scalar primitives: the element-level functions that compute definitions are built from.

This table is the contract between the op registry and the code generators: an op's compute
definition only uses these names, and each target renderer has one emitter per name (a test walks
this table for every renderer). The numpy implementations give each primitive its meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from minicc.ir.types import DType


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf; math.erf per element is exact and fast enough for a reference.
    x = np.asarray(x)
    if x.size == 0:
        return x.copy()
    return np.vectorize(math.erf, otypes=[x.dtype])(x).astype(x.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


def _round(x: np.ndarray) -> np.ndarray:
    return np.round(x)  # half to even, as ONNX Round


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.zeros((), dtype=np.asarray(x).dtype))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iu":
        # integer division truncates toward zero (C semantics, as ONNX Div on ints).
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.trunc(a.astype(np.float64) / b.astype(np.float64))
        return q.astype(a.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(a, b).astype(a.dtype)


def _fmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.fmod(a, b)


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if a.dtype.kind in "iu":
            return np.power(a.astype(np.float64), np.asarray(b, np.float64)).astype(a.dtype)
        return np.power(a, np.asarray(b).astype(a.dtype)).astype(a.dtype)


def _safe(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def wrapped(*args: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(*args)
    wrapped.__name__ = getattr(fn, "__name__", "fn")
    return wrapped


@dataclass(frozen=True)
class Scalar:
    """A primitive: arity, numpy meaning, and its result dtype ('same', 'bool' or 'arg0')."""

    name: str
    arity: int
    fn: Callable[..., np.ndarray]
    result: str = "same"        # same: dtype of the first operand; bool: a predicate
    domain: str = "any"         # any | float | int | bool: the operand types it accepts

    def result_dtype(self, *args: DType) -> DType:
        return DType.BOOL if self.result == "bool" else args[0]


SCALARS: dict[str, Scalar] = {}


def _def(name: str, arity: int, fn: Callable[..., np.ndarray], result: str = "same",
         domain: str = "any") -> None:
    if name in SCALARS:
        raise ValueError(f"scalar primitive '{name}' defined twice")
    SCALARS[name] = Scalar(name, arity, _safe(fn), result, domain)


# unary, float math
for _n, _f in {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "asinh": np.arcsinh, "acosh": np.arccosh,
    "atanh": np.arctanh, "floor": np.floor, "ceil": np.ceil, "round": _round, "erf": _erf,
    "sigmoid": _sigmoid, "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0),
}.items():
    _def(_n, 1, _f, domain="float")
def round_tf32(x: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32 (10 mantissa bits), to nearest with ties away from zero, as
    PTX's cvt.rna.tf32.f32 (what a tensor core's TF32 operand holds); infinities and NaNs
    unchanged. Still a float32."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000
    r = np.where(finite, (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000), bits)
    return np.asarray(r, dtype=np.uint32).view(np.float32)


_def("tf32", 1, round_tf32, domain="float")     # GPU tensor-core operands (--precision tf32)
_def("reciprocal", 1, lambda x: (np.ones((), np.asarray(x).dtype) / x), domain="float")
# unary, any number
_def("neg", 1, np.negative)
_def("abs", 1, np.abs)
_def("sign", 1, np.sign)
_def("relu", 1, _relu)
_def("isnan", 1, np.isnan, result="bool", domain="float")
_def("isinf", 1, np.isinf, result="bool", domain="float")
_def("isposinf", 1, np.isposinf, result="bool", domain="float")
_def("isneginf", 1, np.isneginf, result="bool", domain="float")
_def("not", 1, np.logical_not, domain="bool")
_def("bitnot", 1, np.invert, domain="int")
# binary arithmetic
_def("add", 2, np.add)
_def("sub", 2, np.subtract)
_def("mul", 2, np.multiply)
_def("div", 2, _div)
_def("floordiv", 2, np.floor_divide, domain="int")   # index arithmetic (floor, not trunc)
_def("mod", 2, np.mod)                                 # sign of the divisor (Python, ONNX fmod=0)
_def("fmod", 2, _fmod)                                 # sign of the dividend (C fmod)
_def("pow", 2, _pow)
_def("min", 2, np.minimum)
_def("max", 2, np.maximum)
_def("bitand", 2, np.bitwise_and, domain="int")
_def("bitor", 2, np.bitwise_or, domain="int")
_def("bitxor", 2, np.bitwise_xor, domain="int")
_def("shl", 2, np.left_shift, domain="int")
_def("shr", 2, np.right_shift, domain="int")


def _dpbusd(acc: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """acc + the dot product of a's four bytes read unsigned and b's four read signed (int32
    words, little-endian), wrapping like the int32 it is: AVX-512 VNNI's vpdpbusd per lane."""
    acc, a, b = (np.asarray(v).astype(np.int64) for v in (acc, a, b))
    out = acc
    for j in range(4):
        ua = (a >> (8 * j)) & 0xFF
        sb = ((b >> (8 * j)) & 0xFF) - (((b >> (8 * j)) & 0x80) << 1)
        out = out + ua * sb
    return ((out + 2**31) % 2**32 - 2**31).astype(np.int32)


_def("dpbusd", 3, _dpbusd, domain="int")               # int8 GEMMs: 4 multiply-adds per lane
# comparisons and logic
for _n, _f in {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
               "eq": np.equal, "ne": np.not_equal}.items():
    _def(_n, 2, _f, result="bool")
_def("and", 2, np.logical_and, domain="bool")
_def("or", 2, np.logical_or, domain="bool")
_def("xor", 2, np.logical_xor, domain="bool")


def apply_scalar(name: str, *args: np.ndarray) -> np.ndarray:
    """Apply a primitive with numpy, keeping the operand dtype (numpy would promote)."""
    s = SCALARS[name]
    arrs = [np.asarray(a) for a in args]
    out = np.asarray(s.fn(*arrs))
    want = np.bool_ if s.result == "bool" else arrs[0].dtype
    return out.astype(want, copy=False)
