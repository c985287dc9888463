"""A Program -> one LLVM module: a function per kernel and one entry function per native segment
(the kernels between two host steps), so a fully compiled model runs in one native call.

Entry ABI: `void minicc_entry_<i>(i8* arena, i8* weights, i8** io, i32 nthreads)`, `io` holding
the input arrays then the output arrays. With more than one thread, every kernel that has a
parallel loop runs in a GOMP_parallel region (libgomp keeps its team between regions), each
thread taking its static share; kernels without one run on the calling thread. One region per
kernel measured faster than one region per model with GOMP_barrier() between kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir

from minicc.codegen.llvm.render import I8, I32, I64, KernelRenderer
from minicc import env
from minicc.errors import ToolchainError
from minicc.ir.loops.nodes import For, LoopKind, walk
from minicc.codegen.program_info import cache_key as program_cache_key
from minicc.codegen.program_info import host_step, summary
from minicc.ir.program import HostStep, KernelStep, Location, Program
from minicc.runtime.artifact import Artifact
from minicc.runtime.llvm_host import host_features, target_machine

PTR = I8.as_pointer()


@dataclass
class Rendered:
    module: ir.Module
    segments: list[dict]


def render_program(prog: Program, fastmath: bool = False, split: bool = False) -> Rendered:
    """`split`: one entry per kernel (for profiling and for finding a crashing kernel)."""
    tm = target_machine()
    m = ir.Module(name="minicc")
    m.triple = tm.triple
    m.data_layout = str(tm.target_data)
    kernels: dict[int, ir.Function] = {}
    for st in prog.steps:
        if isinstance(st, KernelStep):
            fn = KernelRenderer(m, st.kernel, fastmath).render()
            fn.attributes.add("nounwind")
            kernels[id(st)] = fn
    segments: list[dict] = []
    current: list[KernelStep] = []

    def flush() -> None:
        if current:
            name = f"minicc_entry_{len(segments)}"
            _entry(m, name, list(current), kernels, prog.threads, len(prog.inputs))
            segments.append({"native": name, "kernels": [s.kernel.name for s in current]})
            current.clear()
    split = split or env.flag("MINICC_SPLIT_KERNELS")
    for st in prog.steps:
        if isinstance(st, KernelStep):
            current.append(st)
            if split:
                flush()
        else:
            flush()
            assert isinstance(st, HostStep)
            segments.append(host_step(st))
    flush()
    return Rendered(m, segments)


def _pointer(b: ir.IRBuilder, loc: Location, arena: ir.Value, weights: ir.Value, io: ir.Value,
             n_in: int) -> ir.Value:
    if loc.kind == "arena":
        return b.gep(arena, [ir.Constant(I64, loc.offset)])
    if loc.kind == "weights":
        return b.gep(weights, [ir.Constant(I64, loc.offset)])
    idx = loc.offset if loc.kind == "input" else n_in + loc.offset
    return b.load(b.gep(io, [ir.Constant(I64, idx)]))


def _gomp(m: ir.Module, name: str, ty: ir.FunctionType) -> ir.Function:
    fn = m.globals.get(name)
    return fn if fn is not None else ir.Function(m, ty, name)


def _entry(m: ir.Module, name: str, steps: list[KernelStep], kernels: dict[int, ir.Function],
           threads: int, n_in: int) -> None:
    """The exported entry: each kernel with a parallel loop runs in its own GOMP_parallel region
    (the region's end is the barrier before the next kernel); the others run on the calling
    thread alone, so a small serial kernel never wakes the team."""
    ctx_ty = ir.LiteralStructType([PTR, PTR, PTR.as_pointer()])
    entry = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR.as_pointer(), I32]),
                        name)
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    a0, w0, io0, n = entry.args
    cptr = b.alloca(ctx_ty)
    for k, v in enumerate((a0, w0, io0)):
        b.store(v, b.gep(cptr, [ir.Constant(I32, 0), ir.Constant(I32, k)]))
    par = _gomp(m, "GOMP_parallel", ir.FunctionType(
        ir.VoidType(), [ir.FunctionType(ir.VoidType(), [PTR]).as_pointer(), PTR, I32, I32])) \
        if threads > 1 else None
    for i, st in enumerate(steps):
        fn = kernels[id(st)]
        # call(ctx, tid, nthreads): the kernel with its arguments taken from the context
        call = ir.Function(m, ir.FunctionType(ir.VoidType(), [ctx_ty.as_pointer(), I32, I32]),
                           f"{name}_k{i}")
        call.linkage = "internal"
        cb = ir.IRBuilder(call.append_basic_block("entry"))
        ctx, tid, nth = call.args
        arena = cb.load(cb.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, 0)]))
        weights = cb.load(cb.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, 1)]))
        io = cb.load(cb.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, 2)]))
        args = [cb.bitcast(_pointer(cb, loc, arena, weights, io, n_in), aty)
                for loc, aty in zip(st.args, fn.function_type.args)]
        cb.call(fn, args + [tid, nth])
        cb.ret_void()
        parallel = par is not None and any(isinstance(x, For) and x.kind == LoopKind.PARALLEL
                                           for x in walk(st.kernel.body))
        if not parallel:
            b.call(call, [cptr, ir.Constant(I32, 0), ir.Constant(I32, 1)])
            continue
        outl = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR]), f"{name}_k{i}_omp")
        outl.linkage = "internal"
        ob = ir.IRBuilder(outl.append_basic_block("entry"))
        get_tid = _gomp(m, "omp_get_thread_num", ir.FunctionType(I32, []))
        get_n = _gomp(m, "omp_get_num_threads", ir.FunctionType(I32, []))
        ob.call(call, [ob.bitcast(outl.args[0], ctx_ty.as_pointer()), ob.call(get_tid, []),
                       ob.call(get_n, [])])
        ob.ret_void()
        with b.if_else(b.icmp_signed(">", n, ir.Constant(I32, 1))) as (multi, single):
            with multi:
                b.call(par, [outl, b.bitcast(cptr, PTR), n, ir.Constant(I32, 0)])
            with single:
                b.call(call, [cptr, ir.Constant(I32, 0), ir.Constant(I32, 1)])
    b.ret_void()


def optimize(text: str, opt_level: int) -> llvm.ModuleRef:
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise ToolchainError(f"LLVM rejected the generated IR: {e}\n--- IR (first 4000 chars) "
                             f"---\n{text[:4000]}") from None
    tm = target_machine()
    if opt_level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=min(opt_level, 3))
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    return mod


def needed_features() -> tuple[str, ...]:
    """The SIMD features the emitted code may use (what a loading machine must have)."""
    feats = host_features()[1].split(",")
    wanted = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "avx", "fma", "f16c",
              "sse4.2")
    return tuple(f[1:] for f in feats if f[1:] in wanted and f.startswith("+"))


def build_artifact(prog: Program, version: str, opt_level: int = 3, fastmath: bool = False,
                   keep_ir: bool = True, split: bool = False) -> Artifact:
    r = render_program(prog, fastmath, split)
    text = str(r.module)
    mod = optimize(text, opt_level)
    tm = target_machine()
    obj = tm.emit_object(mod)
    cpu, _ = host_features()
    key = cache_key(prog, opt_level, fastmath, version, split)
    return Artifact(version=version, target="llvm", triple=tm.triple, cpu=cpu,
                    features=needed_features(), object_code=obj, steps=tuple(r.segments),
                    inputs=tuple(prog.inputs), outputs=tuple(prog.outputs),
                    output_sources=tuple((s.kind, s.offset) for s in prog.output_sources),
                    arena_bytes=prog.memory.arena_bytes, weights=prog.weights,
                    threads=prog.threads, cache_key=key,
                    summary=summary(prog), source=text if keep_ir else "")


def cache_key(prog: Program, opt_level: int, fastmath: bool, version: str,
              split: bool = False) -> str:
    return program_cache_key(prog, version, "llvm", opt_level, fastmath, prog.threads, split,
                             host_features())


