"""The CPU pooling template (cpu.pool, ir/loops/pool.py): max and average pools read in
place, a register tile of rows by vectors per plane, masks only at the map's edges."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minicc import CompileOptions, compile
from minicc.errors import ScheduleError
from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Module
from minicc.ir.types import TensorType
from tests.codegen.test_cpu import _interpret_step, _kernels, reference


def pool_module(kind: str, xs: tuple[int, ...], attrs: dict, relu: bool = False,
                concat: bool = False) -> Module:
    b = GraphBuilder("main")
    x = b.input(TensorType.of(np.zeros(xs, np.float32)), "x")
    if concat:                          # a pool of a concat computed in the same kernel
        x = b.op1("concat", [x, b.op1("relu", [x])], {"axis": 1})
    y = b.op1(kind, [x], attrs)
    if relu:
        y = b.op1("relu", [y])
    return Module((b.finish([y], ["y"]),))


def expect(kind: str, x: np.ndarray, attrs: dict, relu: bool = False) -> np.ndarray:
    y = reference(kind, [x], attrs)[0]
    return np.maximum(y, 0) if relu else y


@settings(max_examples=30, deadline=None, derandomize=True)
@given(kind=st.sampled_from(["max_pool", "avg_pool"]), n=st.integers(1, 2),
       c=st.integers(1, 4), h=st.integers(1, 20), w=st.integers(1, 40),
       kh=st.integers(1, 5), kw=st.integers(1, 5), s=st.integers(1, 2),
       pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), ceil=st.booleans(),
       cip=st.booleans(), rx=st.integers(1, 3), ry=st.integers(1, 8),
       threads=st.integers(1, 2), relu=st.booleans())
def test_pools_on_any_geometry(kind: str, n: int, c: int, h: int, w: int, kh: int, kw: int,
                               s: int, pads: list, ceil: bool, cip: bool, rx: int, ry: int,
                               threads: int, relu: bool) -> None:
    """Any map, window, pads (each less than the window), ceil mode and count rule, any tile
    (rows and vectors past the map's edge) at 1 and 2 threads, with a fused ReLU: natively
    and in the loop interpreter (which refuses a read outside the input), against the
    reference."""
    from minicc.driver import lower_program

    assume(pads[0] < kh and pads[2] < kh and pads[1] < kw and pads[3] < kw and rx * ry <= 16)
    assume(h + pads[0] + pads[2] >= kh and w + pads[1] + pads[3] >= kw)
    attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": [s, s], "pads": pads,
                             "ceil_mode": ceil}
    if kind == "avg_pool":
        attrs["count_include_pad"] = cip
    m = pool_module(kind, (n, c, h, w), attrs, relu)
    x = np.random.default_rng(h * 41 + w).standard_normal((n, c, h, w)).astype(np.float32)
    want = expect(kind, x, attrs, relu)
    name = _kernels(compile(m, options=CompileOptions(threads=1, cache=False)))[0]["name"]
    text = f"cpu.pool: tile(RX={rx}, RY={ry})" + ("; parallel(t)" if threads > 1 else "")
    opts = CompileOptions(threads=threads, cache=False, schedules={name: text})
    cm = compile(m, options=opts)
    assert _kernels(cm)[0]["schedule"] == text
    got = cm.run({"x": x})["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=text)
    step = lower_program(m, options=opts).kernel_steps[0]
    np.testing.assert_allclose(_interpret_step(step, x, threads), want, rtol=1e-5, atol=1e-6,
                               err_msg=f"interpreted {text}")


@pytest.mark.parametrize("kind,xs,attrs,rule", [
    # inception's and resnet50's pools: the template, its default tile
    ("max_pool", (1, 64, 112, 112), {"kernel_shape": [3, 3], "strides": [2, 2],
                                     "pads": [0, 0, 1, 1]}, "cpu.pool: tile(RX=2, RY=4)"),
    ("avg_pool", (1, 16, 28, 28), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
     "cpu.pool: tile(RX=2, RY=4)"),
    ("max_pool", (1, 8, 20, 20), {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]},
     "cpu.pool: tile(RX=2, RY=4)"),
    ("avg_pool", (1, 8, 7, 7), {"kernel_shape": [7, 7]}, "cpu.pool: tile(RX=1, RY=1)"),
    # what it leaves to the generic nest: stride 3, dilation, a window over 7, 1-D, a pool of
    # a value computed in the kernel
    ("max_pool", (1, 4, 20, 20), {"kernel_shape": [3, 3], "strides": [3, 3]}, "cpu.loops"),
    ("max_pool", (1, 4, 20, 20), {"kernel_shape": [3, 3], "dilations": [2, 2]}, "cpu.loops"),
    ("avg_pool", (1, 4, 20, 20), {"kernel_shape": [8, 8]}, "cpu.loops"),
    ("max_pool", (1, 4, 20), {"kernel_shape": [3]}, "cpu.loops"),
])
def test_which_pools_take_the_template(kind: str, xs: tuple[int, ...], attrs: dict,
                                       rule: str) -> None:
    m = pool_module(kind, xs, attrs)
    cm = compile(m, options=CompileOptions(threads=1, cache=False))
    (k,) = _kernels(cm)
    assert k["schedule"].startswith(rule), k["schedule"]
    x = np.random.default_rng(0).standard_normal(xs).astype(np.float32)
    np.testing.assert_allclose(cm.run({"x": x})["y"], expect(kind, x, attrs), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_pool_of_a_concat_in_the_same_kernel(threads: int) -> None:
    """squeezenet's last pools read a concat fused into their kernel: each tap loads from the
    concatenated tensor its channel falls in."""
    from minicc.driver import lower_program

    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0]}
    m = pool_module("max_pool", (1, 4, 15, 37), attrs, concat=True)
    opts = CompileOptions(threads=threads, cache=False)
    cm = compile(m, options=opts)
    (k,) = [k for k in _kernels(cm) if "max_pool" in k["ops"]]
    assert k["ops"][-2:] == ["concat", "max_pool"] and k["schedule"].startswith("cpu.pool"), k
    x = np.random.default_rng(0).standard_normal((1, 4, 15, 37)).astype(np.float32)
    want = expect("max_pool", np.concatenate([x, np.maximum(x, 0)], axis=1), attrs)
    np.testing.assert_allclose(cm.run({"x": x})["y"], want, rtol=1e-6, atol=1e-6)
    step = next(st for st in lower_program(m, options=opts).kernel_steps
                if "max_pool" in [op.kind for op in st.group.ops])
    np.testing.assert_allclose(_interpret_step(step, x, threads), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sched,why", [
    ("tile(RX=4, RY=8)", "RX x RY = 32 vectors of results; at most 16"),
    ("tile(RX=2)", "the steps must set tile(RX=..., RY=...), both at least 1"),
    ("tile(RX=1, RY=2); vectorize(x)", "not a step of the pool template"),
])
def test_a_bad_pool_schedule_is_refused(sched: str, why: str) -> None:
    m = pool_module("max_pool", (1, 4, 20, 40), {"kernel_shape": [3, 3], "pads": [1] * 4})
    name = _kernels(compile(m, options=CompileOptions(threads=1, cache=False)))[0]["name"]
    with pytest.raises(ScheduleError, match=re.escape(why)):
        compile(m, options=CompileOptions(threads=1, cache=False,
                                          schedules={name: f"cpu.pool: {sched}"}))


@pytest.mark.parametrize("xs,k,s", [((1, 64, 112, 112), 3, 2), ((1, 16, 13, 13), 3, 1),
                                    ((1, 8, 4, 4), 5, 1)])
def test_pool_defaults_are_points_of_the_tuners_space(xs: tuple[int, ...], k: int,
                                                      s: int) -> None:
    from minicc.ir.loops.cpu import CPU_RULES
    from minicc.ir.loops.nodes import Buffer
    from minicc.ir.passes.fuse import fuse as fuse_groups
    from tests.loops.util import ctx_for

    m = pool_module("max_pool", xs, {"kernel_shape": [k, k], "strides": [s, s],
                                     "pads": [k // 2] * 4})
    g = fuse_groups(m.main).groups[0]
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    rule = next(r for r in CPU_RULES if r.name == "cpu.pool")
    for threads in (1, 2):
        ctx = ctx_for(g, bufs, {}, threads=threads)
        d = rule.defaults(ctx)
        rule.check_knobs(ctx, d)
        assert rule.invalid(ctx, d) is None


def test_only_the_edge_tiles_mask_their_taps() -> None:
    """squeezenet's 3x3 stride-2 pool over 111x111: a tile whose windows all lie inside the
    map reads its taps with plain (strided) loads; the selects against -inf are in the edge
    tiles' branch only."""
    from minicc.driver import lower_program
    from minicc.ir.compute import Select
    from minicc.ir.loops.exprs import map_expr
    from minicc.ir.loops.nodes import IfThen, Store, walk

    m = pool_module("max_pool", (1, 4, 111, 111), {"kernel_shape": [3, 3], "strides": [2, 2]})
    k = lower_program(m, options=CompileOptions(threads=1, cache=False)).kernel_steps[0].kernel

    def selects(stmt: Any) -> int:
        n = 0
        for st_ in walk(stmt):
            if isinstance(st_, Store):
                found: list[Any] = []
                map_expr(st_.value, lambda e: found.append(e) if isinstance(e, Select) else None)
                n += len(found)
        return n
    (branch,) = [s for s in walk(k.body) if isinstance(s, IfThen) and s.else_ is not None]
    assert selects(branch.then) == 0 and selects(branch.else_) >= 9


@pytest.mark.parametrize("kind", ["max_pool", "avg_pool"])
def test_windows_wholly_in_the_padding(kind: str) -> None:
    """Pads as wide as the window: the corner windows hold no pixel (max: -inf, average:
    0 / max(count, 1) = 0, the op's rule), as the reference gives."""
    attrs: dict[str, Any] = {"kernel_shape": [2, 2], "pads": [2, 2, 2, 2]}
    m = pool_module(kind, (1, 2, 6, 6), attrs)
    cm = compile(m, options=CompileOptions(threads=1, cache=False))
    assert _kernels(cm)[0]["schedule"].startswith("cpu.pool")
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    got, want = cm.run({"x": x})["y"], expect(kind, x, attrs)
    assert got[0, 0, 0, 0] == want[0, 0, 0, 0] == (-np.inf if kind == "max_pool" else 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
