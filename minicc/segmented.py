"""Compiled models with run-time control flow (`if`, `loop`, `scan`: ir/ops/control.py) or
with results whose size the data decides (NonZero, Unique, Compress, NonMaxSuppression, TopK
with a run-time k: host ops whose types keep a "?" dim).

The function is cut at each region op. Every straight-line run of ops between them becomes a
function of its own, compiled to native code like any model (fused kernels, one native call);
a region op runs on the host: it reads its condition or trip count, then runs the region it
chose, compiled the same way (recursively, for nested regions), once per trip for a loop.
Values cross between segments as numpy arrays.

A segment whose inputs have unknown dims (the stacked outputs of a loop whose trip count is
known only at run time, or branches whose results differ in shape) compiles per input shape
on first sight, as a dynamic model does (minicc/dynamic.py), and so does a loop body whose
carried values change shape from one trip to the next.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.errors import MiniccError
from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Function, Module, Op, Value
from minicc.ir.ops.control import REGION_OPS, as_declared
from minicc.ir.registry import full_attrs, get_op
from minicc.ir.types import DType, TensorType
from minicc.options import CompileOptions


def host_step(op: Op) -> bool:
    """Ops the function is cut at: regions, and host ops whose result size the data decides
    (NonZero, Unique, ... through onnx's reference): what follows them compiles per shape."""
    return op.kind in REGION_OPS or (get_op(op.kind).host and not all(
        v.type.is_static for v in op.outputs)) or any(
        v.type.dtype == DType.STR for v in op.inputs + op.outputs)    # strings stay on the host


def has_regions(f: Function) -> bool:
    """Whether the function must run as segments (control flow or data-dependent sizes)."""
    return any(host_step(op) for op in f.ops)


def retype(f: Function, shapes: Sequence[tuple[int, ...]]) -> Function:
    """`f` with its inputs given these static shapes: every op rebuilt, so shapes infer
    again (and shape arithmetic folds) for them."""
    b = GraphBuilder(f.name, fold=True)
    env: dict[Value, Value] = {}
    for v, n, s in zip(f.inputs, f.input_names, shapes):
        env[v] = b.input(TensorType(v.type.dtype, tuple(s)), n)
    for op in f.ops:
        if op.kind == "const":
            b.add(op)
            env[op.output] = op.output
            continue
        outs = b.op(op.kind, [env[v] for v in op.inputs], op.attrs,
                    [v.name_hint for v in op.outputs], op.loc)
        env.update(zip(op.outputs, outs))
    return b.finish([env[v] for v in f.outputs], f.output_names)


class Runner:
    """Runs one function on arrays (in its input order), compiled: once for its declared
    types where they are static, else once per input shape seen."""

    def __init__(self, f: Function, options: CompileOptions, log: list[str]):
        self.f, self.o, self.log = f, options, log
        self._by_shape: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        xs = [a if a.flags.c_contiguous else a.copy() for a in as_declared(self.f, arrays)]
        key = tuple(x.shape for x in xs)
        run = self._by_shape.get(key)
        if run is None:
            with self._lock:
                run = self._by_shape.get(key) or self._build(key)
                self._by_shape[key] = run
        return run(xs)

    def _build(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        f = self.f
        declared = tuple(tuple(v.type.shape) for v in f.inputs)
        if declared != shapes:
            f = retype(f, shapes)
        if has_regions(f):
            seg = Segmented(f, self.o, self.log)
            return seg.run_arrays
        if not any(op.kind != "const" for op in f.ops):     # nothing to compile
            from minicc.ir.interpret import run_function

            return lambda xs: [run_function(f, dict(zip(f.input_names, xs)))[n]
                               for n in f.output_names]
        from minicc.driver import compile

        t = time.perf_counter()
        cm = compile(Module((f.replace(name="main"),)), options=self.o)
        if declared != shapes:
            self.log.append(f"compiled @{self.f.name} for input shapes "
                            f"{[list(s) for s in shapes]} in {time.perf_counter() - t:.2f} s")
        names, outs = list(f.input_names), list(f.output_names)
        return lambda xs: [r[n] for r in (cm.run(dict(zip(names, xs))),) for n in outs]


class Segmented:
    """A function with region ops, cut into compiled segments and host-run regions."""

    def __init__(self, f: Function, options: CompileOptions, log: list[str]):
        self.f, self.o, self.log = f, options, log
        self.steps: list[tuple[str, Any, list[Value], list[Value]]] = []
        self.consts = {op.output: op.attrs["value"].array for op in f.ops if op.kind == "const"}
        later: list[set[Value]] = [set() for _ in range(len(f.ops) + 1)]
        later[len(f.ops)] = set(f.outputs)
        for i in range(len(f.ops) - 1, -1, -1):        # values used at or after op i
            later[i] = later[i + 1] | set(f.ops[i].inputs)
        run: list[Op] = []
        for i, op in enumerate(f.ops):
            if host_step(op):
                self._segment(run, later[i])
                run = []
                self.steps.append(("region", op, list(op.inputs), list(op.outputs)))
            elif op.kind != "const":
                run.append(op)
        self._segment(run, later[len(f.ops)])
        self._runners: dict[int, Runner] = {}
        self._prepare()

    def _prepare(self) -> None:
        """Compile now every segment and region whose input types are static (what is fed by
        a size only a run tells compiles when it first sees that size)."""
        for kind, what, _, _ in self.steps:
            fns = [what] if kind == "native" else [
                self._region_runner(g) for g in what.attrs.values() if isinstance(g, Function)]
            for r in fns:
                if all(v.type.is_static for v in r.f.inputs):
                    key = tuple(tuple(v.type.shape) for v in r.f.inputs)
                    with r._lock:
                        if key not in r._by_shape:
                            r._by_shape[key] = r._build(key)

    def _segment(self, ops: list[Op], used_after: set[Value]) -> None:
        if not ops:
            return
        defined = {v for op in ops for v in op.outputs}
        ins: list[Value] = []
        consts: list[Op] = []
        for op in ops:
            for v in op.inputs:
                if v in defined or v in ins or any(c.output is v for c in consts):
                    continue
                prod = self.f.producers.get(v)
                if prod is not None and prod.kind == "const":
                    consts.append(prod)      # weights stay constants of the segment
                else:
                    ins.append(v)
        outs = [v for op in ops for v in op.outputs if v in used_after]
        k = len(self.steps)
        fn = Function(f"{self.f.name}_seg{k}", tuple(ins), tuple(consts + ops), tuple(outs),
                      tuple(f"in{j}" for j in range(len(ins))),
                      tuple(f"out{j}" for j in range(len(outs))))
        self.steps.append(("native", Runner(fn, self.o, self.log), ins, outs))

    def _region_runner(self, region: Function) -> Runner:
        r = self._runners.get(id(region))
        if r is None:
            r = self._runners[id(region)] = Runner(region, self.o, self.log)
        return r

    def run_arrays(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        env: dict[Value, np.ndarray] = dict(self.consts)
        env.update(zip(self.f.inputs, xs))
        for kind, what, ins, outs in self.steps:
            args = [env[v] for v in ins]
            if kind == "native":
                res = what(args)
            else:
                op: Op = what
                at = full_attrs(op.kind, op.attrs)
                res = get_op(op.kind).reference(   # type: ignore[call-arg]
                    args, at, run=lambda g, a: self._region_runner(g)(a)) \
                    if op.kind in REGION_OPS else get_op(op.kind).reference(args, at)
            env.update(zip(outs, (np.asarray(r) for r in res)))
        return [env[v] for v in self.f.outputs]

    def describe(self) -> list[str]:
        lines = []
        for kind, what, ins, outs in self.steps:
            if kind == "native":
                n = sum(op.kind != "const" for op in what.f.ops)
                lines.append(f"  native segment @{what.f.name}: {n} ops, {len(ins)} inputs, "
                             f"{len(outs)} outputs")
            elif what.kind in REGION_OPS:
                subs = ", ".join(f"@{g.name}" for g in what.attrs.values()
                                 if isinstance(g, Function))
                lines.append(f"  {what.kind} on the host, regions {subs}")
            else:
                name = what.attrs.get("op_type", what.kind)
                lines.append(f"  {name} on the host (its result size depends on the data)")
        return lines


class SegmentedModel:
    """A compiled model with run-time control flow. Called like a CompiledModel; each segment
    and region compiles when it first runs (a compile-cache hit after the first time)."""

    def __init__(self, f: Function, options: CompileOptions, report: Any,
                 source: bytes | str | None = None):
        self.source = source            # the ONNX model (bytes, or a path), for save()
        self.function = f
        self.options = replace(options, input_shapes=None, dump=())
        self.report = report
        self._seg = Segmented(f, self.options, report.notes)

    @property
    def input_names(self) -> list[str]:
        return list(self.function.input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self.function.output_names)

    @property
    def target(self) -> str:
        return self.options.target

    @property
    def threads(self) -> int:
        return self.options.threads or 1

    @property
    def artifact(self) -> Any:
        raise MiniccError("this model has run-time control flow (if/loop/scan): it is compiled "
                          "as segments, each its own artifact, with no single artifact to show")

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from minicc.ir.interpret import check_inputs

        xs, _ = check_inputs(self.function, inputs)
        outs = self._seg.run_arrays(xs)
        return dict(zip(self.function.output_names, outs))

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        return self.run(inputs)

    def summary(self) -> str:
        return "\n".join(["segmented: native segments between host steps (control flow, "
                          "data-dependent sizes)"]
                         + self._seg.describe())

    def save(self, path: Any) -> Any:
        """The ONNX model and the options, as a dynamic model's archive (minicc/dynamic.py):
        `minicc.load` gives a model that compiles its segments when it first runs (a cache
        hit where this machine compiled them before). One artifact for all the segments and
        regions is not built yet."""
        from minicc.dynamic import DynamicModel, signature_of

        if self.source is None:
            raise MiniccError("saving a model with run-time control flow needs it compiled "
                              "from an ONNX model (not a Module or .mir file)")
        f = self.function
        dm = DynamicModel(self.source, signature_of(
            list(zip(f.input_names, (v.type for v in f.inputs))), {}), f.output_names,
            self.options)
        return dm.save(path)
