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

from minicc.abi import HostCall, Location, LocKind, NativeCall, Step
from minicc.codegen.llvm.render import I8, I32, I64, KernelRenderer
from minicc.codegen.llvm.target import machine_for
from minicc.codegen.program_info import summary
from minicc.errors import ToolchainError
from minicc.ir.loops.nodes import For, LoopKind, walk
from minicc.ir.loops.printer import canonical_text
from minicc.ir.program import KernelStep, Program
from minicc.options import CompileOptions, Target
from minicc.runtime.artifact import Artifact

PTR = I8.as_pointer()


@dataclass
class Rendered:
    module: ir.Module
    steps: list[Step]


def render_program(prog: Program, opts: CompileOptions) -> Rendered:
    """One entry per native segment; with `opts.profile` one per kernel (for profiling and for
    finding a crashing kernel). `opts.fastmath` allows reassociation. Kernels that compute the
    same thing on the same shapes (the repeated blocks of a ResNet) are rendered once: their
    weights come in by pointer, so one function serves them all, and LLVM compiles it once."""
    fastmath, split = opts.fastmath, opts.profile
    tm = machine_for(prog.target)
    m = ir.Module(name="minicc")
    m.triple = tm.triple
    m.data_layout = str(tm.target_data)
    kernels: dict[int, ir.Function] = {}
    rendered: dict[str, ir.Function] = {}     # kernels that print alike share one function
    for i, st in enumerate(prog.steps):
        if isinstance(st, KernelStep):
            key = canonical_text(st.kernel)
            if key not in rendered:
                fn = KernelRenderer(m, st.kernel, fastmath, prog.target.features).render()
                fn.attributes.add("nounwind")
                rendered[key] = fn
            kernels[i] = rendered[key]
    steps: list[Step] = []
    current: list[tuple[int, KernelStep]] = []

    def flush() -> None:
        if current:
            name = f"minicc_entry_{len(steps)}"
            _entry(m, name, [st for _, st in current], [kernels[i] for i, _ in current],
                   prog.threads, len(prog.inputs))
            steps.append(NativeCall(name, tuple(st.kernel.name for _, st in current)))
            current.clear()
    for i, st in enumerate(prog.steps):
        if isinstance(st, KernelStep):
            current.append((i, st))
            if split:
                flush()
        else:
            flush()
            assert isinstance(st, HostCall)
            steps.append(st)
    flush()
    return Rendered(m, steps)


def _pointer(b: ir.IRBuilder, loc: Location, arena: ir.Value, weights: ir.Value, io: ir.Value,
             n_in: int) -> ir.Value:
    if loc.kind == LocKind.ARENA:
        return b.gep(arena, [ir.Constant(I64, loc.offset)])
    if loc.kind == LocKind.WEIGHTS:
        return b.gep(weights, [ir.Constant(I64, loc.offset)])
    idx = loc.offset if loc.kind == LocKind.INPUT else n_in + loc.offset
    return b.load(b.gep(io, [ir.Constant(I64, idx)]))


def _gomp(m: ir.Module, name: str, ty: ir.FunctionType) -> ir.Function:
    fn = m.globals.get(name)
    return fn if fn is not None else ir.Function(m, ty, name)


def _entry(m: ir.Module, name: str, steps: list[KernelStep], kernels: list[ir.Function],
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
        fn = kernels[i]
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


def optimize(text: str, opt_level: int, target: Target) -> llvm.ModuleRef:
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise ToolchainError(f"LLVM rejected the generated IR: {e}\n--- IR (first 4000 chars) "
                             f"---\n{text[:4000]}") from None
    if opt_level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=min(opt_level, 3))
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pb = llvm.create_pass_builder(machine_for(target), pto)
        pb.getModulePassManager().run(mod, pb)
    return mod


def build_artifact(prog: Program, opts: CompileOptions, version: str) -> Artifact:
    """Render, optimize and assemble the program for its target (LLVM IR kept as source)."""
    r = render_program(prog, opts)
    text = str(r.module)
    obj = machine_for(prog.target).emit_object(optimize(text, opts.opt_level, prog.target))
    t = prog.target
    return Artifact(version=version, target=t.name, triple=t.triple, cpu=t.cpu,
                    features=t.features, object_code=obj, steps=tuple(r.steps),
                    inputs=prog.inputs, outputs=prog.outputs,
                    output_sources=prog.output_sources, arena_bytes=prog.memory.arena_bytes,
                    weights=prog.weights, threads=prog.threads, summary=summary(prog),
                    source=text)


def assembly(art: Artifact, opts: CompileOptions, target: Target) -> str:
    """The machine code of an artifact as assembly text (`--dump-ir asm`)."""
    return machine_for(target).emit_assembly(optimize(art.source, opts.opt_level, target))
