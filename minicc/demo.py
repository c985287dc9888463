"""`minicc demo`: run a real model that ships with the onnx package and check its output.

The light_* models in onnx/backend/test/data/light come with the output the ONNX reference
produced for the input arange(n)/n; the demo imports the model, runs it and compares.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from minicc.errors import MiniccError

LIGHT_MODELS = ("resnet50", "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")


def light_model_path(name: str) -> str:
    import onnx

    if name not in LIGHT_MODELS:
        raise MiniccError(f"unknown demo model '{name}' (choose from {', '.join(LIGHT_MODELS)})")
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{name}.onnx")


def light_model_io(name: str) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    """(model path, {input name: arange(n)/n}, expected output) for a light model."""
    import onnx
    from onnx import numpy_helper

    path = light_model_path(name)
    proto = onnx.load(path)
    inits = {t.name for t in proto.graph.initializer}
    feeds = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        shape = tuple(d.dim_value or 1 for d in vi.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[vi.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    expected = numpy_helper.to_array(onnx.load_tensor(path.replace(".onnx", "_output_0.pb")))
    return path, feeds, expected


def run_demo(name: str = "resnet50", log: Callable[[str], None] = print,
             interpret_too: bool = False) -> bool:
    """Import, compile and run a light model; check against the shipped output."""
    from minicc.api import import_onnx, interpret
    from minicc import CompileOptions, compile
    from minicc.tools import compare

    path, feeds, expected = light_model_io(name)
    log(f"model    {path}")
    t0 = time.perf_counter()
    module = import_onnx(path)
    t1 = time.perf_counter()
    f = module.main
    kinds: dict[str, int] = {}
    for op in f.ops:
        kinds[op.kind] = kinds.get(op.kind, 0) + 1
    top = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:6])
    log(f"import   {len(f.ops)} ops ({top}) in {t1 - t0:.2f} s")
    cm = compile(module, options=CompileOptions())
    t2 = time.perf_counter()
    s = cm.artifact.summary
    log(f"compile  {len(s['kernels'])} kernels, arena {s['arena_bytes'] / 2**20:.1f} MiB, "
        f"{t2 - t1:.2f} s{' (cache hit)' if cm.report.cache_hit else ''}")
    out = cm.run(feeds)
    cm.run(feeds)
    t3 = time.perf_counter()
    cm.run(feeds)
    t4 = time.perf_counter()
    got = out[f.output_names[0]]
    log(f"run      native code on {cm.threads} thread(s): {(t4 - t3) * 1e3:.2f} ms, output "
        f"{f.output_names[0]} {list(got.shape)} {got.dtype}")
    ok = True
    results = [("compiled", got)]
    if interpret_too:
        results.append(("interpreter", interpret(module, feeds)[f.output_names[0]]))
    for how, y in results:
        row = compare({"y": y}, {"y": expected}, rtol=1e-3, atol=1e-4)[0]
        ok = ok and bool(row["ok"])
        log(f"check    {how} vs the shipped expected output: max abs error "
            f"{row.get('max_abs', 0):.3g} (rtol 1e-3, atol 1e-4): "
            f"{'PASS' if row['ok'] else 'FAIL'}")
    return ok
