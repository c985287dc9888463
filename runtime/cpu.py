"""Load an Artifact for this CPU and run it: object code through llvmlite's MCJIT, entry
functions through ctypes, one arena per executable. Every input is checked (name, dtype, shape,
contiguity) before native code runs; a wrong input raises RuntimeInputError."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from typing import Any, Callable, Iterator, Mapping, Sequence

import llvmlite.binding as llvm
import numpy as np

from minicc import env
from minicc.abi import TICKS_NOW, TICKS_SUFFIX, HostCall, Location, LocKind, NativeCall
from minicc.errors import ArtifactError
from minicc.runtime.artifact import Artifact
from minicc.runtime import guard
from minicc.runtime.checks import NP_DTYPES, check_inputs
from minicc.runtime.llvm_host import host_features, init_llvm, load_gomp, new_target_machine

HostOp = Callable[[str, list[np.ndarray], dict], list[np.ndarray]]
_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.POINTER(ctypes.c_void_p), ctypes.c_int32)


def _aligned(nbytes: int, align: int = 64) -> np.ndarray:
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + nbytes]


def _address(x: np.ndarray) -> int:
    """The address of a C-contiguous array's data: through ctypes' buffer protocol (a quarter
    of numpy's .ctypes.data, which costs a microsecond), or numpy's way for what that refuses
    (read-only or empty arrays)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(x))
    except (TypeError, ValueError):
        return x.ctypes.data


def median_steps(runs: list[list[tuple[float, float]]]) -> list[float]:
    """The median duration of each step over runs of (start, end) pairs."""
    return [float(np.median([run[k][1] - run[k][0] for run in runs]))
            for k in range(len(runs[0]))] if runs else []


def check_compatible(a: Artifact, version: str) -> None:
    if a.version != version:
        raise ArtifactError(f"artifact was built by minicc {a.version}, this is minicc {version}; "
                            "recompile the model")
    if a.target != "llvm":
        raise ArtifactError(f"artifact targets '{a.target}', not this CPU")
    have = {f[1:] for f in host_features()[1].split(",") if f.startswith("+")}
    missing = [f for f in a.features if f not in have]
    if missing:
        raise ArtifactError(f"artifact was compiled for a CPU with {', '.join(missing)}, which "
                            f"this CPU ({host_features()[0]}) lacks; recompile here")
    here = llvm.get_process_triple()
    if a.triple != here:
        raise ArtifactError(f"artifact is for {a.triple}, this machine is {here}")


def thread_count(a: Artifact, threads: int | None) -> int:
    """The threads a loaded artifact runs on: as asked, at most as many as it was compiled
    for, one where this machine has no libgomp."""
    want = a.threads if threads is None else max(1, min(threads, a.threads))
    return 1 if want > 1 and not load_gomp() else want


class Executable:
    """A loaded model. `run(inputs)` returns outputs by name; safe to call from several threads
    at once: each call takes an arena of its own from a pool (grown on demand, so N concurrent
    callers hold N arenas; the weights are shared)."""

    def __init__(self, a: Artifact, version: str, host_op: HostOp | None = None,
                 threads: int | None = None):
        check_compatible(a, version)
        init_llvm()
        self.artifact = a
        want = thread_count(a, threads)
        if a.threads > 1 and not load_gomp():
            raise ArtifactError("this artifact uses OpenMP threads but libgomp is not installed; "
                                "compile with threads=1 or install libgomp")
        self.threads = want
        self.host_op = host_op
        tm = new_target_machine()    # the engine owns it
        empty = llvm.parse_assembly(f'target triple = "{tm.triple}"\n')
        self._ee = llvm.create_mcjit_compiler(empty, tm)
        self._objs = [llvm.ObjectFileRef.from_data(o) for o in a.objects]
        for obj in self._objs:          # the engine resolves calls between them
            self._ee.add_object_file(obj)
        self._ee.finalize_object()
        self._entries: dict[str, Any] = {}
        for st in a.steps:
            if isinstance(st, NativeCall):
                addr = self._ee.get_function_address(st.symbol)
                if not addr:
                    raise ArtifactError(f"entry {st.symbol} missing from the object code")
                self._entries[st.symbol] = _ENTRY(addr)
        self._weights = self._buffer(max(len(a.weights), 64))
        self._weights[:len(a.weights)] = np.frombuffer(a.weights, dtype=np.uint8)
        self._wptr = self._weights.ctypes.data
        self._clocks: tuple[list[np.ndarray | None], float] | None = None   # see _step_clocks
        # free arenas with their addresses (see run; numpy's .ctypes.data costs a microsecond)
        self._arenas: list[tuple[np.ndarray, int]] = [self._new_arena()]
        # resolved once: what each step calls, and which outputs native code writes in place
        self._calls = [(self._entries[st.symbol] if isinstance(st, NativeCall) else None, st)
                       for st in a.steps]
        self._in_place = [loc == Location(LocKind.OUTPUT, k)
                          for k, loc in enumerate(a.output_sources)]
        self.input_names = [n for n, _, _ in a.inputs]
        self.output_names = [n for n, _, _ in a.outputs]
        # read once, at load: the per-call path of a small model is a few microseconds, and
        # reading the environment on every call cost more than some of its kernels
        self._guard = guard.enabled()
        self._debug = env.flag("MINICC_DEBUG")
        self._fast_in = [(n, np.dtype(_NP[d]), tuple(s)) for n, d, s in a.inputs]
        self._out_specs = [(tuple(s), np.dtype(_NP[d])) for _, d, s in a.outputs]
        self._native_only = all(fn is not None for fn, _ in self._calls)
        self._io_type = ctypes.c_void_p * max(len(a.inputs) + len(a.outputs), 1)

    @staticmethod
    def _buffer(nbytes: int) -> np.ndarray:
        """Aligned memory; with MINICC_GUARD=1 ending at an inaccessible page (the array keeps
        its mapping alive)."""
        return guard.buffer(nbytes, []) if guard.enabled() else _aligned(nbytes)

    @contextlib.contextmanager
    def _arena(self) -> Iterator[np.ndarray]:
        """An arena for one call: a free one, or a new one when every arena is in use, so
        threads calling one model run at once (each arena is returned for the next call)."""
        pair = self._take_arena()
        try:
            yield pair[0]
        finally:
            self._arenas.append(pair)

    def _new_arena(self) -> tuple[np.ndarray, int]:
        arena = self._buffer(max(self.artifact.arena_bytes, 64))
        return arena, arena.ctypes.data

    def _take_arena(self) -> tuple[np.ndarray, int]:
        """A free arena and its address."""
        try:
            return self._arenas.pop()        # atomic under the GIL, as is append
        except IndexError:                   # every arena is in use: one more
            return self._new_arena()

    def check_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        xs = self._fast_inputs(inputs)
        if xs is None:                        # something is off: the full check names it
            xs = check_inputs(self.artifact.inputs, inputs)
        if self._guard:            # copies against guard pages
            xs = [guard.array_like(x.shape, x.dtype, [], x) for x in xs]
        return xs

    def _fast_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray] | None:
        """The inputs when every one is exactly right (the common case, checked in a few
        hundred nanoseconds each), else None."""
        if type(inputs) is not dict or len(inputs) != len(self._fast_in):
            return None
        xs = []
        for name, dt, shape in self._fast_in:
            x = inputs.get(name)
            if (type(x) is not np.ndarray or x.dtype != dt or x.shape != shape
                    or not x.flags.c_contiguous or not x.flags.aligned):
                return None
            xs.append(x)
        return xs

    def new_outputs(self) -> list[np.ndarray]:
        if self._guard:
            return [guard.array_like(s, d, []) for s, d in self._out_specs]
        return [np.empty(s, dtype=d) for s, d in self._out_specs]

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        a = self.artifact
        xs = self.check_inputs(inputs)
        outs = self.new_outputs()
        io = self._io_type(*[_address(x) for x in xs], *[_address(o) for o in outs])
        pair = self._take_arena()
        arena = pair[0]
        try:
            if self._native_only and not self._debug:
                args = (pair[1], self._wptr, io, self.threads)
                for fn, _ in self._calls:
                    fn(*args)
            else:
                for k in range(len(self._calls)):
                    if self._debug:
                        st = self._calls[k][1]
                        print(f"minicc: running {getattr(st, 'symbol', None) or st.op}",
                              file=sys.stderr, flush=True)
                    self._step(k, io, xs, outs, arena)
            result = {}
            for k, ((name, d, s), loc) in enumerate(zip(a.outputs, a.output_sources)):
                if self._in_place[k]:
                    result[name] = outs[k]        # native code wrote it in place
                else:                             # an input, a weight or another output
                    result[name] = self._view(loc, d, s, xs, outs, arena).copy()
        finally:
            self._arenas.append(pair)
        return result

    def _step(self, k: int, io: Any, xs: list[np.ndarray], outs: list[np.ndarray],
              arena: np.ndarray) -> None:
        fn, st = self._calls[k]
        if fn is not None:
            fn(arena.ctypes.data, self._weights.ctypes.data, io, self.threads)
        else:
            self._host(st, xs, outs, arena)

    def runner(self, inputs: Mapping[str, Any]) -> Callable[[], None]:
        """A call that runs every step on `inputs` (checked now, once) with no per-call Python
        work beyond the steps: for timing a kernel of a few microseconds."""
        xs = self.check_inputs(inputs)
        outs = self.new_outputs()
        io = (ctypes.c_void_p * max(len(xs) + len(outs), 1))(*[x.ctypes.data for x in xs + outs])
        steps = range(len(self._calls))
        arena = self._buffer(max(self.artifact.arena_bytes, 64))     # its own

        def run() -> None:
            for k in steps:
                self._step(k, io, xs, outs, arena)
        run.keep = (xs, outs, io, arena)  # type: ignore[attr-defined]   (they stay alive)
        return run

    def _step_clocks(self) -> tuple[list[np.ndarray | None], float]:
        """Each step's cycle counts (start, end) where the artifact was compiled for
        profiling (see minicc.abi.TICKS_SUFFIX), and the counter's rate in ticks per second,
        measured against perf_counter over 20 ms; ([None, ...], 0) for other artifacts."""
        if self._clocks is not None:
            return self._clocks
        import time

        ticks: list[np.ndarray | None] = []
        for st in self.artifact.steps:
            addr = self._ee.get_global_value_address(st.symbol + TICKS_SUFFIX) \
                if isinstance(st, NativeCall) else 0
            ticks.append(np.ctypeslib.as_array((ctypes.c_int64 * 2).from_address(addr))
                         if addr else None)
        rate = 0.0
        now_addr = self._ee.get_function_address(TICKS_NOW) if any(
            t is not None for t in ticks) else 0
        if now_addr:
            now = ctypes.CFUNCTYPE(ctypes.c_int64)(now_addr)
            t0, c0 = time.perf_counter(), now()
            while time.perf_counter() - t0 < 0.02:
                pass
            t1, c1 = time.perf_counter(), now()
            rate = (c1 - c0) / (t1 - t0)
        if rate <= 0:
            ticks = [None] * len(ticks)
        self._clocks = (ticks, rate)
        return self._clocks

    def time_steps(self, inputs: Mapping[str, Any], repeat: int = 10,
                   warmup: int = 1) -> list[list[tuple[float, float]]]:
        """(start, end) seconds of every step in each of `repeat` runs after `warmup` ones
        (steps as the artifact lists them; perf_counter time). A step compiled for profiling
        lasts what its own cycle counts say (the native call alone, without the 3-5 us of the
        Python call around it); others what perf_counter says around the call."""
        import time

        ticks, rate = self._step_clocks()
        a = self.artifact
        xs = self.check_inputs(inputs)
        outs = self.new_outputs()
        io = (ctypes.c_void_p * max(len(xs) + len(outs), 1))(
            *[x.ctypes.data for x in xs + outs])
        runs: list[list[tuple[float, float]]] = []
        with self._arena() as arena:
            for r in range(repeat + warmup):
                run = []
                for k in range(len(a.steps)):
                    t = time.perf_counter()
                    self._step(k, io, xs, outs, arena)
                    end = time.perf_counter()
                    tk = ticks[k]
                    if tk is not None:
                        end = t + float(tk[1] - tk[0]) / rate
                    run.append((t, end))
                if r >= warmup:
                    runs.append(run)
        return runs

    def time_segments(self, inputs: Mapping[str, Any], repeat: int = 10) -> list[float]:
        """Median seconds of each step over `repeat` runs (steps as the artifact lists them)."""
        return median_steps(self.time_steps(inputs, repeat))

    def _view(self, loc: Location, dt: str, shape: Sequence[int], xs: list[np.ndarray],
              outs: list[np.ndarray], arena: np.ndarray) -> np.ndarray:
        if loc.kind == LocKind.INPUT:
            return xs[loc.offset].reshape(shape)      # a view (reshape) of an input
        if loc.kind == LocKind.OUTPUT:
            return outs[loc.offset].reshape(shape)
        base = arena if loc.kind == LocKind.ARENA else self._weights
        n = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(base, dtype=_NP[dt], count=n, offset=loc.offset).reshape(shape)

    def _host(self, st: HostCall, xs: list[np.ndarray], outs: list[np.ndarray],
              arena: np.ndarray) -> None:
        if self.host_op is None:
            raise ArtifactError(f"op '{st.op}' runs on the host, but no host-op handler was "
                                "given to the runtime")
        args = [self._view(t.loc, t.dtype, t.shape, xs, outs, arena) for t in st.inputs]
        res = self.host_op(st.op, args, st.attrs)
        for t, r in zip(st.outputs, res):
            self._view(t.loc, t.dtype, t.shape, xs, outs, arena)[...] = r


_NP = NP_DTYPES
