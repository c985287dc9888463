"""Element types and tensor types of the graph IR.

A shape is a tuple of dims; a dim is an `int` (static), a `str` naming a symbolic dim shared by
every tensor that uses the same name (a dynamic batch `N`), or `"?"` (unknown, never shared).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import numpy as np

from minicc.errors import ShapeError
from minicc.lazytypes import LazyTypes

Dim = int | str
Shape = tuple[Dim, ...]
UNKNOWN = "?"
_SYM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DType(Enum):
    """Element types. The value is the short name used in IR text."""

    BOOL = "bool"
    I8 = "i8"
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    F16 = "f16"
    F32 = "f32"
    F64 = "f64"
    # storage-only: tensors of these types are moved and converted (on the host, with
    # ml_dtypes), never computed on; see STORAGE_ONLY
    BF16 = "bf16"
    F8E4M3FN = "f8e4m3fn"
    F8E4M3FNUZ = "f8e4m3fnuz"
    F8E5M2 = "f8e5m2"
    F8E5M2FNUZ = "f8e5m2fnuz"
    F8E8M0 = "f8e8m0"
    F4E2M1 = "f4e2m1"
    I4 = "i4"
    U4 = "u4"
    I2 = "i2"
    U2 = "u2"
    STR = "str"        # ONNX STRING: numpy object arrays of str, host ops only

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    def __str__(self) -> str:
        return self.value

    @property
    def np(self) -> np.dtype:
        return np.dtype(_TO_NP[self])

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.F16, DType.F32, DType.F64)

    @property
    def is_int(self) -> bool:
        return self.np.kind in "iu"

    @property
    def storage_only(self) -> bool:
        """Stored one element per byte (two for bf16) as ml_dtypes does, converted to and from
        the other types on the host, with no arithmetic in kernels (the CPU has no unit for
        them; bf16 could widen like f16, which no model here needs yet)."""
        return self in STORAGE_ONLY

    @staticmethod
    def from_np(dt: np.dtype | type) -> DType:
        key = np.dtype(dt)
        for table in (_TO_NP.plain(), _TO_NP.items()):
            for d, n in table:
                if np.dtype(n) == key:
                    return d
        raise ShapeError(f"unsupported element type: numpy dtype {key} has no minicc dtype")

    @staticmethod
    def parse(name: str) -> DType:
        try:
            return DType(name)
        except ValueError:
            known = ", ".join(d.value for d in DType)
            raise ShapeError(f"unknown dtype '{name}' (known: {known})") from None


_TO_NP = LazyTypes({
    DType.BOOL: np.bool_, DType.I8: np.int8, DType.I16: np.int16, DType.I32: np.int32,
    DType.I64: np.int64, DType.U8: np.uint8, DType.U16: np.uint16, DType.U32: np.uint32,
    DType.U64: np.uint64, DType.F16: np.float16, DType.F32: np.float32, DType.F64: np.float64,
    DType.STR: np.object_,
}, lambda md: {
    DType.BF16: md.bfloat16, DType.F8E4M3FN: md.float8_e4m3fn,
    DType.F8E4M3FNUZ: md.float8_e4m3fnuz, DType.F8E5M2: md.float8_e5m2,
    DType.F8E5M2FNUZ: md.float8_e5m2fnuz, DType.F8E8M0: md.float8_e8m0fnu,
    DType.F4E2M1: md.float4_e2m1fn, DType.I4: md.int4, DType.U4: md.uint4,
    DType.I2: md.int2, DType.U2: md.uint2})
STORAGE_ONLY = frozenset({DType.BF16, DType.F8E4M3FN, DType.F8E4M3FNUZ, DType.F8E5M2,
                          DType.F8E5M2FNUZ, DType.F8E8M0, DType.F4E2M1, DType.I4, DType.U4,
                          DType.I2, DType.U2, DType.STR})


def check_dim(d: object) -> Dim:
    """Validate one dim: a non-negative int, a symbol name, or '?'."""
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
        if d < 0:
            raise ShapeError(f"negative dimension {d}")
        return int(d)
    if isinstance(d, str) and (d == UNKNOWN or _SYM_RE.match(d)):
        return d
    raise ShapeError(f"bad dimension {d!r}: expected an int >= 0, a symbol name or '?'")


@dataclass(frozen=True, slots=True)
class TensorType:
    """dtype plus shape. `f32[1,3,224,224]`, `f32[]` for a scalar, `f32[N,10]`, `f32[?,10]`."""

    dtype: DType
    shape: Shape

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(check_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        """Number of elements, or None when some dim is not static."""
        if not self.is_static:
            return None
        n = 1
        for d in self.shape:
            n *= d  # type: ignore[operator]
        return n

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        return None if n is None else n * self.dtype.itemsize

    def with_shape(self, shape: Shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        return TensorType(DType.from_np(array.dtype), tuple(int(d) for d in array.shape))


def dims_equal(a: Dim, b: Dim) -> bool:
    """True when two dims are known to be equal ('?' equals nothing, not even itself)."""
    return a == b and a != UNKNOWN


def dims_compatible(a: Dim, b: Dim) -> bool:
    """True when two dims may be equal at run time."""
    return a == b or isinstance(a, str) or isinstance(b, str)


def matches(t: TensorType, array: np.ndarray, bindings: dict[str, int] | None = None) -> str | None:
    """Check an array against a type; bind symbols in `bindings`. Returns a reason or None."""
    if array.dtype != t.dtype.np:
        got = "object" if array.dtype == object else \
            DType.from_np(array.dtype).value if _known(array.dtype) else array.dtype
        return f"dtype {got} but expected {t.dtype.value}"
    if array.ndim != t.rank:
        return f"rank {array.ndim} (shape {list(array.shape)}) but expected rank {t.rank} ({t})"
    for i, (d, n) in enumerate(zip(t.shape, array.shape)):
        if isinstance(d, int):
            if d != n:
                return f"shape {list(array.shape)} but expected {t} (dim {i})"
        elif d != UNKNOWN and bindings is not None:
            if bindings.setdefault(d, n) != n:
                return (f"shape {list(array.shape)}: dim {i} is symbol {d}={n} but {d} is "
                        f"{bindings[d]} elsewhere")
    return None


def _known(dt: np.dtype) -> bool:
    try:
        DType.from_np(dt)
        return True
    except ShapeError:
        return False
