"""Conversions to and from the storage-only element types (bf16, the float8 kinds, float4,
int4/uint4, int2/uint2): ONNX Cast's semantics for them, saturation and float8e8m0's rounding
modes included, run on the host with ml_dtypes (through onnx's reference cast, the definition
the ONNX tests are written against). Kernels never compute on these types: a model that only
stores, moves and converts them compiles and runs; arithmetic on them is refused by the ops'
dtype checks."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from minicc.ir.registry import Attr, FusionKind, OpDef, check, register_op
from minicc.ir.types import TensorType


@register_op
class Convert(OpDef):
    name = "convert"
    host = True
    inputs = (1, 1)
    attrs = {"to": Attr("dtype"),
             "saturate": Attr("bool", True, "float8 targets clamp to their largest finite "
                                            "value (ONNX Cast's saturate)"),
             "round_mode": Attr("str", "up", "float8e8m0 targets: up, down or nearest")}
    kind = FusionKind.OPAQUE
    doc = "y = x converted to `to` where either side is a storage-only type (ONNX Cast)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        check(attrs["round_mode"] in ("up", "down", "nearest"),
              f"round_mode must be up, down or nearest, got {attrs['round_mode']!r}")
        return [TensorType(attrs["to"], ins[0].shape)]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        import onnx
        from onnx.reference.ops.op_cast import cast_to

        to = attrs["to"].np
        code = onnx.helper.np_dtype_to_tensor_dtype(to)
        x = np.asarray(ins[0])
        if x.dtype.kind == "V" or x.dtype == np.float16:   # ml_dtypes and f16 go through f32,
            x = x.astype(np.float32)                        # as onnx's reference reads them
        with np.errstate(all="ignore"):
            y = cast_to(x, code, bool(attrs["saturate"]), attrs["round_mode"])
        return [np.asarray(y).astype(to, copy=False)]


@register_op
class BitCast(OpDef):
    name = "bitcast"
    host = True
    inputs = (1, 1)
    attrs = {"to": Attr("dtype")}
    kind = FusionKind.OPAQUE
    doc = "y = the bits of x read as dtype `to`, which must be as wide (ONNX BitCast)"

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        src, to = ins[0].dtype, attrs["to"]
        check(src.itemsize == to.itemsize and not (src.storage_only or to.storage_only),
              f"bitcast needs two types of one width, got {src} ({src.itemsize} bytes) to "
              f"{to} ({to.itemsize} bytes)")
        return [TensorType(to, ins[0].shape)]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
        x = np.asarray(ins[0])
        return [np.ascontiguousarray(x).view(attrs["to"].np).reshape(x.shape)]
