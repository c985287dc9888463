"""Print the graph IR as text (the grammar is in `ir/parser.py` and docs/ir.md).

Names: a value prints as its hint, or `hint_1`, `hint_2`... when the hint is taken, or `%0`, `%1`...
in definition order when it has none. The parser keeps printed names as hints, so printing what
it parsed gives the same text.
"""

from __future__ import annotations

import math


from minicc.ir.graph import DENSE_LIMIT, Attrs, ConstData, Function, Module, Op, Value
from minicc.ir.types import DType, TensorType


class Namer:
    """Assigns printed names to values, deterministically in definition order."""

    def __init__(self) -> None:
        self.names: dict[Value, str] = {}
        self.taken: set[str] = set()
        self.anon = 0

    def define(self, v: Value) -> str:
        if v.name_hint:
            base = v.name_hint
            name, k = base, 0
            while name in self.taken:
                k += 1
                name = f"{base}_{k}"
        else:
            while str(self.anon) in self.taken:
                self.anon += 1
            name = str(self.anon)
            self.anon += 1
        self.taken.add(name)
        self.names[v] = name
        return name

    def __getitem__(self, v: Value) -> str:
        try:
            return self.names[v]
        except KeyError:
            return f"<undefined {v.name_hint or '?'}>"


def format_scalar(x: object, dtype: DType) -> str:
    if dtype == DType.STR:
        return format_attr(str(x))
    if dtype == DType.BOOL:
        return "true" if bool(x) else "false"
    if dtype.is_float:
        f = float(x)  # type: ignore[arg-type]
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        # shortest text that reads back to the same value in this precision
        s = repr(f) if dtype == DType.F64 else str(dtype.np.type(x))
        if not any(c in s for c in ".e"):
            s += ".0"
        return s
    return str(int(x))  # type: ignore[call-overload]


def format_attr(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_scalar(v, DType.F64)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, DType):
        return v.value
    if isinstance(v, tuple):
        return "[" + ", ".join(_format_list_item(x) for x in v) + "]"
    if isinstance(v, ConstData):
        return format_const(v)
    if isinstance(v, Function):      # a region, printed in place and indented
        return print_function(v).replace("\n", "\n    ")
    raise TypeError(f"cannot print attribute {v!r}")


def _format_list_item(x: object) -> str:
    # symbolic dims inside `dims` lists print bare, like they do in types
    if isinstance(x, str) and x.isidentifier():
        return x
    return format_attr(x)


def format_const(c: ConstData) -> str:
    if c.array is not None and c.array.size <= DENSE_LIMIT:
        flat = c.array.reshape(-1)
        items = [format_scalar(x, c.type.dtype) for x in flat]
        body = items[0] if c.type.rank == 0 else "[" + ", ".join(items) + "]"
        return f"dense<{body}>"
    if c.is_splat:
        return f"splat<{format_scalar(c.splat_value, c.type.dtype)}>"
    return f'blob<"{c.digest}">'


def format_attrs(attrs: Attrs) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in attrs.items()) + "}"


def print_function(f: Function, *, locs: bool = False) -> str:
    n = Namer()
    args = []
    for v, pub in zip(f.inputs, f.input_names):
        nm = n.define(v)
        extra = f' {{name={format_attr(pub)}}}' if pub != nm else ""
        args.append(f"%{nm}: {v.type}{extra}")
    lines = []
    for op in f.ops:
        lines.append("  " + print_op(op, n, locs=locs))
    results = []
    for v, pub in zip(f.outputs, f.output_names):
        extra = f' {{name={format_attr(pub)}}}' if pub != n[v] else ""
        results.append(f"{v.type}{extra}")
    head = f"func @{f.name}({', '.join(args)}) -> ({', '.join(results)}) {{"
    ret = "  return " + ", ".join(f"%{n[v]}" for v in f.outputs)
    return "\n".join([head] + lines + [ret, "}"])


def print_op(op: Op, n: Namer, *, locs: bool = False) -> str:
    res = ", ".join(f"%{n.define(v)}" for v in op.outputs)
    types = ", ".join(str(v.type) for v in op.outputs)
    loc = f' loc({format_attr(op.loc.node)})' if locs and op.loc else ""
    if op.kind == "const":
        return f"{res} = const {format_const(op.attrs['value'])} : {types}{loc}"
    operands = ", ".join(f"%{n[v]}" for v in op.inputs)
    return f"{res} = {op.kind}({operands}){format_attrs(op.attrs)} : {types}{loc}"


def print_module(m: Module, *, locs: bool = False) -> str:
    return "\n\n".join(print_function(f, locs=locs) for f in m.functions) + "\n"


def print_type(t: TensorType) -> str:
    return str(t)
