"""From a graph-IR function to a Program: fused groups lowered to kernels in execution order,
every tensor given a place (model input or output, weights blob, arena offset), and the steps
that run them. Codegen renders a Program; it decides nothing the Program did not say.

Expects static shapes (symbolic dims must be bound with input shapes first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from minicc.errors import CodegenError
from minicc.ir.graph import Function, Op, Value
from minicc.ir.loops.nodes import BufLoad, Buffer, For, IfThen, Kernel, Scope, Stmt, Store, walk
from minicc.ir.loops.exprs import flat_offset
from minicc.ir.memory import MemoryPlan, Request, plan_memory
from minicc.ir.passes.fuse import Group, Partition, fuse
from minicc.ir.registry import full_attrs

ALIGN = 64


@dataclass(frozen=True)
class Location:
    """Where a tensor lives: `kind` is 'input' / 'output' (index into the call's arrays),
    'arena' or 'weights' (byte offset into that block)."""

    kind: str
    offset: int

    def __str__(self) -> str:
        return f"{self.kind}[{self.offset}]"


@dataclass
class KernelStep:
    kernel: Kernel
    args: list[Location]           # one per kernel param
    group: Group


@dataclass
class HostStep:
    """An op run on the host with its numpy reference (ops that cannot be compiled)."""

    op: Op
    inputs: list[tuple[Location, str, tuple[int, ...]]]    # location, dtype, shape
    outputs: list[tuple[Location, str, tuple[int, ...]]]


@dataclass
class Program:
    function: Function
    partition: Partition
    steps: list[KernelStep | HostStep]
    inputs: list[tuple[str, str, tuple[int, ...]]]          # name, dtype, shape
    outputs: list[tuple[str, str, tuple[int, ...]]]
    output_sources: list[Location]       # where each output's data is after a run
    weights: bytes
    memory: MemoryPlan
    threads: int
    kernel_count: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def kernels(self) -> list[Kernel]:
        return [s.kernel for s in self.steps if isinstance(s, KernelStep)]

    @property
    def host_ops(self) -> list[Op]:
        return [s.op for s in self.steps if isinstance(s, HostStep)]


Lowerer = Callable[[str, Group, dict[Value, Buffer], dict[Value, np.ndarray], int],
                   tuple[Kernel, dict[int, tuple[Buffer, np.ndarray]]]]


def _check_static(f: Function) -> None:
    for v in list(f.inputs) + [o for op in f.ops for o in op.outputs]:
        if not v.type.is_static:
            raise CodegenError(f"compiling needs static shapes, but %{v.name_hint or '?'} is "
                               f"{v.type}; give input shapes (input_shapes= / --input-shape)")


def build_program(f: Function, lower: Lowerer, threads: int = 1,
                  partition: Partition | None = None, align: int = ALIGN) -> Program:
    """Fuse, lower every group with `lower`, place every tensor, and order the steps.
    `align`: byte alignment of tensors in the arena and the weights blob (64 for CPU cache
    lines, 256 for CUDA)."""
    _check_static(f)
    part = partition or fuse(f)
    consts: dict[Value, np.ndarray] = {op.output: op.attrs["value"].array
                                       for op in f.ops if op.kind == "const"}
    loc: dict[Value, Location] = {}
    for k, v in enumerate(f.inputs):
        loc[v] = Location("input", k)
    # views alias their source; find each value's storage root
    root: dict[Value, Value] = {}
    for g in part.groups:
        if g.is_view:
            src = g.ops[0].inputs[0]
            root[g.output] = root.get(src, src)
    # outputs: the producer of an output's root writes straight into the caller's array
    output_sources: list[Location] = []
    for k, v in enumerate(f.outputs):
        r = root.get(v, v)
        if r in loc or r in consts:   # an input, another output, or a constant: copied after
            output_sources.append(loc[r] if r in loc else Location("const", id(r)))
            continue
        loc[r] = Location("output", k)
        output_sources.append(loc[r])
    # weights blob: every non-scalar constant a kernel reads, plus packed weights from lowering
    blob = bytearray()
    weight_off: dict[int, int] = {}

    def add_weight(key: int, arr: np.ndarray) -> Location:
        if key not in weight_off:
            pad = (-len(blob)) % align
            blob.extend(b"\0" * pad)
            weight_off[key] = len(blob)
            blob.extend(np.ascontiguousarray(arr).tobytes())
        return Location("weights", weight_off[key])

    step_of: dict[Group, int] = {}
    order = [g for g in part.groups if not g.is_view]
    for i, g in enumerate(order):
        step_of[g] = i
    # lifetimes of arena tensors (in step indices), through views
    first: dict[Value, int] = {}
    last: dict[Value, int] = {}
    for g in order:
        s = step_of[g]
        out = root.get(g.output, g.output)
        for o in g.root.outputs:
            first.setdefault(root.get(o, o), s)
        for v in g.inputs():
            r = root.get(v, v)
            last[r] = max(last.get(r, -1), s)
        last.setdefault(out, s)
    bufs: dict[Value, Buffer] = {}

    def buffer_for(v: Value) -> Buffer:
        if v not in bufs:
            name = (v.name_hint or "t").replace("/", "_")
            bufs[v] = Buffer(f"{name}", v.type.dtype, tuple(int(d) for d in v.type.shape))
        return bufs[v]

    steps: list[KernelStep | HostStep] = []
    requests: list[Request] = []
    alias: dict[Value, Value] = {}
    pending_scratch: list[tuple[int, Buffer, int]] = []
    arena_values: set[Value] = set()
    for g in order:
        s = step_of[g]
        for v in g.inputs() + [o for o in g.root.outputs]:
            r = root.get(v, v)
            if r not in loc and r not in consts:
                arena_values.add(r)
        if g.is_host:
            steps.append(HostStep(g.root, [], []))
            continue
        # views inside non-view groups keep their own buffers; give every value a Buffer
        vb = {v: buffer_for(v) for v in g.inputs() + [g.output]}
        name = f"k{s}_{g.root.kind}"
        kernel, packed = lower(name, g, vb, consts, threads)
        args: list[Location] = []
        for b, role in zip(kernel.params, kernel.roles):
            if b.scope == Scope.SCRATCH:
                pending_scratch.append((s, b, len(steps)))
                args.append(Location("scratch", id(b)))
                continue
            if id(b) in packed:
                args.append(add_weight(id(b), packed[id(b)][1]))
                continue
            v = next((v for v, bb in vb.items() if bb is b), None)
            if v is None:
                raise CodegenError(f"kernel {name}: parameter {b.name} is bound to no tensor")
            r = root.get(v, v)
            if r in consts:
                args.append(add_weight(id(r), consts[r]))
            elif r in loc:
                args.append(loc[r])
            else:
                args.append(Location("value", id(r)))
        steps.append(KernelStep(kernel, args, g))
        x = _in_place_input(g, kernel, vb, s, root, last, loc, consts)
        if x is not None:
            alias[root.get(g.output, g.output)] = _resolve(alias, x)
    # arena placement; an in-place output shares its input's slot (and extends its lifetime)
    for v, target in alias.items():
        last[target] = max(last.get(target, 0), last.get(v, first.get(v, 0)))
    for v in arena_values:
        if v in alias:
            continue
        requests.append(Request(f"v{id(v)}", int(v.type.nbytes or 0), first.get(v, 0),
                                max(last.get(v, first.get(v, 0)), first.get(v, 0))))
    for s, b, _ in pending_scratch:
        requests.append(Request(f"s{id(b)}", b.nbytes * threads, s, s))
    plan = plan_memory(requests, align)
    ids = {id(v): v for v in arena_values}

    def slot(vid: int) -> int:
        v = ids[vid]
        return plan.offsets[f"v{id(_resolve(alias, v))}"]
    for st in steps:
        if isinstance(st, KernelStep):
            st.args = [Location("arena", slot(a.offset)) if a.kind == "value"
                       else Location("arena", plan.offsets[f"s{a.offset}"]) if a.kind == "scratch"
                       else a for a in st.args]
    for v in arena_values:
        loc[v] = Location("arena", slot(id(v)))
    # host steps: bind their operands now that every tensor has a place
    for i, st in enumerate(steps):
        if isinstance(st, HostStep):
            op = st.op

            def place(v: Value) -> Location:
                r = root.get(v, v)
                if r in consts:
                    return add_weight(id(r), consts[r])
                return loc[r]
            st.inputs = [(place(v), v.type.dtype.value, tuple(int(d) for d in v.type.shape))
                         for v in op.inputs]
            st.outputs = [(place(v), v.type.dtype.value, tuple(int(d) for d in v.type.shape))
                          for v in op.outputs]
    # constant outputs: put them in the blob
    output_sources = [add_weight(id(next(v for v in consts if id(v) == s.offset)),
                                 consts[next(v for v in consts if id(v) == s.offset)])
                      if s.kind == "const" else s for s in output_sources]
    ins = [(n, v.type.dtype.value, tuple(int(d) for d in v.type.shape))
           for n, v in zip(f.input_names, f.inputs)]
    outs = [(n, v.type.dtype.value, tuple(int(d) for d in v.type.shape))
            for n, v in zip(f.output_names, f.outputs)]
    prog = Program(f, part, steps, ins, outs, output_sources, bytes(blob), plan, threads)
    prog.kernel_count = sum(1 for s in steps if isinstance(s, KernelStep))
    return prog


def _resolve(alias: dict[Value, Value], v: Value) -> Value:
    while v in alias:
        v = alias[v]
    return v


def _in_place_input(g: Group, k: Kernel, vb: dict[Value, Buffer], step: int,
                    root: dict[Value, Value], last: dict[Value, int],
                    loc: dict[Value, Location], consts: dict[Value, np.ndarray]) -> Value | None:
    """An input the kernel may overwrite with its output: same type, dead after this step, in
    the arena, and read only at the element the single store writes (an elementwise epilogue
    such as the residual add of a ResNet block)."""
    out = root.get(g.output, g.output)
    if out in loc or out in consts:
        return None
    out_buf = vb[g.output]
    stores = [s for s in walk(k.body) if isinstance(s, Store) and s.buf is out_buf]
    if len(stores) != 1:
        return None
    st = stores[0]
    for x in g.inputs():
        r = root.get(x, x)
        if r in loc or r in consts or r is out or x.type != g.output.type:
            continue
        if last.get(r) != step or x not in vb:
            continue
        xb = vb[x]
        loads = [ld for s in walk(k.body) for ld in _stmt_loads(s) if ld.buf is xb]
        where = flat_offset(st.index, out_buf.shape)
        if loads and all(flat_offset(ld.index, xb.shape) == where for ld in loads):
            return r
    return None


def _stmt_loads(s: Stmt) -> list[BufLoad]:
    from minicc.ir.loops.lower import _loads

    if isinstance(s, Store):
        return _loads(s.value) + [ld for i in s.index for ld in _loads(i)]
    if isinstance(s, For):
        return _loads(s.extent)
    if isinstance(s, IfThen):
        return _loads(s.cond)
    return []


def host_attrs(op: Op) -> dict[str, Any]:
    """JSON-friendly attributes of a host op (dtypes as names)."""
    out: dict[str, Any] = {}
    for k, v in full_attrs(op.kind, op.attrs).items():
        out[k] = v.value if hasattr(v, "value") and not isinstance(v, (int, float)) else v
        if isinstance(out[k], tuple):
            out[k] = list(out[k])
    return out
