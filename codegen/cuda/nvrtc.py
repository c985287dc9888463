"""Compile CUDA C to cubin with NVRTC through cuda-python (`cuda.bindings.nvrtc`), which needs no
GPU and no driver: every generated kernel can be compile-checked on any machine. Failures raise
ToolchainError with the compiler log, the source written next to the cache and a repro command.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

from minicc.errors import ToolchainError

DEFAULT_ARCH = "sm_90"


@functools.lru_cache(maxsize=None)
def nvrtc_available() -> str | None:
    """None if NVRTC can be used, else why not."""
    try:
        from cuda.bindings import nvrtc
        err, *_ = nvrtc.nvrtcVersion()
        if int(err) != 0:
            return f"nvrtcVersion failed ({err})"
        return None
    except Exception as e:  # noqa: BLE001  (ImportError, library-not-found, driver errors)
        return f"{type(e).__name__}: {e}"


def nvrtc_version() -> tuple[int, int]:
    from cuda.bindings import nvrtc

    _, major, minor = nvrtc.nvrtcVersion()
    return int(major), int(minor)


def compile_cuda(source: str, arch: str = DEFAULT_ARCH, name: str = "minicc",
                 extra: tuple[str, ...] = ()) -> bytes:
    """CUDA C -> cubin for `arch` (e.g. sm_90)."""
    why = nvrtc_available()
    if why is not None:
        raise ToolchainError("cuda: NVRTC is not available (pip install cuda-python "
                             f"nvidia-cuda-nvrtc): {why}")
    from cuda.bindings import nvrtc

    opts = [f"--gpu-architecture={arch}", "-default-device", "--std=c++17",
            "-DNDEBUG"] + list(extra)
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), f"{name}.cu".encode(), 0, [], [])
    _check(err, "nvrtcCreateProgram", source, opts, name)
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        if int(err) != 0:
            _, n = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * n
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise _failure(log.decode(errors="replace").strip("\x00 \n"), source, opts, name)
        err, n = nvrtc.nvrtcGetCUBINSize(prog)
        _check(err, "nvrtcGetCUBINSize", source, opts, name)
        cubin = b" " * n
        (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin)
        _check(err, "nvrtcGetCUBIN", source, opts, name)
        return bytes(cubin)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _check(err: object, what: str, source: str, opts: list[str], name: str) -> None:
    if int(err) != 0:  # type: ignore[call-overload]
        raise _failure(f"{what} returned {err}", source, opts, name)


def _failure(log: str, source: str, opts: list[str], name: str) -> ToolchainError:
    d = Path(tempfile.gettempdir()) / "minicc-cuda"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:12]}.cu"
    p.write_text(source)
    return ToolchainError(f"cuda: NVRTC failed to compile {name}:\n{log}\nsource: {p}\n"
                          f"repro: nvcc -cubin {' '.join(o for o in opts if o != '-default-device')} "
                          f"{p}")
