"""Converters for If, Loop and Scan: each subgraph becomes a region (ir/ops/control.py) whose
inputs are what the op passes it, then the outer values it reads. An If whose condition is
known at compile time (a constant, or shape arithmetic on static shapes) is the branch it
takes, imported inline."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

from minicc.frontend.context import NodeContext
from minicc.frontend.registry import converter
from minicc.ir.graph import Function, Value
from minicc.ir.types import DType, TensorType

INT64_MAX = np.iinfo(np.int64).max


def _share_captures(fs: list[tuple[Function, list[Value]]]) -> tuple[list[Function], list[Value]]:
    """Regions of one op that captured different outer values, each made to take all of them
    (in one order; a region ignores those it does not read)."""
    caps: list[Value] = []
    for _, cs in fs:
        caps += [c for c in cs if not any(c is x for x in caps)]
    out = []
    for f, cs in fs:
        lead = len(f.inputs) - len(cs)
        own = {id(c): (v, n) for c, v, n in zip(cs, f.inputs[lead:], f.input_names[lead:])}
        ins, names = list(f.inputs[:lead]), list(f.input_names[:lead])
        for k, c in enumerate(caps):
            v, n = own.get(id(c), (Value(c.type, f"unused{k}"), f"unused{k}"))
            ins.append(v)
            names.append(n if n not in names else f"{n}_{k}")
        out.append(f.replace(inputs=tuple(ins), input_names=tuple(names)))
    return out, caps


@converter("If", since=1)
def if_v1(ctx: NodeContext) -> Sequence[Value]:
    from minicc.frontend.onnx_import import import_branch, import_region

    for b in ("then_branch", "else_branch"):
        if ctx.attr(b) is None:
            raise ctx.error(f"has no {b}")
    c = ctx.const(0)
    if c is not None:
        if np.asarray(c).size != 1:
            raise ctx.error(f"the condition must hold one value, got shape "
                            f"{list(np.shape(c))}")
        taken = "then_branch" if bool(np.asarray(c).reshape(-1)[0]) else "else_branch"
        outs = import_branch(ctx.s, ctx.attr(taken), ctx.name)
        if len(outs) != len(ctx.node.output):
            raise ctx.error(f"{taken} gives {len(outs)} outputs for {len(ctx.node.output)}")
        return outs
    cond = ctx.input(0)
    if cond.type.dtype != DType.BOOL or cond.type.numel not in (1, None):
        raise ctx.error(f"the condition must be one bool, got {cond.type}")
    fs = [import_region(ctx.s, ctx.attr(b), ctx.name, f"{ctx.name}_{b}", [])
          for b in ("then_branch", "else_branch")]
    (t, e), caps = _share_captures(fs)
    if len(t.outputs) != len(ctx.node.output) or len(e.outputs) != len(ctx.node.output):
        raise ctx.error(f"the branches give {len(t.outputs)} and {len(e.outputs)} outputs for "
                        f"{len(ctx.node.output)}")
    return list(ctx.op_n("if", [cond, *caps], {"then_branch": t, "else_branch": e}))


def _scalar_input(g: onnx.GraphProto, k: int, dt: DType) -> TensorType:
    """The type a loop body declares for its k-th input, a scalar: [] or [1]."""
    tt = g.input[k].type.tensor_type
    rank = len(tt.shape.dim) if tt.HasField("shape") else 0
    return TensorType(dt, (1,) * min(rank, 1))


@converter("Loop", since=1)
def loop_v1(ctx: NodeContext) -> Sequence[Value]:
    from minicc.frontend.onnx_import import import_region

    g = ctx.attr("body")
    if g is None:
        raise ctx.error("has no body")
    inits = [ctx.input(i) for i in range(2, len(ctx.node.input))]
    n = len(inits)
    if len(g.input) != n + 2:
        raise ctx.error(f"the body takes {len(g.input)} inputs; it must take the iteration "
                        f"number, the condition and the {n} loop-carried values")
    if len(g.output) < n + 1:
        raise ctx.error(f"the body gives {len(g.output)} outputs, fewer than the condition and "
                        f"{n} carried values")
    lead = [(g.input[0].name, _scalar_input(g, 0, DType.I64)),
            (g.input[1].name, _scalar_input(g, 1, DType.BOOL))]
    lead += [(vi.name, v.type) for vi, v in zip(g.input[2:], inits)]
    body, caps = import_region(ctx.s, g, ctx.name, f"{ctx.name}_body", lead)
    trips = ctx.opt(0) if ctx.has(0) else ctx.scalar(INT64_MAX, DType.I64)
    cond = ctx.opt(1) if ctx.has(1) else ctx.scalar(True, DType.BOOL)
    m, c = ctx.const(0), ctx.const(1)
    # the exact trip count, where the import can see it: M given as a constant, the condition
    # true and never changed by the body (its result is its input, or a constant true)
    known = -1
    out_cond = body.outputs[0]
    body_c = body.producers.get(out_cond)
    never_false = out_cond is body.inputs[1] or (
        body_c is not None and body_c.kind == "const" and
        bool(np.asarray(body_c.attrs["value"].array).reshape(-1)[0]))
    if m is not None and (c is None and not ctx.has(1) or c is not None and
                          bool(np.asarray(c).reshape(-1)[0])) and never_false:
        known = int(np.asarray(m).reshape(-1)[0])
    if known > 1 << 20:
        known = -1
    outs = ctx.op_n("loop", [trips, cond, *inits, *caps],
                    {"body": body, "n_carried": n, "trips_known": known})
    return list(outs)


@converter("Scan", since=9)
def scan_v9(ctx: NodeContext) -> Sequence[Value]:
    from minicc.frontend.onnx_import import import_region

    g = ctx.attr("body")
    if g is None:
        raise ctx.error("has no body")
    m = int(ctx.req_attr("num_scan_inputs"))
    ins = ctx.inputs()
    ns = len(ins) - m
    if ns < 0 or m < 1:
        raise ctx.error(f"num_scan_inputs={m} with {len(ins)} inputs")
    xs = ins[ns:]

    def axes(key: str, ranks: list[int]) -> list[int]:
        a = list(ctx.attr(key, [0] * len(ranks)))
        if len(a) != len(ranks):
            raise ctx.error(f"{key} has {len(a)} entries for {len(ranks)} values")
        for k, (x, r) in enumerate(zip(a, ranks)):
            if not -r <= x < r:
                raise ctx.error(f"{key}[{k}] = {x} is out of range for rank {r}")
        return [x % r for x, r in zip(a, ranks)]

    in_axes = axes("scan_input_axes", [x.type.rank for x in xs])
    slices = [TensorType(x.type.dtype, x.type.shape[:a] + x.type.shape[a + 1:])
              for x, a in zip(xs, in_axes)]
    if len(g.input) != ns + m:
        raise ctx.error(f"the body takes {len(g.input)} inputs for {ns} states and {m} scan "
                        "inputs")
    lead = [(vi.name, t) for vi, t in zip(g.input, [v.type for v in ins[:ns]] + slices)]
    body, caps = import_region(ctx.s, g, ctx.name, f"{ctx.name}_body", lead)
    ys = body.outputs[ns:]
    out_axes = axes("scan_output_axes", [y.type.rank + 1 for y in ys])
    dirs_in = list(ctx.attr("scan_input_directions", [0] * m))
    dirs_out = list(ctx.attr("scan_output_directions", [0] * len(ys)))
    return list(ctx.op_n("scan", [*ins, *caps], {
        "body": body, "n_states": ns, "n_scan_inputs": m, "scan_input_axes": in_axes,
        "scan_input_directions": dirs_in, "scan_output_axes": out_axes,
        "scan_output_directions": dirs_out}))
