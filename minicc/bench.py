"""Benchmarks against onnxruntime, OpenVINO and numpy, in the same process on the same inputs.

`minicc bench MODEL --vs onnxruntime [--vs openvino]` prints median (min..max) latencies, calls
alternated between the runtimes, the outputs checked, and the ratios at each thread count. Models whose weights are ConstantOfShape splats (onnx's light_* models)
can have those replaced by random values of the same scale (`randomize=True`), so numerics and
speed are realistic.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from minicc.errors import MiniccError


def randomize_constants(model: onnx.ModelProto, seed: int = 0,
                        fill: Callable[[tuple[int, ...], np.float32, np.random.Generator],
                                       np.ndarray] | None = None) -> onnx.ModelProto:
    """Replace ConstantOfShape weights by initializers: value * U(0.5, 1.5), or what
    `fill(shape, value, rng)` gives."""
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
            arr = fill(shape, val, rng) if fill is not None else (
                np.full(shape, val, dtype=np.float32) *
                rng.uniform(0.5, 1.5, size=shape).astype(np.float32))
            g.initializer.append(numpy_helper.from_array(arr.astype(np.float32), n.output[0]))
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    return m


def he_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """ConstantOfShape weights as initializers: N(0, 2/fan_in) for rank >= 2, kept for the
    rank-1 ones (BatchNorm statistics, biases); the shape constants they leave unused go too,
    and graph inputs that are initializers or unused. Activations keep their scale through the
    layers (the light models' constant weights make them grow past FP16's range)."""
    def he(shape: tuple[int, ...], val: np.float32, rng: np.random.Generator) -> np.ndarray:
        if len(shape) >= 2:
            return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        return np.full(shape, val)

    m = randomize_constants(model, seed, he)
    g = m.graph
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    m.ir_version = max(m.ir_version, 4)        # initializers need not be graph inputs
    inits = {t.name for t in g.initializer}
    keep = [i for i in g.input if i.name not in inits and i.name in used]
    del g.input[:]
    g.input.extend(keep)
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


# ---- runners: one model on one runtime, called with the same inputs ------------------------

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]     # outputs in graph order
RUNTIMES = ("minicc", "onnxruntime", "openvino")


def _minicc_runner(proto: onnx.ModelProto, threads: int, shapes: dict | None,
                   tuning_log: str | None = None) -> Runner:
    from minicc import compile

    cm = compile(proto, threads=threads, input_shapes=shapes, tuning_log=tuning_log)
    names = [o.name for o in proto.graph.output]
    return lambda feeds: [cm.run({n: feeds[n] for n in cm.input_names})[n] for n in names]


def _ort_runner(proto: onnx.ModelProto, threads: int, shapes: dict | None) -> Runner:
    sess = ort_session(proto, threads)
    names = [i.name for i in sess.get_inputs()]
    return lambda feeds: sess.run(None, {n: feeds[n] for n in names})


def _openvino_runner(proto: onnx.ModelProto, threads: int, shapes: dict | None) -> Runner:
    """OpenVINO's CPU plugin for latency: `threads` inference threads, one stream, f32."""
    try:
        import openvino as ov
    except ImportError:
        raise MiniccError("--vs openvino needs OpenVINO: pip install openvino "
                          "(or pip install 'minicc[bench]')") from None
    core = ov.Core()
    model = core.read_model(proto.SerializeToString(), b"")
    if shapes:
        model.reshape({k: list(v) for k, v in shapes.items()})
    cm = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                           "PERFORMANCE_HINT": "LATENCY",
                                           "INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    ins = [i.get_any_name() for i in cm.inputs]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        req.infer({n: feeds[n] for n in ins})
        return [np.array(req.get_output_tensor(k).data) for k in range(len(cm.outputs))]
    return run


MAKERS = {"minicc": _minicc_runner, "onnxruntime": _ort_runner,
          "openvino": _openvino_runner}


def alternate(runners: dict[str, Runner], feeds: dict[str, np.ndarray], repeat: int = 20,
              warmup: int = 3, block: int = 5, settle: float = 0.05) -> dict[str, list[float]]:
    """Seconds per call of each runner, `repeat` calls each: rounds in which every runner makes
    `block` calls in a row (after a pause of `settle` seconds and one untimed call: each runtime
    keeps a pool of worker threads that spin for a while after a call, and on a small machine
    they would take the cores from the next runtime), the order rotated every round, so no
    runtime always runs after the same one."""
    names = list(runners)
    for _ in range(warmup):
        for n in names:
            runners[n](feeds)
    out: dict[str, list[float]] = {n: [] for n in names}
    r = 0
    while any(len(v) < repeat for v in out.values()):
        for n in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(settle)             # the other runtimes' spinning threads go idle
            runners[n](feeds)
            for _ in range(min(block, repeat - len(out[n]))):
                t = time.perf_counter()
                runners[n](feeds)
                out[n].append(time.perf_counter() - t)
        r += 1
    return out


@dataclass
class BenchRow:
    model: str
    threads: int
    minicc_ms: float
    ort_ms: float
    max_abs_err: float
    ok: bool
    times: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # med/min/max
    batch: int = 1

    @property
    def ratio(self) -> float:
        return self.minicc_ms / self.ort_ms

    def ratio_to(self, runtime: str) -> float:
        return self.ratio_of("minicc", runtime)

    def ratio_of(self, a: str, b: str) -> float:
        return self.times[a][0] / self.times[b][0]


def batch_shapes(proto: onnx.ModelProto, batch: int) -> dict[str, tuple]:
    """Input shapes with the first dimension set to `batch`; MiniccError when a model fixes
    it to something else."""
    inits = {t.name for t in proto.graph.initializer}
    out = {}
    for i in proto.graph.input:
        if i.name in inits:
            continue
        dims = i.type.tensor_type.shape.dim
        if not dims:
            continue
        d0 = dims[0]
        if d0.HasField("dim_value") and d0.dim_value not in (0, batch):
            raise MiniccError(f"input '{i.name}' has a fixed batch of {d0.dim_value}; --batch "
                              "needs a model whose first dimension is dynamic")
        rest = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims[1:])
        out[i.name] = (batch,) + rest
    return out


def _check_outputs(results: dict[str, list[np.ndarray]], rtol: float, atol: float
                   ) -> tuple[float, bool]:
    """Max abs error of every runtime's outputs against onnxruntime's (or minicc's)."""
    ref = results.get("onnxruntime", results["minicc"])
    err, ok = 0.0, True
    for outs in results.values():
        for g, r in zip(outs, ref):
            g, r = np.asarray(g), np.asarray(r)
            if r.size:
                err = max(err, float(np.max(np.abs(g.astype(np.float64) - r))))
            ok = ok and g.shape == r.shape and bool(np.allclose(g, r, rtol=rtol, atol=atol))
    return err, ok


def bench_model(path: str, name: str, threads_list: list[int], repeat: int = 20,
                randomize: bool = True, inputs: dict | None = None,
                input_shapes: dict | None = None, rtol: float = 1e-3, atol: float = 1e-4,
                log: Callable[[str], None] = print, vs: tuple[str, ...] = ("onnxruntime",),
                batch: int | None = None, tuning_log: str | None = None) -> list[BenchRow]:
    """minicc and the runtimes in `vs` on one model, in this process, on the same inputs, calls
    alternated (see `alternate`); outputs checked against onnxruntime; one row per thread count.
    With `tuning_log`, minicc also runs tuned with it ("minicc-tuned")."""
    proto = onnx.load(path) if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__") \
        else path
    if randomize:
        proto = randomize_constants(proto)
    shapes = dict(input_shapes or {})
    if batch is not None:
        shapes.update(batch_shapes(proto, batch))
    rows = []
    for th in threads_list:
        t0 = time.perf_counter()
        runners = {"minicc": _minicc_runner(proto, th, shapes or None)}
        tc = time.perf_counter() - t0
        if tuning_log:
            runners["minicc-tuned"] = _minicc_runner(proto, th, shapes or None, tuning_log)
        for rt in ("onnxruntime",) + tuple(v for v in vs if v != "onnxruntime"):
            runners[rt] = MAKERS[rt](proto, th, shapes or None)
        if inputs is None:
            inputs = _inputs_for(proto, shapes)
        err, ok = _check_outputs({n: r(inputs) for n, r in runners.items()}, rtol, atol)
        times = {n: (statistics.median(t) * 1e3, min(t) * 1e3, max(t) * 1e3)
                 for n, t in alternate(runners, inputs, repeat).items()}
        row = BenchRow(name, th, times["minicc"][0], times["onnxruntime"][0], err, ok, times,
                       batch or 1)
        rows.append(row)
        others = "  ".join(f"{n} {t[0]:8.2f} ms" for n, t in times.items() if n != "minicc")
        ratios = "  ".join(f"/{n} {row.ratio_to(n):5.2f}x" for n in times
                           if n not in ("minicc", "minicc-tuned"))
        log(f"{name:22} threads {th}: minicc {row.minicc_ms:8.2f} ms [{times['minicc'][1]:.2f}"
            f"..{times['minicc'][2]:.2f}]  {others}  minicc{ratios}  max abs err {err:.2e} "
            f"{'ok' if ok else 'MISMATCH'}  (compile {tc:.1f}s)")
    return rows


def _inputs_for(proto: onnx.ModelProto, shapes: dict) -> dict[str, np.ndarray]:
    from minicc.api import import_onnx
    from minicc.ir.interpret import random_inputs

    mod = import_onnx(proto, shapes or None)
    feeds = random_inputs(mod.main, seed=1)
    return {k: (np.abs(v) if v.dtype.kind == "f" else v) for k, v in feeds.items()}


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def bench_gemm(n: int = 1024, threads: int = 1, repeat: int = 10,
               log: Callable[[str], None] = print) -> tuple[float, float]:
    """GFLOP/s of minicc's matmul kernel and of numpy (OpenBLAS) on n x n x n float32, and of
    onnxruntime's MatMul (both operands inputs, as here) and Intel MKL's sgemm where they are
    installed; each also as a share of the FMA peak `minicc peaks` measured for that many
    threads."""
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
    peak = _fma_peak(threads)

    def share(g: float) -> str:
        return f" ({100 * g / peak:.0f}% of peak)" if peak else ""
    line = (f"gemm {n}^3 threads {threads}: minicc {g_m:.1f} GFLOP/s{share(g_m)}, numpy "
            f"{g_n:.1f}{share(g_n)}")
    try:
        sess = ort_session(_matmul_onnx(n), threads)
        t_o = timeit(lambda: sess.run(None, {"a": a, "b": b}), repeat)
        line += f", onnxruntime {flop / t_o / 1e9:.1f}{share(flop / t_o / 1e9)}"
    except ImportError:
        pass
    mkl = _mkl_sgemm(threads)
    if mkl is not None:
        c = np.empty_like(a)
        mkl(a, b, c)
        if np.max(np.abs(c - ref)) <= 1e-3 * np.max(np.abs(ref)):
            t_k = timeit(lambda: mkl(a, b, c), repeat)
            line += f", MKL {flop / t_k / 1e9:.1f}{share(flop / t_k / 1e9)}"
    peak_note = f"; FMA peak {peak:.1f} GFLOP/s (`minicc peaks`)" if peak else ""
    log(f"{line}; minicc at {100 * g_m / g_n:.0f}% of numpy, rel err {err:.1e}{peak_note}")
    return g_m, g_n


def _mkl_sgemm(threads: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None:
    """`c = a @ b` by Intel MKL's cblas_sgemm on `threads` threads where the `mkl` wheel is
    installed (`pip install mkl`: the vendor's own GEMM, the strongest reference on Intel
    CPUs), else None. GNU OpenMP threading and a per-call thread count, so that one process
    can time 1 and 2 threads."""
    import ctypes
    import sys
    from pathlib import Path

    path = Path(sys.prefix) / "lib" / "libmkl_rt.so.2"
    if not path.exists():
        return None
    try:
        lib = ctypes.CDLL(str(path))
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Threading_Layer(3)                   # MKL_THREADING_GNU
        lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
        sgemm = lib.cblas_sgemm
    except (OSError, AttributeError):
        return None
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    sgemm.restype = None

    def run(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
        m, k = a.shape
        n = b.shape[1]
        lib.MKL_Set_Num_Threads_Local(threads)        # (threadpoolctl sets the global one)
        sgemm(101, 111, 111, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, n, 0.0,
              c.ctypes.data, n)                         # row major, no transposes
    return run


def _matmul_onnx(n: int) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    vi = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "abc"]
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", vi[:2],
                          vi[2:])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _fma_peak(threads: int) -> float:
    """The FMA peak `minicc peaks` measured (cached per host; measured here if not yet), 0.0
    where it cannot be had."""
    try:
        from minicc.codegen.llvm.peaks import machine_peaks
        return float(machine_peaks().fma(threads))
    except (RuntimeError, OSError, ValueError):   # (a host it cannot measure: no share)
        return 0.0
