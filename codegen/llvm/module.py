"""A Program -> LLVM modules, compiled to one object each: a function per kernel, and in the last
module one entry function per native segment (the kernels between two host steps), so a fully
compiled model runs in one native call.

Entry ABI: `void minicc_entry_<i>(i8* arena, i8* weights, i8** io, i32 nthreads)`, `io` holding
the input arrays then the output arrays. With more than one thread, every kernel that has a
parallel loop runs in a GOMP_parallel region (libgomp keeps its team between regions), each
thread taking its static share; kernels without one run on the calling thread. One region per
kernel measured faster than one region per model with GOMP_barrier() between kernels.

Compiled for profiling (`profile=True`: one entry per kernel), each entry also records the
cycle counter (`llvm.readcyclecounter`: rdtsc on x86) as it starts and as it returns in a
global `<entry>_ticks` (two i64), and the module exports `minicc_ticks_now()`: the runtime
times each kernel by its own ticks, not by a Python clock around the call (which added 3-5 us
to every kernel of a few microseconds).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import llvmlite.binding as llvm
from llvmlite import ir

from minicc.abi import TICKS_NOW, TICKS_SUFFIX, HostCall, Location, LocKind, NativeCall, Step
from minicc.codegen.llvm import worker
from minicc.codegen.llvm.render import I8, I32, I64, kernel_type, render_module
from minicc.codegen.llvm.target import machine_for
from minicc.codegen.program_info import summary
from minicc.errors import ToolchainError
from minicc.ir.compute import Const
from minicc.ir.loops.nodes import (Allocate, For, IfThen, Kernel, LoopKind, Seq, Stmt,
                                   walk)
from minicc.ir.loops.printer import canonical_text
from minicc.ir.program import KernelStep, Program
from minicc.options import CompileOptions, Target
from minicc.runtime.artifact import Artifact

PTR = I8.as_pointer()


# a chunk of kernels (one module) closes once they hold about this many LLVM instructions
# (resnet50: ~50k in all): small enough that the last chunk's work, which nothing overlaps,
# stays short
CHUNK_INSTRUCTIONS = 4000
# the modules of one program, as LLVM IR text, joined with this line (`--dump-ir llvm`)
MODULE_SEPARATOR = "; ---- minicc: next module ----\n"
# LLVM instructions per loop-IR statement once unrolled loops are counted out (resnet50,
# densenet121, mobilenetv2_224, minilm_like: median 12.6, correlation 0.98 over 260 kernels)
INSTRUCTIONS_PER_STATEMENT = 12


def _statements(s: Stmt) -> int:
    """Statements in `s` with every unrolled loop counted out (the size LLVM will see)."""
    if isinstance(s, For):
        n = _statements(s.body)
        return 1 + (n * int(s.extent.value) if s.kind == LoopKind.UNROLL and
                    isinstance(s.extent, Const) else n)
    if isinstance(s, Seq):
        return sum(_statements(x) for x in s.stmts)
    if isinstance(s, IfThen):
        return 1 + _statements(s.then) + (_statements(s.else_) if s.else_ is not None else 0)
    if isinstance(s, Allocate):
        return _statements(s.body)
    return 1


def _new_module(tm: llvm.TargetMachine) -> ir.Module:
    m = ir.Module(name="minicc")
    m.triple = tm.triple
    m.data_layout = str(tm.target_data)
    return m


class ProgramCodegen:
    """A program's LLVM code, built as its kernels arrive: `kernel` takes one (the driver hands
    each over as lowering makes it) into a chunk of about CHUNK_INSTRUCTIONS, and a helper
    thread hands each chunk as it closes to a worker process that renders and compiles it
    (see _LLVM), so code generation runs on the other core while this one lowers the rest;
    `finish` adds the module of entries, renders and compiles here what the worker has not
    started, and assembles the Artifact; `cancel` drops the work (a cache hit, an error).

    Kernels that compute the same thing on the same shapes (the repeated blocks of a ResNet)
    are rendered once: their weights come in by pointer, so one function serves them all.
    Kernels are external symbols, so the entries reach them from their own module (the
    execution engine links the objects)."""

    def __init__(self, target: Target, opts: CompileOptions):
        self.target, self.opts = target, opts
        self.tm = machine_for(target)
        self.chunk: list[Kernel] = []
        self.size = 0
        self.rendered: dict[str, tuple[str, ir.FunctionType]] = {}   # canonical text -> symbol
        self.names: set[str] = set()
        self.work: list[list[Kernel] | str] = []     # each module: its kernels, or its IR text
        self.jobs: list[Future[tuple[str, bytes]]] = []
        self.llvm = _LLVM(opts, target)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minicc-llvm")
        self.closed = False
        self.seen: dict[int, tuple[Kernel, str]] = {}   # id -> (kernel, its canonical text)

    def kernel(self, k: Kernel) -> tuple[str, ir.FunctionType]:
        """The kernel's symbol and type; a kernel not seen before joins the open chunk."""
        got = self.seen.get(id(k))
        if got is None or got[0] is not k:     # (finish asks again for each kernel: printing
            got = self.seen[id(k)] = (k, canonical_text(k))   # them all took 0.12 s)
        key = got[1]
        sym = self.rendered.get(key)
        if sym is None:
            if k.name in self.names:       # (a kernel changed after it was handed over)
                k = replace(k, name=f"{k.name}_v{len(self.names)}")
            sym = self.rendered[key] = (k.name, kernel_type(k))
            self.names.add(k.name)
            self.chunk.append(k)
            self.size += INSTRUCTIONS_PER_STATEMENT * _statements(k.body)
            if self.size >= CHUNK_INSTRUCTIONS:
                self._close_chunk()
        return sym

    def _close_chunk(self) -> None:
        self._submit(self.chunk)
        self.chunk, self.size = [], 0

    def _submit(self, work: list[Kernel] | str) -> None:
        self.work.append(work)
        self.jobs.append(self.pool.submit(self.llvm, work, len(self.jobs)))

    def finish(self, prog: Program, version: str) -> Artifact:
        """The entries: one per native segment, or with `opts.profile` one per kernel (for
        profiling and for finding a crashing kernel); then every object, and the Artifact."""
        kernels = {i: self.kernel(st.kernel) for i, st in enumerate(prog.steps)
                   if isinstance(st, KernelStep)}
        if self.chunk:
            self._close_chunk()
        m = _new_module(self.tm)
        declared: dict[str, ir.Function] = {}

        def declare(sym: tuple[str, ir.FunctionType]) -> ir.Function:
            name, ty = sym
            if name not in declared:
                declared[name] = ir.Function(m, ty, name)
                declared[name].attributes.add("nounwind")
            return declared[name]
        steps: list[Step] = []
        current: list[tuple[int, KernelStep]] = []

        def flush() -> None:
            if current:
                name = f"minicc_entry_{len(steps)}"
                _entry(m, name, [st for _, st in current],
                       [declare(kernels[i]) for i, _ in current], prog.threads,
                       len(prog.inputs), timed=self.opts.profile)
                steps.append(NativeCall(name, tuple(st.kernel.name for _, st in current)))
                current.clear()
        for i, st in enumerate(prog.steps):
            if isinstance(st, KernelStep):
                current.append((i, st))
                if self.opts.profile:
                    flush()
            else:
                flush()
                assert isinstance(st, HostCall)
                steps.append(st)
        flush()
        self._submit(str(m))
        try:
            texts, objects = self._objects()
        finally:
            self.cancel()
        t = prog.target
        return Artifact(version=version, target=t.name, triple=t.triple, cpu=t.cpu,
                        features=t.features, objects=objects, steps=tuple(steps),
                        inputs=prog.inputs, outputs=prog.outputs,
                        output_sources=prog.output_sources,
                        arena_bytes=prog.memory.arena_bytes, weights=prog.weights,
                        threads=prog.threads, summary=summary(prog),
                        source=MODULE_SEPARATOR.join(texts))

    def _objects(self) -> tuple[list[str], tuple[bytes, ...]]:
        """Every module's IR text and object. Lowering is done, so this process takes the
        modules the worker has not started, from the last one back, while the worker goes on
        from the first (light_densenet121 at 2 threads: LLVM was still 4.4 s behind the
        renderer)."""
        got: dict[int, tuple[str, bytes]] = {}
        for i in reversed(range(len(self.jobs))):
            if self.jobs[i].cancel():
                got[i] = self.llvm.here(self.work[i], i)
        done = [got[i] if i in got else j.result() for i, j in enumerate(self.jobs)]
        return [t for t, _ in done], tuple(o for _, o in done)

    def cancel(self) -> None:
        """Stop: what LLVM has not started is dropped, the worker goes back to the pool."""
        if not self.closed:
            self.closed = True
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.llvm.done()


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


def _cycles(m: ir.Module) -> ir.Function:
    """llvm.readcyclecounter, and the exported minicc_ticks_now() that reads it (once)."""
    fn = m.globals.get("llvm.readcyclecounter")
    if fn is None:
        fn = ir.Function(m, ir.FunctionType(I64, []), "llvm.readcyclecounter")
        now = ir.Function(m, ir.FunctionType(I64, []), TICKS_NOW)
        nb = ir.IRBuilder(now.append_basic_block("entry"))
        nb.ret(nb.call(fn, []))
    return fn


def _entry(m: ir.Module, name: str, steps: list[KernelStep], kernels: list[ir.Function],
           threads: int, n_in: int, timed: bool = False) -> None:
    """The exported entry: each kernel with a parallel loop runs in its own GOMP_parallel region
    (the region's end is the barrier before the next kernel); the others run on the calling
    thread alone, so a small serial kernel never wakes the team. `timed`: the cycle counter at
    the start and at the end, in the global `<name>_ticks`."""
    ctx_ty = ir.LiteralStructType([PTR, PTR, PTR.as_pointer()])
    entry = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR.as_pointer(), I32]),
                        name)
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    a0, w0, io0, n = entry.args
    ticks = None
    if timed:
        ticks = ir.GlobalVariable(m, ir.ArrayType(I64, 2), name + TICKS_SUFFIX)
        ticks.initializer = ir.Constant(ir.ArrayType(I64, 2), [0, 0])
        b.store(b.call(_cycles(m), []), b.gep(ticks, [ir.Constant(I32, 0), ir.Constant(I32, 0)]))
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
    if ticks is not None:
        b.store(b.call(_cycles(m), []), b.gep(ticks, [ir.Constant(I32, 0), ir.Constant(I32, 1)]))
    b.ret_void()


def optimize(text: str, opt_level: int, target: Target) -> llvm.ModuleRef:
    try:
        return worker.optimize(text, opt_level, machine_for(target))
    except worker.LLVMFailure as e:
        raise _rejected(str(e), text) from None


def _rejected(error: str, text: str) -> ToolchainError:
    return ToolchainError(f"LLVM rejected the generated IR: {error}\n--- IR (first 4000 chars) "
                          f"---\n{text[:4000]}")


class _LLVM:
    """Where a program's modules are rendered and compiled: a worker process (see
    codegen/llvm/worker.py), taken when the compile starts so that it has imported the
    renderer by the time the first kernels are lowered; this process where none can be had."""

    def __init__(self, opts: CompileOptions, target: Target) -> None:
        self.args = (opts.opt_level, target.cpu, target.llvm_features)
        self.render_args = (opts.fastmath, target.features)
        self.triple = machine_for(target).triple
        self.layout = str(machine_for(target).target_data)
        self.proc = worker.take()

    def text(self, work: list[Kernel] | str) -> str:
        return work if isinstance(work, str) else render_module(
            work, self.triple, self.layout, *self.render_args)

    def here(self, work: list[Kernel] | str, index: int) -> tuple[str, bytes]:
        """Render and compile in this process (beside the worker)."""
        text = self.text(work)
        try:
            return text, worker.compile_module(text, *self.args)
        except worker.LLVMFailure as e:
            raise _rejected(str(e), text) from None

    def __call__(self, work: list[Kernel] | str, index: int) -> tuple[str, bytes]:
        if self.proc is None:
            return self.here(work, index)
        text = work if isinstance(work, str) else None
        try:
            if text is None:
                got = self.proc.render(work, *self.render_args, *self.args)   # type: ignore
                if got is not None:
                    return got
                text = self.text(work)     # (the worker could not: the error is raised here)
            return text, self.proc.compile(text, *self.args)
        except worker.WorkerDied as e:    # LLVM aborted there (it prints why)
            self.proc = None
            raise ToolchainError(f"{e} while compiling module {index + 1} of the "
                                 "program (`--dump-ir llvm` shows them)") from None
        except worker.LLVMFailure as e:
            raise _rejected(str(e), text if text is not None else self.text(work)) from None

    def done(self) -> None:
        if self.proc is not None:
            worker.give(self.proc)


def build_artifact(prog: Program, opts: CompileOptions, version: str) -> Artifact:
    """Render, optimize and assemble the program for its target (LLVM IR kept as source)."""
    return ProgramCodegen(prog.target, opts).finish(prog, version)


def assembly(art: Artifact, opts: CompileOptions, target: Target) -> str:
    """The machine code of an artifact as assembly text (`--dump-ir asm`), module by module."""
    tm = machine_for(target)
    return "".join(tm.emit_assembly(optimize(text, opts.opt_level, target))
                   for text in art.source.split(MODULE_SEPARATOR))
