"""`onnx_node`: one ONNX node that minicc has no converter for, run on the host by onnx's
reference implementation (`onnx.reference`), with its output types fixed at import by ONNX
shape inference.

This is the fallback that lets a model with a rare op (GridSample, RoiAlign, DFT, CumProd,
ReverseSequence, ...) compile and run correctly at all: the op runs in numpy, between native
kernels, and `minicc profile` shows it as a host step. It is no substitute for a kernel where
an op's time matters. The frontend only takes it for nodes whose outputs shape inference makes
known, with tensor operands of minicc's types and no subgraphs. A dim the data decides (the
count NonZero or Unique find) is "?": such a node is a host step of its own and what follows
it compiles per shape at run time (minicc/segmented.py).
"""

from __future__ import annotations

import base64
import functools
import json
import re
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.ir.registry import Attr, FusionKind, OpDef, check, register_op
from minicc.ir.types import DType, TensorType


def _type(text: str) -> TensorType:
    """`f32[2,3]` (as TensorType prints) back to a TensorType; "?" for a dim the data decides
    (NonZero, Unique, Compress, NonMaxSuppression, TopK with a run-time k)."""
    m = re.fullmatch(r"(\w+)\[([0-9?, ]*)\]", text.strip())
    check(m is not None, f"bad output type {text!r} (want a type such as f32[2,3] or i64[2,?])")
    assert m is not None
    dims = tuple("?" if d.strip() == "?" else int(d) for d in m.group(2).split(",")
                 if d.strip())
    return TensorType(DType.parse(m.group(1)), dims)


@functools.lru_cache(maxsize=256)
def _session(node_b64: str, opsets: str, n_in: int):  # type: ignore[no-untyped-def]
    import onnx
    from onnx.reference import ReferenceEvaluator

    node = onnx.NodeProto.FromString(base64.b64decode(node_b64))
    ins = [f"in{k}" for k in range(n_in)]
    outs = [f"out{k}" for k in range(len(node.output))]
    inner = onnx.NodeProto()
    inner.CopyFrom(node)
    del inner.input[:]
    del inner.output[:]
    inner.input.extend(i if node.input[k] else "" for k, i in enumerate(ins))
    inner.output.extend(o if node.output[k] else "" for k, o in enumerate(outs))
    g = onnx.helper.make_graph([inner], "node", [onnx.helper.make_tensor_value_info(
        i, onnx.TensorProto.UNDEFINED, None) for k, i in enumerate(ins) if node.input[k]],
        [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
         for k, o in enumerate(outs) if node.output[k]])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid(d, v)
                                                 for d, v in json.loads(opsets).items()])
    return ReferenceEvaluator(m), [i for k, i in enumerate(ins) if node.input[k]]


@register_op
class OnnxNode(OpDef):
    name = "onnx_node"
    host = True
    inputs = (0, -1)
    attrs = {"op_type": Attr("str", doc="the ONNX op (for messages and profiles)"),
             "node": Attr("str", doc="the NodeProto, serialized, base64"),
             "opsets": Attr("str", doc="the model's opset imports, JSON"),
             "present": Attr("ints", doc="1 for each node input that is given, 0 for a gap"),
             "outputs": Attr("strs", doc="each output's type (f32[2,3]), from shape inference")}
    kind = FusionKind.OPAQUE
    doc = "an ONNX node without a converter, run on the host by onnx's reference implementation"

    def num_outputs(self, attrs: Mapping[str, Any]) -> int:
        return len(attrs["outputs"])

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        check(sum(attrs["present"]) == len(ins),
              f"{len(ins)} operands for {sum(attrs['present'])} present inputs")
        return [_type(t) for t in attrs["outputs"]]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        sess, names = _session(attrs["node"], attrs["opsets"], len(attrs["present"]))
        with np.errstate(all="ignore"):
            res = sess.run(None, dict(zip(names, (np.asarray(x) for x in ins))))
        outs = [_type(t) for t in attrs["outputs"]]
        return [np.asarray(r).astype(t.dtype.np, copy=False).reshape(
            np.shape(r) if "?" in t.shape else [int(d) for d in t.shape])
            for r, t in zip(res, outs)]
