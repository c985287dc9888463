"""Loop IR -> LLVM IR with llvmlite's IRBuilder (never string-pasted LLVM).

One LLVM function per kernel: `void k(T* noalias p0, ..., i32 tid, i32 nthreads)`. A PARALLEL
loop takes the thread's static chunk; a kernel without one runs on thread 0 only. A VECTOR loop is
emitted once with vector values (lanes past its extent masked off): a load or store whose
address is affine in the vector variable with stride 1 becomes a (masked) vector access, stride 0
a scalar access, anything else a gather/scatter. Scalar functions go through emitter tables
keyed by `ir.scalar` primitive names; a missing entry raises CodegenError.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

from llvmlite import ir
from llvmlite.ir.instructions import GEPInstr

from minicc.errors import CodegenError
from minicc.ir.compute import Call, Cast, Const, Expr, Select, Var
from minicc.ir.loops.bounds import interval, linear_terms, simplify_ranged
from minicc.ir.loops.exprs import expr_loads, flat_offset, free_vars, linear_coef, substitute
from minicc.ir.loops.nodes import (Allocate, Barrier, BufLoad, Buffer, For, IfThen, Kernel,
                                   LoopKind, Prefetch, Scope, Seq, Stmt, Store, walk)
from minicc.ir.types import DType
from minicc.codegen.llvm.mathlib import F32_MATH, LIBM, vconst

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F16, F32, F64 = ir.HalfType(), ir.FloatType(), ir.DoubleType()


def llvm_type(dt: DType, memory: bool = False) -> ir.Type:
    """Register type of a dtype (bool is i1 in registers, i8 in memory)."""
    if dt == DType.BOOL:
        return I8 if memory else I1
    if dt.is_float:
        return {DType.F16: F16, DType.F32: F32, DType.F64: F64}[dt]
    return ir.IntType(dt.itemsize * 8)


def _unsigned(dt: DType) -> bool:
    return dt.value.startswith("u")


def kernel_type(k: Kernel) -> ir.FunctionType:
    """`void k(T* p0, ..., i32 tid, i32 nthreads)`: what the entries call, known without
    rendering the kernel."""
    return ir.FunctionType(ir.VoidType(), [llvm_type(p.dtype, memory=True).as_pointer()
                                          for p in k.params] + [I32, I32])


def render_module(kernels: list[Kernel], triple: str, data_layout: str, fastmath: bool,
                  features: tuple[str, ...]) -> str:
    """One LLVM module holding `kernels` (external symbols: the entries are in another
    module), as IR text. The code generator calls it here or in its worker process."""
    m = ir.Module(name="minicc")
    m.triple, m.data_layout = triple, data_layout
    for k in kernels:
        fn = KernelRenderer(m, k, fastmath, features).render()
        fn.linkage = ""
    text = str(m)
    release(m)
    return text


def release(m: ir.Module) -> None:
    """Break the reference cycles of a module that has been printed (each block and
    instruction points back at its parent, each phi at values after it), so refcounting frees
    its objects at once: left to the cyclic collector they were 630,000 objects for resnet50,
    0.35 s of one collection at the end of the compile."""
    for g in list(m.globals.values()):
        if isinstance(g, ir.Function):
            for bb in g.blocks:
                for ins in bb.instructions:
                    if isinstance(ins, ir.PhiInstr):
                        ins.incomings.clear()
                bb.instructions = []
            g.blocks = []


class Val:
    """An emitted value: scalar, or a vector of `lanes` elements."""

    __slots__ = ("v", "vec")

    def __init__(self, v: ir.Value, vec: bool):
        self.v, self.vec = v, vec


class _VecCtx:
    def __init__(self, var: str, lanes: int, mask: ir.Value | None):
        self.var, self.lanes, self.mask = var, lanes, mask


class KernelRenderer:
    """Emits one kernel into an llvmlite module."""

    def __init__(self, module: ir.Module, kernel: Kernel, fastmath: bool = False,
                 features: tuple[str, ...] = ()):
        self.m = module
        self.k = kernel
        self.features = frozenset(features)    # the target's ISA features (intrinsics use them)
        self.flags = ("fast",) if fastmath else ("contract",)
        self.vars: dict[str, ir.Value] = {}
        self.bufs: dict[int, ir.Value] = {}
        self.vec: _VecCtx | None = None
        self.guard: Val | None = None   # loads under a Select happen only where it holds
        # index arithmetic already emitted in the current block (the micro-kernel's addresses
        # share their row and column terms): emitted once, a quarter less IR for LLVM
        self._cse: dict[tuple, tuple] = {}
        self._cse_block: ir.Block | None = None
        self._cse_uses: dict[str, list[tuple]] = {}     # loop variable -> keys that read it
        self._cse_loads: list[tuple] = []              # keys whose value loads memory
        self._addresses: dict[tuple, tuple[Expr, int | None]] = {}
        self._lane0: dict[tuple, Expr] = {}
        self.ranges: dict[str, tuple[int, int]] = {}   # the loop variables' [lo, hi]
        self._runs: dict[tuple, tuple[list[tuple[int, int]], list[int]] | None] = {}

    # -- function --
    def render(self) -> ir.Function:
        k = self.k
        fn = ir.Function(self.m, kernel_type(k), k.name)
        fn.linkage = "internal"
        for a, p in zip(fn.args, k.params):
            a.name = p.name.replace(".", "_")
            a.add_attribute("noalias")
        fn.args[-2].name, fn.args[-1].name = "tid", "nthreads"
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")  # one giant entry function would take LLVM forever
        self.fn = fn
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.tid = self.b.sext(fn.args[-2], I64)
        self.nthreads = self.b.sext(fn.args[-1], I64)
        for a, p in zip(fn.args, k.params):
            ptr: ir.Value = a
            if p.scope == Scope.SCRATCH:  # each thread owns one slice of the scratch area
                ptr = self.b.gep(a, [self.b.mul(self.tid, ir.Constant(I64, p.slice_numel))])
            self.bufs[id(p)] = ptr
        body_bb = fn.append_basic_block("body")
        self.b.position_at_end(body_bb)
        self.parallel = any(isinstance(s, For) and s.kind == LoopKind.PARALLEL
                            for s in walk(k.body))
        if self.parallel:
            self.stmt(k.body)
        else:  # no parallel loop: thread 0 does all the work
            with self.b.if_then(self.b.icmp_signed("==", self.tid, ir.Constant(I64, 0))):
                self.stmt(k.body)
        self.b.ret_void()
        with self.b.goto_block(self.entry):
            self.b.branch(body_bb)
        return fn

    # -- statements --
    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x)
        elif isinstance(s, For):
            self.loop(s)
        elif isinstance(s, Store):
            self.store(s)
        elif isinstance(s, Allocate):
            buf = s.buf
            with self.b.goto_block(self.entry):
                ty = llvm_type(buf.dtype, memory=True)
                self.bufs[id(buf)] = self.b.alloca(ty, size=buf.numel, name=buf.name)
            self.stmt(s.body)
        elif isinstance(s, IfThen):
            c = self.scalar(s.cond)
            if s.else_ is None:
                with self.b.if_then(c):
                    self.stmt(s.then)
            else:
                with self.b.if_else(c) as (then, other):
                    with then:
                        self.stmt(s.then)
                    with other:
                        self.stmt(s.else_)
        elif isinstance(s, Prefetch):
            self.prefetch(s)
        elif isinstance(s, Barrier):
            # the kernel's threads meet (libgomp's team barrier; outside a parallel region, as
            # where the kernel runs on one thread, it returns at once). A kernel without a
            # parallel loop runs on thread 0 alone: nothing to wait for.
            if self.parallel:
                self.b.call(self._intrinsic("GOMP_barrier", ir.VoidType(), []), [])
        else:
            raise CodegenError(f"llvm: no emitter for statement {type(s).__name__}")

    @contextlib.contextmanager
    def for_range(self, start: ir.Value, end: ir.Value, name: str) -> Iterator[ir.Value]:
        """A counted loop [start, end) with named header/body/exit blocks; yields the index."""
        b = self.b
        pre = b.block
        hdr = b.append_basic_block(f"{name}.header")
        body = b.append_basic_block(f"{name}.body")
        exit_ = b.append_basic_block(f"{name}.exit")
        b.branch(hdr)
        b.position_at_end(hdr)
        iv = b.phi(I64, name)
        iv.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", iv, end), body, exit_)
        b.position_at_end(body)
        yield iv
        nxt = b.add(iv, ir.Constant(I64, 1), flags=("nsw",))
        iv.add_incoming(nxt, b.block)
        b.branch(hdr)
        b.position_at_end(exit_)

    def loop(self, s: For) -> None:
        outer = self.ranges.get(s.var.name)
        ext = interval(s.extent, self.ranges)
        if ext is not None and ext[1] >= 1:
            self.ranges[s.var.name] = (0, ext[1] - 1)
        else:
            self.ranges.pop(s.var.name, None)
        self._loop(s)
        if outer is None:
            self.ranges.pop(s.var.name, None)
        else:
            self.ranges[s.var.name] = outer

    def _loop(self, s: For) -> None:
        name = s.var.name.replace(".", "_")
        if s.kind == LoopKind.VECTOR:
            self.vector_loop(s)
            return
        if s.kind == LoopKind.UNROLL:
            if not isinstance(s.extent, Const):
                raise CodegenError(f"unrolled loop {s.var.name} needs a constant extent")
            for i in range(int(s.extent.value)):  # type: ignore[arg-type]
                self.vars[s.var.name] = ir.Constant(I64, i)
                self._drop_cse(s.var.name)    # the same block, another value of the variable
                self.stmt(s.body)
            del self.vars[s.var.name]
            self._drop_cse(s.var.name)
            return
        end = self.scalar(s.extent)
        start: ir.Value = ir.Constant(I64, 0)
        if s.kind == LoopKind.PARALLEL:
            b = self.b
            one = ir.Constant(I64, 1)
            chunk = b.sdiv(b.sub(b.add(end, self.nthreads), one), self.nthreads)
            start = b.mul(self.tid, chunk)
            stop = b.add(start, chunk)
            end = b.select(b.icmp_signed("<", stop, end), stop, end)
        with self.for_range(start, end, name) as iv:
            self.vars[s.var.name] = iv
            self.stmt(s.body)
        del self.vars[s.var.name]
        self._drop_cse(s.var.name)

    def vector_loop(self, s: For) -> None:
        if self.vec is not None:
            raise CodegenError(f"nested vector loops ({self.vec.var}, {s.var.name})")
        lanes = s.lanes
        # the loops' ranges may settle the extent (a row of 14 tiles: min(16, 14 - 16*xo) with
        # xo in 0..0): one body, not a whole one and a masked one (Winograd's input transform
        # rendered twice: light_resnet50's F(4x4) kernels were 1.3 MB of IR each)
        known = interval(s.extent, self.ranges) if not isinstance(s.extent, Const) else None
        extent = Const(known[0], DType.I64) if known is not None and known[0] == known[1] \
            else s.extent
        if isinstance(extent, Const) and extent.value >= lanes:  # type: ignore[operator]
            self._vector_body(s, None)
            return
        if known is not None and known[0] >= lanes:
            self._vector_body(s, None)
            return
        ext = self.scalar(extent)
        ramp = vconst(ir.VectorType(I64, lanes), list(range(lanes)))
        if isinstance(extent, Const) or (known is not None and known[1] < lanes):
            self._vector_body(s, self.b.icmp_signed("<", ramp, self.splat(ext, lanes)))
            return
        # a tail computed at run time (min(lanes, n - o*lanes)): the whole vectors unmasked,
        # only the last one masked (AVX2's masked stores are slow on AMD)
        with self.b.if_else(self.b.icmp_signed(">=", ext, ir.Constant(I64, lanes))) \
                as (whole, tail):
            with whole:
                self._vector_body(s, None)
            with tail:
                self._vector_body(s, self.b.icmp_signed("<", ramp, self.splat(ext, lanes)))

    def _vector_body(self, s: For, mask: ir.Value | None) -> None:
        self.vec = _VecCtx(s.var.name, s.lanes, mask)
        self.stmt(s.body)
        self.vec = None

    # -- memory --
    def address(self, buf: Buffer, index: tuple[Expr, ...]) -> tuple[Expr, int | None]:
        """The flat offset and its stride along the vector loop (0: the same for every lane),
        worked out once per access (edge tiles repeat the accesses of the full tile)."""
        var = self.vec.var if self.vec is not None else None
        known = frozenset().union(*(free_vars(i) for i in index)) & self.ranges.keys()
        key = (buf.shape, index, var, tuple(sorted((v, self.ranges[v]) for v in known)))
        hit = self._addresses.get(key)
        if hit is None:
            # divisions the loops' ranges decide come out (a reshape's digits, a resize)
            off = simplify_ranged(flat_offset(index, buf.shape), self.ranges)
            hit = self._addresses[key] = (off, linear_coef(off, var) if var is not None else 0)
        return hit

    def lane0(self, off: Expr) -> Expr:
        """`off` at lane 0 of the vector loop (the base of a contiguous access), once each."""
        assert self.vec is not None
        key = (off, self.vec.var)
        base = self._lane0.get(key)
        if base is None:
            base = self._lane0[key] = substitute(off, {self.vec.var: Const(0, DType.I64)})
        return base

    def prefetch(self, s: Prefetch) -> None:
        """prefetcht0 of the element's line: llvm.prefetch(ptr, read, locality 3, data). The
        address may pass the buffer (a prefetch never faults), so the GEP is not inbounds."""
        off = self.scalar(simplify_ranged(flat_offset(s.index, s.buf.shape), self.ranges))
        p = self.b.bitcast(self.b.gep(self.bufs[id(s.buf)], [off]), I8.as_pointer())
        fn = self._intrinsic("llvm.prefetch.p0", ir.VoidType(), [p.type, I32, I32, I32])
        self.b.call(fn, [p, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])

    def ptr(self, buf: Buffer, off: ir.Value) -> ir.Value:
        return self.b.gep(self.bufs[id(buf)], [off], inbounds=True)

    def load(self, e: BufLoad) -> Val:
        buf = e.buf
        mty = llvm_type(buf.dtype, memory=True)
        off, coef = self.address(buf, e.index)
        b = self.b
        align = buf.dtype.itemsize
        if coef == 0:
            o = self.scalar(off)
            if self.guard is not None:  # out of bounds where the guard fails: read element 0
                g = self.guard.v if not self.guard.vec else self.any_lane(self.guard.v)
                o = b.select(g, o, ir.Constant(I64, 0))
            v = b.load(self.ptr(buf, o), align=align)
            return Val(self.from_mem(v, buf.dtype), False)
        assert self.vec is not None
        lanes = self.vec.lanes
        vty = ir.VectorType(mty, lanes)
        # local buffers are allocated for whole vectors: no mask needed, and none wanted (a
        # masked access would keep LLVM from promoting the accumulator to a register)
        mask = self.lane_mask(lanes) if buf.scope != Scope.LOCAL else None
        if coef == 1:
            base = self.scalar(self.lane0(off))
            p = b.bitcast(self.ptr(buf, base), vty.as_pointer())
            v = b.load(p, align=align) if mask is None else self.masked_load(p, vty, mask)
            return Val(self.from_mem(v, buf.dtype), True)
        if coef is not None and 2 <= coef <= 4:
            return Val(self.from_mem(self.strided_load(buf, off, coef, mask), buf.dtype), True)
        runs = self.lane_runs(off) if mask is None else None
        if runs is not None:
            return Val(self.from_mem(self.runs_load(buf, off, *runs, vty), buf.dtype), True)
        ptrs = self.lane_pointers(buf, off, lanes)
        if mask is None:
            mask = vconst(ir.VectorType(I1, lanes), 1)
        v = self.gather(ptrs, vty, mask)
        return Val(self.from_mem(v, buf.dtype), True)

    def lane_runs(self, off: Expr) -> tuple[list[tuple[int, int]], list[int]] | None:
        """Where each lane's offset is lane 0's plus a constant (a nearest upsample's x // 2, a
        depth-to-space shuffle's (x % 2) * plane + x // 2): the runs [lo, hi] those constants
        fall in, and the constants; None otherwise, or when they need more than two runs
        shorter than two vectors."""
        assert self.vec is not None
        var, lanes = self.vec.var, self.vec.lanes
        key = (off, var, lanes, tuple(sorted(self.ranges.items())))
        if key in self._runs:
            return self._runs[key]
        def at(lane: int) -> tuple[frozenset, int]:
            return linear_terms(simplify_ranged(substitute(off, {var: Const(lane, DType.I64)}),
                                                self.ranges))
        base = at(0)
        deltas: list[int] = []
        for ln in range(lanes):
            terms, const = at(ln)
            if terms != base[0]:
                break
            deltas.append(const - base[1])
        out = None
        if len(deltas) == lanes:
            starts = sorted(set(deltas))
            runs = [[starts[0], starts[0]]]
            for d in starts[1:]:
                if d - runs[-1][0] < 2 * lanes:
                    runs[-1][1] = d
                else:
                    runs.append([d, d])
            if len(runs) <= 2:
                out = ([(lo, hi) for lo, hi in runs], deltas)
        self._runs[key] = out
        return out

    def byte_word(self, e: Call) -> Val | None:
        """A 32-bit word per lane put together from bytes of one u8 buffer (the `bitor` of
        u8 loads widened and shifted by 0, 8, 16 and 24: the int8 depthwise template's words
        of four taps), each byte's address lane 0's plus a constant, all within two vectors'
        bytes: the span loaded once or twice (masked to it, so nothing past it is touched) and
        one byte shuffle (vpermb / vpermt2b with AVX-512 VBMI) in place of four gathers. None
        when the expression is anything else."""
        assert self.vec is not None
        terms: list[Expr] = []

        def flat(x: Expr) -> None:
            if isinstance(x, Call) and x.fn == "bitor":
                flat(x.args[0])
                flat(x.args[1])
            else:
                terms.append(x)
        flat(e)
        loads: dict[int, BufLoad] = {}
        for t in terms:
            shift = 0
            if isinstance(t, Call) and t.fn == "shl" and isinstance(t.args[1], Const):
                shift, t = int(t.args[1].value), t.args[0]    # type: ignore[arg-type]
            if not (isinstance(t, Cast) and t.dtype == DType.I32 and isinstance(t.x, BufLoad)
                    and t.x.buf.dtype == DType.U8) or shift % 8 or not 0 <= shift < 32 or \
                    shift // 8 in loads:
                return None
            loads[shift // 8] = t.x
        if e.dtype != DType.I32 or len({id(ld.buf) for ld in loads.values()}) != 1:
            return None
        buf = next(iter(loads.values())).buf
        lanes, var = self.vec.lanes, self.vec.var
        consts: dict[int, list[int]] = {}
        terms0 = None
        for q, ld in loads.items():
            off, _ = self.address(buf, ld.index)
            cs = []
            for ln in range(lanes):
                lt, c = linear_terms(simplify_ranged(
                    substitute(off, {var: Const(ln, DType.I64)}), self.ranges))
                if terms0 is None:
                    terms0, base_off = lt, off
                if lt != terms0:
                    return None
                cs.append(c)
            consts[q] = cs
        nbytes = 4 * lanes
        lo = min(min(cs) for cs in consts.values())
        span = max(max(cs) for cs in consts.values()) - lo + 1
        if span > 2 * nbytes - 1:
            return None
        b = self.b
        vty = ir.VectorType(I8, nbytes)
        q0 = next(iter(consts))
        start = b.add(self.scalar(self.lane0(base_off)), ir.Constant(I64, lo - consts[q0][0]))

        def part(at: int, n: int) -> ir.Value:
            p = b.bitcast(self.ptr(buf, b.add(start, ir.Constant(I64, at))), vty.as_pointer())
            if n >= nbytes:
                return b.load(p, align=1)
            return self.masked_load(p, vty, vconst(ir.VectorType(I1, nbytes),
                                                   [1] * n + [0] * (nbytes - n)), 0)
        v0 = part(0, span)
        v1 = part(nbytes, span - nbytes) if span > nbytes else vconst(vty, 0)
        zero = max(span, nbytes)            # a byte of v1 that is zero
        idx = [consts[q][ln] - lo if q in consts else zero
               for ln in range(lanes) for q in range(4)]
        word = b.shuffle_vector(v0, v1, vconst(ir.VectorType(I32, nbytes), idx))
        return Val(b.bitcast(word, ir.VectorType(I32, lanes)), True)

    def runs_load(self, buf: Buffer, off: Expr, spans: list[tuple[int, int]],
                  deltas: list[int], vty: ir.VectorType) -> ir.Value:
        """Each run of elements loaded as one vector (exactly the elements it spans: each lies
        between two lanes' addresses), then one shuffle puts every lane's element in place."""
        assert self.vec is not None
        lanes = self.vec.lanes
        base = self.scalar(self.lane0(off))
        width = max(hi - lo + 1 for lo, hi in spans)
        b = self.b
        vecs = []
        for lo, hi in spans:
            n = hi - lo + 1
            ty = ir.VectorType(vty.element, n)
            p = b.bitcast(self.ptr(buf, b.add(base, ir.Constant(I64, lo))), ty.as_pointer())
            v = b.load(p, align=buf.dtype.itemsize)
            if n < width:
                v = b.shuffle_vector(v, vconst(ty, ir.Undefined), vconst(
                    ir.VectorType(I32, width), list(range(n)) + [0] * (width - n)))
            vecs.append(v)
        if len(vecs) == 1:
            vecs.append(vconst(vecs[0].type, ir.Undefined))
        idx = []
        for d in deltas:
            k = next(i for i, (lo, hi) in enumerate(spans) if lo <= d <= hi)
            idx.append(k * width + d - spans[k][0])
        return b.shuffle_vector(vecs[0], vecs[1], vconst(ir.VectorType(I32, lanes), idx))

    def strided_load(self, buf: Buffer, off: Expr, stride: int, mask: ir.Value | None
                     ) -> ir.Value:
        """A stride-2..4 access as `stride` masked loads of one vector each and shuffles
        (gathers are slow): only the elements the lanes need are loaded, so nothing past them is
        touched. Each load goes through `opaque`, so it stays an element-masked load."""
        assert self.vec is not None
        b = self.b
        lanes = self.vec.lanes
        mty = llvm_type(buf.dtype, memory=True)
        vty = ir.VectorType(mty, lanes)
        base = self.scalar(self.lane0(off))
        mty1 = ir.VectorType(I1, lanes)
        m = mask if mask is not None else vconst(mty1, 1)
        chunks = []
        for j in range(stride):     # chunk j holds elements j*lanes .. j*lanes + lanes - 1
            # element w is needed iff w % stride == 0 and lane w // stride is on
            idx = [(w // stride) if w % stride == 0 else lanes
                   for w in range(j * lanes, (j + 1) * lanes)]
            cmask = b.shuffle_vector(m, vconst(mty1, 0),
                                     vconst(ir.VectorType(I32, lanes), idx))
            p = b.bitcast(self.ptr(buf, b.add(base, ir.Constant(I64, j * lanes))),
                          vty.as_pointer())
            chunks.append(self.opaque(self.masked_load(p, vty, cmask)))
        while len(chunks) & (len(chunks) - 1):          # pad to a power of two
            chunks.append(vconst(chunks[0].type, ir.Undefined))
        while len(chunks) > 1:      # concatenate pairwise into one wide vector
            n = chunks[0].type.count
            chunks = [b.shuffle_vector(chunks[i], chunks[i + 1], vconst(
                ir.VectorType(I32, 2 * n), list(range(2 * n)))) for i in range(0, len(chunks), 2)]
        return b.shuffle_vector(chunks[0], vconst(chunks[0].type, ir.Undefined),
                                vconst(ir.VectorType(I32, lanes),
                                            [k * stride for k in range(lanes)]))

    def opaque(self, v: ir.Value) -> ir.Value:
        """`v` through an empty inline asm, so LLVM cannot fold the masked load that made it
        into the shuffle that uses it: x86 then loads the whole vector for a permute, and the
        mask no longer keeps it from reading past the buffer (found with MINICC_GUARD=1)."""
        t = v.type
        if isinstance(t.element, ir.IntType) and t.element.width == 1:   # bools: as bytes
            wide = ir.VectorType(ir.IntType(8), t.count)
            return self.b.trunc(self.opaque(self.b.zext(v, wide)), t)
        bits = t.count * (t.element.width if isinstance(t.element, ir.IntType) else
                          {F16: 16, F32: 32, F64: 64}[t.element])
        reg = 512 if "avx512f" in self.features else 256 if "avx" in self.features else 128
        if bits < 128 and t.count > 1:      # narrower than xmm: widen (AVX2 has no register
            n2 = 128 // (bits // t.count)   # class for <8 x i8>; LLVM aborts on "=v")
            wide = self.b.shuffle_vector(v, vconst(t, ir.Undefined), vconst(
                ir.VectorType(I32, n2), list(range(t.count)) + [t.count] * (n2 - t.count)))
            w = self.opaque(wide)
            return self.b.shuffle_vector(w, vconst(w.type, ir.Undefined), vconst(
                ir.VectorType(I32, t.count), list(range(t.count))))
        if bits > reg and t.count > 1:      # wider than a register: each half on its own
            h = t.count // 2
            halves = [self.opaque(self.b.shuffle_vector(v, vconst(t, ir.Undefined),
                                                        vconst(ir.VectorType(I32, h),
                                                                    list(range(k, k + h)))))
                      for k in (0, h)]
            return self.b.shuffle_vector(halves[0], halves[1], vconst(
                ir.VectorType(I32, t.count), list(range(t.count))))
        if not isinstance(t.element, (ir.IntType, ir.FloatType, ir.DoubleType)):
            it = ir.VectorType(ir.IntType(bits // t.count), t.count)   # half: as its bits
            return self.b.bitcast(self.opaque(self.b.bitcast(v, it)), t)
        fn = ir.InlineAsm(ir.FunctionType(t, [t]), "", "=v,0", side_effect=False)
        return self.b.call(fn, [v])

    def lane_mask(self, lanes: int) -> ir.Value | None:
        """Lanes a memory access may touch: inside the vector loop's extent and the guard."""
        m = self.vec.mask if self.vec is not None else None
        if self.guard is not None:
            g = self.broadcast(self.guard, lanes).v
            m = g if m is None else self.b.and_(m, g)
        return m

    def any_lane(self, v: ir.Value) -> ir.Value:
        n = v.type.count
        fn = self._intrinsic(f"llvm.vector.reduce.or.v{n}i1", I1, [v.type])
        return self.b.call(fn, [v])

    def store(self, s: Store) -> None:
        self._store(s)
        self._drop_cse(loads=True)    # a later load of what was stored must not reuse one before

    def _store(self, s: Store) -> None:
        buf = s.buf
        mty = llvm_type(buf.dtype, memory=True)
        off, coef = self.address(buf, s.index)
        val = self.emit(s.value)
        b = self.b
        if coef == 0:
            if val.vec:
                raise CodegenError(f"store of a vector into scalar location {buf.name}")
            b.store(self.to_mem(val.v, buf.dtype), self.ptr(buf, self.scalar(off)))
            return
        assert self.vec is not None
        lanes = self.vec.lanes
        vty = ir.VectorType(mty, lanes)
        v = self.to_mem(self.broadcast(val, lanes).v, buf.dtype)
        if coef == 1:
            base = self.scalar(self.lane0(off))
            p = b.bitcast(self.ptr(buf, base), vty.as_pointer())
            if self.vec.mask is None or buf.scope == Scope.LOCAL:
                b.store(v, p, align=buf.dtype.itemsize)
            else:
                self.masked_store(v, p, self.vec.mask)
            return
        ptrs = self.lane_pointers(buf, off, lanes)
        mask = self.vec.mask or vconst(ir.VectorType(I1, lanes), 1)
        self.scatter(v, ptrs, mask)

    def lane_pointers(self, buf: Buffer, off: Expr, lanes: int) -> ir.Value:
        """A vector of element pointers: one GEP with a vector of offsets, 32-bit where the
        buffer is small enough (x86 gathers then take 16 lanes of 32-bit indices at once).
        llvmlite's builder takes no vector index, so the GEP is built by hand."""
        b = self.b
        offs = self.vector(off, lanes).v
        if buf.numel < (1 << 31):
            offs = b.trunc(offs, ir.VectorType(I32, lanes))
        mty = llvm_type(buf.dtype, memory=True)
        ptr = self.bufs[id(buf)]
        gep = GEPInstr(b.block, ptr, [offs], inbounds=True, name="",
                       source_etype=mty)
        gep.type = ir.VectorType(ptr.type, lanes)
        b._insert(gep)
        return gep

    def _intrinsic(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self.m.globals.get(name)
        if fn is None:
            fn = ir.Function(self.m, ir.FunctionType(ret, args), name)
        return fn

    @staticmethod
    def _vname(vty: ir.VectorType) -> str:
        e = vty.element
        if isinstance(e, ir.IntType):
            return f"v{vty.count}i{e.width}"
        return f"v{vty.count}" + {F16: "f16", F32: "f32", F64: "f64"}[e]

    def masked_load(self, p: ir.Value, vty: ir.VectorType, mask: ir.Value,
                    passthru: object = ir.Undefined) -> ir.Value:
        """The lanes `mask` has, the others `passthru` (undefined unless given)."""
        fn = self._intrinsic(f"llvm.masked.load.{self._vname(vty)}.p0", vty,
                             [vty.as_pointer(), I32, mask.type, vty])
        return self.b.call(fn, [p, ir.Constant(I32, 1), mask, vconst(vty, passthru)])

    def masked_store(self, v: ir.Value, p: ir.Value, mask: ir.Value) -> None:
        fn = self._intrinsic(f"llvm.masked.store.{self._vname(v.type)}.p0", ir.VoidType(),
                             [v.type, v.type.as_pointer(), I32, mask.type])
        self.b.call(fn, [v, p, ir.Constant(I32, 1), mask])

    def gather(self, ptrs: ir.Value, vty: ir.VectorType, mask: ir.Value) -> ir.Value:
        fn = self._intrinsic(f"llvm.masked.gather.{self._vname(vty)}.v{vty.count}p0", vty,
                             [ptrs.type, I32, mask.type, vty])
        return self.b.call(fn, [ptrs, ir.Constant(I32, 1), mask, vconst(vty, ir.Undefined)])

    def scatter(self, v: ir.Value, ptrs: ir.Value, mask: ir.Value) -> None:
        fn = self._intrinsic(f"llvm.masked.scatter.{self._vname(v.type)}.v{v.type.count}p0",
                             ir.VoidType(), [v.type, ptrs.type, I32, mask.type])
        self.b.call(fn, [v, ptrs, ir.Constant(I32, 1), mask])

    def from_mem(self, v: ir.Value, dt: DType) -> ir.Value:
        if dt == DType.BOOL:
            zero = ir.Constant(v.type, None)
            return self.b.icmp_unsigned("!=", v, zero)
        return v

    def to_mem(self, v: ir.Value, dt: DType) -> ir.Value:
        if dt == DType.BOOL:
            ty = ir.VectorType(I8, v.type.count) if isinstance(v.type, ir.VectorType) else I8
            return self.b.zext(v, ty)
        return v

    # -- expressions --
    def scalar(self, e: Expr) -> ir.Value:
        v = self.emit(e)
        if v.vec:
            raise CodegenError(f"expected a scalar, got a vector for {e!r}")
        return v.v

    def vector(self, e: Expr, lanes: int) -> Val:
        return self.broadcast(self.emit(e), lanes)

    def splat(self, v: ir.Value, lanes: int) -> ir.Value:
        vty = ir.VectorType(v.type, lanes)
        if type(v) is ir.Constant and isinstance(v.constant, (int, float)) and \
                not isinstance(v.constant, bool):
            # a constant vector, not an insert and a shuffle for LLVM to fold (Winograd's
            # transform coefficients: a fifth of its kernels' IR)
            return vconst(vty, v.constant)
        x = self.b.insert_element(vconst(vty, ir.Undefined), v, ir.Constant(I32, 0))
        return self.b.shuffle_vector(x, vconst(vty, ir.Undefined),
                                     vconst(ir.VectorType(I32, lanes), 0))

    def broadcast(self, v: Val, lanes: int) -> Val:
        return v if v.vec else Val(self.splat(v.v, lanes), True)

    def emit(self, e: Expr) -> Val:
        if isinstance(e, Var):
            if self.vec is not None and e.name == self.vec.var:
                lanes = self.vec.lanes
                return Val(vconst(ir.VectorType(I64, lanes), list(range(lanes))), True)
            try:
                return Val(self.vars[e.name], False)
            except KeyError:
                raise CodegenError(f"llvm: unbound loop variable {e.name} in kernel "
                                   f"{self.k.name}") from None
        if isinstance(e, Const):
            return Val(self.const(e), False)
        if isinstance(e, BufLoad):
            return self.load(e)
        if isinstance(e, Call):
            if e.dtype == DType.I64 and e.fn in _PURE_INDEX:
                return self._emit_index(e)
            if e.fn == "bitor" and self.vec is not None and self.vec.mask is None and \
                    self.guard is None:
                word = self.byte_word(e)
                if word is not None:
                    return word
            args = [self.emit(a) for a in e.args]
            if any(a.vec for a in args):
                lanes = self.vec.lanes  # type: ignore[union-attr]
                args = [self.broadcast(a, lanes) for a in args]
            emitter = EMITTERS.get(e.fn)
            if emitter is None:
                raise CodegenError(f"llvm: no emitter for '{e.fn}'")
            out = emitter(self, [a.v for a in args], [a.dtype for a in e.args], e.dtype)
            return Val(out, any(a.vec for a in args))
        if isinstance(e, Select):
            c = self.emit(e.cond)
            if not c.vec and self.vec is not None and (expr_loads(e.a) or expr_loads(e.b)) \
                    and self.vec.var in free_vars(e.a) | free_vars(e.b):
                return self._branch_select(c, e)
            saved = self.guard
            self.guard = c if saved is None else self.both(saved, c)
            a = self.emit(e.a)
            notc = Val(self.b.xor(c.v, self._ones(c.v.type)), c.vec)
            self.guard = notc if saved is None else self.both(saved, notc)
            bb = self.emit(e.b)
            self.guard = saved
            if c.vec or a.vec or bb.vec:
                lanes = self.vec.lanes  # type: ignore[union-attr]
                c, a, bb = (self.broadcast(x, lanes) for x in (c, a, bb))
                return Val(self.b.select(c.v, a.v, bb.v), True)
            return Val(self.b.select(c.v, a.v, bb.v), False)
        if isinstance(e, Cast):
            if e.dtype in (DType.U8, DType.I8) and self.vec is not None and \
                    self.vec.mask is None:
                q = self.requantized(e)
                if q is not None:
                    return q
            x = self.emit(e.x)
            return Val(self.convert(x.v, e.x.dtype, e.dtype), x.vec)
        raise CodegenError(f"llvm: cannot emit expression {type(e).__name__}")

    def requantized(self, e: Cast) -> Val | None:
        """u8/s8(min(max(round(x), lo), hi)) with integer bounds in the type's range, an int8
        epilogue's requantization: x clamped above in f32, converted rounding to nearest even
        (cvtps2dq, which gives INT_MIN below the int32 range), clamped below as an int32 and
        truncated: four instructions for the seven of the generic path (round, compare and
        zero, min, truncating convert, truncate), and the same result for every x but NaN
        (whose cast the generic path leaves undefined). Whole vectors only: LLVM 22 stores a
        masked vector of one lane of this truncate as four bytes (vmovd), past the lane."""
        m = e.x
        if not (isinstance(m, Call) and m.fn == "min" and isinstance(m.args[1], Const)):
            return None
        mx = m.args[0]
        if not (isinstance(mx, Call) and mx.fn == "max" and isinstance(mx.args[1], Const)):
            return None
        rd = mx.args[0]
        if not (isinstance(rd, Call) and rd.fn == "round" and rd.dtype == DType.F32):
            return None
        lo, hi = float(mx.args[1].value), float(m.args[1].value)   # type: ignore[arg-type]
        tmin, tmax = (0, 255) if e.dtype == DType.U8 else (-128, 127)
        if not (lo.is_integer() and hi.is_integer() and tmin <= lo <= hi <= tmax):
            return None
        lanes = self.vec.lanes      # type: ignore[union-attr]
        if lanes == 16 and "avx512f" in self.features:
            name, extra = "llvm.x86.avx512.mask.cvtps2dq.512", True
        elif lanes == 8 and "avx" in self.features:
            name, extra = "llvm.x86.avx.cvt.ps2dq.256", False
        else:
            return None
        x = self.vector(rd.args[0], lanes).v
        b = self.b
        fty, ity = ir.VectorType(F32, lanes), ir.VectorType(I32, lanes)
        top = vconst(fty, hi)
        x = b.select(b.fcmp_ordered("<", top, x), top, x)
        if extra:       # (x, passthru, mask, rounding: 4 = the current mode, to nearest even)
            fn = self._intrinsic(name, ity, [fty, ity, ir.IntType(16), I32])
            i = b.call(fn, [x, vconst(ity, 0), ir.Constant(ir.IntType(16), -1),
                            ir.Constant(I32, 4)])
        else:
            i = b.call(self._intrinsic(name, ity, [fty]), [x])
        bottom = vconst(ity, int(lo))
        i = b.select(b.icmp_signed(">", i, bottom), i, bottom)
        return Val(b.trunc(i, ir.VectorType(I8, lanes)), True)

    def _branch_select(self, c: Val, e: Select) -> Val:
        """A select of vectors on a condition that is the same for every lane, as a branch:
        only the side taken loads. A concat's inputs are a chain of such selects on the
        concatenated axis; evaluated on both sides, each vector of dbnet_like's FPN concat of
        four resized maps loaded all four."""
        lanes = self.vec.lanes  # type: ignore[union-attr]
        out = []
        with self.b.if_else(c.v) as (then, other):
            for side, x in ((then, e.a), (other, e.b)):
                with side:
                    v = self.broadcast(self.emit(x), lanes)
                    out.append((v.v, self.b.block))
        phi = self.b.phi(out[0][0].type)
        for v, bb in out:
            phi.add_incoming(v, bb)
        return Val(phi, True)

    def _emit_index(self, e: Call) -> Val:
        """Index arithmetic (i64), folded where its operands are constants (unrolled loops bind
        their variable to one) and emitted once per block: a value computed earlier in the
        current block dominates every later use in it. An entry goes when the block changes,
        when a loop variable it reads is rebound (unrolled loops stay in one block), and, if it
        loads, at the next store; the key holds the vector context and the guard."""
        if self.b.block is not self._cse_block:
            self._drop_cse()
            self._cse_block = self.b.block
        gv = self.guard.v if self.guard is not None else None
        fv, loads = free_vars(e), _loads(e)
        # a scalar that loads nothing is the same in every vector loop and under every guard:
        # Winograd's transform has 36 one-statement vector loops reading one tile's row
        key = (e, id(self.vec), id(gv)) if loads or (self.vec is not None and
                                                    self.vec.var in fv) else (e, None, None)
        got = self._cse.get(key)
        if got is not None:
            return got[0]
        args = [self.emit(a) for a in e.args]
        folded = _fold_index(e.fn, [a.v for a in args]) if not any(a.vec for a in args) \
            else None
        if folded is not None:
            hit = Val(folded, False)
        else:
            if any(a.vec for a in args):
                lanes = self.vec.lanes  # type: ignore[union-attr]
                args = [self.broadcast(a, lanes) for a in args]
            vals = [a.v for a in args]
            if e.fn in ("floordiv", "mod") and self._natural_division(e):
                # of a dividend that cannot be negative by a positive constant: C's division
                # is the floor, and its remainder the modulo (no sign fix-up to emit)
                out = self.b.sdiv(*vals) if e.fn == "floordiv" else self.b.srem(*vals)
            else:
                out = EMITTERS[e.fn](self, vals, [a.dtype for a in e.args], e.dtype)
            hit = Val(out, any(a.vec for a in args))
        if self.b.block is self._cse_block:     # (an emitter may open blocks)
            self._cse[key] = (hit, self.vec, gv)   # (they keep the ids in the key alive)
            for v in fv:
                self._cse_uses.setdefault(v, []).append(key)
            if loads:
                self._cse_loads.append(key)
        return hit

    def _natural_division(self, e: Call) -> bool:
        d = e.args[1]
        if not (isinstance(d, Const) and isinstance(d.value, int) and d.value > 0):
            return False
        ranges = self.ranges
        if self.vec is not None:          # the vector loop's lanes: 0 .. lanes - 1 at least
            ranges = {**ranges, self.vec.var: ranges.get(self.vec.var, (0, self.vec.lanes - 1))}
        known = interval(e.args[0], ranges)
        return known is not None and known[0] >= 0

    def _drop_cse(self, var: str | None = None, loads: bool = False) -> None:
        """Forget cached index values: all of them, those reading `var`, or those that load."""
        if var is None and not loads:
            self._cse.clear()
            self._cse_uses.clear()
            self._cse_loads.clear()
            return
        keys = self._cse_uses.pop(var, []) if var is not None else self._cse_loads
        for k in keys:
            self._cse.pop(k, None)
        if loads:
            self._cse_loads = []

    def both(self, a: Val, b: Val) -> Val:
        if a.vec or b.vec:
            lanes = self.vec.lanes  # type: ignore[union-attr]
            return Val(self.b.and_(self.broadcast(a, lanes).v, self.broadcast(b, lanes).v), True)
        return Val(self.b.and_(a.v, b.v), False)

    @staticmethod
    def _ones(ty: ir.Type) -> ir.Constant:
        if isinstance(ty, ir.VectorType):
            return vconst(ty, 1)
        return ir.Constant(ty, 1)

    def const(self, e: Const) -> ir.Value:
        ty = llvm_type(e.dtype)
        if e.dtype == DType.BOOL:
            return ir.Constant(I1, int(bool(e.value)))
        if e.dtype.is_float:
            return ir.Constant(ty, float(e.value))
        return ir.Constant(ty, int(e.value))

    def convert(self, v: ir.Value, src: DType, dst: DType) -> ir.Value:
        if src == dst:
            return v
        if DType.F16 in (src, dst) and DType.F32 not in (src, dst):
            # only f16 <-> f32 has an instruction (F16C); anything else would be a libgcc call
            # MCJIT cannot resolve: go through f32
            return self.convert(self.convert(v, src, DType.F32), DType.F32, dst)
        b = self.b
        vec = isinstance(v.type, ir.VectorType)
        tty = llvm_type(dst)
        if vec:
            tty = ir.VectorType(tty, v.type.count)
        if src == DType.BOOL:
            if dst.is_float:
                return b.uitofp(v, tty)
            return b.zext(v, tty)
        if dst == DType.BOOL:
            zero = ir.Constant(v.type, None)
            return b.fcmp_unordered("!=", v, zero) if src.is_float else b.icmp_unsigned(
                "!=", v, zero)
        if src.is_float and dst.is_float:
            return b.fpext(v, tty) if dst.itemsize > src.itemsize else b.fptrunc(v, tty)
        if src.is_float:
            return b.fptoui(v, tty) if _unsigned(dst) else b.fptosi(v, tty)
        if dst.is_float:
            return b.uitofp(v, tty) if _unsigned(src) else b.sitofp(v, tty)
        if dst.itemsize > src.itemsize:
            return b.zext(v, tty) if _unsigned(src) else b.sext(v, tty)
        if dst.itemsize < src.itemsize:
            return b.trunc(v, tty)
        return v

    def libm(self, name: str, args: list[ir.Value], dt: DType) -> ir.Value:
        """Call a libm function per lane (vectors are scalarized)."""
        if name not in LIBM:
            raise CodegenError(f"llvm: no {dt.value} implementation of '{name}'")
        fname = LIBM[name][0 if dt == DType.F32 else 1]
        sty = llvm_type(dt)
        fn = self._intrinsic(fname, sty, [sty] * len(args))
        if not isinstance(args[0].type, ir.VectorType):
            return self.b.call(fn, args)
        n = args[0].type.count
        out: ir.Value = vconst(args[0].type, ir.Undefined)
        for i in range(n):
            idx = ir.Constant(I32, i)
            r = self.b.call(fn, [self.b.extract_element(a, idx) for a in args])
            out = self.b.insert_element(out, r, idx)
        return out


# ---- emitter tables (one entry per ir.scalar primitive) ---------------------------------------

Emitter = Callable[[KernelRenderer, list[ir.Value], list[DType], DType], ir.Value]


def _arith(fop: str, iop: str, uop: str | None = None) -> Emitter:
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        dt = ts[0]
        if dt.is_float:
            # f16 rounds after every op, as numpy does: no contraction into FMAs there
            return getattr(r.b, fop)(a[0], a[1], flags=r.flags if dt != DType.F16 else ())
        op = uop if (uop and _unsigned(dt)) else iop
        return getattr(r.b, op)(a[0], a[1])
    return emit


def _cmp(pred: str) -> Emitter:
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        dt = ts[0]
        if dt.is_float:
            return r.b.fcmp_ordered(pred, a[0], a[1]) if pred != "!=" else r.b.fcmp_unordered(
                pred, a[0], a[1])
        if _unsigned(dt) or dt == DType.BOOL:
            return r.b.icmp_unsigned(pred, a[0], a[1])
        return r.b.icmp_signed(pred, a[0], a[1])
    return emit


def _minmax(kind: str) -> Emitter:
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        dt = ts[0]
        if dt.is_float:
            c = r.b.fcmp_unordered("<" if kind == "min" else ">", a[0], a[1])
            return r.b.select(c, a[0], a[1])  # NaN in the first operand propagates
        pred = "<" if kind == "min" else ">"
        c = r.b.icmp_unsigned(pred, a[0], a[1]) if _unsigned(dt) else r.b.icmp_signed(
            pred, a[0], a[1])
        return r.b.select(c, a[0], a[1])
    return emit


def _intr(name: str) -> Emitter:
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        ty = a[0].type
        vec = isinstance(ty, ir.VectorType)
        el = ty.element if vec else ty
        suffix = {F16: "f16", F32: "f32", F64: "f64"}[el]
        full = f"llvm.{name}.{'v%d' % ty.count if vec else ''}{suffix}"
        fn = r._intrinsic(full, ty, [ty] * len(a))
        return r.b.call(fn, a)
    return emit


def _math(name: str) -> Emitter:
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        if ts[0] == DType.F32 and name in F32_MATH:
            return F32_MATH[name](r.b, a[0])
        if ts[0] == DType.F16:  # libm's f32 function, rounded to f16 (bit-exact with numpy)
            wide = [r.convert(x, DType.F16, DType.F32) for x in a]
            y = r.libm(name, wide, DType.F32) if name in LIBM else F32_MATH[name](r.b, wide[0])
            return r.convert(y, DType.F32, DType.F16)
        if name == "sigmoid":   # f64: 1 / (1 + exp(-x)) with libm's exp
            one = _splat_like(r, a[0], 1.0)
            return r.b.fdiv(one, r.b.fadd(one, r.libm("exp", [r.b.fneg(a[0])], ts[0])))
        if name == "softplus":  # f64: log1p(exp(-|x|)) + max(x, 0)
            ax = _intr("fabs")(r, a, ts, out)
            l1p = r.libm("log1p", [r.libm("exp", [r.b.fneg(ax)], ts[0])], ts[0])
            return r.b.fadd(l1p, _relu(r, a, ts, out))
        return r.libm(name, a, ts[0])
    return emit


def _splat_like(r: KernelRenderer, v: ir.Value, c: float | int) -> ir.Value:
    ty = v.type
    if isinstance(ty, ir.VectorType):
        return vconst(ty, c)
    return ir.Constant(ty, c)


def _safe_divisor(r: KernelRenderer, d: ir.Value, signed: bool) -> ir.Value:
    """x86 traps on integer division by 0 (and INT_MIN / -1): divide by 1 there instead; the
    callers fix up the -1 case, and a zero divisor gives an unspecified (but no) result."""
    b = r.b
    bad = b.icmp_signed("==", d, _splat_like(r, d, 0))
    if signed:
        bad = b.or_(bad, b.icmp_signed("==", d, _splat_like(r, d, -1)))
    return b.select(bad, _splat_like(r, d, 1), d)


def _div(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    dt = ts[0]
    if dt.is_float:
        return r.b.fdiv(a[0], a[1], flags=r.flags)
    if _unsigned(dt):
        return r.b.udiv(a[0], _safe_divisor(r, a[1], False))
    q = r.b.sdiv(a[0], _safe_divisor(r, a[1], True))
    return r.b.select(r.b.icmp_signed("==", a[1], _splat_like(r, a[1], -1)), r.b.neg(a[0]), q)


def _srem(r: KernelRenderer, x: ir.Value, d: ir.Value) -> ir.Value:
    rem = r.b.srem(x, _safe_divisor(r, d, True))
    return r.b.select(r.b.icmp_signed("==", d, _splat_like(r, d, -1)), _splat_like(r, d, 0), rem)


def _floordiv(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    b = r.b
    q = b.sdiv(a[0], a[1])
    rem = b.srem(a[0], a[1])
    zero = _splat_like(r, rem, 0)
    fix = b.and_(b.icmp_signed("!=", rem, zero),
                 b.xor(b.icmp_signed("<", rem, zero), b.icmp_signed("<", a[1], zero)))
    return b.sub(q, b.zext(fix, q.type))


def _mod(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    b = r.b
    dt = ts[0]
    if dt.is_float:
        rem = b.frem(a[0], a[1])
        zero = _splat_like(r, rem, 0.0)
        fix = b.and_(b.fcmp_ordered("!=", rem, zero),
                     b.xor(b.fcmp_ordered("<", rem, zero), b.fcmp_ordered("<", a[1], zero)))
        return b.select(fix, b.fadd(rem, a[1]), rem)
    if _unsigned(dt):
        return b.urem(a[0], _safe_divisor(r, a[1], False))
    rem = _srem(r, a[0], a[1])
    zero = _splat_like(r, rem, 0)
    fix = b.and_(b.icmp_signed("!=", rem, zero),
                 b.xor(b.icmp_signed("<", rem, zero), b.icmp_signed("<", a[1], zero)))
    return b.select(fix, b.add(rem, a[1]), rem)


def _fmod(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    if ts[0].is_float:
        return r.b.frem(a[0], a[1])
    if _unsigned(ts[0]):
        return r.b.urem(a[0], _safe_divisor(r, a[1], False))
    return _srem(r, a[0], a[1])


def _pow(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    dt = ts[0]
    if dt == DType.F32:
        return r.libm("pow", a, dt)
    if dt.is_float:
        return r.libm("pow", a, DType.F64 if dt == DType.F64 else DType.F32)
    # integer pow through f64
    f = [r.convert(x, dt, DType.F64) for x in a]
    return r.convert(r.libm("pow", f, DType.F64), DType.F64, dt)


def _neg(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    return r.b.fneg(a[0]) if ts[0].is_float else r.b.neg(a[0])


def _abs(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    if ts[0].is_float:
        return _intr("fabs")(r, a, ts, out)
    if _unsigned(ts[0]):
        return a[0]
    zero = _splat_like(r, a[0], 0)
    return r.b.select(r.b.icmp_signed("<", a[0], zero), r.b.neg(a[0]), a[0])


def _relu(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    zero = _splat_like(r, a[0], 0.0 if ts[0].is_float else 0)
    return _minmax("max")(r, [a[0], zero], ts, out)


def _sign(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    b = r.b
    x = a[0]
    dt = ts[0]
    zero, one, mone = (_splat_like(r, x, v if not dt.is_float else float(v)) for v in (0, 1, -1))
    if dt.is_float:
        pos, neg = b.fcmp_ordered(">", x, zero), b.fcmp_ordered("<", x, zero)
    elif _unsigned(dt):
        return b.select(b.icmp_unsigned("!=", x, zero), one, zero)
    else:
        pos, neg = b.icmp_signed(">", x, zero), b.icmp_signed("<", x, zero)
    return b.select(pos, one, b.select(neg, mone, x if dt.is_float else zero))


def _reciprocal(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    return r.b.fdiv(_splat_like(r, a[0], 1.0), a[0], flags=r.flags)


def _logic(op: str) -> Emitter:
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        return getattr(r.b, op)(a[0], a[1])
    return emit


def _not(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    return r.b.xor(a[0], _splat_like(r, a[0], 1))


def _bitnot(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    return r.b.not_(a[0])


def _isnan(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    return r.b.fcmp_unordered("uno", a[0], a[0])


def _isinf(sign: int) -> Emitter:
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        inf = _splat_like(r, a[0], float("inf"))
        if sign > 0:
            return r.b.fcmp_ordered("==", a[0], inf)
        if sign < 0:
            return r.b.fcmp_ordered("==", a[0], r.b.fneg(inf))
        ab = _intr("fabs")(r, a, ts, out)
        return r.b.fcmp_ordered("==", ab, inf)
    return emit


def _shift(left: bool) -> Emitter:
    """numpy semantics: signed right shifts are arithmetic; a count that is negative or not
    below the bit width gives 0 (or -1 for a negative value shifted right)."""
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        b = r.b
        x, n = a
        bits = ts[0].itemsize * 8
        out_of_range = b.icmp_unsigned(">=", n, _splat_like(r, n, bits))
        safe = b.select(out_of_range, _splat_like(r, n, 0), n)
        zero = _splat_like(r, x, 0)
        if left:
            return b.select(out_of_range, zero, b.shl(x, safe))
        if _unsigned(ts[0]):
            return b.select(out_of_range, zero, b.lshr(x, safe))
        fill = b.select(b.icmp_signed("<", x, zero), _splat_like(r, x, -1), zero)
        return b.select(out_of_range, fill, b.ashr(x, safe))
    return emit


def _rounding(name: str) -> Emitter:
    def emit(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
        if not ts[0].is_float:
            return a[0]
        return _intr(name)(r, a, ts, out)
    return emit


def _tf32(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    """f32 rounded to TF32 (10 mantissa bits, ties away from zero; inf and NaN kept): the
    GPU's tensor-core operand, here for the interpreter's sake of one table of primitives."""
    b, x = r.b, a[0]
    vec = isinstance(x.type, ir.VectorType)
    ity = ir.VectorType(I32, x.type.count) if vec else I32
    bits = b.bitcast(x, ity)
    exp = b.and_(bits, _splat_like(r, bits, 0x7F800000))
    finite = b.icmp_unsigned("!=", exp, _splat_like(r, bits, 0x7F800000))
    rounded = b.and_(b.add(bits, _splat_like(r, bits, 0x1000)),
                     _splat_like(r, bits, -0x2000))
    return b.bitcast(b.select(finite, rounded, bits), x.type)


def _dpbusd(r: KernelRenderer, a: list[ir.Value], ts: list[DType], out: DType) -> ir.Value:
    """acc + four u8 x s8 byte products per lane: `vpdpbusd` where the target has AVX-512 VNNI
    (16 lanes, or 8 with AVX512VL), else the same sum from shifts, masks and multiplies."""
    acc, x, y = a
    ty = acc.type
    vec = isinstance(ty, ir.VectorType)
    el = ty.element if vec else ty
    if vec and el == I32 and "avx512vnni" in r.features and (
            ty.count == 16 or (ty.count == 8 and "avx512vl" in r.features)):
        bits = 32 * ty.count
        fn = r._intrinsic(f"llvm.x86.avx512.vpdpbusd.{bits}", ty, [ty, ty, ty])
        return r.b.call(fn, [acc, x, y])
    b = r.b
    width = el.width
    total = acc
    for j in range(4):
        ua = b.and_(b.lshr(x, _splat_like(r, x, 8 * j)), _splat_like(r, x, 0xFF))
        sb = b.ashr(b.shl(y, _splat_like(r, y, width - 8 - 8 * j)), _splat_like(r, y, width - 8))
        total = b.add(total, b.mul(ua, sb))
    return total


# integer primitives without side effects, emitted once per block (KernelRenderer._emit_index)
_PURE_INDEX = frozenset({"add", "sub", "mul", "floordiv", "mod", "min", "max", "neg"})


def _wrap64(v: int) -> int:
    return (v + (1 << 63)) % (1 << 64) - (1 << 63)


def _fold_index(fn: str, args: list[ir.Value]) -> ir.Value | None:
    """An i64 primitive on constants as a constant (floor division and modulo as the emitters
    compute them), x + 0, x - 0 and x * 1 as x, x * 0 as 0; else None."""
    cs = [a.constant if isinstance(a, ir.Constant) and isinstance(a.constant, int) else None
          for a in args]
    if all(c is not None for c in cs):
        x = cs[0]
        y = cs[1] if len(cs) > 1 else 0
        if fn in ("floordiv", "mod") and y == 0:
            return None
        v = {"add": lambda: x + y, "sub": lambda: x - y, "mul": lambda: x * y,
             "floordiv": lambda: x // y, "mod": lambda: x % y, "min": lambda: min(x, y),
             "max": lambda: max(x, y), "neg": lambda: -x}[fn]()
        return ir.Constant(I64, _wrap64(v))
    if len(args) == 2:
        if fn in ("add", "sub") and cs[1] == 0 or fn == "mul" and cs[1] == 1:
            return args[0]
        if fn == "add" and cs[0] == 0 or fn == "mul" and cs[0] == 1:
            return args[1]
        if fn == "mul" and 0 in cs:
            return ir.Constant(I64, 0)
    return None


@functools.lru_cache(maxsize=1 << 16)
def _loads(e: Expr) -> bool:
    if isinstance(e, BufLoad):
        return True
    if isinstance(e, Call):
        return any(_loads(a) for a in e.args)
    if isinstance(e, Select):
        return _loads(e.cond) or _loads(e.a) or _loads(e.b)
    if isinstance(e, Cast):
        return _loads(e.x)
    return False

EMITTERS: dict[str, Emitter] = {
    "dpbusd": _dpbusd, "tf32": _tf32,
    "add": _arith("fadd", "add"), "sub": _arith("fsub", "sub"), "mul": _arith("fmul", "mul"),
    "div": _div, "floordiv": _floordiv, "mod": _mod, "fmod": _fmod, "pow": _pow,
    "min": _minmax("min"), "max": _minmax("max"),
    "lt": _cmp("<"), "le": _cmp("<="), "gt": _cmp(">"), "ge": _cmp(">="), "eq": _cmp("=="),
    "ne": _cmp("!="),
    "and": _logic("and_"), "or": _logic("or_"), "xor": _logic("xor"), "not": _not,
    "bitand": _logic("and_"), "bitor": _logic("or_"), "bitxor": _logic("xor"),
    "bitnot": _bitnot, "shl": _shift(True), "shr": _shift(False),
    "neg": _neg, "abs": _abs, "relu": _relu, "sign": _sign, "reciprocal": _reciprocal,
    "sqrt": _intr("sqrt"), "floor": _rounding("floor"), "ceil": _rounding("ceil"),
    "round": _rounding("roundeven"),
    "isnan": _isnan, "isinf": _isinf(0), "isposinf": _isinf(1), "isneginf": _isinf(-1),
    **{n: _math(n) for n in ("exp", "log", "tanh", "sigmoid", "erf", "softplus", "sin", "cos",
                             "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh",
                             "atanh")},
}
