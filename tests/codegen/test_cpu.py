"""The compiled CPU path (graph passes -> fusion -> loop IR -> LLVM -> native code) against each
op's numpy reference: every per-op sample from tests/ops/samples.py as a one-op model, and the
GEMM template (implicit-GEMM conv, packed matmul) on shapes chosen to hit its edge cases.

Every model is compiled with `cache=False`, so nothing here reads or writes ~/.cache.
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Any, Sequence

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minicc import CompileOptions, CompiledModel, compile
from minicc.ir import OPS
from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Module
from minicc.ir.registry import FusionKind, canonical_attrs, full_attrs, get_op
from minicc.ir.types import TensorType
from tests.ops.samples import SAMPLES

# ---------------------------------------------------------------------------------------------
# Tolerances (the one place they are chosen)
#
# f32 unit roundoff u = 2**-24 ~ 6e-8; one ulp at 1.0 is 2**-23 ~ 1.2e-7.
#
# * "rounded": ops IEEE arithmetic gives correctly rounded (add, mul, div, sqrt, min/max,
#   relu, floor, where, pad, ...). numpy does the same, so results agree to the last bit
#   except where the compiler contracts a*b+c into an FMA (one rounding instead of two):
#   2 ulp relative, plus 1 ulp at 1.0 absolute for results that cancel towards 0.
# * "transcendental": exp/log/tanh/erf/... come from minicc's own vectorized math library,
#   not libm. A few ulp is the usual accuracy of such polynomial kernels: rtol 2e-6 (~16 ulp,
#   headroom for composites like mish = x*tanh(softplus(x))), atol 2 ulp at 1.0 for results near
#   0 (elu(x) = exp(x) - 1 for small x, sin near pi, ...). Short formulas the compiler may
#   contract or reorder (hard_sigmoid's a*x+b, resize's interpolation weights) share this class.
# * "accumulate": reductions and normalizations (softmax, layer_norm, avg_pool, ...) sum in a
#   different order than numpy (vector lanes, pairwise blocks): rtol 1e-5, atol 1e-6.
# * "gemm": conv, conv_transpose, matmul, einsum. The classic error bound for a length-K dot
#   product in any summation order (Higham, Accuracy and Stability, 3.1) is
#       |fl(sum a_k b_k) - sum a_k b_k| <= gamma_K * sum |a_k b_k|,  gamma_K = K u / (1 - K u)
#   so the tolerance is per element: gamma_K * reference(|inputs|) (+ 2 ulp of the result),
#   with K the reduction length (+1 for a bias; see reduction_length). Cancellation makes a
#   plain rtol meaningless here (a sum of +-2 values can be ~0), and this bound is still tight:
#   a 1e-5 relative error in a sample conv fails it.
# * f16 (not in the samples today): 1e-3 / 1e-3. f64: 1e-12. Integers and bools: exact.
# ---------------------------------------------------------------------------------------------

U32 = 2.0 ** -24
ULP1 = 2.0 ** -23
TOL_F32 = {
    "rounded": (2 * ULP1, ULP1),
    "transcendental": (2e-6, 2 * ULP1),
    "accumulate": (1e-5, 1e-6),
}
TOL_OTHER = {"float16": (1e-3, 1e-3), "float64": (1e-12, 1e-12)}
TRANSCENDENTAL = frozenset({
    "exp", "log", "tanh", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh",
    "acosh", "atanh", "erf", "sigmoid", "softplus", "pow", "elu", "celu", "selu", "mish", "gelu",
    "softsign", "hard_swish", "hard_sigmoid", "resize"})
GEMM = frozenset({"conv", "conv_transpose", "matmul", "einsum"})


def op_class(name: str) -> str:
    if name in GEMM:
        return "gemm"
    if name in TRANSCENDENTAL:
        return "transcendental"
    if get_op(name).kind >= FusionKind.REDUCE or name in ("batch_norm", "cumsum"):
        return "accumulate"
    return "rounded"


def reference(name: str, arrays: Sequence[np.ndarray], attrs: dict) -> list[np.ndarray]:
    at = full_attrs(name, canonical_attrs(name, attrs))
    return [np.asarray(r) for r in OPS[name].reference(list(arrays), at)]


def reduction_length(name: str, arrays: Sequence[np.ndarray]) -> int:
    """An upper bound on how many products one output element of a GEMM-like op sums (+1 for a
    bias)."""
    if name == "conv":
        w = arrays[1]
        return w.size // w.shape[0] + 1
    if name == "conv_transpose":
        w = arrays[1]
        return w.shape[0] * int(np.prod(w.shape[2:])) + 1
    if name == "matmul":
        return arrays[0].shape[-1]
    return min(a.size for a in arrays)   # einsum: contracted dims appear in every operand


def assert_matches(name: str, got: np.ndarray, ref: np.ndarray, arrays: Sequence[np.ndarray],
                   attrs: dict, what: str = "") -> None:
    """`got` equals the reference within the tolerance of `name`'s class and dtype."""
    msg = f"{name} {what}".strip()
    assert got.dtype == ref.dtype, f"{msg}: dtype {got.dtype} vs {ref.dtype}"
    assert got.shape == ref.shape, f"{msg}: shape {got.shape} vs {ref.shape}"
    if ref.dtype.kind not in "fc":
        np.testing.assert_array_equal(got, ref, err_msg=msg)
        return
    if ref.dtype != np.float32 and ref.dtype.name not in TOL_OTHER:
        # a storage-only type (bf16, float8, ...): converted on the host by the reference's
        # own code, so exactly equal
        np.testing.assert_array_equal(got.astype(np.float32), ref.astype(np.float32),
                                      err_msg=msg)
        return
    if ref.dtype != np.float32:
        rtol, atol = TOL_OTHER[ref.dtype.name]
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=msg)
        return
    cls = op_class(name)
    if cls != "gemm":
        rtol, atol = TOL_F32[cls]
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=msg)
        return
    k = reduction_length(name, arrays)
    gamma = k * U32 / (1 - k * U32)
    bound = gamma * np.abs(reference(name, [np.abs(a) for a in arrays], attrs)[0])
    bound = bound.astype(np.float64) + 2 * ULP1 * np.abs(ref)  # + the final store's rounding
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    bad = err > bound
    assert not bad.any(), (f"{msg}: {int(bad.sum())} of {ref.size} elements exceed the "
                           f"gamma_K bound (K<={k}); worst error {float(err.max()):.3g}, "
                           f"bound there {float(bound.reshape(-1)[int(np.argmax(err))]):.3g}")


# ---------------------------------------------------------------------------------------------
# One-op models from the registry samples

CASES = [(name, i) for name in sorted(OPS) if name != "const"
         for i in range(len(SAMPLES.get(name, [None])))]


def one_op_module(name: str, arrays: Sequence[np.ndarray], attrs: dict) -> Module:
    b = GraphBuilder("main")
    ins = [b.input(TensorType.of(a), f"in{k}") for k, a in enumerate(arrays)]
    outs = b.op(name, ins, attrs)
    return Module((b.finish(list(outs), [f"out{k}" for k in range(len(outs))]),))


def compile_one(name: str, arrays: Sequence[np.ndarray], attrs: dict, threads: int
                ) -> CompiledModel:
    return compile(one_op_module(name, arrays, attrs),
                   options=CompileOptions(threads=threads, cache=False))


def feeds(arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    # (not np.ascontiguousarray: it makes a 0-d array 1-d)
    return {f"in{k}": a if a.flags.c_contiguous else a.copy() for k, a in enumerate(arrays)}


def sample(name: str, i: int) -> tuple[list[np.ndarray], dict]:
    args, attrs = SAMPLES[name][i]
    return [np.asarray(a) for a in args], dict(attrs)


@functools.lru_cache(maxsize=None)
def check_one(name: str, i: int, threads: int) -> dict[str, np.ndarray]:
    """Compile sample i of `name`, run it, check it; the outputs (memoized per module run, so
    the 2-thread tests compare against the 1-thread build without compiling it twice)."""
    arrays, attrs = sample(name, i)
    cm = compile_one(name, arrays, attrs, threads)
    got = cm.run(feeds(arrays))
    refs = reference(name, arrays, attrs)
    assert len(got) == len(refs)
    for k, r in enumerate(refs):
        assert_matches(name, got[f"out{k}"], r, arrays, attrs,
                       f"sample {i} output {k} threads={threads}")
    return got


def test_samples_cover_every_compilable_op() -> None:
    assert {n for n, _ in CASES} == set(OPS) - {"const"}


@pytest.mark.parametrize("name,i", CASES)
def test_op_compiled_matches_reference(name: str, i: int) -> None:
    check_one(name, i, threads=1)


def _parallel_subset() -> list[tuple[str, int]]:
    elementwise = {"add", "mul", "sub", "div", "exp", "relu", "sigmoid", "tanh", "where",
                   "gelu", "clip", "cast"}
    pick = []
    for name, i in CASES:
        kind = get_op(name).kind
        if name in elementwise or name in ("conv", "matmul") or (
                kind == FusionKind.REDUCE and name.startswith(("reduce_", "softmax", "arg",
                                                               "layer_norm", "avg_pool",
                                                               "max_pool"))):
            pick.append((name, i))
    return pick


@pytest.mark.parametrize("name,i", _parallel_subset())
def test_op_compiled_two_threads(name: str, i: int) -> None:
    """Threads split whole rows/blocks and run the same code on each, so the results are
    bit-identical to the 1-thread build."""
    two = check_one(name, i, threads=2)
    one = check_one(name, i, threads=1)
    for k in one:
        np.testing.assert_array_equal(two[k], one[k],
                                      err_msg=f"{name} sample {i}: 2 threads vs 1")


# ---------------------------------------------------------------------------------------------
# The GEMM template on awkward shapes (MR=6, NR=32, KC=256, NC=256)

def rand(*shape: int) -> np.ndarray:
    """U(-1, 1) data, seeded by the shape so each test's data is independent of test order."""
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()))
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


class Built:
    """A model built with constants (so conv/matmul get packed weights, the GEMM path)."""

    def __init__(self, module: Module, inputs: dict[str, np.ndarray], expect: np.ndarray,
                 bound_args: tuple[str, list[np.ndarray], dict] | None = None):
        self.module, self.inputs, self.expect, self.bound_args = module, inputs, expect, bound_args

    def run(self, threads: int, dump: tuple[str, ...] = (),
            schedules: dict[str, str] | None = None) -> tuple[np.ndarray, CompiledModel]:
        cm = compile(self.module, options=CompileOptions(threads=threads, cache=False,
                                                         dump=dump, schedules=schedules))
        return cm.run(self.inputs)["y"], cm


def conv_model(xs: tuple[int, ...], ws: tuple[int, ...], attrs: dict, bias: bool = True
               ) -> Built:
    x, w = rand(*xs), rand(*ws)
    arrays = [x, w] + ([rand(ws[0])] if bias else [])
    b = GraphBuilder("main")
    xi = b.input(TensorType.of(x), "x")
    consts = [b.const(a, n) for a, n in zip(arrays[1:], ("w", "bias"))]
    y = b.op1("conv", [xi] + consts, attrs, name="y")
    m = Module((b.finish([y], ["y"]),))
    return Built(m, {"x": x}, reference("conv", arrays, attrs)[0], ("conv", arrays, attrs))


def matmul_model(ash: tuple[int, ...], bsh: tuple[int, ...], b_const: bool) -> Built:
    a, bm = rand(*ash), rand(*bsh)
    gb = GraphBuilder("main")
    ai = gb.input(TensorType.of(a), "a")
    inputs = {"a": a}
    if b_const:
        bi = gb.const(bm, "w")
    else:
        bi = gb.input(TensorType.of(bm), "b")
        inputs["b"] = bm
    y = gb.op1("matmul", [ai, bi], name="y")
    m = Module((gb.finish([y], ["y"]),))
    return Built(m, inputs, reference("matmul", [a, bm], {})[0], ("matmul", [a, bm], {}))


def check_built(bt: Built, rule: str = "cpu.gemm") -> None:
    """Correct at 1 and 2 threads, the template `rule` was used, and both runs agree bit for
    bit (threads split whole output blocks or planes; each element's sum order is the same)."""
    one, cm = bt.run(1, dump=("loops",))
    assert f"schedule {rule}:" in cm.report.dumps["loops"], f"{rule} was not used"
    two, _ = bt.run(2)
    assert bt.bound_args is not None
    name, arrays, attrs = bt.bound_args
    assert_matches(name, one, bt.expect, arrays, attrs, "threads=1")
    assert_matches(name, two, bt.expect, arrays, attrs, "threads=2")
    np.testing.assert_array_equal(one, two, err_msg="1 thread vs 2 threads")


MATMULS = {
    # id: (A shape, B shape, B constant?)
    "m7_k300_n45": ((7, 300), (300, 45), True),          # M, N off-tile; 2 K blocks
    "m13_k600_n70": ((13, 600), (600, 70), True),        # 3 K blocks, tail K block of 88
    "m5_k33_n257": ((5, 33), (33, 257), True),           # N > NC: 2 column blocks, 1-col tail
    "m1_k5_n1": ((1, 5), (5, 1), True),                  # degenerate 1x1 output
    "m7_k300_n45_runtime_b": ((7, 300), (300, 45), False),  # B packed at run time
    "m11_k257_n33_runtime_b": ((11, 257), (257, 33), False),
    "batch3": ((3, 7, 20), (3, 20, 33), False),
    "batch_broadcast_b_const": ((4, 5, 9), (9, 7), True),
    "batch_broadcast_a": ((5, 9), (2, 9, 7), False),
    "batch_broadcast_both": ((2, 1, 5, 9), (3, 9, 7), False),
    "batch_broadcast_k300": ((2, 1, 7, 300), (1, 3, 300, 40), False),
    # one B for every batch: the batches fold into the rows of one tall GEMM
    "rnn_projection_rows_of_one": ((80, 1, 64), (64, 96), True),
    "two_batch_dims_runtime_b": ((3, 2, 5, 9), (9, 7), False),
    "two_batch_dims_b_ones": ((2, 3, 4, 9), (1, 1, 9, 7), True),
}


@pytest.mark.parametrize("case", list(MATMULS))
def test_gemm_matmul_awkward_shapes(case: str) -> None:
    ash, bsh, const = MATMULS[case]
    check_built(matmul_model(ash, bsh, const))


def test_batches_sharing_one_b_are_one_tall_gemm() -> None:
    """[seq, 1, in] @ [in, out] (an RNN's input projection) is 80 rows of one GEMM, tiled
    with full register rows, not 80 GEMMs of one row each."""
    _, cm = matmul_model((80, 1, 64), (64, 96), True).run(1)
    sched = _kernels(cm)[0]["schedule"]
    assert "MR=1," not in sched, sched


CONVS = {
    # id: (x shape, w shape, attrs)
    "1x1": ((1, 16, 7, 9), (10, 16, 1, 1), {}),
    "7x7_s2_p3": ((1, 3, 20, 20), (8, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    "k288_two_k_blocks": ((1, 32, 6, 6), (13, 32, 3, 3), {"pads": [1, 1, 1, 1]}),
    "k576_three_k_blocks": ((1, 64, 5, 5), (7, 64, 3, 3), {}),
    "group2_batch2": ((2, 8, 9, 9), (10, 4, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "group4": ((1, 16, 8, 8), (8, 4, 3, 3), {"group": 4}),
    "strided_dilated_asym_pads": ((1, 5, 11, 10), (7, 5, 3, 3),
                                  {"strides": [2, 3], "dilations": [2, 1],
                                   "pads": [1, 2, 0, 1]}),
    "wide_rows_ow300": ((1, 4, 3, 300), (6, 4, 1, 3), {"pads": [0, 1, 0, 1]}),
    "p323_batch3": ((3, 3, 17, 19), (6, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "m40_rect_kernel": ((1, 6, 9, 13), (40, 6, 2, 5), {"strides": [1, 2]}),
    # a 1x1 output map (squeeze-excite, heads): the transposed view, channels in the lanes
    "map1x1_se": ((1, 40, 1, 1), (24, 40, 1, 1), {}),
    "map1x1_k300_batch2": ((2, 300, 1, 1), (70, 300, 1, 1), {}),
    "map1x1_3x3_padded": ((1, 8, 1, 1), (5, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("case", list(CONVS))
def test_gemm_conv_awkward_shapes(case: str) -> None:
    xs, ws, attrs = CONVS[case]
    check_built(conv_model(xs, ws, attrs))


# The depthwise template (cpu.depthwise): polyphase planes for the stride, a flat output
DEPTHWISE = {
    # id: (x shape, kernel, attrs)
    "3x3_s1_p1": ((1, 16, 12, 12), 3, {"pads": [1, 1, 1, 1]}),
    "3x3_s2_p1_odd": ((1, 19, 15, 13), 3, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "5x5_s2_p2_map7": ((1, 33, 14, 14), 5, {"strides": [2, 2], "pads": [2, 2, 2, 2]}),
    "5x5_s1_map7": ((1, 40, 7, 7), 5, {"pads": [2, 2, 2, 2]}),
    "3x3_dilated2_batch2": ((2, 6, 11, 9), 3, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "3x3_s3_asym_pads": ((1, 7, 16, 17), 3, {"strides": [3, 3], "pads": [0, 1, 2, 0]}),
    "7x7_no_pad": ((1, 4, 9, 30), 7, {}),
    "3x3_map1": ((1, 24, 1, 1), 3, {"pads": [1, 1, 1, 1]}),
    # planes past BAND_BYTES are taken in bands of rows (the last one short here)
    "3x3_s1_map58": ((1, 3, 58, 58), 3, {"pads": [1, 1, 1, 1]}),
    "3x3_s2_map113_bands": ((1, 2, 113, 113), 3, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    # maps of up to 4x4 (8x8 at stride 1) put channels in the lanes: a channel tail, a batch,
    # a stride
    "3x3_s2_map4_batch2_c40": ((2, 40, 8, 8), 3, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "3x3_map4_c144": ((1, 144, 4, 4), 3, {"pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("case", ["5x5_s1_map7", "3x3_map1", "3x3_s2_map4_batch2_c40",
                                  "3x3_map4_c144"])
def test_depthwise_channels_in_the_lanes_on_every_cpu(case: str) -> None:
    """The small-map default of CPUs with fast gathers (vectorize(c)), forced, so that the
    kernel stays tested where it is not the default (AMD's Zen)."""
    xs, k, attrs = DEPTHWISE[case]
    c = xs[1]
    bt = conv_model(xs, (c, 1, k, k), {**attrs, "group": c})
    assert bt.bound_args is not None
    name, arrays, a = bt.bound_args
    for threads in (1, 2):
        sched = "cpu.depthwise: tile(RX=6); vectorize(c)" + ("; parallel(t)" if threads > 1
                                                             else "")
        got, cm = bt.run(threads, schedules={"k0_conv": sched})
        assert _kernels(cm)[0]["schedule"] == sched
        assert_matches(name, got, bt.expect, arrays, a, f"threads={threads}")


@pytest.mark.parametrize("case", list(DEPTHWISE))
def test_depthwise_conv_template(case: str) -> None:
    xs, k, attrs = DEPTHWISE[case]
    c = xs[1]
    bt = conv_model(xs, (c, 1, k, k), {**attrs, "group": c})
    check_built(bt, rule="cpu.depthwise")
    sched = _kernels(bt.run(1)[1])[0]["schedule"]
    oh, ow = bt.expect.shape[2:]
    from minicc.codegen.llvm.target import cpu_target

    s1 = attrs.get("strides", [1, 1]) == [1, 1]
    s2 = attrs.get("strides") == [2, 2]
    fits = (s1 or s2) and attrs.get("dilations", [1, 1]) == [1, 1]
    most = 64 if s1 else 16   # stride 1: maps up to 8x8
    # (where gathers are slow, AMD's Zen, the direct kernel instead when it fits)
    lanes = oh * ow <= most and c >= 16 and (cpu_target().fast_gather or not fits)
    assert ("vectorize(c)" in sched) == lanes, sched
    # read in place (the epilogue is the bias alone): strides 1 and 2, not dilated
    direct = fits and not lanes
    assert ("vectorize(x)" in sched) == direct, sched
    assert ("RY=" in sched) == (case.endswith("_bands") or direct), sched
    if direct and s2 and ow <= 16:      # rows of one vector: the rows that divide the map
        want = oh if oh <= 8 else next(r for r in (8, 7, 6, 5, 4) if oh % r == 0)
        assert f"RX=1, RY={want})" in sched, sched


@settings(max_examples=12, deadline=None, derandomize=True)
@given(c=st.integers(1, 20), h=st.integers(1, 12), w=st.integers(1, 12), k=st.integers(1, 5),
       s=st.integers(1, 3), d=st.integers(1, 2), pads=st.lists(st.integers(0, 2), min_size=4,
                                                              max_size=4),
       bias=st.booleans(), ry=st.integers(1, 4))
def test_depthwise_template_on_any_geometry(c: int, h: int, w: int, k: int, s: int, d: int,
                                            pads: list, bias: bool, ry: int) -> None:
    """Any depthwise geometry whose output is not empty: the template against the reference,
    also in bands of ry output rows and with channels in the lanes."""
    assume((h + pads[0] + pads[2] - d * (k - 1) - 1) >= 0)
    assume((w + pads[1] + pads[3] - d * (k - 1) - 1) >= 0)
    attrs = {"group": c, "strides": [s, s], "dilations": [d, d], "pads": pads}
    rule = "cpu.depthwise" if c > 1 else "cpu.gemm"   # one channel is a plain conv
    bt = conv_model((1, c, h, w), (c, 1, k, k), attrs, bias=bias)
    check_built(bt, rule=rule)
    if c > 1:       # and with channels in the lanes, whatever the map's size
        _, cm = bt.run(1)
        name = _kernels(cm)[0]["name"]
        for threads in (1, 2):
            got, cm = bt.run(threads, schedules={
                name: f"cpu.depthwise: tile(RX={min(3, h * w)}); vectorize(c)"
                      + ("; parallel(t)" if threads > 1 else "")})
            assert "vectorize(c)" in _kernels(cm)[0]["schedule"]
            assert bt.bound_args is not None
            assert_matches("conv", got, bt.expect, bt.bound_args[1], attrs, "channels in lanes")
            got, cm = bt.run(threads, schedules={
                name: f"cpu.depthwise: tile(RX=2, RY={ry})"
                      + ("; parallel(t)" if threads > 1 else "")})
            assert_matches("conv", got, bt.expect, bt.bound_args[1], attrs, f"bands of {ry}")
            if s == 1 and d == 1:       # read in place: tiles of ry rows x rx vectors
                rx = 1 + (c + ry) % 2
                got, cm = bt.run(threads, schedules={
                    name: f"cpu.depthwise: tile(RX={rx}, RY={ry}); vectorize(x)"
                          + ("; parallel(t)" if threads > 1 else "")})
                assert "vectorize(x)" in _kernels(cm)[0]["schedule"]
                assert_matches("conv", got, bt.expect, bt.bound_args[1], attrs,
                               f"direct, {ry} x {rx}")


@settings(max_examples=12, deadline=None, derandomize=True)
@given(c=st.integers(2, 9), h=st.integers(1, 15), w=st.integers(1, 40), kh=st.integers(1, 5),
       kw=st.integers(1, 5), pads=st.lists(st.integers(0, 2), min_size=4, max_size=4),
       s=st.integers(1, 2), ry=st.integers(1, 8), rx=st.integers(1, 2),
       threads=st.integers(1, 2), bias=st.booleans())
def test_direct_depthwise_on_any_geometry(c: int, h: int, w: int, kh: int, kw: int,
                                          pads: list, s: int, ry: int, rx: int, threads: int,
                                          bias: bool) -> None:
    """vectorize(x): register tiles of ry rows x rx vectors over any map (rows and vectors
    past the map's edge), any kernel, pads (the taps outside the image read as zero) and
    stride 1 or 2, natively and in the loop interpreter (which refuses a read outside the
    input)."""
    from minicc.driver import lower_program

    assume(h + pads[0] + pads[2] >= kh and w + pads[1] + pads[3] >= kw)
    attrs = {"group": c, "pads": pads, "strides": [s, s]}
    bt = conv_model((1, c, h, w), (c, 1, kh, kw), attrs, bias=bias)
    _, cm = bt.run(1)
    name = _kernels(cm)[0]["name"]
    text = (f"cpu.depthwise: tile(RX={rx}, RY={ry}); vectorize(x)"
            + ("; parallel(t)" if threads > 1 else ""))
    got, cm = bt.run(threads, schedules={name: text})
    assert _kernels(cm)[0]["schedule"] == text
    assert bt.bound_args is not None
    assert_matches("conv", got, bt.expect, bt.bound_args[1], attrs, f"direct {text}")
    step = lower_program(bt.module, options=CompileOptions(
        threads=threads, cache=False, schedules={name: text})).kernel_steps[0]
    got = _interpret_step(step, bt.inputs["x"], threads)
    assert_matches("conv", got, bt.expect, bt.bound_args[1], attrs, f"interpreted {text}")


@pytest.mark.parametrize("xs,k,s,sched", [
    ((1, 6, 14, 14), 5, 1, None),          # 7 rows a tile, two tiles
    ((1, 5, 30, 40), 3, 2, None),          # stride 2 onto rows of 20
    ((1, 3, 23, 37), 3, 1, "tile(RX=2, RY=5); vectorize(x)"),   # a short last band
])
def test_direct_depthwise_with_silu_runs_the_epilogue_over_the_band(
        xs: tuple[int, ...], k: int, s: int, sched: str | None) -> None:
    """A SiLU epilogue (a polynomial) runs over the band's sums in scratch after the register
    tiles, not on the registers: native at 1 and 2 threads and interpreted, against the
    reference conv and x * sigmoid(x)."""
    from minicc.driver import lower_program

    c = xs[1]
    x, w, bias = rand(*xs), rand(c, 1, k, k), rand(c)
    attrs = {"group": c, "pads": [k // 2] * 4, "strides": [s, s]}
    b = GraphBuilder("main")
    xi = b.input(TensorType.of(x), "x")
    conv = b.op1("conv", [xi, b.const(w, "w"), b.const(bias, "bias")], attrs)
    y = b.op1("mul", [conv, b.op1("sigmoid", [conv])], name="y")
    m = Module((b.finish([y], ["y"]),))
    ref = reference("conv", [x, w, bias], attrs)[0].astype(np.float64)
    expect = ref / (1 + np.exp(-ref))
    name = _kernels(compile(m, options=CompileOptions(threads=1, cache=False)))[0]["name"]
    for threads in (1, 2):
        opts = CompileOptions(threads=threads, cache=False, schedules={
            name: "cpu.depthwise: " + sched + ("; parallel(t)" if threads > 1 else "")}
            if sched else None)
        cm = compile(m, options=opts)
        assert "vectorize(x)" in _kernels(cm)[0]["schedule"], _kernels(cm)[0]["schedule"]
        np.testing.assert_allclose(cm.run({"x": x})["y"], expect, rtol=1e-5, atol=1e-5)
        step = lower_program(m, options=opts).kernel_steps[0]
        assert "scratch" in step.kernel.roles            # the band's sums
        got = _interpret_step(step, x, threads)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("xs,k,s,silu", [((1, 32, 112, 112), 3, 1, False),
                                       ((1, 480, 14, 14), 5, 1, True),
                                       ((1, 144, 56, 56), 3, 2, False),
                                       ((1, 96, 112, 112), 3, 2, True)])
def test_depthwise_defaults_are_points_of_the_tuners_space(xs: tuple[int, ...], k: int, s: int,
                                                           silu: bool) -> None:
    """The defaults (the direct kernel's row tiles among them) are a valid point of the space
    the tuner searches."""
    from minicc.ir.loops.cpu import CPU_RULES
    from minicc.ir.loops.nodes import Buffer
    from minicc.ir.passes.fuse import fuse as fuse_groups
    from tests.loops.util import ctx_for

    c = xs[1]
    b = GraphBuilder("main")
    xi = b.input(TensorType.of(rand(*xs)), "x")
    y = b.op1("conv", [xi, b.const(rand(c, 1, k, k), "w")],
              {"group": c, "pads": [k // 2] * 4, "strides": [s, s]})
    if silu:
        y = b.op1("mul", [y, b.op1("sigmoid", [y])])
    f = b.finish([y], ["y"])
    g = fuse_groups(f).groups[0]
    bufs = {v: Buffer(f"b{i}", v.type.dtype, tuple(int(d) for d in v.type.shape))
            for i, v in enumerate(list(g.inputs()) + [g.output])}
    rule = next(r for r in CPU_RULES if r.name == "cpu.depthwise")
    for threads in (1, 2):
        ctx = ctx_for(g, bufs, {op.inputs[1]: np.zeros((c, 1, k, k), np.float32)
                                for op in g.ops if op.kind == "conv"}, threads=threads)
        d = rule.defaults(ctx)
        rule.check_knobs(ctx, d)
        ow = xs[3] // s
        assert d["direct"] == (s == 1 or not silu or ow <= 32), d


@pytest.mark.parametrize("sched,why", [
    ("tile(RX=4, RY=0)", "tile(RY=0) must be at least one output row per band"),
    ("tile(RX=4, RY=3); vectorize(c)", "with vectorize(c) (channels in the lanes) leave RY out"),
    ("tile(RX=4, RY=x)", "RY must be an integer, got 'x'"),
    ("tile(RX=3, RY=6); vectorize(x)", "holds RX x RY = 18 vectors of sums; at most 16"),
    ("tile(RX=1); vectorize(x); vectorize(c)", "put different things in the lanes"),
])
def test_a_bad_band_knob_is_refused_naming_the_kernel(sched: str, why: str) -> None:
    from minicc.errors import ScheduleError

    bt = conv_model((1, 8, 20, 20), (8, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 8})
    name = _kernels(bt.run(1)[1])[0]["name"]
    with pytest.raises(ScheduleError, match=re.escape(why)) as e:
        bt.run(1, schedules={name: f"cpu.depthwise: {sched}"})
    assert "RY" not in why or "x'" in why or name in str(e.value)


def test_gemm_conv_without_bias() -> None:
    check_built(conv_model((1, 5, 8, 8), (9, 5, 3, 3), {"pads": [1, 1, 1, 1]}, bias=False))


def _kernels(cm: CompiledModel) -> list[dict[str, Any]]:
    return cm.artifact.summary.get("kernels", [])


def test_conv_bias_residual_relu_is_one_fused_kernel() -> None:
    x, w, bias = rand(2, 6, 9, 9), rand(12, 6, 3, 3), rand(1, 12, 1, 1)
    res = rand(2, 12, 9, 9)
    b = GraphBuilder("main")
    xi, ri = b.input(TensorType.of(x), "x"), b.input(TensorType.of(res), "res")
    c = b.op1("conv", [xi, b.const(w, "w")], {"pads": [1, 1, 1, 1]})
    c = b.op1("add", [c, b.const(bias, "bias")])
    c = b.op1("add", [c, ri])
    y = b.op1("relu", [c], name="y")
    m = Module((b.finish([y], ["y"]),))
    conv = reference("conv", [x, w], {"pads": [1, 1, 1, 1]})[0]
    expect = np.maximum(conv + bias + res, 0)
    outs = {}
    for threads in (1, 2):
        cm = compile(m, options=CompileOptions(threads=threads, cache=False, dump=("loops",)))
        assert len(_kernels(cm)) == 1, cm.summary()
        assert "schedule cpu.gemm:" in cm.report.dumps["loops"]
        outs[threads] = cm.run({"x": x, "res": res})["y"]
        assert_matches("conv", outs[threads], expect.astype(np.float32),
                       [x, w, bias.reshape(-1), res], {"pads": [1, 1, 1, 1]},
                       f"fused epilogue threads={threads}")
    np.testing.assert_array_equal(outs[1], outs[2])


def test_matmul_add_gelu_is_one_fused_kernel() -> None:
    a, w, bias = rand(2, 7, 300), rand(300, 45), rand(45)
    gb = GraphBuilder("main")
    ai = gb.input(TensorType.of(a), "a")
    h = gb.op1("matmul", [ai, gb.const(w, "w")])
    h = gb.op1("add", [h, gb.const(bias, "bias")])
    y = gb.op1("gelu", [h], name="y")
    m = Module((gb.finish([y], ["y"]),))
    h_ref = reference("matmul", [a, w], {})[0] + bias
    expect = reference("gelu", [h_ref], {})[0]
    # gelu'(x) <= 1.13, so the matmul's bound carries over; plus the transcendental rtol
    k = a.shape[-1]
    bound = (k * U32 * 1.2) * (np.abs(a) @ np.abs(w) + np.abs(bias)) + 2e-6 * np.abs(expect)
    outs = {}
    for threads in (1, 2):
        cm = compile(m, options=CompileOptions(threads=threads, cache=False, dump=("loops",)))
        assert len(_kernels(cm)) == 1, cm.summary()
        assert "schedule cpu.gemm:" in cm.report.dumps["loops"]
        outs[threads] = cm.run({"a": a})["y"]
        err = np.abs(outs[threads].astype(np.float64) - expect)
        assert (err <= bound + 1e-7).all(), f"threads={threads}: max error {err.max():.3g}"
    np.testing.assert_array_equal(outs[1], outs[2])


# The samples are tiny; these are big enough that the parallel loops split real work.
PARALLEL_SIZED = {
    "add_broadcast": ("add", [(64, 300), (300,)], {}),
    "exp": ("exp", [(48, 257)], {}),
    "sigmoid": ("sigmoid", [(3, 40, 129)], {}),
    "reduce_sum_inner": ("reduce_sum", [(96, 130)], {"axes": [1]}),
    "reduce_max_outer": ("reduce_max", [(70, 33, 5)], {"axes": [0], "keepdims": False}),
    "softmax": ("softmax", [(37, 200)], {"axis": -1}),
    "layer_norm": ("layer_norm", [(2, 33, 64), (64,), (64,)], {"axis": -1}),
    "max_pool": ("max_pool", [(2, 8, 17, 17)], {"kernel_shape": [3, 3], "strides": [2, 2]}),
}


@pytest.mark.parametrize("case", list(PARALLEL_SIZED))
def test_parallel_sized_ops(case: str) -> None:
    name, shapes, attrs = PARALLEL_SIZED[case]
    arrays = [rand(*s) for s in shapes]
    ref = reference(name, arrays, attrs)[0]
    outs = []
    for threads in (1, 2):
        got = compile_one(name, arrays, attrs, threads).run(feeds(arrays))["out0"]
        assert_matches(name, got, ref, arrays, attrs, f"threads={threads}")
        outs.append(got)
    np.testing.assert_array_equal(outs[0], outs[1], err_msg=f"{case}: 1 thread vs 2")


@settings(max_examples=12, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), c=st.integers(1, 70), m=st.integers(1, 30), h=st.integers(1, 9),
       w=st.integers(1, 20), mr=st.integers(1, 12), nr=st.sampled_from([16, 32, 48]),
       kc=st.integers(1, 80), rows=st.integers(1, 4), threads=st.integers(1, 2))
def test_a_1x1_conv_packs_its_input_in_micro_panels(n: int, c: int, m: int, h: int, w: int,
                                                     mr: int, nr: int, kc: int, rows: int,
                                                     threads: int) -> None:
    """pack(B, at=kc) of a 1x1 stride-1 conv: its input is a plain K x N matrix, packed into
    BLIS micro-panels [NC/NR][KC][NR] like a matmul's B (not as im2col rows), for any tile,
    K block and column block (whole output rows), with the pixels past N as zeros."""
    from minicc.driver import lower_program

    bt = conv_model((n, c, h, w), (m, c, 1, 1), {})
    name = lower_program(bt.module, threads=threads, cache=False).kernel_steps[0].kernel.name
    nc = min(rows, h) * w
    text = (f"cpu.gemm: tile(MR={min(mr, m)}, NR={nr}, KC={min(kc, c)}, NC={nc}); "
            "pack(A, at=compile); pack(B, at=kc); vectorize(l, 16)"
            + ("; parallel(nc)" if threads > 1 else ""))
    cm = compile(bt.module, options=CompileOptions(threads=threads, cache=False, dump=("loops",),
                                                   schedules={name: text}))
    assert cm.artifact.summary["kernels"][0]["schedule"] == text
    ncpad = -(-nc // nr) * nr
    assert f"{name}_col: f32[{ncpad // nr},{min(kc, c)},{nr}] scratch" in \
        cm.report.dumps["loops"]
    assert bt.bound_args is not None
    nm, arrays, attrs = bt.bound_args
    assert_matches(nm, cm.run(bt.inputs)["y"], bt.expect, arrays, attrs, "micro-panels")


def _split_k_step(xs: tuple[int, ...], m: int, text: str | None, threads: int = 2) -> Any:
    """A 1x1 conv (x of shape xs to m channels) lowered at `threads` threads, with `text` as
    its schedule when given: (the built model, its kernel step)."""
    from minicc.driver import lower_program

    bt = conv_model(xs, (m, xs[1], 1, 1), {})
    prog = lower_program(bt.module, threads=threads, cache=False)
    if text is not None:
        name = prog.kernel_steps[0].kernel.name
        prog = lower_program(bt.module, options=CompileOptions(
            threads=threads, cache=False, schedules={name: text}))
    return bt, prog.kernel_steps[0]


def _sched(step: Any) -> str:
    from minicc.ir.loops.trace import format_schedule
    return format_schedule(step.kernel.schedule, step.kernel.trace)


def _interpret_step(st: Any, x: np.ndarray, threads: int, drop_barrier: bool = False
                    ) -> np.ndarray:
    """The step's kernel in the loop interpreter on `threads` threads (its weights, packed and
    constant, bound as the program binds them); with drop_barrier, without its barriers."""
    import dataclasses

    from minicc.ir.loops.interp import buffer_arrays, run_kernel
    from minicc.ir.loops.nodes import Barrier, Seq

    from minicc.ir.loops.cpu import lower_group_cpu

    ctx = st.ctx
    low = lower_group_cpu(ctx)
    k = low.kernel
    arrays = {b.name: a for b, a in low.packed.items()}
    for v, b in ctx.bufs.items():
        if v in ctx.consts:
            arrays[b.name] = ctx.consts[v]
        elif v is not st.group.output:
            arrays[b.name] = x
    if drop_barrier:
        assert isinstance(k.body, Seq)
        k = dataclasses.replace(k, body=Seq(tuple(x for x in k.body.stmts
                                                  if not isinstance(x, Barrier))))
    arrs = buffer_arrays(k, **arrays)
    run_kernel(k, arrs, threads)
    return arrs[ctx.bufs[st.group.output].name]


@settings(max_examples=10, deadline=None, derandomize=True)
@given(c=st.integers(1, 90), m=st.integers(1, 20), h=st.integers(2, 7), w=st.integers(1, 9),
       mr=st.integers(1, 12), nr=st.sampled_from([16, 32, 64]), kc=st.integers(1, 90),
       rows=st.integers(1, 3))
def test_split_k_sums_the_partials_of_every_k_block(c: int, m: int, h: int, w: int, mr: int,
                                                    nr: int, kc: int, rows: int) -> None:
    """parallel(kc): the threads share K blocks, each writing its blocks' partial C to one
    shared buffer, then after a barrier sum them through the epilogue, row by row; any tile,
    K block (one or many per thread) and column block, natively at 2 threads and in the loop
    interpreter at 2 and 3 (more threads than blocks: the extra ones only wait)."""
    kc, nc = min(kc, c), min(rows, h) * w
    text = (f"cpu.gemm: tile(MR={min(mr, m)}, NR={nr}, KC={kc}, NC={nc}); pack(A, at=compile); "
            "pack(B, at=kc); vectorize(l, 16); parallel(kc)")
    bt, step = _split_k_step((1, c, h, w), m, text)
    assert "parallel(kc)" in _sched(step) and \
        [r for r in step.kernel.roles if r == "shared"] == ["shared"]
    assert bt.bound_args is not None
    nm, arrays, attrs = bt.bound_args
    cm = compile(bt.module, options=CompileOptions(threads=2, cache=False, schedules={
        step.kernel.name: text}))
    assert_matches(nm, cm.run(bt.inputs)["y"], bt.expect, arrays, attrs, "split K, native")
    for threads in (2, 3):
        got = _interpret_step(step, bt.inputs["x"], threads)
        assert_matches(nm, got, bt.expect, arrays, attrs, f"split K, {threads} interpreted")


def test_split_k_without_its_barrier_reads_what_no_thread_wrote() -> None:
    """The interpreter runs the threads in turn where a kernel has no barrier: the sums of a
    split-K kernel stripped of its barrier read the other thread's partial C before it is
    written, an error there (a race in native code)."""
    from minicc.errors import InterpreterError

    text = ("cpu.gemm: tile(MR=8, NR=32, KC=48, NC=36); pack(A, at=compile); pack(B, at=kc); "
            "vectorize(l, 16); parallel(kc)")
    bt, step = _split_k_step((1, 96, 6, 6), 16, text)
    _interpret_step(step, bt.inputs["x"], 2)
    with pytest.raises(InterpreterError, match="read before any store"):
        _interpret_step(step, bt.inputs["x"], 2, drop_barrier=True)


@pytest.mark.parametrize("xs,m,threads,split", [
    ((1, 384, 14, 14), 64, 2, True),     # a MobileNetV2 projection
    ((1, 384, 14, 14), 64, 1, False),    # one thread: nothing to share
    ((1, 512, 28, 28), 128, 2, False),   # a partial C of 100K floats
    ((1, 96, 14, 14), 64, 2, False),     # K < 3 M
])
def test_split_k_is_the_default_for_narrowing_1x1_convs(xs: tuple[int, ...], m: int,
                                                        threads: int, split: bool) -> None:
    _, step = _split_k_step(xs, m, None, threads)
    assert ("parallel(kc)" in _sched(step)) == split, _sched(step)


def test_split_k_needs_a_at_compile_and_the_shared_role_round_trips() -> None:
    from minicc.errors import ScheduleError
    from minicc.ir.loops.parser import parse_kernel
    from minicc.ir.loops.printer import print_kernel

    _, step = _split_k_step((1, 384, 14, 14), 64, None)
    text = print_kernel(step.kernel)
    assert " shared" in text and "barrier" in text
    assert print_kernel(parse_kernel(text)) == text
    with pytest.raises(ScheduleError, match="parallel\\(kc\\)"):
        _split_k_step((1, 384, 14, 14), 64, "cpu.gemm: tile(MR=8, NR=32, KC=192, NC=196); "
                      "pack(A, at=none); pack(B, at=kc); vectorize(l, 16); parallel(kc)")


@pytest.mark.parametrize("xs,m,threads,in_place", [
    ((1, 32, 112, 112), 16, 1, True),    # MobileNetV2's first projection
    ((1, 32, 80, 80), 32, 2, True),      # a YOLOv8n C2f conv
    ((1, 16, 320, 320), 16, 2, True),    # rows 6400 lines apart: 32 lines in two sets
    ((1, 24, 320, 320), 4, 1, True),     # one row tile: each B element read once
    ((1, 64, 160, 160), 24, 1, False),   # 128 lines in two L1 sets
    ((1, 96, 56, 56), 24, 1, False),     # K > 64
    ((1, 32, 56, 56), 64, 1, False),     # M > 32: the copy pays for itself
    ((1, 32, 14, 14), 16, 1, False),     # rows off cache lines (784 bytes)
])
def test_few_output_channels_read_the_input_in_place_by_default(
        xs: tuple[int, ...], m: int, threads: int, in_place: bool) -> None:
    _, step = _split_k_step(xs, m, None, threads)
    assert ("pack(B, at=none)" in _sched(step)) == in_place, _sched(step)


@pytest.mark.parametrize("xs,m,threads", [((1, 20, 9, 11), 24, 1), ((2, 300, 7, 7), 40, 2),
                                          ((1, 8, 5, 37), 5, 2)])
def test_a_1x1_conv_reads_its_input_in_place(xs: tuple[int, ...], m: int, threads: int) -> None:
    """pack(B, at=none): a 1x1 stride-1 conv's input rows are the B panel already; the
    micro-kernel reads them in place (masked past the last pixel), for the tuner to choose."""
    from minicc.driver import lower_program

    bt = conv_model(xs, (m, xs[1], 1, 1), {})
    name = lower_program(bt.module, threads=threads, cache=False).kernel_steps[0].kernel.name
    text = (f"cpu.gemm: tile(MR=8, NR=32, KC={min(256, xs[1])}, NC={xs[3] * 2}); "
            "pack(A, at=compile); pack(B, at=none); vectorize(l, 16)"
            + ("; parallel(nc)" if threads > 1 else ""))
    cm = compile(bt.module, options=CompileOptions(threads=threads, cache=False,
                                                   schedules={name: text}))
    assert cm.artifact.summary["kernels"][0]["schedule"] == text
    assert bt.bound_args is not None
    nm, arrays, attrs = bt.bound_args
    assert_matches(nm, cm.run(bt.inputs)["y"], bt.expect, arrays, attrs, "in place")
    with pytest.raises(Exception, match="pack\\(B, at=none\\) does not fit"):
        compile(conv_model((1, 4, 6, 6), (4, 4, 3, 3), {"pads": [1, 1, 1, 1]}).module,
                options=CompileOptions(threads=1, cache=False, schedules={
                    name: text.replace(f"KC={min(256, xs[1])}", "KC=36").replace(
                        f"NC={xs[3] * 2}", "NC=12")}))
