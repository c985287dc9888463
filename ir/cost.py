"""FLOPs, parameters and bytes moved, per op and per fused kernel, from the op registry's cost
functions: what `minicc analyze` prints and what the profiler puts on the roofline.

A multiply-add counts 2 FLOPs. An op reads its inputs (weights included) and writes its outputs;
a kernel reads the tensors that enter its group and writes the one that leaves it, so fused
intermediates are not counted. Arithmetic intensity is FLOPs per byte moved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.fuse import Group, Partition
from minicc.ir.registry import full_attrs, get_op


@dataclass(frozen=True)
class Cost:
    flops: int = 0
    params: int = 0          # weight elements (constants read)
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0

    def __add__(self, o: Cost) -> Cost:
        return Cost(self.flops + o.flops, self.params + o.params,
                    self.bytes_read + o.bytes_read, self.bytes_written + o.bytes_written)


def _nbytes(vs: Iterable[Value]) -> int:
    return sum(int(v.type.nbytes or 0) for v in vs)


def op_flops(op: Op) -> int:
    d = get_op(op.kind)
    return int(d.cost([v.type for v in op.inputs], [v.type for v in op.outputs],
                      full_attrs(op.kind, op.attrs)).flops)


def op_cost(op: Op, consts: set[Value]) -> Cost:
    ins = [v for v in op.inputs]
    return Cost(op_flops(op), sum(int(v.type.numel or 0) for v in ins if v in consts),
                _nbytes(ins), _nbytes(op.outputs))


def group_cost(g: Group, consts: set[Value]) -> Cost:
    ins = g.inputs()
    return Cost(sum(op_flops(op) for op in g.ops),
                sum(int(v.type.numel or 0) for v in ins if v in consts), _nbytes(ins),
                _nbytes(g.root.outputs))


@dataclass
class Row:
    name: str
    what: str                # op kinds
    shape: str               # the output type
    cost: Cost

    def as_dict(self) -> dict[str, Any]:
        c = self.cost
        return {"name": self.name, "ops": self.what, "output": self.shape, **asdict(c),
                "intensity": round(c.intensity, 4)}


@dataclass
class Analysis:
    ops: list[Row] = field(default_factory=list)
    kernels: list[Row] = field(default_factory=list)
    host: list[Row] = field(default_factory=list)     # groups that run on the host

    @property
    def total(self) -> Cost:
        return sum((r.cost for r in self.ops), Cost())

    def flops_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.ops:
            out[r.what] = out.get(r.what, 0) + r.cost.flops
        return out

    def as_dict(self) -> dict[str, Any]:
        t = self.total
        kt = sum((r.cost for r in self.kernels + self.host), Cost())
        return {"ops": [r.as_dict() for r in self.ops],
                "kernels": [r.as_dict() for r in self.kernels],
                "host": [r.as_dict() for r in self.host],
                "total": {**asdict(t), "intensity": round(t.intensity, 4)},
                "kernel_total": {**asdict(kt), "intensity": round(kt.intensity, 4)},
                "flops_by_kind": self.flops_by_kind()}


def analyze(f: Function, part: Partition, align: int = 64) -> Analysis:
    """Every op (constants excepted) and every group of the partition that runs (views and
    the concats whose inputs are computed into their slices excepted, for arena alignment
    `align`; kernels are named as the compiler names them)."""
    from minicc.ir.program import kernelless_groups

    gone = kernelless_groups(f, part, align)
    consts = {op.output for op in f.ops if op.kind == "const"}
    a = Analysis()
    for op in f.ops:
        if op.kind != "const":
            a.ops.append(Row(op.outputs[0].name_hint or "?", op.kind, str(op.outputs[0].type),
                             op_cost(op, consts)))
    step = 0
    for g in part.groups:
        if g.is_view or g.id in gone:
            continue
        row = Row(f"k{step}_{g.root.kind}", "+".join(op.kind for op in g.ops),
                  str(g.output.type), group_cost(g, consts))
        (a.host if g.is_host else a.kernels).append(row)
        step += 1
    return a


def _si(x: float, unit: str) -> str:
    for k, p in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= p:
            return f"{x / p:.2f} {k}{unit}"
    return f"{x:.0f} {unit}"


def format_analysis(a: Analysis, ops: bool = True) -> str:
    """The tables `minicc analyze` prints."""
    def table(title: str, rows: list[Row]) -> list[str]:
        out = [title, f"  {'name':24} {'ops':28} {'FLOPs':>12} {'params':>10} {'read':>11} "
                      f"{'written':>11} {'FLOP/B':>7}"]
        for r in rows:
            c = r.cost
            out.append(f"  {r.name[:24]:24} {r.what[:28]:28} {_si(c.flops, 'FLOP'):>12} "
                       f"{_si(c.params, ''):>10} {_si(c.bytes_read, 'B'):>11} "
                       f"{_si(c.bytes_written, 'B'):>11} {c.intensity:7.2f}")
        return out
    lines: list[str] = []
    if ops:
        lines += table(f"ops ({len(a.ops)}):", a.ops) + [""]
    lines += table(f"kernels ({len(a.kernels)}):", a.kernels)
    if a.host:
        lines += [""] + table(f"host ops ({len(a.host)}):", a.host)
    t = a.total
    kt = sum((r.cost for r in a.kernels + a.host), Cost())
    macs = a.flops_by_kind()
    big = ", ".join(f"{k} {_si(v, 'FLOP')}" for k, v in sorted(macs.items(), key=lambda kv: -kv[1])
                    [:4] if v)
    lines += ["", f"total: {_si(t.flops, 'FLOP')} ({t.flops / 2e9:.3f} GMAC-equivalent), "
              f"{_si(t.params, '')} parameters; per op {_si(t.bytes, 'B')} moved; fused into "
              f"{len(a.kernels)} kernels {_si(kt.bytes, 'B')} moved, intensity "
              f"{kt.intensity:.2f} FLOP/B", f"by op kind: {big}"]
    return "\n".join(lines) + "\n"
