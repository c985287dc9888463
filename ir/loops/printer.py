"""Print loop IR kernels as text (`minicc compile --dump-ir loops`); ir/loops/parser.py reads
the text back into the same kernel, so print -> parse -> print is a fixed point.

    kernel k1_relu(%x: f32[1,64] in, %y: f32[1,64] out) flops=64 {
      for i1 in 0..64 vector(16) {
        %y[0, i1] = relu(%x[0, i1])
      }
    }
    schedule cpu.loops: vectorize(i1, 16)

Buffers are `%name` (unique in a kernel: the printer appends `_1`, `_2`... to a repeated hint);
constants are `3` (i64), `1.5` (f32), `true`, or a value and its dtype (`3:i32`, `0.5:f16`);
binary operators print infix and parenthesized; casts print as `f16(x)`; reductions that have
not been scheduled yet as `sum[k < 64](body)`.
"""

from __future__ import annotations

import math

from minicc.ir.compute import Call, Cast, Const, Expr, Load, Reduce, Select, Var
from minicc.ir.loops.nodes import (ROLE_SCOPES, Allocate, AsyncCommit, AsyncCopy, AsyncWait,
                                   Barrier, BlockAllReduce, BufLoad, Buffer, For, IfThen, Kernel,
                                   LoopKind, Prefetch, Scope, Seq, Stmt, Store, WarpLdmatrix,
                                   WarpMma, walk)
from minicc.ir.loops.trace import format_schedule
from minicc.ir.types import DType

INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
         "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "and": "&&",
         "or": "||"}


def reduce_dtype(op: str, body: DType) -> DType:
    """The dtype a reduction has unless it says otherwise: positions are i64."""
    return DType.I64 if op in ("argmax", "argmin") else body


def format_const(e: Const) -> str:
    if e.dtype == DType.BOOL:
        return "true" if e.value else "false"
    if e.dtype.is_float:
        v = float(e.value)
        text = "nan" if math.isnan(v) else repr(v)
        return text if e.dtype == DType.F32 else f"{text}:{e.dtype.value}"
    return str(int(e.value)) if e.dtype == DType.I64 else f"{int(e.value)}:{e.dtype.value}"


class Names:
    """Unique printed names for a kernel's buffers (identity is by object); `canonical` names
    them by position instead (p0, p1, ... for parameters, a0, a1, ... for allocations)."""

    def __init__(self, k: Kernel | None = None, canonical: bool = False):
        self.of: dict[int, str] = {}
        self.used: set[str] = set()
        if k is not None:
            for i, b in enumerate(k.params):
                self.name(b, f"p{i}" if canonical else None)
            allocs = [s.buf for s in walk(k.body) if isinstance(s, Allocate)]
            for i, b in enumerate(allocs):
                self.name(b, f"a{i}" if canonical else None)

    def name(self, b: Buffer, hint: str | None = None) -> str:
        n = self.of.get(id(b))
        if n is None:
            base = "".join(c if c.isalnum() or c in "_." else "_" for c in hint or b.name) or "t"
            n, k = base, 0
            while n in self.used:
                k += 1
                n = f"{base}_{k}"
            self.of[id(b)] = n
            self.used.add(n)
        return n


def format_expr(e: Expr, names: Names | None = None) -> str:
    nm = names or Names()

    def f(x: Expr) -> str:
        if isinstance(x, Var):
            return x.name
        if isinstance(x, Const):
            return format_const(x)
        if isinstance(x, BufLoad):
            return f"%{nm.name(x.buf)}[{', '.join(f(i) for i in x.index)}]"
        if isinstance(x, Load):
            return f"in{x.input}[{', '.join(f(i) for i in x.index)}]"
        if isinstance(x, Call):
            if x.fn in INFIX and len(x.args) == 2:
                return f"({f(x.args[0])} {INFIX[x.fn]} {f(x.args[1])})"
            return f"{x.fn}({', '.join(f(a) for a in x.args)})"
        if isinstance(x, Select):
            return f"select({f(x.cond)}, {f(x.a)}, {f(x.b)})"
        if isinstance(x, Cast):
            return f"{x.dtype.value}({f(x.x)})"
        if isinstance(x, Reduce):
            ax = ", ".join(f"{v.name} < {n}" for v, n in x.axes)
            dt = "" if x.dtype == reduce_dtype(x.op, x.body.dtype) else f":{x.dtype.value}"
            return f"{x.op}{dt}[{ax}]({f(x.body)})"
        return repr(x)
    return f(e)


def _type(b: Buffer) -> str:
    return f"{b.dtype.value}[{','.join(map(str, b.shape))}]"


def _kind(s: For) -> str:
    if s.kind == LoopKind.SERIAL:
        return ""
    return f" vector({s.lanes})" if s.kind == LoopKind.VECTOR else f" {s.kind.value}"


def format_stmt(s: Stmt, indent: int = 1, names: Names | None = None) -> list[str]:
    nm = names or Names()
    pad = "  " * indent

    def e(x: Expr) -> str:
        return format_expr(x, nm)
    if isinstance(s, For):
        return ([f"{pad}for {s.var.name} in 0..{e(s.extent)}{_kind(s)} {{"]
                + format_stmt(s.body, indent + 1, nm) + [pad + "}"])
    if isinstance(s, Seq):
        return [ln for x in s.stmts for ln in format_stmt(x, indent, nm)]
    if isinstance(s, Store):
        return [f"{pad}%{nm.name(s.buf)}[{', '.join(e(i) for i in s.index)}] = {e(s.value)}"]
    if isinstance(s, IfThen):
        out = [f"{pad}if {e(s.cond)} {{"] + format_stmt(s.then, indent + 1, nm)
        if s.else_ is not None:
            out += [pad + "} else {"] + format_stmt(s.else_, indent + 1, nm)
        return out + [pad + "}"]
    if isinstance(s, Allocate):
        return ([f"{pad}alloc %{nm.name(s.buf)}: {_type(s.buf)} {s.buf.scope.value} {{"]
                + format_stmt(s.body, indent + 1, nm) + [pad + "}"])
    if isinstance(s, Prefetch):
        return [f"{pad}prefetch %{nm.name(s.buf)}[{', '.join(e(i) for i in s.index)}]"]
    if isinstance(s, Barrier):
        return [f"{pad}barrier"]
    if isinstance(s, BlockAllReduce):
        a = nm.name(s.acc)
        return [f"{pad}%{a}[0] = block_all_reduce.{s.op}(%{a}[0]) via %{nm.name(s.scratch)}"]
    if isinstance(s, AsyncCopy):
        src = f"%{nm.name(s.src)}[{', '.join(e(i) for i in s.src_index)}]"
        cond = f", {e(s.cond)}" if s.cond is not None else ""
        return [f"{pad}%{nm.name(s.dst)}[{', '.join(e(i) for i in s.dst_index)}] = "
                f"async_copy({src}{cond})"]
    if isinstance(s, AsyncCommit):
        return [f"{pad}async_commit"]
    if isinstance(s, AsyncWait):
        return [f"{pad}async_wait {s.pending}"]
    if isinstance(s, WarpLdmatrix):
        kind = f"ldmatrix.x{s.count}" + (".trans" if s.trans else "")
        return [f"{pad}%{nm.name(s.dst)}[{', '.join(e(i) for i in s.dst_at)}] = {kind}("
                f"%{nm.name(s.src)}[{', '.join(e(i) for i in s.src_index)}])"]
    if isinstance(s, WarpMma):
        def ref(b: Buffer, at: tuple[Expr, ...]) -> str:
            return f"%{nm.name(b)}[{', '.join(e(i) for i in at)}]"
        c = ref(s.acc, s.acc_at)
        return [f"{pad}{c} = mma.{s.shape}({c}, {ref(s.a, s.a_at)}, {ref(s.b, s.b_at)})"]
    return [f"{pad}{s!r}"]


def canonical_text(k: Kernel) -> str:
    """The kernel with names by position and no name, FLOPs or schedule: what two kernels that
    compute the same thing on the same shapes print alike (a tuning workload)."""
    nm = Names(k, canonical=True)
    params = ", ".join(f"%{nm.name(b)}: {_type(b)} {r}" for b, r in zip(k.params, k.roles))
    return "\n".join([f"kernel k({params}) {{"] + format_stmt(k.body, 1, nm) + ["}"]) + "\n"


def print_kernel(k: Kernel) -> str:
    nm = Names(k)
    for b, r in zip(k.params, k.roles):
        want = ROLE_SCOPES.get(r, Scope.GLOBAL)
        assert b.scope == want, f"kernel {k.name}: parameter {b.name} is {b.scope.value}"
    params = ", ".join(f"%{nm.name(b)}: {_type(b)} {r}" for b, r in zip(k.params, k.roles))
    lines = [f"kernel {k.name}({params}) flops={k.flops} {{"] + format_stmt(k.body, 1, nm)
    lines.append("}")
    if k.schedule or k.trace:
        lines.append("schedule " + format_schedule(k.schedule or "steps", k.trace))
    return "\n".join(lines) + "\n"
