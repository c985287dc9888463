"""Choosing a loop nest per group: the GEMM template for convolutions and matmuls, the generic
lowering (vectorized, parallel outer loop, hoisted reductions) for everything else."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from minicc.ir.graph import Value
from minicc.ir.loops.gemm import lower_gemm
from minicc.ir.loops.lower import lower_generic
from minicc.ir.loops.nodes import Buffer, Kernel
from minicc.ir.passes.fuse import Group

Packed = dict[int, tuple[Buffer, np.ndarray]]


def lower_group(name: str, group: Group, bufs: Mapping[Value, Buffer],
                consts: Mapping[Value, np.ndarray], threads: int, opt_level: int = 3
                ) -> tuple[Kernel, Packed]:
    """The kernel for one group, plus weights it packed at compile time (buffer id -> array)."""
    if group.anchor is not None and opt_level >= 1:
        r = lower_gemm(name, group, bufs, consts, threads)
        if r is not None:
            return r
    return lower_generic(name, group, bufs, consts, threads_ok=threads > 1), {}
