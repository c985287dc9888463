"""Run a CUDA Artifact with CuPy: weights uploaded once, one device arena from the memory plan,
kernels launched in order on a stream (optionally replayed as a CUDA graph), CUDA events for
timing. Inputs may be numpy or CuPy arrays; outputs come back as the same kind. Every input is
checked before any kernel is launched. Needs a CUDA device (and `pip install cupy-cuda13x`)."""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any, Mapping

import numpy as np

from minicc.abi import HostCall, Launch, Location, LocKind
from minicc.errors import ArtifactError
from minicc.runtime.artifact import Artifact
from minicc.runtime.checks import NP_DTYPES, check_inputs

_NP = NP_DTYPES


def cuda_device_available() -> str | None:
    """None if CuPy sees a CUDA device, else why not."""
    try:
        import cupy
        n = cupy.cuda.runtime.getDeviceCount()
        return None if n > 0 else "no CUDA device"
    except Exception as e:  # noqa: BLE001  (ImportError, CUDARuntimeError without a driver)
        return f"{type(e).__name__}: {e}"


class CudaExecutable:
    def __init__(self, a: Artifact, version: str, host_op: Any = None,
                 use_graph: bool = False):
        why = cuda_device_available()
        if why is not None:
            raise ArtifactError(f"running a CUDA artifact needs a CUDA device and CuPy ({why}); "
                                "compile with target='llvm' to run on this CPU")
        if a.version != version:
            raise ArtifactError(f"artifact was built by minicc {a.version}, this is minicc "
                                f"{version}; recompile the model")
        import cupy as cp

        self.cp = cp
        self.artifact = a
        self.host_op = host_op
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.module = self._load_module(a)
        self.kernels = {st.kernel: self.module.get_function(st.kernel)
                        for st in a.steps if isinstance(st, Launch)}
        self.arena = cp.zeros(max(a.arena_bytes, 256), dtype=cp.uint8)
        self.weights = cp.asarray(np.frombuffer(a.weights, dtype=np.uint8)) if a.weights \
            else cp.zeros(256, dtype=cp.uint8)
        self.input_names = [n for n, _, _ in a.inputs]
        self.output_names = [n for n, _, _ in a.outputs]
        self.use_graph = use_graph
        self._graph = None
        self._lock = threading.Lock()

    def _load_module(self, a: Artifact) -> Any:
        cp = self.cp
        want = f"sm_{cp.cuda.Device().compute_capability}"
        if a.objects[0] and a.cpu == want:
            with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as fh:
                fh.write(a.objects[0])
            try:
                return cp.RawModule(path=fh.name)
            finally:
                os.unlink(fh.name)
        # another GPU architecture: compile the kept CUDA source for this one
        if not a.source:
            raise ArtifactError(f"artifact holds cubin for {a.cpu}, this GPU is {want}, and no "
                                "source to recompile")
        return cp.RawModule(code=a.source, options=("-std=c++17",), backend="nvrtc")

    def check_inputs(self, inputs: Mapping[str, Any]) -> list[Any]:
        return check_inputs(self.artifact.inputs, inputs, (np.ndarray, self.cp.ndarray),
                            "a numpy or CuPy array")

    def _ptr(self, loc: Location, xs: list[Any], outs: list[Any]) -> int:
        if loc.kind == LocKind.ARENA:
            return self.arena.data.ptr + loc.offset
        if loc.kind == LocKind.WEIGHTS:
            return self.weights.data.ptr + loc.offset
        return (xs if loc.kind == LocKind.INPUT else outs)[loc.offset].data.ptr

    def _step(self, st: Any, xs: list[Any], outs: list[Any]) -> None:
        """One step on the stream: a kernel launch, or a host op."""
        if isinstance(st, Launch):
            args = tuple(np.uint64(self._ptr(a, xs, outs)) for a in st.args)
            self.kernels[st.kernel](st.grid, st.block, args, shared_mem=0, stream=self.stream)
        else:
            self._host(st, xs, outs)

    def _launch_all(self, xs: list[Any], outs: list[Any]) -> None:
        for st in self.artifact.steps:
            self._step(st, xs, outs)

    def _view(self, loc: Location, d: str, s: Any, xs: list[Any], outs: list[Any]) -> Any:
        if loc.kind in (LocKind.INPUT, LocKind.OUTPUT):
            return (xs if loc.kind == LocKind.INPUT else outs)[loc.offset].reshape(s)
        base = self.arena if loc.kind == LocKind.ARENA else self.weights
        nbytes = int(np.prod(s)) * np.dtype(_NP[d]).itemsize
        return base[loc.offset:loc.offset + nbytes].view(_NP[d]).reshape(s)

    def _host(self, st: HostCall, xs: list[Any], outs: list[Any]) -> None:
        cp = self.cp
        if self.host_op is None:
            raise ArtifactError(f"op '{st.op}' runs on the host but no handler was given")
        self.stream.synchronize()
        args = [cp.asnumpy(self._view(t.loc, t.dtype, t.shape, xs, outs)) for t in st.inputs]
        res = self.host_op(st.op, args, st.attrs)
        for t, r in zip(st.outputs, res):
            self._view(t.loc, t.dtype, t.shape, xs, outs)[...] = cp.asarray(r)

    def _graph_run(self, dev: list[Any], outs: list[Any]) -> None:
        """Replay the launches as a CUDA graph captured once over fixed staging buffers (no
        per-launch CPU overhead); only for models without host steps."""
        cp = self.cp
        if self._graph is None:
            self._static_in = [cp.empty_like(x) for x in dev]
            self._static_out = [cp.empty_like(o) for o in outs]
            self.stream.begin_capture()
            self._launch_all(self._static_in, self._static_out)
            self._graph = self.stream.end_capture()
        for s, x in zip(self._static_in, dev):
            s[...] = x
        self._graph.launch(self.stream)
        for o, s in zip(outs, self._static_out):
            o[...] = s

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        cp = self.cp
        xs = self.check_inputs(inputs)
        as_numpy = any(isinstance(x, np.ndarray) for x in xs)
        with self._lock, self.stream:
            dev = [cp.asarray(x) for x in xs]
            outs = [cp.empty(s, dtype=_NP[d]) for _, d, s in self.artifact.outputs]
            if self.use_graph and not any(isinstance(st, HostCall) for st in self.artifact.steps):
                self._graph_run(dev, outs)
            else:
                self._launch_all(dev, outs)
            result = {}
            for k, ((name, d, s), loc) in enumerate(zip(self.artifact.outputs,
                                                        self.artifact.output_sources)):
                own = loc == Location(LocKind.OUTPUT, k)
                result[name] = outs[k] if own else self._view(loc, d, s, dev, outs).copy()
            self.stream.synchronize()
        if as_numpy:
            return {k: cp.asnumpy(v) for k, v in result.items()}
        return result

    def time_steps(self, inputs: Mapping[str, Any], repeat: int = 10,
                   warmup: int = 1) -> list[list[tuple[float, float]]]:
        """(start, end) seconds of every step in each run, measured with a CUDA event before
        and after each launch (relative to the run's first event; host steps between)."""
        cp = self.cp
        xs = [cp.asarray(x) for x in self.check_inputs(inputs)]
        outs = [cp.empty(s, dtype=_NP[d]) for _, d, s in self.artifact.outputs]
        runs = []
        with self.stream:
            for r in range(repeat + warmup):
                events = []
                for st in self.artifact.steps:
                    ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
                    ev0.record(self.stream)
                    self._step(st, xs, outs)
                    ev1.record(self.stream)
                    events.append((ev0, ev1))
                events[-1][1].synchronize()
                first = events[0][0]
                run = [(cp.cuda.get_elapsed_time(first, a) / 1e3,
                        cp.cuda.get_elapsed_time(first, b) / 1e3) for a, b in events]
                if r >= warmup:
                    runs.append(run)
        return runs

    def time(self, inputs: Mapping[str, Any], repeat: int = 20) -> float:
        """Median milliseconds of the kernel launches alone, measured with CUDA events."""
        cp = self.cp
        xs = [cp.asarray(x) for x in self.check_inputs(inputs)]
        outs = [cp.empty(s, dtype=_NP[d]) for _, d, s in self.artifact.outputs]
        times = []
        with self.stream:
            for _ in range(repeat + 2):
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record(self.stream)
                self._launch_all(xs, outs)
                end.record(self.stream)
                end.synchronize()
                times.append(cp.cuda.get_elapsed_time(start, end))
        return float(np.median(times[2:]))
