"""Loop IR: schedule primitives keep semantics (checked with the loop interpreter), traces replay
to the same loop nest, and lowered kernels run in the interpreter match the op references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicc.errors import ScheduleError
from minicc.ir.compute import Const, Var, call
from minicc.ir.interpret import interpret
from minicc.ir.loops.interp import buffer_arrays, run_kernel
from minicc.ir.loops.nodes import Buffer, BufLoad, For, Kernel, Store
from minicc.ir.loops.primitives import Schedule, replay
from minicc.ir.loops.printer import print_kernel
from minicc.ir.passes.fuse import fuse as fuse_groups
from minicc.ir.loops.schedule import lower_group
from minicc.ir.types import DType

F32 = DType.F32


def naive(m: int, n: int) -> Kernel:
    """out[i, j] = a[i, j] * 2 + b[j]"""
    a = Buffer("a", F32, (m, n))
    b = Buffer("b", F32, (n,))
    out = Buffer("out", F32, (m, n))
    i, j = Var("i"), Var("j")
    val = call("add", call("mul", BufLoad(a, (i, j), F32), Const(2.0, F32)),
               BufLoad(b, (j,), F32))
    body = For(i, Const(m, DType.I64), For(j, Const(n, DType.I64), Store(out, (i, j), val)))
    return Kernel("k", (a, b, out), ("in", "in", "out"), body)


def run(k: Kernel, m: int, n: int, threads: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    arrs = buffer_arrays(k, a=rng.standard_normal((m, n)).astype(np.float32),
                         b=rng.standard_normal(n).astype(np.float32))
    run_kernel(k, arrs, threads)
    return arrs["out"]


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, int, list]:
    m, n = draw(st.integers(1, 9)), draw(st.integers(1, 23))
    steps: list = []
    loops = ["i", "j"]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["split", "fuse", "reorder", "unroll", "parallel"]))
        if kind == "split":
            v = draw(st.sampled_from(loops))
            steps.append(("split", (v, draw(st.integers(1, 7)))))
            loops = [x for x in loops if x != v] + [f"{v}.o", f"{v}.i"]
        elif kind == "fuse" and loops[:2] == ["i", "j"]:
            steps.append(("fuse", ("i", "j")))
            loops = ["i_j"] + loops[2:]
        elif kind == "reorder" and loops[:2] == ["i", "j"]:
            steps.append(("reorder", ("i", "j")))
            loops = ["j", "i"] + loops[2:]
        elif kind == "parallel":
            steps.append(("parallel", (loops[0],)))
    return m, n, steps


@given(schedules())
def test_schedules_keep_semantics_and_replay(case: tuple[int, int, list]) -> None:
    m, n, steps = case
    k = naive(m, n)
    ref = run(k, m, n)
    s = Schedule(k)
    for name, args in steps:
        try:
            s.apply(name, *args)
        except ScheduleError:
            return  # an illegal step (e.g. reordering loops that are no longer nested)
    np.testing.assert_allclose(run(s.kernel, m, n, threads=2), ref, rtol=1e-6)
    assert print_kernel(replay(k, s.trace)) == print_kernel(s.kernel)


def test_split_vectorize_unroll() -> None:
    k = naive(3, 37)
    s = Schedule(k).apply("split", "j", 16).apply("vectorize", "j.i", 16).apply("unroll", "i")
    text = print_kernel(s.kernel)
    assert "vector(16)" in text and "unroll" in text and "min(16" in text
    np.testing.assert_allclose(run(s.kernel, 3, 37), run(k, 3, 37), rtol=1e-6)


def test_illegal_primitives_name_the_loop() -> None:
    k = naive(3, 4)
    with pytest.raises(ScheduleError, match="no loop named 'q'"):
        Schedule(k).apply("split", "q", 2)
    with pytest.raises(ScheduleError, match=r"vectorize\(j\): extent 40 > 16"):
        Schedule(naive(3, 40)).apply("vectorize", "j", 16)
    with pytest.raises(ScheduleError, match="not perfectly nested|not directly inside"):
        Schedule(k).apply("fuse", "j", "i")


SMALL = {
    "softmax": "func @main(%x: f32[2,3,5]) -> (f32[2,3,5]) {\n"
               "  %y = softmax(%x) {axis=1} : f32[2,3,5]\n  return %y\n}",
    "conv_relu": "func @main(%x: f32[1,3,6,7], %w: f32[4,3,3,3], %b: f32[4]) -> (f32[1,4,3,4]) {\n"
                 "  %c = conv(%x, %w, %b) {pads=[1,1,1,1], strides=[2,2]} : f32[1,4,3,4]\n"
                 "  %r = relu(%c) : f32[1,4,3,4]\n  return %r\n}",
    "matmul_add": "func @main(%a: f32[2,5,7], %b: f32[7,9], %c: f32[9]) -> (f32[2,5,9]) {\n"
                  "  %m = matmul(%a, %b) : f32[2,5,9]\n  %y = add(%m, %c) : f32[2,5,9]\n"
                  "  return %y\n}",
    "pool_pad": "func @main(%x: f32[1,2,7,7]) -> (f32[1,2,4,4]) {\n"
                "  %p = max_pool(%x) {kernel_shape=[3,3], pads=[1,1,1,1], strides=[2,2]} "
                ": f32[1,2,4,4]\n  return %p\n}",
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_lowered_kernels_in_the_interpreter(name: str) -> None:
    from minicc.ir.parser import parse

    m = parse(SMALL[name])
    f = m.main
    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
             for n, v in zip(f.input_names, f.inputs)}
    ref = interpret(m, feeds)
    part = fuse_groups(f)
    assert len(part.groups) == 1
    g = part.groups[0]
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    for threads in (1, 2):
        k, packed = lower_group("k", g, bufs, {}, threads)
        arrays = {bufs[v].name: feeds[n] for n, v in zip(f.input_names, f.inputs) if v in bufs}
        for b, arr in packed.values():
            arrays[b.name] = arr
        arrs = buffer_arrays(k, **arrays)
        run_kernel(k, arrs, threads)
        np.testing.assert_allclose(arrs[bufs[g.output].name], ref[f.output_names[0]],
                                   rtol=1e-5, atol=1e-5)
