"""Benchmarks against onnxruntime and numpy, in the same process on the same inputs.

`minicc bench MODEL --vs onnxruntime` prints median latencies and the ratio minicc/onnxruntime
at each thread count. Models whose weights are ConstantOfShape splats (onnx's light_* models)
can have those replaced by random values of the same scale (`randomize=True`), so numerics and
speed are realistic.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper


def randomize_constants(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace ConstantOfShape weights by initializers of value * U(0.5, 1.5)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(d) for d in inits[n.input[0]].reshape(-1))
            val = np.float32(0.0)
            for a in n.attribute:
                if a.name == "value":
                    val = numpy_helper.to_array(a.t).reshape(-1)[0]
            arr = (np.full(shape, val, dtype=np.float32) *
                   rng.uniform(0.5, 1.5, size=shape).astype(np.float32))
            g.initializer.append(numpy_helper.from_array(arr.astype(np.float32), n.output[0]))
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    return m


def timeit(fn: Callable[[], Any], repeat: int = 20, warmup: int = 3,
           min_time: float = 0.0) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    ts = []
    t_end = time.perf_counter() + min_time
    while len(ts) < repeat or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def ort_session(model: onnx.ModelProto | str, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


@dataclass
class BenchRow:
    model: str
    threads: int
    minicc_ms: float
    ort_ms: float
    max_abs_err: float
    ok: bool

    @property
    def ratio(self) -> float:
        return self.minicc_ms / self.ort_ms


def bench_model(path: str, name: str, threads_list: list[int], repeat: int = 20,
                randomize: bool = True, inputs: dict | None = None,
                input_shapes: dict | None = None, rtol: float = 1e-3, atol: float = 1e-4,
                log: Callable[[str], None] = print) -> list[BenchRow]:
    from minicc import CompileOptions, compile
    from minicc.ir.interpret import random_inputs

    proto = onnx.load(path)
    if randomize:
        proto = randomize_constants(proto)
    rows = []
    for th in threads_list:
        t0 = time.perf_counter()
        cm = compile(proto, options=CompileOptions(threads=th, input_shapes=input_shapes))
        tc = time.perf_counter() - t0
        if inputs is None:
            from minicc.api import import_onnx

            mod = import_onnx(proto, input_shapes)
            inputs = random_inputs(mod.main, seed=1)
            inputs = {k: (np.abs(v) if v.dtype.kind == "f" else v) for k, v in inputs.items()}
        sess = ort_session(proto, th)
        ort_names = [i.name for i in sess.get_inputs()]
        ref = sess.run(None, {k: inputs[k] for k in ort_names})
        got = cm.run(inputs)
        err, ok = 0.0, True
        for o, r in zip(sess.get_outputs(), ref):
            g = got[o.name]
            err = max(err, float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0)
            ok = ok and bool(np.allclose(g, r, rtol=rtol, atol=atol))
        t_m = timeit(lambda: cm.run(inputs), repeat)
        feeds = {k: inputs[k] for k in ort_names}
        t_o = timeit(lambda: sess.run(None, feeds), repeat)
        row = BenchRow(name, th, t_m * 1e3, t_o * 1e3, err, ok)
        rows.append(row)
        log(f"{name:22} threads {th}: minicc {row.minicc_ms:8.2f} ms  onnxruntime "
            f"{row.ort_ms:8.2f} ms  ratio {row.ratio:5.2f}x  max abs err {err:.2e} "
            f"{'ok' if ok else 'MISMATCH'}  (compile {tc:.1f}s)")
    return rows


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def bench_gemm(n: int = 1024, threads: int = 1, repeat: int = 10,
               log: Callable[[str], None] = print) -> tuple[float, float]:
    """GFLOP/s of minicc's matmul kernel and of numpy (OpenBLAS) on n x n x n float32."""
    from minicc import CompileOptions, compile
    from minicc.ir.parser import parse

    m = parse(f"func @main(%a: f32[{n},{n}], %b: f32[{n},{n}]) -> (f32[{n},{n}]) {{\n"
              f"  %c = matmul(%a, %b) : f32[{n},{n}]\n  return %c\n}}\n")
    cm = compile(m, options=CompileOptions(threads=threads))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    out = cm(a=a, b=b)["c"]
    ref = a @ b
    err = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    flop = 2.0 * n ** 3
    t_m = timeit(lambda: cm(a=a, b=b), repeat)
    try:  # numpy's BLAS on the same number of threads, when threadpoolctl can set it
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=threads, user_api="blas"):
            t_n = timeit(lambda: a @ b, repeat)
    except ImportError:
        t_n = timeit(lambda: a @ b, repeat)
    g_m, g_n = flop / t_m / 1e9, flop / t_n / 1e9
    log(f"gemm {n}^3 threads {threads}: minicc {g_m:.1f} GFLOP/s, numpy {g_n:.1f} GFLOP/s "
        f"({100 * g_m / g_n:.0f}% of numpy), rel err {err:.1e}")
    return g_m, g_n
