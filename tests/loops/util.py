"""Lowering one group outside a compile: a LowerCtx for this CPU or for a GPU."""

from __future__ import annotations

from typing import Any, Mapping

from minicc.codegen.llvm.target import cpu_target
from minicc.ir.loops.schedule import LowerCtx
from minicc.options import CompileOptions
from minicc.targets import get_target


def ctx_for(group: Any, bufs: Mapping, consts: Mapping | None = None, threads: int = 1,
            target: str = "llvm", name: str = "k", **opts: Any) -> LowerCtx:
    o = CompileOptions(target=target, threads=threads, **opts)
    t = cpu_target() if target == "llvm" else get_target(target).resolve(o)
    return LowerCtx(name, group, bufs, consts or {}, t, o)
