"""ONNX ModelProto -> graph IR Module.

Order of checks, so that a bad model fails early with one clear error: the file reads and
decodes; the model is valid ONNX (validate.py: every problem listed at once); local functions,
and the bodies ONNX defines for ops without a converter, are inlined (functions.py); every op
has a converter for the model's opset (all unsupported ops are listed at once);
every tensor a node uses is defined and the graph has no cycle; external data stays inside the
model's folder. Only then are nodes converted, in topological order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Container, Mapping, Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from minicc.errors import FrontendError, MiniccError, UnsupportedFeatureError, UnsupportedOpError
from minicc.frontend import convert as _convert  # noqa: F401  (registers converters)
from minicc.frontend.context import GraphState, NodeContext, onnx_dtype, tensor_to_array
from minicc.frontend.fallback import Fallback, convert_fallback
from minicc.frontend.functions import expand_functions
from minicc.frontend.registry import CONVERTERS, available, lookup
from minicc.frontend.validate import validate
from minicc.ir.builder import GraphBuilder, sanitize
from minicc.ir.graph import ConstData, Function, Module, Value
from minicc.ir.passes.dce import eliminate_dead_code
from minicc.ir.types import UNKNOWN, Dim, DType, TensorType
from minicc.ir.verify import verify_module

ModelLike = str | os.PathLike | bytes | onnx.ModelProto
__all__ = ["import_onnx", "load_model", "declared_inputs", "CONVERTERS", "ModelLike"]


def load_model(model: ModelLike) -> tuple[onnx.ModelProto, Path | None, str]:
    """Read and decode a model; returns (proto, folder for external data, display name)."""
    if isinstance(model, onnx.ModelProto):
        return model, None, model.graph.name or "<model>"
    if isinstance(model, bytes):
        data, folder, shown = model, None, "<bytes>"
    else:
        path = Path(model)
        shown = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FrontendError(f"cannot read model '{shown}': no such file") from None
        except IsADirectoryError:
            raise FrontendError(f"cannot read model '{shown}': it is a directory") from None
        except OSError as e:
            raise FrontendError(f"cannot read model '{shown}': {e.strerror}") from None
        except ValueError as e:  # e.g. an embedded NUL byte in the path
            raise FrontendError(f"cannot read model {shown!r}: {e}") from None
        folder = path.resolve().parent
    if not data:
        raise FrontendError(f"'{shown}' is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise FrontendError(f"'{shown}' is not a valid ONNX model: protobuf decoding failed "
                            f"({e}). Is the file truncated or of another format?") from None
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise FrontendError(f"'{shown}' is not a valid ONNX model: it decodes but has no graph, "
                            "IR version or opset. Is the file truncated or of another format?")
    _check_names(proto, shown)
    return proto, folder, shown


def _check_names(proto: onnx.ModelProto, shown: str) -> None:
    """Protobuf hands back a string field that is not valid UTF-8 as bytes; refuse the model."""
    g = proto.graph
    names: list[Any] = [g.name, *(o.domain for o in proto.opset_import)]
    for n in g.node:
        names += [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
    for t in g.initializer:
        names += [t.name, *(e.key for e in t.external_data), *(e.value for e in t.external_data)]
    for vi in (*g.input, *g.output, *g.value_info):
        names += [vi.name, *(d.dim_param for d in vi.type.tensor_type.shape.dim)]
    bad = next((x for x in names if not isinstance(x, str)), None)
    if bad is not None:
        raise FrontendError(f"'{shown}' is not a valid ONNX model: a name or op type is not "
                            f"valid UTF-8 ({bad[:40]!r}). Is the file corrupted?")


def node_label(n: onnx.NodeProto) -> str:
    """How errors name a node: its name, else its first output, else its op type."""
    return n.name or next((o for o in n.output if o), "") or f"<unnamed {n.op_type}>"


def _opset(proto: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain in ("", "ai.onnx") else o.domain): o.version
            for o in proto.opset_import}


def check_supported(proto: onnx.ModelProto, shown: str, fallback: Container[int] = ()
                    ) -> None:
    """One error listing every op type without a converter for the model's opset (nodes
    whose indices are in `fallback` run on onnx's reference implementation instead)."""
    opsets = _opset(proto)
    missing: dict[tuple[str, str], list[str]] = {}
    for k, n in enumerate(proto.graph.node):
        dom = "" if n.domain in ("", "ai.onnx") else n.domain
        if lookup(dom, n.op_type, opsets.get(dom, 1)) is None and k not in fallback:
            missing.setdefault((dom, n.op_type), []).append(node_label(n))
    if not missing:
        return
    lines = []
    for (dom, op), nodes in sorted(missing.items()):
        vs = available(dom, op)
        if vs:
            why = f"converter exists from opset {vs[0]}; the model uses opset {opsets.get(dom)}"
        elif dom:
            why = "custom domain; see `minicc ops`"
        else:
            why = ("no converter registered for any opset, and onnx's reference cannot stand "
                   "in (no implementation, a subgraph, or outputs without a static shape)")
        shown_nodes = ", ".join(nodes[:4]) + (f", ... ({len(nodes)} nodes)" if len(nodes) > 4
                                              else "")
        lines.append(f"  - {dom or 'ai.onnx'}::{op} (nodes: {shown_nodes})    {why}")
    raise UnsupportedOpError(
        f"{len(missing)} ONNX op type{'s are' if len(missing) > 1 else ' is'} not supported in "
        f"'{shown}' (opset {opsets.get('', '?')}):\n" + "\n".join(lines))


def topo_order(graph: onnx.GraphProto, defined: set[str], shown: str) -> list[onnx.NodeProto]:
    """Nodes in a valid order; names undefined tensors and reports cycles."""
    producer: dict[str, int] = {}
    for i, n in enumerate(graph.node):
        for o in n.output:
            if o:
                if o in producer or o in defined:
                    raise FrontendError(f"{shown}: tensor '{o}' is produced twice (node "
                                        f"'{node_label(n)}')")
                producer[o] = i
    uses = [list(n.input) + [x for x in captured_names(n) if x in producer]
            for n in graph.node]          # a region's captures order its node too
    for i, n in enumerate(graph.node):
        for x in n.input:
            if x and x not in producer and x not in defined:
                raise FrontendError(f"{shown}: {n.op_type} node '{node_label(n)}' uses "
                                    f"tensor '{x}', which no node, initializer or graph input "
                                    "defines (a missing initializer?)")
    order: list[onnx.NodeProto] = []
    state = [0] * len(graph.node)  # 0 new, 1 on stack, 2 done
    for root in range(len(graph.node)):
        if state[root]:
            continue
        stack = [(root, 0)]
        state[root] = 1
        while stack:
            i, k = stack.pop()
            ins = [x for x in uses[i] if x in producer]
            if k < len(ins):
                stack.append((i, k + 1))
                j = producer[ins[k]]
                if state[j] == 1:
                    cyc = [s for s, _ in stack]
                    cyc = [node_label(graph.node[s]) for s in cyc[cyc.index(j):]]
                    raise FrontendError(f"{shown}: the graph has a cycle through nodes "
                                        f"{', '.join(cyc)}")
                if state[j] == 0:
                    state[j] = 1
                    stack.append((j, 0))
            else:
                state[i] = 2
                order.append(graph.node[i])
    return order


def free_names(g: onnx.GraphProto) -> list[str]:
    """The outer tensors a subgraph reads (ONNX scoping: a name its inputs, initializers and
    nodes do not define), nested subgraphs included, in order of first use."""
    defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
    out: dict[str, None] = {}
    for n in g.node:
        for x in list(n.input) + captured_names(n):
            if x and x not in defined:
                out.setdefault(x)
        defined.update(o for o in n.output if o)
    return list(out)


def captured_names(n: onnx.NodeProto) -> list[str]:
    """The outer tensors the subgraphs of node `n` read."""
    out: list[str] = []
    for a in n.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            out += [x for x in free_names(g) if x not in out]
    return out


def import_region(state: GraphState, g: onnx.GraphProto, shown: str, name: str,
                  leading: list[tuple[str, TensorType]]) -> tuple[Function, list[Value]]:
    """A subgraph as a region: a Function of its own whose inputs are `leading` (the values
    the op passes it: a loop's iteration and condition, carried values, scan slices, by the
    subgraph's input names), then every outer value it reads (ONNX's implicit captures made
    explicit; constants are copied in instead). Returns it and the captured outer values."""
    sub = GraphState(GraphBuilder(sanitize(name) or "region", fold=True), state.opset)
    sub.fallback = state.fallback
    b = sub.b
    for (n, ty) in leading:
        sub.env[n] = b.input(ty, n)
    caps: list[Value] = []
    cap_names: list[str] = []
    for x in free_names(g):
        if x not in state.env:
            if x in state.unavailable:
                raise FrontendError(f"{shown}: region '{g.name}' uses '{x}', an output of "
                                    f"{state.unavailable[x]} that is not supported")
            raise FrontendError(f"{shown}: region '{g.name}' uses tensor '{x}', which nothing "
                                "outside defines")
        outer = state.env[x]
        if not isinstance(outer, Value):
            raise FrontendError(f"{shown}: region '{g.name}' reads '{x}', a sequence; only "
                                "tensors may cross into a region")
        c = state.b.const_value(outer)
        if c is not None:
            sub.env[x] = b.const(ConstData(c, copy=False), x)
            continue
        caps.append(outer)
        cap_names.append(x)
    cap_inputs = [b.input(v.type, n) for v, n in zip(caps, cap_names)]
    for n, v in zip(cap_names, cap_inputs):
        sub.env[n] = v
    for t in g.initializer:
        sub.env[t.name] = b.const(ConstData(tensor_to_array(
            t, f"{shown}: initializer '{t.name}'"), copy=False), t.name)
    for n in topo_order(g, set(sub.env), shown):
        _convert_node(sub, n, shown)
    missing = [o.name for o in g.output if o.name not in sub.env]
    if missing:
        raise FrontendError(f"{shown}: region '{g.name}' never produces {', '.join(missing)}")
    outs = [sub.env[o.name] for o in g.output]
    names = [o.name for o in g.output]
    seen: set[str] = set()
    for k, nm in enumerate(names):          # result names must be unique
        if nm in seen:
            names[k] = f"{nm}_{k}"
        seen.add(names[k])
    f = b.finish(outs, names)
    return eliminate_dead_code(f), caps


def _load_external(t: onnx.TensorProto, folder: Path | None, shown: str) -> None:
    """Read a tensor's external data, refusing locations outside the model's folder."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    if folder is None:
        raise FrontendError(f"{shown}: tensor '{t.name}' keeps its data in external file "
                            f"'{loc}'; load the model from its path so the file can be found")
    if not loc or "\0" in loc:
        raise FrontendError(f"{shown}: tensor '{t.name}' is marked as external data but its "
                            f"location {loc!r} is not a file name. Re-save the model with "
                            "onnx.save_model(..., save_as_external_data=True)")
    target = (folder / loc).resolve()
    if os.path.isabs(loc) or os.path.commonpath([target, folder]) != str(folder):
        raise FrontendError(f"{shown}: tensor '{t.name}' refers to external data '{loc}' outside "
                            f"the model's folder {folder}; refusing to read it")
    pos = {}
    for key in ("offset", "length"):
        v = info.get(key, "0" if key == "offset" else "-1")
        if not ((v.isascii() and v.isdigit()) or (key == "length" and v == "-1")):
            raise FrontendError(f"{shown}: external data '{loc}' of tensor '{t.name}' has "
                                f"{key} {v!r}; expected a non-negative integer")
        pos[key] = int(v)
    try:
        with open(target, "rb") as fh:
            fh.seek(pos["offset"])
            raw = fh.read(pos["length"])
    except OSError as e:
        raise FrontendError(f"{shown}: cannot read external data '{loc}' of tensor "
                            f"'{t.name}': {e.strerror}") from None
    if pos["length"] >= 0 and len(raw) != pos["length"]:
        raise FrontendError(f"{shown}: external data '{loc}' of tensor '{t.name}' is truncated "
                            f"({len(raw)} of {pos['length']} bytes)")
    t.raw_data = raw
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT


def _value_type(vi: onnx.ValueInfoProto, override: Sequence[Dim] | None, shown: str
                ) -> TensorType:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise FrontendError(f"{shown}: graph input '{vi.name}' is not a tensor (sequences, maps "
                            "and optionals are not supported)")
    dt = onnx_dtype(tt.elem_type, f"{shown}: graph input '{vi.name}'")
    if override is not None:
        declared = len(tt.shape.dim) if tt.HasField("shape") else None
        if declared is not None and declared != len(override):
            raise FrontendError(f"{shown}: input shape {list(override)} given for '{vi.name}' has "
                                f"rank {len(override)}, the model declares rank {declared}")
        for k, d in enumerate(tt.shape.dim if declared else []):
            if d.HasField("dim_value") and d.dim_value > 0 and override[k] != d.dim_value:
                raise FrontendError(f"{shown}: input shape {list(override)} given for "
                                    f"'{vi.name}' changes dim {k}, which the model fixes to "
                                    f"{d.dim_value}")
        return TensorType(dt, tuple(override))
    if not tt.HasField("shape"):
        raise FrontendError(f"{shown}: graph input '{vi.name}' has no shape (unknown rank); give "
                            f"one with input_shapes= or `--input-shape {vi.name}=...`")
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(sanitize(d.dim_param) or UNKNOWN)
        else:
            dims.append(UNKNOWN)
    return TensorType(dt, tuple(dims))


def declared_inputs(model: ModelLike, input_shapes: Mapping[str, Sequence[Dim]] | None = None
                    ) -> list[tuple[str, TensorType]]:
    """The graph inputs (not initializers) with the types the model declares, `input_shapes`
    applied (symbols sanitized as the import names them; "?" for an unknown dim)."""
    proto, _, shown = load_model(model)
    init = {t.name for t in proto.graph.initializer}
    shapes = dict(input_shapes or {})
    return [(vi.name, _value_type(vi, shapes.get(vi.name), shown))
            for vi in proto.graph.input if vi.name not in init]


def import_onnx(model: ModelLike, input_shapes: Mapping[str, Sequence[Dim]] | None = None,
                input_values: Mapping[str, Any] | None = None) -> Module:
    """Import an ONNX model (path, bytes or ModelProto) into a verified Module.

    `input_shapes` overrides graph input shapes (so shape arithmetic folds to constants);
    `input_values` binds graph inputs to constant arrays (they disappear from the signature).
    """
    proto, folder, shown = load_model(model)
    validate(proto, shown)
    proto = expand_functions(proto, shown)
    g = proto.graph
    input_shapes = dict(input_shapes or {})
    fallback = Fallback(proto, input_shapes)
    fb = fallback.nodes()
    check_supported(proto, shown, fb)
    input_values = dict(input_values or {})
    init_names = {t.name for t in g.initializer}
    graph_inputs = [vi for vi in g.input if vi.name not in init_names]
    known = {vi.name for vi in graph_inputs}
    for name in list(input_shapes) + list(input_values):
        if name not in known:
            raise FrontendError(f"{shown}: no graph input named '{name}' (inputs: "
                                f"{', '.join(sorted(known)) or 'none'})")
    order = topo_order(g, init_names | known, shown)

    state = GraphState(GraphBuilder("main", fold=True), _opset(proto).get("", 1))
    state.fallback = fallback
    b = state.b
    for t in g.initializer:
        _load_external(t, folder, shown)
        arr = tensor_to_array(t, f"{shown}: initializer '{t.name}'")
        state.env[t.name] = b.const(ConstData(arr, copy=False), t.name)
    for vi in graph_inputs:
        if vi.name in input_values:
            arr = np.asarray(input_values[vi.name])
            state.env[vi.name] = b.const(arr, vi.name)
            continue
        try:
            ty = _value_type(vi, input_shapes.get(vi.name), shown)
        except MiniccError as e:
            raise FrontendError(str(e)) from None
        v = b.input(ty, vi.name)
        state.env[vi.name] = v
        state.origin[v] = frozenset([vi.name])
    for n in order:
        for a in n.attribute:
            if a.HasField("t"):
                _load_external(a.t, folder, shown)
        _convert_node(state, n, shown)
    outs: list[Value] = []
    for vi in g.output:
        if vi.name in state.unavailable:
            raise FrontendError(f"{shown}: graph output '{vi.name}' of "
                                f"{state.unavailable[vi.name]} is not supported (only the "
                                "main output is)")
        if vi.name not in state.env:
            raise FrontendError(f"{shown}: graph output '{vi.name}' is never produced")
        if not isinstance(state.env[vi.name], Value):
            raise FrontendError(f"{shown}: graph output '{vi.name}' is a sequence; minicc "
                                "takes and gives tensors only")
        _check_declared_dtype(vi, state.env[vi.name], shown)
        outs.append(state.env[vi.name])
    f = eliminate_dead_code(b.finish(outs, [vi.name for vi in g.output]))
    m = Module((f,))
    verify_module(m)
    return m


def import_branch(state: GraphState, g: onnx.GraphProto, shown: str) -> list[Value]:
    """A subgraph's nodes converted into the current graph (outer values stay visible, as
    ONNX scoping has it); its outputs' values. What a constant If condition selects."""
    b = state.b
    for t in g.initializer:
        state.env[t.name] = b.const(ConstData(tensor_to_array(
            t, f"{shown}: initializer '{t.name}'"), copy=False), t.name)
    defined = set(state.env)
    for n in topo_order(g, defined, shown):
        _convert_node(state, n, shown)
    missing = [o.name for o in g.output if o.name not in state.env]
    if missing:
        raise FrontendError(f"{shown}: branch '{g.name}' never produces {', '.join(missing)}")
    return [state.env[o.name] for o in g.output]


def _check_declared_dtype(vi: onnx.ValueInfoProto, v: Value, shown: str) -> None:
    """A graph output declared with one element type and computed as another is refused, as
    onnxruntime refuses it (callers would read the wrong type)."""
    et = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
    if not et:
        return
    try:
        want = onnx_dtype(et, f"graph output '{vi.name}'")
    except MiniccError:
        return
    if want != v.type.dtype:
        raise FrontendError(f"{shown}: graph output '{vi.name}' is declared {want.value} but "
                            f"the graph computes {v.type.dtype.value}")


def _check_arity(ctx: NodeContext, opset: int, shown: str) -> None:
    """Operand and result counts against the ONNX schema (extra operands are not ignored)."""
    n = ctx.node
    try:
        schema = onnx.defs.get_schema(n.op_type, opset, n.domain or "")
    except onnx.defs.SchemaError:
        return
    nin, nout = len(n.input), len(n.output)
    if nin > schema.max_input or nin < schema.min_input:
        raise FrontendError(f"{shown}: {n.op_type} node '{ctx.name}' has {nin} inputs; opset "
                            f"{opset} allows {schema.min_input} to {schema.max_input}")
    if nout > schema.max_output or nout < schema.min_output:
        raise FrontendError(f"{shown}: {n.op_type} node '{ctx.name}' has {nout} outputs; opset "
                            f"{opset} allows {schema.min_output} to {schema.max_output}")


def _with_bf16_widened(state: GraphState, n: onnx.NodeProto, ctx: NodeContext,
                       conv: Any) -> list[Any]:
    """The converter's results; a node computing on bf16 (which kernels do not take) is
    converted on f32 copies of its bf16 operands and its float results rounded back to bf16,
    as CPUs without a bf16 unit compute it."""
    try:
        return list(conv.fn(ctx))
    except MiniccError as e:
        if isinstance(e, UnsupportedFeatureError) or "bf16" not in str(e):
            raise
        wide = [x for x in dict.fromkeys(n.input) if x and isinstance(state.env.get(x), Value)
                and state.env[x].type.dtype == DType.BF16]
        if not wide:
            raise
    saved = {x: state.env[x] for x in wide}
    try:
        for x in wide:
            state.env[x] = state.b.op1("convert", [saved[x]], {"to": DType.F32})
        results = list(conv.fn(NodeContext(state, n)))
    finally:
        state.env.update(saved)
    declared = state.fallback._inferred() if state.fallback is not None else {}
    out = []
    for name, v in zip(n.output, results):
        t = declared.get(name)
        bf16 = t is None or t.tensor_type.elem_type == onnx.TensorProto.BFLOAT16
        if isinstance(v, Value) and v.type.dtype == DType.F32 and bf16:
            v = state.b.op1("convert", [v], {"to": DType.BF16})
        out.append(v)
    return out + results[len(out):]


def _convert_node(state: GraphState, n: onnx.NodeProto, shown: str) -> None:
    dom = "" if n.domain in ("", "ai.onnx") else n.domain
    conv = lookup(dom, n.op_type, state.opset if not dom else 1)
    ctx = NodeContext(state, n)
    if conv is not None:
        _check_arity(ctx, state.opset if not dom else 1, shown)
    try:
        if conv is None:            # check_supported found the fallback takes it
            types = state.fallback.types_for(n) if state.fallback is not None else None
            if types is None:       # a node of a branch, which check_supported did not see
                raise UnsupportedOpError(f"{n.op_type} node '{ctx.name}': no converter for "
                                         f"{dom or 'ai.onnx'}::{n.op_type}")
            results = convert_fallback(ctx, state.fallback.opsets, types)
        else:
            try:
                results = _with_bf16_widened(state, n, ctx, conv)
            except UnsupportedFeatureError:
                types = state.fallback.types_for(n)
                if types is None:
                    raise
                results = convert_fallback(ctx, state.fallback.opsets, types)
    except MiniccError as e:
        msg = str(e)
        if f"node '{ctx.name}'" not in msg:
            e.args = (f"{n.op_type} node '{ctx.name}': {msg}",) + e.args[1:]
        raise
    except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError) as e:
        # a node the converter's assumptions do not cover (wrong rank, odd attribute): report
        # it against the node rather than as an internal error
        types = ", ".join(str(v.type) for v in (ctx.opt(i) for i in range(ctx.n_inputs)) if v)
        raise FrontendError(f"{n.op_type} node '{ctx.name}': cannot convert it with operands "
                            f"({types}): {type(e).__name__}: {e}. Is the node well-formed for "
                            f"opset {state.opset}?") from e
    for k, name in enumerate(n.output):
        if not name:
            continue
        v = results[k] if k < len(results) else None
        if v is None:  # an optional output the converter does not produce
            state.unavailable[name] = f"{n.op_type} node '{ctx.name}'"
            continue
        state.env[name] = v
