"""Memory planning (`minicc.ir.memory.plan_memory`): buffers alive at the same step never
overlap, and the arena sits between the lower bound and the naive sum (plus the 4 KiB-aliasing
skew big buffers may get)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicc.ir.memory import COLOR_STEP, COLORS, MemoryPlan, Request, check_plan, plan_memory

ALIGN = 64
BIG = 1 << 16          # buffers at least this big (aligned) get a skew, see plan_memory


def _align(n: int) -> int:
    return (max(n, 1) + ALIGN - 1) // ALIGN * ALIGN


@st.composite
def requests(draw: st.DrawFn) -> list[Request]:
    n = draw(st.integers(0, 30))
    steps = draw(st.integers(1, 20))
    out = []
    for i in range(n):
        first = draw(st.integers(0, steps - 1))
        last = draw(st.integers(first, min(steps - 1, first + draw(st.integers(0, 6)))))
        # small buffers, sizes around the skew threshold and big ones (equal sizes are common
        # in real models: draw from a few fixed sizes too)
        nbytes = draw(st.one_of(st.integers(0, 5000), st.integers(BIG - 200, BIG + 200),
                                st.sampled_from([BIG * 4, 802816, 3211264, 100352]),
                                st.integers(1, 1 << 22)))
        out.append(Request(f"b{i}", nbytes, first, last))
    return out


@given(requests())
def test_plan_is_valid_and_within_bounds(reqs: list[Request]) -> None:
    plan = plan_memory(reqs, ALIGN)
    check_plan(plan)
    assert set(plan.offsets) == {r.name for r in reqs}
    for r in reqs:
        off = plan.offsets[r.name]
        assert off >= 0 and off % ALIGN == 0, (r, off)
        assert off + r.nbytes <= plan.arena_bytes, (r, off, plan.arena_bytes)
    assert plan.naive_bytes == sum(_align(r.nbytes) for r in reqs)
    live = max((sum(_align(r.nbytes) for r in reqs if r.first <= s <= r.last)
                for s in range(0, 21)), default=0)
    assert plan.lower_bound == live
    assert plan.arena_bytes >= plan.lower_bound
    n_big = sum(1 for r in reqs if _align(r.nbytes) >= BIG)
    allowance = COLOR_STEP * COLORS * n_big
    assert plan.arena_bytes <= plan.naive_bytes + allowance, (
        plan.arena_bytes, plan.naive_bytes, allowance)


@given(st.lists(st.integers(1, 1 << 20), min_size=1, max_size=12))
def test_disjoint_lifetimes_share_offset_zero_region(sizes: list[int]) -> None:
    """Buffers that are never alive together need no more than the biggest one (+ skew)."""
    reqs = [Request(f"b{i}", n, i, i) for i, n in enumerate(sizes)]
    plan = plan_memory(reqs, ALIGN)
    check_plan(plan)
    assert plan.lower_bound == max(_align(n) for n in sizes)
    assert plan.arena_bytes <= plan.lower_bound + COLOR_STEP * COLORS


@given(st.lists(st.integers(1, 1 << 18), min_size=1, max_size=12))
def test_all_alive_together_is_the_naive_sum(sizes: list[int]) -> None:
    reqs = [Request(f"b{i}", n, 0, 3) for i, n in enumerate(sizes)]
    plan = plan_memory(reqs, ALIGN)
    check_plan(plan)
    assert plan.lower_bound == plan.naive_bytes
    assert plan.arena_bytes >= plan.naive_bytes


def test_check_plan_catches_an_overlap() -> None:
    reqs = [Request("a", 100, 0, 2), Request("b", 100, 1, 3)]
    plan = plan_memory(reqs, ALIGN)
    plan.offsets["b"] = plan.offsets["a"] + 50
    with pytest.raises(AssertionError, match="overlap"):
        check_plan(plan)


def test_empty_plan() -> None:
    plan = plan_memory([], ALIGN)
    assert (plan.arena_bytes, plan.naive_bytes, plan.lower_bound) == (0, 0, 0)


def test_chain_of_equal_big_buffers_reuses_memory() -> None:
    """A chain a->b->c->d of equal-size activations (each alive for two steps, like a stack of
    convolutions) needs two buffers' worth, not four."""
    n = 3211264
    reqs = [Request(f"t{i}", n, i, i + 1) for i in range(6)]
    plan = plan_memory(reqs, ALIGN)
    check_plan(plan)
    assert plan.lower_bound == 2 * n
    assert plan.arena_bytes <= plan.lower_bound * 1.1, (plan.arena_bytes, plan.lower_bound)


# ---------------------------------------------------------------------------------------------
# Real models

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _model(name: str) -> str:
    path = os.path.join(LIGHT, f"{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not shipped with this onnx")
    return path


def assert_near_lower_bound(name: str, arena: int, lower: int, naive: int) -> None:
    assert lower <= arena <= naive
    assert arena <= 1.10 * lower, (f"{name}: arena {arena} is {arena / lower:.3f}x the lower "
                                   f"bound {lower} (naive {naive})")


def program_plan(path: str) -> MemoryPlan:
    """The memory plan `compile(path, CompileOptions(threads=1))` makes, without running LLVM:
    the same import, O3 pass pipeline and `build_program` (which plans the arena)."""
    from minicc.driver import lower_program

    return lower_program(path, threads=1).memory


def test_compiled_squeezenet_arena_near_lower_bound(tmp_path: Path) -> None:
    from minicc import CompileOptions, compile

    path = _model("light_squeezenet")
    cm = compile(path, options=CompileOptions(threads=1, cache_dir=str(tmp_path)))
    s = cm.artifact.summary
    arena, lower, naive = s["arena_bytes"], s["lower_bound_bytes"], s["naive_bytes"]
    assert arena == cm.artifact.arena_bytes
    assert_near_lower_bound("light_squeezenet", arena, lower, naive)
    # compile() reports the plan build_program makes: the resnet50 test below relies on it
    p = program_plan(path)
    assert (p.arena_bytes, p.lower_bound, p.naive_bytes) == (arena, lower, naive)


def test_resnet50_arena_near_lower_bound() -> None:
    """Planned as compile(threads=1) plans it, without the ~7 s of LLVM (test budget)."""
    p = program_plan(_model("light_resnet50"))
    check_plan(p)
    assert_near_lower_bound("light_resnet50", p.arena_bytes, p.lower_bound, p.naive_bytes)
