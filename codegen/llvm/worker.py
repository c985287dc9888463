"""LLVM's optimize-and-emit of one module, in this process or in a worker process, and the
rendering of a chunk of kernels into that module.

The renderer is Python and holds the GIL; LLVM run from a thread of the same process loses a
third of its speed waiting for it between calls (densenet121: 5.8 s alone, 7.5 s beside the
renderer). A worker process runs on the other core with no GIL to share. It takes kernels
(pickled loop IR) and renders them as well as compiling them: rendering was 40% of the main
process's time (light_resnet50: 1.9 of 4.4 s), so there it ran while the other core idled.
Workers are kept for the next compile; the module is also run as the worker's script, which
imports llvmlite, and the renderer on its first chunk of kernels (about 0.2 s).
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import BinaryIO

import llvmlite.binding as llvm


class LLVMFailure(RuntimeError):
    """LLVM refused the module (the message is LLVM's)."""


_machines: dict[tuple[str, str], llvm.TargetMachine] = {}


def machine(cpu: str, features: str) -> llvm.TargetMachine:
    """The target machine generated code is compiled with (one per CPU and feature set).

    Static relocations: the execution engine patches absolute addresses into each object as
    it loads them. With PIC, calls from one object into another go through GOTPC64
    relocations, which MCJIT patched at the wrong place once a program was split into
    several objects (an illegal instruction in the first parallel region)."""
    key = (cpu, features)
    if key not in _machines:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _machines[key] = llvm.Target.from_default_triple().create_target_machine(
            cpu=cpu, features=features, opt=3, reloc="static", codemodel="jitdefault")
    return _machines[key]


# LLVM's pipeline at -O2 for every opt_level from 2: the kernels come vectorized, unrolled and
# blocked, and -O3 made no faster code (a Xeon, 10 models at 1 thread, 6 at 2: 0.97-1.02x, the
# outputs bit for bit the same; GEMM 1024^3 165.3 against 165.6 GFLOP/s) for 18% more time in
# LLVM (light_resnet50's 16 modules: 3.2 -> 2.7 s)
LLVM_SPEED_LEVEL = 2


def optimize(text: str, opt_level: int, tm: llvm.TargetMachine) -> llvm.ModuleRef:
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise LLVMFailure(str(e)) from None
    if opt_level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=min(opt_level, LLVM_SPEED_LEVEL))
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    return mod


def compile_module(text: str, opt_level: int, cpu: str, features: str) -> bytes:
    """LLVM IR text -> an object file."""
    tm = machine(cpu, features)
    return tm.emit_object(optimize(text, opt_level, tm))


# ---- the worker process ----------------------------------------------------------------------

def _send(out: BinaryIO, head: dict, body: bytes) -> None:
    h = json.dumps(head).encode()
    out.write(struct.pack("<QQ", len(h), len(body)) + h + body)
    out.flush()


def _recv(inp: BinaryIO) -> tuple[dict, bytes] | None:
    lens = inp.read(16)
    if len(lens) < 16:
        return None
    nh, nb = struct.unpack("<QQ", lens)
    head = json.loads(inp.read(nh))
    body = inp.read(nb)
    if len(body) < nb:
        return None
    return head, body


def render_chunk(kernels: list, fastmath: bool, features: tuple[str, ...], cpu: str,
                 llvm_features: str) -> str:
    """The kernels as one module's LLVM IR text (the renderer is imported on first use)."""
    from minicc.codegen.llvm.render import render_module
    tm = machine(cpu, llvm_features)
    return render_module(kernels, tm.triple, str(tm.target_data), fastmath, features)


def main() -> None:
    """Serve requests on stdin until it closes: a header (opt level, CPU, features; for a
    chunk of kernels the renderer's options) and the IR text or the pickled kernels in; ok
    with the IR text and the object, or the error, out. A chunk the renderer fails on is
    answered `render: false`: the caller renders it itself, to raise the real error."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    path = os.environ.get("MINICC_WORKER_PATH")
    if path:      # the caller's, to import the renderer alike; now, before the first request
        sys.path[:] = path.split(os.pathsep)
        try:
            import minicc.codegen.llvm.render  # noqa: F401
        except ImportError:
            pass              # (a chunk of kernels is then answered render: false)
    while (req := _recv(inp)) is not None:
        head, body = req
        rendered = "fastmath" in head
        try:
            if rendered:
                text = render_chunk(pickle.loads(body), head["fastmath"],
                                    tuple(head["target_features"]), head["cpu"],
                                    head["features"])
            else:
                text = body.decode()
        except Exception as e:     # (any failure: the caller's own rendering says what)
            _send(out, {"ok": False, "render": False, "error": f"{type(e).__name__}: {e}"},
                  b"")
            continue
        try:
            obj = compile_module(text, head["opt"], head["cpu"], head["features"])
            if rendered:
                raw = text.encode()
                _send(out, {"ok": True, "text": len(raw)}, raw + obj)
            else:
                _send(out, {"ok": True}, obj)
        except LLVMFailure as e:
            _send(out, {"ok": False, "error": str(e)}, b"")


class Worker:
    """One worker process; `compile` is one request and its answer (not for two threads)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        env = dict(os.environ, MINICC_WORKER_PATH=os.pathsep.join(sys.path))
        self.proc = subprocess.Popen([sys.executable, "-u", __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)

    def compile(self, text: str, opt_level: int, cpu: str, features: str) -> bytes:
        return self._ask({"opt": opt_level, "cpu": cpu, "features": features},
                         text.encode())[1]

    def render(self, kernels: list, fastmath: bool, target_features: tuple[str, ...],
               opt_level: int, cpu: str, features: str) -> tuple[str, bytes] | None:
        """The kernels rendered into one module and compiled: its IR text and object; None
        where the worker could not render them (the caller renders them itself)."""
        head = {"opt": opt_level, "cpu": cpu, "features": features, "fastmath": fastmath,
                "target_features": list(target_features)}
        try:
            body = pickle.dumps(kernels, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
            return None                  # (a kernel holding what pickle cannot take)
        got = self._ask(head, body)
        if got is None:
            return None
        text, obj = got
        assert text is not None
        return text, obj

    def _ask(self, head: dict, body: bytes) -> tuple[str | None, bytes] | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            _send(self.proc.stdin, head, body)
            got = _recv(self.proc.stdout)
        except (BrokenPipeError, OSError):
            got = None
        if got is None:
            code = self.proc.poll()
            raise WorkerDied(f"the LLVM worker process ended (exit status {code})")
        head, body = got
        if not head["ok"]:
            if head.get("render") is False:
                return None
            raise LLVMFailure(head["error"])
        n = head.get("text")
        return (body[:n].decode(), body[n:]) if n is not None else (None, body)

    def alive(self) -> bool:
        return self.proc.poll() is None and self.pid == os.getpid()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


class WorkerDied(RuntimeError):
    pass


_idle: list[Worker] = []
_lock = threading.Lock()


def take() -> Worker | None:
    """An idle worker, or a new one; None where no process can be started."""
    with _lock:
        while _idle:
            w = _idle.pop()
            if w.alive():
                return w
    try:
        return Worker()
    except OSError:
        return None


def give(w: Worker) -> None:
    """Back to the pool for the next compile (a dead or inherited one is dropped)."""
    if w.alive():
        with _lock:
            _idle.append(w)


def _close_all() -> None:
    """At exit: idle workers hold nothing, so they are stopped at once (one still importing
    the renderer would otherwise hold up the exit of a program that compiled one small
    model)."""
    with _lock:
        for w in _idle:
            if w.pid == os.getpid() and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        _idle.clear()


atexit.register(_close_all)

if __name__ == "__main__":
    main()
