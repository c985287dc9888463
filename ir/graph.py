"""The graph IR: SSA values, ops with typed attributes, functions and modules.

Everything here is immutable. A value's identity is the object (two values with the same name hint
are different values); passes build new functions through `ir.builder.GraphBuilder`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterator, Mapping

import numpy as np

from minicc.errors import VerificationError
from minicc.ir.types import DType, TensorType


@dataclass(frozen=True, slots=True, eq=False)
class Value:
    """An SSA value. Identity is by object; `name_hint` only guides printing."""

    type: TensorType
    name_hint: str | None = None

    def __repr__(self) -> str:
        return f"Value(%{self.name_hint or '?'}: {self.type})"


@dataclass(frozen=True, slots=True)
class SourceLoc:
    """Where an op came from: the ONNX node name and op type (kept through passes)."""

    node: str
    op_type: str = ""

    def __str__(self) -> str:
        return f"{self.op_type} node '{self.node}'" if self.op_type else f"node '{self.node}'"


DENSE_LIMIT = 16  # constants this small are stored as ordinary arrays and printed inline


class ConstData:
    """An immutable tensor constant (a weight). Equality and hash go by dtype, shape and digest.

    `array` is None for a constant parsed from text whose weights were not supplied: it keeps its
    type and digest, so it prints and verifies, but cannot be executed.
    A splat (one value broadcast to the whole shape, as ONNX ConstantOfShape makes) is stored as a
    zero-stride view and never materialized.
    """

    __slots__ = ("array", "type", "_digest")

    def __init__(self, array: np.ndarray | None, type: TensorType | None = None,
                 digest: str | None = None, *, copy: bool = True):
        if array is not None:
            array = np.asarray(array)
            if is_splat_array(array) and array.size > DENSE_LIMIT:
                array = np.broadcast_to(array.reshape(-1)[:1].copy(), array.shape)
            elif copy or not array.flags.c_contiguous:
                array = np.array(array, order="C", copy=True)
            array.flags.writeable = False
            type = TensorType.of(array)
        if type is None:
            raise VerificationError("constant without data needs a type")
        self.array = array
        self.type = type
        self._digest = digest

    @staticmethod
    def splat(value: Any, type: TensorType) -> ConstData:
        scalar = np.array(value, dtype=type.dtype.np)
        arr = np.broadcast_to(scalar, tuple(type.shape))  # type: ignore[arg-type]
        return ConstData(arr)

    @property
    def is_splat(self) -> bool:
        return self.array is not None and is_splat_array(self.array)

    @property
    def splat_value(self) -> Any:
        assert self.array is not None
        return self.array.reshape(-1)[0] if self.array.size else None

    @property
    def digest(self) -> str:
        if self._digest is None:
            assert self.array is not None
            h = hashlib.blake2b(digest_size=8)
            h.update(str(self.type).encode())
            if self.array.dtype == object:           # strings: their text, not pointers
                h.update(repr(self.array.reshape(-1).tolist()).encode())
            elif self.is_splat and self.array.size > 1:
                h.update(b"splat")
                h.update(np.ascontiguousarray(self.array.reshape(-1)[:1]).tobytes())
            else:
                h.update(np.ascontiguousarray(self.array).tobytes())
            self._digest = h.hexdigest()
        return self._digest

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ConstData) and self.type == other.type
                and self.digest == other.digest)

    def __hash__(self) -> int:
        return hash((self.type, self.digest))

    def __repr__(self) -> str:
        return f"ConstData({self.type}, {self.digest})"


def is_splat_array(a: np.ndarray) -> bool:
    return a.size > 1 and all(s == 0 for s in a.strides)


AttrValue = Any  # int | float | str | bool | DType | ConstData | Function | tuple of those


def normalize_attr(v: Any) -> AttrValue:
    """Turn lists into tuples and numpy scalars into Python scalars so attributes hash."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(normalize_attr(x) for x in v)
    if isinstance(v, (str, DType, ConstData, Function)):
        return v
    raise VerificationError(f"attribute value {v!r} of type {type(v).__name__} is not supported")


class Attrs(Mapping[str, AttrValue]):
    """Frozen, hashable attribute dictionary, iterated in sorted key order."""

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[str, Any] | None = None, **kw: Any):
        d = dict(items or {}, **kw)
        self._items = tuple(sorted((k, normalize_attr(v)) for k, v in d.items()))
        self._hash: int | None = None

    def __getitem__(self, key: str) -> AttrValue:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._items)
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Attrs):
            return self._items == other._items
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return f"Attrs({dict(self._items)})"

    def replace(self, **kw: Any) -> Attrs:
        return Attrs({**dict(self._items), **kw})


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: `outputs = kind(inputs) {attrs}`. `loc` is ignored by equality."""

    kind: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: Attrs = field(default_factory=Attrs)
    loc: SourceLoc | None = field(default=None, compare=False)

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise VerificationError(f"op '{self.kind}' has {len(self.outputs)} outputs, not 1")
        return self.outputs[0]

    def describe(self) -> str:
        name = self.outputs[0].name_hint if self.outputs else None
        where = f" ({self.loc})" if self.loc else ""
        return f"'{self.kind}' op defining %{name or '?'}{where}"


@dataclass(frozen=True, eq=False)
class Function:
    """A function: named inputs, ops in definition order, and named results.

    `input_names` / `output_names` are the public names users pass inputs and get outputs by
    (the ONNX tensor names); printed value names are only hints.
    """

    name: str
    inputs: tuple[Value, ...]
    ops: tuple[Op, ...]
    outputs: tuple[Value, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.input_names) != len(self.inputs) or len(self.output_names) != len(self.outputs):
            raise VerificationError(f"function @{self.name}: names do not match inputs/outputs")

    @cached_property
    def producers(self) -> dict[Value, Op]:
        return {v: op for op in self.ops for v in op.outputs}

    @cached_property
    def users(self) -> dict[Value, list[Op]]:
        u: dict[Value, list[Op]] = {}
        for op in self.ops:
            for v in op.inputs:
                u.setdefault(v, []).append(op)
        return u

    def constants(self) -> Iterator[tuple[Value, ConstData]]:
        for op in self.ops:
            if op.kind == "const":
                yield op.output, op.attrs["value"]

    def replace(self, **kw: Any) -> Function:
        d = dict(name=self.name, inputs=self.inputs, ops=self.ops, outputs=self.outputs,
                 input_names=self.input_names, output_names=self.output_names)
        d.update(kw)
        return Function(**d)


@dataclass(frozen=True, eq=False)
class Module:
    """A module: functions, the entry being `main` (or the first one)."""

    functions: tuple[Function, ...]

    @property
    def main(self) -> Function:
        for f in self.functions:
            if f.name == "main":
                return f
        return self.functions[0]

    def with_main(self, fn: Function) -> Module:
        main = self.main
        return Module(tuple(fn if f is main else f for f in self.functions))

    def weights(self) -> dict[str, np.ndarray]:
        """The module's constant data by digest (what `blob<...>` in the text refers to)."""
        out: dict[str, np.ndarray] = {}
        todo = list(self.functions)
        while todo:
            f = todo.pop()
            for op in f.ops:
                if op.kind == "const" and op.attrs["value"].array is not None:
                    out[op.attrs["value"].digest] = op.attrs["value"].array
                todo += [v for v in op.attrs.values() if isinstance(v, Function)]  # regions
        return out

    def __str__(self) -> str:
        from minicc.ir.printer import print_module

        return print_module(self)
