"""INT8 against FP32 on CNNs with random weights: accuracy per calibrator and speed.

    python examples/int8_eval.py [--models resnet18_like,mobilenetv2_like,light_resnet50]
                                 [--inputs 200] [--calib 32] [--repeat 30]

For each model: calibrate on --calib random inputs (seeded), then over --inputs other fixed
inputs report the relative L2 error of the INT8 outputs against FP32 and the top-1 agreement,
for minmax, entropy and percentile; then the 1-thread latency of minicc FP32, minicc INT8, and
onnxruntime on the FP32 model and on the QDQ model minicc exports, alternated in one process.
light_resnet50's ConstantOfShape weights are replaced by He-initialized normal weights (signed,
so the logits differ from input to input).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make(name: str, out: Path) -> Path:
    p = out / f"{name}.onnx"
    if name.startswith("light_"):
        from minicc.bench import he_weights
        from minicc.demo import light_model_path

        onnx.save(he_weights(onnx.load(light_model_path(name[len("light_"):]))), str(p))
    else:
        import deploy_models  # noqa: F401  (registers the deployment models too)
        import torch_models as tm

        tm.export(name, p)
    return p


def feeds_for(path: Path, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    import minicc

    f = minicc.import_onnx(str(path)).main
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
             for name, v in zip(f.input_names, f.inputs)} for _ in range(n)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--models", default="resnet18_like,mobilenetv2_like,light_resnet50")
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--methods", default="minmax,entropy,percentile")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    import minicc
    from minicc.bench import timeit
    from minicc.onnx_export import export_qdq
    from minicc.quantization import _compare, quantize

    tmp = Path(tempfile.mkdtemp(prefix="int8_eval_"))
    for name in args.models.split(","):
        path = make(name, tmp)
        calib = feeds_for(path, args.calib, 1)
        evals = feeds_for(path, args.inputs, 2)
        fp = minicc.compile(str(path), threads=1)
        ref = [[np.asarray(list(fp.run(fd).values())[0])] for fd in evals]
        best = None
        for method in args.methods.split(","):
            q = quantize(str(path), calib, method, threads=1, progress=False)
            cm = minicc.compile(q.module, threads=1)
            got = [[np.asarray(list(cm.run(fd).values())[0])] for fd in evals]
            err, top1 = _compare(ref, got)
            scales = [round(q.params[n].scale, 4) for n in q.layers[1:4]]
            agree = f"{100 * top1:5.1f}%" if top1 is not None else "    -"
            print(f"{name:18} {method:10} rel L2 {err:.4f}  top-1 agreement {agree}  "
                  f"scales of layers 2-4 {scales}", flush=True)
            if best is None or err < best[0]:
                best = (err, method, q, cm)
        assert best is not None
        _, method, q, cm = best
        qdq = export_qdq(q, tmp / f"{name}.qdq.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s_fp = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        s_q = ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"])
        fd = evals[0]
        runners = {"minicc fp32": lambda: fp.run(fd), f"minicc int8 ({method})": lambda: cm.run(fd),
                   "ort fp32": lambda: s_fp.run(None, fd), "ort qdq": lambda: s_q.run(None, fd)}
        times = {k: [] for k in runners}
        for _ in range(3):                      # rounds, alternated
            for k, fn in runners.items():
                times[k].append(timeit(fn, repeat=args.repeat))
        med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
        y_q = np.asarray(s_q.run(None, fd)[0])
        y_m = np.asarray(list(cm.run(fd).values())[0])
        i8 = med[f"minicc int8 ({method})"]
        print(f"{name:18} 1 thread: " + "  ".join(f"{k} {v:.3g} ms" for k, v in med.items())
              + f"  | minicc int8 speedup {med['minicc fp32'] / i8:.2f}x"
              f", ort qdq / minicc int8 {med['ort qdq'] / i8:.2f}x"
              f", max |minicc int8 - ort qdq| {np.abs(y_q - y_m).max():.3g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
