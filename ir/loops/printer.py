"""Print Loop IR kernels as text (`minicc compile --dump-ir loops`)."""

from __future__ import annotations

from minicc.ir.compute import Call, Cast, Const, Expr, Load, Reduce, Select, Var
from minicc.ir.loops.nodes import (Allocate, Barrier, BlockAllReduce, BufLoad, For, IfThen, Kernel,
                                   LoopKind, Seq, Stmt, Store)

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
          "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "and": "&&",
          "or": "||"}


def format_expr(e: Expr) -> str:
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Const):
        if isinstance(e.value, bool):
            return "true" if e.value else "false"
        return repr(e.value) if e.dtype.is_float else str(e.value)
    if isinstance(e, BufLoad):
        return f"{e.buf.name}[{', '.join(format_expr(i) for i in e.index)}]"
    if isinstance(e, Load):
        return f"in{e.input}[{', '.join(format_expr(i) for i in e.index)}]"
    if isinstance(e, Call):
        if e.fn in _INFIX and len(e.args) == 2:
            return f"({format_expr(e.args[0])} {_INFIX[e.fn]} {format_expr(e.args[1])})"
        return f"{e.fn}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, Select):
        return f"select({format_expr(e.cond)}, {format_expr(e.a)}, {format_expr(e.b)})"
    if isinstance(e, Cast):
        return f"{e.dtype.value}({format_expr(e.x)})"
    if isinstance(e, Reduce):
        ax = ", ".join(f"{v.name} < {n}" for v, n in e.axes)
        return f"{e.op}[{ax}]({format_expr(e.body)})"
    return repr(e)


def format_stmt(s: Stmt, indent: int = 1) -> list[str]:
    pad = "  " * indent
    if isinstance(s, For):
        kind = "" if s.kind == LoopKind.SERIAL else f" {s.kind.value}" + (
            f"({s.lanes})" if s.kind == LoopKind.VECTOR else "")
        head = f"{pad}for {s.var.name} in 0..{format_expr(s.extent)}{kind} {{"
        return [head] + format_stmt(s.body, indent + 1) + [pad + "}"]
    if isinstance(s, Seq):
        return [ln for x in s.stmts for ln in format_stmt(x, indent)]
    if isinstance(s, Store):
        idx = ", ".join(format_expr(i) for i in s.index)
        return [f"{pad}{s.buf.name}[{idx}] = {format_expr(s.value)}"]
    if isinstance(s, IfThen):
        out = [f"{pad}if {format_expr(s.cond)} {{"] + format_stmt(s.then, indent + 1)
        if s.else_ is not None:
            out += [pad + "} else {"] + format_stmt(s.else_, indent + 1)
        return out + [pad + "}"]
    if isinstance(s, Allocate):
        b = s.buf
        return [f"{pad}alloc {b.name}: {b.dtype.value}[{','.join(map(str, b.shape))}] "
                f"{b.scope.value}"] + format_stmt(s.body, indent)
    if isinstance(s, Barrier):
        return [f"{pad}barrier"]
    if isinstance(s, BlockAllReduce):
        return [f"{pad}{s.acc.name}[0] = block_all_reduce.{s.op}({s.acc.name}[0])  "
                f"// via {s.scratch.name}"]
    return [f"{pad}{s!r}"]


def print_kernel(k: Kernel) -> str:
    params = ", ".join(f"%{b.name}: {b.dtype.value}[{','.join(map(str, b.shape))}] {r}"
                       for b, r in zip(k.params, k.roles))
    lines = [f"kernel {k.name}({params}) {{"] + format_stmt(k.body) + ["}"]
    if k.trace:
        lines.append("# trace: " + "; ".join(k.trace))
    return "\n".join(lines) + "\n"
