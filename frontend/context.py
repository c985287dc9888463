"""What a converter sees of one ONNX node: its operands as IR values, attributes with defaults,
constant and shape-valued operands, and an `op` helper that builds IR with the node's names and
location (folding constants and tracking symbolic shape values as it goes)."""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from minicc.errors import (FrontendError, MiniccError, NeedsConstantError, ResourceError,
                           UnsupportedFeatureError)
from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import SourceLoc, Value
from minicc.ir.registry import canonical_attrs, infer_types
from minicc.ir.types import UNKNOWN, Dim, DType, TensorType

ONNX_TO_DTYPE = {
    onnx.TensorProto.FLOAT: DType.F32, onnx.TensorProto.DOUBLE: DType.F64,
    onnx.TensorProto.FLOAT16: DType.F16, onnx.TensorProto.INT8: DType.I8,
    onnx.TensorProto.INT16: DType.I16, onnx.TensorProto.INT32: DType.I32,
    onnx.TensorProto.INT64: DType.I64, onnx.TensorProto.UINT8: DType.U8,
    onnx.TensorProto.UINT16: DType.U16, onnx.TensorProto.UINT32: DType.U32,
    onnx.TensorProto.UINT64: DType.U64, onnx.TensorProto.BOOL: DType.BOOL,
    onnx.TensorProto.BFLOAT16: DType.BF16, onnx.TensorProto.FLOAT8E4M3FN: DType.F8E4M3FN,
    onnx.TensorProto.FLOAT8E4M3FNUZ: DType.F8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2: DType.F8E5M2,
    onnx.TensorProto.FLOAT8E5M2FNUZ: DType.F8E5M2FNUZ,
    onnx.TensorProto.FLOAT8E8M0: DType.F8E8M0, onnx.TensorProto.FLOAT4E2M1: DType.F4E2M1,
    onnx.TensorProto.INT4: DType.I4, onnx.TensorProto.UINT4: DType.U4,
    onnx.TensorProto.INT2: DType.I2, onnx.TensorProto.UINT2: DType.U2,
    onnx.TensorProto.STRING: DType.STR,
}


def onnx_dtype(code: int, where: str) -> DType:
    try:
        return ONNX_TO_DTYPE[code]
    except KeyError:
        name = onnx.TensorProto.DataType.Name(code) if code in onnx.TensorProto.DataType.values() \
            else str(code)
        raise FrontendError(f"{where}: element type {name} is not supported (supported: "
                            + ", ".join(sorted(d.value for d in ONNX_TO_DTYPE.values())) + ")"
                            ) from None


@functools.lru_cache(maxsize=None)
def _schema_attr_types(domain: str, op_type: str, opset: int) -> dict[str, int]:
    """Attribute types (AttributeProto.AttributeType) the ONNX schema declares for an op."""
    if domain not in ("", "ai.onnx"):
        return {}
    try:
        schema = onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return {}
    return {k: int(a.type) for k, a in schema.attributes.items()}


class GraphState:
    """Import state shared by all nodes: tensor names to values, builder, shape values."""

    def __init__(self, builder: GraphBuilder, opset: int):
        self.b = builder
        self.opset = opset
        self.env: dict[str, Value] = {}
        self.shape_vals: dict[Value, tuple[Dim, ...]] = {}   # 1-D i64 values known as dims
        self.origin: dict[Value, frozenset[str]] = {}        # graph inputs each value depends on
        self.unavailable: dict[str, str] = {}  # optional outputs no converter produces -> node
        self.fallback: Any = None   # frontend.fallback.Fallback: nodes onnx's reference runs

    def depends_on_inputs(self, v: Value) -> frozenset[str]:
        return self.origin.get(v, frozenset())


class NodeContext:
    def __init__(self, state: GraphState, node: onnx.NodeProto):
        self.s = state
        self.node = node
        self.opset = state.opset
        self.name = node.name or (node.output[0] if node.output else node.op_type)
        self.loc = SourceLoc(self.name, node.op_type)
        self._attrs = {a.name: a for a in node.attribute}

    # -- errors --
    def error(self, msg: str) -> FrontendError:
        return FrontendError(f"{self.node.op_type} node '{self.name}': {msg}")

    def unsupported(self, msg: str) -> UnsupportedFeatureError:
        """A valid use of the op that the converter does not cover: the node may still run on
        the host through onnx's reference (frontend/fallback.py)."""
        return UnsupportedFeatureError(f"{self.node.op_type} node '{self.name}': {msg}")

    # -- operands --
    @property
    def n_inputs(self) -> int:
        n = len(self.node.input)
        while n and not self.node.input[n - 1]:
            n -= 1
        return n

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and bool(self.node.input[i])

    def input(self, i: int) -> Value:
        if not self.has(i):
            raise self.error(f"input {i} is required")
        name = self.node.input[i]
        if name in self.s.unavailable:
            raise self.error(f"uses '{name}', an output of {self.s.unavailable[name]} that is "
                             "not supported (only the main output is)")
        v = self.s.env[name]
        if not isinstance(v, Value):       # a sequence held by the importer (sequence.py)
            raise self.error(f"input {i} ('{name}') is a sequence; only the Sequence ops "
                             "take one")
        return v

    def opt(self, i: int) -> Value | None:
        return self.input(i) if self.has(i) else None

    def inputs(self) -> list[Value]:
        return [self.input(i) for i in range(self.n_inputs)]

    def type(self, i: int) -> TensorType:
        return self.input(i).type

    def const(self, i: int) -> np.ndarray | None:
        """The operand's value when known at compile time."""
        if not self.has(i):
            return None
        return self.s.b.const_value(self.input(i))

    def require_const(self, i: int, what: str) -> np.ndarray:
        v = self.const(i)
        if v is not None:
            return v
        self._needs(i, what)
        raise AssertionError  # unreachable

    def dims(self, i: int, what: str) -> tuple[Dim, ...]:
        """A 1-D int operand that describes a shape: constant, or symbolic (from Shape ops)."""
        c = self.const(i)
        if c is not None:
            return tuple(int(x) for x in np.asarray(c).reshape(-1))
        v = self.input(i)
        sv = self.s.shape_vals.get(v)
        if sv is not None and UNKNOWN not in sv:
            return sv
        self._needs(i, what)
        raise AssertionError

    def _needs(self, i: int, what: str) -> None:
        v = self.input(i)
        deps = self.s.depends_on_inputs(v)
        if deps:
            raise NeedsConstantError(
                self.error(f"{what} (input {i}, '{self.node.input[i]}') must be known at "
                           f"compile time, but it is computed from graph input(s) "
                           f"{', '.join(sorted(deps))}. Bind them to values (input_values= / "
                           f"`--input-value`) or give static input shapes").args[0],
                tuple(sorted(deps)))
        raise self.error(f"{what} (input {i}, '{self.node.input[i]}') must be known at compile "
                         "time but depends on symbolic dims; give static input shapes "
                         "(input_shapes= / `--input-shape`)")

    # -- attributes --
    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def attr(self, name: str, default: Any = None) -> Any:
        a = self._attrs.get(name)
        if a is None:
            return default
        try:
            v = onnx.helper.get_attribute_value(a)
        except Exception as e:  # noqa: BLE001  (protobuf raises assorted errors on bad attributes)
            raise self.error(f"attribute '{name}' is malformed: {e}") from None
        want = _schema_attr_types(self.node.domain, self.node.op_type, self.opset).get(name)
        if v is None or (want is not None and a.type != want):
            got = onnx.AttributeProto.AttributeType.Name(a.type)
            should = f"; the {self.node.op_type}-{self.opset} schema wants " \
                f"{onnx.AttributeProto.AttributeType.Name(want)}" if want is not None else ""
            raise self.error(f"attribute '{name}' has type {got}{should}. The model is "
                             "malformed; re-export it or fix the attribute")
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        if isinstance(v, list) and v and isinstance(v[0], bytes):
            return [x.decode("utf-8", "replace") for x in v]
        if isinstance(v, onnx.TensorProto):
            return tensor_to_array(v, f"{self.node.op_type} node '{self.name}' attribute {name}")
        if isinstance(v, (onnx.GraphProto,)) or (isinstance(v, list) and v and isinstance(
                v[0], onnx.GraphProto)):
            if self.node.op_type in ("If", "Loop", "Scan"):   # regions (convert/control.py)
                return v
            raise self.error(f"attribute '{name}' holds a subgraph, which a "
                             f"{self.node.op_type} node has no use for")
        return v

    def req_attr(self, name: str) -> Any:
        if name not in self._attrs:
            raise self.error(f"required attribute '{name}' is missing")
        return self.attr(name)

    # -- building --
    def out_name(self, k: int = 0) -> str | None:
        return self.node.output[k] if k < len(self.node.output) and self.node.output[k] else None

    def op(self, kind: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None,
           out: int | None = 0) -> Value:
        """Build `kind` named after node output `out` (None: an internal temporary)."""
        return self.op_n(kind, inputs, attrs, out)[0]

    def op_n(self, kind: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None,
             out: int | None = 0) -> tuple[Value, ...]:
        name: list[str | None] | None = None
        if out is not None:
            name = [self.out_name(k) for k in range(out, len(self.node.output))]
        try:
            sym = self._symbolic(kind, inputs, attrs or {})
            if sym is not None and all(isinstance(d, int) for d in sym):
                t = infer_types(kind, [v.type for v in inputs], canonical_attrs(kind, attrs or {}))
                if t[0].numel == len(sym):
                    arr = np.array(sym, dtype=t[0].dtype.np).reshape(t[0].shape)  # type: ignore
                    return (self.s.b.const(arr, name[0] if name else None, self.loc),)
                sym = None
            outs = self.s.b.op(kind, inputs, attrs, name, self.loc)
        except ResourceError as e:          # keeps its class: over the budget, not malformed
            raise ResourceError(f"{self.node.op_type} node '{self.name}': {e}") from None
        except MiniccError as e:
            raise self.error(str(e)) from None
        deps = frozenset().union(*(self.s.depends_on_inputs(v) for v in inputs))
        for o in outs:
            if deps:
                self.s.origin[o] = deps
            if sym is not None:
                self.s.shape_vals[o] = sym
        return outs

    def const_value(self, array: np.ndarray, out: int | None = None) -> Value:
        return self.s.b.const(array, self.out_name(out) if out is not None else None, self.loc)

    def scalar(self, value: Any, dtype: DType) -> Value:
        return self.s.b.const(np.array(value, dtype=dtype.np))

    def _symbolic(self, kind: str, inputs: Sequence[Value], attrs: Mapping[str, Any]
                  ) -> tuple[Dim, ...] | None:
        """Evaluate small integer ops over shape values whose entries may be symbols."""
        if not inputs or kind not in _SYM_KINDS:
            return None
        vals = []
        for v in inputs:
            c = self.s.b.const_value(v)
            if c is not None:
                if c.dtype.kind not in "iu" or c.ndim > 1 or c.size > 16:
                    return None
                vals.append(np.array([int(x) for x in c.reshape(-1)], dtype=object).reshape(
                    c.shape))
            elif v in self.s.shape_vals:
                vals.append(np.array(self.s.shape_vals[v], dtype=object))
            else:
                return None
        if not any(v in self.s.shape_vals for v in inputs):
            return None  # all constant: the builder folds it
        return _sym_eval(kind, vals, attrs)


_SYM_KINDS = {"gather", "concat", "reshape", "slice", "cast", "add", "sub", "mul", "div",
              "max", "min"}


def _sym_eval(kind: str, vals: list[np.ndarray], attrs: Mapping[str, Any]
              ) -> tuple[Dim, ...] | None:
    try:
        if kind == "gather":
            out = np.take(vals[0], vals[1].astype(np.int64), axis=attrs.get("axis", 0))
        elif kind == "concat":
            out = np.concatenate([v.reshape(-1) for v in vals])
        elif kind == "cast" and not DType.parse(str(attrs["to"])).is_int:
            return None
        elif kind in ("reshape", "cast"):
            out = vals[0]
        elif kind == "slice":
            (st,), (en,) = attrs["starts"], attrs["ends"]
            step = (attrs.get("steps") or (1,))[0]
            out = vals[0][st:en:step]
        else:
            a, b = np.broadcast_arrays(vals[0].reshape(-1), vals[1].reshape(-1))
            res = []
            for x, y in zip(a, b):
                if isinstance(x, int) and isinstance(y, int):
                    res.append({"add": x + y, "sub": x - y, "mul": x * y,
                                "div": int(x / y) if y else UNKNOWN, "max": max(x, y),
                                "min": min(x, y)}[kind])
                elif kind == "mul" and (x == 1 or y == 1):
                    res.append(y if x == 1 else x)
                elif kind in ("add", "sub") and y == 0:
                    res.append(x)
                elif kind == "div" and y == 1:
                    res.append(x)
                else:
                    res.append(UNKNOWN)
            out = np.array(res, dtype=object)
    except (IndexError, ValueError, KeyError, TypeError):
        return None
    out = np.asarray(out, dtype=object)
    if out.ndim > 1:
        return None
    return tuple(x if isinstance(x, str) else int(x) for x in out.reshape(-1))


def tensor_to_array(t: onnx.TensorProto, where: str) -> np.ndarray:
    """TensorProto to numpy, with the element type checked (external data already loaded)."""
    onnx_dtype(t.data_type, where)
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001  (onnx raises ValueError/TypeError/protobuf errors)
        raise FrontendError(f"{where}: cannot decode tensor '{t.name}': {e}") from None
    expected = int(np.prod(t.dims)) if len(t.dims) else 1
    if a.size != expected:
        raise FrontendError(f"{where}: tensor '{t.name}' has {a.size} elements but dims "
                            f"{list(t.dims)} need {expected}")
    return a
