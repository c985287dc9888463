"""Dead-code elimination: drop ops none of whose results reach a function result.

    %a = exp(%x) : f32[4]          (unused)
    %b = relu(%x) : f32[4]   -->   %b = relu(%x) : f32[4]
    return %b                      return %b
"""

from __future__ import annotations

from minicc.ir.graph import Function, Value


def eliminate_dead_code(f: Function) -> Function:
    live: set[Value] = set(f.outputs)
    kept = []
    for op in reversed(f.ops):
        if any(v in live for v in op.outputs):
            kept.append(op)
            live.update(op.inputs)
    if len(kept) == len(f.ops):
        return f
    return f.replace(ops=tuple(reversed(kept)))
