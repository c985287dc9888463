"""Load an Artifact for this CPU and run it: object code through llvmlite's MCJIT, entry
functions through ctypes, one arena per executable. Every input is checked (name, dtype, shape,
contiguity) before native code runs; a wrong input raises RuntimeInputError."""

from __future__ import annotations

import ctypes
import sys
import threading
from typing import Any, Callable, Mapping, Sequence

import llvmlite.binding as llvm
import numpy as np

from minicc import env
from minicc.errors import ArtifactError, RuntimeInputError
from minicc.runtime.artifact import Artifact
from minicc.runtime.llvm_host import (host_features, init_llvm, load_gomp, new_target_machine,
                                      target_machine)

HostOp = Callable[[str, list[np.ndarray], dict], list[np.ndarray]]
_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.POINTER(ctypes.c_void_p), ctypes.c_int32)


def _aligned(nbytes: int, align: int = 64) -> np.ndarray:
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + nbytes]


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
    if a.triple != target_machine().triple:
        raise ArtifactError(f"artifact is for {a.triple}, this machine is "
                            f"{target_machine().triple}")


class Executable:
    """A loaded model. `run(inputs)` returns outputs by name; safe to call from several threads
    (calls are serialized: they share one arena)."""

    def __init__(self, a: Artifact, version: str, host_op: HostOp | None = None,
                 threads: int | None = None):
        check_compatible(a, version)
        init_llvm()
        self.artifact = a
        want = a.threads if threads is None else max(1, min(threads, a.threads))
        if want > 1 and not load_gomp():
            want = 1  # no libgomp on this machine: run single-threaded
        if a.threads > 1 and not load_gomp():
            raise ArtifactError("this artifact uses OpenMP threads but libgomp is not installed; "
                                "compile with threads=1 or install libgomp")
        self.threads = want
        self.host_op = host_op
        tm = new_target_machine()    # the engine owns it
        empty = llvm.parse_assembly(f'target triple = "{tm.triple}"\n')
        self._ee = llvm.create_mcjit_compiler(empty, tm)
        self._obj = llvm.ObjectFileRef.from_data(a.object_code)
        self._ee.add_object_file(self._obj)
        self._ee.finalize_object()
        self._entries: dict[str, Any] = {}
        for st in a.steps:
            if "native" in st:
                addr = self._ee.get_function_address(st["native"])
                if not addr:
                    raise ArtifactError(f"entry {st['native']} missing from the object code")
                self._entries[st["native"]] = _ENTRY(addr)
        self._arena = _aligned(max(a.arena_bytes, 64))
        self._weights = _aligned(max(len(a.weights), 64))
        self._weights[:len(a.weights)] = np.frombuffer(a.weights, dtype=np.uint8)
        self._lock = threading.Lock()
        self.input_names = [n for n, _, _ in a.inputs]
        self.output_names = [n for n, _, _ in a.outputs]

    def check_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        a = self.artifact
        names = [n for n, _, _ in a.inputs]
        missing = [n for n in names if n not in inputs]
        extra = [n for n in inputs if n not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(f"'{n}' ({d}{list(s)})" for n, d, s in
                                                    a.inputs if n in missing))
            if extra:
                parts.append("unknown " + ", ".join(f"'{n}'" for n in extra))
            raise RuntimeInputError(f"inputs do not match the model: {'; '.join(parts)}. "
                                    f"It takes: {', '.join(names) or 'no inputs'}")
        out = []
        for n, dt, shape in a.inputs:
            x = inputs[n]
            if not isinstance(x, np.ndarray):
                raise RuntimeInputError(f"input '{n}': expected a numpy array of {dt}{list(shape)}"
                                        f", got {type(x).__name__}")
            want = f"{dt}[{','.join(map(str, shape))}]"
            if x.dtype != np.dtype(_NP[dt]):
                got = _NAME.get(x.dtype, str(x.dtype))
                raise RuntimeInputError(f"input '{n}': dtype {got} ({x.dtype}) but the model "
                                        f"expects {want}; convert with "
                                        f"x.astype(np.{np.dtype(_NP[dt])})")
            if x.ndim != len(shape):
                raise RuntimeInputError(f"input '{n}': rank {x.ndim} (shape {list(x.shape)}) "
                                        f"but the model expects {want}")
            if tuple(x.shape) != tuple(shape):
                raise RuntimeInputError(f"input '{n}': shape {list(x.shape)} but the model was "
                                        f"compiled for {want}")
            if not x.flags.c_contiguous:
                raise RuntimeInputError(f"input '{n}': array is not C-contiguous (a view or "
                                        "transpose?); pass np.ascontiguousarray(x)")
            if not x.flags.aligned:
                raise RuntimeInputError(f"input '{n}': array data is not aligned")
            out.append(x)
        return out

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        a = self.artifact
        xs = self.check_inputs(inputs)
        outs = [np.empty(s, dtype=_NP[d]) for _, d, s in a.outputs]
        arrays = xs + outs
        io = (ctypes.c_void_p * max(len(arrays), 1))(*[x.ctypes.data for x in arrays])
        with self._lock:
            debug = env.flag("MINICC_DEBUG")
            for st in a.steps:
                if debug:
                    print(f"minicc: running {st.get('native') or st.get('host')}", file=sys.stderr,
                          flush=True)
                if "native" in st:
                    self._entries[st["native"]](self._arena.ctypes.data,
                                                self._weights.ctypes.data, io, self.threads)
                else:
                    self._host(st, xs, outs)
            result = {}
            for k, ((name, d, s), (kind, off)) in enumerate(zip(a.outputs, a.output_sources)):
                if kind == "output" and off == k:
                    result[name] = outs[k]        # native code wrote it in place
                else:                             # an input, a weight or another output
                    result[name] = self._view(kind, off, d, s, xs, outs).copy()
        return result

    def time_segments(self, inputs: Mapping[str, Any], repeat: int = 10) -> list[float]:
        """Median seconds of each step over `repeat` runs (steps as the artifact lists them)."""
        import time

        a = self.artifact
        xs = self.check_inputs(inputs)
        outs = [np.empty(s, dtype=_NP[d]) for _, d, s in a.outputs]
        io = (ctypes.c_void_p * max(len(xs) + len(outs), 1))(
            *[x.ctypes.data for x in xs + outs])
        samples: list[list[float]] = [[] for _ in a.steps]
        with self._lock:
            for _ in range(repeat + 1):
                for k, st in enumerate(a.steps):
                    t = time.perf_counter()
                    if "native" in st:
                        self._entries[st["native"]](self._arena.ctypes.data,
                                                    self._weights.ctypes.data, io, self.threads)
                    else:
                        self._host(st, xs, outs)
                    samples[k].append(time.perf_counter() - t)
        return [sorted(s[1:])[len(s[1:]) // 2] for s in samples]

    def _view(self, kind: str, off: int, dt: str, shape: Sequence[int], xs: list[np.ndarray],
              outs: list[np.ndarray]) -> np.ndarray:
        if kind == "input":
            return xs[off].reshape(shape)      # a view (reshape) of an input
        if kind == "output":
            return outs[off].reshape(shape)
        base = self._arena if kind == "arena" else self._weights
        n = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(base, dtype=_NP[dt], count=n, offset=off).reshape(shape)

    def _host(self, st: dict, xs: list[np.ndarray], outs: list[np.ndarray]) -> None:
        if self.host_op is None:
            raise ArtifactError(f"op '{st['host']}' runs on the host, but no host-op handler "
                                "was given to the runtime")
        args = [self._view(k, o, d, s, xs, outs) for k, o, d, s in st["inputs"]]
        res = self.host_op(st["host"], args, st["attrs"])
        for (k, o, d, s), r in zip(st["outputs"], res):
            self._view(k, o, d, s, xs, outs)[...] = r


_NP: dict[str, type] = {"bool": np.bool_, "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
       "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64,
       "f16": np.float16, "f32": np.float32, "f64": np.float64}
_NAME = {np.dtype(v): k for k, v in _NP.items()}
