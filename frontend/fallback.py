"""Nodes without a converter that can still run: on the host, through onnx's reference
implementation (the IR op `onnx_node`, ir/ops/onnx_ref.py).

A node qualifies when onnx.reference implements its op, it has no subgraph attributes (control
flow is its own matter), and ONNX shape inference (with data propagation, after the caller's
input shapes are applied) gives every output a known rank and an element type minicc has; a
dim it cannot tell (what NonZero or Unique count) is left to run time (minicc/segmented.py).
Everything else is still refused, listed with the reason.
"""

from __future__ import annotations

import base64
import json
from typing import Mapping, Sequence

import onnx
from onnx import shape_inference

from minicc.frontend.context import ONNX_TO_DTYPE, NodeContext
from minicc.frontend.registry import lookup
from minicc.ir.graph import Value
from minicc.ir.types import Dim


def _canon(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _has_reference(n: onnx.NodeProto, opset: int) -> bool:
    from onnx.reference.ops import aionnxml, load_op

    dom = _canon(n.domain)
    try:
        if dom == "ai.onnx.ml":
            aionnxml.load_op(dom, n.op_type, opset)
        elif dom == "":
            load_op("", n.op_type, opset)
        else:
            return False
    except Exception:  # noqa: BLE001  (missing ops raise several kinds)
        return False
    return True


def _type_text(t: onnx.TypeProto) -> str | None:
    """`f32[2,3]` for a tensor type of known rank and a minicc dtype ("?" for a dim shape
    inference cannot tell: the count NonZero or Unique find), else None."""
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    dt = ONNX_TO_DTYPE.get(t.tensor_type.elem_type)
    if dt is None:
        return None
    dims = [str(d.dim_value) if d.HasField("dim_value") else "?"
            for d in t.tensor_type.shape.dim]
    return f"{dt.value}[{','.join(dims)}]"


class Fallback:
    """Which nodes of one model can take the fallback, and their output types. Shape inference
    runs once, the first time it is needed."""

    def __init__(self, proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[Dim]]):
        self.proto, self.input_shapes = proto, input_shapes
        self.opsets = {_canon(o.domain): o.version for o in proto.opset_import}
        self._types: dict[str, onnx.TypeProto] | None = None

    def _inferred(self) -> dict[str, onnx.TypeProto]:
        if self._types is None:
            m = onnx.ModelProto()
            m.CopyFrom(self.proto)
            for vi in m.graph.input:
                shape = self.input_shapes.get(vi.name)
                if shape is not None and all(isinstance(d, int) for d in shape):
                    del vi.type.tensor_type.shape.dim[:]
                    for d in shape:
                        vi.type.tensor_type.shape.dim.add().dim_value = int(d)  # type: ignore
            try:
                g = shape_inference.infer_shapes(m, data_prop=True).graph
                self._types = {vi.name: vi.type for vi in (*g.input, *g.value_info, *g.output)}
            except Exception:  # noqa: BLE001  (no fallback then: the converter's error stands)
                self._types = {}
        return self._types

    def types_for(self, n: onnx.NodeProto) -> list[str] | None:
        """The node's output types when it can run on onnx's reference, else None."""
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in n.attribute) or not n.output or not all(n.output):
            return None                   # subgraphs, or a gap among the outputs
        if not _has_reference(n, self.opsets.get(_canon(n.domain), 1)):
            return None
        types = self._inferred()
        ts = [_type_text(types[o]) if o in types else None for o in n.output]
        return None if any(t is None for t in ts) else [t for t in ts if t is not None]

    def nodes(self) -> dict[int, list[str]]:
        """Index in the graph -> output types, for every node without a converter that can
        take the fallback."""
        out: dict[int, list[str]] = {}
        for k, n in enumerate(self.proto.graph.node):
            dom = _canon(n.domain)
            if lookup(dom, n.op_type, self.opsets.get(dom, 1)) is None:
                ts = self.types_for(n)
                if ts is not None:
                    out[k] = ts
        return out


def convert_fallback(ctx: NodeContext, proto_opsets: Mapping[str, int], outputs: list[str]
                     ) -> list[Value]:
    """The node as an `onnx_node` op (see ir/ops/onnx_ref.py)."""
    n = ctx.node
    present = [1 if i else 0 for i in n.input]
    ins = [ctx.input(k) for k, p in enumerate(present) if p]
    attrs = {"op_type": n.op_type, "node": base64.b64encode(n.SerializeToString()).decode(),
             "opsets": json.dumps(dict(proto_opsets), sort_keys=True), "present": present,
             "outputs": outputs}
    return list(ctx.op_n("onnx_node", ins, attrs))
