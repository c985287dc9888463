"""GraphBuilder: the one way to make functions. It validates attributes against the registry,
infers result types, and (optionally) folds ops whose operands are all constants."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from minicc import resources
from minicc.errors import MiniccError, VerificationError
from minicc.ir.graph import Attrs, ConstData, Function, Op, SourceLoc, Value
from minicc.ir.registry import canonical_attrs, full_attrs, get_op, infer_types
from minicc.ir.types import TensorType

_BAD = re.compile(r"[^A-Za-z0-9_.]")
FOLD_LIMIT = 1 << 16  # elements: fold small constant subgraphs only (shape math, not weights)
_MOVES = frozenset({"reshape", "transpose", "broadcast_to", "tile", "slice"})


def sanitize(name: str | None) -> str | None:
    """Make an ONNX tensor name a legal IR name hint ([A-Za-z_][A-Za-z0-9_.]*)."""
    if not name:
        return None
    s = _BAD.sub("_", name).strip("_.")
    s = re.sub(r"_+", "_", s)
    if not s:
        return None
    if not (s[0].isalpha() or s[0] == "_"):
        s = "v" + s
    return s


class GraphBuilder:
    """Accumulates ops in definition order; `finish` returns an immutable Function.

    With `fold=True`, an op whose operands are all constants is evaluated with its numpy reference
    and replaced by a constant when the result is small (FOLD_LIMIT elements) or a splat.
    """

    def __init__(self, name: str = "main", *, fold: bool = False):
        self.name = name
        self.fold = fold
        self.fold_limit = FOLD_LIMIT
        self.ops: list[Op] = []
        self.inputs: list[Value] = []
        self.input_names: list[str] = []
        self._const_of: dict[Value, ConstData] = {}

    def input(self, type: TensorType, name: str) -> Value:
        v = Value(type, sanitize(name))
        self.inputs.append(v)
        self.input_names.append(name)
        return v

    def const(self, array: np.ndarray | ConstData, name: str | None = None,
              loc: SourceLoc | None = None) -> Value:
        data = array if isinstance(array, ConstData) else ConstData(np.asarray(array))
        v = Value(data.type, sanitize(name))
        self.ops.append(Op("const", (), (v,), Attrs(value=data), loc))
        self._const_of[v] = data
        return v

    def const_value(self, v: Value) -> np.ndarray | None:
        """The data of `v` if it is a constant defined in this builder."""
        c = self._const_of.get(v)
        return None if c is None else c.array

    def op(self, kind: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None,
           names: Sequence[str | None] | str | None = None,
           loc: SourceLoc | None = None) -> tuple[Value, ...]:
        """Append `kind(inputs) {attrs}`; returns the result values."""
        at = canonical_attrs(kind, attrs or {})
        types = infer_types(kind, [v.type for v in inputs], at)
        for t in types:
            if t.is_static and (t.numel or 0) * t.dtype.itemsize > resources.budget():
                resources.check((t.numel or 0) * t.dtype.itemsize, f"op '{kind}': its result {t}")
        if isinstance(names, str) or names is None:
            base = names
            names = [base if i == 0 else (f"{base}_{i}" if base else None)
                     for i in range(len(types))]
        names = list(names) + [None] * (len(types) - len(names))
        if self.fold and kind != "const" and inputs and all(v in self._const_of
                                                            for v in inputs):
            folded = self._try_fold(kind, inputs, at, types, names, loc)
            if folded is not None:
                return folded
        outs = tuple(Value(t, sanitize(n)) for t, n in zip(types, names))
        self.ops.append(Op(kind, tuple(inputs), outs, at, loc))
        return outs

    def op1(self, kind: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None,
            name: str | None = None, loc: SourceLoc | None = None) -> Value:
        outs = self.op(kind, inputs, attrs, name, loc)
        if len(outs) != 1:
            raise VerificationError(f"op '{kind}' has {len(outs)} results; use op()")
        return outs[0]

    def _try_fold(self, kind: str, inputs: Sequence[Value], at: Attrs, types: list[TensorType],
                  names: Sequence[str | None], loc: SourceLoc | None) -> tuple[Value, ...] | None:
        arrays = [self._const_of[v].array for v in inputs]
        if any(a is None for a in arrays) or not all(t.is_static for t in types):
            return None  # missing data, or a result whose shape is only known at run time
        small = all((t.numel or self.fold_limit + 1) <= self.fold_limit for t in types)
        splats = all(self._const_of[v].is_splat or self._const_of[v].type.numel == 1
                     for v in inputs)
        if not (small or (splats and (get_op(kind).kind <= 1 or kind in _MOVES))):
            return None
        if not small and kind in _MOVES and len(arrays) == 1:  # moving a splat keeps it a splat
            a0 = arrays[0]
            return (self.const(np.broadcast_to(a0.reshape(-1)[:1].reshape(()),  # type: ignore
                                               types[0].shape), names[0], loc),)  # type: ignore
        if not small:  # elementwise over splats: compute one element, keep the result a splat
            arrays = [a.reshape(-1)[:1].reshape((1,) * a.ndim) for a in arrays]  # type: ignore
        try:
            results = get_op(kind).reference(arrays, full_attrs(kind, at))  # type: ignore
        except MiniccError:
            return None  # leave it to run time, where the error will name the op
        outs = []
        for r, t, n in zip(results, types, names):
            r = np.asarray(r)
            if not small:
                r = np.broadcast_to(r, t.shape)  # type: ignore[arg-type]
            if r.dtype != t.dtype.np or tuple(r.shape) != t.shape:
                return None
            outs.append(self.const(r, n, loc))
        return tuple(outs)

    def add(self, op: Op) -> None:
        """Append an existing op (its values are reused as they are)."""
        self.ops.append(op)
        if op.kind == "const":
            self._const_of[op.output] = op.attrs["value"]

    def finish(self, outputs: Sequence[Value], output_names: Sequence[str]) -> Function:
        return Function(self.name, tuple(self.inputs), tuple(self.ops), tuple(outputs),
                        tuple(self.input_names), tuple(output_names))
