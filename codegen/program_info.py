"""What both code generators derive from a Program the same way: the compile-cache key, the
summary stored in the artifact, and the description of host steps."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from minicc.ir.loops.printer import print_kernel
from minicc.ir.program import HostStep, KernelStep, Program, host_attrs


@functools.lru_cache(maxsize=None)
def build_id() -> str:
    """A hash of the compiler's own source: editing the code generator invalidates the cache
    even when the version number does not change."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for pkg in ("codegen", "ir", "runtime"):
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_key(prog: Program, *settings: object) -> str:
    """Everything the generated code depends on: the scheduled loop IR of every kernel, where
    each tensor lives, the host steps, the weights, the settings and the compiler itself."""
    h = hashlib.sha256("|".join([build_id()] + [str(s) for s in settings]).encode())
    h.update(repr((prog.inputs, prog.outputs, prog.output_sources,
                   prog.memory.arena_bytes)).encode())
    for st in prog.steps:
        if isinstance(st, KernelStep):
            h.update(print_kernel(st.kernel).encode())
            h.update(repr(st.args).encode())
        else:
            h.update(repr((st.op.kind, sorted(host_attrs(st.op).items()), st.inputs,
                           st.outputs)).encode())
    h.update(hashlib.sha256(prog.weights).digest())
    return h.hexdigest()[:32]


def summary(prog: Program) -> dict:
    kernels = []
    for st in prog.steps:
        if isinstance(st, KernelStep):
            kernels.append({"name": st.kernel.name, "ops": [op.kind for op in st.group.ops],
                            "flops": st.kernel.flops})
    return {"kernels": kernels, "host_ops": [op.kind for op in prog.host_ops],
            "arena_bytes": prog.memory.arena_bytes, "naive_bytes": prog.memory.naive_bytes,
            "lower_bound_bytes": prog.memory.lower_bound, "weights_bytes": len(prog.weights),
            "threads": prog.threads}


def host_step(st: HostStep) -> dict:
    return {"host": st.op.kind, "attrs": host_attrs(st.op),
            "inputs": [[loc.kind, loc.offset, dt, list(sh)] for loc, dt, sh in st.inputs],
            "outputs": [[loc.kind, loc.offset, dt, list(sh)] for loc, dt, sh in st.outputs]}
