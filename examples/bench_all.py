"""Benchmark every model of the CPU compiler issue against onnxruntime in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python examples/bench_all.py [--threads 1,2]
        [--repeat 20] [--models resnet50,bert_like,...] [--gemm]

For each model and thread count: the median latency of minicc and onnxruntime over `repeat` runs
after warm-up, on the same inputs, their ratio, and whether the outputs agree; then the geometric
mean of the ratios per thread count. The light_* models get random weights of the same scale as
their ConstantOfShape splats (so they are neither trivially cheap nor uniform); the PyTorch models
come from examples/torch_models.py (needs torch). `--gemm` adds the 1024^3 matmul against numpy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minicc.bench import bench_gemm, bench_model, geomean  # noqa: E402
from minicc.demo import LIGHT_MODELS, light_model_path  # noqa: E402

TORCH_MODELS = ["resnet18_like", "mobilenetv2_like", "bert_like", "lstm"]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--models", default=",".join(list(LIGHT_MODELS) + TORCH_MODELS))
    ap.add_argument("--gemm", action="store_true")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    names = [n for n in args.models.split(",") if n]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name in LIGHT_MODELS:
                rows += bench_model(light_model_path(name), name, threads, args.repeat)
                continue
            try:
                import torch_models as tm
            except ImportError:
                print(f"{name}: skipped (needs torch)")
                continue
            path = Path(tmp) / f"{name}.onnx"
            feeds = tm.export(name, path)
            feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
            rows += bench_model(str(path), name, threads, args.repeat, randomize=False,
                                inputs=feeds)
    for th in threads:
        rs = [r for r in rows if r.threads == th]
        if rs:
            worst = max(rs, key=lambda r: r.ratio)
            print(f"threads {th}: geometric mean minicc/onnxruntime {geomean([r.ratio for r in rs]):.2f}x"
                  f" over {len(rs)} models; worst {worst.model} {worst.ratio:.2f}x; "
                  f"{sum(r.ok for r in rs)}/{len(rs)} outputs match")
    if args.gemm:
        for th in threads:
            bench_gemm(1024, th, 10)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
