"""From a graph-IR function to a Program: fused groups lowered to kernels in execution order, every
tensor given a place, and the steps that run them. Codegen renders a Program; it decides nothing
the Program did not say. Four small stages, each a function that can be run and tested alone:

    place_tensors   which value owns each tensor's storage (views alias their source), which
                    live in the caller's arrays or the weights, and the lifetimes of the rest
    lower_groups    each group's scheduled kernel (the target's lowering), parameters bound
    plan_arena      in-place outputs, then one arena for every other tensor (ir/memory.py)
    bind_steps      the weights blob, and every kernel argument and host operand as a resolved
                    Location (minicc.abi)

Expects static shapes (symbolic dims must be bound with input shapes first).
"""

from __future__ import annotations

import hashlib

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Union

import numpy as np

from minicc.abi import HostCall, Location, LocKind, TensorRef
from minicc.errors import CodegenError, ScheduleError
from minicc.ir.graph import Function, Op, Value
from minicc.ir.loops.exprs import expr_loads, flat_offset, loads_in
from minicc.ir.loops.nodes import Buffer, Kernel, Scope, Store, walk
from minicc.ir.loops.schedule import LowerCtx, Lowered
from minicc.ir.loops.storage import store_half
from minicc import resources
from minicc.ir.memory import MemoryPlan, Request, plan_memory
from minicc.ir.passes.fuse import Group, Partition, fuse
from minicc.ir.registry import full_attrs
from minicc.ir.types import DType
from minicc.options import CompileOptions, Target

Lowerer = Callable[[LowerCtx], Lowered]


@dataclass
class KernelStep:
    kernel: Kernel
    args: tuple[Location, ...]      # one per kernel parameter
    group: Group
    nest: Kernel | None = None      # the loop nest before scheduling (kept for dumps)
    ctx: LowerCtx | None = None     # what it was scheduled from (the tuner reschedules it)
    origin: str = "default"         # where its schedule came from: default, text, log


Step = Union[KernelStep, HostCall]


@dataclass
class Program:
    function: Function
    partition: Partition
    steps: list[Step]
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]      # name, dtype, shape
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    output_sources: tuple[Location, ...]      # where each output's data is after a run
    weights: bytes
    memory: MemoryPlan
    threads: int
    target: Target
    notes: list[str] = field(default_factory=list)

    @property
    def kernel_steps(self) -> list[KernelStep]:
        return [s for s in self.steps if isinstance(s, KernelStep)]

    @property
    def kernels(self) -> list[Kernel]:
        return [s.kernel for s in self.kernel_steps]

    @property
    def host_ops(self) -> list[str]:
        return [s.op for s in self.steps if isinstance(s, HostCall)]


# ---- stage 1: places ------------------------------------------------------------------------

@dataclass
class Places:
    """Where tensors live before the arena is planned. Keys are storage values: a view's value
    maps to its source's through `storage`."""

    function: Function
    partition: Partition
    root: dict[Value, Value]            # a view's value -> the value owning its storage
    fixed: dict[Value, Location]        # storage in the caller's input and output arrays
    consts: dict[Value, np.ndarray]
    order: list[Group]                  # the groups that run (no views), in order
    first: dict[Value, int]             # step that produces each storage value
    last: dict[Value, int]              # last step that reads it
    arena: list[Value]                  # storage values the arena holds, in first-use order
    outputs: list[Value]                # storage of each function output
    # a concat's input computed straight into its slice of the output: value -> (the concat's
    # output, byte offset); the concat runs no kernel
    sub: dict[Value, tuple[Value, int]] = field(default_factory=dict)

    def storage(self, v: Value) -> Value:
        return self.root.get(v, v)

    def sub_offset(self, v: Value) -> tuple[Value, int]:
        """(the arena value holding `v`'s bytes, the offset in it) for a concat's input."""
        off = 0
        while v in self.sub:
            v, o = self.sub[v]
            off += o
        return v, off


def place_tensors(f: Function, part: Partition, align: int = 64) -> Places:
    """Stage 1: views alias their source; an output's producer writes straight into the
    caller's array (unless the output is an input, another output or a constant, copied after
    the run); a concat's inputs are computed into their slices of its output where they can be
    (see concat_slices); everything else that crosses kernels goes to the arena."""
    consts = {op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"}
    root: dict[Value, Value] = {}
    for g in part.groups:
        if g.is_view:
            src = g.ops[0].inputs[0]
            root[g.output] = root.get(src, src)
    fixed = {v: Location(LocKind.INPUT, k) for k, v in enumerate(f.inputs)}
    outputs = [root.get(v, v) for v in f.outputs]
    for k, r in enumerate(outputs):
        if r not in fixed and r not in consts:
            fixed[r] = Location(LocKind.OUTPUT, k)
    sub, gone = concat_slices(f, part, root, fixed, consts, align)
    order = [g for g in part.groups if not g.is_view and g.id not in gone]
    first: dict[Value, int] = {}
    last: dict[Value, int] = {}
    arena: list[Value] = []
    in_arena: set[Value] = set()
    for s, g in enumerate(order):
        for v in g.inputs():
            r = root.get(v, v)
            last[r] = max(last.get(r, -1), s)
        for o in g.root.outputs:
            r = root.get(o, o)
            first.setdefault(r, s)
            while r in sub:              # the concat's output lives from its first slice on
                r = sub[r][0]
                first.setdefault(r, s)
        last.setdefault(root.get(g.output, g.output), s)
        for v in g.inputs() + list(g.root.outputs):
            r = root.get(v, v)
            while r in sub:
                r = sub[r][0]
            if r not in fixed and r not in consts and r not in in_arena:
                in_arena.add(r)
                arena.append(r)
    return Places(f, part, root, fixed, consts, order, first, last, arena, outputs, sub)


def kernelless_groups(f: Function, part: Partition, align: int) -> set[int]:
    """The ids of the groups that run no kernel for being such concats (for tools that name
    kernels as the compiler does)."""
    pl = place_tensors(f, part, align)
    kept = {g.id for g in pl.order}
    return {g.id for g in part.groups if not g.is_view and g.id not in kept}


def concat_slices(f: Function, part: Partition, root: dict[Value, Value],
                   fixed: dict[Value, Location], consts: dict[Value, np.ndarray], align: int
                   ) -> tuple[dict[Value, tuple[Value, int]], set[int]]:
    """Concats that need no kernel: along an axis with only 1s before it (each input is one
    contiguous run of the output), of inputs that a kernel produces for this concat alone (not
    views, constants, inputs or outputs of the function), each slice at an `align`-ed offset.
    Their producers write straight into the output's slices, as onnxruntime's and TensorRT's
    concat elimination do: squeezenet's fire modules, inception's branches, a C2f block's
    splits. Returns each input's (output, byte offset) and the ids of the groups that go."""
    users = f.users
    made = {o: g for g in part.groups for o in g.root.outputs}
    sub: dict[Value, tuple[Value, int]] = {}
    gone: set[int] = set()
    for g in part.groups:
        if len(g.ops) != 1 or g.root.kind != "concat":
            continue
        cat, y = g.root, g.output
        shape = y.type.shape
        axis = full_attrs("concat", cat.attrs)["axis"] % len(shape)
        if y in fixed or root.get(y, y) is not y or any(d != 1 for d in shape[:axis]) or \
                len(set(cat.inputs)) != len(cat.inputs):
            continue
        ok, offs, off = True, [], 0
        for x in cat.inputs:
            p = made.get(x)
            if p is None or p.is_view or x in fixed or x in consts or root.get(x, x) is not x \
                    or users.get(x, []) != [cat] or x in sub or off % align or \
                    x.type.dtype != y.type.dtype:
                ok = False
                break
            offs.append(off)
            off += int(x.type.nbytes or 0)
        if ok:
            for x, o in zip(cat.inputs, offs):
                sub[x] = (y, o)
            gone.add(g.id)
    return sub, gone


# ---- stage 2: lowering ----------------------------------------------------------------------

@dataclass
class LoweredGroup:
    """A group's kernel with each parameter bound: to a tensor (its graph value), to a weight
    packed at compile time (the array), or to per-thread scratch (None)."""

    group: Group
    lowered: Lowered
    binds: list[Value | np.ndarray | None]
    ctx: LowerCtx | None = None

    @property
    def kernel(self) -> Kernel:
        return self.lowered.kernel


def _buffer(v: Value) -> Buffer:
    name = "".join(c if c.isalnum() or c in "_." else "_" for c in (v.name_hint or "t"))
    return Buffer(name, v.type.dtype, tuple(int(d) for d in v.type.shape))


def lower_groups(places: Places, lower: Lowerer, target: Target, opts: CompileOptions,
                 on_kernel: Callable[[Kernel], Any] | None = None
                 ) -> list[LoweredGroup | Group]:
    """Stage 2: every group that runs becomes a kernel through the target's lowering (each
    handed to `on_kernel` as it is made: code generation starts on it); host groups stay
    groups (they run an op's numpy reference)."""
    bufs: dict[Value, Buffer] = {}
    out: list[LoweredGroup | Group] = []
    for s, g in enumerate(places.order):
        if g.is_host:
            out.append(g)
            continue
        vb = {v: bufs.setdefault(v, _buffer(v)) for v in g.inputs() + [g.output]}
        ctx = LowerCtx(f"k{s}_{g.root.kind}", g, vb, places.consts, target, opts)
        low = lower(ctx)
        by_buf = {b: v for v, b in vb.items()}
        binds: list[Value | np.ndarray | None] = []
        for b in low.kernel.params:
            if b.workspace:
                binds.append(None)
            elif b in low.packed:
                binds.append(low.packed[b])
            elif b in by_buf:
                binds.append(by_buf[b])
            else:
                raise CodegenError(f"kernel {ctx.name}: parameter {b.name} is bound to no "
                                   "tensor")
        out.append(LoweredGroup(g, low, binds, ctx))
        if on_kernel is not None:
            on_kernel(low.kernel)
    _check_schedules_used(opts, [st.kernel.name for st in out if isinstance(st, LoweredGroup)])
    return out


def _check_schedules_used(opts: CompileOptions, names: list[str]) -> None:
    unknown = sorted(set(opts.schedules or {}) - set(names))
    if unknown:
        more = " ..." if len(names) > 12 else ""
        raise ScheduleError(f"schedules given for no kernel named {', '.join(map(repr, unknown))}"
                            f" (kernels: {', '.join(names[:12])}{more})")


# ---- stage 2b: storage precision (--precision fp16) -----------------------------------------

def half_storage(places: Places, steps: list[LoweredGroup | Group]
                 ) -> tuple[Places, list[LoweredGroup | Group], set[Value]]:
    """Every f32 tensor that crosses kernels in the arena, and every f32 weight (constants and
    packed panels), is stored as f16; the kernels widen on load and narrow on store. The
    caller's inputs and outputs, per-thread scratch, and anything a host op touches keep f32."""
    host = {places.storage(v) for st in steps if isinstance(st, Group)
            for v in st.inputs() + list(st.root.outputs)}

    family = set(places.sub) | {y for y, _ in places.sub.values()}   # (offsets in f32 bytes)

    def eligible(v: Value) -> bool:
        r = places.storage(v)
        return v.type.dtype == DType.F32 and r not in places.fixed and r not in host and \
            r not in family

    half: set[Value] = set()
    out: list[LoweredGroup | Group] = []
    for st in steps:
        if isinstance(st, Group):
            out.append(st)
            continue
        which = set()
        for b, bind in zip(st.kernel.params, st.binds):
            if b.workspace or b.dtype != DType.F32:
                continue
            if isinstance(bind, Value) and eligible(bind):
                which.add(b)
                half.add(places.storage(bind))
            elif isinstance(bind, np.ndarray):
                which.add(b)
        k, new = store_half(st.kernel, which)
        binds = [bd.astype(np.float16) if isinstance(bd, np.ndarray) and p in new else bd
                 for p, bd in zip(st.kernel.params, st.binds)]
        packed = {new.get(b, b): a.astype(np.float16) if b in new else a
                  for b, a in st.lowered.packed.items()}
        out.append(LoweredGroup(st.group, replace(st.lowered, kernel=k, packed=packed), binds,
                                st.ctx))
    consts = {v: a.astype(np.float16) if v in half else a for v, a in places.consts.items()}
    return replace(places, consts=consts), out, half


# ---- stage 3: the arena ---------------------------------------------------------------------

@dataclass
class Arena:
    plan: MemoryPlan
    offset: dict[Value, int]                 # every arena storage value (in-place ones shared)
    scratch: dict[tuple[int, int], int]      # (step, parameter index) -> offset


def plan_arena(places: Places, steps: list[LoweredGroup | Group], threads: int,
               align: int, half: set[Value] | frozenset[Value] = frozenset()) -> Arena:
    """Stage 3: an elementwise epilogue may write over an input that dies with it (in place);
    every other arena value and every kernel's scratch gets a slot from `plan_memory`."""
    alias: dict[Value, Value] = {}
    last = dict(places.last)
    for s, st in enumerate(steps):
        if isinstance(st, LoweredGroup):
            x = in_place_input(places, st, s)
            if x is not None:
                alias[places.storage(st.group.output)] = _resolve(alias, x)
    for v, into in alias.items():
        last[into] = max(last.get(into, 0), last.get(v, places.first.get(v, 0)))
    names = {v: f"t{i}" for i, v in enumerate(places.arena)}
    reqs = [Request(names[v], int(v.type.nbytes or 0) // (2 if v in half else 1),
                    places.first.get(v, 0),
                    max(last.get(v, places.first.get(v, 0)), places.first.get(v, 0)))
            for v in places.arena if v not in alias]
    scratch_names: dict[tuple[int, int], str] = {}
    for s, st in enumerate(steps):
        if isinstance(st, LoweredGroup):
            for i, (b, bind) in enumerate(zip(st.kernel.params, st.binds)):
                if b.workspace:    # (SHARED: one copy)
                    scratch_names[(s, i)] = f"s{s}.{i}"
                    n = b.slice_nbytes * (threads if b.scope == Scope.SCRATCH else 1)
                    reqs.append(Request(f"s{s}.{i}", n, s, s))
    plan = plan_memory(reqs, align)
    offset = {v: plan.offsets[names[_resolve(alias, v)]] for v in places.arena}
    return Arena(plan, offset, {k: plan.offsets[n] for k, n in scratch_names.items()})


def _resolve(alias: dict[Value, Value], v: Value) -> Value:
    while v in alias:
        v = alias[v]
    return v


def in_place_input(places: Places, st: LoweredGroup, step: int) -> Value | None:
    """An input the kernel may overwrite with its output: same type, dead after this step, in
    the arena, and read only at the element the store writes (an elementwise epilogue such as
    the residual add of a ResNet block). Several stores (a GEMM's whole and masked last tile)
    qualify when all write that element and each reads the input there: a store that does not
    (a partial sum over K) would overwrite the input before the epilogue reads it."""
    g, k = st.group, st.kernel
    out = places.storage(g.output)
    if out in places.fixed or out in places.consts or out in places.sub:
        return None
    buf_of = {v: b for b, v in zip(k.params, st.binds) if isinstance(v, Value)}
    out_buf = buf_of.get(g.output)
    stores = [s for s in walk(k.body) if isinstance(s, Store) and s.buf is out_buf]
    if out_buf is None or not stores:
        return None
    where = flat_offset(stores[0].index, out_buf.shape)
    if any(flat_offset(s.index, out_buf.shape) != where for s in stores[1:]):
        return None
    for x in g.inputs():
        r = places.storage(x)
        xb = buf_of.get(x)
        if r in places.fixed or r in places.consts or r is out or x.type != g.output.type \
                or r in places.sub \
                or places.last.get(r) != step or xb is None or xb.dtype != out_buf.dtype:
            continue
        loads = [ld for s in walk(k.body) for ld in loads_in(s) if ld.buf is xb]
        if len(stores) > 1 and not all(any(ld.buf is xb for ld in expr_loads(s.value))
                                       for s in stores):
            continue
        if loads and all(flat_offset(ld.index, xb.shape) == where for ld in loads):
            return r
    return None


# ---- stage 4: locations ---------------------------------------------------------------------

class WeightsBlob:
    """The weights block: constants and packed weights, each aligned, each stored once:
    constants by identity (the graph passes already merged equal ones), packed panels by
    content too. Every step of an unrolled LSTM packs the same recurrent matrix for its own
    kernel, and 316 copies of it (90 MB for crnn_like, whose ONNX file is 8.5 MB) made each
    step read its weights from memory."""

    def __init__(self, align: int):
        self.align = align
        self.size = 0
        # the arrays themselves, joined once by data(): copying each into a growing bytearray
        # and that into bytes made three copies of light_resnet50's 52 MB, and every fresh
        # page costs (on a VM, up to 30 us each)
        self._chunks: list[Any] = []
        self._at: dict[Value | Buffer, int] = {}     # both are hashed by identity
        self._by_content: dict[tuple[str, tuple[int, ...], bytes], tuple[int, np.ndarray]] = {}

    def add(self, key: Value | Buffer, arr: np.ndarray) -> Location:
        if key not in self._at:
            c = np.ascontiguousarray(arr)
            at = None
            if isinstance(key, Buffer):     # a packed panel: hashing every constant would
                ck = (c.dtype.str, tuple(c.shape),           # cost the big models time
                      hashlib.blake2b(c.tobytes() if c.dtype.hasobject else
                                      c.reshape(-1).view(np.uint8), digest_size=16).digest())
                seen = self._by_content.get(ck)
                if seen is not None and np.array_equal(seen[1], c):
                    at = seen[0]
            if at is None:
                pad = -self.size % self.align
                if pad:
                    self._chunks.append(bytes(pad))
                at = self.size = self.size + pad
                self._chunks.append(c.tobytes() if c.dtype.hasobject else
                                    c.reshape(-1).view(np.uint8))
                self.size += c.nbytes
                if isinstance(key, Buffer):
                    self._by_content[ck] = (at, c)
            self._at[key] = at
        return Location(LocKind.WEIGHTS, self._at[key])

    def data(self) -> bytes:
        """The block: every array at its offset."""
        return b"".join(self._chunks)


def bind_steps(places: Places, steps: list[LoweredGroup | Group], arena: Arena,
               blob: WeightsBlob) -> tuple[list[Step], tuple[Location, ...]]:
    """Stage 4: the Location of every kernel argument, host operand and output."""
    def where(v: Value) -> Location:
        r = places.storage(v)
        if r in places.consts:
            return blob.add(r, places.consts[r])
        if r in places.fixed:
            return places.fixed[r]
        if r in places.sub:
            y, off = places.sub_offset(r)
            return Location(LocKind.ARENA, arena.offset[y] + off)
        return Location(LocKind.ARENA, arena.offset[r])

    out: list[Step] = []
    for s, st in enumerate(steps):
        if isinstance(st, Group):
            out.append(host_call(st.root, where))
            continue
        args = []
        for i, bind in enumerate(st.binds):
            if bind is None:
                args.append(Location(LocKind.ARENA, arena.scratch[(s, i)]))
            elif isinstance(bind, Value):
                args.append(where(bind))
            else:
                args.append(blob.add(st.kernel.params[i], bind))
        out.append(KernelStep(st.kernel, tuple(args), st.group, st.lowered.nest, st.ctx,
                              st.lowered.origin))
    return out, tuple(where(v) for v in places.function.outputs)


def host_call(op: Op, where: Callable[[Value], Location]) -> HostCall:
    def ref(v: Value) -> TensorRef:
        return TensorRef(where(v), v.type.dtype.value, tuple(int(d) for d in v.type.shape))
    return HostCall(op.kind, host_attrs(op), tuple(ref(v) for v in op.inputs),
                    tuple(ref(v) for v in op.outputs))


def host_attrs(op: Op) -> dict[str, Any]:
    """JSON-friendly attributes of a host op (dtypes as names)."""
    out: dict[str, Any] = {}
    for k, v in full_attrs(op.kind, op.attrs).items():
        out[k] = v.value if hasattr(v, "value") and not isinstance(v, (int, float)) else v
        if isinstance(out[k], tuple):
            out[k] = list(out[k])
    return out


# ---- the stages together --------------------------------------------------------------------

def check_static(f: Function, what: str = "compiling") -> None:
    for v in list(f.inputs) + [o for op in f.ops for o in op.outputs]:
        if not v.type.is_static:
            raise CodegenError(f"{what} needs static shapes, but %{v.name_hint or '?'} is "
                               f"{v.type}; give input shapes (input_shapes= / --input-shape)")


def _signature(names: list[str], values: tuple[Value, ...]
               ) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    return tuple((n, v.type.dtype.value, tuple(int(d) for d in v.type.shape))
                 for n, v in zip(names, values))


def _check_budget(plan: MemoryPlan, places: Places, opts: CompileOptions) -> None:
    """Refuse, before the weights blob is built or any arena allocated, a program whose arena
    plus weights exceed the memory budget; the error names the largest arena buffers."""
    weights = sum(a.nbytes for a in places.consts.values())
    total = plan.arena_bytes + weights
    if total <= resources.budget(opts.memory_budget):
        return
    label = {f"t{i}": f"%{v.name_hint or f't{i}'}" for i, v in enumerate(places.arena)}
    big = sorted(plan.requests, key=lambda r: -r.nbytes)[:3]
    names = ", ".join(f"{label.get(r.name, 'scratch ' + r.name)} "
                      f"{resources.format_bytes(r.nbytes)}" for r in big)
    resources.check(total, f"the compiled model (arena {resources.format_bytes(plan.arena_bytes)}"
                    f", largest: {names}; weights {resources.format_bytes(weights)})",
                    opts.memory_budget)


def build_program(f: Function, lower: Lowerer, target: Target, opts: CompileOptions,
                  partition: Partition | None = None,
                  on_kernel: Callable[[Kernel], Any] | None = None) -> Program:
    """Fuse, then run the four stages, for `opts.threads` threads. Tensors in the arena and the
    weights blob are aligned to `target.align` bytes (64: CPU cache lines; 256: CUDA).
    `on_kernel` sees each kernel as it is lowered (not with fp16 storage, which rewrites them
    afterwards)."""
    check_static(f)
    threads = opts.threads or 1
    part = partition or fuse(f)
    places = place_tensors(f, part, target.align)
    lowered = lower_groups(places, lower, target, opts,
                           on_kernel if opts.precision != "fp16" else None)
    half: set[Value] = set()
    if opts.precision == "fp16":
        places, lowered, half = half_storage(places, lowered)
    arena = plan_arena(places, lowered, threads, target.align, half)
    _check_budget(arena.plan, places, opts)
    blob = WeightsBlob(target.align)
    steps, sources = bind_steps(places, lowered, arena, blob)
    notes = [st.lowered.note for st in lowered if isinstance(st, LoweredGroup) and st.lowered.note]
    return Program(f, part, steps, _signature(f.input_names, f.inputs),
                   _signature(f.output_names, f.outputs), sources, blob.data(), arena.plan,
                   threads, target, notes)
