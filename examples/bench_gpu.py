"""GPU benchmarks for the CUDA backend (run on a machine with an NVIDIA GPU, CuPy and torch):

    python examples/bench_gpu.py [--repeat 50]

1. GEMM 4096^3 in FP32 (minicc's shared-memory tiled kernel vs CuPy's matmul: cuBLAS, TF32
   off), TF32 and FP16 (minicc's tensor-core kernel, `--precision tf32|fp16`, vs cuBLAS through
   torch in the same math mode): GFLOP/s of each and the ratio, measured with CUDA events in one
   process, and each one's error against the FP32 product; TF32 also with cp.async pipelined
   tiles (2 and 3 stages).
2. End to end: ResNet-50 (the light_resnet50 architecture, built in examples/torch_models.py)
   and the BERT-style encoder at batch 1 and 16, minicc (CUDA target; launched kernel by
   kernel, and replayed as a CUDA graph) vs PyTorch eager on the same model and GPU, median
   latency with CUDA events, and the ratios; minicc's outputs are checked against onnxruntime
   on the CPU (rtol 1e-3, atol 1e-4).
3. `run_many` over 64 inputs pipelined on 2 and 3 CUDA streams against a plain loop of `run`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pipelined_schedule(stages: int, vec: bool = False) -> str:
    """The tensor-core template with its tiles staged by cp.async over `stages` buffers (128 x
    128 at 2 stages, 128 x 64 at 3: within 48 KiB of shared memory); `vec`: 16-byte copies."""
    bn = 128 if stages == 2 else 64
    v = ", vec=4" if vec else ""
    return (f"gpu.mma: tile(BM=128, BN={bn}, BK=16, WM=64, WN=32); cache_shared(A, pad=4{v}); "
            f"cache_shared(B, pad=8{v}); mma(m16n8k8.tf32); pipeline(stages={stages})")


# the default FP32 and TF32 kernels with float4 global loads (off by default until measured)
FP32_VEC4 = ("gpu.gemm: tile(BM=128, BN=128, BK=8, TM=8, TN=8); cache_shared(A, pad=4, vec=4); "
             "cache_shared(B, pad=0, vec=4)")
TF32_VEC4 = ("gpu.mma: tile(BM=128, BN=128, BK=32, WM=64, WN=32); cache_shared(A, pad=4, "
             "vec=4); cache_shared(B, pad=8, vec=4); mma(m16n8k8.tf32)")

# (precision, schedule text or None for the default): what gpu_check times
GEMM_VARIANTS = [("fp32", None), ("fp32", FP32_VEC4), ("tf32", None), ("tf32", TF32_VEC4),
                 ("tf32", pipelined_schedule(2)), ("tf32", pipelined_schedule(2, vec=True)),
                 ("tf32", pipelined_schedule(3)), ("tf32", pipelined_schedule(3, vec=True)),
                 ("fp16", None)]


def gemm(n: int, repeat: int, precision: str = "fp32", schedule: str | None = None) -> dict:
    """minicc's GEMM at `precision` (fp32: the shared-memory tiled kernel; tf32, fp16: the
    tensor-core one) against cuBLAS in the same math mode (fp32: CuPy's matmul, TF32 off;
    tf32: torch with allow_tf32; fp16: torch on half operands, f32 accumulation), CUDA
    events; the relative error of each against the FP32 product."""
    import cupy as cp

    from minicc import CompileOptions, compile
    from minicc.ir.parser import parse

    m = parse(f"func @main(%a: f32[{n},{n}], %b: f32[{n},{n}]) -> (f32[{n},{n}]) {{\n"
              f"  %c = matmul(%a, %b) : f32[{n},{n}]\n  return %c\n}}\n")
    cm = compile(m, options=CompileOptions(target="cuda", precision=precision,
                                           schedules={"k0_matmul": schedule} if schedule
                                           else None))
    rng = np.random.default_rng(0)
    a = cp.asarray(rng.standard_normal((n, n)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((n, n)).astype(np.float32))
    got = cm.run({"a": a, "b": b})["c"]
    ref = a @ b                                  # (CuPy: TF32 off unless CUPY_TF32=1)
    scale = float(cp.max(cp.abs(ref)))
    err = float(cp.max(cp.abs(got - ref))) / scale
    t_m = cm.exe.time({"a": a, "b": b}, repeat)
    f = 2 * n ** 3
    row = {"n": n, "precision": precision, "minicc_gflops": round(f / t_m / 1e6),
           "minicc_rel_err": err, "schedule": cm.artifact.summary["kernels"][0]["schedule"]}
    tag = precision + (" " + schedule.split("; ")[-1] if schedule else "") + (
        " vec=4" if schedule and "vec=4" in schedule and "pipeline" in schedule else "")
    try:                                # minicc's row stands even if the library's cannot run
        t_c, lib_err = _library_gemm(cp, a, b, ref, scale, precision, repeat)
    except Exception as e:  # noqa: BLE001  (torch or CuPy errors alike)
        row["cublas_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        print(f"gemm {n}^3 {tag}: minicc {f / t_m / 1e6:.0f} GFLOP/s, rel err {err:.1e}; "
              f"cuBLAS not timed ({row['cublas_error']})", flush=True)
        return row
    row.update({"cublas_gflops": round(f / t_c / 1e6), "share_of_cublas": round(t_c / t_m, 3),
                "cublas_rel_err": lib_err})
    print(f"gemm {n}^3 {tag}: minicc {f / t_m / 1e6:.0f} GFLOP/s, cuBLAS "
          f"{f / t_c / 1e6:.0f} GFLOP/s ({100 * t_c / t_m:.0f}% of cuBLAS), rel err {err:.1e} "
          f"(cuBLAS {lib_err:.1e})", flush=True)
    return row


def _library_gemm(cp, a, b, ref, scale: float, precision: str,  # type: ignore[no-untyped-def]
                  repeat: int) -> tuple[float, float]:
    """cuBLAS in `precision`'s math mode (fp32: CuPy's matmul, TF32 off; tf32: torch with
    allow_tf32; fp16: torch on half operands): median milliseconds (CUDA events) and the
    relative error against the FP32 product `ref`."""
    if precision == "fp32":
        def lib() -> None:
            a @ b
        lib_err = 0.0
    else:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
        if precision == "fp16":
            ta, tb = ta.half(), tb.half()

        def lib() -> None:
            ta @ tb
        lib_err = float((ta @ tb).float().sub(torch.as_tensor(ref, device="cuda")).abs().max()
                        ) / scale
    start, end = cp.cuda.Event(), cp.cuda.Event()
    ts = []
    for _ in range(repeat + 2):
        start.record()
        lib()
        end.record()
        end.synchronize()
        ts.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(ts[2:])), lib_err


def end_to_end(repeat: int, models: tuple[str, ...] = ("resnet50", "bert_like"),
               batches: tuple[int, ...] = (1, 16), torch_device: str = "cuda") -> list[dict]:
    """Each model at each batch: minicc on the CUDA target (kernel by kernel, and as a CUDA
    graph) against PyTorch eager on `torch_device` (timed with CUDA events there; "cpu", for a
    rehearsal on tests/host_cupy.py's device, with the wall clock)."""
    import time

    import onnxruntime as ort
    import torch

    import torch_models as tm
    from minicc import CompileOptions, compile

    dev = torch.device(torch_device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            path = Path(tmp) / f"{name}.onnx"
            tm.export(name, path, dynamic=True)
            model = tm.build(name).to(dev).eval()
            for batch in batches:
                feeds = tm.inputs(name, batch)
                shapes = {k: v.shape for k, v in feeds.items()}
                cm = compile(str(path), options=CompileOptions(target="cuda",
                                                               input_shapes=shapes))
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                ref = sess.run(None, feeds)[0]
                got = list(cm.run(feeds).values())[0]
                ok = np.allclose(got, ref, rtol=1e-3, atol=1e-4)
                t_m = cm.exe.time(feeds, repeat)
                tin = [torch.as_tensor(v, device=dev) for v in feeds.values()]
                ts = []
                with torch.no_grad():
                    for _ in range(repeat + 2):
                        if dev.type == "cuda":
                            start = torch.cuda.Event(enable_timing=True)
                            end = torch.cuda.Event(enable_timing=True)
                            start.record()
                            model(*tin)
                            end.record()
                            torch.cuda.synchronize()
                            ts.append(start.elapsed_time(end))
                        else:
                            t0 = time.perf_counter()
                            model(*tin)
                            ts.append((time.perf_counter() - t0) * 1e3)
                t_t = float(np.median(ts[2:]))
                t_g = cm.exe.time_graph(feeds, repeat)
                rows.append({"model": name, "batch": batch, "minicc_ms": t_m, "graph_ms": t_g,
                             "torch_ms": t_t, "ratio": t_m / t_t, "graph_ratio": t_g / t_t,
                             "matches_onnxruntime": bool(ok)})
                print(f"{name:10} batch {batch:2}: minicc {t_m:8.3f} ms (as a CUDA graph "
                      f"{t_g:8.3f} ms)  torch eager {t_t:8.3f} ms  ratio {t_m / t_t:5.2f}x "
                      f"({t_g / t_t:5.2f}x)  {'matches' if ok else 'MISMATCH vs'} onnxruntime",
                      flush=True)
    return rows


def pipelined(n: int = 64, model: str = "resnet50") -> dict:
    """`run_many` over `n` numpy inputs on 2 and 3 streams against a plain loop of `run` (each
    run copies in, computes, copies out, and waits): throughput of each, outputs equal."""
    import time

    from minicc import compile
    from minicc.demo import light_model_path

    cm = compile(light_model_path(model), target="cuda")
    (name, dt, shape), = cm.artifact.inputs
    rng = np.random.default_rng(0)
    batch = [{name: rng.random(shape).astype(np.float32)} for _ in range(n)]
    cm.run(batch[0])
    t = time.perf_counter()
    plain = [cm.run(x) for x in batch]
    loop_s = time.perf_counter() - t
    row = {"model": model, "inputs": n, "loop_runs_per_s": round(n / loop_s, 1)}
    for streams in (2, 3):
        cm.run_many(batch[:streams], streams)            # warm: arenas, pinned buffers
        outs, timing = cm.run_many(batch, streams)
        same = all(np.array_equal(o[k], p[k]) for o, p in zip(outs, plain) for k in p)
        row[f"streams_{streams}_runs_per_s"] = round(timing["runs_per_s"], 1)
        row[f"streams_{streams}_speedup"] = round(timing["runs_per_s"] * loop_s / n, 2)
        row[f"streams_{streams}_outputs_equal"] = same
    print(f"run_many ({model}, {n} inputs): " + ", ".join(f"{k} {v}" for k, v in row.items()),
          flush=True)
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--precisions", default="fp32,tf32,fp16",
                    help="GEMM math modes to time (tensor cores: tf32, fp16)")
    args = ap.parse_args(argv)
    for p, sched in GEMM_VARIANTS:
        if p in args.precisions.split(","):
            gemm(args.n, args.repeat, p, sched)
    end_to_end(args.repeat)
    pipelined()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
