"""`minicc.compile`: model -> graph passes -> fusion -> loop IR -> LLVM -> a CompiledModel.

The driver only sequences stages and collects dumps; each stage lives in its own package.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from minicc import env
from minicc.errors import CodegenError, MiniccError
from minicc.ir.graph import Module
from minicc.ir.registry import OPS, canonical_attrs, full_attrs
from minicc.ir.types import Dim
from minicc.runtime.artifact import Artifact, read_artifact, save_artifact

STAGES = ("imported", "passes", "fusion", "compute", "loops", "memory", "llvm", "asm", "cuda")


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class CompileOptions:
    target: str = "llvm"
    opt_level: int = 3
    threads: int | None = None          # None: every core this process may use
    fastmath: bool = False
    cache: bool = True
    cache_dir: str | None = None
    dump: tuple[str, ...] = ()          # stages to keep: imported, passes, fusion, loops, ...
    input_shapes: Mapping[str, Sequence[Dim]] | None = None
    profile: bool = False               # one native entry per kernel, so each can be timed
    cuda_arch: str = "sm_90"            # target "cuda": the GPU architecture to compile for
    cuda_graph: bool = False            # target "cuda": replay launches as a CUDA graph


@dataclass
class CompileReport:
    timings: dict[str, float] = field(default_factory=dict)
    dumps: dict[str, str] = field(default_factory=dict)
    cache_hit: bool = False


def host_op(kind: str, arrays: list[np.ndarray], attrs: dict) -> list[np.ndarray]:
    """Run one op on the host with its numpy reference (the runtime's host-op handler)."""
    at = full_attrs(kind, canonical_attrs(kind, attrs))
    return [np.asarray(r) for r in OPS[kind].reference(arrays, at)]


class CompiledModel:
    """A model compiled for this CPU. Call it with keyword arrays, or `run(dict)`; both return
    a dict of output arrays by name. `save(path)` writes an artifact `minicc.load` reads back."""

    def __init__(self, artifact: Artifact, threads: int | None = None,
                 report: CompileReport | None = None, cuda_graph: bool = False):
        from minicc import __version__

        self.artifact = artifact
        self.report = report or CompileReport()
        self._exe: Any = None
        self._threads = threads
        self._cuda_graph = cuda_graph
        if artifact.target != "cuda":   # a CUDA model loads when it first runs (needs a GPU)
            from minicc.runtime.cpu import Executable

            self._exe = Executable(artifact, __version__, host_op, threads)

    @property
    def target(self) -> str:
        return self.artifact.target

    @property
    def exe(self) -> Any:
        if self._exe is None:
            from minicc import __version__
            from minicc.runtime.cuda import CudaExecutable

            self._exe = CudaExecutable(self.artifact, __version__, host_op, self._cuda_graph)
        return self._exe

    @property
    def input_names(self) -> list[str]:
        return [n for n, _, _ in self.artifact.inputs]

    @property
    def output_names(self) -> list[str]:
        return [n for n, _, _ in self.artifact.outputs]

    @property
    def threads(self) -> int:
        return self._exe.threads if self.target != "cuda" else 1

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.exe.run(inputs)

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        return self.exe.run(inputs)

    def profile(self, inputs: Mapping[str, Any], repeat: int = 10) -> list[dict]:
        """Median time of each native segment (one per kernel when compiled with profile=True),
        with its FLOPs and GFLOP/s, slowest first."""
        times = self.exe.time_segments(inputs, repeat)
        flops = {k["name"]: k["flops"] for k in self.artifact.summary.get("kernels", [])}
        ops = {k["name"]: k["ops"] for k in self.artifact.summary.get("kernels", [])}
        rows = []
        for st, t in zip(self.artifact.steps, times):
            names = st.get("kernels", [st.get("host", "?")])
            f = sum(flops.get(n, 0) for n in names)
            rows.append({"name": ",".join(names), "ops": "+".join(
                o for n in names for o in ops.get(n, [st.get("host", "")])),
                "ms": t * 1e3, "gflops": f / t / 1e9 if t > 0 else 0.0, "flops": f})
        return sorted(rows, key=lambda r: -r["ms"])

    def save(self, path: str | os.PathLike) -> Path:
        return save_artifact(self.artifact, path)

    def summary(self) -> str:
        s = self.artifact.summary
        ks = s.get("kernels", [])
        where = f"threads: {self.threads}" if self.target != "cuda" else \
            f"target: cuda {s.get('cuda_arch')}, cubin {s.get('cubin_bytes', 0)} bytes"
        lines = [f"kernels: {len(ks)}  host ops: {len(s.get('host_ops', []))}"
                 f" ({', '.join(s.get('host_ops', [])) or 'none'})  {where}"]
        for k in ks:
            lines.append(f"  {k['name']}: {' + '.join(k['ops'])}")
        mb = 1 / (1 << 20)
        lines.append(f"arena: {s.get('arena_bytes', 0) * mb:.2f} MiB (naive sum "
                     f"{s.get('naive_bytes', 0) * mb:.2f} MiB, lower bound "
                     f"{s.get('lower_bound_bytes', 0) * mb:.2f} MiB); weights "
                     f"{s.get('weights_bytes', 0) * mb:.2f} MiB")
        t = self.report.timings
        if t:
            lines.append("compile: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items())
                         + (" (cache hit)" if self.report.cache_hit else ""))
        return "\n".join(lines)


def load(path: str | os.PathLike, threads: int | None = None) -> CompiledModel:
    """Load a saved artifact; refuses one from another minicc version or an unfit CPU."""
    return CompiledModel(read_artifact(path), threads)


def _as_module(model: Any, input_shapes: Mapping[str, Sequence[Dim]] | None) -> Module:
    if isinstance(model, Module):
        return model
    p = str(model) if isinstance(model, (str, os.PathLike)) else None
    if p is not None and p.endswith(".mir"):
        from minicc.tools import load_mir

        return load_mir(p)
    from minicc.frontend.onnx_import import import_onnx

    return import_onnx(model, input_shapes)


def _lower(model: Any, o: CompileOptions, report: CompileReport, lower: Any, threads: int,
           align: int) -> Any:
    """The target-independent half: import, graph passes, fusion, lowering, memory planning,
    with the dumps the options ask for. `lower` is the target's group lowering."""
    from minicc.ir.loops.lower import format_compute
    from minicc.ir.loops.printer import print_kernel
    from minicc.ir.passes.fuse import format_partition
    from minicc.ir.passes.pipeline import check_roundtrip, run_pipeline
    from minicc.ir.printer import print_module
    from minicc.ir.program import build_program

    t0 = time.perf_counter()
    m = _as_module(model, o.input_shapes)
    if env.flag("MINICC_VERIFY_ROUNDTRIP"):
        check_roundtrip(m, "after import")
    if "imported" in o.dump:
        report.dumps["imported"] = print_module(m)
    m = run_pipeline(m, o.opt_level, report.dumps if "passes" in o.dump else None)
    t1 = time.perf_counter()
    report.timings["passes"] = t1 - t0
    prog = build_program(m.main, lower, threads, align=align)
    if "fusion" in o.dump:
        report.dumps["fusion"] = format_partition(prog.partition, explain=True)
    if "compute" in o.dump:
        report.dumps["compute"] = "\n".join(format_compute(g) for g in prog.partition.groups
                                             if not g.is_view and not g.is_host) + "\n"
    if "loops" in o.dump:
        report.dumps["loops"] = "\n".join(print_kernel(k) for k in prog.kernels)
    if "memory" in o.dump:
        report.dumps["memory"] = prog.memory.format()
    report.timings["lower"] = time.perf_counter() - t1
    return prog


def _cached(o: CompileOptions, key: str, build: Any, report: CompileReport,
            force: bool = False) -> Artifact:
    from minicc.runtime.cache import CompileCache

    cache = CompileCache(o.cache_dir) if o.cache else None
    art = cache.get(key) if cache is not None and not force else None
    if art is not None:
        report.cache_hit = True
        return art
    art = build()
    if cache is not None:
        cache.put(key, art)
    return art


def compile(model: Any, target: str = "llvm", opt_level: int = 3, threads: int | None = None,
            input_shapes: Mapping[str, Sequence[Dim]] | None = None,
            options: CompileOptions | None = None) -> CompiledModel:
    """Compile an ONNX model (path, bytes, ModelProto), a .mir path or a Module: for this CPU
    (target 'llvm') or for NVIDIA GPUs (target 'cuda', via NVRTC; running needs a GPU)."""
    from dataclasses import replace

    from minicc import __version__

    o = options or CompileOptions(target=target, opt_level=opt_level, threads=threads)
    if o.input_shapes is None and input_shapes is not None:
        o = replace(o, input_shapes=input_shapes)
    if o.target not in ("llvm", "cpu", "cuda"):
        raise MiniccError(f"unknown target '{o.target}' (targets: llvm, cuda)")
    report = CompileReport()
    if o.target == "cuda":
        from minicc.codegen.cuda.module import build_cuda_artifact, cuda_cache_key
        from minicc.ir.loops.gpu import lower_group_gpu

        prog = _lower(model, o, report, lambda name, g, b, c, t: lower_group_gpu(name, g, b, c),
                      1, 256)
        t2 = time.perf_counter()
        art = _cached(o, cuda_cache_key(prog, o.cuda_arch, o.fastmath, __version__),
                      lambda: build_cuda_artifact(prog, __version__, o.cuda_arch, o.fastmath),
                      report)
        if "cuda" in o.dump:
            report.dumps["cuda"] = art.source
        report.timings["codegen"] = time.perf_counter() - t2
        return CompiledModel(art, None, report, o.cuda_graph)

    from minicc.codegen.llvm.module import build_artifact, cache_key
    from minicc.ir.loops.schedule import lower_group

    nthreads = o.threads or default_threads()
    prog = _lower(model, o, report, lambda name, g, b, c, t: lower_group(name, g, b, c, t,
                                                                          o.opt_level),
                  nthreads, 64)
    t2 = time.perf_counter()
    art = _cached(o, cache_key(prog, o.opt_level, o.fastmath, __version__, o.profile),
                  lambda: build_artifact(prog, __version__, o.opt_level, o.fastmath,
                                         split=o.profile),
                  report, force=bool({"llvm", "asm"} & set(o.dump)))
    if "llvm" in o.dump:
        report.dumps["llvm"] = art.source
    if "asm" in o.dump:
        from minicc.codegen.llvm.module import optimize
        from minicc.runtime.llvm_host import target_machine

        report.dumps["asm"] = target_machine().emit_assembly(optimize(art.source, o.opt_level))
    report.timings["codegen"] = time.perf_counter() - t2
    try:
        return CompiledModel(art, nthreads, report)
    except MiniccError:
        raise
    except (OSError, RuntimeError) as e:
        raise CodegenError(f"loading the compiled code failed: {e}") from e
