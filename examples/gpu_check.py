"""The GPU check: one command, on a machine with an NVIDIA GPU, that runs everything the CUDA
backend has to show, within a time budget, and writes what it measured to one JSON file.

    pip install --no-deps --no-build-isolation -e .
    python examples/gpu_check.py [--budget 480] [--out gpu_check.json] [--repeat 30]
    python examples/gpu_check.py --dry-run     # no GPU: NVRTC, and the CUDA C on this CPU

Stages, in order (a stage that would start past the budget is skipped, and says so; the JSON
is written after each, so a run cut off keeps what it measured):
1. `pytest -m cuda tests/codegen/test_{cuda,mma,streams}.py`: the GPU tests (light models
   against onnxruntime, CUDA-graph replay, the tensor-core and pipelined kernels, streams).
2. Every light model and the PyTorch test models through the CUDA target against onnxruntime on
   the CPU (rtol 1e-3, atol 1e-4), then again replayed as a CUDA graph (same outputs). A model
   that mismatches gets `first_divergence`: the first kernel whose results differ from the
   same CUDA C run on this CPU (a lead for the next session, which may have no GPU).
3. examples/bench_gpu.py: GEMM 4096^3 against cuBLAS in FP32, TF32 and FP16; ResNet-50 and the
   BERT-style encoder at batch 1 and 16 against PyTorch eager; `run_many` over 64 inputs on 2
   and 3 streams against a loop of `run`.
4. INT8: resnet18_like and mobilenetv2_like quantized by `minicc.quantize` on the GPU against
   the same quantized model on the CPU (rtol 1e-4, atol 1e-5: the same integers).
5. The models of stage 2 again on the tensor cores (`--precision tf32` and `fp16`: rtol 1e-2,
   atol 1e-2 of the largest output), while the budget lasts.

With --dry-run (any machine with NVRTC and a C++ compiler) stage 1 runs the GPU tests on
tests/host_cupy.py, a stand-in for CuPy whose device is this CPU; stage 2 compiles every model
to cubin, counts the kernels and runs each model's CUDA C on this CPU against onnxruntime
(minicc.emulate_cuda), as stages 4 and 5 do (INT8; TF32 and FP16) while the budget lasts
(--no-emulate: compile only); stage 3 lists what it would run. The script, the runtime and the
models are checked before device time is spent on them. Models that end in Softmax also output
its input: the probabilities alone can hide errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
TORCH_MODELS = ("resnet18_like", "mobilenetv2_like", "bert_like", "lstm")
INT8_MODELS = ("resnet18_like", "mobilenetv2_like")     # stage_int8
TENSOR_CORE_TOL = {"tf32": (1e-2, 1e-2), "fp16": (1e-2, 1e-2)}   # (rtol, atol) vs onnxruntime


def _models(tmp: Path, with_torch: bool, only: set[str] | None = None
            ) -> list[tuple[str, str, dict]]:
    """(name, ONNX path, inputs): the light models (He-initialized random weights in place of
    their constant ones) and the PyTorch test models with their own inputs."""
    import onnx

    from minicc.bench import he_weights
    from minicc.demo import LIGHT_MODELS, light_model_path

    out = []
    for n in LIGHT_MODELS:
        if only is not None and f"light_{n}" not in only:
            continue
        proto = _expose_logits(he_weights(onnx.load(light_model_path(n))))
        p = tmp / f"light_{n}.onnx"
        onnx.save(proto, p)
        init = {t.name for t in proto.graph.initializer}
        feeds = {i.name: np.random.default_rng(0).random(
            [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in proto.graph.input if i.name not in init}
        out.append((f"light_{n}", str(p), feeds))
    if with_torch:
        try:
            import torch_models as tm
        except ImportError as e:            # no torch here: the light models only
            print(f"gpu_check: PyTorch models skipped ({e})", flush=True)
            return out
        for n in TORCH_MODELS:
            if only is not None and n not in only:
                continue
            p = tmp / f"{n}.onnx"
            out.append((n, str(p), tm.export(n, p)))
    return out


def _expose_logits(proto):  # type: ignore[no-untyped-def]
    """A model ending in Softmax also outputs the Softmax's input: with random weights the
    probabilities are all 0 and 1, which hides any error in the layers before."""
    import onnx

    outs = {o.name for o in proto.graph.output}
    ends = [n.input[0] for n in proto.graph.node if n.op_type == "Softmax" and n.output[0] in outs]
    if not ends:
        return proto
    typed = {v.name: v for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    for name in ends:
        if name in typed and name not in outs:
            proto.graph.output.append(typed[name])
    return proto


def stage_tests(dry: bool, left: float) -> dict:
    """The GPU tests; with `dry`, on tests/host_cupy.py's device (this CPU: MINICC_HOST_GPU=1),
    which runs runtime/cuda.py and the kernels' CUDA C without a GPU."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
           "tests/codegen/test_cuda.py", "tests/codegen/test_mma.py",
           "tests/codegen/test_streams.py"]
    env = dict(os.environ, MINICC_HOST_GPU="1") if dry else None
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30, left),
                       env=env)
    tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
    return {"command": ("MINICC_HOST_GPU=1 " if dry else "") + " ".join(cmd[2:]),
            "rc": r.returncode, "summary": tail[0]}


def _on_host(row: dict, prefix: str, cm, feeds: dict, ref: dict,  # type: ignore[no-untyped-def]
             tol: tuple[float, float], deadline: float, emulate: bool) -> None:
    """--dry-run: the model's CUDA C run on this CPU (minicc.emulate_cuda) against
    onnxruntime, into `row` (host_*), while the budget lasts."""
    if not emulate:
        return
    if time.monotonic() > deadline:
        row[f"{prefix}host_skipped"] = "time budget"
        return
    from minicc import MiniccError
    from minicc import emulate_cuda as on_host

    t = time.perf_counter()
    try:
        got = on_host(cm).run(feeds)
    except MiniccError as e:               # (a C++ compiler missing, a kernel that deadlocks)
        row[f"{prefix}host_error"] = str(e).splitlines()[0][:300]
        row[f"{prefix}host_matches_onnxruntime"] = False
        return
    scale = max(float(np.abs(ref[k]).max()) for k in ref) or 1.0
    row[f"{prefix}host_s"] = round(time.perf_counter() - t, 1)
    row[f"{prefix}host_max_abs_err"] = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
    row[f"{prefix}host_matches_onnxruntime"] = all(
        np.allclose(got[k], ref[k], rtol=tol[0], atol=tol[1] * (scale if prefix else 1.0))
        for k in ref)


def _localize(cm, feeds: dict) -> dict | str | None:  # type: ignore[no-untyped-def]
    """A model that mismatches on the GPU: the first kernel whose results differ from the same
    CUDA C run on this CPU (runtime/cuda_host.first_divergence), so the next session knows
    where to look without a device."""
    try:
        from minicc import emulate_cuda
        from minicc.runtime.cuda_host import first_divergence

        return first_divergence(cm.artifact, cm.exe.trace(feeds),
                                emulate_cuda(cm).trace(feeds))
    except Exception as e:  # noqa: BLE001  (a localization that fails must not end the check)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


def stage_models(dry: bool, tmp: Path, with_torch: bool, deadline: float,
                 only: set[str] | None = None, emulate: bool = True
                 ) -> tuple[list[dict], list[tuple]]:
    """Every model in FP32 against onnxruntime, and replayed as a CUDA graph: the rows, and
    what stage_tensor_cores needs to run them again. With `dry` (no GPU), each model's CUDA C
    runs on this CPU instead (`emulate`, while the budget lasts)."""
    import onnxruntime as ort

    from minicc import CompileOptions, MiniccError, compile

    rows, done = [], []
    for name, path, feeds in _models(tmp, with_torch, only):
        if time.monotonic() > deadline:
            rows.append({"model": name, "skipped": "time budget"})
            continue
        t = time.perf_counter()
        try:
            cm = compile(path, options=CompileOptions(target="cuda"))
        except MiniccError as e:               # one model's failure must not end the check
            rows.append({"model": name, "error": str(e).splitlines()[0][:300],
                         "matches_onnxruntime": False})
            print(f"gpu_check: {json.dumps(rows[-1])}", flush=True)
            continue
        row = {"model": name, "kernels": len(cm.artifact.summary["kernels"]),
               "cubin_bytes": cm.artifact.summary.get("cubin_bytes", 0),
               "compile_s": round(time.perf_counter() - t, 2)}
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        if dry:
            _on_host(row, "", cm, feeds, ref, (1e-3, 1e-4), deadline, emulate)
        else:
            got = cm.run(feeds)
            graph = compile(path, options=CompileOptions(target="cuda", cuda_graph=True))
            g1, g2 = graph.run(feeds), graph.run(feeds)      # capture, then replay
            row["max_abs_err"] = max(float(np.abs(np.asarray(got[k]) - ref[k]).max())
                                     for k in ref)
            row["matches_onnxruntime"] = all(np.allclose(got[k], ref[k], rtol=1e-3, atol=1e-4)
                                             for k in ref)
            row["graph_replay_equal"] = all(np.array_equal(g1[k], got[k]) and
                                            np.array_equal(g2[k], got[k]) for k in ref)
            if not row["matches_onnxruntime"]:
                row["first_divergence"] = _localize(cm, feeds)
        rows.append(row)
        done.append((row, path, feeds, ref))
        print(f"gpu_check: {json.dumps(row)}", flush=True)
    return rows, done


def stage_tensor_cores(done: list[tuple], dry: bool, deadline: float,
                       emulate: bool = True) -> None:
    """The models again on the tensor cores (tf32, fp16) against onnxruntime at their
    tolerance, as long as time is left; into the models' rows."""
    from minicc import CompileOptions, MiniccError, compile

    for row, path, feeds, ref in done:                   # the same models on tensor cores
        for p, (rtol, atol) in TENSOR_CORE_TOL.items():
            if time.monotonic() > deadline:
                row[f"{p}_skipped"] = "time budget"
                continue
            try:
                tc = compile(path, options=CompileOptions(target="cuda", precision=p))
                row[f"{p}_mma_kernels"] = sum(k["schedule"].startswith("gpu.mma")
                                              for k in tc.artifact.summary["kernels"])
                out = None if dry else tc.run(feeds)
                if dry:
                    _on_host(row, f"{p}_", tc, feeds, ref, (rtol, atol), deadline, emulate)
            except MiniccError as e:           # one model's failure must not end the check
                row[f"{p}_error"] = str(e).splitlines()[0][:300]
                row[f"{p}_matches_onnxruntime"] = False
                continue
            if not dry:
                scale = max(float(np.abs(ref[k]).max()) for k in ref) or 1.0
                row[f"{p}_max_abs_err"] = max(float(np.abs(np.asarray(out[k]) - ref[k]).max())
                                              for k in ref)
                row[f"{p}_matches_onnxruntime"] = all(
                    np.allclose(out[k], ref[k], rtol=rtol, atol=atol * scale) for k in ref)
        tc_row = {k: v for k, v in row.items() if k == "model" or k.startswith(("tf32", "fp16"))}
        print(f"gpu_check: tensor cores {json.dumps(tc_row)}", flush=True)


def stage_int8(done: list[tuple], dry: bool, deadline: float, emulate: bool = True) -> None:
    """INT8: the PyTorch CNNs quantized (`minicc.quantize`, 8 random calibration batches) and
    compiled for the GPU (__dp4a GEMMs with the requantizing epilogue) against the same
    quantized model compiled for this CPU (the same integers: max abs difference ~1e-7); into
    the models' rows, while the budget lasts."""
    from minicc import MiniccError, compile, quantize

    for row, path, feeds, _ in done:
        if row["model"] not in INT8_MODELS:
            continue
        if time.monotonic() > deadline:
            row["int8_skipped"] = "time budget"
            continue
        try:
            q = quantize(path, "random:8")
            want = compile(q.module, threads=1).run(feeds)
            cm = compile(q.module, target="cuda")
            row["int8_kernels"] = len(cm.artifact.summary["kernels"])
            if dry and not emulate:
                continue
            if dry:
                from minicc import emulate_cuda as on_host
                got = on_host(cm).run(feeds)
            else:
                got = cm.run(feeds)
        except MiniccError as e:
            row["int8_error"] = str(e).splitlines()[0][:300]
            row["int8_matches_cpu"] = False
            continue
        row["int8_max_abs_diff"] = max(float(np.abs(np.asarray(got[k]) - want[k]).max())
                                       for k in want)
        row["int8_matches_cpu"] = all(np.allclose(got[k], want[k], rtol=1e-4, atol=1e-5)
                                      for k in want)
        shown = {k: v for k, v in row.items() if k == "model" or k.startswith("int8")}
        print(f"gpu_check: int8 {json.dumps(shown)}", flush=True)


def stage_bench(dry: bool, repeat: int, gemm_n: int = 4096, inputs: int = 64,
                model: str = "resnet50") -> dict:
    """examples/bench_gpu.py: the GEMMs at `gemm_n`, end to end against PyTorch, and run_many
    over `inputs` inputs of light_`model`."""
    if dry:
        import bench_gpu
        return {"would_run": [f"bench_gpu.gemm({gemm_n}, {p}, {s or 'default'})"
                              for p, s in bench_gpu.GEMM_VARIANTS] + [
            "bench_gpu.end_to_end (resnet50, bert_like at batch 1 and 16 vs PyTorch eager)",
            f"bench_gpu.pipelined (run_many over {inputs} inputs of light_{model} on 2 and 3 "
            "streams vs a loop of run)"]}
    import bench_gpu

    t = time.perf_counter()
    out: dict = {"gemm": []}
    steps = [("gemm", lambda p=p, s=s: bench_gpu.gemm(gemm_n, repeat, p, s))
             for p, s in bench_gpu.GEMM_VARIANTS]
    steps += [("end_to_end", lambda: bench_gpu.end_to_end(repeat)),
              ("run_many", lambda: bench_gpu.pipelined(inputs, model))]
    for key, step in steps:             # one benchmark's failure must not end the check
        try:
            row = step()
        except Exception as e:  # noqa: BLE001  (CuPy, torch and minicc errors alike)
            row = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            print(f"gpu_check: {key} failed: {row['error']}", flush=True)
        if key == "gemm":
            out["gemm"].append(row)
        else:
            out[key] = row
    out["seconds"] = round(time.perf_counter() - t, 1)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="no GPU: compile, do not run")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for all stages")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch models")
    ap.add_argument("--models", help="comma-separated subset (light_squeezenet, bert_like, ...)")
    ap.add_argument("--no-tests", action="store_true", help="skip stage 1 (the GPU tests)")
    ap.add_argument("--gemm-n", type=int, default=4096, help="GEMM size of the benchmark")
    ap.add_argument("--run-many-inputs", type=int, default=64, help="inputs of the run_many "
                    "benchmark")
    ap.add_argument("--run-many-model", default="resnet50", help="light model of the run_many "
                    "benchmark")
    ap.add_argument("--no-emulate", action="store_true", help="--dry-run: do not run the "
                    "models' CUDA C on this CPU (minicc.emulate_cuda)")
    a = ap.parse_args(argv)
    from minicc.codegen.cuda.nvrtc import nvrtc_available
    from minicc.runtime.cuda import cuda_device_available

    why = nvrtc_available()
    if why is not None:
        print(f"gpu_check: NVRTC is not available ({why})", file=sys.stderr)
        return 2
    gpu = cuda_device_available()
    if gpu is not None and not a.dry_run:
        print(f"gpu_check: no CUDA device ({gpu}); use --dry-run to check without one",
              file=sys.stderr)
        return 2
    start = time.monotonic()
    deadline = start + a.budget
    report: dict = {"dry_run": a.dry_run, "budget_s": a.budget}
    def save() -> None:                  # after every stage: a run cut off keeps what it had
        report["seconds"] = round(time.monotonic() - start, 1)
        Path(a.out).write_text(json.dumps(report, indent=1))

    report["tests"] = stage_tests(a.dry_run, a.budget / 3) if not a.no_tests else \
        {"rc": 0, "summary": "not run (--no-tests)"}
    save()
    with tempfile.TemporaryDirectory() as tmp:
        # FP32 models, then the benchmarks, then the tensor-core models with what is left
        report["models"], done = stage_models(a.dry_run, Path(tmp), not a.no_torch,
                                              deadline - a.budget / 2,
                                              set(a.models.split(",")) if a.models else None,
                                              not a.no_emulate)
        save()
        report["bench"] = stage_bench(a.dry_run, a.repeat, a.gemm_n, a.run_many_inputs,
                                      a.run_many_model) if time.monotonic() < deadline \
            else {"skipped": "time budget"}
        save()
        stage_int8(done, a.dry_run, deadline, not a.no_emulate)
        save()
        stage_tensor_cores(done, a.dry_run, deadline, not a.no_emulate)
    save()
    n = sum(r.get("kernels", 0) for r in report["models"])
    bad = [r["model"] for r in report["models"] if r.get("matches_onnxruntime") is False
           or r.get("graph_replay_equal") is False
           or any(r.get(f"{p}_matches_onnxruntime") is False for p in TENSOR_CORE_TOL)
           or r.get("int8_matches_cpu") is False
           or any(r.get(f"{p}host_matches_onnxruntime") is False
                  for p in ("", *(f"{q}_" for q in TENSOR_CORE_TOL)))]
    hosted = sum(k.endswith("host_matches_onnxruntime") for r in report["models"] for k in r)
    print(f"gpu_check: {len(report['models'])} models, {n} kernels"
          + (f", {hosted} model runs on this CPU" if a.dry_run else "") + "; tests: "
          f"{report['tests']['summary']}; {report['seconds']} s; wrote {a.out}"
          + (f"; MISMATCH: {', '.join(bad)}" if bad else ""))
    return 1 if bad or report["tests"]["rc"] not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
