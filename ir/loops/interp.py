"""A Loop IR interpreter for tests: runs a Kernel on numpy arrays, one scalar at a time.
Unscheduled nests run too (their Reduce expressions are evaluated in place).

Slow by design and simple to trust: vector loops run lane by lane, parallel loops run every
thread's chunk in turn, a Select evaluates only the branch it takes (so guarded out-of-bounds
loads never happen, as in generated code).

GPU kernels run too: block loops iterate; the threads of a block whose code has barriers run
as coroutines, phase by phase — every thread runs up to the next barrier (or block all-reduce)
before any goes on, exactly the guarantee __syncthreads gives, so a missing barrier shows up as
a wrong result here. Shared buffers exist once per block, local ones once per thread.
"""

from __future__ import annotations

import operator
from typing import Any, Iterator, Mapping

import numpy as np

from minicc.errors import InterpreterError
from minicc.ir.compute import Call, Cast, Const, Expr, Reduce, Select, Var
from minicc.ir.loops.wide import wide_access
from minicc.ir.loops.nodes import (MMA_SHAPES, Allocate, AsyncCommit, AsyncCopy, AsyncWait,
                                   Barrier, BlockAllReduce, BufLoad, For, IfThen, Kernel,
                                   LoopKind, Prefetch, Scope, Seq, Stmt, Store, WarpLdmatrix,
                                   WarpMma, walk)
from minicc.ir.scalar import apply_scalar
from minicc.ir.types import DType


class _Run:
    def __init__(self, arrays: dict[int, np.ndarray], threads: int,
                 unwritten: dict[int, np.ndarray] | None = None):
        self.mem = arrays                       # global and shared buffers
        # scratch elements no store has written yet (reading one is an error: in native code
        # it reads whatever an earlier kernel left there)
        self.unwritten = unwritten if unwritten is not None else {}
        self.local: dict[int, np.ndarray] = {}  # this thread's local buffers
        self.env: dict[str, Any] = {}
        self.threads = threads
        self.tid = 0
        self.copying: list[tuple[np.ndarray, tuple[int, ...], Any]] = []   # async, uncommitted
        self.in_flight: list[list[tuple[np.ndarray, tuple[int, ...], Any]]] = []   # groups
        self.gpu = False                        # a GPU kernel's (vector loops: wide accesses)

    def array(self, buf_id: int) -> np.ndarray:
        a = self.local.get(buf_id)
        return a if a is not None else self.mem[buf_id]

    def expr(self, e: Expr) -> Any:
        if isinstance(e, Var):
            try:
                return self.env[e.name]
            except KeyError:
                raise InterpreterError(f"loop interpreter: unbound variable {e.name}") from None
        if isinstance(e, Const):
            return e.value if e.dtype == DType.I64 else e.dtype.np.type(e.value)
        if isinstance(e, BufLoad):
            arr = self.array(id(e.buf))
            idx = tuple(int(self.expr(i)) for i in e.index)
            if any(i < 0 for i in idx):
                raise InterpreterError(f"loop interpreter: {e.buf.name}{list(idx)} is out of "
                                       f"bounds {list(arr.shape)}")
            try:
                if id(e.buf) in self.unwritten and self.unwritten[id(e.buf)][idx]:
                    raise InterpreterError(
                        f"loop interpreter: {e.buf.name}{list(idx)} is read before any store "
                        "wrote it (scratch holds what an earlier kernel left there)")
                return arr[idx]
            except IndexError:
                raise InterpreterError(f"loop interpreter: {e.buf.name}{list(idx)} is out of "
                                       f"bounds {list(arr.shape)}") from None
        if isinstance(e, Call):
            fast = _INDEX_OPS.get(e.fn)
            if fast is not None and all(a.dtype == DType.I64 for a in e.args):
                xs = [int(self.expr(a)) for a in e.args]
                if not (e.fn in ("floordiv", "mod") and xs[1] == 0):
                    return fast(*xs)      # index arithmetic: Python ints, as numpy computes
            args = [np.asarray(self.expr(a), dtype=a.dtype.np) for a in e.args]
            return apply_scalar(e.fn, *args)[()]
        if isinstance(e, Select):
            return self.expr(e.a) if bool(self.expr(e.cond)) else self.expr(e.b)
        if isinstance(e, Cast):
            with np.errstate(all="ignore"):
                return np.asarray(self.expr(e.x)).astype(e.dtype.np)[()]
        if isinstance(e, Reduce):
            return self.reduce(e)
        raise InterpreterError(f"loop interpreter: cannot evaluate {type(e).__name__}")

    def reduce(self, e: Reduce) -> Any:
        """A reduction not yet scheduled into loops (an unscheduled nest): as compute_at's
        accumulators would compute it (f16 sums in f32; argmax/argmin: the first extreme)."""
        acc_dt = np.dtype(np.float32 if e.dtype == DType.F16 and e.op in ("sum", "prod") else
                          e.body.dtype.np).type
        acc: Any = None
        pos = 0
        saved = {v.name: self.env.get(v.name) for v, _ in e.axes}
        with np.errstate(all="ignore"):
            for flat, idx in enumerate(np.ndindex(*[n for _, n in e.axes])):
                for (v, _), i in zip(e.axes, idx):
                    self.env[v.name] = i
                x = np.asarray(self.expr(e.body)).astype(acc_dt)[()]
                if acc is None:
                    acc = x
                elif e.op in ("sum", "prod"):
                    acc = acc_dt(acc + x) if e.op == "sum" else acc_dt(acc * x)
                elif e.op in ("max", "min"):
                    acc = apply_scalar(e.op, np.asarray(acc), np.asarray(x))[()]
                elif (x > acc) if e.op == "argmax" else (x < acc):
                    acc, pos = x, flat
        for k, v in saved.items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        if e.op in ("argmax", "argmin"):
            return np.int64(pos)
        if acc is None:   # an empty reduction: its identity
            acc = {"sum": 0, "prod": 1, "max": -np.inf, "min": np.inf}[e.op]
        return np.asarray(acc).astype(e.dtype.np)[()]

    def stmt(self, s: Stmt) -> None:
        for _ in self.gstmt(s):
            raise InterpreterError("loop interpreter: a barrier outside thread loops")

    def gstmt(self, s: Stmt) -> Iterator[Any]:
        """Run `s`; yields at barriers and block all-reduces (receiving the reduced value)."""
        if isinstance(s, Seq):
            for x in s.stmts:
                yield from self.gstmt(x)
        elif isinstance(s, For):
            if s.kind.is_thread and _has_sync(s):
                yield from self.simt(s)
                return
            if s.kind == LoopKind.VECTOR and self.gpu:
                self.check_wide(s)
            n = int(self.expr(s.extent))
            start, stop = 0, n
            if s.kind == LoopKind.PARALLEL:
                chunk = -(-n // self.threads)
                start, stop = self.tid * chunk, min(n, (self.tid + 1) * chunk)
            for i in range(start, stop):
                self.env[s.var.name] = i
                yield from self.gstmt(s.body)
            self.env.pop(s.var.name, None)
        elif isinstance(s, Store):
            arr = self.array(id(s.buf))
            idx = tuple(int(self.expr(i)) for i in s.index)
            if any(i < 0 for i in idx):
                raise InterpreterError(f"loop interpreter: store to {s.buf.name}{list(idx)} is "
                                       "out of bounds")
            arr[idx] = self.expr(s.value)
            if id(s.buf) in self.unwritten:
                self.unwritten[id(s.buf)][idx] = False
        elif isinstance(s, Allocate):
            a = np.zeros(s.buf.shape, dtype=s.buf.dtype.np)
            if s.buf.scope == Scope.LOCAL:
                self.local[id(s.buf)] = a
            else:
                self.mem[id(s.buf)] = a
            yield from self.gstmt(s.body)
        elif isinstance(s, IfThen):
            if bool(self.expr(s.cond)):
                yield from self.gstmt(s.then)
            elif s.else_ is not None:
                yield from self.gstmt(s.else_)
        elif isinstance(s, Prefetch):
            pass                    # a hint: reads nothing (its index may pass the buffer)
        elif isinstance(s, Barrier):
            yield ("barrier",)
        elif isinstance(s, BlockAllReduce):
            acc = self.array(id(s.acc))
            acc[0] = yield ("reduce", s.op, acc[0])
        elif isinstance(s, AsyncCopy):
            arr = self.array(id(s.dst))
            idx = tuple(int(self.expr(i)) for i in s.dst_index)
            if s.cond is None or bool(self.expr(s.cond)):
                val = self.expr(BufLoad(s.src, s.src_index, s.src.dtype))
            else:
                val = s.dst.dtype.np.type(0)
            try:
                arr[idx]
            except IndexError:
                raise InterpreterError(f"loop interpreter: async copy to {s.dst.name}"
                                       f"{list(idx)} is out of bounds") from None
            self.copying.append((arr, idx, val))
        elif isinstance(s, AsyncCommit):
            self.in_flight.append(self.copying)
            self.copying = []
        elif isinstance(s, AsyncWait):
            while len(self.in_flight) > s.pending:
                for arr, idx, val in self.in_flight.pop(0):
                    arr[idx] = val
        elif isinstance(s, WarpLdmatrix):
            src = self.array(id(s.src))
            idx = tuple(int(self.expr(i)) for i in s.src_index)
            flat = int(np.ravel_multi_index(idx, src.shape))
            if flat % 8 or flat + 8 > src.size:
                raise InterpreterError(f"loop interpreter: ldmatrix row at {s.src.name}"
                                       f"{list(idx)} is not 8 aligned elements inside it")
            row = np.array(src.reshape(-1)[flat:flat + 8])
            dst = self.array(id(s.dst))
            at = tuple(int(self.expr(i)) for i in s.dst_at)
            if dst[at].shape != (2 * s.count,):
                raise InterpreterError(f"loop interpreter: ldmatrix.x{s.count} fills "
                                       f"{2 * s.count} elements of {s.dst.name}{list(at)}, it "
                                       f"has {list(dst[at].shape)}")
            dst[at] = yield ("ldmatrix", s, row)
        elif isinstance(s, WarpMma):
            regs = []
            for buf, at, n in ((s.a, s.a_at, 3), (s.b, s.b_at, 4), (s.acc, s.acc_at, 5)):
                arr = self.array(id(buf))
                idx = tuple(int(self.expr(i)) for i in at)
                if arr.shape[len(idx):] != (MMA_SHAPES[s.shape][n],):
                    raise InterpreterError(f"loop interpreter: {s.shape} wants "
                                           f"{MMA_SHAPES[s.shape][n]} registers of "
                                           f"{buf.name}{list(idx)}, it has "
                                           f"{list(arr.shape[len(idx):])}")
                regs.append((arr, idx))
            d = yield ("mma", s, *(np.array(arr[idx]) for arr, idx in regs))
            arr, idx = regs[2]
            arr[idx] = d
        else:
            raise InterpreterError(f"loop interpreter: cannot run {type(s).__name__}")

    def check_wide(self, s: For) -> None:
        """A wide access must start at a multiple of its width (see wide.py): on the GPU a
        misaligned float4 load or 16-byte cp.async faults."""
        wa = wide_access(s)
        if wa is None:
            return
        self.env[s.var.name] = 0
        body = s.body
        ends = [(wa.load.buf, wa.load.index)]
        if isinstance(body, AsyncCopy):
            ends.append((body.dst, body.dst_index))
        for buf, index in ends:
            idx = tuple(int(self.expr(i)) for i in index)
            off = sum(i * int(np.prod(buf.shape[d + 1:], dtype=np.int64))
                      for d, i in enumerate(idx))      # (a zero-filling copy may point past)
            if off % wa.width:
                raise InterpreterError(
                    f"loop interpreter: the {4 * wa.width}-byte access to {buf.name}"
                    f"{list(idx)} (element {off}) is not {4 * wa.width}-byte aligned; on a "
                    "GPU it faults")
        self.env.pop(s.var.name, None)

    def simt(self, s: For) -> Iterator[Any]:
        """Threads of a block as coroutines, advanced together from barrier to barrier."""
        loops = [s]
        body = s.body
        while isinstance(body, For) and body.kind.is_thread:
            loops.append(body)
            body = body.body
        extents = [int(self.expr(lp.extent)) for lp in loops]
        dims = {lp.kind: n for lp, n in zip(loops, extents)}
        bx, by = dims.get(LoopKind.THREAD_X, 1), dims.get(LoopKind.THREAD_Y, 1)
        stride = {LoopKind.THREAD_X: 1, LoopKind.THREAD_Y: bx, LoopKind.THREAD_Z: bx * by}
        threads, linear = [], []
        for combo in np.ndindex(*extents):
            # the thread's index in CUDA's order (x fastest): its warp is linear // 32
            linear.append(sum(int(v) * stride[lp.kind] for lp, v in zip(loops, combo)))
            t = _Run(self.mem, self.threads, self.unwritten)
            t.gpu = True
            t.env = dict(self.env)
            t.local = dict(self.local)
            for lp, v in zip(loops, combo):
                t.env[lp.var.name] = int(v)
            threads.append(t.gstmt(body))
        _together(threads, "a block", linear)
        yield from ()  # (a generator: the threads' own barriers never reach the caller)


def _together(threads: list[Iterator[Any]], what: str, linear: list[int] | None = None) -> None:
    """Advance the threads' coroutines together from barrier to barrier (and block
    all-reduce to all-reduce, sending each the reduced value; warp mma to warp mma, sending
    each lane its part of the warp's product) until all have finished. `linear`: each
    thread's index in the block in CUDA's order (its warp and lane)."""
    sends: list[Any] = [None] * len(threads)
    live = list(range(len(threads)))
    while live:
        events = {}
        for k in live:
            try:
                events[k] = threads[k].send(sends[k]) if sends[k] is not None else \
                    next(threads[k])
            except StopIteration:
                events[k] = None
        done = [k for k, ev in events.items() if ev is None]
        if done and len(done) != len(live):
            raise InterpreterError(f"loop interpreter: some threads of {what} finished while "
                                   "others wait at a barrier (divergent barrier)")
        if done:
            break
        kinds = {ev[0] for ev in events.values()}
        if len(kinds) != 1:
            raise InterpreterError("loop interpreter: threads reached different barriers")
        sends = [None] * len(threads)
        if kinds == {"mma"}:
            sends = _warp_mmas(events, linear or list(range(len(threads))), len(threads))
        elif kinds == {"ldmatrix"}:
            sends = _warp_ldmatrix(events, linear or list(range(len(threads))), len(threads))
        elif kinds == {"reduce"}:
            op = next(iter(events.values()))[1]
            vals = np.array([ev[2] for ev in events.values()])
            red = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min}[op](vals)
            for k in live:
                sends[k] = vals.dtype.type(red)
        else:
            sends = [0] * len(threads)   # resume value for plain barriers


def _warps(events: dict[int, Any], linear: list[int], what: str) -> list[list[int]]:
    """The threads at a warp-wide statement, warp by warp, each in lane order; all 32 lanes
    of a warp must be there, at the same statement."""
    if len(set(id(ev[1]) for ev in events.values())) != 1:
        raise InterpreterError(f"loop interpreter: threads reached different warp {what}s")
    warps: dict[int, dict[int, int]] = {}
    for k in events:
        warps.setdefault(linear[k] // 32, {})[linear[k] % 32] = k
    out = []
    for w, lanes in warps.items():
        if len(lanes) != 32:
            raise InterpreterError(f"loop interpreter: a warp {what} with {len(lanes)} of "
                                   f"warp {w}'s 32 lanes (it needs the whole warp)")
        out.append([lanes[j] for j in range(32)])
    return out


def _warp_ldmatrix(events: dict[int, Any], linear: list[int], n: int) -> list[Any]:
    """ldmatrix: matrix i is the rows lanes 8i..8i+7 point at; lane (g, t) gets elements
    (g, 2t) and (g, 2t+1) of each (of its transpose with .trans)."""
    sends: list[Any] = [None] * n
    for ks in _warps(events, linear, "ldmatrix"):
        st = events[ks[0]][1]
        mats = [np.stack([events[ks[8 * i + r]][2] for r in range(8)]) for i in range(st.count)]
        if st.trans:
            mats = [m.T for m in mats]
        for j, k in enumerate(ks):
            g, t = j >> 2, j & 3
            sends[k] = np.concatenate([m[g, 2 * t:2 * t + 2] for m in mats])
    return sends


def _warp_mmas(events: dict[int, Any], linear: list[int], n: int) -> list[Any]:
    """Each warp's mma from its 32 lanes' registers (ir/loops/mma.py); every lane of a warp
    must be there, at the same statement, as mma.sync requires."""
    from minicc.ir.loops.mma import warp_mma

    sends: list[Any] = [None] * n
    for ks in _warps(events, linear, "mma"):
        shape = events[ks[0]][1].shape
        d = warp_mma(shape, *(np.stack([events[k][i] for k in ks]) for i in (2, 3, 4)))
        for j, k in enumerate(ks):
            sends[k] = d[j]
    return sends


# i64 index arithmetic on Python ints (floored // and %, like numpy's on int64)
_INDEX_OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
              "floordiv": operator.floordiv, "mod": operator.mod, "min": min, "max": max,
              "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
              "eq": operator.eq, "ne": operator.ne}


def _has_sync(s: Stmt) -> bool:
    return any(isinstance(x, (Barrier, BlockAllReduce, WarpMma, WarpLdmatrix)) for x in walk(s))


def run_kernel(k: Kernel, args: Mapping[str, np.ndarray], threads: int = 1) -> None:
    """Run `k` with arrays bound to its parameters by name (updated in place). Scratch buffers
    are allocated here, and reading an element of one before a store wrote it is an
    InterpreterError; every thread of a parallel loop runs in turn."""
    arrays: dict[int, np.ndarray] = {}
    unwritten: dict[int, np.ndarray] = {}
    for b, role in zip(k.params, k.roles):
        if b.workspace:
            arrays[id(b)] = np.zeros(b.shape, dtype=b.dtype.np)
            unwritten[id(b)] = np.ones(b.shape, dtype=bool)
            continue
        if b.name not in args:
            raise InterpreterError(f"loop interpreter: no array for parameter {b.name}")
        a = args[b.name]
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype.np:
            raise InterpreterError(f"loop interpreter: {b.name} is {a.dtype}{list(a.shape)}, "
                                   f"the kernel wants {b.dtype.value}{list(b.shape)}")
        arrays[id(b)] = a
    has_par = any(isinstance(x, For) and x.kind == LoopKind.PARALLEL for x in walk(k.body))
    if has_par and threads > 1 and any(isinstance(x, Barrier) for x in walk(k.body)):
        _lockstep(k, arrays, unwritten, threads)
        return
    gpu = any(isinstance(x, For) and (x.kind.is_block or x.kind.is_thread)
              for x in walk(k.body))
    for tid in range(threads if has_par else 1):
        r = _Run(arrays, threads, unwritten)
        r.tid, r.gpu = tid, gpu
        r.stmt(k.body)


def _lockstep(k: Kernel, arrays: dict[int, np.ndarray], unwritten: dict[int, np.ndarray],
              threads: int) -> None:
    """The kernel's threads as coroutines, advanced together from barrier to barrier: each
    with its own copy of the per-thread scratch, all of them on the shared buffers (so a
    thread that reads what another had not yet stored is an error here, as it is a race in
    native code)."""
    runs = []
    for tid in range(threads):
        mem, unw = dict(arrays), dict(unwritten)
        for b in k.params:
            if b.scope == Scope.SCRATCH:
                mem[id(b)] = np.zeros(b.shape, dtype=b.dtype.np)
                unw[id(b)] = np.ones(b.shape, dtype=bool)
        r = _Run(mem, threads, unw)
        r.tid = tid
        runs.append(r.gstmt(k.body))
    _together(runs, "the kernel")


def buffer_arrays(k: Kernel, **arrays: np.ndarray) -> dict[str, np.ndarray]:
    """Arrays for every non-scratch parameter: the given ones, zeros for the others."""
    out = {}
    for b in k.params:
        if b.scope == Scope.SCRATCH:
            continue
        out[b.name] = arrays.get(b.name, np.zeros(b.shape, dtype=b.dtype.np))
    return out

