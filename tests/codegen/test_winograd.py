"""The Winograd template (ir/loops/winograd.py): F(2x2, 3x3)'s constants, its kernels in the
loop interpreter (which refuses reads of scratch nothing wrote), compiled kernels on random
geometries against onnx's reference, and where it is the default."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from minicc import CompileOptions, compile
from minicc.ir.interpret import interpret
from minicc.ir.loops.cpu import CPU_RULES, lower_group_cpu
from minicc.ir.loops.interp import buffer_arrays, run_kernel
from minicc.ir.loops.nodes import Buffer
from minicc.ir.loops.winograd import AT, BT, G, MATRICES, transformed_weights
from minicc.ir.parser import parse
from minicc.ir.passes.fuse import fuse as fuse_groups
from tests.loops.util import ctx_for


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_constants_compute_a_correlation(m: int) -> None:
    """A^T [(G g G^T) * (B^T d B)] A is the m x m correlation of the (m+2)-square patch d
    with g, for F(2x2, 3x3) and F(4x4, 3x3)."""
    bt, g_, at = MATRICES[m]
    n = m + 2
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal((n, n)), rng.standard_normal((3, 3))
        y = at @ ((g_ @ g @ g_.T) * (bt @ d @ bt.T)) @ at.T
        want = np.array([[np.sum(d[a:a + 3, b:b + 3] * g) for b in range(m)] for a in range(m)])
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    u = transformed_weights(w, m)
    assert u.shape == (n * n, 5, 3) and u.dtype == np.float32
    np.testing.assert_allclose(u[:, 2, 1].reshape(n, n), g_ @ w[2, 1] @ g_.T, rtol=1e-6)
    assert m != 2 or (bt is BT and g_ is G and at is AT)


IR = ("func @main(%x: f32[2,4,5,7], %w: f32[6,4,3,3], %b: f32[6], %r: f32[2,6,5,6]) -> "
      "(f32[2,6,5,6]) {\n"
      "  %c = conv(%x, %w, %b) {pads=[1,0,1,1]} : f32[2,6,5,6]\n"
      "  %s = add(%c, %r) : f32[2,6,5,6]\n  %y = relu(%s) : f32[2,6,5,6]\n  return %y\n}")


@pytest.mark.parametrize("sched", [
    "cpu.winograd: tile(F=2, MR=4, NR=16, KC=4, RB=2)",
    "cpu.winograd: tile(F=2, MR=3, NR=32, KC=2, RB=1)",
    "cpu.winograd: tile(F=2, MR=6, NR=16, KC=3, RB=3); parallel(m)",
    "cpu.winograd: tile(F=2, MR=4, NR=16, KC=4, RB=1); parallel(blk)",
    "cpu.winograd: tile(F=4, MR=4, NR=16, KC=4, RB=1)",
    "cpu.winograd: tile(F=4, MR=6, NR=16, KC=3, RB=2); parallel(m)",
])
def test_winograd_kernels_in_the_interpreter(sched: str) -> None:
    """Odd output height (a last tile row of one output row), asymmetric padding, a batch of
    two, K in blocks (partial sums in Y), bias, residual and ReLU in the output transform;
    both ways of sharing among threads. Every scratch element read was written first."""
    m = parse(IR)
    f = m.main
    rng = np.random.default_rng(3)
    feeds = {n: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
             for n, v in zip(f.input_names, f.inputs)}
    ref = interpret(m, feeds)["y"]
    g = fuse_groups(f).groups[0]
    values = dict(zip(f.input_names, f.inputs))
    consts = {values["w"]: feeds["w"]}
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    threads = 2 if "parallel" in sched else 1
    low = lower_group_cpu(ctx_for(g, bufs, consts, threads, schedules={"k": sched}))
    assert low.kernel.schedule == "cpu.winograd"
    arrays = {bufs[v].name: feeds[n] for n, v in zip(f.input_names, f.inputs) if v in bufs}
    arrays.update({b.name: a for b, a in low.packed.items()})
    arrs = buffer_arrays(low.kernel, **arrays)
    run_kernel(low.kernel, arrs, threads)
    np.testing.assert_allclose(arrs[bufs[g.output].name], ref, rtol=1e-5, atol=1e-5)


IR14 = ("func @main(%x: f32[1,4,14,13], %w: f32[6,4,3,3]) -> (f32[1,6,14,13]) {\n"
        "  %c = conv(%x, %w) {pads=[1,1,1,1]} : f32[1,6,14,13]\n  %y = relu(%c) : f32[1,6,14,13]\n"
        "  return %y\n}")


@pytest.mark.parametrize("f,rb", [(2, 2), (2, 3), (4, 3), (4, 1)])
def test_threads_taking_blocks_take_equal_rows(f: int, rb: int) -> None:
    """parallel(blk) at 2 threads: the blocks are a multiple of the threads and split the tile
    rows within one (7 tile rows in blocks of at most 2: 1, 2, 2, 2, where they were 2, 2, 2,
    1; at 56x56 8 and 6 rows a thread became 7 and 7). The kernel runs in the interpreter,
    which refuses reads of scratch nothing wrote (a thread's first block may be the short
    one), and matches the reference."""
    from minicc.ir.loops.winograd import WinogradKernel, WinoPlan, winograd_geometry

    m = parse(IR14)
    f_ = m.main
    rng = np.random.default_rng(7)
    feeds = {n: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
             for n, v in zip(f_.input_names, f_.inputs)}
    g = fuse_groups(f_).groups[0]
    values = dict(zip(f_.input_names, f_.inputs))
    consts = {values["w"]: feeds["w"]}
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    sched = f"cpu.winograd: tile(F={f}, MR=4, NR=16, KC=4, RB={rb}); parallel(blk)"
    ctx = ctx_for(g, bufs, consts, 2, schedules={"k": sched})
    wk = WinogradKernel(ctx, winograd_geometry(ctx), WinoPlan(4, 16, 4, rb, "blk", f))
    th = -(-14 // f)
    assert wk.even and wk.nblk % 2 == 0
    share = [b * th // wk.nblk for b in range(wk.nblk + 1)]
    sizes = [share[b + 1] - share[b] for b in range(wk.nblk)]
    assert max(sizes) <= rb and max(sizes) - min(sizes) <= 1
    half = wk.nblk // 2
    assert abs(sum(sizes[:half]) - sum(sizes[half:])) <= 1
    low = lower_group_cpu(ctx)
    arrays = {bufs[v].name: feeds[n] for n, v in zip(f_.input_names, f_.inputs) if v in bufs}
    arrays.update({b.name: a for b, a in low.packed.items()})
    arrs = buffer_arrays(low.kernel, **arrays)
    run_kernel(low.kernel, arrs, 2)
    np.testing.assert_allclose(arrs[bufs[g.output].name], interpret(m, feeds)["y"],
                               rtol=1e-5, atol=1e-5)


def _conv_model(n: int, c: int, m: int, h: int, w: int, pads: list[int], bias: bool,
                relu: bool, residual: bool, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((m, c, 3, 3)) * 0.2).astype(np.float32)
    inits = [helper.make_tensor("w", TensorProto.FLOAT, W.shape, W.ravel())]
    if bias:
        inits.append(helper.make_tensor("b", TensorProto.FLOAT, [m],
                                        rng.standard_normal(m).astype(np.float32)))
    oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["c"], pads=pads)]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])]
    out = "c"
    if residual:
        ins.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [n, m, oh, ow]))
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
        out = "s"
    nodes.append(helper.make_node("Relu" if relu else "Identity", [out], ["y"]))
    gr = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [n, m, oh, ow])], inits)
    return helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)]), (oh, ow)


@pytest.mark.parametrize("seed", range(10))
def test_compiled_winograd_matches_the_reference(seed: int) -> None:
    """Random geometries (odd and even sizes, 0 or 1 pixel of padding per side, batch 1-2,
    bias, ReLU, a residual), tiles, K blocks, row blocks and threads."""
    rng = np.random.default_rng(100 + seed)
    n, c, m = int(rng.integers(1, 3)), int(rng.choice([16, 20, 33])), int(rng.choice([16, 24, 35]))
    h, w = int(rng.integers(5, 19)), int(rng.integers(5, 40))
    pads = [int(v) for v in rng.integers(0, 2, 4)]
    bias, relu, res = (bool(rng.integers(0, 2)) for _ in range(3))
    threads = int(rng.integers(1, 3))
    mdl, (oh, ow) = _conv_model(n, c, m, h, w, pads, bias, relu, res, seed)
    feeds = {"x": rng.standard_normal((n, c, h, w)).astype(np.float32)}
    if res:
        feeds["r"] = rng.standard_normal((n, m, oh, ow)).astype(np.float32)
    ref = ReferenceEvaluator(mdl).run(None, feeds)[0]
    mr, rb, kc = int(rng.choice([4, 8, 12])), int(rng.integers(1, 5)), int(rng.choice([8, c]))
    fsz = int(rng.choice([2, 4]))
    par = "" if threads == 1 else str(rng.choice(["", "; parallel(m)", "; parallel(blk)"]))
    sched = f"cpu.winograd: tile(F={fsz}, MR={mr}, NR=32, KC={kc}, RB={rb}){par}"
    kname = compile(mdl, options=CompileOptions(threads=threads, cache=False)
                    ).artifact.summary["kernels"][0]["name"]
    cm = compile(mdl, options=CompileOptions(threads=threads, cache=False),
                 schedules={kname: sched})
    assert cm.artifact.summary["kernels"][0]["schedule"].startswith("cpu.winograd")
    np.testing.assert_allclose(cm.run(feeds)["y"], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_winograd_is_the_default_where_it_pays() -> None:
    """3x3 stride-1 convs of 16+ channels over 10x10+ outputs, on AVX-512 and AVX2; not at 7x7
    (the weights dominate), not with strides, not for 512 x 512 channels (U is 16 MiB)."""
    from minicc.ir.loops.winograd import CpuWinograd

    rule = next(r for r in CPU_RULES if r.name == "cpu.winograd")
    assert isinstance(rule, CpuWinograd)

    def ctx(c: int, m: int, hw: int, stride: int = 1):  # type: ignore[no-untyped-def]
        oh = (hw + 2 - 3) // stride + 1
        text = (f"func @main(%x: f32[1,{c},{hw},{hw}], %w: f32[{m},{c},3,3]) -> "
                f"(f32[1,{m},{oh},{oh}]) {{\n  %c = conv(%x, %w) {{pads=[1,1,1,1], "
                f"strides=[{stride},{stride}]}} : f32[1,{m},{oh},{oh}]\n  return %c\n}}")
        f = parse(text).main
        g = fuse_groups(f).groups[0]
        bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
                for i, v in enumerate(list(g.inputs()) + [g.output])}
        w = np.zeros((m, c, 3, 3), np.float32)
        return ctx_for(g, bufs, {f.inputs[1]: w})

    assert rule.applies(ctx(64, 64, 28))
    assert rule.applies(ctx(16, 32, 10))
    assert not rule.applies(ctx(64, 64, 7))
    assert not rule.applies(ctx(64, 64, 28, stride=2))
    assert not rule.applies(ctx(512, 512, 14))
    assert not rule.applies(ctx(8, 64, 28))
    assert rule.defaults(ctx(64, 64, 28))["F"] == 4       # 48+ channels at 28x28 and up
    assert rule.defaults(ctx(32, 32, 56))["F"] == 2       # fewer channels: transforms dominate
    assert rule.defaults(ctx(64, 64, 14))["F"] == 2       # 4 tiles to a row
    assert rule.defaults(ctx(256, 256, 28))["F"] == 2     # U past L2
    c = ctx(64, 64, 28)
    avx2 = replace(c, target=replace(c.target, features=("avx2", "fma"), vector_bits=256))
    assert rule.applies(avx2)
    for x in (c, avx2):       # the default tile fits the registers
        d = rule.defaults(x)
        assert d["RB"] >= 1 and rule.invalid(x, d) is None


@pytest.mark.parametrize("c,m,hw,rb", [(64, 192, 56, 4),     # F=4: 14 tile rows, U 1.8 MiB
                                       (128, 32, 28, 4),     # F=2: 14 tile rows (densenet)
                                       (32, 128, 27, 4),     # F=2: 14 tile rows (squeezenet)
                                       (16, 16, 80, 4),      # 40 rows: 800 columns a thread
                                       (128, 128, 20, 5),    # 10 rows: 5 and 5, not 6 and 4
                                       (128, 160, 14, 4)])   # 7 rows: 4 and 3 (inception)
def test_two_threads_take_blocks_they_share_evenly(c: int, m: int, hw: int, rb: int) -> None:
    """At 2 threads the tile rows go in blocks the threads share evenly (14 rows in 4 blocks
    of up to 4, not 3 blocks of up to 6, where the threads fell back to sharing the channels,
    each transforming the whole input; the busiest thread's padded columns first: 40 rows of
    40 tiles in blocks of 4, 800 columns each, not of 12, 960 and 640), and the compiled model
    (weights constant) still matches the graph interpreter."""
    from minicc.ir.loops.winograd import CpuWinograd

    rule = next(r for r in CPU_RULES if r.name == "cpu.winograd")
    assert isinstance(rule, CpuWinograd)
    oh = hw
    text = (f"func @main(%x: f32[1,{c},{hw},{hw}], %w: f32[{m},{c},3,3]) -> "
            f"(f32[1,{m},{oh},{oh}]) {{\n  %c = conv(%x, %w) {{pads=[1,1,1,1]}} : "
            f"f32[1,{m},{oh},{oh}]\n  return %c\n}}")
    mod = parse(text)
    f = mod.main
    g = fuse_groups(f).groups[0]
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((m, c, 3, 3)) * 0.1).astype(np.float32)
    ctx2 = ctx_for(g, bufs, {f.inputs[1]: w}, threads=2)
    d = rule.defaults(ctx2)
    assert (d["RB"], d["parallel"]) == (rb, "blk"), d
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    ref = interpret(mod, {"x": x, "w": w})["c"]
    from minicc.ir.builder import GraphBuilder
    from minicc.ir.graph import Module
    from minicc.ir.types import TensorType
    b = GraphBuilder("main")
    xi = b.input(TensorType.of(x), "x")
    y = b.op1("conv", [xi, b.const(w, "w")], {"pads": [1, 1, 1, 1]}, name="y")
    built = compile(Module((b.finish([y], ["y"]),)), options=CompileOptions(threads=2,
                                                                         cache=False))
    sched = built.artifact.summary["kernels"][0]["schedule"]
    assert f"RB={rb}" in sched and "parallel(blk)" in sched, sched
    np.testing.assert_allclose(built.run({"x": x})["y"], ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())
