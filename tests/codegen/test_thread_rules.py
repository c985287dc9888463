"""Which kernels share their work between threads: a streaming kernel (at most 2 FLOPs per
element, a squeeze-excite block's channel scale) under PARALLEL_MIN_STREAM elements runs on one
thread, a bigger one or one that only moves data on all; the outputs are the reference's."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from minicc import CompileOptions, compile


def _model(op: str, shape: list[int], second: list[int] | None):  # type: ignore[no-untyped-def]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    names = ["x"]
    if second is not None:
        ins.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, second))
        names.append("s")
    node = helper.make_node(op, names, ["y"], **({"perm": [0, 1, 3, 2]}
                                                 if op == "Transpose" else {}))
    out = shape if op != "Transpose" else shape[:2] + shape[:1:-1]
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, out)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op,shape,second,parallel", [
    ("Mul", [1, 144, 56, 56], [1, 144, 1, 1], False),     # SE scale, 0.45M elements
    ("Mul", [1, 96, 112, 112], [1, 96, 1, 1], True),      # 1.2M: past PARALLEL_MIN_STREAM
    ("Transpose", [1, 144, 56, 56], None, True),          # moves data only
])
def test_streaming_kernels_run_on_one_thread_below_a_million_elements(
        op: str, shape: list[int], second: list[int] | None, parallel: bool) -> None:
    from minicc.ir.loops.cpu import PARALLEL_MIN_STREAM

    m = _model(op, shape, second)
    cm = compile(m, options=CompileOptions(threads=2, cache=False))
    (k,) = cm.artifact.summary["kernels"]
    assert ("parallel(" in k["schedule"]) == parallel, k
    assert (int(np.prod(shape)) >= PARALLEL_MIN_STREAM or op == "Transpose") == parallel
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    if second is not None:
        feeds["s"] = rng.standard_normal(second).astype(np.float32)
    np.testing.assert_array_equal(cm.run(feeds)["y"], ReferenceEvaluator(m).run(None, feeds)[0])


def test_each_threads_scratch_slice_starts_on_its_own_cache_lines() -> None:
    """Per-thread slices of a scratch buffer are whole SLICE_ALIGN blocks, so two threads never
    write one cache line (a depthwise conv's 5 KiB band planes ran 20-30% slower at 2 threads when
    the slices were packed end to end)."""
    from minicc.ir.loops.nodes import SLICE_ALIGN, Buffer, Scope
    from minicc.ir.types import DType

    for dt, shape in ((DType.F32, (4, 342)), (DType.U8, (100,)), (DType.F32, (32,))):
        b = Buffer("s", dt, shape, Scope.SCRATCH)
        assert b.slice_nbytes % SLICE_ALIGN == 0
        assert b.nbytes <= b.slice_nbytes < b.nbytes + SLICE_ALIGN


@pytest.mark.parametrize("shape,parallel", [
    ([1, 144, 56, 56], True),      # reads 451K elements into 144: shared
    ([1, 24, 7, 7], False),        # reads 1176: one thread
])
def test_a_pool_into_few_elements_shares_them_when_it_reads_many(shape: list[int],
                                                                 parallel: bool) -> None:
    """A global average pool writes few elements but may read many (PARALLEL_MIN_REDUCE): the
    channels are shared between threads then; the result is the reference's either way."""
    g = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         shape[:2] + [1, 1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cm = compile(m, options=CompileOptions(threads=2, cache=False))
    (k,) = cm.artifact.summary["kernels"]
    assert ("parallel(" in k["schedule"]) == parallel, k
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(cm.run({"x": x})["y"], ReferenceEvaluator(m).run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-6)


def test_a_kernel_too_small_to_share_stays_on_one_thread() -> None:
    """Under PARALLEL_MIN_FLOPS a template's default runs on the calling thread (a parallel
    region would cost more than the split saves); just above it, the threads share it. Both
    match the reference."""
    import numpy as np

    import minicc
    from minicc.ir.loops.schedule import PARALLEL_MIN_FLOPS
    from minicc.ir.parser import parse

    for n, shared in ((32, False), (128, True)):
        flops = 2 * n * n * n
        assert (flops >= PARALLEL_MIN_FLOPS) == shared
        m = parse(f"func @main(%a: f32[{n},{n}], %b: f32[{n},{n}]) -> (f32[{n},{n}]) {{\n"
                  f"  %c = matmul(%a, %b) : f32[{n},{n}]\n  return %c\n}}\n")
        cm = minicc.compile(m, threads=2, cache=False)
        sched = cm.artifact.summary["kernels"][0]["schedule"]
        assert ("parallel(" in sched) == shared, sched
        rng = np.random.default_rng(n)
        a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        np.testing.assert_allclose(cm.run({"a": a, "b": b})["c"], a @ b, rtol=1e-4,
                                   atol=1e-4)
