"""Constant folding: evaluate every op whose operands are all constants with its numpy reference
(weights included: a transposed weight becomes a new weight). Splat results stay splats.

    %w = const blob<..> : f32[64,10]                %t = const blob<..> : f32[10,64]
    %t = transpose(%w) {perm=[1, 0]} : f32[10,64] ->
"""

from __future__ import annotations

from minicc.ir.graph import Function
from minicc.ir.passes.rewrite import rewrite

FOLD_ALL = 1 << 31


def fold_constants(f: Function) -> Function:
    return rewrite(f, lambda rw, op, ins: None, fold=True, fold_limit=FOLD_ALL)
