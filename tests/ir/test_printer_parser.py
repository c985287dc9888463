"""IR text: printing, parsing, names, constants, and parse errors with line:col."""

from __future__ import annotations

import numpy as np
import pytest

from minicc.errors import ParseError, VerificationError
from minicc.ir import DType, TensorType
from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Module
from minicc.ir.interpret import interpret
from minicc.ir.parser import parse
from minicc.ir.printer import print_module

TEXT = """\
func @main(%x: f32[1,64], %w: f32[64,10]) -> (f32[1,10]) {
  %mm = matmul(%x, %w) : f32[1,10]
  %y = relu(%mm) : f32[1,10]
  return %y
}
"""


def test_style_example_round_trips() -> None:
    assert print_module(parse(TEXT)) == TEXT


def test_names_stable_and_deduplicated() -> None:
    b = GraphBuilder()
    x = b.input(TensorType(DType.F32, (4,)), "x")
    a = b.op1("exp", [x], name="x")          # collides with the input
    c = b.op1("exp", [a], name="x_1")        # collides with the generated name
    d = b.op1("exp", [c])                    # no hint: numbered
    m = Module((b.finish([d], ["out"]),))
    text = print_module(m)
    assert "%x_1 = exp(%x)" in text and "%x_1_1 = exp(%x_1)" in text and "%0 = exp" in text
    assert print_module(parse(text)) == text


def test_public_names_survive() -> None:
    b = GraphBuilder()
    x = b.input(TensorType(DType.F32, ("N", 3)), "gpu_0/data_0")
    y = b.op1("relu", [x], name="prob")
    text = print_module(Module((b.finish([y], ["gpu_0/softmax_1"]),)))
    assert '%gpu_0_data_0: f32[N,3] {name="gpu_0/data_0"}' in text
    assert '-> (f32[N,3] {name="gpu_0/softmax_1"})' in text
    m = parse(text)
    assert m.main.input_names == ("gpu_0/data_0",)
    assert m.main.output_names == ("gpu_0/softmax_1",)


def test_constants_dense_splat_blob() -> None:
    b = GraphBuilder()
    x = b.input(TensorType(DType.F32, (2, 20)), "x")
    small = b.const(np.array([1.5, -0.0, np.inf, 1e-30], dtype=np.float32), "small")
    ints = b.const(np.array([1, -1], dtype=np.int64), "shape")
    splat = b.const(np.broadcast_to(np.float32(0.02), (2, 20)), "s")
    blob = b.const(np.arange(40, dtype=np.float32).reshape(2, 20), "w")
    y = b.op1("add", [b.op1("mul", [x, splat]), blob])
    m = Module((b.finish([y, small, ints], ["y", "small", "ints"]),))
    text = print_module(m)
    assert "dense<[1.5, -0.0, inf, 1e-30]>" in text
    assert "const dense<[1, -1]> : i64[2]" in text
    assert "splat<0.02> : f32[2,20]" in text
    assert 'blob<"' in text
    m2 = parse(text, weights=m.weights())
    assert print_module(m2) == text
    xv = np.ones((2, 20), np.float32)
    np.testing.assert_array_equal(interpret(m2, {"x": xv})["y"], interpret(m, {"x": xv})["y"])


def test_blob_without_weights_parses_but_cannot_run() -> None:
    b = GraphBuilder()
    w = b.const(np.arange(40, dtype=np.float32), "w")
    m = Module((b.finish([w], ["w"]),))
    m2 = parse(print_module(m))          # no weights given
    assert print_module(m2) == print_module(m)
    with pytest.raises(Exception, match="has no data"):
        interpret(m2, {})


def test_attributes_round_trip() -> None:
    text = """\
func @main(%x: f32[1,2,8,8]) -> (f32[1,2,4,4]) {
  %p = max_pool(%x) {ceil_mode=true, kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2]} : f32[1,2,4,4]
  %c = cast(%p) {to=f16} : f16[1,2,4,4]
  %d = cast(%c) {to=f32} : f32[1,2,4,4]
  %e = gelu(%d) {approximate="tanh"} : f32[1,2,4,4]
  %f = clip(%e) {max=6.0, min=-inf} : f32[1,2,4,4]
  return %f
}
"""
    out = print_module(parse(text))
    # explicit defaults (min=-inf) are dropped: the canonical form prints only non-defaults
    assert "min=-inf" not in out and "max=6.0" in out
    assert print_module(parse(out)) == out


@pytest.mark.parametrize("text,line,col,msg", [
    ("func @main(%x: f32[2]) -> (f32[2]) {\n  %y = exp(%z) : f32[2]\n  return %y\n}", 2, 12,
     "undefined value %z"),
    ("func @main(%x: f32[2]) -> (f32[2]) {\n  %y = frob(%x) : f32[2]\n  return %y\n}", 2, 8,
     "unknown op 'frob'"),
    ("func @main(%x: f32[2]) -> (f32[2]) {\n  %y = exp(%x) : q32[2]\n  return %y\n}", 2, 18,
     "unknown element type 'q32'"),
    ("func @main(%x: f32[2]) -> (f32[2]) {\n  %y = exp(%x) f32[2]\n  return %y\n}", 2, 16,
     "expected ':'"),
    ("func @main(%x: f32[2]) -> (f32[2]) {\n  %x = exp(%x) : f32[2]\n  return %x\n}", 2, 3,
     "defined twice"),
    ("func @main(%x: f32[2]) -> (f32[2]) {\n  %y = exp(%x) : f32[2]\n  return %y\n", 4, 1,
     "end of input"),
    ("func @main(%x: f32[2]) -> (f32[2]) {\n  %y = exp(%x) {bogus=1} : f32[2]\n  return %y\n}",
     2, 8, "unknown attribute 'bogus'"),
    ("func @main(%x: f32[2]) -> (f32[3]) {\n  %y = exp(%x) : f32[2]\n  return %y\n}", 3, 3,
     "declared f32[3]"),
    ("func @main() -> (i64[2]) {\n  %c = const dense<[1, 2, 3]> : i64[2]\n  return %c\n}", 2,
     14, "3 elements"),
])
def test_parse_errors_point_at_the_problem(text: str, line: int, col: int, msg: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse(text, path="t.mir")
    e = ei.value
    assert (e.line, e.col) == (line, col), str(e)
    assert msg in str(e) and f"t.mir:{line}:{col}" in str(e) and "^" in str(e)


def test_verifier_catches_type_mismatch_from_text() -> None:
    text = "func @main(%x: f32[2]) -> (f32[3]) {\n  %y = exp(%x) : f32[3]\n  return %y\n}"
    with pytest.raises(VerificationError, match=r"'exp' op defining %y.*recorded as f32\[3\] "
                                                r"but the operands give f32\[2\]"):
        parse(text)
