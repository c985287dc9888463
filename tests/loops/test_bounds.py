"""Index arithmetic simplified with loop ranges (ir/loops/bounds.py): the simplified expression
equals the original at every point of the ranges (hypothesis: random index trees of adds,
constant multiples, floor divisions and modulos, evaluated exhaustively over small ranges)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from minicc.ir.compute import Call, Const, Expr, Var, call
from minicc.ir.loops.bounds import interval, simplify_ranged
from minicc.ir.types import DType

VARS = ("a", "b", "c")


def _eval(e: Expr, env: dict[str, int]) -> int:
    if isinstance(e, Const):
        return int(e.value)  # type: ignore[arg-type]
    if isinstance(e, Var):
        return env[e.name]
    assert isinstance(e, Call)
    x, y = (_eval(a, env) for a in e.args)
    ops = {"add": lambda: x + y, "sub": lambda: x - y, "mul": lambda: x * y,
           "floordiv": lambda: x // y, "mod": lambda: x % y, "min": lambda: min(x, y),
           "max": lambda: max(x, y)}
    return ops[e.fn]()


def _exprs() -> st.SearchStrategy[Expr]:
    leaf = st.one_of(st.sampled_from([Var(v) for v in VARS]),
                     st.integers(-5, 40).map(lambda c: Const(c, DType.I64)))

    def grow(sub: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        k = st.sampled_from([1, 2, 3, 4, 6, 8, 16, 320])
        return st.one_of(
            st.tuples(sub, sub).map(lambda t: call("add", *t)),
            st.tuples(sub, k).map(lambda t: call("mul", t[0], Const(t[1], DType.I64))),
            st.tuples(sub, k).map(lambda t: call("floordiv", t[0], Const(t[1], DType.I64))),
            st.tuples(sub, k).map(lambda t: call("mod", t[0], Const(t[1], DType.I64))),
            st.tuples(sub, sub).map(lambda t: call("min", *t)))
    return st.recursive(leaf, grow, max_leaves=8)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_exprs(), st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 9)), min_size=3,
                          max_size=3))
def test_simplified_indices_equal_the_original_over_the_ranges(e: Expr, spans) -> None:
    ranges = {v: (lo, lo + w) for v, (lo, w) in zip(VARS, spans)}
    got = simplify_ranged(e, ranges)
    iv = interval(e, ranges)
    for point in itertools.product(*(range(lo, hi + 1) for lo, hi in ranges.values())):
        env = dict(zip(VARS, point))
        want = _eval(e, env)
        assert _eval(got, env) == want, (e, got, env)
        if iv is not None:
            assert iv[0] <= want <= iv[1], (e, iv, env)


def test_a_pixel_shuffle_index_loses_its_divisions() -> None:
    """dbnet_like's depth-to-space: ((i2 * 320 + i3) // 320) % 2 is i2 % 2 and
    (i2 * 320 + i3) // 640 is i2 // 2 while i3 < 320."""
    i2, i3 = Var("i2"), Var("i3")
    p = call("add", call("mul", i2, Const(320, DType.I64)), i3)
    r = {"i2": (0, 319), "i3": (0, 319)}
    two, c320, c640 = (Const(c, DType.I64) for c in (2, 320, 640))
    assert simplify_ranged(call("mod", call("floordiv", p, c320), two), r) == \
        call("mod", i2, two)
    assert simplify_ranged(call("floordiv", p, c640), r) == call("floordiv", i2, two)
    assert simplify_ranged(call("mod", call("floordiv", p, two), Const(160, DType.I64)), r) == \
        call("floordiv", i3, two)
