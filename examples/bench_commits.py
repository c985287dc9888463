"""Benchmark this minicc against another tree of it in one run: every model of bench_all.py at 1
and 2 threads and the 1024^3 GEMM, old and new alternating, each in a process of its own, on the
same inputs; prints new/old latency ratios with geo-means and checks that the outputs match.

    git worktree add /tmp/old <commit>
    pip install --no-deps --target /tmp/oldsite /tmp/old        # the old tree, not editable
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python examples/bench_commits.py \
        --old /tmp/oldsite [--threads 1,2] [--repeat 20] [--rounds 2] [--models a,b] [--gemm]

The old tree is put first on PYTHONPATH of its worker processes. Workers use only what every
version has: `minicc.compile` (a function, or the old `minicc.compile` module's), `run`, and
`minicc.bench.timeit` / `bench_gemm`. Each (model, threads) runs `rounds` times per side in the
order old, new, new, old, ...; a side's latency is the best of its medians. onnxruntime runs in
this process, so the table also shows both against it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
TORCH_MODELS = ["resnet18_like", "mobilenetv2_like", "bert_like", "lstm"]


def _api():  # type: ignore[no-untyped-def]
    """(compile, CompileOptions) of whichever minicc this process imports. (Never import a
    module only the new tree has: the editable install would serve it to the old tree.)"""
    import minicc

    if hasattr(minicc, "CompileOptions"):
        return minicc.compile, minicc.CompileOptions
    from minicc.compile import CompileOptions, compile  # type: ignore  (before the API move)

    return compile, CompileOptions


def worker(model: str, inputs: str, threads: int, repeat: int, out: str) -> None:
    """Compile, check the warm-up output, time `repeat` runs; save outputs; print JSON."""
    import time

    from minicc.bench import timeit

    compile_, options = _api()
    feeds = dict(np.load(inputs))
    t0 = time.perf_counter()
    cm = compile_(model, options=options(threads=threads))
    tc = time.perf_counter() - t0
    res = cm.run(feeds)
    np.savez(out, **{f"o{i}": v for i, v in enumerate(res.values())})
    t = timeit(lambda: cm.run(feeds), repeat)
    print(json.dumps({"ms": t * 1e3, "compile_s": tc}))


def gemm_worker(threads: int) -> None:
    from minicc.bench import bench_gemm

    g_m, g_n = bench_gemm(1024, threads, 10, log=lambda s: None)
    print(json.dumps({"minicc": g_m, "numpy": g_n}))


def _run(old: str | None, args: list[str]) -> dict:
    env = dict(os.environ)
    if old:
        env["PYTHONPATH"] = old + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, str(Path(__file__).resolve())] + args, env=env,
                       capture_output=True, text=True, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        raise SystemExit(f"worker {'old' if old else 'new'} {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def prepare(names: list[str], tmp: Path) -> dict[str, tuple[str, str]]:
    """Model file and inputs file per model (light models with randomized weights)."""
    sys.path.insert(0, str(HERE))
    from minicc.bench import randomize_constants
    from minicc.demo import LIGHT_MODELS, light_model_path

    out = {}
    for name in names:
        path, ins = tmp / f"{name}.onnx", tmp / f"{name}_in.npz"
        if name in LIGHT_MODELS:
            m = randomize_constants(onnx.load(light_model_path(name)))
            onnx.save(m, str(path))
            inits = {t.name for t in m.graph.initializer}
            rng = np.random.default_rng(1)
            feeds = {i.name: np.abs(rng.standard_normal(
                [d.dim_value for d in i.type.tensor_type.shape.dim])).astype(np.float32)
                for i in m.graph.input if i.name not in inits}
        else:
            import torch_models as tm

            feeds = {k: np.ascontiguousarray(v) for k, v in tm.export(name, path).items()}
        np.savez(ins, **feeds)
        out[name] = (str(path), str(ins))
    return out


def ort_ms(model: str, inputs: str, threads: int, repeat: int) -> float:
    from minicc.bench import ort_session, timeit

    sess = ort_session(model, threads)
    feeds = dict(np.load(inputs))
    return timeit(lambda: sess.run(None, feeds), repeat) * 1e3


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--worker":
        worker(argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5])
        return 0
    if argv and argv[0] == "--gemm-worker":
        gemm_worker(int(argv[1]))
        return 0
    from minicc.demo import LIGHT_MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="site folder (or tree) of the old minicc")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", default=",".join(list(LIGHT_MODELS) + TORCH_MODELS))
    ap.add_argument("--gemm", action="store_true")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        files = prepare([n for n in args.models.split(",") if n], tmp)
        for th in threads:
            for name, (model, inputs) in files.items():
                best = {"old": math.inf, "new": math.inf}
                for r in range(args.rounds):
                    for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                        out = str(tmp / f"{name}_{side}_{th}.npz")
                        res = _run(args.old if side == "old" else None,
                                   ["--worker", model, inputs, str(th), str(args.repeat), out])
                        best[side] = min(best[side], res["ms"])
                a = np.load(str(tmp / f"{name}_old_{th}.npz"))
                b = np.load(str(tmp / f"{name}_new_{th}.npz"))
                same = all(np.array_equal(a[k], b[k]) for k in a.files)
                close = all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a.files)
                o = ort_ms(model, inputs, th, args.repeat)
                rows.append((th, name, best["old"], best["new"], o, same, close))
                verdict = "bit-identical" if same else "close" if close else "DIFFER"
                print(f"{name:18} threads {th}: old {best['old']:8.2f} ms  new {best['new']:8.2f}"
                      f" ms  new/old {best['new'] / best['old']:5.3f}  new/onnxruntime "
                      f"{best['new'] / o:5.2f}  outputs {verdict}", flush=True)
    for th in threads:
        rs = [r for r in rows if r[0] == th]
        print(f"threads {th}: geo-mean new/old {geomean([r[3] / r[2] for r in rs]):.3f}, "
              f"old/onnxruntime {geomean([r[2] / r[4] for r in rs]):.3f}, new/onnxruntime "
              f"{geomean([r[3] / r[4] for r in rs]):.3f} over {len(rs)} models; outputs "
              f"bit-identical {sum(r[5] for r in rs)}/{len(rs)}")
    if args.gemm:
        for th in threads:
            res = {side: [_run(args.old if side == "old" else None, ["--gemm-worker", str(th)])
                          for _ in range(args.rounds)] for side in ("old", "new")}
            g = {s: max(x["minicc"] for x in v) for s, v in res.items()}
            npy = max(x["numpy"] for v in res.values() for x in v)
            print(f"gemm 1024^3 threads {th}: old {g['old']:.1f} GFLOP/s, new {g['new']:.1f} "
                  f"GFLOP/s, new/old {g['new'] / g['old']:.3f}, numpy {npy:.1f} GFLOP/s")
    return 0 if all(r[6] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
