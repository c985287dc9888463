"""The op registry: each graph op is defined once, with everything the compiler needs to know.

An op definition (`OpDef` subclass, registered with `@register_op`) gives its arity, attribute
schema, shape/dtype inference, numpy reference semantics, cost, fusion kind, and its compute
definition (`ir.compute`). The frontend, verifier, interpreter, passes, cost model and tests all
read `OPS`, so they cannot drift apart. Op modules live in `ir/ops/` and register on import.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from minicc.errors import ShapeError, VerificationError
from minicc.ir.compute import Compute
from minicc.ir.graph import Attrs, ConstData, Function
from minicc.ir.types import DType, TensorType


class FusionKind(IntEnum):
    """TVM's op-pattern lattice: lower kinds fuse more freely."""

    ELEMWISE = 0
    BROADCAST = 1
    INJECTIVE = 2
    REDUCE = 3
    COMPLEX = 4   # out-elementwise-fusable: conv, matmul take an elementwise epilogue
    OPAQUE = 8


_REQUIRED = object()
ATTR_TYPES = ("int", "float", "str", "bool", "ints", "floats", "strs", "dims", "dtype", "tensor",
              "func")      # func: a region (a nested Function, isolated: captures are operands)


@dataclass(frozen=True)
class Attr:
    """One attribute in an op's schema: its type (one of ATTR_TYPES) and default."""

    type: str
    default: Any = _REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class Cost:
    """FLOPs and bytes moved (inputs read once plus outputs written once)."""

    flops: int
    bytes: int

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0


class OpDef:
    """Base of op definitions. Subclasses set the class attributes and override the methods.

    Methods receive `attrs` as a mapping that includes every default, so definitions never look
    up defaults themselves.
    """

    name: str = ""
    inputs: tuple[int, int] = (1, 1)        # min and max number of operands (max -1: any)
    attrs: Mapping[str, Attr] = {}
    kind: FusionKind = FusionKind.OPAQUE
    doc: str = ""
    view: bool = False          # only renames its input's storage (reshape): no kernel
    host: bool = False          # runs on the host with its numpy reference (no compute)
    template: str | None = None  # names the loop-nest template its groups lower with
                                 # (ir/loops/gemm_views.py: conv2d_gemm, matmul_gemm)

    def num_outputs(self, attrs: Mapping[str, Any]) -> int:
        return 1

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        raise NotImplementedError(self.name)

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        raise NotImplementedError(self.name)

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        """Default: one flop per output element."""
        return Cost(sum(_numel(t) for t in outs), io_bytes(ins, outs))

    def compute(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
                attrs: Mapping[str, Any]) -> list[Compute] | None:
        """Index-expression definition of each output; None for opaque ops."""
        return None


OPS: dict[str, OpDef] = {}


def register_op(cls: type[OpDef]) -> type[OpDef]:
    """Class decorator: instantiate and register an op definition under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in OPS:
        raise ValueError(f"op '{cls.name}' registered twice")
    for a in cls.attrs.values():
        if a.type not in ATTR_TYPES:
            raise ValueError(f"op '{cls.name}': bad attribute type {a.type}")
    OPS[cls.name] = cls()
    return cls


def get_op(kind: str) -> OpDef:
    try:
        return OPS[kind]
    except KeyError:
        raise VerificationError(f"unknown op '{kind}' (see `minicc ops` for the list)") from None


def _numel(t: TensorType) -> int:
    n = t.numel
    return 0 if n is None else n


def io_bytes(ins: Sequence[TensorType], outs: Sequence[TensorType]) -> int:
    return sum((t.nbytes or 0) for t in list(ins) + list(outs))


# ---- attributes ------------------------------------------------------------------------------

def _coerce(op: str, key: str, spec: Attr, v: Any) -> Any:
    def bad(why: str) -> VerificationError:
        return VerificationError(f"op '{op}': attribute '{key}' {why}")

    t = spec.type
    if t == "int":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise bad(f"must be an int, got {v!r}")
        return int(v)
    if t == "float":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
            raise bad(f"must be a float, got {v!r}")
        return float(v)
    if t == "bool":
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer)) and v in (0, 1):
            return bool(v)
        raise bad(f"must be a bool, got {v!r}")
    if t == "str":
        if not isinstance(v, str):
            raise bad(f"must be a string, got {v!r}")
        return v
    if t == "dtype":
        if isinstance(v, DType):
            return v
        if isinstance(v, str):
            return DType.parse(v)
        raise bad(f"must be a dtype, got {v!r}")
    if t == "tensor":
        if not isinstance(v, ConstData):
            raise bad(f"must be a tensor constant, got {v!r}")
        return v
    if t == "func":
        if not isinstance(v, Function):
            raise bad(f"must be a function (a region), got {v!r}")
        return v
    if not isinstance(v, (list, tuple, np.ndarray)):
        raise bad(f"must be a list ({t}), got {v!r}")
    if t == "dims":  # shape entries: ints (-1 = inferred) or symbolic dim names
        out = []
        for x in v:
            if isinstance(x, str) and x.isidentifier():
                out.append(x)
            elif isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= -1:
                out.append(int(x))
            else:
                raise bad(f"entries must be ints >= -1 or symbol names, got {x!r}")
        return tuple(out)
    item = Attr({"ints": "int", "floats": "float", "strs": "str"}[t])
    return tuple(_coerce(op, key, item, x) for x in v)


def canonical_attrs(kind: str, attrs: Mapping[str, Any]) -> Attrs:
    """Validate attributes against the schema and drop those equal to their default."""
    d = get_op(kind)
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if k not in d.attrs:
            known = ", ".join(sorted(d.attrs)) or "none"
            raise VerificationError(f"op '{kind}': unknown attribute '{k}' (known: {known})")
        spec = d.attrs[k]
        cv = _coerce(kind, k, spec, v)
        if not spec.required and _same(cv, spec.default):
            continue
        out[k] = cv
    for k, spec in d.attrs.items():
        if spec.required and k not in out:
            raise VerificationError(f"op '{kind}': missing required attribute '{k}'")
    return Attrs(out)


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, list):
        b = tuple(b)
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return type(a) is type(b) and a == b if not isinstance(a, tuple) else a == b


def full_attrs(kind: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Stored attributes plus every default (what OpDef methods receive)."""
    d = get_op(kind)
    out = {k: (tuple(s.default) if isinstance(s.default, list) else s.default)
           for k, s in d.attrs.items() if not s.required}
    out.update(attrs)
    return out


STORAGE_OPS = frozenset({"const", "convert", "onnx_node"})  # besides views: any dtype (host ops)


def infer_types(kind: str, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
    """Check arity and run the op's inference; errors name the op and the input types."""
    d = get_op(kind)
    lo, hi = d.inputs
    if len(ins) < lo or (hi >= 0 and len(ins) > hi):
        want = f"{lo}" if lo == hi else (f"at least {lo}" if hi < 0 else f"{lo} to {hi}")
        raise VerificationError(f"op '{kind}' takes {want} operands, got {len(ins)}")
    a = full_attrs(kind, attrs)
    try:
        outs = d.infer(list(ins), a)
        if not (d.view or kind in STORAGE_OPS):
            odd = [t.dtype for t in list(ins) + outs if t.dtype.storage_only]
            check(not odd, f"{odd[0] if odd else ''} is a storage-only element type: it can "
                           "be stored, reshaped and converted (Cast, CastLike), not computed on")
    except ShapeError as e:
        sig = ", ".join(str(t) for t in ins)
        raise ShapeError(f"op '{kind}' on ({sig}): {e}") from None
    if len(outs) != d.num_outputs(a):
        raise VerificationError(f"op '{kind}': inference gave {len(outs)} results")
    return outs


def check(cond: bool, msg: str) -> None:
    """Raise ShapeError(msg) unless cond: the one way op definitions reject bad operands."""
    if not cond:
        raise ShapeError(msg)


def norm_axis(axis: int, rank: int) -> int:
    check(-rank <= axis < max(rank, 1) if rank else axis in (0, -1),
          f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def unary_infer(ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
    return [ins[0]]


def numpy_op(fn: Callable[..., Any]) -> Callable[..., list[np.ndarray]]:
    def ref(self: OpDef, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        return [np.asarray(fn(*ins, **attrs))]
    return ref
