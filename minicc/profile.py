"""`minicc profile`: where a compiled model's time goes, kernel by kernel, on the roofline of the
machine it runs on.

The model is compiled with one native entry per kernel; every step is timed over `repeat` runs
(CUDA events on the GPU target). Each kernel's FLOPs and bytes come from the op registry
(ir/cost.py, kept in the artifact's summary), so achieved GFLOP/s and GB/s follow; the bound at
its arithmetic intensity is min(FMA peak, intensity x bandwidth) with the peaks minicc measured
on this host for the thread count (codegen/llvm/peaks.py). `chrome_trace` writes the runs as a
Chrome trace (Perfetto, chrome://tracing); `plot_roofline` draws the roofline with matplotlib.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from minicc.errors import MiniccError


@dataclass
class KernelTime:
    name: str
    ops: str
    output: str
    host: bool
    ms: float                    # median
    ms_min: float
    flops: int
    bytes: int
    share: float = 0.0           # of the total median time
    bound_gflops: float = 0.0    # the roofline at this kernel's intensity

    @property
    def gflops(self) -> float:
        return self.flops / self.ms / 1e6 if self.ms > 0 else 0.0

    @property
    def gbs(self) -> float:
        return self.bytes / self.ms / 1e6 if self.ms > 0 else 0.0

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0

    @property
    def of_bound(self) -> float:
        return 100 * self.gflops / self.bound_gflops if self.bound_gflops > 0 else 0.0


@dataclass
class Profile:
    model: str
    target: str
    threads: int
    repeat: int
    kernels: list[KernelTime]
    runs: list[list[tuple[float, float]]] = field(repr=False, default_factory=list)
    peaks: Any = None
    run_ms: float = 0.0          # median of whole runs (the sum of steps, Python between them)
    compiled: Any = field(default=None, repr=False)    # the CompiledModel that was timed

    @property
    def total_ms(self) -> float:
        return sum(k.ms for k in self.kernels)

    def sorted(self) -> list[KernelTime]:
        return sorted(self.kernels, key=lambda k: -k.ms)

    def as_dict(self) -> dict[str, Any]:
        rows = [{"name": k.name, "ops": k.ops, "output": k.output, "host": k.host,
                 "ms": k.ms, "ms_min": k.ms_min, "share": k.share, "flops": k.flops,
                 "bytes": k.bytes, "gflops": k.gflops, "gbs": k.gbs,
                 "intensity": k.intensity, "bound_gflops": k.bound_gflops,
                 "percent_of_bound": k.of_bound} for k in self.sorted()]
        p = self.peaks
        return {"model": self.model, "target": self.target, "threads": self.threads,
                "repeat": self.repeat, "total_ms": self.total_ms, "run_ms": self.run_ms,
                "peaks": None if p is None else vars(p), "kernels": rows}


def _rows(art: Any, medians: list[float], mins: list[float]) -> list[KernelTime]:
    """One row per kernel (each its own native step with profile=True) and per host step."""
    from minicc.abi import HostCall

    s = art.summary
    kernels = {k["name"]: k for k in s.get("kernels", [])}
    hosts = iter(s.get("host", []))
    rows = []
    for st, ms, mn in zip(art.steps, medians, mins):
        if isinstance(st, HostCall):
            h = next(hosts, {"name": st.op, "ops": [st.op], "flops": 0})
            names, host = [h["name"]], True
            info = [h]
        else:
            names = list(getattr(st, "kernels", ())) or [getattr(st, "kernel", "?")]
            info, host = [kernels.get(n, {}) for n in names], False
        rows.append(KernelTime(
            ",".join(names), "+".join(o for k in info for o in k.get("ops", [])),
            info[0].get("output", "") if len(info) == 1 else "", host, ms * 1e3, mn * 1e3,
            sum(k.get("flops", 0) for k in info),
            sum(k.get("bytes_read", 0) + k.get("bytes_written", 0) for k in info)))
    return rows


def profile(model: Any, inputs: Mapping[str, np.ndarray] | None = None, repeat: int = 20,
            peaks: Any = None, options: Any = None, **fields: Any) -> Profile:
    """Compile `model` (one entry per kernel) and time it; `inputs` default to random ones."""
    import minicc

    cm = minicc.compile(model, options=options, profile=True, **fields)
    feeds = dict(inputs) if inputs is not None else random_feeds(cm.artifact.inputs)
    runs = cm.exe.time_steps(feeds, repeat)
    durs = np.array([[e - b for b, e in run] for run in runs])
    rows = _rows(cm.artifact, list(np.median(durs, 0)), list(durs.min(0)))
    total = sum(r.ms for r in rows) or 1.0
    threads = cm.threads
    if peaks is None and cm.target != "cuda":
        from minicc.codegen.llvm.peaks import machine_peaks

        peaks = machine_peaks()
    for r in rows:
        r.share = 100 * r.ms / total
        if peaks is not None and r.bytes:
            r.bound_gflops = peaks.roof(r.intensity, threads, int8=is_int8(r.ops))
    name = model if isinstance(model, (str, os.PathLike)) else type(model).__name__
    return Profile(str(name), cm.target, threads, repeat, rows, runs, peaks,
                   float(np.median([run[-1][1] - run[0][0] for run in runs])) * 1e3, cm)


def is_int8(ops: str) -> bool:
    """A kernel whose multiply-adds are u8 x s8 dot products: on the int8 roof, not FP32's."""
    return any(op in ("conv_integer", "matmul_integer") for op in ops.split("+"))


def random_feeds(signature: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for a compiled signature: floats in [0, 1), integers 0 or 1."""
    from minicc.runtime.checks import NP_DTYPES

    rng = np.random.default_rng(seed)
    out = {}
    for name, dt, shape in signature:
        t = np.dtype(NP_DTYPES[dt])
        if t.kind == "f":
            out[name] = rng.random(shape).astype(t)
        elif t.kind == "b":
            out[name] = rng.random(shape) > 0.5
        else:
            out[name] = rng.integers(0, 2, size=shape).astype(t)
    return out


def format_profile(p: Profile, top: int | None = None) -> str:
    """The table `minicc profile` prints, slowest first."""
    head = (f"{p.model}: {len(p.kernels)} steps, {p.threads} thread(s), median of {p.repeat} "
            f"runs: {p.total_ms:.3f} ms in kernels ({p.run_ms:.3f} ms per run)")
    if p.peaks is not None:
        int8 = (f", int8 dot {p.peaks.int8(p.threads):.1f} GOP/s (for int8 kernels)"
                if p.peaks.int8_gops_1 > 0 and any(is_int8(k.ops) for k in p.kernels) else "")
        head += (f"\nroofs: FMA {p.peaks.fma(p.threads):.1f} GFLOP/s{int8}, memory "
                 f"{p.peaks.bandwidth(p.threads):.1f} GB/s ({p.peaks.cpu}, measured "
                 f"{p.peaks.measured})")
    lines = [head, f"  {'kernel':22} {'ops':30} {'ms':>8} {'share':>6} {'GFLOP/s':>8} "
                   f"{'GB/s':>7} {'FLOP/B':>7} {'bound':>7} {'%bound':>6}"]
    rows = p.sorted()
    for k in rows[:top] if top else rows:
        lines.append(f"  {k.name[:22]:22} {k.ops[:30]:30} {k.ms:8.3f} {k.share:5.1f}% "
                     f"{k.gflops:8.1f} {k.gbs:7.1f} {k.intensity:7.2f} "
                     f"{k.bound_gflops:7.1f} {k.of_bound:5.1f}%"
                     + ("  (host)" if k.host else ""))
    if top and len(rows) > top:
        rest = rows[top:]
        lines.append(f"  ... {len(rest)} more, {sum(k.ms for k in rest):.3f} ms together")
    if any(k.of_bound > 100 for k in rows):
        lines.append("  (over 100% of the bound: the kernel's bytes come from cache, faster than "
                     "the memory roof, which is DRAM's)")
    return "\n".join(lines) + "\n"


def chrome_trace(p: Profile) -> dict[str, Any]:
    """The runs as a Chrome trace (the JSON object format): one complete event per step and
    run, on one track, with the step's ops, output, FLOPs and bytes as arguments."""
    t0 = p.runs[0][0][0] if p.runs else 0.0
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"minicc {p.model}"}},
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1,
         "args": {"name": f"{p.target}, {p.threads} thread(s)"}}]
    for i, run in enumerate(p.runs):
        for k, (b, e) in zip(p.kernels, run):
            events.append({"name": k.name, "cat": "host" if k.host else "kernel", "ph": "X",
                           "pid": 1, "tid": 1, "ts": (b - t0) * 1e6, "dur": (e - b) * 1e6,
                           "args": {"run": i, "ops": k.ops, "output": k.output,
                                    "flops": k.flops, "bytes": k.bytes}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"model": p.model, "threads": p.threads, "repeat": p.repeat}}


def write_trace(p: Profile, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.write_text(json.dumps(chrome_trace(p)))
    return out


def plot_roofline(p: Profile, path: str | os.PathLike, labels: int = 6) -> Path:
    """The roofline of this machine (log-log: FLOP/byte against GFLOP/s) with one point per
    kernel, its area the kernel's share of the time, the largest labelled. Needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MiniccError("--plot needs matplotlib: pip install matplotlib "
                          "(or pip install 'minicc[report]')") from None
    if p.peaks is None:
        raise MiniccError("a roofline needs this machine's peaks (CPU targets only)")
    ks = [k for k in p.kernels if k.bytes and k.flops and not k.host]
    if not ks:
        raise MiniccError("no kernel with FLOPs to plot")
    peak, bw = p.peaks.fma(p.threads), p.peaks.bandwidth(p.threads)
    xs = np.array([k.intensity for k in ks])
    lo, hi = min(xs.min(), peak / bw) / 4, max(xs.max(), peak / bw) * 4
    grid = np.logspace(np.log10(lo), np.log10(hi), 200)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    ax.loglog(grid, np.minimum(peak, grid * bw), color="black", lw=2,
              label=f"roof: {peak:.0f} GFLOP/s FMA, {bw:.1f} GB/s memory")
    ax.axvline(peak / bw, color="gray", ls=":", lw=1)
    if p.peaks.int8_gops_1 > 0 and any(is_int8(k.ops) for k in ks):
        top8 = p.peaks.int8(p.threads)
        ax.loglog(grid, np.minimum(top8, grid * bw), color="gray", lw=1.5, ls="--",
                  label=f"int8 roof: {top8:.0f} GOP/s vpdpbusd (int8 kernels)")
    sizes = np.array([max(k.share, 0.2) for k in ks]) * 25
    ax.scatter(xs, [max(k.gflops, 1e-3) for k in ks], s=sizes, alpha=0.6, c="tab:blue",
               edgecolors="navy", label="kernels (area: share of time)")
    top = sorted(ks, key=lambda k: -k.share)[:labels]
    for n, k in enumerate(top, 1):    # numbered points, named in a box (labels would collide)
        ax.annotate(str(n), (k.intensity, max(k.gflops, 1e-3)), textcoords="offset points",
                    xytext=(4, 3), fontsize=8, color="darkred", weight="bold")
    ax.text(0.02, 0.98, "\n".join(f"{n}  {k.name} ({k.ops}) {k.share:.1f}%, {k.gflops:.0f} "
                                   f"GFLOP/s" for n, k in enumerate(top, 1)),
            transform=ax.transAxes, va="top", ha="left", fontsize=7.5, family="monospace",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"{Path(p.model).stem}: {p.total_ms:.2f} ms, {p.threads} thread(s), "
                 f"{p.peaks.cpu}")
    ax.grid(True, which="both", alpha=0.3)
    leg = ax.legend(loc="lower right", fontsize=8)
    for h in leg.legend_handles:                 # a legend dot, not the largest kernel's
        if hasattr(h, "set_sizes"):
            h.set_sizes([30])
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
