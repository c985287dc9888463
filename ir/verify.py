"""The verifier: structural and type invariants of a module, with errors naming the op.

Checks: every operand is defined before use, no value is defined twice, ops are registered with
the right arity and valid attributes, recorded result types agree with inference, and results
are defined.
"""

from __future__ import annotations

from minicc.errors import MiniccError, VerificationError
from minicc.ir.graph import Function, Module, Op, Value
from minicc.ir.registry import canonical_attrs, infer_types
from minicc.ir.types import UNKNOWN, TensorType


def _refines(recorded: TensorType, inferred: TensorType) -> bool:
    """The recorded type may be more precise than inference ('?' -> a dim), never different."""
    if recorded.dtype != inferred.dtype or recorded.rank != inferred.rank:
        return False
    return all(a == b or b == UNKNOWN for a, b in zip(recorded.shape, inferred.shape))


def verify_function(f: Function) -> None:
    where = f"@{f.name}"
    defined: set[Value] = set()

    def fail(op: Op | None, msg: str) -> VerificationError:
        what = op.describe() if op is not None else "function signature"
        return VerificationError(f"verification failed in {where}: {what}: {msg}")

    if len(set(f.input_names)) != len(f.input_names):
        raise fail(None, f"duplicate input names {list(f.input_names)}")
    if len(set(f.output_names)) != len(f.output_names):
        raise fail(None, f"duplicate output names {list(f.output_names)}")
    for v in f.inputs:
        if v in defined:
            raise fail(None, f"input %{v.name_hint} listed twice")
        defined.add(v)
    for op in f.ops:
        for k, v in enumerate(op.inputs):
            if v not in defined:
                raise fail(op, f"operand {k} (%{v.name_hint or '?'}) is used before it is "
                               "defined")
        try:
            attrs = canonical_attrs(op.kind, op.attrs)
            inferred = infer_types(op.kind, [v.type for v in op.inputs], attrs)
        except MiniccError as e:
            raise fail(op, str(e)) from None
        if len(inferred) != len(op.outputs):
            raise fail(op, f"has {len(op.outputs)} results, the op defines {len(inferred)}")
        for k, (v, t) in enumerate(zip(op.outputs, inferred)):
            if not _refines(v.type, t):
                raise fail(op, f"result {k} is recorded as {v.type} but the operands give {t}")
            if v in defined:
                raise fail(op, f"result %{v.name_hint or '?'} is defined twice")
            defined.add(v)
    for k, v in enumerate(f.outputs):
        if v not in defined:
            raise fail(None, f"result {k} (%{v.name_hint or '?'}) is never defined")


def verify_module(m: Module) -> None:
    names = [f.name for f in m.functions]
    if len(set(names)) != len(names):
        raise VerificationError(f"verification failed: duplicate function names {names}")
    for f in m.functions:
        verify_function(f)
