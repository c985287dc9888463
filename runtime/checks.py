"""Checking a call's inputs against an artifact's signature, before any native code runs: the
same rules and messages for the CPU and the CUDA runtimes."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import RuntimeInputError
from minicc.lazytypes import LazyTypes

NP_DTYPES: dict[str, type] = LazyTypes({
    "bool": np.bool_, "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
    "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64,
    "f16": np.float16, "f32": np.float32, "f64": np.float64, "str": np.object_,
}, lambda md: {       # storage-only types (host conversions only), as ml_dtypes stores them
    "bf16": md.bfloat16, "f8e4m3fn": md.float8_e4m3fn, "f8e4m3fnuz": md.float8_e4m3fnuz,
    "f8e5m2": md.float8_e5m2, "f8e5m2fnuz": md.float8_e5m2fnuz, "f8e8m0": md.float8_e8m0fnu,
    "f4e2m1": md.float4_e2m1fn, "i4": md.int4, "u4": md.uint4, "i2": md.int2, "u2": md.uint2})


def check_inputs(signature: Sequence[tuple[str, str, tuple[int, ...]]],
                 inputs: Mapping[str, Any], array_types: tuple[type, ...] = (np.ndarray,),
                 kind: str = "a numpy array") -> list[Any]:
    """The input arrays in signature order; raises RuntimeInputError naming the input for a
    missing or unknown name, a non-array, a wrong dtype, rank or shape, or a non-contiguous
    array."""
    check_names([(n, d, f"{d}{list(s)}") for n, d, s in signature], inputs)
    out = []
    for n, dt, shape in signature:
        x = inputs[n]
        want = f"{dt}[{','.join(map(str, shape))}]"
        check_array(n, dt, want, x, array_types, kind)
        if x.ndim != len(shape):
            raise RuntimeInputError(f"input '{n}': rank {x.ndim} (shape {list(x.shape)}) but "
                                    f"the model expects {want}")
        if tuple(x.shape) != tuple(shape):
            raise RuntimeInputError(f"input '{n}': shape {list(x.shape)} but the model was "
                                    f"compiled for {want}")
        if not x.flags.c_contiguous:
            raise RuntimeInputError(f"input '{n}': array is not C-contiguous (a view or "
                                    "transpose?); pass a contiguous copy")
        if isinstance(x, np.ndarray) and not x.flags.aligned:
            raise RuntimeInputError(f"input '{n}': array data is not aligned")
        out.append(x)
    return out


def check_names(signature: Sequence[tuple[str, str, str]], inputs: Any) -> None:
    """`inputs` is a mapping with exactly the signature's names ((name, dtype, shown type))."""
    names = [n for n, _, _ in signature]
    if not isinstance(inputs, Mapping):
        raise RuntimeInputError(f"inputs must be a mapping of input name to array, got "
                                f"{type(inputs).__name__}; call run({{{', '.join(repr(n) + ': ...' for n in names)}}})")
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"'{n}' ({shown})" for n, _, shown in
                                                signature if n in missing))
        if extra:
            parts.append("unknown " + ", ".join(f"'{n}'" for n in extra))
        raise RuntimeInputError(f"inputs do not match the model: {'; '.join(parts)}. "
                                f"It takes: {', '.join(names) or 'no inputs'}")


def check_array(n: str, dt: str, want: str, x: Any, array_types: tuple[type, ...] = (np.ndarray,),
                kind: str = "a numpy array") -> None:
    """Input `n` is an array of dtype `dt` (`want`: the type shown in the message)."""
    if not isinstance(x, array_types):
        raise RuntimeInputError(f"input '{n}': expected {kind} of {want}, got "
                                f"{type(x).__name__}")
    if x.dtype != np.dtype(NP_DTYPES[dt]):
        got = {np.dtype(v): k for k, v in NP_DTYPES.items()}.get(np.dtype(x.dtype),
                                                                  str(x.dtype))
        raise RuntimeInputError(f"input '{n}': dtype {got} ({x.dtype}) but the model "
                                f"expects {want}; convert with "
                                f"x.astype(np.{np.dtype(NP_DTYPES[dt])})")
