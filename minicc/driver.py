"""`minicc.compile` and `minicc.load`: model -> graph passes -> fusion -> scheduled loop IR ->
native code, as a `CompiledModel`.

The driver only sequences stages and collects dumps; each stage lives in its own package, and
what differs between targets lives in the target table (`minicc.targets`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from minicc import env, resources
from minicc.errors import (CodegenError, FrontendError, InvalidModelError, MiniccError,
                           NeedsConstantError, UnsupportedOpError)
from minicc.ir.graph import Module
from minicc.options import UNSET, CompileOptions, Target, default_threads, merge_options
from minicc.runtime.artifact import Artifact, read_artifact, save_artifact
from minicc.runtime.checks import check_inputs
from minicc.targets import TargetEntry, get_target


@dataclass
class CompileReport:
    timings: dict[str, float] = field(default_factory=dict)
    dumps: dict[str, str] = field(default_factory=dict)
    cache_hit: bool = False
    notes: list[str] = field(default_factory=list)   # what the user should hear (CLI: stderr)


def host_op(kind: str, arrays: list[np.ndarray], attrs: dict) -> list[np.ndarray]:
    """Run one op on the host with its numpy reference (the runtimes' host-op handler)."""
    from minicc.ir.registry import OPS, canonical_attrs, full_attrs

    at = full_attrs(kind, canonical_attrs(kind, attrs))
    return [np.asarray(r) for r in OPS[kind].reference(arrays, at)]


class CompiledModel:
    """A compiled model. Call it with keyword arrays, or `run(dict)`; both return a dict of
    output arrays by name. `save(path)` writes an artifact that `minicc.load` reads back."""

    def __init__(self, artifact: Artifact, threads: int | None = None,
                 report: CompileReport | None = None, cuda_graph: bool = False,
                 lazy: bool = False, stored_at: Path | None = None):
        from minicc import __version__

        self.artifact = artifact
        self._stored_at = stored_at        # the cache entry holding this artifact, if any
        self.report = report or CompileReport()
        entry = get_target(artifact.target)
        self._load = lambda: entry.executable(artifact, __version__, host_op, threads,
                                              cuda_graph)
        self._threads = threads
        self._exe: Any = None
        # a CUDA model loads when it first runs (needs a GPU); a freshly compiled one too
        # (lazy: `minicc compile -o` never links it, 0.6 s of light_resnet50's compile); a
        # saved one at once, so that an artifact for another machine is refused by load()
        if entry.name != "cuda" and not lazy:
            self._link()

    @property
    def target(self) -> str:
        return self.artifact.target

    @property
    def exe(self) -> Any:
        return self._exe if self._exe is not None else self._link()

    def _link(self) -> Any:
        try:
            self._exe = self._load()
        except MiniccError:
            raise
        except (OSError, RuntimeError) as e:
            raise CodegenError(f"loading the compiled code failed: {e}") from e
        return self._exe

    @property
    def input_names(self) -> list[str]:
        return [n for n, _, _ in self.artifact.inputs]

    @property
    def output_names(self) -> list[str]:
        return [n for n, _, _ in self.artifact.outputs]

    @property
    def threads(self) -> int:
        if self.target == "cuda":
            return 1
        if self._exe is not None:
            return int(self._exe.threads)
        from minicc.runtime.cpu import thread_count

        return thread_count(self.artifact, self._threads)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.exe.run(inputs)

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        return self.exe.run(inputs)

    def run_async(self, inputs: Mapping[str, Any], stream: Any = None) -> Any:
        """CUDA target: queue one run on `stream` (a cupy.cuda.Stream, or None for the model's
        own) and return at once; `.result()` of what it returns waits and gives the outputs.
        Runs on different streams overlap (each stream has its own arena)."""
        self._needs_cuda("run_async")
        return self.exe.run_async(inputs, stream)

    def run_many(self, batch: Sequence[Mapping[str, Any]], streams: int = 2
                 ) -> tuple[list[dict[str, np.ndarray]], dict[str, float]]:
        """CUDA target: run every inputs dict of `batch` pipelined over `streams` streams (the
        copies of one input overlap the kernels of another); the outputs in order, and the
        time it took (CUDA events: `ms`, `runs_per_s`)."""
        self._needs_cuda("run_many")
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            raise MiniccError(f"run_many: streams must be a positive integer, got {streams!r}")
        batch = list(batch)
        if not batch:
            raise MiniccError("run_many: the batch of inputs is empty")
        for i, x in enumerate(batch):
            if not isinstance(x, Mapping):
                raise MiniccError(f"run_many: item {i} of the batch is a {type(x).__name__}, "
                                  "not a dict of input arrays")
            try:
                check_inputs(self.artifact.inputs, x)
            except MiniccError as e:
                raise type(e)(f"run_many: item {i} of the batch: {e}") from None
        return self.exe.run_many(batch, streams)

    def _needs_cuda(self, what: str) -> None:
        if self.target != "cuda":
            raise MiniccError(f"{what} overlaps runs on CUDA streams: compile with "
                              f"target='cuda' (this model is compiled for {self.target}; "
                              "on the CPU use run)")

    def profile(self, inputs: Mapping[str, Any], repeat: int = 10) -> list[dict]:
        """Median time of each step (one per kernel when compiled with profile=True), with its
        FLOPs and GFLOP/s, slowest first."""
        from minicc.abi import HostCall

        times = self.exe.time_segments(inputs, repeat)
        ks = {k["name"]: k for k in self.artifact.summary.get("kernels", [])}
        rows = []
        for st, t in zip(self.artifact.steps, times):
            names = [st.op] if isinstance(st, HostCall) else list(getattr(st, "kernels", ()))
            f = sum(ks[n]["flops"] for n in names if n in ks)
            ops = "+".join(o for n in names for o in (ks[n]["ops"] if n in ks else [n]))
            rows.append({"name": ",".join(names), "ops": ops, "ms": t * 1e3,
                         "gflops": f / t / 1e9 if t > 0 else 0.0, "flops": f})
        return sorted(rows, key=lambda r: -r["ms"])

    def save(self, path: str | os.PathLike) -> Path:
        return save_artifact(self.artifact, path, same_as=self._stored_at)

    def summary(self) -> str:
        s = self.artifact.summary
        ks = s.get("kernels", [])
        where = f"threads: {self.threads}" if self.target != "cuda" else \
            f"target: cuda {s.get('cuda_arch')}, cubin {s.get('cubin_bytes', 0)} bytes"
        lines = [f"kernels: {len(ks)}  host ops: {len(s.get('host_ops', []))}"
                 f" ({', '.join(s.get('host_ops', [])) or 'none'})  {where}"]
        if s.get("target"):
            lines.append(f"target: {s['target']}")
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


def load(path: str | os.PathLike, threads: int | None = None) -> Any:
    """Load an artifact written by `CompiledModel.save` (or a DynamicModel's archive); refuses
    one from another minicc version, or one whose code this machine cannot run."""
    from minicc.dynamic import is_dynamic_archive, load_dynamic

    if is_dynamic_archive(path):
        return load_dynamic(path, threads)
    return CompiledModel(read_artifact(path), threads)


class _Regions(Exception):
    """The model has run-time control flow: `compile` makes a SegmentedModel."""

    def __init__(self, module: Module):
        self.module = module


class _Dynamic(Exception):
    """The imported model keeps symbolic input dims: `compile` makes a DynamicModel."""

    def __init__(self, module: Module):
        self.module = module


def _as_module(model: Any, input_shapes: Mapping[str, Any] | None) -> Module:
    from minicc.dynamic import has_ranges

    if has_ranges(input_shapes):
        raise MiniccError("dim ranges (NAME=LO..HI,...) are for compiling a dynamic model "
                          "(minicc compile / minicc.compile); give one concrete shape here")
    if isinstance(model, Module):
        return model
    p = str(model) if isinstance(model, (str, os.PathLike)) else None
    if p is not None and p.endswith(".mir"):
        from minicc.tools import load_mir

        return load_mir(p)
    from minicc.frontend.onnx_import import import_onnx

    return import_onnx(model, input_shapes)


def resolve_options(o: CompileOptions, entry: TargetEntry) -> CompileOptions:
    """The options with everything left to the machine decided: the thread count (one on a
    GPU), per-kernel entries when MINICC_SPLIT_KERNELS asks, verification when
    MINICC_VERIFY_EACH asks; dumps of generated code must be this target's."""
    threads = 1 if entry.name == "cuda" else (o.threads or default_threads())
    wrong = [s for s in o.dump if s in ("llvm", "asm", "cuda") and s not in entry.dumps]
    if wrong:
        raise MiniccError(f"dump stage {', '.join(wrong)} needs another target (target "
                          f"{entry.name} dumps {', '.join(entry.dumps)})")
    return replace(o, target=entry.name, threads=threads,
                   profile=o.profile or env.flag("MINICC_SPLIT_KERNELS"),
                   verify_each=o.verify_each or env.flag("MINICC_VERIFY_EACH"))


def _front(model: Any, o: CompileOptions, entry: TargetEntry, target: Target,
           report: CompileReport, on_kernel: Any = None, allow_dynamic: bool = False) -> Any:
    """The target-independent half: import, graph passes, fusion, lowering and scheduling with
    the target's rules (each kernel to `on_kernel` as it is made), memory planning; with the
    dumps the options ask for."""
    from minicc.ir.passes.pipeline import check_roundtrip, run_pipeline
    from minicc.ir.printer import print_module
    from minicc.ir.program import build_program

    t0 = time.perf_counter()
    m = _as_module(model, o.input_shapes)
    from minicc.dynamic import is_onnx

    if allow_dynamic and is_onnx(model) and not all(v.type.is_static for v in m.main.inputs):
        raise _Dynamic(m)
    if env.flag("MINICC_VERIFY_ROUNDTRIP"):
        check_roundtrip(m, "after import")
    if "imported" in o.dump:
        report.dumps["imported"] = print_module(m)
    m = run_pipeline(m, o.opt_level, report.dumps if "passes" in o.dump else None,
                     verify_each=o.verify_each)
    from minicc.segmented import has_regions

    if allow_dynamic and has_regions(m.main):
        raise _Regions(m)
    t1 = time.perf_counter()
    report.timings["passes"] = t1 - t0
    prog = build_program(m.main, entry.lower, target, o, on_kernel=on_kernel)
    report.notes += prog.notes + _log_notes(prog, o, target) + _precision_notes(prog, o)
    if env.flag("MINICC_VERIFY_ROUNDTRIP"):
        from minicc.ir.loops.parser import check_roundtrip as check_kernel

        for k in [k for st in prog.kernel_steps for k in (st.kernel, st.nest) if k is not None]:
            check_kernel(k, f"for kernel {k.name}")
    _dump_program(prog, o, report)
    report.timings["lower"] = time.perf_counter() - t1
    return prog


def _precision_notes(prog: Any, o: CompileOptions) -> list[str]:
    """What a CUDA compile that asked for tensor cores got: how many kernels run on them, or
    why none do (the architecture has none for that precision)."""
    if o.target != "cuda" or o.precision not in ("tf32", "fp16"):
        return []
    n = sum(1 for st in prog.kernel_steps if st.kernel is not None and
            st.kernel.schedule == "gpu.mma")
    if n:
        return [f"precision {o.precision}: {n} of {len(prog.kernel_steps)} kernels on the "
                "tensor cores"]
    from minicc.ir.loops.gpu_gemm import sm_version

    if 0 < sm_version(o.cuda_arch) < 80:
        return [f"precision {o.precision}: {o.cuda_arch} has no {o.precision} tensor cores "
                "minicc uses (sm_80 and later); GEMMs run in f32"
                + (" (tensors are still stored as f16)" if o.precision == "fp16" else "")]
    return []


def _log_notes(prog: Any, o: CompileOptions, target: Target) -> list[str]:
    """What a compile with a tuning log says: how many kernels came from it, and what of the
    log it could not use."""
    if not o.tuning_log:
        return []
    from minicc.ir.loops.tuning import load_log, machine_key

    log = load_log(o.tuning_log)
    if not log.path.exists():
        return [f"tuning log {o.tuning_log}: no such file; every kernel has its default "
                "schedule"]
    used = sum(1 for st in prog.kernel_steps if st.origin == "log")
    notes = [f"tuning log {o.tuning_log}: {used} of {len(prog.kernel_steps)} kernels "
             "scheduled from its records"]
    foreign = log.foreign(machine_key(target))
    if foreign:
        notes.append(f"tuning log: {foreign} record(s) measured on other machines ignored "
                     f"(this one is {machine_key(target)})")
    stale = log.stale(machine_key(target))
    if stale:
        notes.append(f"tuning log: {stale} record(s) from another build of minicc ignored (the "
                     "code they timed may have changed; run minicc tune again)")
    notes += [f"tuning log: skipped {s}" for s in log.skipped[:5]]
    return notes


def loops_dump(prog: Any) -> str:
    """`--dump-ir loops`: every kernel's nest before scheduling, then the scheduled kernel
    with its schedule (all of it parses back with ir/loops/parser.py)."""
    from minicc.ir.loops.printer import print_kernel

    return "\n".join(
        f"// {st.kernel.name}: {st.group.describe()}, before scheduling\n"
        + (print_kernel(st.nest) if st.nest is not None else "// (no loop nest kept)\n")
        + f"// {st.kernel.name}: after scheduling\n" + print_kernel(st.kernel)
        for st in prog.kernel_steps)


def _dump_program(prog: Any, o: CompileOptions, report: CompileReport) -> None:
    from minicc.ir.loops.nest import format_compute
    from minicc.ir.passes.fuse import format_partition

    if "fusion" in o.dump:
        report.dumps["fusion"] = format_partition(prog.partition, explain=True)
    if "compute" in o.dump:
        report.dumps["compute"] = "\n".join(format_compute(g) for g in prog.partition.groups
                                             if not g.is_view and not g.is_host) + "\n"
    if "loops" in o.dump:
        report.dumps["loops"] = loops_dump(prog)
    if "memory" in o.dump:
        report.dumps["memory"] = prog.memory.format()


def _cached(o: CompileOptions, key: str, build: Any, report: CompileReport,
            force: bool = False) -> tuple[Artifact, Path | None]:
    """The artifact for `key`, from the cache or built (and stored), with its cache entry."""
    from minicc.runtime.cache import CompileCache

    cache = CompileCache(o.cache_dir) if o.cache else None
    art = cache.get(key) if cache is not None and not force else None
    if art is not None:
        report.cache_hit = True
        return art, cache.path(key)         # type: ignore[union-attr]
    art = replace(build(), cache_key=key)
    return art, cache.put(key, art) if cache is not None else None


def _prepare(options: CompileOptions | None, given: dict[str, Any]
             ) -> tuple[CompileOptions, TargetEntry, Target]:
    o = merge_options(options, given)
    entry = get_target(o.target)
    o = resolve_options(o, entry)
    return o, entry, entry.resolve(o)


def analyze(model: Any, options: CompileOptions | None = None, **fields: Any) -> Any:
    """FLOPs, parameters and bytes moved per op and per fused kernel (ir/cost.py), after the
    graph passes of `opt_level`, without compiling anything."""
    from minicc.ir.cost import analyze as analyze_function
    from minicc.ir.passes.fuse import fuse
    from minicc.ir.passes.pipeline import run_pipeline
    from minicc.ir.program import check_static

    o, entry, tgt = _prepare(options, fields)
    m = run_pipeline(_as_module(model, o.input_shapes), o.opt_level, verify_each=o.verify_each)
    check_static(m.main, "analyzing")
    return analyze_function(m.main, fuse(m.main), tgt.align)


def lower_program(model: Any, options: CompileOptions | None = None, **fields: Any) -> Any:
    """The Program `compile` would generate code for (fused, scheduled, memory planned), without
    generating it: for tests, tuners and tools that inspect kernels."""
    o, entry, tgt = _prepare(options, fields)
    return _front(model, o, entry, tgt, CompileReport())


def compile(model: Any, target: str = UNSET, opt_level: int = UNSET, threads: int | None = UNSET,
            input_shapes: Mapping[str, Any] | None = UNSET, *,
            options: CompileOptions | None = None, **fields: Any) -> Any:
    """Compile a model: an ONNX file (path, bytes, ModelProto), a .mir path or a Module.

    `target`: "llvm" (this CPU; `cpu=` names another LLVM CPU) or "cuda" (NVIDIA GPUs through
    NVRTC; running needs a GPU). `opt_level` 0..3; `threads`: None for every core. Any other
    CompileOptions field may be given as a keyword too (fastmath=True, cpu="x86-64-v3", ...), or
    all of them at once as `options=`; keywords and `options` combine, and a keyword that
    contradicts a value `options` sets raises MiniccError.

    An ONNX model whose inputs keep symbolic dims (none given in `input_shapes`), or that
    `input_shapes` gives dim ranges ("1..16"), compiles into a `minicc.dynamic.DynamicModel`:
    it is called the same way and compiles one specialization per input shape on first sight.
    """
    with resources.gc_paused():
        return _compile(model, target, opt_level, threads, input_shapes, options, fields)


def _compile(model: Any, target: str, opt_level: int, threads: int | None,
             input_shapes: Mapping[str, Any] | None, options: CompileOptions | None,
             fields: dict[str, Any]) -> Any:
    from minicc import __version__
    from minicc.codegen.program_info import cache_key
    from minicc.runtime.cache import CompileCache

    o, entry, tgt = _prepare(options, dict(fields, target=target, opt_level=opt_level,
                                           threads=threads, input_shapes=input_shapes))
    report = CompileReport()
    t0 = time.perf_counter()
    from minicc.dynamic import declares_dynamic, from_onnx, has_ranges, is_onnx, onnx_source

    if has_ranges(o.input_shapes):
        if not is_onnx(model):
            raise MiniccError("dim ranges (NAME=LO..HI,...) need an ONNX model; a Module or "
                              ".mir file takes static shapes")
        return from_onnx(model, o, report, None)
    force = any(s in o.dump for s in entry.dumps)   # a dump of generated code needs a build
    cache = CompileCache(o.cache_dir) if o.cache else None
    mkey = model_key(model, o, tgt, __version__) if cache is not None else None
    if mkey is not None and cache is not None:
        hit = cache.get_model(mkey)
        art = cache.get(hit["artifact"]) if hit is not None else None
        if art is not None:
            report.cache_hit = True
            report.notes = list(hit["notes"])     # type: ignore[index]
            report.timings["cache"] = time.perf_counter() - t0
            return CompiledModel(art, o.threads, report, o.cuda_graph, lazy=True,
                                 stored_at=cache.path(hit["artifact"]))   # type: ignore[index]
    # code generation starts on each kernel as it is lowered (LLVM then runs beside the rest of
    # lowering); a cache hit or an error drops that work
    cg = entry.codegen(tgt, o) if entry.codegen is not None else None
    try:
        with resources.limit(o.memory_budget):
            prog = _front(model, o, entry, tgt, report, cg.kernel if cg is not None else None,
                          allow_dynamic=True)
        t2 = time.perf_counter()
        build = (lambda: cg.finish(prog, __version__)) if cg is not None else \
            (lambda: entry.build(prog, o, __version__))
        art, stored = _cached(o, cache_key(prog, o, tgt, __version__), build, report, force)
    except _Dynamic as d:
        return from_onnx(model, o, report, d.module)
    except _Regions as r:
        from minicc.segmented import SegmentedModel

        report.timings["passes"] = time.perf_counter() - t0
        return SegmentedModel(r.module.main, o, report, onnx_source(model))
    except (UnsupportedOpError, InvalidModelError, NeedsConstantError):
        raise
    except FrontendError as e:     # a converter that needs the shapes the model leaves open
        if is_onnx(model) and declares_dynamic(model, o):
            return from_onnx(model, o, report, None, str(e))
        raise
    finally:
        if cg is not None:
            cg.cancel()
    for stage in entry.dumps:
        if stage in o.dump:
            report.dumps[stage] = entry.dump(stage, art, o, tgt)
    report.timings["codegen"] = time.perf_counter() - t2
    if mkey is not None and cache is not None:
        cache.put_model(mkey, art.cache_key, report.notes)
    return CompiledModel(art, o.threads, report, o.cuda_graph, lazy=True, stored_at=stored)


# options that change how a compile reports or a run goes, not what it builds
_NOT_IN_MODEL_KEY = frozenset({"cache", "cache_dir", "cuda_graph"})


def model_key(model: Any, o: CompileOptions, target: Target, version: str) -> str | None:
    """The key of a whole compile, from the model's bytes and every option: what lets a warm
    compile skip import, passes and lowering (about 2.5 s for resnet50). None where those do
    not say everything or a stage must run: a Module or .mir file, a model that may keep its
    weights in external files (its bytes hold "location"), dumps, verification."""
    import hashlib
    from dataclasses import fields as dc_fields

    from minicc.ir.build import build_id
    from minicc.options import _plain

    if o.dump or o.verify_each or env.flag("MINICC_VERIFY_ROUNDTRIP"):
        return None
    if isinstance(model, bytes):
        data = model
    elif type(model).__name__ == "ModelProto":
        data = model.SerializeToString()
    elif isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"):
        try:
            data = Path(model).read_bytes()
        except (OSError, ValueError):
            return None                    # the import says what is wrong with the path
    else:
        return None
    if b"location" in data:
        return None
    h = hashlib.sha256("|".join([build_id(), version, repr(target),
                                 str(resources.budget(o.memory_budget))]).encode())
    h.update(repr(sorted((f.name, _plain(getattr(o, f.name))) for f in dc_fields(o)
                         if f.name not in _NOT_IN_MODEL_KEY)).encode())
    if o.tuning_log:
        try:
            h.update(Path(o.tuning_log).read_bytes())
        except OSError:
            h.update(b"<no log>")
    h.update(hashlib.sha256(data).digest())
    return h.hexdigest()[:32]
