"""Graph pictures: a function (or its fused partition) as Graphviz DOT text.

Nodes are ops labelled with their kind and result type; constants are not drawn (an op counts
the weights it reads), inputs and outputs are ovals. With a partition, each fused group is a
cluster named after its kernel (the names the compiler gives: k<step>_<root op>); views and host
ops are drawn apart. `minicc viz` renders the text with Graphviz's `dot` where installed.
"""

from __future__ import annotations

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.fuse import Partition

STYLE = {"complex": "#f6c28b", "reduce": "#a8d5ba", "injective": "#c9d7f2",
         "elemwise": "#f2f2f2", "broadcast": "#f2f2f2", "opaque": "#e6c3e6"}


NL = r"\n"      # a line break inside a label (DOT's escape: backslash, n)


def _q(s: str) -> str:
    """A DOT string; the label escape NL stays as it is."""
    return '"' + s.replace('"', '\\"') + '"'


def _op_node(op: Op, idx: int, consts: set[Value]) -> str:
    from minicc.ir.registry import get_op

    w = sum(1 for v in op.inputs if v in consts)
    label = op.kind + (f" ({w} weights)" if w else "") + NL + ", ".join(
        str(v.type) for v in op.outputs)
    color = STYLE.get(get_op(op.kind).kind.name.lower(), "#ffffff")
    return f"  n{idx} [label={_q(label)}, shape=box, style=\"rounded,filled\", " \
           f"fillcolor={_q(color)}];"


def to_dot(f: Function, part: Partition | None = None, title: str = "") -> str:
    """DOT text for `f`; with `part`, one cluster per fused group (kernel)."""
    consts = {op.output for op in f.ops if op.kind == "const"}
    ops = [op for op in f.ops if op.kind != "const"]
    idx = {id(op): i for i, op in enumerate(ops)}
    made: dict[Value, str] = {}
    lines = ["digraph minicc {", "  rankdir=TB; node [fontname=\"Helvetica\", fontsize=10];",
             "  edge [color=\"#555555\", arrowsize=0.6];"]
    if title:
        lines.append(f"  labelloc=t; label={_q(title)}; fontname=\"Helvetica\";")
    for k, (name, v) in enumerate(zip(f.input_names, f.inputs)):
        lines.append(f"  in{k} [label={_q(name + NL + str(v.type))}, shape=oval];")
        made[v] = f"in{k}"
    for op in ops:
        for v in op.outputs:
            made[v] = f"n{idx[id(op)]}"
    if part is not None:
        lines += _clusters(part, idx, consts)
    else:
        lines += [_op_node(op, idx[id(op)], consts) for op in ops]
    for op in ops:
        for v in op.inputs:
            if v in made:
                lines.append(f"  {made[v]} -> n{idx[id(op)]};")
    for k, (name, v) in enumerate(zip(f.output_names, f.outputs)):
        lines.append(f"  out{k} [label={_q(name + NL + str(v.type))}, shape=oval];")
        if v in made:
            lines.append(f"  {made[v]} -> out{k};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _clusters(part: Partition, idx: dict[int, int], consts: set[Value]) -> list[str]:
    out: list[str] = []
    step = 0
    for g in part.groups:
        nodes = [_op_node(op, idx[id(op)], consts) for op in g.ops if id(op) in idx]
        if g.is_view:
            out += nodes
            continue
        name = f"k{step}_{g.root.kind}" + (" (host)" if g.is_host else "")
        step += 1
        out.append(f"  subgraph cluster_{g.id} {{ label={_q(name)}; style=\"rounded,dashed\"; "
                   "color=\"#888888\"; fontsize=9;")
        out += ["  " + n for n in nodes]
        out.append("  }")
    return out
