"""The verifier names the op and the problem."""

from __future__ import annotations

import pytest

from minicc.errors import VerificationError
from minicc.ir import Attrs, DType, Function, Module, Op, TensorType, Value
from minicc.ir.verify import verify_module

F2 = TensorType(DType.F32, (2,))


def _fn(ops: list[Op], inputs: list[Value], outputs: list[Value]) -> Module:
    return Module((Function("main", tuple(inputs), tuple(ops), tuple(outputs),
                            tuple(f"in{i}" for i in range(len(inputs))),
                            tuple(f"out{i}" for i in range(len(outputs)))),))


def test_use_before_definition() -> None:
    x, a, b = Value(F2, "x"), Value(F2, "a"), Value(F2, "b")
    m = _fn([Op("exp", (a,), (b,)), Op("exp", (x,), (a,))], [x], [b])
    with pytest.raises(VerificationError, match=r"'exp' op defining %b: operand 0 \(%a\) is used "
                                                r"before it is defined"):
        verify_module(m)


def test_wrong_arity() -> None:
    x, y = Value(F2, "x"), Value(F2, "y")
    with pytest.raises(VerificationError, match=r"'add' op defining %y: op 'add' takes 2 "
                                                r"operands, got 1"):
        verify_module(_fn([Op("add", (x,), (y,))], [x], [y]))


def test_bad_attribute() -> None:
    x, y = Value(F2, "x"), Value(TensorType(DType.F32, (2,)), "y")
    op = Op("leaky_relu", (x,), (y,), Attrs(alpha="big"))
    with pytest.raises(VerificationError, match=r"attribute 'alpha' must be a float"):
        verify_module(_fn([op], [x], [y]))
    op = Op("relu", (x,), (y,), Attrs(alpha=1.0))
    with pytest.raises(VerificationError, match=r"unknown attribute 'alpha'"):
        verify_module(_fn([op], [x], [y]))
    op = Op("transpose", (x,), (y,), Attrs())
    with pytest.raises(VerificationError, match=r"missing required attribute 'perm'"):
        verify_module(_fn([op], [x], [y]))


def test_type_mismatch_and_shape_error() -> None:
    x, y = Value(F2, "x"), Value(TensorType(DType.F64, (2,)), "y")
    with pytest.raises(VerificationError, match=r"recorded as f64\[2\] but the operands give "
                                                r"f32\[2\]"):
        verify_module(_fn([Op("exp", (x,), (y,))], [x], [y]))
    a = Value(TensorType(DType.F32, (3,)), "a")
    z = Value(F2, "z")
    with pytest.raises(VerificationError, match=r"shapes \[2\] and \[3\] do not broadcast"):
        verify_module(_fn([Op("add", (x, a), (z,))], [x, a], [z]))


def test_defined_twice_and_undefined_result() -> None:
    x, y = Value(F2, "x"), Value(F2, "y")
    with pytest.raises(VerificationError, match="defined twice"):
        verify_module(_fn([Op("exp", (x,), (y,)), Op("exp", (x,), (y,))], [x], [y]))
    with pytest.raises(VerificationError, match=r"result 0 \(%y\) is never defined"):
        verify_module(_fn([], [x], [y]))


def test_unknown_op() -> None:
    x, y = Value(F2, "x"), Value(F2, "y")
    with pytest.raises(VerificationError, match="unknown op 'frobnicate'"):
        verify_module(_fn([Op("frobnicate", (x,), (y,))], [x], [y]))
