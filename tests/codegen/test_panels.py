"""The conv panel packer (taps unrolled, only edge vectors select), lane-uniform selects as
branches (a concat of resized maps) and nearest Resize by integer factors, each against
onnx's ReferenceEvaluator on geometries chosen to reach every edge case."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from minicc import CompileOptions, compile


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 1) -> np.ndarray:
    cm = compile(model, options=CompileOptions(threads=threads, cache=False))
    return cm.run(feeds)["y"]


def _model(nodes: list, inputs: dict[str, list[int]], out: list[int], inits: list = (),
           opset: int = 19) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                       for n, s in inputs.items()],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                          list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.data())
def test_conv_panels_on_any_geometry(data: st.DataObject) -> None:
    """Strides, dilations, asymmetric pads wider than a tap reaches, groups, rows shorter and
    longer than a vector: the GEMM conv matches the reference at 1 and 2 threads."""
    d = data.draw
    g = d(st.sampled_from([1, 1, 2]))
    cg, mg = d(st.integers(1, 5)), d(st.integers(1, 9))
    kh, kw = d(st.integers(1, 5)), d(st.integers(1, 5))
    sh, sw, dh, dw = (d(st.integers(1, 3)) for _ in range(4))
    pads = [d(st.integers(0, 3)) for _ in range(4)]
    h, w = d(st.integers(dh * (kh - 1) + 1, 24)), d(st.integers(dw * (kw - 1) + 1, 40))
    n = d(st.integers(1, 2))
    oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    rng = np.random.default_rng(kh * 100 + kw * 10 + sh)
    W = rng.standard_normal((mg * g, cg, kh, kw)).astype(np.float32)
    B = rng.standard_normal(mg * g).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=pads, strides=[sh, sw],
                            dilations=[dh, dw], group=g, kernel_shape=[kh, kw])
    m = _model([node], {"x": [n, cg * g, h, w]}, [n, mg * g, oh, ow],
               [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")], 17)
    x = rng.standard_normal((n, cg * g, h, w)).astype(np.float32)
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    for th in (1, 2):
        np.testing.assert_allclose(_run(m, {"x": x}, th), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ctm", ["asymmetric", "half_pixel"])
@pytest.mark.parametrize("mode", ["floor", "round_prefer_floor", "round_prefer_ceil", "ceil"])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_nearest_resize_by_integer_factors(k: int, mode: str, ctm: str) -> None:
    """Integer factors with asymmetric coordinates take integer source indices: the same
    pixels as the reference, the last row and column included (round_prefer_floor by 3
    rounds past the input without the clamp)."""
    x = np.random.default_rng(k).standard_normal((1, 2, 5, 7)).astype(np.float32)
    sc = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, k, k])
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", nearest_mode=mode,
                            coordinate_transformation_mode=ctm)
    m = _model([node], {"x": [1, 2, 5, 7]}, [1, 2, 5 * k, 7 * k], [sc])
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_array_equal(_run(m, {"x": x}), ref)


def test_a_concat_of_resized_maps_loads_only_its_own_input() -> None:
    """An FPN head: four maps upsampled by 8, 4, 2 and 1 and concatenated on channels. Each
    output channel's vectors take one branch of the concat's select chain."""
    rng = np.random.default_rng(0)
    shapes = {"a": [1, 3, 2, 3], "b": [1, 3, 4, 6], "c": [1, 3, 8, 12], "d": [1, 3, 16, 24]}
    nodes, ins = [], []
    for name, f in zip("abc", (8, 4, 2)):
        sc = helper.make_tensor(f"s{name}", TensorProto.FLOAT, [4], [1, 1, f, f])
        nodes += [helper.make_node("Constant", [], [f"s{name}"], value=sc),
                  helper.make_node("Resize", [name, "", f"s{name}"], [f"u{name}"],
                                   mode="nearest", nearest_mode="floor",
                                   coordinate_transformation_mode="asymmetric")]
        ins.append(f"u{name}")
    nodes.append(helper.make_node("Concat", ins + ["d"], ["y"], axis=1))
    m = _model(nodes, shapes, [1, 12, 16, 24])
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    ref = ReferenceEvaluator(m).run(None, feeds)[0]
    for th in (1, 2):
        np.testing.assert_array_equal(_run(m, feeds, th), ref)


def _conv_residual(c: int, m: int, hw: int, k: int, s: int, seed: int
                   ) -> tuple[onnx.ModelProto, dict[str, np.ndarray], np.ndarray]:
    """Conv + bias + residual add + ReLU over a small map: the epilogue of resnet50's 7x7
    stage."""
    rng = np.random.default_rng(seed)
    p = k // 2
    o = (hw + 2 * p - k) // s + 1
    W = (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    B = rng.standard_normal(m).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t"], pads=[p] * 4, strides=[s, s],
                              kernel_shape=[k, k]),
             helper.make_node("Add", ["t", "r"], ["u"]), helper.make_node("Relu", ["u"], ["y"])]
    mdl = _model(nodes, {"x": [1, c, hw, hw], "r": [1, m, o, o]}, [1, m, o, o],
                 [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")], 17)
    feeds = {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32),
             "r": rng.standard_normal((1, m, o, o)).astype(np.float32)}
    return mdl, feeds, ReferenceEvaluator(mdl).run(None, feeds)[0]


_PANEL = "pack(A, at=panel); pack(B, at=compile); vectorize(l, 8)"


@pytest.mark.parametrize("geometry", [(128, 32, 7, 3, 1), (64, 48, 14, 3, 2),
                                      (1024, 32, 7, 1, 1), (120, 16, 5, 3, 1)])
@pytest.mark.parametrize("tile", ["MR=6, NR=16, KC=384, NC=32", "MR=5, NR=8, KC=100, NC=16",
                                  "MR=6, NR=16, KC=1024, NC=16"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_conv_with_pixels_as_rows_matches_the_reference(
        geometry: tuple[int, ...], tile: str, threads: int) -> None:
    """pack(A, at=panel): the pixels of a small map are the GEMM's rows (the im2col panel of
    every output row broadcast from), the output channels its vector columns; partial sums
    over K blocks in scratch, the epilogue (bias, residual, ReLU) gathering and scattering
    along the channels. Row tiles past the 49 pixels, K blocks that split a tap's row, a
    channel block per thread; the schedule is forced, so this runs on every target."""
    mdl, feeds, ref = _conv_residual(*geometry, seed=sum(geometry))
    kc = int(tile.split("KC=")[1].split(",")[0])
    c, _, _, k, _ = geometry
    tile = tile.replace(f"KC={kc}", f"KC={min(kc, c * k * k)}")
    sched = f"cpu.gemm: tile({tile}); {_PANEL}" + ("; parallel(nc)" if threads > 1 else "")
    cm = compile(mdl, options=CompileOptions(threads=threads, cache=False,
                                             schedules={"k0_relu": sched}, dump=("loops",)))
    assert "pack(A, at=panel)" in cm.report.dumps["loops"]
    np.testing.assert_allclose(cm.run(feeds)["y"], ref, rtol=1e-4, atol=1e-4)


def test_a_3x3_conv_at_7x7_takes_pixels_as_rows_where_16_registers_are() -> None:
    """The default on AVX2 for resnet50's 3x3 convs at 7x7 (49 pixels: 64 columns as tiles
    of 16, 54 rows as tiles of 6), and on Zen 4 (tiles one vector wide); Intel's AVX-512 keeps
    the columns. Either matches the reference."""
    from minicc.codegen.llvm.target import cpu_target

    mdl, feeds, ref = _conv_residual(128, 32, 7, 3, 1, seed=3)
    cm = compile(mdl, options=CompileOptions(threads=1, cache=False, dump=("loops",)))
    rows = "pack(A, at=panel)" in cm.report.dumps["loops"]
    t = cpu_target()
    assert rows == (t.vector_registers < 32 or t.split_zmm)
    np.testing.assert_allclose(cm.run(feeds)["y"], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_conv_onto_a_map_smaller_than_a_vector_takes_pixels_as_rows(threads: int) -> None:
    """A 3x3 conv of 128 channels onto 2x2 (the last stage of a ResNet at 64x64): 4 pixels
    in vectors of 16 (AVX-512) would leave 3/4 of the lanes idle, so they are rows (AVX2:
    K = 1152 is long enough too); 1 and 2 threads match the reference."""
    mdl, feeds, ref = _conv_residual(128, 64, 4, 3, 2, seed=4)
    cm = compile(mdl, options=CompileOptions(threads=threads, cache=False, dump=("loops",)))
    assert "pack(A, at=panel)" in cm.report.dumps["loops"]
    np.testing.assert_allclose(cm.run(feeds)["y"], ref, rtol=1e-4, atol=1e-4)


def test_two_threads_share_the_row_tiles_of_a_wide_conv() -> None:
    """128 output channels (22 row tiles of 6): on AVX2 the two threads take 11 row tiles
    each, every thread packing all B panels itself; the last row tile is partial."""
    from minicc.codegen.llvm.target import cpu_target

    mdl, feeds, ref = _conv_residual(64, 130, 14, 3, 1, seed=5)
    cm = compile(mdl, options=CompileOptions(threads=2, cache=False, dump=("loops",)))
    mc = "parallel(mc)" in cm.report.dumps["loops"]
    if cpu_target().vector_registers < 32:
        assert mc
    np.testing.assert_allclose(cm.run(feeds)["y"], ref, rtol=1e-4, atol=1e-4)
    # every way of sharing it computes the same (the GEMM template's, where this 3x3 conv
    # would take the Winograd one by default)
    kname = cm.artifact.summary["kernels"][0]["name"]
    s = f"cpu.gemm: tile(MR=6, NR={2 * cpu_target().lanes}, KC=256, NC=196); pack(A, at=compile); " \
        f"pack(B, at=kc); vectorize(l, {cpu_target().lanes})"
    for par in ("mc", "nc"):
        other = compile(mdl, options=CompileOptions(threads=2, cache=False),
                        schedules={kname: f"{s}; parallel({par})"})
        np.testing.assert_allclose(other.run(feeds)["y"], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("bs", [2, 3])
def test_depth_to_space_loads_runs_not_gathers(mode: str, bs: int) -> None:
    """A depth-to-space shuffle: each vector of output pixels reads bs runs of input pixels
    from bs channel planes, as bs loads and a shuffle, not a gather (lane offsets that are
    lane 0's plus constants); the elements equal the reference."""
    c, h, w = 2 * bs * bs, 5, 16       # output rows of whole vectors (8 or 16 lanes)
    x = np.random.default_rng(bs).standard_normal((1, c, h, w)).astype(np.float32)
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=bs, mode=mode)
    m = _model([node], {"x": [1, c, h, w]}, [1, 2, h * bs, w * bs], opset=13)
    cm = compile(m, options=CompileOptions(threads=1, cache=False, dump=("llvm",)))
    np.testing.assert_array_equal(cm.run({"x": x})["y"],
                                  ReferenceEvaluator(m).run(None, {"x": x})[0])
    if bs == 2:
        assert "masked.gather" not in cm.report.dumps["llvm"]


def test_a_nearest_upsample_by_two_reads_half_a_vector_and_shuffles() -> None:
    """PyTorch's nearest upsample (asymmetric, floor): lane l reads x // 2, one load of half a
    vector and a shuffle."""
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 16)).astype(np.float32)
    sc = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    m = _model([node], {"x": [1, 3, 6, 16]}, [1, 3, 12, 32], [sc])
    cm = compile(m, options=CompileOptions(threads=1, cache=False, dump=("llvm",)))
    assert "masked.gather" not in cm.report.dumps["llvm"]
    np.testing.assert_array_equal(cm.run({"x": x})["y"],
                                  ReferenceEvaluator(m).run(None, {"x": x})[0])


@pytest.mark.parametrize("kc", [1152, 384])
def test_packed_weights_are_prefetched_ahead_and_the_result_is_unchanged(kc: int) -> None:
    """The GEMM micro-kernel prefetches its compile-packed weights PREFETCH_BYTES ahead: in one
    K block the next addresses, in several the same block one row tile on (a select); past
    the last row tile beyond the weights, which a prefetch may (a load would not). The result
    is the reference's either way."""
    from minicc.ir.loops.gemm import PREFETCH_BYTES

    mdl, feeds, ref = _conv_residual(128, 24, 7, 3, 1, seed=3)
    probe = compile(mdl, options=CompileOptions(threads=1, cache=False))
    kname = probe.artifact.summary["kernels"][0]["name"]
    s = (f"cpu.gemm: tile(MR=6, NR=64, KC={kc}, NC=49); pack(A, at=compile); "
         "pack(B, at=kc); vectorize(l, 16)")
    cm = compile(mdl, options=CompileOptions(threads=1, cache=False, dump=("loops",)),
                 schedules={kname: s})
    line = next(ln for ln in cm.report.dumps["loops"].splitlines()
                if ln.strip().startswith(f"prefetch %{kname}_w["))
    assert f"+ {PREFETCH_BYTES // (6 * 4)})" in line, line
    assert ("select(" in line) == (kc < 128 * 9), line
    np.testing.assert_allclose(cm.run(feeds)["y"], ref, rtol=1e-4, atol=1e-4)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(n=st.integers(1, 100), nc=st.sampled_from([32, 48, 64, 96]), mr=st.integers(1, 12),
       threads=st.integers(1, 2))
def test_a_last_tile_of_at_most_half_its_columns_runs_half_the_fmas(n: int, nc: int, mr: int,
                                                                    threads: int) -> None:
    """Where a block's last register tile has at most NR/2 valid columns, it runs a
    micro-kernel over half the vectors (the loop IR shows a second one, with one vector per
    row); whatever N, NC and MR, the matmul is numpy's."""
    rng = np.random.default_rng(n * 7 + nc)
    k, m = 37, 19
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    mdl = _model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": [m, k]}, [m, n],
                 [numpy_helper.from_array(b, "b")])
    probe = compile(mdl, options=CompileOptions(threads=threads, cache=False))
    kname = probe.artifact.summary["kernels"][0]["name"]
    nc = min(nc, -(-n // 32) * 32)
    s = (f"cpu.gemm: tile(MR={mr}, NR=32, KC={k}, NC={nc}); pack(A, at=none); "
         f"pack(B, at=kc); vectorize(l, 16)" + ("; parallel(nc)" if threads > 1 else ""))
    cm = compile(mdl, options=CompileOptions(threads=threads, cache=False, dump=("loops",)),
                 schedules={kname: s})
    tails = {n % nc % 32, nc % 32} - {0}
    half = any(t <= 16 for t in tails)
    assert ("<= 16)" in cm.report.dumps["loops"]) == half, (n, nc, tails)
    np.testing.assert_allclose(cm.run({"a": a})["y"], a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cin,kc", [(512, 512), (640, 640), (1024, 256)])
def test_a_float_conv_takes_k_up_to_one_k_block_at_once_on_avx512(cin: int, kc: int) -> None:
    """AVX-512 with 32 registers: a 1x1 conv with K <= ONE_K_BLOCK runs K in one block (no
    partial sums stored and reloaded), a longer K in blocks of 256; the result is the
    reference's either way (on this machine's own target)."""
    from minicc.ir.loops.gemm import ONE_K_BLOCK

    rng = np.random.default_rng(cin)
    w = (rng.standard_normal((24, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    m = _model([node], {"x": [1, cin, 13, 13]}, [1, 24, 13, 13], [numpy_helper.from_array(w, "w")],
               17)
    v4 = compile(m, options=CompileOptions(threads=1, cache=False, cpu="x86-64-v4"))
    sched = v4.artifact.summary["kernels"][0]["schedule"]
    assert f"KC={kc}," in sched and (kc == cin) == (cin <= ONE_K_BLOCK), sched
    x = rng.standard_normal((1, cin, 13, 13)).astype(np.float32)
    np.testing.assert_allclose(_run(m, {"x": x}), ReferenceEvaluator(m).run(None, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(g=st.integers(1, 3), r=st.integers(1, 40), c=st.integers(1, 9), block=st.integers(1, 33),
       axis=st.sampled_from([1, 2]), dt=st.sampled_from([np.float32, np.int32, np.float64]))
def test_constant_panels_hold_each_element_where_the_micro_kernel_reads_it(
        g: int, r: int, c: int, block: int, axis: int, dt: type) -> None:
    """_pack_const: [g, M, K] (axis 1) or [g, K, N] (axis 2) -> [g, blocks, other, block],
    the blocked axis padded with zeros; element by element against the layout's definition."""
    from minicc.ir.loops.gemm import _pack_const

    shape = (g, r, c)
    a = (np.random.default_rng(r * 100 + c).standard_normal(shape) * 50).astype(dt)
    p = _pack_const(a, block, axis)
    n, other = shape[axis], shape[3 - axis]
    assert p.shape == (g, -(-n // block), other, block)
    assert p.dtype == (np.int32 if dt == np.int32 else np.float32)
    for b in range(g):
        for i in range(-(-n // block) * block):
            for o in range(other):
                want = 0 if i >= n else (a[b, i, o] if axis == 1 else a[b, o, i])
                assert p[b, i // block, o, i % block] == np.asarray(want).astype(p.dtype)
