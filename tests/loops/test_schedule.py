"""Schedules as data: every primitive keeps semantics (the loop interpreter runs the nest before
and after), traces print as text that replays to the same kernel, illegal steps are refused by
name, and lowered kernels (every rule, default knobs and random points of their knob spaces)
match the op references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from minicc.errors import ScheduleError
from minicc.ir.compute import Const, Reduce, Var, call
from minicc.ir.interpret import interpret
from minicc.ir.loops.cpu import CPU_RULES, lower_group_cpu
from minicc.ir.loops.gpu import GPU_RULES, lower_gpu
from minicc.ir.loops.interp import buffer_arrays, run_kernel
from minicc.ir.loops.nodes import BufLoad, Buffer, For, Kernel, LoopKind, Store, walk
from minicc.ir.loops.primitives import PRIMITIVES, apply_steps
from minicc.ir.loops.printer import print_kernel
from minicc.ir.loops.schedule import schedule_group
from minicc.ir.loops.trace import Step, format_schedule, parse_schedule, step
from minicc.ir.parser import parse
from minicc.ir.passes.fuse import fuse as fuse_groups
from minicc.ir.types import DType
from tests.loops.util import ctx_for

F32, I64 = DType.F32, DType.I64


def nest(m: int, n: int, reduce: bool) -> Kernel:
    """out[i, j] = a[i, j] * 2 + b[j] (+ sum_k a[i, k] when `reduce`), unscheduled."""
    a = Buffer("a", F32, (m, n))
    b = Buffer("b", F32, (n,))
    out = Buffer("out", F32, (m, n))
    i, j, k = Var("i"), Var("j"), Var("k")
    val = call("add", call("mul", BufLoad(a, (i, j), F32), Const(2.0, F32)),
               BufLoad(b, (j,), F32))
    if reduce:
        val = call("add", val, Reduce("sum", ((k, n),), BufLoad(a, (i, k), F32), F32))
    body = For(i, Const(m, I64), For(j, Const(n, I64), Store(out, (i, j), val)))
    return Kernel("k", (a, b, out), ("in", "in", "out"), body)


def run(k: Kernel, threads: int = 1) -> np.ndarray:
    m, n = k.params[0].shape
    rng = np.random.default_rng(0)
    arrs = buffer_arrays(k, a=rng.standard_normal((m, n)).astype(np.float32),
                         b=rng.standard_normal(n).astype(np.float32))
    run_kernel(k, arrs, threads)
    return arrs["out"]


def loops(k: Kernel) -> list[For]:
    return [x for x in walk(k.body) if isinstance(x, For)]


STEP_KINDS = ("split", "fuse", "reorder", "vectorize", "unroll", "parallel", "bind",
              "compute_at", "block_reduce")


def test_the_strategy_samples_every_primitive() -> None:
    assert set(STEP_KINDS) == set(PRIMITIVES)


def _draw_step(draw: st.DrawFn, k: Kernel, kind: str) -> Step:
    ls = loops(k)
    name = draw(st.sampled_from([x.var.name for x in ls])) if ls else "i"
    if kind == "split":
        return step("split", name, draw(st.integers(1, 7)), guard=draw(st.booleans()))
    if kind in ("fuse", "reorder"):
        pairs = [(x.var.name, x.body.var.name) for x in ls if isinstance(x.body, For)]
        a, b = draw(st.sampled_from(pairs)) if pairs else (name, name)
        return step("fuse", a, b) if kind == "fuse" else step("reorder", b, a)
    if kind == "vectorize":
        return step("vectorize", name, draw(st.sampled_from([4, 8, 16])))
    if kind == "bind":
        return step("bind", name, draw(st.sampled_from(["block.x", "thread.x", "block.y"])))
    if kind == "compute_at":
        return step("compute_at")
    if kind == "block_reduce":
        return step("block_reduce", draw(st.sampled_from([32, 64])))
    return step(kind, name)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[Kernel, list[Step]]:
    """A nest and steps drawn against the loops it has after the steps before; a drawn step
    may be illegal (the test rejects those with assume)."""
    k0 = nest(draw(st.integers(1, 6)), draw(st.integers(1, 20)), draw(st.booleans()))
    steps: list[Step] = []
    k = k0
    for _ in range(draw(st.integers(1, 5))):
        s = _draw_step(draw, k, draw(st.sampled_from(STEP_KINDS)))
        steps.append(s)
        try:
            k = apply_steps(k, [s])
        except ScheduleError:
            break
    return k0, steps


@given(schedules())
@settings(max_examples=150)
def test_every_primitive_keeps_semantics_and_replays_from_text(case) -> None:  # type: ignore
    k0, steps = case
    try:
        k = apply_steps(k0, steps)
    except ScheduleError:
        assume(False)     # an illegal step: refused by name, never silently applied
        raise
    np.testing.assert_allclose(run(k, threads=2), run(k0), rtol=1e-5, atol=1e-5)
    rule, again = parse_schedule(format_schedule("steps", k.trace))
    assert again == tuple(steps)
    assert print_kernel(apply_steps(k0, list(again))) == print_kernel(k)


def test_split_vectorize_unroll() -> None:
    k = apply_steps(nest(3, 37, False), [step("split", "j", 16), step("vectorize", "j.i", 16),
                                         step("unroll", "i")])
    text = print_kernel(k)
    assert "vector(16)" in text and "unroll" in text and "min(16" in text
    assert "schedule steps: split(j, 16); vectorize(j.i, 16); unroll(i)" in text
    np.testing.assert_allclose(run(k), run(nest(3, 37, False)), rtol=1e-6)


def test_an_exact_split_has_no_tail_and_a_guarded_one_keeps_its_extent() -> None:
    exact = apply_steps(nest(2, 32, False), [step("split", "j", 16)])
    assert all(isinstance(x.extent, Const) for x in loops(exact))
    guarded = apply_steps(nest(2, 20, False), [step("split", "j", 16, guard=True)])
    assert all(isinstance(x.extent, Const) for x in loops(guarded))
    assert "if (((j.o * 16) + j.i) < 20)" in print_kernel(guarded)


def test_compute_at_hoists_a_reduction_out_of_the_inner_loop() -> None:
    k = apply_steps(nest(3, 5, True), [step("compute_at")])
    text = print_kernel(k)
    assert text.index("alloc %acc1") < text.index("for j in")   # once per row, not per element
    np.testing.assert_allclose(run(k), run(nest(3, 5, True)), rtol=1e-6)


def test_illegal_steps_name_the_loop() -> None:
    k = nest(3, 4, False)
    cases = [
        (step("split", "q", 2), "no loop named 'q'"),
        (step("vectorize", "j", 2), r"vectorize\(j, 2\): extent 4 may exceed 2 lanes"),
        (step("fuse", "j", "i"), "not directly inside"),
        (step("unroll", "nope"), "no loop named 'nope'"),
        (step("bind", "i", "warp.x"), "bind to one of"),
        (step("reorder", "i", "i"), "two or more different loops"),
        (step("transmogrify", "i"), "unknown schedule step 'transmogrify'"),
        (step("block_reduce", 64), "needs loops around one store that reduces"),
    ]
    for s, msg in cases:
        with pytest.raises(ScheduleError, match=msg):
            apply_steps(k, [s])
    v = apply_steps(nest(3, 16, True), [step("compute_at")])
    with pytest.raises(ScheduleError, match="would write one element from every lane"):
        apply_steps(v, [step("vectorize", "k", 16)])


def test_schedule_text_errors_name_the_column() -> None:
    with pytest.raises(ScheduleError, match="column"):
        parse_schedule("cpu.loops: split(i0, )) ;")
    assert parse_schedule("cpu.gemm: tile(MR=6, NR=32); pack(A, at=compile)")[1] == (
        step("tile", MR=6, NR=32), step("pack", "A", at="compile"))


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
    "argmax": "func @main(%x: f32[3,40]) -> (i64[3]) {\n"
              "  %y = argmax(%x) {axis=1, keepdims=false} : i64[3]\n  return %y\n}",
    "depthwise_hswish_add": (
        "func @main(%x: f32[2,5,9,8], %w: f32[5,1,3,3], %b: f32[5], %r: f32[2,5,5,4]) -> "
        "(f32[2,5,5,4]) {\n"
        "  %c = conv(%x, %w, %b) {group=5, pads=[1,1,1,1], strides=[2,2]} : f32[2,5,5,4]\n"
        "  %h = hard_swish(%c) : f32[2,5,5,4]\n  %y = add(%h, %r) : f32[2,5,5,4]\n"
        "  return %y\n}"),
    "conv_1x1_map": (
        "func @main(%x: f32[1,20,1,1], %w: f32[7,20,1,1], %b: f32[7]) -> (f32[1,7,1,1]) {\n"
        "  %c = conv(%x, %w, %b) : f32[1,7,1,1]\n  %y = hard_sigmoid(%c) : f32[1,7,1,1]\n"
        "  return %y\n}"),
}
CONST_WEIGHTS = {"conv_relu": ("w",), "matmul_add": ("b",), "depthwise_hswish_add": ("w",),
                 "conv_1x1_map": ("w",)}
RULE = {"conv_relu": "cpu.gemm", "matmul_add": "cpu.gemm", "conv_1x1_map": "cpu.gemm",
        "depthwise_hswish_add": "cpu.depthwise", "pool_pad": "cpu.pool"}


def _one_group(name: str, seed: int = 1):  # type: ignore[no-untyped-def]
    """The graph's single group, its buffers and constants (weights bound as constants), the
    feeds of the remaining inputs and the reference output."""
    m = parse(SMALL[name])
    f = m.main
    rng = np.random.default_rng(seed)
    feeds = {n: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
             for n, v in zip(f.input_names, f.inputs)}
    ref = interpret(m, feeds)[f.output_names[0]]
    g = fuse_groups(f).groups[0]
    values = dict(zip(f.input_names, f.inputs))
    consts = {values[n]: feeds[n] for n in CONST_WEIGHTS.get(name, ())}
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    inputs = {bufs[v].name: feeds[n] for n, v in zip(f.input_names, f.inputs) if v in bufs}
    return g, bufs, consts, inputs, ref


def _run_lowered(low, bufs, g, inputs, threads: int) -> np.ndarray:  # type: ignore
    arrays = dict(inputs)
    for b, arr in low.packed.items():
        arrays[b.name] = arr
    arrs = buffer_arrays(low.kernel, **arrays)
    run_kernel(low.kernel, arrs, threads)
    return arrs[bufs[g.output].name]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_cpu_kernels_in_the_interpreter(name: str, threads: int) -> None:
    g, bufs, consts, inputs, ref = _one_group(name)
    low = lower_group_cpu(ctx_for(g, bufs, consts, threads))
    assert low.kernel.schedule == RULE.get(name, "cpu.loops")
    np.testing.assert_allclose(_run_lowered(low, bufs, g, inputs, threads), ref, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gpu_kernels_in_the_interpreter(name: str) -> None:
    g, bufs, consts, inputs, ref = _one_group(name)
    low = lower_gpu(ctx_for(g, bufs, consts, target="cuda"))
    np.testing.assert_allclose(_run_lowered(low, bufs, g, inputs, 1), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["llvm", "cuda"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_schedule_printed_as_text_rebuilds_the_kernel(name: str, target: str) -> None:
    g, bufs, consts, _, _ = _one_group(name)
    rules = CPU_RULES if target == "llvm" else GPU_RULES
    low = schedule_group(ctx_for(g, bufs, consts, 2, target=target), rules)
    text = format_schedule(low.kernel.schedule, low.kernel.trace)
    again = schedule_group(ctx_for(g, bufs, consts, 2, target=target,
                                   schedules={"k": text}), rules)
    assert print_kernel(again.kernel) == print_kernel(low.kernel)


def _small_block(knobs: dict) -> bool:
    """GPU GEMM points with at most 64 threads a block (the interpreter runs threads one by
    one); other rules' points all pass."""
    return "BM" not in knobs or (knobs["BM"] // knobs["TM"]) * (knobs["BN"] // knobs["TN"]) <= 64


def _knob_points(name: str, target: str, seed: int, n: int,  # type: ignore[no-untyped-def]
                 keep=lambda knobs: True):
    g, bufs, consts, inputs, ref = _one_group(name)
    rules = CPU_RULES if target == "llvm" else GPU_RULES
    ctx = ctx_for(g, bufs, consts, 2, target=target)
    rule = next(r for r in rules if r.applies(ctx))
    space = rule.space(ctx)
    assert all(rule.defaults(ctx)[k] in vals for k, vals in space.items()), \
        f"{rule.name}: defaults {rule.defaults(ctx)} outside the space {space}"
    rng = np.random.default_rng(seed)
    found = 0
    for _ in range(20 * n):
        knobs = {k: v[rng.integers(len(v))] for k, v in space.items()}
        if rule.invalid(ctx, knobs) is None and keep(knobs) and found < n:
            found += 1
            yield g, bufs, consts, inputs, ref, rules, knobs
    assert found == n, f"{rule.name}: too few valid points in {space}"


def _check_knob_points(name: str, target: str, seed: int, n: int,  # type: ignore
                       keep=lambda knobs: True) -> None:
    for g, bufs, consts, feeds, ref, rules, knobs in _knob_points(name, target, seed, n, keep):
        ctx = ctx_for(g, bufs, consts, 2, target=target)
        low = schedule_group(ctx, rules, knobs)
        got = _run_lowered(low, bufs, g, feeds, 2 if target == "llvm" else 1)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(knobs))


@pytest.mark.parametrize("target", ["llvm", "cuda"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_random_points_of_the_knob_space_give_correct_kernels(name: str, target: str) -> None:
    """What a tuner may pick is always a correct kernel: random knob values from the space the
    rule declares, run in the interpreter (GPU GEMM blocks run thread by thread: here only small
    blocks; the slow suite takes any)."""
    gpu_gemm = target == "cuda" and name in ("conv_relu", "matmul_add")
    _check_knob_points(name, target, 7, 2 if gpu_gemm else 4, _small_block)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["llvm", "cuda"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_many_points_of_the_knob_space_give_correct_kernels(name: str, target: str) -> None:
    _check_knob_points(name, target, 11, 12)


def test_knobs_outside_the_space_are_refused() -> None:
    g, bufs, consts, _, _ = _one_group("matmul_add")
    with pytest.raises(ScheduleError, match=r"MR=99"):
        lower_group_cpu(ctx_for(g, bufs, consts, 1), {"MR": 99, "NR": 32, "KC": 7, "NC": 64,
                                                      "parallel": "none", "pack_a": "mr",
                                                      "pack_b": "kc"})


def test_a_wrong_schedule_text_for_a_kernel_is_a_clear_error() -> None:
    g, bufs, consts, _, _ = _one_group("softmax")
    with pytest.raises(ScheduleError, match="rule cpu.gemm does not apply"):
        lower_group_cpu(ctx_for(g, bufs, consts, 1, schedules={"k": "cpu.gemm: tile(MR=1)"}))
    with pytest.raises(ScheduleError, match="no schedule rule 'cpu.fast'"):
        lower_group_cpu(ctx_for(g, bufs, consts, 1, schedules={"k": "cpu.fast: split(i, 2)"}))
    g, bufs, consts, _, _ = _one_group("matmul_add")
    with pytest.raises(ScheduleError, match="NR a multiple of the 16 lanes"):
        lower_group_cpu(ctx_for(g, bufs, consts, 1, schedules={
            "k": "cpu.gemm: tile(MR=4, NR=24, KC=7, NC=48); vectorize(l, 16)"}))


def test_the_vector_loop_of_a_cpu_kernel_comes_from_the_target() -> None:
    g, bufs, consts, _, _ = _one_group("softmax")
    k = lower_group_cpu(ctx_for(g, bufs, consts, 1)).kernel
    assert all(x.lanes in (0, 16) for x in loops(k)) or all(
        x.lanes in (0, 8) for x in loops(k))
    assert any(x.kind == LoopKind.VECTOR for x in loops(k))


_NAMES = ["i0", "i1", "i2", "i0_i1", "i1_i2", "i2.o", "i2.i", "l", "A", "B", "nc", "mc", "b",
          "compile", "mr", "kc", "none", "block.x", "thread.x"]
_ARG = st.one_of(st.integers(-2, 40), st.sampled_from(_NAMES), st.booleans())


@st.composite
def mutated(draw: st.DrawFn, rule: str, steps: tuple[Step, ...]) -> str:
    """A schedule near `steps`: steps dropped, repeated, with arguments replaced, or new ones."""
    out = list(steps)
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["drop", "repeat", "arg", "kwarg", "new"]))
        k = draw(st.integers(0, max(len(out) - 1, 0)))
        if what == "drop" and out:
            out.pop(k)
        elif what == "repeat" and out:
            out.insert(k, out[k])
        elif what == "arg" and out and out[k].args:
            a = list(out[k].args)
            a[draw(st.integers(0, len(a) - 1))] = draw(_ARG)
            out[k] = Step(out[k].name, tuple(a), out[k].kwargs)
        elif what == "kwarg" and out and out[k].kwargs:
            kw = list(out[k].kwargs)
            j = draw(st.integers(0, len(kw) - 1))
            kw[j] = (kw[j][0], draw(_ARG))
            out[k] = Step(out[k].name, out[k].args, tuple(kw))
        else:
            out.insert(k, Step(draw(st.sampled_from(sorted(PRIMITIVES) + ["tile", "pack"])),
                               tuple(draw(st.lists(_ARG, max_size=3)))))
    return format_schedule(rule, out)


@given(st.sampled_from(["softmax", "matmul_add", "conv_relu", "argmax"]), st.data())
@settings(max_examples=150)
def test_any_schedule_text_gives_a_correct_kernel_or_a_schedule_error(name: str,
                                                                      data: st.DataObject
                                                                      ) -> None:
    """Schedules are user input: whatever the text (here: the default one mutated), a kernel
    that computes the right values or a ScheduleError naming the problem, nothing else."""
    g, bufs, consts, inputs, ref = _one_group(name)
    default = lower_group_cpu(ctx_for(g, bufs, consts, 2)).kernel
    text = data.draw(mutated(default.schedule, default.trace))
    try:
        low = lower_group_cpu(ctx_for(g, bufs, consts, 2, schedules={"k": text}))
    except ScheduleError as e:
        assert str(e), text
        event("refused")
        return      # refused, with a message (the other outcome this test allows)
    event("built")
    np.testing.assert_allclose(_run_lowered(low, bufs, g, inputs, 2), ref, rtol=1e-5,
                               atol=1e-5, err_msg=text)


def test_gemm_tiles_follow_the_register_file() -> None:
    """Float convs on Zen 4 (32 vector registers, half-rate 512-bit FMAs) take 16 rows x 1
    vector (each weight broadcast feeds one FMA), on other AVX-512 cores 2 vectors (12, 10 or
    8 rows); matmuls 8 x 2 vectors; a tile whose accumulators do not fit the registers is
    refused, not compiled to spills."""
    from dataclasses import replace

    rule = next(r for r in CPU_RULES if r.name == "cpu.gemm")
    conv = ctx_for(*_one_group("conv_relu")[:3])
    mm = ctx_for(*_one_group("matmul_add")[:3])
    L = conv.target.lanes
    if conv.target.vector_registers >= 32:
        for cpu, nr in (("znver4", L), ("sapphirerapids", 2 * L), ("znver5", 2 * L)):
            c = replace(conv, target=replace(conv.target, cpu=cpu))
            assert (rule.defaults(c)["MR"], rule.defaults(c)["NR"]) == (4, nr), cpu  # M = 4
        assert rule.defaults(mm)["NR"] == 2 * L
    knobs = dict(rule.defaults(mm), MR=16, NR=4 * L, NC=4 * L)
    assert "vector registers" in (rule.invalid(mm, knobs) or "")
    tall = conv.target.vector_registers - 2        # accumulators, one B vector, A folded
    assert rule.invalid(mm, dict(knobs, MR=tall, NR=L)) is None
    avx2 = replace(mm, target=replace(mm.target, features=("avx2", "fma")))
    assert avx2.target.vector_registers == 16
    assert "16 vector registers" in (rule.invalid(avx2, dict(knobs, NR=L, MR=15)) or "")


def test_conv_column_blocks_split_evenly_among_threads() -> None:
    from minicc.ir.loops.gemm import _even_rows

    assert _even_rows(40, 6, 2, 2) == 5          # 8 blocks of 5 rows: 20 and 20, not 24 and 16
    assert _even_rows(20, 12, 2, 1) == 10
    assert _even_rows(10, 10, 2, 7) is None      # 5-row blocks would be narrower than allowed
    assert _even_rows(7, 7, 2, 1) is None         # an odd number of rows never splits in two
    for oh, most, th in [(56, 9, 2), (28, 9, 2), (14, 18, 2), (40, 6, 3), (13, 13, 2)]:
        r = _even_rows(oh, most, th, 1)
        if r is not None:
            chunk = -(-(-(-oh // r)) // th)         # blocks per thread
            assert max(min(oh, (t + 1) * chunk * r) - min(oh, t * chunk * r)
                       for t in range(th)) * th <= 1.05 * oh


def test_conv_column_blocks_divide_the_map_into_whole_tiles() -> None:
    """On 16-register CPUs a conv's column block is whole rows that divide the map (no tail
    block), of whole register tiles where that keeps 64 columns; panel rows avoid 1 KiB."""
    from minicc.ir.loops.gemm import _panel_stride, _whole_rows

    assert _whole_rows(28, 9, 28, 16) == 4        # 112 columns: 7 blocks of 7 whole tiles
    assert _whole_rows(56, 4, 56, 16) == 4        # 224
    assert _whole_rows(14, 14, 14, 16) == 14      # no whole-tile count divides: the whole map
    assert _whole_rows(20, 12, 20, 16) == 4       # 80 columns, not 12 rows with a tail
    assert _whole_rows(7, 7, 7, 16) == 7
    assert _whole_rows(13, 9, 13, 16) == 9        # prime: nothing divides, the most rows
    for oh, most, row in [(28, 9, 28), (40, 6, 40), (10, 10, 10), (80, 3, 80)]:
        r = _whole_rows(oh, most, row, 16)
        assert 1 <= r <= most and (oh % r == 0 or r == most)
    assert _panel_stride(256) == 272 and _panel_stride(512) == 528
    assert _panel_stride(224) == 224 and _panel_stride(64) == 64 and _panel_stride(49) == 64


@pytest.mark.parametrize("nc", [4, 8, 12])
def test_gemm_tail_tiles_are_masked_only_where_they_run_past_the_block(nc: int) -> None:
    """A 16-register CPU's conv (3 x 4 output map, 4 channels) in column blocks of `nc`: whole
    tiles, a block's last tile partly past it, and the map's last block short. Every case
    matches the reference."""
    from dataclasses import replace

    g, bufs, consts, inputs, ref = _one_group("conv_relu")
    ctx = ctx_for(g, bufs, consts, 1)
    ctx = replace(ctx, target=replace(ctx.target, features=("avx2", "fma")))
    rule = next(r for r in CPU_RULES if r.name == "cpu.gemm")
    knobs = dict(rule.defaults(ctx), NC=nc, NR=ctx.target.lanes, MR=2)
    low = schedule_group(ctx, CPU_RULES, knobs)
    np.testing.assert_allclose(_run_lowered(low, bufs, g, inputs, 1), ref, rtol=1e-5,
                               atol=1e-5)
