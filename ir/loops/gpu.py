"""GPU schedules on the loop IR: the same fused groups, nests and compute definitions as the CPU
path, bound to thread blocks and threads.

- `gpu.elementwise` (elementwise and injective groups, and reductions too small to share): one
  thread per output element: the loops fused into one, split by the block size with a guard,
  bound to block.x and thread.x (past 65536 blocks the grid loops: a grid-stride loop);
- `gpu.row_reduce` (reductions whose rows are independent: softmax, layer norm, pooling over a
  row, reduce ops): one block per row, threads stride over the row and combine with a block
  all-reduce (warp shuffles, then one value per warp through shared memory);
- `gpu.gemm` (gpu_gemm.py): matmul and implicit-GEMM convolution tiled through shared memory.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from minicc.errors import CodegenError, ScheduleError
from minicc.ir.loops.block_reduce import reduction_size, row_reducible
from minicc.ir.loops.exprs import reduces_in
from minicc.ir.loops.gpu_gemm import GpuGemm
from minicc.ir.loops.gpu_mma import GpuMma
from minicc.ir.loops.nodes import Kernel, Store, band
from minicc.ir.loops.reductions import has_reduces, reduction_vars
from minicc.ir.loops.schedule import KnobSpace, LowerCtx, Lowered, Rule, schedule_group
from minicc.ir.loops.trace import Step, step
from minicc.ir.types import DType

I64 = DType.I64
F32 = DType.F32
MAX_BLOCKS = 1 << 16   # elementwise grids stop growing here and loop (grid-stride)
CUDA_DTYPES = {DType.F32, DType.F64, DType.I32, DType.I64, DType.I8, DType.U8, DType.I16,
               DType.U16, DType.U32, DType.U64, DType.BOOL}
THREADS = (32, 64, 128, 256, 512, 1024)


def check_dtypes(ctx: LowerCtx) -> None:
    for op in ctx.group.ops:
        for v in list(op.inputs) + list(op.outputs):
            if v.type.dtype not in CUDA_DTYPES:
                raise CodegenError(f"cuda: {op.describe()} uses {v.type.dtype.value}, which the "
                                   "CUDA backend does not support yet")


def _store(k: Kernel) -> Store:
    _, inner = band(k.body)
    if not isinstance(inner, Store):
        raise ScheduleError(f"kernel {k.name}: expected one store under the loops")
    return inner


# ---- one thread per output element ----------------------------------------------------------

class GpuElementwise(Rule):
    name = "gpu.elementwise"

    def applies(self, ctx: LowerCtx) -> bool:
        return True

    def space(self, ctx: LowerCtx) -> KnobSpace:
        return {"threads": tuple(sorted(set(THREADS) | {self.defaults(ctx)["threads"]}))}

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """Whole warps, no more than the tensor needs, at most 256."""
        n = ctx.bufs[ctx.group.output].numel
        return {"threads": min(256, max(32, -(-n // 32) * 32))}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        axes, _ = band(ctx.nest.body)
        t = knobs["threads"]
        out: list[Step] = []
        name, n = axes[0]
        for a, e in axes[1:]:
            out.append(step("fuse", name, a))
            name, n = f"{name}_{a}", n * e
        blocks = -(-n // t)
        if blocks <= MAX_BLOCKS:
            out += [step("split", name, t, guard=True), step("bind", f"{name}.o", "block.x"),
                    step("bind", f"{name}.i", "thread.x")]
        else:   # grids of MAX_BLOCKS blocks, looped over (a grid-stride loop)
            q = f"{name}.i"
            out += [step("split", name, MAX_BLOCKS * t, guard=True), step("split", q, t),
                    step("reorder", f"{q}.o", f"{q}.i", f"{name}.o"),
                    step("bind", f"{q}.o", "block.x"), step("bind", f"{q}.i", "thread.x")]
        if has_reduces(ctx.nest.body):
            out.append(step("compute_at"))
        return out


# ---- one block per row ----------------------------------------------------------------------

class GpuRowReduce(Rule):
    name = "gpu.row_reduce"

    def _shape(self, ctx: LowerCtx) -> tuple[list, int, int]:
        """The reductions, the number of outputs per row, the longest reduction."""
        reds = reduces_in(_store(ctx.nest).value)
        axes, _ = band(ctx.nest.body)
        rows = reduction_vars(ctx.nest.body)[0]
        n_inner = int(np.prod([e for a, e in axes if a not in rows]))
        return reds, n_inner, reduction_size(reds) if reds else 0

    def applies(self, ctx: LowerCtx) -> bool:
        reds, n_inner, size = self._shape(ctx)
        return bool(reds) and row_reducible(reds) and (n_inner > 1 or size >= 64)

    def space(self, ctx: LowerCtx) -> KnobSpace:
        return {"threads": THREADS}

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """The row's width rounded up to a power of two, 32 to 256 threads."""
        _, n_inner, size = self._shape(ctx)
        width = max(n_inner, size, 1)
        return {"threads": max(32, min(256, 1 << (width - 1).bit_length()) // 32 * 32)}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        return [step("block_reduce", knobs["threads"])]


GPU_RULES: tuple[Rule, ...] = (GpuMma(), GpuGemm(), GpuRowReduce(), GpuElementwise())


def lower_gpu(ctx: LowerCtx, knobs: Mapping[str, Any] | None = None) -> Lowered:
    """The scheduled kernel for one group on a GPU target."""
    check_dtypes(ctx)
    return schedule_group(ctx, GPU_RULES, knobs)
