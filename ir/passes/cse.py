"""Common-subexpression elimination: ops with the same kind, operands and attributes (and
constants with equal data) are computed once.

    %a = exp(%x) : f32[4]            %a = exp(%x) : f32[4]
    %b = exp(%x) : f32[4]     ->     %c = add(%a, %a) : f32[4]
    %c = add(%a, %b) : f32[4]
"""

from __future__ import annotations

from typing import Sequence

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.rewrite import Rewriter


def eliminate_common_subexpressions(f: Function) -> Function:
    seen: dict[tuple, Sequence[Value]] = {}
    rw = Rewriter(f)

    def visit(rw: Rewriter, op: Op, ins: list[Value]) -> Sequence[Value] | None:
        key = (op.kind, tuple(id(v) for v in ins), op.attrs)
        if key in seen:
            return seen[key]
        outs = rw.b.op(op.kind, ins, op.attrs, [v.name_hint for v in op.outputs], op.loc)
        seen[key] = outs
        return outs

    # constants first: equal data -> one value
    consts: dict[object, Value] = {}
    for op in f.ops:
        if op.kind == "const":
            c = op.attrs["value"]
            rep = consts.setdefault(c, op.output)
            if rep is not op.output:
                rw.map[op.output] = rep
    out = _run_with_const_map(rw, visit)
    return out


def _run_with_const_map(rw: Rewriter, visit) -> Function:  # type: ignore[no-untyped-def]
    f = rw.f
    for op in f.ops:
        if op.kind == "const":
            if rw.map.get(op.output, op.output) is op.output:
                rw.b.add(op)
                rw.map[op.output] = op.output
            continue
        ins = [rw.map[v] for v in op.inputs]
        res = visit(rw, op, ins)
        for old, new in zip(op.outputs, res):
            rw.map[old] = new
    return rw.b.finish([rw.map[v] for v in f.outputs], f.output_names)
