"""Model validation at import, before anything is converted: one error listing every problem
with its node, so an invalid model is refused, not run.

onnx's checker (`check_node` against the op's schema at the model's opset) finds attributes the
schema does not define, attributes of the wrong type, missing required attributes and ops used
before their first version. It is weak where onnxruntime refuses more, so this module adds:

- opsets newer than any the installed onnx defines (onnx resolves opset 99 to its latest
  schemas and says nothing);
- the opset 1-6 broadcasting of the binary ops: inputs of different static shapes need
  `broadcast=1` (which the converters honour, with `axis`). Older opsets are otherwise accepted:
  onnxruntime has no kernels below opset 7 for many ops and refuses such models, while the same
  model is valid ONNX and minicc computes it;
- values the schemas type but do not bound: strides, dilations and kernel sizes must be
  positive, pads non-negative (and smaller than a pool's kernel), group positive, epsilon
  finite, flags 0 or 1, kernel_shape equal to the weight's spatial shape where it is known.

Custom domains the installed onnx does not know (com.microsoft) are checked by their converters.
"""

from __future__ import annotations

import math
from typing import Sequence

import onnx
from onnx import checker, helper

from minicc.errors import InvalidModelError

LEGACY_BROADCAST_BEFORE = 7
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less"}
_WINDOWED = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool",
             "LpPool", "MaxUnpool", "MaxRoiPool", "Col2Im", "DeformConv"}
_POSITIVE = ("strides", "dilations", "kernel_shape")
_POOLS = {"MaxPool", "AveragePool", "LpPool"}
_EPSILON = {"BatchNormalization", "InstanceNormalization", "LayerNormalization",
            "GroupNormalization", "SkipLayerNormalization", "RMSNormalization",
            "SimplifiedLayerNormalization", "LpNormalization"}
# int attributes that are flags: runtimes disagree on other values (onnxruntime reads keepdims=-3
# as false, numpy-minded code as true), so anything but 0 or 1 is refused
_FLAGS = {"keepdims", "transA", "transB", "ceil_mode", "count_include_pad", "select_last_index",
          "noop_with_empty_axes", "exclusive", "reverse", "largest", "sorted",
          "center_point_box", "training_mode", "storage_order", "align_corners",
          "linear_before_reset", "input_forget", "layout", "is_causal", "interleaved", "fmod",
          "detect_negative", "detect_positive", "saturate", "upper", "allowzero"}
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3,
                 "DeformConv": 1}


def _domains() -> dict[str, int]:
    """The highest opset the installed onnx defines per domain ("" for ai.onnx)."""
    out: dict[str, int] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        d = "" if s.domain == "ai.onnx" else s.domain
        out[d] = max(out.get(d, 1), s.since_version)
    out[""] = max(out.get("", 1), onnx.defs.onnx_opset_version())
    return out


def _label(n: onnx.NodeProto) -> str:
    name = n.name or next((o for o in n.output if o), "") or "<unnamed>"
    return f"{n.op_type} node '{name}'"


def _shapes(g: onnx.GraphProto) -> dict[str, list[int | None]]:
    """Static shapes the model states: initializers, inputs, outputs, value_info."""
    out: dict[str, list[int | None]] = {t.name: list(t.dims) for t in g.initializer}
    for vi in (*g.input, *g.output, *g.value_info):
        tt = vi.type.tensor_type
        if vi.name not in out and tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                            for d in tt.shape.dim]
    return out


def _value_problems(n: onnx.NodeProto, shapes: dict[str, list[int | None]],
                    opset: int) -> list[str]:
    """What the schemas type but do not bound (see the module docstring)."""
    out = []
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if n.op_type in _BINARY and opset < LEGACY_BROADCAST_BEFORE and not attrs.get("broadcast"):
        ss = [shapes.get(i) for i in n.input[:2]]
        if all(x is not None and None not in x for x in ss) and ss[0] != ss[1]:
            out.append(f"inputs of shapes {ss[0]} and {ss[1]} need broadcast=1 at opset {opset}")
    if n.op_type in _WINDOWED:
        for k in _POSITIVE:
            v = attrs.get(k)
            if isinstance(v, list) and any(x <= 0 for x in v):
                out.append(f"{k} {v} must all be positive")
        pads = attrs.get("pads")
        if isinstance(pads, list) and any(x < 0 for x in pads):
            out.append(f"pads {pads} must not be negative")
        ks = attrs.get("kernel_shape")
        if n.op_type in _POOLS and isinstance(pads, list) and isinstance(ks, list) and \
                len(pads) == 2 * len(ks) and any(p >= ks[i % len(ks)] for i, p in enumerate(pads)):
            out.append(f"pads {pads} must be smaller than the kernel {ks} (a window entirely "
                       "in the padding has nothing to pool)")
        if "group" in attrs and isinstance(attrs["group"], int) and attrs["group"] < 1:
            out.append(f"group {attrs['group']} must be at least 1")
        wi = _WEIGHT_INPUT.get(n.op_type)
        ks = attrs.get("kernel_shape")
        if wi is not None and isinstance(ks, list) and wi < len(n.input):
            ws = shapes.get(n.input[wi])
            if ws is not None and len(ws) >= 2 and all(d is not None for d in ws[2:]) and \
                    list(ws[2:]) != list(ks):
                out.append(f"kernel_shape {ks} contradicts the weight '{n.input[wi]}' of "
                           f"shape {ws}")
    for k in _FLAGS & attrs.keys():
        if isinstance(attrs[k], int) and attrs[k] not in (0, 1):
            out.append(f"{k}={attrs[k]} must be 0 or 1")
    if n.op_type in _EPSILON and "epsilon" in attrs:
        eps = attrs["epsilon"]
        if isinstance(eps, float) and not math.isfinite(eps):
            out.append(f"epsilon {eps} must be finite")
    return out


def model_problems(proto: onnx.ModelProto) -> list[str]:
    """Every problem found, one line each, naming the node."""
    known = _domains()
    opsets: dict[str, int] = {}
    problems = []
    for o in proto.opset_import:
        d = "" if o.domain in ("", "ai.onnx") else o.domain
        opsets[d] = o.version
        if d in known and o.version > known[d]:
            problems.append(f"opset {o.version} of {d or 'ai.onnx'} is newer than any the "
                            f"installed onnx {onnx.__version__} defines (up to {known[d]})")
        elif o.version < 1:
            problems.append(f"opset {o.version} of {d or 'ai.onnx'} is not a version")
    if problems:            # node checks against a wrong opset would only add noise
        return problems
    ctx = checker.C.CheckerContext()
    ctx.ir_version = min(proto.ir_version, onnx.IR_VERSION)
    ctx.opset_imports = {d: v for d, v in opsets.items() if d in known}
    lex = checker.C.LexicalScopeContext()
    shapes = _shapes(proto.graph)
    for n in proto.graph.node:
        d = "" if n.domain in ("", "ai.onnx") else n.domain
        if d not in known:
            continue
        typed = _attribute_types(n, opsets.get(d, 1), d)
        if typed:
            problems += [f"{_label(n)}: {p}" for p in typed]
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in n.attribute):
            # the checker cannot be told the outer names a subgraph reads, so it would refuse
            # every branch; a branch's nodes are checked as they are converted (If imports
            # the one a constant condition takes; other control flow is refused)
            continue
        try:
            checker.check_node(n, ctx, lex)
        except (checker.ValidationError, onnx.defs.SchemaError) as e:
            msg = str(e).strip().splitlines()[0]
            if msg.startswith("No Op registered for"):
                first = _first_version(n.op_type, d)
                msg = (f"not defined at opset {opsets.get(d, 1)}" +
                       (f" (first defined in opset {first})" if first else ""))
            problems.append(f"{_label(n)}: {msg}")
            continue
        problems += [f"{_label(n)}: {p}" for p in _value_problems(n, shapes, opsets.get(d, 1))]
    return problems


def _attribute_types(n: onnx.NodeProto, opset: int, domain: str) -> list[str]:
    """Attributes whose declared type is not the schema's (the checker's own message for this
    names neither type)."""
    try:
        schema = onnx.defs.get_schema(n.op_type, opset, domain)
    except onnx.defs.SchemaError:
        return []
    out = []
    name = onnx.AttributeProto.AttributeType.Name
    for a in n.attribute:
        want = schema.attributes.get(a.name)
        if want is not None and a.type != int(want.type.value):
            out.append(f"attribute '{a.name}' is {name(a.type)}, the schema of {n.op_type} at "
                       f"opset {opset} wants {name(int(want.type.value))}")
    return out


def _first_version(op: str, domain: str) -> int | None:
    vs = [s.since_version for s in onnx.defs.get_all_schemas_with_history()
          if s.name == op and (s.domain in ("", "ai.onnx")) == (domain == "")
          and (domain == "" or s.domain == domain)]
    return min(vs) if vs else None


def validate(proto: onnx.ModelProto, shown: str) -> None:
    """Refuse an invalid model with one error listing every problem (at most 20 shown)."""
    problems = model_problems(proto)
    if not problems:
        return
    lines: Sequence[str] = problems[:20]
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise InvalidModelError(
        f"'{shown}' is not a valid ONNX model ({len(problems)} problem"
        f"{'s' if len(problems) > 1 else ''}):\n" + "\n".join(f"  - {p}" for p in lines) + more)
