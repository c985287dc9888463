"""Where a step's tensor lives (minicc.abi.Location) as an array: a view of an input, an
output, the arena or the weights. One place for the CUDA runtimes, whose arrays are CuPy's
(runtime/cuda.py) or numpy's (runtime/cuda_host.py): both slice, view and reshape alike."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from minicc.abi import Location, LocKind
from minicc.runtime.artifact import Artifact
from minicc.runtime.checks import NP_DTYPES


def view_at(loc: Location, dtype: str, shape: Sequence[int], xs: Sequence[Any],
            outs: Sequence[Any], arena: Any, weights: Any) -> Any:
    """The tensor at `loc` as an array of `dtype` and `shape` (a view: writes go through)."""
    if loc.kind in (LocKind.INPUT, LocKind.OUTPUT):
        return (xs if loc.kind == LocKind.INPUT else outs)[loc.offset].reshape(shape)
    base = arena if loc.kind == LocKind.ARENA else weights
    nbytes = int(np.prod(shape)) * np.dtype(NP_DTYPES[dtype]).itemsize
    return base[loc.offset:loc.offset + nbytes].view(NP_DTYPES[dtype]).reshape(shape)


def gather_outputs(a: Artifact, xs: Sequence[Any], outs: Sequence[Any], arena: Any,
                   weights: Any) -> dict[str, Any]:
    """The outputs by name after a run: an output buffer itself where the plan wrote it
    there, else a copy of where it lives (the arena, an input or the weights)."""
    result = {}
    for k, ((name, d, s), loc) in enumerate(zip(a.outputs, a.output_sources)):
        own = loc == Location(LocKind.OUTPUT, k)
        result[name] = outs[k] if own else view_at(loc, d, s, xs, outs, arena, weights).copy()
    return result
