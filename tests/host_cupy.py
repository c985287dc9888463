"""A stand-in for CuPy whose "device" is this CPU: arrays are numpy arrays, and kernels run
through codegen/cuda/host.py and runtime/cuda_host.py. With MINICC_HOST_GPU=1,
tests/conftest.py installs it as `cupy` before the tests import, so the GPU tests
(@pytest.mark.cuda) and runtime/cuda.py (the arena, output views, CUDA-graph capture and
replay, run_async, run_many, event timing) run on a machine without a GPU.

Only what minicc and its tests call is here, with CuPy's names and keyword arguments (CuPy 14:
cupy.cuda.function.Function.__call__(grid, block, args, shared_mem=0, stream=None), ndarray.get
(stream=None, order='C', out=None, blocking=True), ...), so a call CuPy would refuse fails here
too. Like CuPy, an array does not turn into a numpy array implicitly. Streams run eagerly (each
operation completes when issued); a capture records the kernel launches and a graph replays
them. The device reports compute capability "host", so a CUDA artifact is rebuilt from its
source (the RawModule(code=...) path); with Device.compute_capability set to "90" and the
artifact register()ed, its cubin is loaded (Module.load: the kernels must be among its ELF
function symbols) and run from its source.
"""

from __future__ import annotations

import sys
import time
import types
from typing import Any

import numpy as np

_current: list[Any] = []           # the streams entered with `with stream:`, innermost last
uint8, int8, int32, int64, float16, float32, float64 = (np.uint8, np.int8, np.int32, np.int64,
                                                       np.float16, np.float32, np.float64)


class _Memory:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


class ndarray:
    """A "device" array: a numpy array that must be copied explicitly to and from the host."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    data = property(lambda self: _Memory(self._a.ctypes.data))

    def __array__(self, *a: Any, **k: Any) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __getitem__(self, k: Any) -> "ndarray":
        return ndarray(self._a[k])

    def __setitem__(self, k: Any, v: Any) -> None:
        if isinstance(v, np.ndarray):
            raise TypeError("setting a CuPy array from a numpy array: use cupy.asarray or set")
        _check_not_capturing("an array copy")
        self._a[k] = v._a if isinstance(v, ndarray) else v

    def __matmul__(self, other: "ndarray") -> "ndarray":
        return ndarray(self._a @ _device(other))

    def __sub__(self, other: "ndarray") -> "ndarray":
        return ndarray(self._a - _device(other))

    def __float__(self) -> float:
        return float(self._a)

    def view(self, dtype: Any) -> "ndarray":
        return ndarray(self._a.view(dtype))

    def reshape(self, *shape: Any) -> "ndarray":
        return ndarray(self._a.reshape(*shape))

    def copy(self) -> "ndarray":
        _check_not_capturing("an array copy")
        return ndarray(self._a.copy())

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        if not isinstance(arr, np.ndarray) or arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("set: a numpy array of the same shape and dtype is needed")
        self._a[...] = arr

    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None,
            blocking: bool = True) -> np.ndarray:
        if out is None:
            return self._a.copy()
        if not isinstance(out, np.ndarray) or out.shape != self.shape or \
                out.dtype != self.dtype:
            raise ValueError("get: `out` must be a numpy array of the same shape and dtype")
        out[...] = self._a
        return out


def _device(x: Any) -> np.ndarray:
    if not isinstance(x, ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a CuPy array is needed")
    return x._a


def abs(x: ndarray) -> ndarray:  # noqa: A001  (CuPy's name)
    return ndarray(np.abs(_device(x)))


def max(x: ndarray) -> ndarray:  # noqa: A001
    return ndarray(np.asarray(np.max(_device(x))))


def zeros(shape: Any, dtype: Any = float) -> ndarray:
    return ndarray(np.zeros(shape, dtype))


def empty(shape: Any, dtype: Any = float) -> ndarray:
    """Uninitialized memory, as cudaMalloc gives: a byte pattern, so a read before a write
    shows."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    return ndarray(np.frombuffer(b"\x5a" * (n * dt.itemsize), dt).copy().reshape(shape))


def empty_like(x: ndarray) -> ndarray:
    return empty(x.shape, x.dtype)


def asarray(x: Any) -> ndarray:
    return x if isinstance(x, ndarray) else ndarray(np.array(x))


def asnumpy(x: Any, stream: Any = None) -> np.ndarray:
    return x._a.copy() if isinstance(x, ndarray) else np.asarray(x)


# ---- cupy.cuda ---------------------------------------------------------------------------

def _check_not_capturing(what: str) -> None:
    if _current and _current[-1].capturing is not None:
        raise RuntimeError(f"{what} on a stream that is being captured: a CUDA graph records "
                           "only kernel launches here")


class Stream:
    _next = 1

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int | None = None) -> None:
        self.ptr = Stream._next
        Stream._next += 1
        self.capturing: list | None = None

    def __enter__(self) -> "Stream":
        _current.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.pop()

    def synchronize(self) -> None:
        if self.capturing is not None:
            raise RuntimeError("cudaErrorStreamCaptureUnsupported: synchronize while capturing")

    def wait_event(self, event: "Event") -> None:
        pass

    def begin_capture(self, mode: Any = None) -> None:
        self.capturing = []

    def end_capture(self) -> "Graph":
        g, self.capturing = Graph(self.capturing or []), None
        return g


class Graph:
    def __init__(self, launches: list) -> None:
        self._launches = launches

    def launch(self, stream: Any = None) -> None:
        for run in self._launches:
            run()


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False) -> None:
        self.t: float | None = None

    def record(self, stream: Any = None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        if self.t is None:
            raise RuntimeError("synchronize on an event never recorded")

    @property
    def done(self) -> bool:
        return self.t is not None


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    if start_event.t is None or end_event.t is None:
        raise RuntimeError("cudaErrorInvalidResourceHandle: an event was not recorded")
    return (end_event.t - start_event.t) * 1e3


def alloc_pinned_memory(size: int) -> bytearray:
    return bytearray(size)


class Device:
    def __init__(self, device: int | None = None) -> None:
        self.id = device or 0

    compute_capability = "host"


class _Kernel:
    """One kernel of a module built by cuda_host, launched with CuPy's Function signature."""

    def __init__(self, module: Any, name: str) -> None:
        self._module, self.name = module, name
        module.entry(name)

    def __call__(self, grid: tuple, block: tuple, args: Any, shared_mem: int = 0,
                 stream: Any = None) -> None:
        if not isinstance(grid, tuple) or not isinstance(block, tuple):
            raise TypeError("Argument 'grid' and 'block' must be tuples")
        ptrs = [int(a) for a in args]
        s = stream if stream is not None else (_current[-1] if _current else None)
        run = lambda: self._module.launch(self.name, grid, block, ptrs)  # noqa: E731
        if s is not None and s.capturing is not None:
            s.capturing.append(run)
        else:
            run()


class RawModule:
    def __init__(self, *, code: str | None = None, path: str | None = None,
                 options: tuple = (), backend: str = "nvrtc", translate_cucomplex: bool = False,
                 enable_cooperative_groups: bool = False, name_expressions: Any = None,
                 jitify: bool = False) -> None:
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        if code is None:
            raise NotImplementedError("the host device runs CUDA source only")
        from minicc.codegen.cuda.host import build_host
        from minicc.runtime.cuda_host import HostModule

        self._module = HostModule(*build_host(code))

    def get_function(self, name: str) -> _Kernel:
        return _Kernel(self._module, name)


# cubin (its sha256) -> the CUDA source it was compiled from: register() lets Module.load run
# a cubin's kernels (from their source) where Device.compute_capability is set to "90"
_SOURCES: dict[str, str] = {}


def register(artifact: Any) -> None:
    """Let Module.load take `artifact`'s cubin: its kernels run from the artifact's source."""
    import hashlib

    _SOURCES[hashlib.sha256(bytes(artifact.objects[0])).hexdigest()] = artifact.source


def cubin_functions(cubin: bytes) -> set[str]:
    """The function symbols of a cubin (an ELF64 image): the kernels the driver would find."""
    import struct

    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise RuntimeError("CUDA_ERROR_INVALID_IMAGE: not an ELF64 cubin")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", cubin, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize)
                for i in range(shnum)]
    names = set()
    for _, kind, _, _, off, size, link, _, _, entsize in sections:
        if kind != 2:                                   # SHT_SYMTAB
            continue
        stroff = sections[link][4]
        for j in range(size // entsize):
            st_name, st_info = struct.unpack_from("<IB", cubin, off + j * entsize)
            if st_info & 0xF == 2:                      # STT_FUNC
                end = cubin.index(b"\0", stroff + st_name)
                names.add(cubin[stroff + st_name:end].decode())
    return names


class _Function:
    class Module:
        """cupy.cuda.function.Module: load(cubin) as cuModuleLoadData would take it (an
        ELF64 image whose function symbols get_function looks up), run from the source
        register() recorded for it."""

        def load(self, cubin: bytes) -> None:
            import hashlib

            if not isinstance(cubin, bytes):
                raise TypeError("Argument 'cubin' has incorrect type (expected bytes)")
            self._names = cubin_functions(cubin)
            source = _SOURCES.get(hashlib.sha256(cubin).hexdigest())
            if source is None:
                raise RuntimeError("the host device runs a cubin only from the source that "
                                   "host_cupy.register() recorded for it")
            self._raw = RawModule(code=source)

        def get_function(self, name: str) -> "_Kernel":
            if name not in self._names:
                raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
            return self._raw.get_function(name)


def modules() -> dict[str, types.ModuleType]:
    """This module as `cupy`, with cupy.cuda, cupy.cuda.function and cupy.cuda.runtime."""
    me = sys.modules[__name__]
    cuda = types.ModuleType("cupy.cuda")
    runtime = types.ModuleType("cupy.cuda.runtime")
    runtime.getDeviceCount = lambda: 1                       # type: ignore[attr-defined]
    function = types.ModuleType("cupy.cuda.function")
    function.Module = _Function.Module                       # type: ignore[attr-defined]
    for k, v in {"Stream": Stream, "Event": Event, "Device": Device, "runtime": runtime,
                 "function": function, "get_elapsed_time": get_elapsed_time,
                 "alloc_pinned_memory": alloc_pinned_memory}.items():
        setattr(cuda, k, v)
    me.cuda = cuda                                           # type: ignore[attr-defined]
    return {"cupy": me, "cupy.cuda": cuda, "cupy.cuda.runtime": runtime,
            "cupy.cuda.function": function}


def install() -> None:
    """Make `import cupy` give this module (tests/conftest.py, with MINICC_HOST_GPU=1)."""
    sys.modules.update(modules())
