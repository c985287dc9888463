"""What both code generators derive from a Program the same way: the compile-cache key (computed
here and nowhere else) and the summary stored in the artifact."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from minicc import abi, options
from minicc.abi import HostCall, step_to_json
from minicc.ir.build import build_id
from minicc.ir.cost import Cost, analyze
from minicc.ir.loops.printer import print_kernel
from minicc.ir.loops.trace import format_schedule
from minicc.ir.program import KernelStep, Program
from minicc.options import CompileOptions, Target


def cache_key(prog: Program, opts: CompileOptions, target: Target, version: str) -> str:
    """Everything the generated code depends on: the compiler itself, the target, every option
    that changes code (`CompileOptions.code_key`), the scheduled loop IR of every kernel, where
    each tensor lives, the host steps and the weights."""
    h = hashlib.sha256("|".join([build_id(), version, repr(target), opts.code_key()]).encode())
    h.update(repr((prog.inputs, prog.outputs, prog.output_sources,
                   prog.memory.arena_bytes, prog.threads)).encode())
    for st in prog.steps:
        if isinstance(st, KernelStep):
            h.update(print_kernel(st.kernel).encode())
            h.update(repr(st.args).encode())
        else:
            h.update(repr(step_to_json(st)).encode())
    h.update(hashlib.sha256(prog.weights).digest())
    return h.hexdigest()[:32]


def summary(prog: Program) -> dict:
    """What the artifact tells about itself: each kernel's ops, cost (ir/cost.py: FLOPs, bytes
    read and written, parameters) and schedule; the host steps' costs; the memory plan."""
    costs = analyze(prog.function, prog.partition)
    by_name = {r.name: r for r in costs.kernels + costs.host}

    def cost(name: str) -> dict:
        r = by_name.get(name)
        c = r.cost if r is not None else Cost()
        return {"bytes_read": c.bytes_read, "bytes_written": c.bytes_written,
                "params": c.params, "output": r.shape if r is not None else ""}
    kernels = [{"name": st.kernel.name, "ops": [op.kind for op in st.group.ops],
                "flops": st.kernel.flops, **cost(st.kernel.name),
                "schedule": format_schedule(st.kernel.schedule, st.kernel.trace)}
               for st in prog.kernel_steps]
    host = [{"name": r.name, "ops": r.what.split("+"), "flops": r.cost.flops, **cost(r.name)}
            for r in costs.host]
    return {"kernels": kernels, "host": host,
            "host_ops": [st.op for st in prog.steps if isinstance(st, HostCall)],
            "arena_bytes": prog.memory.arena_bytes, "naive_bytes": prog.memory.naive_bytes,
            "lower_bound_bytes": prog.memory.lower_bound, "weights_bytes": len(prog.weights),
            "threads": prog.threads, "target": prog.target.describe()}
