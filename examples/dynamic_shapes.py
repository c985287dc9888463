"""Dynamic shapes, measured: each model is exported with a dynamic batch (the detector also with
a dynamic image size), compiled once without shapes, and run at three batch sizes (and two
image sizes); every output is compared with onnxruntime, and the latency of the specialization
with that of a static compile of the same shape (calls alternated, median of --repeat).

    python examples/dynamic_shapes.py [--threads 1] [--repeat 20] [--models a,b] [--quick]

Prints one row per (model, shape): first-call latency (the specialization's compile, cold
unless the compile cache has it), steady-state latency of the dynamic and the static model,
their ratio, and the max error against onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import minicc  # noqa: E402
from minicc.tools import onnxruntime_outputs  # noqa: E402

# model -> (export kwargs, [(batch, image size or None)])
CASES = {
    "resnet18_like": ({}, [(1, None), (3, None), (8, None)]),
    "mobilenetv2_like": ({}, [(1, None), (3, None), (8, None)]),
    "bert_like": ({}, [(1, None), (3, None), (8, None)]),
    "yolov8n_like": ({"dynamic_image": True},
                     [(1, 320), (2, 320), (4, 320), (1, 256), (2, 256)]),
}


def feeds_for(name: str, batch: int, size: int | None) -> dict[str, np.ndarray]:
    import torch_models as tm

    f = tm.inputs(name, batch)
    if size is not None:
        f = {"x": np.random.default_rng(batch * 1000 + size).standard_normal(
            (batch, 3, size, size)).astype(np.float32)}
    return f


def median_ms(fn, feeds, repeat: int) -> float:  # type: ignore[no-untyped-def]
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(feeds)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument("--quick", action="store_true", help="first two shapes of each model")
    a = ap.parse_args(argv)
    import deploy_models  # noqa: F401  (registers the detector)
    import torch_models as tm

    tmp = Path(tempfile.mkdtemp(prefix="minicc-dynamic-"))
    ok = True
    print(f"threads {a.threads}; latency: median of {a.repeat}, static and dynamic alternated")
    print(f"{'model':18} {'shape':22} {'first call':>11} {'dynamic':>9} {'static':>9} "
          f"{'dyn/static':>10} {'max err vs ORT':>15}")
    for name in a.models.split(","):
        kw, shapes = CASES[name]
        path = tmp / f"{name}_dynamic.onnx"
        tm.export(name, path, dynamic=True, **kw)
        t = time.perf_counter()
        dm = minicc.compile(str(path), threads=a.threads, cache=False)
        print(f"{name}: compiled without shapes in {time.perf_counter() - t:.2f} s "
              f"({type(dm).__name__})")
        for batch, size in (shapes[:2] if a.quick else shapes):
            feeds = feeds_for(name, batch, size)
            t = time.perf_counter()
            got = dm.run(feeds)
            first = time.perf_counter() - t
            ref = onnxruntime_outputs(str(path), feeds)
            err = max(float(np.abs(got[k].astype(np.float64) - ref[k]).max()) for k in ref)
            good = all(np.allclose(got[k], ref[k], rtol=1e-3, atol=1e-4) for k in ref)
            ok &= good
            st = minicc.compile(str(path), threads=a.threads, cache=False,
                                input_shapes={k: v.shape for k, v in feeds.items()})
            d = s = 0.0
            for _ in range(3):      # alternate, so a noisy minute hits both
                d += median_ms(dm.run, feeds, a.repeat) / 3
                s += median_ms(st.run, feeds, a.repeat) / 3
            shape = ",".join(f"{v.shape}" for v in feeds.values()).replace(" ", "")
            print(f"{name:18} {shape:22} {first:10.2f}s {d:8.2f}ms {s:8.2f}ms {d / s:10.3f} "
                  f"{err:15.2e}{'' if good else '  MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
