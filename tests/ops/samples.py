"""Sample operands and attributes for every registered op (a new op must add one here)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from minicc.ir.scalar import SCALARS

R = np.random.default_rng(0)


def f32(*shape: int, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return R.uniform(lo, hi, size=shape).astype(np.float32)


def i64(*shape: int, lo: int = -5, hi: int = 5) -> np.ndarray:
    return R.integers(lo, hi, size=shape).astype(np.int64)


def u8(*shape: int) -> np.ndarray:
    return R.integers(0, 256, size=shape).astype(np.uint8)


def s8(*shape: int) -> np.ndarray:
    return R.integers(-128, 128, size=shape).astype(np.int8)


def boolean(*shape: int) -> np.ndarray:
    return R.random(shape) < 0.5


_FLOAT_DOMAIN = {"log": (0.1, 3), "sqrt": (0.0, 3), "acosh": (1.0, 3), "atanh": (-0.9, 0.9),
                 "asin": (-1, 1), "acos": (-1, 1), "reciprocal": (0.5, 2)}


def _onnx_node(op: str, ins: list[str], outs: list[str], **attrs: object) -> dict:
    """The attributes of an `onnx_node` op running ONNX `op` (opset 20)."""
    import base64
    import json

    from onnx import helper

    node = helper.make_node(op, ins, [f"y{k}" for k in range(len(outs))], **attrs)
    return {"op_type": op, "node": base64.b64encode(node.SerializeToString()).decode(),
            "opsets": json.dumps({"": 20}), "present": [1] * len(ins), "outputs": outs}


def _primitive_samples() -> dict[str, list]:
    out: dict[str, list] = {}
    for name, s in SCALARS.items():
        if name in ("floordiv", "ne", "isposinf", "isneginf"):
            continue
        if s.domain == "bool":
            args = [boolean(2, 3)] + [boolean(3)] * (s.arity - 1)
        elif s.domain == "int":
            args = [i64(2, 3, lo=0, hi=8)] + [i64(3, lo=1, hi=3)] * (s.arity - 1)
        else:
            lo, hi = _FLOAT_DOMAIN.get(name, (-2, 2))
            args = [f32(2, 3, lo=lo, hi=hi)] + [f32(3, lo=0.5, hi=2)] * (s.arity - 1)
        cases = [(args, {})]
        if s.domain == "any" and name not in ("div", "mod", "fmod", "pow"):
            cases.append(([i64(4, 1)] + [i64(1, 5)] * (s.arity - 1), {}))
        if name in ("div", "mod", "fmod"):
            cases.append(([i64(4, 1)] + [i64(1, 5, lo=1, hi=4)], {}))
        out[name] = cases
    return out


def _regions() -> dict[str, list]:
    """if / loop / scan with small regions: a relu or neg branch; a loop body carrying tanh(v)
    with v as its scan output (3 trips); a scan body summing slices into a state."""
    from minicc.ir.builder import GraphBuilder
    from minicc.ir.types import DType, TensorType

    t = TensorType(DType.F32, (2, 3))

    def unary(name: str, kind: str):  # type: ignore[no-untyped-def]
        b = GraphBuilder(name)
        x = b.input(t, "x")
        return b.finish([b.op1(kind, [x])], ["y"])

    b = GraphBuilder("body")
    b.input(TensorType(DType.I64, ()), "i")
    c = b.input(TensorType(DType.BOOL, ()), "c")
    v = b.input(t, "v")
    body = b.finish([c, b.op1("tanh", [v]), v], ["c_out", "v_out", "scan"])
    b = GraphBuilder("scan_body")
    st, xt = b.input(t, "s"), b.input(t, "xt")
    ns = b.op1("add", [st, xt])
    scan_body = b.finish([ns, b.op1("mul", [ns, xt])], ["s_out", "y"])
    branches = {"then_branch": unary("then", "relu"), "else_branch": unary("else", "neg")}
    return {
        "if": [([np.array(True), f32(2, 3)], branches), ([np.array(False), f32(2, 3)], branches)],
        "loop": [([np.array(3, np.int64), np.array(True), f32(2, 3)],
                  {"body": body, "n_carried": 1, "trips_known": 3})],
        "scan": [([f32(2, 3), f32(4, 2, 3)], {"body": scan_body, "n_states": 1})],
    }


SAMPLES: dict[str, list] = {
    **_primitive_samples(),
    **_regions(),
    "leaky_relu": [([f32(2, 5)], {"alpha": 0.2})],
    "elu": [([f32(2, 5)], {"alpha": 0.7})],
    "celu": [([f32(2, 5)], {"alpha": 1.5})],
    "selu": [([f32(2, 5)], {})],
    "hard_sigmoid": [([f32(2, 5, lo=-4, hi=4)], {})],
    "hard_swish": [([f32(2, 5, lo=-5, hi=5)], {})],
    "thresholded_relu": [([f32(2, 5)], {"alpha": 0.5})],
    "shrink": [([f32(2, 5)], {"bias": 0.5, "lambd": 1.0})],
    "softsign": [([f32(2, 5)], {})],
    "mish": [([f32(2, 5)], {})],
    "gelu": [([f32(2, 5)], {}), ([f32(2, 5)], {"approximate": "tanh"})],
    "clip": [([f32(2, 5)], {"min": -0.5, "max": 0.7}), ([i64(6)], {"min": -1.0})],
    "convert": [([f32(2, 5, lo=-10, hi=10)], {"to": "bf16"}),
                ([f32(2, 5, lo=-1000, hi=1000)], {"to": "f8e4m3fn"}),
                ([f32(6, lo=-1000, hi=1000)], {"to": "f8e5m2", "saturate": False}),
                ([f32(6, lo=0.01, hi=100)], {"to": "f8e8m0", "round_mode": "nearest"}),
                ([f32(3, lo=-1, hi=1).astype(ml_dtypes.float8_e5m2)], {"to": "f32"}),
                ([np.array([-8, 0, 7], ml_dtypes.int4)], {"to": "f16"})],
    "bitcast": [([f32(2, 3)], {"to": "i32"}), ([u8(4)], {"to": "i8"})],
    "onnx_node": [([f32(2, 3)], _onnx_node("Celu", ["x"], ["f32[2,3]"], alpha=0.7))],
    "cast": [([f32(2, 5, lo=-10, hi=10)], {"to": "i32"}), ([i64(4)], {"to": "bool"}),
             ([i64(4)], {"to": "f32"})],
    "prelu": [([f32(1, 3, 4), f32(3, 1)], {})],
    "where": [([boolean(2, 3), f32(2, 3), f32(3)], {})],
    "reduce_sum": [([f32(2, 3, 4)], {"axes": [1]}), ([f32(2, 3, 4)], {"axes": [0, 2],
                                                                       "keepdims": False})],
    "reduce_mean": [([f32(2, 3, 4)], {"axes": [2]}), ([i64(2, 3)], {"axes": [1]})],
    "reduce_max": [([f32(2, 3, 4)], {"axes": [1, 2]})],
    "reduce_min": [([f32(2, 3, 4)], {"axes": [0], "keepdims": False})],
    "reduce_prod": [([f32(2, 3, 4, lo=0.5, hi=1.5)], {"axes": [2]})],
    "argmax": [([f32(3, 4)], {"axis": 1}), ([i64(3, 4, lo=0, hi=2)], {"axis": 0,
                                                                     "select_last_index": True})],
    "argmin": [([f32(3, 4)], {"axis": 1, "keepdims": False})],
    "softmax": [([f32(2, 5)], {"axis": 1}), ([f32(2, 3, 4)], {"axis": 1})],
    "log_softmax": [([f32(2, 5)], {})],
    "cumsum": [([f32(2, 5)], {"axis": 1}), ([i64(2, 5)], {"axis": 1, "exclusive": True,
                                                           "reverse": True})],
    "conv_integer": [([u8(1, 3, 5, 5), s8(4, 3, 3, 3)], {"pads": [1, 1, 1, 1], "zero_point": 9}),
                     ([u8(1, 4, 6, 6), s8(4, 2, 3, 3)], {"group": 2, "strides": [2, 2],
                                                         "zero_point": 128}),
                     ([u8(1, 3, 5, 5), s8(4, 3, 3, 3), np.array([201], np.uint8)],
                      {"pads": [1, 1, 1, 1]})],
    "matmul_integer": [([u8(3, 8), s8(8, 5)], {"zero_point": 3}),
                       ([u8(2, 3, 8), s8(8, 5)], {}),
                       ([u8(3, 8), s8(8, 5), np.array([77], np.uint8)], {})],
    "matmul": [([f32(3, 4), f32(4, 5)], {}), ([f32(2, 1, 3, 4), f32(3, 4, 2)], {}),
               ([f32(4), f32(2, 4, 3)], {}), ([f32(2, 3, 4), f32(4)], {})],
    "einsum": [([f32(2, 3, 4), f32(2, 4, 5)], {"equation": "bij,bjk->bik"}),
               ([f32(3, 3)], {"equation": "ii->i"}), ([f32(2, 3)], {"equation": "ij->"}),
               ([f32(2, 3, 4)], {"equation": "...ij->...ji"})],
    "conv": [([f32(1, 2, 5, 5), f32(3, 2, 3, 3), f32(3)], {"pads": [1, 1, 1, 1]}),
             ([f32(2, 4, 7, 6), f32(4, 2, 3, 2)], {"group": 2, "strides": [2, 1],
                                                   "dilations": [1, 2], "pads": [0, 1, 2, 0]}),
             ([f32(1, 3, 8), f32(3, 1, 3)], {"group": 3}),
             ([f32(1, 1, 3, 4, 4), f32(2, 1, 2, 2, 2)], {})],
    "conv_transpose": [([f32(1, 2, 3, 3), f32(2, 3, 3, 3), f32(3)], {"strides": [2, 2]}),
                       ([f32(1, 4, 3, 4), f32(4, 1, 2, 3)], {"group": 2, "pads": [1, 0, 0, 1],
                                                             "output_padding": [1, 0],
                                                             "strides": [2, 1]})],
    "max_pool": [([f32(1, 2, 5, 5)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                      "pads": [1, 1, 1, 1]}),
                 ([f32(1, 2, 6, 6)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                      "ceil_mode": True})],
    "avg_pool": [([f32(1, 2, 5, 5)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
                 ([f32(1, 2, 5, 5)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                      "pads": [1, 1, 1, 1], "count_include_pad": True}),
                 ([f32(1, 1, 6, 6)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                      "ceil_mode": True})],
    "batch_norm": [([f32(2, 3, 4), f32(3), f32(3), f32(3), f32(3, lo=0.5, hi=2)],
                    {"epsilon": 1e-3})],
    "instance_norm": [([f32(2, 3, 4, 5), f32(3), f32(3)], {})],
    "layer_norm": [([f32(2, 3, 8), f32(8), f32(8)], {}),
                   ([f32(2, 3, 4), f32(3, 4)], {"axis": 1})],
    "lrn": [([f32(1, 5, 3, 3)], {"size": 3}), ([f32(1, 4, 2, 2)], {"size": 2, "alpha": 0.1})],
    "const": [([], {"value": "ARRAY"})],
    "reshape": [([f32(2, 3, 4)], {"shape": [4, -1]}), ([f32(6)], {"shape": [3, 2]})],
    "transpose": [([f32(2, 3, 4)], {"perm": [2, 0, 1]})],
    "slice": [([f32(5, 6)], {"starts": [1, -1], "ends": [4, 0], "axes": [0, 1],
                             "steps": [2, -2]}),
              ([f32(4, 4)], {"starts": [0], "ends": [100], "axes": [1]})],
    "concat": [([f32(2, 3), f32(2, 1), f32(2, 2)], {"axis": 1})],
    "pad": [([f32(2, 3)], {"pads": [1, 0, 0, 2], "value": 1.5}),
            ([f32(3, 4)], {"pads": [2, 1, 2, 3], "mode": "reflect"}),
            ([f32(3, 4)], {"pads": [1, 1, 1, 1], "mode": "edge"}),
            ([f32(3, 4)], {"pads": [1, 2, 3, 4], "mode": "wrap"})],
    "broadcast_to": [([f32(3, 1)], {"shape": [2, 3, 4]}), ([f32(2, 3)], {"shape": [1, 1]})],
    "tile": [([f32(2, 3)], {"repeats": [2, 3]})],
    "gather": [([f32(5, 4), np.array([[0, -1], [2, 3]])], {"axis": 0}),
               ([f32(3, 5), np.array([4, 0, -2], dtype=np.int32)], {"axis": 1})],
    "gather_elements": [([f32(3, 4), np.array([[0, 1, 2, -1]] * 2)], {"axis": 1})],
    "resize": [([f32(1, 1, 3, 4)], {"sizes": [1, 1, 6, 8], "scales": [1.0, 1.0, 2.0, 2.0]}),
               ([f32(1, 1, 3, 4)], {"sizes": [1, 1, 5, 7], "scales": [1.0, 1.0, 5 / 3, 7 / 4],
                                    "mode": "linear"}),
               ([f32(1, 2, 4, 4)], {"sizes": [1, 2, 2, 3], "scales": [1.0, 1.0, 0.5, 0.75],
                                    "mode": "linear",
                                    "coordinate_transformation_mode": "align_corners"}),
               ([f32(1, 1, 2, 2)], {"sizes": [1, 1, 4, 4], "scales": [1.0, 1.0, 2.0, 2.0],
                                    "coordinate_transformation_mode": "asymmetric",
                                    "nearest_mode": "floor"})],
    "shape": [([f32(2, 3, 4)], {}), ([f32(2, 3, 4)], {"start": 1, "end": -1})],
    "top_k": [([f32(3, 6)], {"k": 2}), ([f32(4, 3)], {"k": 3, "axis": 0, "largest": False})],
    "scatter_elements": [([f32(3, 3), np.array([[1, 0, 2]]), f32(1, 3)], {"axis": 0})],
    "scatter_nd": [([f32(4, 3), np.array([[1], [3]]), f32(2, 3)], {})],
    "gather_nd": [([f32(2, 3, 4), np.array([[0, 1], [1, 2]])], {})],
    "one_hot": [([np.array([0, 2, -1]), np.array([0.0, 1.0], dtype=np.float32)],
                 {"depth": 4})],
    "trilu": [([f32(3, 4)], {}), ([f32(2, 4, 4)], {"upper": False, "k": -1})],
}
