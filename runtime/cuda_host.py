"""CUDA C on the CPU: runs a CUDA artifact's kernels, built for this CPU by
codegen/cuda/host.py, in the order and with the grids, blocks and arena offsets the GPU runtime
(runtime/cuda.py) would use, so that they are checked against onnxruntime without a GPU.

What this does not show: timing, and every race. A thread runs until it reaches a barrier, so
a missing barrier shows only where a thread then reads what the others have not written yet or
have overwritten (in the GEMM kernels it does; the loop-IR emulator's phases check every race),
and cp.async copies complete at once. A kernel that reads or writes out of bounds can crash
the process: this is a tool for checking minicc's own code, not for running user kernels.

    outs = minicc.emulate_cuda(minicc.compile("model.onnx", target="cuda")).run(feeds)
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from minicc.abi import HostCall, Launch, Location, LocKind
from minicc.errors import ArtifactError
from minicc.runtime.artifact import Artifact
from minicc.runtime.checks import NP_DTYPES, check_inputs
from minicc.runtime.locations import gather_outputs, view_at


class HostModule:
    """A CUDA source's kernels built for the CPU (the library and which kernels need fibers,
    from codegen/cuda/host.py's build_host): `launch(name, grid, block, pointers)` runs one
    kernel over every block of the grid."""

    STACK_BYTES = 256 << 10     # a fiber's stack: a thread's register arrays live on it

    def __init__(self, path: Path, fibers: dict[str, bool]) -> None:
        self.path, self.fibers = path, fibers
        self.lib = ctypes.CDLL(str(self.path))
        self._launch = self.lib.minicc_host_launch
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._entries: dict[str, int] = {}

    def entry(self, name: str) -> int:
        """The address of kernel `name`'s entry point (ArtifactError if there is none)."""
        e = self._entries.get(name)
        if e is None:
            if name not in self.fibers:
                raise ArtifactError(f"kernel {name} is launched but not in the source")
            e = self._entries[name] = ctypes.cast(getattr(self.lib, f"minicc_host_{name}"),
                                                  ctypes.c_void_p).value or 0
        return e

    def launch(self, name: str, grid: tuple[int, ...], block: tuple[int, ...],
               pointers: list[int]) -> None:
        args = (ctypes.c_void_p * max(len(pointers), 1))(*pointers)
        g = (tuple(grid) + (1, 1))[:3]
        b = (tuple(block) + (1, 1))[:3]
        # the launch limits of every CUDA GPU since sm_30 (a launch past them fails there too)
        if min(g + b) < 1 or b[0] * b[1] * b[2] > 1024 or b[0] > 1024 or b[1] > 1024 or \
                b[2] > 64 or g[0] > 2**31 - 1 or g[1] > 65535 or g[2] > 65535:
            raise ArtifactError(f"cuda host emulation: kernel {name}: grid {g} x block {b} is "
                                "not a valid CUDA launch (at most 1024 threads per block, "
                                "block z <= 64, grid y and z <= 65535)")
        err = ctypes.create_string_buffer(512)
        if self._launch(self.entry(name), args, (ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b),
                        int(self.fibers[name]), self.STACK_BYTES, err, len(err)):
            raise ArtifactError(f"cuda host emulation: kernel {name} (grid {g}, block {b}): "
                                f"{err.value.decode()} (host source: "
                                f"{self.path.with_suffix('.cpp')})")


class HostCudaExecutable:
    """Runs a CUDA Artifact's kernels on the CPU, in the order and with the launch
    configurations the GPU runtime (runtime/cuda.py) would use, over one numpy arena."""

    def __init__(self, a: Artifact, module: HostModule, host_op: Any = None) -> None:
        self.artifact = a
        self.host_op = host_op
        self.module = module
        for st in a.steps:
            if isinstance(st, Launch):
                self.module.entry(st.kernel)
        self.weights = np.frombuffer(bytearray(a.weights or b"\0" * 256), dtype=np.uint8)

    def check_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        return check_inputs(self.artifact.inputs, inputs)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self._run(inputs, None)

    def trace(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        """The arena and the outputs' bytes after each step (CudaExecutable.trace's twin: the
        two side by side find the first kernel whose results differ on the GPU)."""
        snaps: list[np.ndarray] = []
        self._run(inputs, snaps)
        return snaps

    def _run(self, inputs: Mapping[str, Any], snaps: list | None) -> dict[str, np.ndarray]:
        a = self.artifact
        xs = [np.ascontiguousarray(x) for x in self.check_inputs(inputs)]
        outs = [np.zeros(s, dtype=NP_DTYPES[d]) for _, d, s in a.outputs]
        arena = np.zeros(max(a.arena_bytes, 256), dtype=np.uint8)
        for st in a.steps:
            if isinstance(st, Launch):
                self._launch(st, xs, outs, arena)
            else:
                self._host(st, xs, outs, arena)
            if snaps is not None:
                snaps.append(np.concatenate([arena] + [o.reshape(-1).view(np.uint8)
                                                       for o in outs]))
        return gather_outputs(a, xs, outs, arena, self.weights)

    def _ptr(self, loc: Location, xs: list[np.ndarray], outs: list[np.ndarray],
             arena: np.ndarray) -> int:
        if loc.kind == LocKind.ARENA:
            return arena.ctypes.data + loc.offset
        if loc.kind == LocKind.WEIGHTS:
            return self.weights.ctypes.data + loc.offset
        return (xs if loc.kind == LocKind.INPUT else outs)[loc.offset].ctypes.data

    def _launch(self, st: Launch, xs: list[np.ndarray], outs: list[np.ndarray],
                arena: np.ndarray) -> None:
        self.module.launch(st.kernel, st.grid, st.block,
                           [self._ptr(x, xs, outs, arena) for x in st.args])

    def _view(self, loc: Location, d: str, s: Any, xs: list[np.ndarray],
              outs: list[np.ndarray], arena: np.ndarray) -> np.ndarray:
        return view_at(loc, d, s, xs, outs, arena, self.weights)

    def _host(self, st: HostCall, xs: list[np.ndarray], outs: list[np.ndarray],
              arena: np.ndarray) -> None:
        if self.host_op is None:
            raise ArtifactError(f"op '{st.op}' runs on the host but no handler was given")
        args = [self._view(t.loc, t.dtype, t.shape, xs, outs, arena).copy() for t in st.inputs]
        for t, r in zip(st.outputs, self.host_op(st.op, args, st.attrs)):
            self._view(t.loc, t.dtype, t.shape, xs, outs, arena)[...] = r


def first_divergence(a: Artifact, gpu: list[np.ndarray], host: list[np.ndarray],
                     rtol: float = 1e-3, atol: float = 1e-4) -> dict[str, Any] | None:
    """The first step after which two traces of `a` (CudaExecutable.trace on a GPU,
    HostCudaExecutable.trace here) differ, read as float32 words at (rtol, atol): the kernel to
    look at when a model's GPU outputs mismatch. None if they agree throughout. (u8 and s8
    data read as float32 can differ more than their bytes do: a lead, not a verdict.)"""
    kernels = {k.get("name"): k for k in a.summary.get("kernels", [])}
    for i, (st, g, h) in enumerate(zip(a.steps, gpu, host)):
        n = min(len(g), len(h)) // 4 * 4
        gf, hf = g[:n].view(np.float32), h[:n].view(np.float32)
        with np.errstate(all="ignore"):
            bad = ~np.isclose(gf, hf, rtol=rtol, atol=atol, equal_nan=True)
            if not bad.any():
                continue
            name = st.kernel if isinstance(st, Launch) else f"host op {st.op}"
            return {"step": i, "kernel": name,
                    "schedule": kernels.get(name, {}).get("schedule"),
                    "words_differing": int(bad.sum()),
                    "max_abs_diff": float(np.nanmax(np.abs(gf[bad] - hf[bad]))),
                    "first_word": int(np.argmax(bad))}
    return None
