"""ONNX functions, inlined before conversion: the model's own local functions, and the function
bodies ONNX defines for ops minicc has no converter for (Attention, RotaryEmbedding and the other
ops the standard defines as compositions of simpler ones).

Many recent ops are specified by a body, some of them context-dependent (the body depends on
the node's attributes and input types: Attention's masks, causal mode, grouped heads). onnx
builds that body for the node (`OpSchema.get_context_dependent_function_with_opset_version`);
each expanded node becomes a model-local function of its own, and `onnx.inliner` inlines them
all, with the renaming and attribute binding the standard defines. The bodies use only ops with
converters (softmax, matmul, where, ...), so they compile like any other graph and fuse.
"""

from __future__ import annotations

import onnx
import onnx.inliner
from onnx import shape_inference

from minicc.errors import FrontendError
from minicc.frontend.registry import lookup

DOMAIN = "minicc.expanded"
ROUNDS = 4          # bodies may use ops that are functions themselves


def _canon(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _opsets(proto: onnx.ModelProto) -> dict[str, int]:
    return {_canon(o.domain): o.version for o in proto.opset_import}


def _body(n: onnx.NodeProto, opset: int, types: dict[str, onnx.TypeProto]
          ) -> onnx.FunctionProto | None:
    """The function ONNX defines for node `n` at `opset`, or None when it defines none."""
    try:
        schema = onnx.defs.get_schema(n.op_type, opset, n.domain)
    except onnx.defs.SchemaError:
        return None
    plain = [v for v in schema.function_opset_versions if v <= opset]
    ctx = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if plain:
        data = schema.get_function_with_opset_version(max(plain))
    elif ctx:
        ins = [(types.get(i) or onnx.TypeProto()).SerializeToString() for i in n.input]
        data = schema.get_context_dependent_function_with_opset_version(
            max(ctx), n.SerializeToString(), ins)
    else:
        return None
    if not data:
        return None
    return onnx.FunctionProto.FromString(data)


def _add_defaults(n: onnx.NodeProto, opset: int) -> None:
    """The node's attributes with the schema's defaults filled in: a body refers to each
    attribute by name, and the inliner leaves a reference to an absent one unbound (a window
    op's Constant of `periodic` would then have no value)."""
    schema = onnx.defs.get_schema(n.op_type, opset, n.domain)
    have = {a.name for a in n.attribute}
    for name, a in schema.attributes.items():
        d = a.default_value
        if name not in have and d.type != onnx.AttributeProto.UNDEFINED:
            attr = onnx.AttributeProto()
            attr.CopyFrom(d)
            attr.name = name
            n.attribute.append(attr)


def _types(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Every tensor's type that shape inference can tell (context-dependent bodies need the
    input types)."""
    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001  (inference is a help here: the converters check later)
        inferred = proto
    g = inferred.graph
    out = {vi.name: vi.type for vi in (*g.input, *g.value_info, *g.output)}
    for t in g.initializer:
        out.setdefault(t.name, onnx.helper.make_tensor_type_proto(t.data_type, t.dims))
    return out


def expand_functions(proto: onnx.ModelProto, shown: str) -> onnx.ModelProto:
    """`proto` with its local functions inlined and every node without a converter whose op
    ONNX defines by a function replaced by that function's body (the input is not changed)."""
    m = proto
    for _ in range(ROUNDS):
        opsets = _opsets(m)
        todo = [n for n in m.graph.node
                if lookup(_canon(n.domain), n.op_type, opsets.get(_canon(n.domain), 1)) is None
                and _canon(n.domain) != DOMAIN]
        if not todo and not m.functions:
            return m
        m2 = onnx.ModelProto()
        m2.CopyFrom(m)
        types = _types(m2) if todo else {}
        count = 0
        for n in m2.graph.node:
            dom = _canon(n.domain)
            if lookup(dom, n.op_type, opsets.get(dom, 1)) is not None or dom == DOMAIN or \
                    any(f.name == n.op_type and _canon(f.domain) == dom for f in m2.functions):
                continue
            try:
                body = _body(n, opsets.get(dom, 1), types)
            except Exception as e:  # noqa: BLE001  (onnx raises several kinds)
                raise FrontendError(f"{shown}: {n.op_type} node '{n.name or n.output[0]}': "
                                    f"ONNX could not build its function body: {e}") from None
            if body is None:
                continue
            _add_defaults(n, opsets.get(dom, 1))
            body.domain, body.name = DOMAIN, f"{n.op_type}_{count}"
            count += 1
            m2.functions.append(body)
            n.domain, n.op_type = DOMAIN, body.name
        if count == 0 and not m2.functions:
            return m2
        if not any(_canon(o.domain) == DOMAIN for o in m2.opset_import) and count:
            m2.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
        try:
            m = onnx.inliner.inline_local_functions(m2)
        except Exception as e:  # noqa: BLE001
            raise FrontendError(f"{shown}: inlining ONNX functions failed: {e}") from None
        del m.functions[:]
        keep = [o for o in m.opset_import if _canon(o.domain) != DOMAIN]
        del m.opset_import[:]
        m.opset_import.extend(keep)
        if count == 0:
            return m
    return m
