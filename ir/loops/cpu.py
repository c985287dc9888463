"""CPU schedules: the GEMM template for groups whose anchor names one (gemm.py), the depthwise
conv template (depthwise.py), the 2-D pool template (pool.py), and `cpu.loops` for everything
else (elementwise, injective, reductions), whose default schedule is

    fuse      the innermost axes, pairwise, while every access stays affine in the merged loop
    reorder   the axes the reductions read go outside, so each reduction runs once per row
    split     the innermost loop by the vector width (when it is longer), and
    vectorize it (a masked tail)
    compute_at   each reduction into an accumulator at the outermost loop that binds its inputs
    parallel  the outermost loop, for kernels big enough to share

Knobs: `lanes` (1 = scalar code) and `parallel`.
"""

from __future__ import annotations

from typing import Any, Mapping

from minicc.ir.loops.exprs import expr_loads, flat_offset, linear_coef, reduces_in
from minicc.ir.loops.depthwise import CpuDepthwise
from minicc.ir.loops.pool import CpuPool
from minicc.ir.loops.gemm import CpuGemm
from minicc.ir.loops.nest import group_flops
from minicc.ir.loops.nodes import Kernel, Stmt, Store, band, walk
from minicc.ir.loops.primitives import fuse
from minicc.ir.loops.reductions import has_reduces, reduction_vars
from minicc.ir.loops.schedule import KnobSpace, LowerCtx, Lowered, Rule, schedule_group
from minicc.ir.loops.trace import Step, step
from minicc.ir.loops.winograd import CpuWinograd

PARALLEL_MIN_WORK = 1 << 14     # output elements below which a kernel runs on one thread
# and below which one of at most 2 FLOPs per element (a squeeze-excite block's channel scale)
# does: what it streams was written by both cores, and each core fetching the other's half
# costs more than the split saves. A Xeon, 2 threads: efficientnet_b0_like 5% faster with
# its 16 such kernels (0.3-0.45M elements) on one thread, mobilenetv3_like 3.5%; kernels that
# only move data (yolov8n_like's, minilm_like's) measured better shared, so they still are
PARALLEL_MIN_STREAM = 1 << 20
# a reduction into fewer elements than PARALLEL_MIN_WORK still shares them when it reads this
# many: a squeeze-excite block's global average pool (144 channels of 56x56) reads what the
# depthwise conv before it wrote on both cores, channels split as it splits them. A Xeon, 2
# threads, five runs: efficientnet_b0_like 2-4% faster, mobilenetv3_like 2-4%
PARALLEL_MIN_REDUCE = 1 << 15


def _stores(s: Stmt) -> list[Store]:
    return [x for x in walk(s) if isinstance(x, Store)]


def _affine(s: Stmt, var: str) -> bool:
    """Every address a store writes or a load reads is affine in `var`."""
    for st in _stores(s):
        accesses = [(st.buf, st.index)] + [(ld.buf, ld.index) for ld in expr_loads(st.value)]
        if any(linear_coef(flat_offset(idx, buf.shape), var) is None for buf, idx in accesses):
            return False
    return True


def _reduce_gathers(s: Stmt, var: str, lanes: int) -> bool:
    """Whether a reduction in `s` reads `var` at a stride other than 0 or 1 while its own
    innermost axis runs contiguously: vectorizing `var` would gather (a global average pool
    over NCHW with the channels in the lanes: efficientnet_b0_like's 17 pools took 0.40 ms),
    where vectors along the reduction's run load straight."""
    for st in _stores(s):
        for r in reduces_in(st.value):
            inner = r.axes[-1][0].name
            offs = [flat_offset(ld.index, ld.buf.shape) for ld in expr_loads(r.body)]
            coefs = [linear_coef(o, var) for o in offs]
            size = 1
            for _, n in r.axes:
                size *= n
            # strides of 2-4 load as shuffles (a pool's windows), not gathers
            if size >= lanes and any(c is None or abs(c) > 4 for c in coefs) and \
                    all(linear_coef(o, inner) in (0, 1) for o in offs):
                return True
    return False


def loops_steps(nest: Kernel, lanes: int, parallel: bool) -> list[Step]:
    """The default schedule of a loop nest (see the module docstring)."""
    axes, _ = band(nest.body)
    body = nest.body
    steps: list[Step] = []
    while len(axes) >= 2:
        (a, ea), (b, eb) = axes[-2], axes[-1]
        trial = fuse(body, a, b)
        if not _affine(trial, f"{a}_{b}"):
            break
        steps.append(step("fuse", a, b))
        body, axes = trial, axes[:-2] + [(f"{a}_{b}", ea * eb)]
    red, _ = reduction_vars(body)
    order = [x for x in axes if x[0] in red] + [x for x in axes if x[0] not in red]
    if order != axes:
        steps.append(step("reorder", *(n for n, _ in order)))
    loops = [n for n, _ in order]
    reduce_lanes = lanes > 1 and order and _reduce_gathers(body, order[-1][0], lanes)
    if reduce_lanes:
        pass        # the reductions take the vectors (compute_at(lanes=...)), not this axis
    elif lanes > 1 and order and order[-1][1] > 1:
        v, n = order[-1]
        if n > lanes:
            steps += [step("split", v, lanes), step("vectorize", f"{v}.i", lanes)]
            loops[-1:] = [f"{v}.o", f"{v}.i"]
        else:
            steps.append(step("vectorize", v, lanes))
            loops.pop()
    if has_reduces(body):
        steps.append(step("compute_at", lanes=lanes) if reduce_lanes else step("compute_at"))
    if parallel and loops and dict(order).get(loops[0], 2) > 1:
        steps.append(step("parallel", loops[0]))
    return steps


class CpuLoops(Rule):
    """`cpu.loops`: a group's own loop nest, scheduled with primitives."""

    name = "cpu.loops"

    def applies(self, ctx: LowerCtx) -> bool:
        return True

    def space(self, ctx: LowerCtx) -> KnobSpace:
        L = ctx.target.lanes
        lanes = sorted({1} | {L // d for d in (1, 2, 4) if L // d >= 4})
        return {"lanes": tuple(lanes),
                "parallel": (False, True) if ctx.threads > 1 else (False,)}

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """The widest vectors; threads for kernels of 16K elements or more (1M for streaming
        ones, see PARALLEL_MIN_STREAM; reductions that read PARALLEL_MIN_REDUCE elements
        whatever their output) whose reductions each depend on some loop (one over the whole
        tensor runs before every loop)."""
        numel = ctx.bufs[ctx.group.output].numel
        whole = reduction_vars(ctx.nest.body)[1]
        flops = group_flops(ctx.group)
        reduces = has_reduces(ctx.nest.body)
        stream = 0 < flops <= 2 * numel and not reduces
        least = PARALLEL_MIN_STREAM if stream else PARALLEL_MIN_WORK
        big = numel >= least or (reduces and flops >= PARALLEL_MIN_REDUCE and
                                 numel >= 4 * ctx.threads)
        return {"lanes": ctx.target.lanes,
                "parallel": ctx.threads > 1 and big and not whole}

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        return loops_steps(ctx.nest, knobs["lanes"], knobs["parallel"])


CPU_RULES: tuple[Rule, ...] = (CpuWinograd(), CpuGemm(), CpuDepthwise(), CpuPool(), CpuLoops())


def lower_group_cpu(ctx: LowerCtx, knobs: Mapping[str, Any] | None = None) -> Lowered:
    """The scheduled kernel for one group on a CPU target."""
    return schedule_group(ctx, CPU_RULES, knobs)
