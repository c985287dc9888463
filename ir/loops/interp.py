"""A Loop IR interpreter for tests: runs a Kernel on numpy arrays, one scalar at a time.

Slow by design and simple to trust: vector loops run lane by lane, parallel loops run every
thread's chunk in turn, a Select evaluates only the branch it takes (so guarded out-of-bounds
loads never happen, as in generated code).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from minicc.errors import InterpreterError
from minicc.ir.compute import Call, Cast, Const, Expr, Select, Var
from minicc.ir.loops.nodes import (Allocate, Barrier, BufLoad, For, IfThen, Kernel, Scope, Seq,
                                   Stmt, Store)
from minicc.ir.scalar import apply_scalar


class _Run:
    def __init__(self, arrays: dict[int, np.ndarray], threads: int):
        self.mem = arrays
        self.env: dict[str, Any] = {}
        self.threads = threads
        self.tid = 0

    def expr(self, e: Expr) -> Any:
        if isinstance(e, Var):
            try:
                return self.env[e.name]
            except KeyError:
                raise InterpreterError(f"loop interpreter: unbound variable {e.name}") from None
        if isinstance(e, Const):
            return e.dtype.np.type(e.value)
        if isinstance(e, BufLoad):
            arr = self.mem[id(e.buf)]
            idx = tuple(int(self.expr(i)) for i in e.index)
            try:
                return arr[idx]
            except IndexError:
                raise InterpreterError(f"loop interpreter: {e.buf.name}{list(idx)} is out of "
                                       f"bounds {list(arr.shape)}") from None
        if isinstance(e, Call):
            args = [np.asarray(self.expr(a), dtype=a.dtype.np) for a in e.args]
            return apply_scalar(e.fn, *args)[()]
        if isinstance(e, Select):
            return self.expr(e.a) if bool(self.expr(e.cond)) else self.expr(e.b)
        if isinstance(e, Cast):
            with np.errstate(all="ignore"):
                return np.asarray(self.expr(e.x)).astype(e.dtype.np)[()]
        raise InterpreterError(f"loop interpreter: cannot evaluate {type(e).__name__}")

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x)
        elif isinstance(s, For):
            n = int(self.expr(s.extent))
            start, stop = 0, n
            if s.kind.value == "parallel":
                chunk = -(-n // self.threads)
                start, stop = self.tid * chunk, min(n, (self.tid + 1) * chunk)
            for i in range(start, stop):
                self.env[s.var.name] = np.int64(i)
                self.stmt(s.body)
            self.env.pop(s.var.name, None)
        elif isinstance(s, Store):
            arr = self.mem[id(s.buf)]
            idx = tuple(int(self.expr(i)) for i in s.index)
            arr[idx] = self.expr(s.value)
        elif isinstance(s, Allocate):
            self.mem[id(s.buf)] = np.zeros(s.buf.shape, dtype=s.buf.dtype.np)
            self.stmt(s.body)
        elif isinstance(s, IfThen):
            if bool(self.expr(s.cond)):
                self.stmt(s.then)
            elif s.else_ is not None:
                self.stmt(s.else_)
        elif isinstance(s, Barrier):
            pass
        else:
            raise InterpreterError(f"loop interpreter: cannot run {type(s).__name__}")


def run_kernel(k: Kernel, args: Mapping[str, np.ndarray], threads: int = 1) -> None:
    """Run `k` with arrays bound to its parameters by name (updated in place). Scratch buffers
    are allocated here; every thread of a parallel loop runs in turn."""
    arrays: dict[int, np.ndarray] = {}
    for b, role in zip(k.params, k.roles):
        if b.scope == Scope.SCRATCH:
            arrays[id(b)] = np.zeros(b.shape, dtype=b.dtype.np)
            continue
        if b.name not in args:
            raise InterpreterError(f"loop interpreter: no array for parameter {b.name}")
        a = args[b.name]
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype.np:
            raise InterpreterError(f"loop interpreter: {b.name} is {a.dtype}{list(a.shape)}, "
                                   f"the kernel wants {b.dtype.value}{list(b.shape)}")
        arrays[id(b)] = a
    has_par = "parallel" in repr(k.body)
    for tid in range(threads if has_par else 1):
        r = _Run(arrays, threads)
        r.tid = tid
        r.stmt(k.body)


def buffer_arrays(k: Kernel, **arrays: np.ndarray) -> dict[str, np.ndarray]:
    """Arrays for every non-scratch parameter: the given ones, zeros for the others."""
    out = {}
    for b in k.params:
        if b.scope == Scope.SCRATCH:
            continue
        out[b.name] = arrays.get(b.name, np.zeros(b.shape, dtype=b.dtype.np))
    return out

