"""Post-training INT8 quantization: calibrate, rewrite, and measure what it costs in accuracy.

    q = minicc.quantize("model.onnx", "calib/", method="entropy")   # a Quantized
    cm = minicc.compile(q.module)                                   # int8 kernels (VNNI here)
    q.sensitivity()                                                 # per layer, the error it adds

The float model runs compiled over the calibration batches with every quantized layer's input
as an extra output; calibration.py turns what it saw into ranges; ir/passes/int8.py rewrites the
graph. Layers named in `keep_float` (ONNX node names) stay float: mixed precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from minicc.calibration import (METHODS, Observer, QParams, calibration_batches, observe,
                                tensor_range)
from minicc.errors import MiniccError
from minicc.ir.graph import Function, Module, Value
from minicc.ir.passes.int8 import Quantizable, int8_rewrite, quantizable


@dataclass
class LayerError:
    """What quantizing one layer alone does to the model's output."""

    name: str
    op: str
    rel_l2: float             # ||y_q - y|| / ||y|| over the batches (first output)
    top1: float | None        # agreement of the argmax with the float model (classifiers)


@dataclass
class Quantized:
    """A quantized model: the int8 module, and what it was made from."""

    module: Module
    float_module: Module = field(repr=False)
    method: str
    layers: list[str]                                   # quantized, in graph order
    kept_float: list[str]
    params: dict[str, QParams]                          # layer -> its activation's qparams
    ranges: dict[str, tuple[float, float]]
    feeds: list[dict[str, np.ndarray]] = field(repr=False, default_factory=list)
    threads: int | None = None
    per_channel: bool = True
    # (scale, zero point) of each quantized activation, by graph value of `float_module`
    value_qparams: dict[Value, tuple[float, int]] = field(repr=False, default_factory=dict)

    def with_float(self, names: Sequence[str]) -> "Quantized":
        """The same calibration with the layers `names` kept in float too."""
        keep = set(self.kept_float) | set(_check_names(self.float_module.main, names))
        f = self.float_module.main
        only = {q.op for q in quantizable(f) if q.name in self.layers and q.name not in keep}
        m = self.float_module.with_main(int8_rewrite(f, self.value_qparams, only, self.per_channel))
        return replace(self, module=m, kept_float=sorted(keep),
                       layers=[q.name for q in quantizable(f) if q.op in only])

    def error(self, module: Module | None = None) -> tuple[float, float | None]:
        """(relative L2 error, top-1 agreement) of `module` (default: this one) against the
        float model on the calibration batches."""
        ref = _outputs(self.float_module, self.feeds, self.threads)
        got = _outputs(module or self.module, self.feeds, self.threads)
        return _compare(ref, got)

    def sensitivity(self, progress: bool = True) -> list[LayerError]:
        """Quantize one layer at a time (the others float) and measure the output error each
        causes, worst first."""
        f = self.float_module.main
        ref = _outputs(self.float_module, self.feeds, self.threads)
        out = []
        qs = [q for q in quantizable(f) if q.name in self.layers]
        for q in _progress(qs, "sensitivity", progress):
            m = self.float_module.with_main(int8_rewrite(f, self.value_qparams, {q.op},
                                                         self.per_channel))
            e, t = _compare(ref, _outputs(m, self.feeds, self.threads))
            out.append(LayerError(q.name, q.op.kind, e, t))
        return sorted(out, key=lambda r: -r.rel_l2)

    def propose_float(self, target_error: float, table: list[LayerError] | None = None,
                      progress: bool = True) -> tuple[list[str], float]:
        """The fewest layers, worst first by sensitivity, to keep in float so that the whole
        model's relative L2 error is at most `target_error`; and the error it reaches."""
        table = table if table is not None else self.sensitivity(progress)
        keep: list[str] = []
        err = self.error()[0]
        for row in table:
            if err <= target_error:
                break
            keep.append(row.name)
            err = self.error(self.with_float(keep).module)[0]
        return keep, err


def _progress(items: Sequence[Any], desc: str, on: bool) -> Any:
    if not on:
        return items
    try:
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit="layer", leave=False)
    except ImportError:
        return items


def _outputs(m: Module, feeds: Sequence[Mapping[str, np.ndarray]], threads: int | None
             ) -> list[list[np.ndarray]]:
    from minicc.driver import compile

    cm = compile(m, threads=threads)
    names = m.main.output_names
    return [[np.asarray(cm.run(dict(fd))[n]) for n in names] for fd in feeds]


def _compare(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]
             ) -> tuple[float, float | None]:
    num = sum(float(np.sum((g[0].astype(np.float64) - r[0]) ** 2)) for r, g in zip(ref, got))
    den = sum(float(np.sum(r[0].astype(np.float64) ** 2)) for r in ref)
    rel = float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))
    top1 = None
    r0 = ref[0][0]
    if r0.ndim >= 2 and r0.shape[1] > 1 and all(d == 1 for d in r0.shape[2:]):
        # [batch, classes] (or [batch, classes, 1, 1]): a classifier
        def cls(a: np.ndarray) -> np.ndarray:
            return np.argmax(a.reshape(a.shape[0], -1), -1)
        top1 = float(np.mean([np.mean(cls(r[0]) == cls(g[0])) for r, g in zip(ref, got)]))
    return rel, top1


def _check_names(f: Function, names: Sequence[str], depthwise: bool = True) -> list[str]:
    known = [q.name for q in quantizable(f, depthwise)]
    bad = [n for n in names if n not in known]
    if bad:
        import difflib

        hints = [h for n in bad for h in difflib.get_close_matches(n, known, 3)]
        raise MiniccError(f"--keep-float: no quantizable node named {', '.join(map(repr, bad))}"
                          + (f" (did you mean {', '.join(hints)}?)" if hints else
                             f" ({len(known)} quantizable nodes, the first "
                             f"{', '.join(map(repr, known[:3]))}; `minicc quantize` prints "
                             "every one with its range)"))
    return list(names)


def _observer_module(m: Module, acts: Sequence[Value]) -> Module:
    f = m.main
    names = tuple(f"__calib_{k}" for k in range(len(acts)))
    g = Function(f.name, f.inputs, f.ops, f.outputs + tuple(acts), f.input_names,
                 f.output_names + names)
    return m.with_main(g)


def quantize(model: Any, calib: Any, method: str = "entropy", *, per_channel: bool = True,
             symmetric: bool = False,
             keep_float: Sequence[str] = (), percentile: float = 99.99,
             depthwise: bool = True, input_shapes: Mapping[str, Any] | None = None,
             threads: int | None = None, progress: bool = True,
             log: Callable[[str], None] | None = None) -> Quantized:
    """Calibrate `model` (an ONNX path or proto, or a Module) on `calib` and rewrite it to
    INT8: symmetric s8 weights (per output channel, or per tensor with `per_channel=False`),
    per-tensor u8 activations (asymmetric, or symmetric with `symmetric=True`). Depthwise
    convolutions too unless `depthwise=False` (where users see per-channel int8 lose most
    accuracy, if anywhere): with AVX-512 VNNI and VBMI their template takes four taps per
    vpdpbusd (Zen 4, mobilenetv2_224: 2.38 ms in kernels with them int8, 2.79 ms float;
    without VBMI the f32 taps made them 7% slower than float)."""
    from minicc.driver import _as_module, compile
    from minicc.ir.passes.pipeline import run_pipeline
    from minicc.ir.program import check_static

    if method not in METHODS:
        raise MiniccError(f"unknown calibration method '{method}' (methods: "
                          f"{', '.join(METHODS)})")
    if not 0 < percentile <= 100:
        raise MiniccError(f"percentile {percentile} is not in (0, 100]")
    m = run_pipeline(_as_module(model, input_shapes), 3)
    f = m.main
    check_static(f, "quantizing")
    keep = set(_check_names(f, keep_float, depthwise))
    qs: list[Quantizable] = [q for q in quantizable(f, depthwise) if q.name not in keep]
    if not qs:
        raise MiniccError("nothing to quantize: the model has no convolution or matmul with "
                          "constant weights" + (" outside --keep-float" if keep else ""))
    signature = list(zip(f.input_names, (v.type for v in f.inputs)))
    feeds = calibration_batches(calib, signature)
    acts = list(dict.fromkeys(q.activation for q in qs))
    obs_m = _observer_module(m, acts)
    cm = compile(obs_m, threads=threads)
    names = obs_m.main.output_names[len(f.outputs):]
    seen: dict[str, Observer] = observe(lambda fd: cm.run(dict(fd)), feeds, names, progress)
    qparams: dict[Value, tuple[float, int]] = {}
    ranges: dict[Value, tuple[float, float]] = {}
    for v, n in zip(acts, names):
        ranges[v] = tensor_range(seen[n], method, percentile)
        p = QParams.of(*ranges[v], symmetric)
        qparams[v] = (p.scale, p.zero_point)
    qm = m.with_main(int8_rewrite(f, qparams, per_channel=per_channel))
    if log:
        log(f"quantized {len(qs)} layers ({method}, {len(feeds)} calibration batches)"
            + (f"; kept in float: {', '.join(sorted(keep))}" if keep else ""))
    return Quantized(qm, m, method, [q.name for q in qs], sorted(keep),
                     {q.name: QParams(*qparams[q.activation]) for q in qs},
                     {q.name: ranges[q.activation] for q in qs}, feeds, threads, per_channel,
                     qparams)
