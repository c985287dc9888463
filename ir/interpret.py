"""The reference interpreter: runs a module op by op with the registry's numpy semantics.

It is the oracle for every later stage, so it checks everything it can: inputs against the
signature (binding symbolic dims), and every result against the type the IR recorded.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from minicc.errors import InternalError, InterpreterError, MiniccError, RuntimeInputError
from minicc.ir.graph import Function, Module, Op, Value
from minicc.ir.registry import full_attrs, get_op
from minicc.ir.types import DType, TensorType, matches


def check_inputs(f: Function, inputs: Mapping[str, Any]) -> tuple[list[np.ndarray],
                                                                   dict[str, int]]:
    """Match user inputs to the signature by name; returns arrays and symbol bindings."""
    if not isinstance(inputs, Mapping):
        raise RuntimeInputError(f"inputs of @{f.name}: expected a dict of numpy arrays by input "
                                f"name ({', '.join(f.input_names) or 'no inputs'}), got "
                                f"{type(inputs).__name__}")
    missing = [n for n in f.input_names if n not in inputs]
    extra = [n for n in inputs if n not in f.input_names]
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(
                f"'{n}' ({v.type})" for n, v in zip(f.input_names, f.inputs) if n in missing))
        if extra:
            parts.append("unknown " + ", ".join(f"'{n}'" for n in extra))
        raise RuntimeInputError(f"inputs do not match @{f.name}: {'; '.join(parts)}. "
                                f"Expected: {', '.join(f.input_names) or 'no inputs'}")
    bindings: dict[str, int] = {}
    arrays = []
    for name, v in zip(f.input_names, f.inputs):
        a = inputs[name]
        if not isinstance(a, np.ndarray):
            arr = None
            if isinstance(a, (int, float, bool, np.generic, list, tuple)):
                try:
                    arr = np.asarray(a)
                except ValueError:  # a ragged nested list
                    pass
            if arr is None:
                raise RuntimeInputError(f"input '{name}': expected a numpy array of {v.type}, got "
                                        f"{_describe(a)}")
            a = arr
        if v.type.dtype == DType.STR and a.dtype.kind in "US":   # np.array(["a", "b"])
            a = a.astype(object)
        why = matches(v.type, a, bindings)
        if why:
            raise RuntimeInputError(f"input '{name}': got {why}")
        arrays.append(a)
    return arrays, bindings


def _describe(a: Any) -> str:
    if isinstance(a, (list, tuple)):
        return f"a ragged {type(a).__name__} (nested lengths differ)"
    return type(a).__name__


def _bind_dims(attrs: dict[str, Any], kind: str, bindings: Mapping[str, int]) -> dict[str, Any]:
    """Replace symbolic dims in `dims` attributes by their run-time values."""
    spec = get_op(kind).attrs
    for k, s in spec.items():
        if s.type == "dims" and k in attrs:
            attrs[k] = tuple(bindings.get(d, -1) if isinstance(d, str) else d for d in attrs[k])
    return attrs


def _check_result(op: Op, k: int, t: TensorType, a: np.ndarray, bindings: dict[str, int]) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != t.dtype.np or a.ndim != t.rank or any(
            isinstance(d, int) and d != n for d, n in zip(t.shape, a.shape)):
        got = f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
        raise InternalError(f"interpreter: {op.describe()} result {k} is {got} but its type is "
                            f"{t}; the op's inference and reference disagree (please report)")
    for d, n in zip(t.shape, a.shape):
        if isinstance(d, str) and d != "?":
            bindings.setdefault(d, n)


def run_function(f: Function, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays, bindings = check_inputs(f, inputs)
    env: dict[Value, np.ndarray] = dict(zip(f.inputs, arrays))
    last_use: dict[Value, int] = {}
    for i, op in enumerate(f.ops):
        for v in op.inputs:
            last_use[v] = i
    keep = set(f.outputs)
    for i, op in enumerate(f.ops):
        d = get_op(op.kind)
        attrs = _bind_dims(full_attrs(op.kind, op.attrs), op.kind, bindings)
        args = [env[v] for v in op.inputs]
        try:
            results = d.reference(args, attrs)
        except MiniccError as e:
            raise type(e)(f"{op.describe()}: {e}") from None
        except (ValueError, IndexError, TypeError, FloatingPointError, MemoryError) as e:
            shapes = ", ".join(f"{TensorType.of(a)}" if a.dtype != object else "?" for a in args)
            raise InterpreterError(f"{op.describe()} failed on ({shapes}): {e}") from e
        for k, (v, a) in enumerate(zip(op.outputs, results)):
            a = np.asarray(a)
            _check_result(op, k, v.type, a, bindings)
            env[v] = a
        for v in op.inputs:  # free intermediates after their last use
            if last_use.get(v) == i and v not in keep and v not in f.inputs:
                env.pop(v, None)
    return {n: env[v] for n, v in zip(f.output_names, f.outputs)}


def interpret(module: Module, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run the module's main function. `inputs` maps input names to arrays; returns outputs by
    name. Raises RuntimeInputError for a missing, unknown or ill-typed input."""
    return run_function(module.main, inputs)


def random_inputs(f: Function, seed: int = 0, dims: Mapping[str, int] | None = None
                  ) -> dict[str, np.ndarray]:
    """Random inputs matching the signature (symbolic dims default to 1, or `dims`)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, v in zip(f.input_names, f.inputs):
        shape = tuple(d if isinstance(d, int) else (dims or {}).get(d, 1) for d in v.type.shape)
        dt = v.type.dtype
        if dt.is_float:
            a = rng.standard_normal(shape).astype(dt.np)
        elif dt == DType.BOOL:
            a = rng.random(shape) < 0.5
        else:
            a = rng.integers(0, 4, size=shape).astype(dt.np)
        out[name] = a
    return out
