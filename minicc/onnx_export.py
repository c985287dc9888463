"""Export to ONNX: minicc's graph IR (after the graph passes) as an ONNX model, and a quantized
model as QDQ ONNX, the interchange format other runtimes (onnxruntime, TensorRT) quantize from.

    export_qdq(q, "model.qdq.onnx")

Each quantized layer gets QuantizeLinear -> DequantizeLinear on its activation (u8, the
calibrated scale and zero point), DequantizeLinear on its s8 weights (per output channel, axis 0
for a Conv's [M, C, kh, kw], axis 1 for a MatMul's [K, N]) and, for a Conv, an int32 bias with
scale s_x * s_w: the node groups onnxruntime's QDQ transformer turns into integer kernels.
The weights are minicc's (BatchNorm already folded), so the file computes what minicc computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from minicc.errors import MiniccError
from minicc.ir.graph import Function, Op, Value
from minicc.ir.passes.int8 import dequantized_skips, quantizable, quantize_weights
from minicc.ir.registry import full_attrs

OPSET = 17
_SAME = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "relu": "Relu",
         "sigmoid": "Sigmoid", "tanh": "Tanh", "erf": "Erf", "exp": "Exp", "log": "Log",
         "sqrt": "Sqrt", "neg": "Neg", "abs": "Abs", "pow": "Pow", "min": "Min", "max": "Max",
         "reciprocal": "Reciprocal", "matmul": "MatMul", "where": "Where", "hard_swish":
         "HardSwish", "floor": "Floor", "ceil": "Ceil", "round": "Round"}
_ATTRS = {"conv": ("Conv", ("strides", "pads", "dilations", "group")),
          "max_pool": ("MaxPool", ("kernel_shape", "strides", "pads", "dilations", "ceil_mode")),
          "avg_pool": ("AveragePool", ("kernel_shape", "strides", "pads", "ceil_mode",
                                       "count_include_pad")),
          "transpose": ("Transpose", ("perm",)), "concat": ("Concat", ("axis",)),
          "softmax": ("Softmax", ("axis",)), "hard_sigmoid": ("HardSigmoid", ("alpha", "beta")),
          "leaky_relu": ("LeakyRelu", ("alpha",)), "gather": ("Gather", ("axis",)),
          "layer_norm": ("LayerNormalization", ("axis", "epsilon")),
          "reduce_mean": ("ReduceMean", ("axes", "keepdims")),
          "reduce_sum": ("ReduceSum", ("keepdims",)), "reduce_max": ("ReduceMax",
                                                                     ("axes", "keepdims"))}


class _Writer:
    """Nodes and initializers, with a name for every IR value."""

    def __init__(self, f: Function):
        self.f = f
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: dict[Value, str] = dict(zip(f.inputs, f.input_names))
        self.taken: set[str] = set(f.input_names) | set(f.output_names)
        self.consts = {op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"}

    def fresh(self, hint: str) -> str:
        base, k = hint or "t", 0
        name = base
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def init(self, a: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    def name(self, v: Value) -> str:
        if v not in self.names:
            if v in self.consts:
                self.names[v] = self.init(self.consts[v], v.name_hint or "c")
            else:
                self.names[v] = self.fresh(v.name_hint or "t")
        return self.names[v]

    def node(self, op_type: str, ins: list[str], outs: list[str], **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op_type, ins, outs, name=self.fresh(
            f"{op_type}_{len(self.nodes)}"), **{k: v for k, v in attrs.items() if v is not None}))


def _attrs(op: Op, keys: tuple[str, ...]) -> dict[str, Any]:
    at = full_attrs(op.kind, op.attrs)
    out: dict[str, Any] = {}
    for k in keys:
        v = at.get(k)
        if v is None or v == () or v == []:
            continue
        out[k] = int(v) if isinstance(v, bool) else (list(v) if isinstance(v, tuple) else v)
    return out


def _emit(w: _Writer, op: Op, ins: list[str], outs: list[str]) -> None:
    at = full_attrs(op.kind, op.attrs)
    if op.kind in _SAME:
        w.node(_SAME[op.kind], ins, outs)
    elif op.kind in _ATTRS:
        t, keys = _ATTRS[op.kind]
        extra = ins
        a = _attrs(op, keys)
        if op.kind == "reduce_sum":
            extra = ins + [w.init(np.array(at["axes"], np.int64), "axes")]
        w.node(t, extra, outs, **a)
    elif op.kind == "reshape":
        shape = np.array([d if isinstance(d, int) else -1 for d in op.outputs[0].type.shape],
                         np.int64)
        w.node("Reshape", [ins[0], w.init(shape, "shape")], outs)
    elif op.kind == "clip":
        lo = w.init(np.array(max(at["min"], -3.4e38), np.float32), "min")
        hi = w.init(np.array(min(at["max"], 3.4e38), np.float32), "max")
        w.node("Clip", [ins[0], lo, hi], outs)
    elif op.kind == "cast":
        w.node("Cast", ins, outs, to=int(helper.np_dtype_to_tensor_dtype(
            np.dtype(at["to"].np))))
    elif op.kind == "slice":
        arr = [w.init(np.array(at[k], np.int64), k) for k in ("starts", "ends", "axes")]
        steps = [w.init(np.array(at["steps"], np.int64), "steps")] if at["steps"] else []
        w.node("Slice", [ins[0]] + arr + steps, outs)
    elif op.kind == "gelu":
        x = ins[0]
        if at["approximate"] != "none":
            raise MiniccError("export: tanh-approximated gelu is not exported yet")
        t1 = w.fresh("gelu_div")
        w.node("Div", [x, w.init(np.array(np.sqrt(2.0), np.float32), "sqrt2")], [t1])
        t2 = w.fresh("gelu_erf")
        w.node("Erf", [t1], [t2])
        t3 = w.fresh("gelu_add")
        w.node("Add", [t2, w.init(np.array(1.0, np.float32), "one")], [t3])
        t4 = w.fresh("gelu_mul")
        w.node("Mul", [x, t3], [t4])
        w.node("Mul", [t4, w.init(np.array(0.5, np.float32), "half")], outs)
    elif op.kind == "resize":
        sizes = w.init(np.array(at["sizes"], np.int64), "sizes") if at["sizes"] else ""
        scales = w.init(np.array(at["scales"], np.float32), "scales") if not sizes else ""
        w.node("Resize", [ins[0], "", scales] + ([sizes] if sizes else []), outs,
               mode=at["mode"], coordinate_transformation_mode=at[
                   "coordinate_transformation_mode"], nearest_mode=at["nearest_mode"])
    else:
        raise MiniccError(f"export: no ONNX form for {op.describe()} yet")


def to_onnx(f: Function, hook: Callable[[_Writer, Op, list[str]], list[str] | None]
            | None = None) -> onnx.ModelProto:
    """`f` as an ONNX model; `hook(writer, op, input names)` may rename an op's inputs."""
    w = _Writer(f)
    for op in f.ops:
        if op.kind == "const":
            continue
        ins = [w.name(v) for v in op.inputs]
        if hook is not None:
            ins = hook(w, op, ins) or ins
        outs = [w.name(v) for v in op.outputs]
        _emit(w, op, ins, outs)
    for v, n in zip(f.outputs, f.output_names):
        if w.name(v) != n:
            w.node("Identity", [w.name(v)], [n])

    used = {i for n in w.nodes for i in n.input}
    w.inits = [t for t in w.inits if t.name in used]      # float weights a hook replaced

    def vi(name: str, v: Value) -> onnx.ValueInfoProto:
        dims = [d if isinstance(d, int) else str(d) for d in v.type.shape]
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(
            np.dtype(v.type.dtype.np)), dims)
    g = helper.make_graph(w.nodes, f.name, [vi(n, v) for n, v in zip(f.input_names, f.inputs)],
                          [vi(n, v) for n, v in zip(f.output_names, f.outputs)], w.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="minicc")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def export_qdq(q: Any, path: str | Path) -> Path:
    """Write the `minicc.quantization.Quantized` model `q` as QDQ ONNX."""
    f = q.float_module.main
    layers = {x.op: x for x in quantizable(f) if x.name in set(q.layers)}
    qp = q.value_qparams
    done: dict[Value, str] = {}

    skips = dequantized_skips(f, {x.op.inputs[0] for x in layers.values()}, set(layers))

    def dequantized(w: _Writer, x: Value, name: str) -> str:
        """Q -> DQ on the activation `x` (once), as minicc's int8 kernels read it."""
        if x not in done:
            s_x, zp = qp[x]
            s = w.init(np.array(s_x, np.float32), "x_scale")
            z = w.init(np.array(zp, np.uint8), "x_zero_point")
            qn, dqn = w.fresh(name + "_q"), w.fresh(name + "_dq")
            w.node("QuantizeLinear", [name, s, z], [qn])
            w.node("DequantizeLinear", [qn, s, z], [dqn])
            done[x] = dqn
        return done[x]

    def hook(w: _Writer, op: Op, ins: list[str]) -> list[str] | None:
        if op not in layers:
            if not any(v in skips for v in op.inputs):
                return None
            return [dequantized(w, v, n) if v in skips else n for v, n in zip(op.inputs, ins)]
        x = op.inputs[0]
        s_x, zp = qp[x]
        dequantized(w, x, ins[0])
        axis = 0 if op.kind == "conv" else 1
        wt = w.consts[op.inputs[1]]
        wq, s_w = quantize_weights(wt, axis, q.per_channel)
        wname = w.init(wq, (op.inputs[1].name_hint or "w") + "_int8")
        ws = w.init(s_w.astype(np.float32), "w_scale")
        wz = w.init(np.zeros(len(s_w), np.int8), "w_zero_point")
        wd = w.fresh(wname + "_dq")
        w.node("DequantizeLinear", [wname, ws, wz], [wd], axis=axis)
        out = [done[x], wd]
        if op.kind == "conv" and len(op.inputs) == 3:
            b = w.consts[op.inputs[2]].astype(np.float64)
            bs = (s_x * s_w).astype(np.float32)
            bq = np.rint(b / bs).astype(np.int32)
            bn = w.init(bq, "bias_int32")
            bsn = w.init(bs, "bias_scale")
            bz = w.init(np.zeros(len(bs), np.int32), "bias_zero_point")
            bd = w.fresh(bn + "_dq")
            w.node("DequantizeLinear", [bn, bsn, bz], [bd], axis=0)
            out.append(bd)
        return out

    m = to_onnx(f, hook)
    p = Path(path)
    onnx.save(m, str(p))
    return p
