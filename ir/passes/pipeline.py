"""The graph pass pipeline per opt level, and the pass table `minicc opt` reads."""

from __future__ import annotations

from typing import Callable

from minicc import env
from minicc.errors import MiniccError, VerificationError
from minicc.ir.graph import Function, Module
from minicc.ir.passes.conv_transpose import conv_transpose_as_conv
from minicc.ir.passes.cse import eliminate_common_subexpressions
from minicc.ir.passes.dce import eliminate_dead_code
from minicc.ir.passes.fold_bn import fold_batch_norm
from minicc.ir.passes.fold_constants import fold_constants
from minicc.ir.passes.fold_scales import fold_scales
from minicc.ir.passes.qdq import qdq_to_int8
from minicc.ir.passes.simplify import simplify
from minicc.ir.printer import print_module
from minicc.ir.verify import verify_module

PASSES: dict[str, Callable[[Function], Function]] = {
    "fold_constants": fold_constants,
    "simplify": simplify,
    "fold_batch_norm": fold_batch_norm,
    "qdq_to_int8": qdq_to_int8,
    "fold_scales": fold_scales,
    "conv_transpose_as_conv": conv_transpose_as_conv,
    "cse": eliminate_common_subexpressions,
    "dce": eliminate_dead_code,
}

PIPELINES: dict[int, list[str]] = {
    0: ["dce"],
    1: ["fold_constants", "simplify", "dce"],
    2: ["fold_constants", "simplify", "fold_batch_norm", "fold_constants", "simplify",
        "qdq_to_int8", "fold_scales", "conv_transpose_as_conv", "cse", "dce"],
}
PIPELINES[3] = PIPELINES[2]


def check_roundtrip(m: Module, where: str) -> None:
    """MINICC_VERIFY_ROUNDTRIP=1: the printed IR must parse back and print identically."""
    from minicc.ir.parser import parse

    text = print_module(m)
    again = print_module(parse(text, weights=m.weights()))
    if again != text:
        raise MiniccError(f"IR round trip failed {where}: printing what was parsed differs "
                          "(please report)")


def run_passes(m: Module, names: list[str], dumps: dict[str, str] | None = None,
               verify_each: bool = False) -> Module:
    roundtrip = env.flag("MINICC_VERIFY_ROUNDTRIP")
    for n in names:
        if n not in PASSES:
            raise MiniccError(f"unknown pass '{n}' (passes: {', '.join(PASSES)})")
        m = m.with_main(PASSES[n](m.main))
        if verify_each:
            try:
                verify_module(m)
            except VerificationError as e:
                raise VerificationError(f"after pass '{n}': {e}") from None
        if roundtrip:
            check_roundtrip(m, f"after pass {n}")
        if dumps is not None:
            key = f"after {n}"
            while key in dumps:
                key += "'"
            dumps[key] = print_module(m)
    return m


def run_pipeline(m: Module, opt_level: int, dumps: dict[str, str] | None = None,
                 verify_each: bool = False) -> Module:
    return run_passes(m, PIPELINES[max(0, min(opt_level, 3))], dumps, verify_each)
