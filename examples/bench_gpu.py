"""GPU benchmarks for the CUDA backend (run on a machine with an NVIDIA GPU, CuPy and torch):

    python examples/bench_gpu.py [--repeat 50]

1. SGEMM 4096^3 FP32: minicc's shared-memory tiled kernel vs CuPy's matmul (cuBLAS, TF32 off),
   GFLOP/s of each and the ratio, measured with CUDA events in one process.
2. End to end: ResNet-50 (the light_resnet50 architecture, built in examples/torch_models.py)
   and the BERT-style encoder at batch 1 and 16, minicc (CUDA target) vs PyTorch eager on the
   same model and GPU, median latency with CUDA events, and the ratio; minicc's outputs are
   checked against onnxruntime on the CPU (rtol 1e-3, atol 1e-4).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def gemm(n: int, repeat: int) -> None:
    import cupy as cp

    from minicc import CompileOptions, compile
    from minicc.ir.parser import parse

    m = parse(f"func @main(%a: f32[{n},{n}], %b: f32[{n},{n}]) -> (f32[{n},{n}]) {{\n"
              f"  %c = matmul(%a, %b) : f32[{n},{n}]\n  return %c\n}}\n")
    cm = compile(m, options=CompileOptions(target="cuda"))
    rng = np.random.default_rng(0)
    a = cp.asarray(rng.standard_normal((n, n)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((n, n)).astype(np.float32))
    got = cm.run({"a": a, "b": b})["c"]
    ref = a @ b
    err = float(cp.max(cp.abs(got - ref)) / cp.max(cp.abs(ref)))
    t_m = cm.exe.time({"a": a, "b": b}, repeat)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    ts = []
    for _ in range(repeat + 2):
        start.record()
        a @ b
        end.record()
        end.synchronize()
        ts.append(cp.cuda.get_elapsed_time(start, end))
    t_c = float(np.median(ts[2:]))
    f = 2 * n ** 3
    print(f"sgemm {n}^3: minicc {f / t_m / 1e6:.0f} GFLOP/s, cuBLAS {f / t_c / 1e6:.0f} GFLOP/s "
          f"({100 * t_c / t_m:.0f}% of cuBLAS), rel err {err:.1e}")


def end_to_end(repeat: int) -> None:
    import onnxruntime as ort
    import torch

    import torch_models as tm
    from minicc import CompileOptions, compile

    dev = torch.device("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("resnet50", "bert_like"):
            path = Path(tmp) / f"{name}.onnx"
            tm.export(name, path, dynamic=True)
            model = tm.build(name).to(dev).eval()
            for batch in (1, 16):
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
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                ts = []
                with torch.no_grad():
                    for _ in range(repeat + 2):
                        start.record()
                        model(*tin)
                        end.record()
                        torch.cuda.synchronize()
                        ts.append(start.elapsed_time(end))
                t_t = float(np.median(ts[2:]))
                print(f"{name:10} batch {batch:2}: minicc {t_m:8.3f} ms  torch eager "
                      f"{t_t:8.3f} ms  ratio {t_m / t_t:5.2f}x  "
                      f"{'matches' if ok else 'MISMATCH vs'} onnxruntime")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--n", type=int, default=4096)
    args = ap.parse_args(argv)
    gemm(args.n, args.repeat)
    end_to_end(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
