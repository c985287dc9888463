"""The loop IR text parses back: print -> parse -> print is a fixed point and the parsed kernel
is structurally the kernel printed, on hand-written kernels, on random ones (hypothesis) and on
every kernel, before and after scheduling, of real models for both targets."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicc.driver import lower_program
from minicc.errors import ParseError
from minicc.ir.compute import Call, Cast, Const, Expr, Reduce, Select, Var
from minicc.ir.loops.nodes import (Allocate, Barrier, BlockAllReduce, BufLoad, Buffer, For, IfThen,
                                   Kernel, LoopKind, Prefetch, Scope, Stmt, Store, seq)
from minicc.ir.loops.parser import parse_kernel, parse_kernels
from minicc.ir.loops.printer import print_kernel
from minicc.ir.loops.trace import step
from minicc.ir.scalar import SCALARS
from minicc.ir.types import DType

F32, F16, I64, I32, BOOL = DType.F32, DType.F16, DType.I64, DType.I32, DType.BOOL


def struct(x: Any) -> Any:
    """A kernel as nested tuples (buffers by name, type and scope), to compare structure."""
    if isinstance(x, Buffer):
        return ("buf", x.name, x.dtype, x.shape, x.scope)
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (type(x).__name__,) + tuple(struct(getattr(x, f.name))
                                           for f in dataclasses.fields(x) if f.name != "knobs")
    if isinstance(x, (tuple, list)):
        return tuple(struct(v) for v in x)
    return x


def roundtrip(k: Kernel) -> None:
    text = print_kernel(k)
    again = parse_kernel(text)
    assert print_kernel(again) == text
    assert struct(again) == struct(k)


def test_every_statement_and_expression_round_trips() -> None:
    x = Buffer("x", F32, (4, 8))
    y = Buffer("y", F16, (4, 8))
    idx = Buffer("idx", I32, (4,), Scope.SCRATCH)
    acc = Buffer("acc", F32, (16,), Scope.LOCAL)
    red = Buffer("red", F32, (32,), Scope.SHARED)
    i, j, k = Var("i"), Var("j.o"), Var("k.1")
    val = Call("add", (BufLoad(x, (i, j), F32), Const(-1.5e-07, F32)), F32)
    body = seq(
        Store(acc, (Const(0, I64),), Const(float("-inf"), F32)),
        IfThen(Call("lt", (i, Const(-3, I64)), BOOL),
               Store(x, (i, j), Select(Call("isnan", (val,), BOOL), Const(float("nan"), F32),
                                       Reduce("sum", ((k, 3),), val, F32), F32)),
               Store(y, (i, j), Cast(val, F16))),
        Barrier(),
        Prefetch(x, (Call("add", (i, Const(64, I64)), I64), Const(0, I64))),
        BlockAllReduce("max", acc, red),
        Store(idx, (Const(1, I64),), Const(7, I32)),
        Store(y, (i, Call("floordiv", (j, Const(2, I64)), I64)), Const(0.5, F16)))
    loop = For(i, Const(4, I64), For(j, Call("min", (Const(16, I64), i), I64),
                                     Allocate(acc, Allocate(red, body)), LoopKind.VECTOR, 16),
               LoopKind.BLOCK_X)
    kern = Kernel("k7_mixed", (x, y, idx), ("in", "out", "scratch"), loop,
                  (step("split", "j", 16, guard=True), step("bind", "i", "block.x")), {}, 99,
                  "test.rule")
    roundtrip(kern)
    assert "schedule test.rule: split(j, 16, guard=true); bind(i, block.x)" in print_kernel(kern)


def test_repeated_buffer_names_get_unique_ones() -> None:
    a, b = Buffer("t", F32, (2,)), Buffer("t", F32, (2,))
    k = Kernel("k", (a, b), ("in", "out"), For(Var("i"), Const(2, I64),
                                                Store(b, (Var("i"),), BufLoad(a, (Var("i"),),
                                                                              F32))))
    text = print_kernel(k)
    assert "%t_1[i] = %t[i]" in text
    assert print_kernel(parse_kernel(text)) == text


def test_parse_errors_give_line_and_column() -> None:
    text = "kernel k(%a: f32[2] in) flops=0 {\n  %a[0] = (%a[1] ++ 2.0)\n}\n"
    with pytest.raises(ParseError, match=r"<loops>:2:18: unknown operator|<loops>:2:\d+: "):
        parse_kernel(text)
    with pytest.raises(ParseError, match="unknown buffer %b"):
        parse_kernel("kernel k(%a: f32[2] in) {\n  %b[0] = 1.0\n}\n")
    with pytest.raises(ParseError, match="loops start at 0"):
        parse_kernel("kernel k(%a: f32[2] in) {\n  for i in 1..2 {\n  }\n}\n")


# ---- random kernels -------------------------------------------------------------------------

INFIX_F = ["add", "sub", "mul", "div", "min", "max"]
UNARY_F = ["exp", "tanh", "relu", "neg", "sqrt"]


@st.composite
def index_expr(draw: st.DrawFn, vars_: list[str]) -> Expr:
    leaf = st.one_of(st.integers(-5, 40).map(lambda v: Const(v, I64)),
                     st.sampled_from(vars_).map(Var) if vars_ else st.just(Const(0, I64)))
    e = draw(leaf)
    for _ in range(draw(st.integers(0, 2))):
        fn = draw(st.sampled_from(["add", "sub", "mul", "floordiv", "mod", "min"]))
        e = Call(fn, (e, draw(leaf)), I64)
    return e


@st.composite
def value_expr(draw: st.DrawFn, vars_: list[str], bufs: list[Buffer], depth: int = 2) -> Expr:
    f32s = [b for b in bufs if b.dtype == F32]
    kind = draw(st.integers(0, 6 if depth > 0 else 1))
    if kind == 0 or not f32s:
        v = draw(st.one_of(st.floats(allow_nan=True, width=32), st.sampled_from([0.0, -0.0])))
        return Const(float(v), F32)
    if kind == 1:
        b = draw(st.sampled_from(f32s))
        return BufLoad(b, tuple(draw(index_expr(vars_)) for _ in b.shape), F32)
    a = draw(value_expr(vars_, bufs, depth - 1))
    if kind == 2:
        return Call(draw(st.sampled_from(INFIX_F)), (a, draw(value_expr(vars_, bufs, depth - 1))),
                    F32)
    if kind == 3:
        return Call(draw(st.sampled_from(UNARY_F)), (a,), F32)
    if kind == 4:
        c = Call(draw(st.sampled_from(["lt", "ge", "eq"])), (draw(index_expr(vars_)),
                                                           Const(3, I64)), BOOL)
        return Select(c, a, draw(value_expr(vars_, bufs, depth - 1)), F32)
    if kind == 5:
        return Cast(Cast(a, F16), F32)
    r = Var(f"r{depth}")
    return Reduce(draw(st.sampled_from(["sum", "max", "min"])), ((r, draw(st.integers(1, 4))),),
                  draw(value_expr(vars_ + [r.name], bufs, depth - 1)), F32)


@st.composite
def stmts(draw: st.DrawFn, vars_: list[str], bufs: list[Buffer], depth: int, n: list[int]
          ) -> Stmt:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 5 if depth > 0 else 0))
        if kind == 5:
            b = draw(st.sampled_from(bufs))
            out.append(Prefetch(b, tuple(draw(index_expr(vars_)) for _ in b.shape)))
        elif kind == 0:
            b = draw(st.sampled_from(bufs))
            out.append(Store(b, tuple(draw(index_expr(vars_)) for _ in b.shape),
                             draw(value_expr(vars_, bufs))))
        elif kind == 1:
            n[0] += 1
            v = f"v{n[0]}" + draw(st.sampled_from(["", ".o", ".i"]))
            lk = draw(st.sampled_from(list(LoopKind)))
            ext = Const(draw(st.integers(0, 9)), I64) if lk != LoopKind.SERIAL else \
                draw(index_expr(vars_))
            out.append(For(Var(v), ext, draw(stmts(vars_ + [v], bufs, depth - 1, n)), lk,
                           draw(st.sampled_from([4, 16])) if lk == LoopKind.VECTOR else 0))
        elif kind == 2:
            c = Call("lt", (draw(index_expr(vars_)), Const(2, I64)), BOOL)
            other = draw(st.none() | stmts(vars_, bufs, depth - 1, n))
            out.append(IfThen(c, draw(stmts(vars_, bufs, depth - 1, n)), other))
        elif kind == 3:
            n[0] += 1
            b = Buffer(f"loc{n[0]}", F32, (draw(st.integers(1, 4)),),
                       draw(st.sampled_from([Scope.LOCAL, Scope.SHARED])))
            out.append(Allocate(b, draw(stmts(vars_, bufs + [b], depth - 1, n))))
        else:
            out.append(Barrier())
    return seq(*out)


@st.composite
def kernels(draw: st.DrawFn) -> Kernel:
    roles = draw(st.lists(st.sampled_from(["in", "weight", "out", "scratch"]), min_size=1,
                          max_size=3))
    params = tuple(Buffer(f"p{i}", F32, tuple(draw(st.lists(st.integers(1, 5), min_size=1,
                                                             max_size=3))),
                          Scope.SCRATCH if r == "scratch" else Scope.GLOBAL)
                   for i, r in enumerate(roles))
    body = draw(stmts([], list(params), 3, [0]))
    return Kernel(f"k{draw(st.integers(0, 99))}_x", params, tuple(roles), body, flops=draw(
        st.integers(0, 10 ** 12)))


@given(kernels())
def test_random_kernels_round_trip(k: Kernel) -> None:
    roundtrip(k)


def test_random_kernels_use_every_scalar_the_generator_names() -> None:
    assert set(INFIX_F + UNARY_F) <= set(SCALARS)


# ---- every kernel of real models ------------------------------------------------------------

@pytest.mark.parametrize("target", ["llvm", "cuda"])
@pytest.mark.parametrize("model", ["squeezenet", "shufflenet"])
def test_every_kernel_of_a_model_round_trips(model: str, target: str) -> None:
    from minicc.demo import light_model_path

    prog = lower_program(light_model_path(model), target=target, threads=2, dump=("loops",))
    for st_ in prog.kernel_steps:
        roundtrip(st_.kernel)
        assert st_.nest is not None
        roundtrip(st_.nest)


def test_a_loops_dump_parses_back_whole() -> None:
    from minicc.demo import light_model_path
    from minicc.driver import loops_dump

    prog = lower_program(light_model_path("squeezenet"), threads=1, dump=("loops",))
    ks = parse_kernels(loops_dump(prog))
    assert len(ks) == 2 * len(prog.kernels)      # before and after each
    assert [print_kernel(k) for k in ks[1::2]] == [print_kernel(k) for k in prog.kernels]
    assert all(not k.trace for k in ks[0::2]) and all(k.schedule for k in ks[1::2])
