"""Control flow: `if`, `loop` and `scan`, ops that hold regions (nested Functions).

A region is isolated from above: every outer value it reads is an operand of the op and an
input of the region (the frontend turns ONNX's implicit captures into them), so a region is an
ordinary function that verifies, prints, parses, interprets and compiles on its own. The branch
taken or the number of trips is decided at run time, on the host; each region's straight-line
code is compiled like any function (minicc/segmented.py). A constant condition folds away at
import (frontend/convert/control.py).

    if(cond, caps...)            {then_branch, else_branch}: both take caps, give the results
    loop(trips, cond, vs..., caps...) {body, n_carried, trips_known}: body(i, cond, vs..., caps)
                                  -> (cond, vs..., scan slices...); results: vs, then each scan
                                  output stacked along a new axis 0
    scan(states..., xs..., caps...) {body, n_states, axes and directions}: body(states, x
                                  slices..., caps) -> (states, y slices...); the ys stacked
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from minicc.ir.graph import Function
from minicc.ir.registry import Attr, Cost, FusionKind, OpDef, check, register_op
from minicc.ir.types import DType, TensorType

REGION_OPS = frozenset({"if", "loop", "scan"})
# how a region runs: (region, arrays) -> arrays. The interpreter's by default; the compiled
# path (minicc/segmented.py) passes one that runs each region's compiled code
Run = Callable[[Function, Sequence[np.ndarray]], list[np.ndarray]] | None


def regions(attrs: Mapping[str, Any]) -> list[Function]:
    return [v for v in attrs.values() if isinstance(v, Function)]


def _verify(f: Function, what: str) -> None:
    from minicc.errors import MiniccError
    from minicc.ir.verify import verify_function

    try:
        verify_function(f)
    except MiniccError as e:
        check(False, f"{what} @{f.name} does not verify: {e}")


def _takes(f: Function, types: Sequence[TensorType], what: str) -> None:
    got = [v.type for v in f.inputs]
    check(len(got) == len(types), f"{what} @{f.name} takes {len(got)} inputs, the op gives "
                                  f"{len(types)}")
    for k, (a, b) in enumerate(zip(got, types)):
        check(a.dtype == b.dtype and a.rank == b.rank,
              f"{what} @{f.name} input {k} is {a}, the op gives {b}")


def merge(a: TensorType, b: TensorType, what: str) -> TensorType:
    """One type for values that may be either: same element type and rank; dims that differ
    become unknown ("?")."""
    check(a.dtype == b.dtype, f"{what}: {a.dtype.value} and {b.dtype.value} differ")
    check(a.rank == b.rank, f"{what}: ranks {a.rank} and {b.rank} differ")
    return TensorType(a.dtype, tuple(x if x == y else "?" for x, y in zip(a.shape, b.shape)))


def _scalar(t: TensorType, dt: DType, what: str) -> None:
    check(t.dtype == dt and t.numel in (1, None) and t.rank <= 1,
          f"{what} must be one {dt.value} value, got {t}")


def as_declared(f: Function, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Arrays for the region's inputs: a one-value array takes the shape the region declares
    ([] or [1]: ONNX's loop counters and conditions come either way)."""
    out = []
    for v, a in zip(f.inputs, arrays):
        a = np.asarray(a)
        out.append(a.reshape(tuple(v.type.shape)) if a.size == 1 and v.type.numel == 1
                   and v.type.is_static else a)
    return out


def _run(f: Function, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    from minicc.ir.interpret import run_function

    out = run_function(f, dict(zip(f.input_names, as_declared(f, arrays))))
    return [out[n] for n in f.output_names]


class RegionOp(OpDef):
    """What the three share: they run on the host (their regions' code is compiled), and
    their cost is their regions' kernels, counted there."""

    host = True
    kind = FusionKind.OPAQUE

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType],
             attrs: Mapping[str, Any]) -> Cost:
        return Cost(0, 0)


@register_op
class If(RegionOp):
    name = "if"
    inputs = (1, -1)
    attrs = {"then_branch": Attr("func", doc="the region run when cond is true"),
             "else_branch": Attr("func", doc="the region run when cond is false")}
    doc = "run one of two regions, chosen by a run-time condition"

    def num_outputs(self, attrs: Mapping[str, Any]) -> int:
        return len(attrs["then_branch"].outputs)

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        t, e = attrs["then_branch"], attrs["else_branch"]
        _scalar(ins[0], DType.BOOL, "the condition")
        for f, what in ((t, "then_branch"), (e, "else_branch")):
            _verify(f, what)
            _takes(f, ins[1:], what)
        check(len(t.outputs) == len(e.outputs), f"then_branch gives {len(t.outputs)} results, "
                                                f"else_branch {len(e.outputs)}")
        return [merge(a.type, b.type, f"result {k} of the branches")
                for k, (a, b) in enumerate(zip(t.outputs, e.outputs))]

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any],
                  run: Run = None) -> list[np.ndarray]:
        run = run or _run
        taken = attrs["then_branch"] if bool(np.asarray(ins[0]).reshape(-1)[0]) \
            else attrs["else_branch"]
        return run(taken, ins[1:])


@register_op
class Loop(RegionOp):
    name = "loop"
    inputs = (2, -1)
    attrs = {"body": Attr("func", doc="(i, cond, carried..., captures...) -> (cond, "
                                      "carried..., scan slices...)"),
             "n_carried": Attr("int", 0, doc="loop-carried values"),
             "trips_known": Attr("int", -1, doc="the exact trip count when the import knows it "
                                                "(static scan outputs), else -1")}
    doc = "run a region while a trip count and a condition allow, carrying values"

    def num_outputs(self, attrs: Mapping[str, Any]) -> int:
        return len(attrs["body"].outputs) - 1

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        body, n = attrs["body"], attrs["n_carried"]
        _scalar(ins[0], DType.I64, "the trip count")
        _scalar(ins[1], DType.BOOL, "the condition")
        check(0 <= n <= len(ins) - 2, f"n_carried={n} but {len(ins) - 2} values follow")
        _verify(body, "the loop body")
        check(len(body.inputs) == len(ins), f"the loop body @{body.name} takes "
                                            f"{len(body.inputs)} inputs, the op gives {len(ins)}")
        _takes(body, [body.inputs[0].type, body.inputs[1].type] + list(ins[2:]), "the body")
        check(len(body.outputs) >= 1 + n, f"the body gives {len(body.outputs)} results, fewer "
                                          f"than the condition and {n} carried values")
        _scalar(body.outputs[0].type, DType.BOOL, "the body's condition")
        outs = [merge(ins[2 + k], body.outputs[1 + k].type, f"carried value {k}")
                for k in range(n)]
        trips = attrs["trips_known"]
        for v in body.outputs[1 + n:]:
            outs.append(TensorType(v.type.dtype, (trips if trips >= 0 else "?",) + v.type.shape))
        return outs

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any],
                  run: Run = None) -> list[np.ndarray]:
        run = run or _run
        body, n = attrs["body"], attrs["n_carried"]
        trips = int(np.asarray(ins[0]).reshape(-1)[0])
        cond = bool(np.asarray(ins[1]).reshape(-1)[0])
        carried, caps = list(ins[2:2 + n]), list(ins[2 + n:])
        scans: list[list[np.ndarray]] = [[] for _ in body.outputs[1 + n:]]
        i = 0
        while i < trips and cond:
            res = run(body, [np.array(i, np.int64), np.array(cond)] + carried + caps)
            cond = bool(np.asarray(res[0]).reshape(-1)[0])
            carried = res[1:1 + n]
            for s, y in zip(scans, res[1 + n:]):
                s.append(y)
            i += 1
        return carried + [stack(s, v.type, 0) for s, v in zip(scans, body.outputs[1 + n:])]


def stack(parts: list[np.ndarray], slice_type: TensorType, axis: int) -> np.ndarray:
    """Scan slices stacked along `axis`; none (zero trips) is an empty array of the type."""
    if parts:
        return np.stack(parts, axis=axis)
    shape = [d if isinstance(d, int) else 0 for d in slice_type.shape]
    shape.insert(axis, 0)
    return np.zeros(shape, slice_type.dtype.np)


@register_op
class Scan(RegionOp):
    name = "scan"
    inputs = (1, -1)
    attrs = {"body": Attr("func", doc="(states..., slices..., captures...) -> (states..., "
                                      "output slices...)"),
             "n_states": Attr("int", 0),
             "n_scan_inputs": Attr("int", 1),
             "scan_input_axes": Attr("ints", ()),
             "scan_input_directions": Attr("ints", (), doc="1: last slice first"),
             "scan_output_axes": Attr("ints", ()),
             "scan_output_directions": Attr("ints", (), doc="1: stacked in reverse")}
    doc = "run a region once per slice of the scan inputs, carrying states"

    def num_outputs(self, attrs: Mapping[str, Any]) -> int:
        return len(attrs["body"].outputs)

    @staticmethod
    def _axes(attrs: Mapping[str, Any], key: str, n: int) -> list[int]:
        a = list(attrs[key]) or [0] * n
        check(len(a) == n, f"{key} has {len(a)} entries for {n} values")
        return a

    def infer(self, ins: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        body, ns, m = attrs["body"], attrs["n_states"], attrs["n_scan_inputs"]
        check(m >= 1 and ns + m <= len(ins), f"n_states={ns}, n_scan_inputs={m} but the op "
                                             f"has {len(ins)} operands")
        _verify(body, "the scan body")
        in_axes = self._axes(attrs, "scan_input_axes", m)
        xs = ins[ns:ns + m]
        trips = set()
        slices = []
        for k, (t, ax) in enumerate(zip(xs, in_axes)):
            check(0 <= ax < t.rank, f"scan input {k} ({t}) has no axis {ax}")
            trips.add(t.shape[ax])
            slices.append(TensorType(t.dtype, t.shape[:ax] + t.shape[ax + 1:]))
        static = {d for d in trips if isinstance(d, int)}
        check(len(static) <= 1, f"scan inputs disagree on the scan length "
                                f"({sorted(map(str, trips))})")
        trip = static.pop() if static else next(iter(trips)) if len(trips) == 1 else "?"
        _takes(body, list(ins[:ns]) + slices + list(ins[ns + m:]), "the scan body")
        check(len(body.outputs) >= ns, f"the body gives {len(body.outputs)} results for {ns} "
                                       "states")
        outs = [merge(ins[k], body.outputs[k].type, f"state {k}") for k in range(ns)]
        ys = body.outputs[ns:]
        for v, ax in zip(ys, self._axes(attrs, "scan_output_axes", len(ys))):
            check(0 <= ax <= v.type.rank, f"scan output axis {ax} for a slice {v.type}")
            outs.append(TensorType(v.type.dtype, v.type.shape[:ax] + (trip,) +
                                   v.type.shape[ax:]))
        return outs

    def reference(self, ins: Sequence[np.ndarray], attrs: Mapping[str, Any],
                  run: Run = None) -> list[np.ndarray]:
        run = run or _run
        body, ns, m = attrs["body"], attrs["n_states"], attrs["n_scan_inputs"]
        in_axes = self._axes(attrs, "scan_input_axes", m)
        in_dirs = list(attrs["scan_input_directions"]) or [0] * m
        ys_t = [v.type for v in body.outputs[ns:]]
        out_axes = self._axes(attrs, "scan_output_axes", len(ys_t))
        out_dirs = list(attrs["scan_output_directions"]) or [0] * len(ys_t)
        states, xs, caps = list(ins[:ns]), list(ins[ns:ns + m]), list(ins[ns + m:])
        trips = xs[0].shape[in_axes[0]]
        ys: list[list[np.ndarray]] = [[] for _ in ys_t]
        for t in range(trips):
            sl = [np.take(x, trips - 1 - t if d else t, axis=ax)
                  for x, ax, d in zip(xs, in_axes, in_dirs)]
            res = run(body, states + sl + caps)
            states = res[:ns]
            for acc, y in zip(ys, res[ns:]):
                acc.append(y)
        outs = list(states)
        for acc, t, ax, d in zip(ys, ys_t, out_axes, out_dirs):
            outs.append(stack(acc[::-1] if d else acc, t, ax))
        return outs
