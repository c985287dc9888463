"""Run a CUDA Artifact with CuPy: weights uploaded once, one device arena from the memory plan,
kernels launched in order on a stream (optionally replayed as a CUDA graph), CUDA events for
timing. Inputs may be numpy or CuPy arrays; outputs come back as the same kind. Every input is
checked before any kernel is launched. Needs a CUDA device (and `pip install cupy-cuda13x`)."""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

import numpy as np

from minicc.abi import HostCall, Launch, Location, LocKind
from minicc.errors import ArtifactError
from minicc.runtime.artifact import Artifact
from minicc.runtime.checks import NP_DTYPES, check_inputs
from minicc.runtime.locations import gather_outputs, view_at

_NP = NP_DTYPES


class PendingRun:
    """A run queued by `run_async`: `.result()` waits for it and returns the outputs (numpy
    for numpy inputs, else CuPy arrays); `.done()` says whether it has finished."""

    def __init__(self, event: Any, device: dict[str, Any], host: dict[str, np.ndarray] | None,
                 keep: Any) -> None:
        self.event, self._device, self._host, self._keep = event, device, host, keep

    def done(self) -> bool:
        return bool(self.event.done)

    def result(self) -> dict[str, Any]:
        self.event.synchronize()
        if self._host is not None:
            return {k: np.array(v) for k, v in self._host.items()}
        return self._device


def _pinned(cp: Any, shape: Any, dtype: Any) -> np.ndarray:
    """A numpy array in pinned (page-locked) host memory: copies to and from the device out of
    it are asynchronous."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) if len(shape) else 1
    mem = cp.cuda.alloc_pinned_memory(max(n * dt.itemsize, 1))
    return np.frombuffer(mem, dt, n).reshape(shape)


def _pinned_like(cp: Any, x: Any) -> np.ndarray:
    return _pinned(cp, tuple(x.shape), x.dtype)


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
        self._arenas: dict[int, Any] = {}     # per stream, for runs that overlap

    def _load_module(self, a: Artifact) -> Any:
        """The artifact's cubin loaded from memory (cuModuleLoadData), or its source compiled
        for this GPU. (Not RawModule(path=...): that loads the file only at get_function, and
        caches the module by the path's name.)"""
        from cupy.cuda import function

        cp = self.cp
        want = f"sm_{cp.cuda.Device().compute_capability}"
        if a.objects[0] and a.cpu == want:
            m = function.Module()
            m.load(bytes(a.objects[0]))
            return m
        # another GPU architecture: compile the kept CUDA source for this one
        if not a.source:
            raise ArtifactError(f"artifact holds cubin for {a.cpu}, this GPU is {want}, and no "
                                "source to recompile")
        return cp.RawModule(code=a.source, options=("-std=c++17",), backend="nvrtc")

    def check_inputs(self, inputs: Mapping[str, Any]) -> list[Any]:
        return check_inputs(self.artifact.inputs, inputs, (np.ndarray, self.cp.ndarray),
                            "a numpy or CuPy array")

    def _ptr(self, loc: Location, xs: list[Any], outs: list[Any], arena: Any = None) -> int:
        if loc.kind == LocKind.ARENA:
            return (self.arena if arena is None else arena).data.ptr + loc.offset
        if loc.kind == LocKind.WEIGHTS:
            return self.weights.data.ptr + loc.offset
        return (xs if loc.kind == LocKind.INPUT else outs)[loc.offset].data.ptr

    def _step(self, st: Any, xs: list[Any], outs: list[Any], stream: Any = None,
              arena: Any = None) -> None:
        """One step on the stream (the executable's, or `stream` with its own `arena`): a
        kernel launch, or a host op."""
        if isinstance(st, Launch):
            args = tuple(np.uint64(self._ptr(a, xs, outs, arena)) for a in st.args)
            self.kernels[st.kernel](st.grid, st.block, args, shared_mem=0,
                                    stream=self.stream if stream is None else stream)
        else:
            self._host(st, xs, outs)

    def _launch_all(self, xs: list[Any], outs: list[Any], stream: Any = None,
                    arena: Any = None) -> None:
        for st in self.artifact.steps:
            self._step(st, xs, outs, stream, arena)

    # -- streams: runs that overlap ------------------------------------------------------------

    def _stream_arena(self, stream: Any) -> Any:
        """The arena of runs on `stream`: runs on different streams may overlap, so each
        stream has its own (runs on one stream are ordered and share it)."""
        key = int(stream.ptr)
        a = self._arenas.get(key)
        if a is None:
            a = self._arenas[key] = self.cp.empty(max(self.artifact.arena_bytes, 256),
                                                   dtype=self.cp.uint8)
        return a

    def _async_ok(self, what: str) -> None:
        host = sorted({st.op for st in self.artifact.steps if isinstance(st, HostCall)})
        if host:
            raise ArtifactError(f"{what} needs a model without host steps (it runs "
                                f"{', '.join(host)} on the CPU); use run")

    def run_async(self, inputs: Mapping[str, Any], stream: Any = None) -> "PendingRun":
        """Queue one run on `stream` (a cupy.cuda.Stream; None: the executable's own) and
        return at once: host-to-device copies of numpy inputs, the kernels, and (for numpy
        inputs) device-to-host copies of the outputs, all in stream order. `.result()` waits
        for them."""
        self._async_ok("run_async")
        cp = self.cp
        xs = self.check_inputs(inputs)
        s = self.stream if stream is None else stream
        as_numpy = any(isinstance(x, np.ndarray) for x in xs)
        with s:
            dev = []
            for x in xs:
                if isinstance(x, np.ndarray):
                    d = cp.empty(x.shape, dtype=x.dtype)
                    d.set(x, stream=s)
                    dev.append(d)
                else:
                    dev.append(x)
            outs = [cp.empty(sh, dtype=_NP[d]) for _, d, sh in self.artifact.outputs]
            self._launch_all(dev, outs, s, self._stream_arena(s))
            result = self._results(dev, outs, self._stream_arena(s))
            host = None
            if as_numpy:
                host = {k: _pinned_like(cp, v) for k, v in result.items()}
                for k, v in result.items():
                    v.get(stream=s, out=host[k], blocking=False)
            done = cp.cuda.Event()
            done.record(s)
        return PendingRun(done, result, host, keep=(dev, outs))

    def _results(self, dev: list[Any], outs: list[Any], arena: Any) -> dict[str, Any]:
        return gather_outputs(self.artifact, dev, outs, arena, self.weights)

    def run_many(self, batch: Sequence[Mapping[str, Any]], streams: int = 2
                 ) -> tuple[list[dict[str, np.ndarray]], dict[str, float]]:
        """Run every inputs dict of `batch` (numpy arrays), pipelined over `streams` streams:
        while one input's kernels run, the next one's host-to-device copy and the previous
        one's device-to-host copy proceed on the others (inputs staged through pinned host
        memory, so the copies are asynchronous). Returns the outputs in order and the timing
        (CUDA events): total milliseconds and runs per second."""
        self._async_ok("run_many")
        cp = self.cp
        checked = [self.check_inputs(x) for x in batch]
        if any(not isinstance(x, np.ndarray) for xs in checked for x in xs):
            raise ArtifactError("run_many takes numpy inputs (it stages them through pinned "
                                "host memory); for device arrays call run_async per input")
        ss = [cp.cuda.Stream(non_blocking=True) for _ in range(streams)]
        stage = [[_pinned_like(cp, x) for x in checked[0]] for _ in ss]
        dev_in = [[cp.empty(x.shape, dtype=x.dtype) for x in checked[0]] for _ in ss]
        dev_out = [[cp.empty(sh, dtype=_NP[d]) for _, d, sh in self.artifact.outputs]
                   for _ in ss]
        host_out = [{name: _pinned(cp, sh, _NP[d]) for name, d, sh in self.artifact.outputs}
                    for _ in checked]
        done: list[Any] = []
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(ss[0])
        for s in ss[1:]:
            s.wait_event(start)
        for i, xs in enumerate(checked):
            j = i % len(ss)
            s = ss[j]
            if i >= len(ss):
                done[i - len(ss)].synchronize()     # its pinned staging is free again
            for st_buf, x in zip(stage[j], xs):
                np.copyto(st_buf, x)
            with s:
                for d, h in zip(dev_in[j], stage[j]):
                    d.set(h, stream=s)
                arena = self._stream_arena(s)
                self._launch_all(dev_in[j], dev_out[j], s, arena)
                for name, v in self._results(dev_in[j], dev_out[j], arena).items():
                    v.get(stream=s, out=host_out[i][name], blocking=False)
                ev = cp.cuda.Event()
                ev.record(s)
                done.append(ev)
        for s in ss[1:]:                       # the end: when every stream has finished
            last = cp.cuda.Event()
            last.record(s)
            ss[0].wait_event(last)
        end.record(ss[0])
        end.synchronize()
        ms = cp.cuda.get_elapsed_time(start, end)
        outs = [{k: np.array(v) for k, v in h.items()} for h in host_out]
        return outs, {"ms": ms, "runs_per_s": len(batch) / (ms / 1e3) if ms > 0 else 0.0,
                      "streams": float(len(ss))}

    def _view(self, loc: Location, d: str, s: Any, xs: list[Any], outs: list[Any]) -> Any:
        return view_at(loc, d, s, xs, outs, self.arena, self.weights)

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
            result = self._results(dev, outs, self.arena)
            self.stream.synchronize()
        if as_numpy:
            return {k: cp.asnumpy(v) for k, v in result.items()}
        return result

    def trace(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        """The arena and the outputs' bytes (host copies) after each step of one run: beside
        runtime/cuda_host.py's trace of the same artifact, the first kernel whose results
        differ on the GPU (examples/gpu_check.py does this for a model that mismatches)."""
        cp = self.cp
        xs = [cp.asarray(x) for x in self.check_inputs(inputs)]
        outs = [cp.zeros(s, dtype=_NP[d]) for _, d, s in self.artifact.outputs]
        self.arena[...] = 0
        snaps = []
        with self.stream:
            for st in self.artifact.steps:
                self._step(st, xs, outs)
                self.stream.synchronize()
                snaps.append(np.concatenate([cp.asnumpy(self.arena)] + [
                    cp.asnumpy(o).reshape(-1).view(np.uint8) for o in outs]))
        return snaps

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

    def time_graph(self, inputs: Mapping[str, Any], repeat: int = 20) -> float:
        """Median milliseconds of one replay of every launch captured as a CUDA graph (CUDA
        events): what `cuda_graph=True` saves over launching kernel by kernel."""
        self._async_ok("time_graph")
        cp = self.cp
        xs = [cp.asarray(x) for x in self.check_inputs(inputs)]
        outs = [cp.empty(s, dtype=_NP[d]) for _, d, s in self.artifact.outputs]
        times = []
        with self.stream:
            self.stream.begin_capture()
            self._launch_all(xs, outs)
            graph = self.stream.end_capture()
            for _ in range(repeat + 2):
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record(self.stream)
                graph.launch(self.stream)
                end.record(self.stream)
                end.synchronize()
                times.append(cp.cuda.get_elapsed_time(start, end))
        return float(np.median(times[2:]))

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
