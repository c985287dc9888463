"""The scheduler: one place where a group's loop nest gets its schedule.

A schedule rule (`Rule`) is a family of schedules for the groups it applies to. It declares a
knob space (names and allowed values: what a tuner searches), picks a default point in it from
the group's pattern, shapes and target, turns any point into a list of steps (`trace.Step`), and
turns steps into a kernel: the generic rules replay the steps as primitives on the nest lowered
from the group's compute definitions (`nest.build_nest`); the GEMM templates read their steps as
the knobs of a register-blocked micro-kernel. A kernel records its rule and steps, so its schedule
prints as text and text rebuilds it (`CompileOptions.schedules` maps kernel names to such text).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from minicc.errors import ScheduleError
from minicc.ir.graph import Value
from minicc.ir.loops.nest import build_nest
from minicc.ir.loops.nodes import Buffer, Kernel
from minicc.ir.loops.primitives import apply_steps
from minicc.ir.loops.trace import Step, parse_schedule
from minicc.ir.passes.fuse import Group
from minicc.options import CompileOptions, Target

KnobSpace = dict[str, tuple[Any, ...]]


# a template's kernel of fewer FLOPs runs on one thread by default (the tuner may still share
# it): a GOMP region costs about a microsecond here, more than splitting a kernel of a few
# microseconds saves. Zen 4, 2 threads, alternated: lstm 22.6 -> 9.3 us (1 thread: 9.3), a
# MobileNetV2-like at 64x64 113.6 -> 100.6, bert_like 52.6 -> 48.1, resnet18_like 168.5 ->
# 164.9; light_squeezenet and light_shufflenet even
PARALLEL_MIN_FLOPS = 300_000


@dataclass(frozen=True)
class LowerCtx:
    """What a schedule rule sees of one group: its kernel name, the buffers of the tensors it
    reads and writes, the constants, and the target and options of the compile."""

    name: str
    group: Group
    bufs: Mapping[Value, Buffer]
    consts: Mapping[Value, np.ndarray]
    target: Target
    opts: CompileOptions
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def threads(self) -> int:
        """The threads the kernel is scheduled for (the options', resolved by the driver)."""
        return self.opts.threads or 1

    @cached_property
    def default_threads(self) -> int:
        """The threads a template's defaults share the kernel between: one for a kernel of
        under PARALLEL_MIN_FLOPS, whose split saves less than a parallel region costs."""
        from minicc.ir.loops.nest import group_flops

        return self.threads if group_flops(self.group) >= PARALLEL_MIN_FLOPS else 1

    @cached_property
    def nest(self) -> Kernel:
        """The group's loop nest before scheduling (built once)."""
        return build_nest(self.name, self.group, self.bufs, self.consts)

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """What rules derive from the group (a GEMM view, ...), computed once per group."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


@dataclass
class Lowered:
    kernel: Kernel
    packed: dict[Buffer, np.ndarray] = field(default_factory=dict)   # weights packed now
    nest: Kernel | None = None          # the loop nest before scheduling (for dumps)
    origin: str = "default"             # where the schedule came from: default, text, log
    note: str = ""                      # something the user should hear about it


class Rule:
    """A family of schedules (see the module docstring). Subclasses set `name` and override
    `applies`, `space`, `defaults` and `steps`; templates also override `apply`."""

    name = ""

    def applies(self, ctx: LowerCtx) -> bool:
        raise NotImplementedError

    def space(self, ctx: LowerCtx) -> KnobSpace:
        """Every knob with the values it may take for this group."""
        raise NotImplementedError

    def defaults(self, ctx: LowerCtx) -> dict[str, Any]:
        """The point of the space chosen without tuning."""
        raise NotImplementedError

    def steps(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> list[Step]:
        raise NotImplementedError

    def apply(self, ctx: LowerCtx, steps: Sequence[Step]) -> Lowered:
        """The default: replay the steps as primitives on the group's loop nest."""
        return Lowered(apply_steps(ctx.nest, tuple(steps)))

    def invalid(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> str | None:
        """Why a point of the space (a product of the knobs' values) cannot be built, if it
        cannot: the constraints between knobs (a tuner skips such points)."""
        return None

    def check_knobs(self, ctx: LowerCtx, knobs: Mapping[str, Any]) -> None:
        space = self.space(ctx)
        bad = [f"{k}={v!r} (allowed: {space.get(k)})" for k, v in knobs.items()
               if k not in space or v not in space[k]]
        missing = [k for k in space if k not in knobs]
        why = self.invalid(ctx, knobs) if not (bad or missing) else None
        if bad or missing or why:
            raise ScheduleError(f"kernel {ctx.name}: {self.name} knobs outside the space: "
                                f"{'; '.join(bad + [f'{k} missing' for k in missing])}"
                                + (why or ""))


def schedule_group(ctx: LowerCtx, rules: Sequence[Rule],
                   knobs: Mapping[str, Any] | None = None) -> Lowered:
    """The kernel for one group: from the schedule text `ctx.opts.schedules` gives for it, else
    from `knobs` (a point of the first applicable rule's space), else from the best record of
    `ctx.opts.tuning_log` for its workload on this machine, else from the rule's defaults."""
    text = (ctx.opts.schedules or {}).get(ctx.name)
    if text is not None:
        return _build(ctx, *_from_text(ctx, rules, text), {}, "text")
    note = ""
    if knobs is None and ctx.opts.tuning_log:
        rec = _record(ctx)
        if rec is not None:
            try:
                return _build(ctx, *_from_text(ctx, rules, rec), {}, "log")
            except ScheduleError as e:          # a record from another compiler, say
                note = f"kernel {ctx.name}: its tuning record does not apply ({e})"
    rule = next((r for r in rules if r.applies(ctx)), None)
    if rule is None:
        raise ScheduleError(f"kernel {ctx.name}: no schedule rule applies to "
                            f"{ctx.group.describe()}")
    chosen = dict(knobs) if knobs is not None else rule.defaults(ctx)
    if knobs is not None:
        rule.check_knobs(ctx, chosen)
    low = _build(ctx, rule, tuple(rule.steps(ctx, chosen)), chosen, "default")
    low.note = note
    return low


def _build(ctx: LowerCtx, rule: Rule, steps: tuple[Step, ...], knobs: dict[str, Any],
           origin: str) -> Lowered:
    low = rule.apply(ctx, steps)
    low.kernel = replace(low.kernel, schedule=rule.name, trace=tuple(steps), knobs=knobs)
    low.origin = origin
    if "loops" in ctx.opts.dump:
        low.nest = ctx.nest
    return low


def _record(ctx: LowerCtx) -> str | None:
    """The schedule of the fastest good record for this kernel's workload on this machine."""
    from minicc.ir.loops.tuning import kernel_workload, load_log, machine_key

    rec = load_log(ctx.opts.tuning_log or "").best(kernel_workload(ctx), machine_key(ctx.target),
                                                   ctx.threads)
    return rec.schedule if rec is not None else None


def _from_text(ctx: LowerCtx, rules: Sequence[Rule], text: str) -> tuple[Rule, tuple[Step, ...]]:
    name, steps = parse_schedule(text)
    rule = next((r for r in rules if r.name == name), None)
    if rule is None:
        raise ScheduleError(f"kernel {ctx.name}: no schedule rule '{name}' for target "
                            f"{ctx.target.name} (rules: {', '.join(r.name for r in rules)})")
    if not getattr(rule, "legal", rule.applies)(ctx):   # (a rule may build more than its default)
        raise ScheduleError(f"kernel {ctx.name}: rule {name} does not apply to "
                            f"{ctx.group.describe()}")
    return rule, steps


def rule_for(kernel: Kernel, rules: Sequence[Rule]) -> Rule:
    return next(r for r in rules if r.name == kernel.schedule)
