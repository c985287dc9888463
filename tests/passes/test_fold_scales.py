"""fold_scales: constant scales and offsets fold through elementwise chains and into weights,
keeping the semantics (exactly, where every constant is a power of two and so every product is
exact), and an INT8 layer's requantizing epilogue comes out short."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Function, Module
from minicc.ir.interpret import interpret
from minicc.ir.passes.dce import eliminate_dead_code
from minicc.ir.passes.fold_scales import fold_scales
from minicc.ir.types import DType, TensorType
from minicc.ir.verify import verify_module

C = 4                      # channels
SHAPE = (1, C, 5, 5)


def _kinds(f: Function) -> list[str]:
    return [op.kind for op in f.ops if op.kind != "const"]


def _folded(f: Function) -> Function:
    g = eliminate_dead_code(fold_scales(f))
    verify_module(Module((g,)))
    return g


def _run(f: Function, x: np.ndarray) -> np.ndarray:
    return interpret(Module((f,)), {"x": x})["y"]


# a step of a chain: (kind, constant or clip bounds); constants are powers of two (scales) and
# small multiples of 1/4 (offsets), so every folded product and sum is exact in f32
steps = st.one_of(
    st.tuples(st.just("mul"), st.sampled_from([0.25, 0.5, 2.0, 4.0, -0.5, -2.0]),
              st.booleans()),
    st.tuples(st.just("add"), st.integers(-8, 8).map(lambda k: k / 4), st.booleans()),
    st.tuples(st.just("sub"), st.integers(-8, 8).map(lambda k: k / 4), st.just(False)),
    st.tuples(st.just("clip"), st.integers(-6, 0), st.integers(1, 12)),
    st.tuples(st.just("relu"), st.just(0), st.just(0)),
    st.tuples(st.just("round"), st.just(0), st.just(0)),
)


def _chain(chain: list[tuple], conv: bool, seed: int) -> Function:
    rng = np.random.default_rng(seed)
    b = GraphBuilder("main")
    x = b.input(TensorType(DType.F32, SHAPE), "x")
    v = x
    if conv:   # weights and bias that are multiples of 1/8: the conv's sums are exact too
        w = (rng.integers(-8, 9, (C, C, 3, 3)) / 8).astype(np.float32)
        bias = (rng.integers(-8, 9, (C,)) / 8).astype(np.float32)
        v = b.op1("conv", [v, b.const(w), b.const(bias)], {"pads": [1, 1, 1, 1]})
    for kind, a, per_channel in chain:
        if kind in ("mul", "add", "sub"):
            if not per_channel:
                c = np.array(a, np.float32)
            elif kind == "mul":      # powers of two per channel
                c = np.float32(a) * rng.choice([1.0, 2.0, 0.5], (1, C, 1, 1))
            else:                    # multiples of 1/4 per channel
                c = np.float32(a) + rng.integers(-4, 5, (1, C, 1, 1)) / 4
            v = b.op1(kind, [v, b.const(np.asarray(c, np.float32))])
        elif kind == "clip":
            v = b.op1("clip", [v], {"min": float(a), "max": float(per_channel)})
        else:
            v = b.op1(kind, [v])
    return b.finish([v], ["y"])


@settings(max_examples=300, deadline=None)
@given(chain=st.lists(steps, min_size=1, max_size=7), conv=st.booleans(),
       seed=st.integers(0, 1000))
def test_fold_scales_keeps_semantics_exactly(chain: list[tuple], conv: bool, seed: int) -> None:
    f = _chain(chain, conv, seed)
    g = _folded(f)
    x = (np.random.default_rng(seed).integers(-64, 65, SHAPE) / 16).astype(np.float32)
    np.testing.assert_array_equal(_run(g, x), _run(f, x))
    assert len(_kinds(g)) <= len(_kinds(f))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fold_scales_with_any_constants_is_within_rounding(seed: int) -> None:
    """Arbitrary scales and offsets (no round in the chain): a folded product rounds once
    instead of twice."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("main")
    x = b.input(TensorType(DType.F32, SHAPE), "x")
    w = rng.standard_normal((C, C, 1, 1)).astype(np.float32)
    v = b.op1("conv", [x, b.const(w)])
    for _ in range(int(rng.integers(1, 6))):
        k = str(rng.choice(["mul", "add", "clip"]))
        if k == "clip":
            v = b.op1("clip", [v], {"min": float(-rng.random()), "max": float(rng.random() * 4)})
        else:
            c = rng.uniform(0.1, 3, (1, C, 1, 1) if rng.random() < 0.5 else ()).astype(np.float32)
            v = b.op1(k, [v, b.const(c)])
    f = b.finish([v], ["y"])
    x = rng.standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_allclose(_run(_folded(f), x), _run(f, x), rtol=1e-5, atol=1e-5)


def test_an_int8_epilogue_folds_to_one_scale_one_offset_and_one_clip() -> None:
    """The dequantize, bias, ReLU6 and the next layer's quantize (as int8.py writes them)."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("main")
    x = b.input(TensorType(DType.U8, SHAPE), "x")
    w = rng.integers(-127, 128, (C, C, 1, 1)).astype(np.int8)
    acc = b.op1("conv_integer", [x, b.const(w)], {"zero_point": 3})
    y = b.op1("cast", [acc], {"to": DType.F32})
    y = b.op1("mul", [y, b.const(rng.uniform(1e-4, 1e-3, (1, C, 1, 1)).astype(np.float32))])
    y = b.op1("add", [y, b.const(rng.uniform(-1, 1, (1, C, 1, 1)).astype(np.float32))])
    y = b.op1("clip", [y], {"min": 0.0, "max": 6.0})
    y = b.op1("mul", [y, b.const(np.array(1 / 0.03, np.float32))])
    y = b.op1("round", [y])
    y = b.op1("add", [y, b.const(np.array(7.0, np.float32))])
    y = b.op1("clip", [y], {"min": 0.0, "max": 255.0})
    y = b.op1("cast", [y], {"to": DType.U8})
    f = b.finish([y], ["y"])
    g = _folded(f)
    assert _kinds(g) == ["conv_integer", "cast", "mul", "add", "round", "add", "clip", "cast"]
    clip = next(op for op in g.ops if op.kind == "clip")
    assert (clip.attrs["min"], clip.attrs["max"]) == (7.0, 7.0 + 200.0)   # 6 / 0.03 = 200
    xs = rng.integers(0, 256, SHAPE).astype(np.uint8)
    a, r = _run(g, xs).astype(int), _run(f, xs).astype(int)
    assert np.abs(a - r).max() <= 1 and np.mean(a != r) < 0.02   # a product rounds once less


def test_a_scale_after_a_conv_goes_into_its_weights() -> None:
    rng = np.random.default_rng(1)
    b = GraphBuilder("main")
    x = b.input(TensorType(DType.F32, SHAPE), "x")
    w = rng.standard_normal((C, 1, 3, 3)).astype(np.float32)
    y = b.op1("conv", [x, b.const(w), b.const(np.ones(C, np.float32))],
              {"group": C, "pads": [1, 1, 1, 1]})
    y = b.op1("mul", [y, b.const(np.array([2.0, -1.0, 0.5, 3.0], np.float32).reshape(
        1, C, 1, 1))])
    f = b.finish([y], ["y"])
    g = _folded(f)
    assert _kinds(g) == ["conv"]
    xs = rng.standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_allclose(_run(g, xs), _run(f, xs), rtol=1e-5, atol=1e-6)


def test_a_value_with_two_users_is_not_folded_into() -> None:
    """Folding through a shared value would compute the chain twice."""
    b = GraphBuilder("main")
    x = b.input(TensorType(DType.F32, SHAPE), "x")
    a = b.op1("mul", [x, b.const(np.array(2.0, np.float32))])
    y = b.op1("mul", [a, b.const(np.array(4.0, np.float32))])
    z = b.op1("add", [a, y])
    f = b.finish([z], ["y"])
    assert _kinds(_folded(f)) == ["mul", "mul", "add"]
