"""Operator fusion: partition a function into groups, each of which becomes one kernel.

TVM's op-pattern lattice decides legality: injective chains fuse; a complex op (conv, matmul)
takes its elementwise epilogue (bias, folded BN, activation, residual add); a reduction absorbs
its injective producers and takes an elementwise epilogue. A producer joins its consumer only when
the consumer is its single user (the group stays a tree with one output, so fused intermediates
never reach memory). Every refusal is recorded with its reason (`--explain-fusion`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minicc.ir.graph import Function, Op, Value
from minicc.ir.registry import FusionKind, get_op

ELEMWISE_LIKE = (FusionKind.ELEMWISE, FusionKind.BROADCAST)


@dataclass(eq=False)
class Group:
    """Ops fused into one kernel; `ops` in definition order, the last one is the root."""

    id: int
    ops: list[Op]
    anchor: Op | None = None           # the complex op (conv, matmul), if any

    @property
    def root(self) -> Op:
        return self.ops[-1]

    @property
    def output(self) -> Value:
        return self.root.outputs[0]

    @property
    def kind(self) -> FusionKind:
        return max(get_op(op.kind).kind for op in self.ops)

    @property
    def is_view(self) -> bool:
        """Only ops the registry calls views (reshape): an alias of its input, not a kernel."""
        return all(get_op(op.kind).view for op in self.ops)

    @property
    def is_host(self) -> bool:
        """Runs on the host with the numpy reference (ops the registry marks `host`)."""
        return any(get_op(op.kind).host for op in self.ops)

    def inputs(self) -> list[Value]:
        inside = {v for op in self.ops for v in op.outputs}
        seen: list[Value] = []
        for op in self.ops:
            for v in op.inputs:
                if v not in inside and v not in seen:
                    seen.append(v)
        return seen

    def describe(self) -> str:
        names = "+".join(op.kind for op in self.ops)
        return f"group {self.id} [{self.kind.name.lower()}] {names}"


@dataclass
class Refusal:
    reason: str
    producer: str
    consumer: str

    def __str__(self) -> str:
        return f"not fused: {self.producer} -> {self.consumer}: {self.reason}"


@dataclass
class Partition:
    function: Function
    groups: list[Group]
    refusals: list[Refusal] = field(default_factory=list)

    def group_of(self) -> dict[Value, Group]:
        return {v: g for g in self.groups for op in g.ops for v in op.outputs}


def _name(op: Op) -> str:
    return f"{op.kind} %{op.outputs[0].name_hint or '?'}"


def can_fuse(g: Group, consumer: Op, f: Function) -> str | None:
    """None if `consumer` may join producer group `g`, else the reason it may not."""
    ck = get_op(consumer.kind).kind
    gk = g.kind
    if get_op(consumer.kind).host or g.is_host:
        return "runs on the host"
    if ck == FusionKind.OPAQUE or gk == FusionKind.OPAQUE:
        return "opaque op"
    if len(g.root.outputs) != 1 or len(consumer.outputs) != 1:
        return "multi-output op"
    if g.is_view and ck != FusionKind.OPAQUE and len(g.ops) == 1 and ck >= FusionKind.COMPLEX:
        return "a reshape before a complex op stays a view"
    out_n, in_n = consumer.outputs[0].type.numel, g.output.type.numel
    if gk == FusionKind.COMPLEX:
        if ck not in ELEMWISE_LIKE:
            return "only elementwise epilogues fuse into a complex op"
        if consumer.outputs[0].type.shape != g.output.type.shape:
            return "the epilogue would change the complex op's output shape"
        return None
    if ck == FusionKind.COMPLEX:
        return "complex ops start their own kernel"
    if gk == FusionKind.REDUCE and ck == FusionKind.REDUCE:
        return "one reduction per kernel"
    if gk == FusionKind.REDUCE and ck > FusionKind.BROADCAST:
        return "only elementwise epilogues follow a reduction"
    if gk <= FusionKind.INJECTIVE and out_n is not None and in_n is not None and out_n > in_n \
            and ck != FusionKind.REDUCE and not _cheap(g):
        return "would recompute a broadcast producer"
    return None


def _cheap(g: Group) -> bool:
    return len(g.ops) <= 2 and all(get_op(op.kind).kind <= FusionKind.INJECTIVE
                                   for op in g.ops)


def fuse(f: Function) -> Partition:
    """Greedy fusion in definition order (see the module docstring for the rules)."""
    users = f.users
    outputs = set(f.outputs)
    group_of: dict[Op, Group] = {}
    groups: list[Group] = []
    refusals: list[Refusal] = []
    producers = f.producers
    order = _order(f)           # once: per merge it was quadratic (crnn_like's 29k ops: 3.5 s)
    for op in f.ops:
        if op.kind == "const":
            continue
        merge: list[Group] = []
        for v in op.inputs:
            p = producers.get(v)
            if p is None or p.kind == "const":
                continue
            g = group_of[p]
            if g in merge:
                continue
            if v is not g.output:
                continue
            if len(users.get(v, [])) != 1 or v in outputs:
                if get_op(op.kind).kind != FusionKind.OPAQUE:
                    refusals.append(Refusal("the value has several users", _name(g.root),
                                            _name(op)))
                continue
            why = can_fuse(g, op, f)
            if why is None and any(m.kind == FusionKind.COMPLEX for m in merge) \
                    and g.kind == FusionKind.COMPLEX:
                why = "one complex op per kernel"
            if why is None and any(m.kind == FusionKind.REDUCE for m in merge) \
                    and g.kind == FusionKind.REDUCE:
                why = "one reduction per kernel"
            if why is not None:
                refusals.append(Refusal(why, _name(g.root), _name(op)))
                continue
            merge.append(g)
        merge += _diamonds(op, merge, group_of, users, producers, outputs, f, refusals)
        if merge:
            ops = sorted((o for m in merge for o in m.ops), key=order) + [op]
            anchor = next((m.anchor for m in merge if m.anchor is not None), None)
            g = Group(min(m.id for m in merge), ops, anchor)
            for m in merge:
                groups.remove(m)
        else:
            g = Group(len(groups) + len(group_of), [op],
                      op if get_op(op.kind).kind == FusionKind.COMPLEX else None)
        for o in g.ops:
            group_of[o] = g
        groups.append(g)
    groups.sort(key=lambda g: order(g.root))
    for i, g in enumerate(groups):
        g.id = i
    return Partition(f, groups, refusals)


def _diamonds(op: Op, merge: list[Group], group_of: dict[Op, Group],
              users: dict[Value, list[Op]], producers: dict[Value, Op], outputs: set[Value],
              f: Function, refusals: list[Refusal]) -> list[Group]:
    """Producers refused for having several users, taken after all when every user is `op` or
    in a group joining it, all elementwise on the same shape: SiLU after a conv, x * sigmoid(x),
    reads x twice inside one kernel instead of writing it out for a second kernel."""
    out: list[Group] = []
    for v in op.inputs:
        p = producers.get(v)
        if p is None or p.kind == "const" or v in outputs:
            continue
        g = group_of[p]
        if g in merge or g in out or v is not g.output or len(users.get(v, [])) < 2:
            continue
        joining = [m for m in merge if any(group_of.get(u) is m for u in users[v])]
        if not all(u is op or any(group_of.get(u) is m for m in merge) for u in users[v]):
            continue
        if not all(m.kind in ELEMWISE_LIKE and m.output.type.shape == g.output.type.shape
                   for m in joining):
            continue
        if get_op(op.kind).kind not in ELEMWISE_LIKE or can_fuse(g, op, f) is not None:
            continue
        if g.kind == FusionKind.COMPLEX and any(m.kind == FusionKind.COMPLEX for m in merge):
            continue
        if any(m.kind == FusionKind.COMPLEX for m in merge) and g.kind == FusionKind.COMPLEX:
            continue
        out.append(g)
        refusals[:] = [r for r in refusals if not (r.producer == _name(g.root) and
                                                   r.reason == "the value has several users")]
    return out


def _order(f: Function):  # type: ignore[no-untyped-def]
    pos = {id(op): i for i, op in enumerate(f.ops)}
    return lambda op: pos[id(op)]


def format_partition(p: Partition, explain: bool = False) -> str:
    """The groups (and with `explain`, every refusal), as printed by --dump-ir fusion."""
    lines = [f"// {len(p.groups)} groups for {sum(1 for o in p.function.ops if o.kind != 'const')}"
             f" ops"]
    for g in p.groups:
        tag = " (view)" if g.is_view else " (host)" if g.is_host else ""
        lines.append(f"{g.describe()}{tag} -> %{g.output.name_hint or '?'} : {g.output.type}")
    if explain:
        lines.append("")
        lines += [str(r) for r in p.refusals]
    return "\n".join(lines) + "\n"
