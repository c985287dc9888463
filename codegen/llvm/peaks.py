"""The machine's roofs, measured by minicc itself: the FMA throughput of one core and of all cores
(a generated loop of independent FMA chains at the host's vector width), the int8 dot-product
throughput where the host has AVX-512 VNNI (the same loop with vpdpbusd), and the memory
bandwidth (a generated streaming copy over arrays far larger than the caches), of one thread and
of all.

Measured once per host (CPU name, features, cores) and cached as JSON beside the compile cache;
`minicc peaks` prints them and `--refresh` measures again. Nothing is hard-coded: on another
machine the same code measures that machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from minicc.codegen.llvm.target import cpu_target
from minicc.options import default_threads
from minicc.runtime.cache import default_cache_dir
from minicc.runtime.llvm_host import host_features, init_llvm, new_target_machine

F32, I64 = ir.FloatType(), ir.IntType(64)

def chains() -> int:
    """Independent accumulators: more than FMA latency x pipes on current cores (8-10), and
    few enough to stay in registers with the two operands: 16 of AVX-512's 32, 12 of AVX2's 16
    (16 there spill, and measured 43 of Zen 3's 80 GFLOP/s)."""
    return 16 if "+avx512f" in host_features()[1].split(",") else 12


COPY_BYTES = 256 << 20
FORMAT = 3           # 3: accumulators that fit the registers (chains())
I32 = ir.IntType(32)


@dataclass(frozen=True)
class Peaks:
    cpu: str
    vector_bits: int
    cores: int
    fma_gflops_1: float      # one core
    fma_gflops_all: float    # every core, one thread each
    copy_gbs_1: float        # read + write bytes per second, one thread
    copy_gbs_all: float
    measured: str            # when (UTC)
    int8_gops_1: float = 0.0     # u8 x s8 dot products (vpdpbusd), 2 ops per multiply-add;
    int8_gops_all: float = 0.0   # 0 where the host has no AVX-512 VNNI

    def int8(self, threads: int) -> float:
        if threads >= self.cores:
            return self.int8_gops_all
        return self.int8_gops_1 * max(1, threads)

    def fma(self, threads: int) -> float:
        """GFLOP/s available to `threads` threads (scaled between the two measurements)."""
        if threads >= self.cores:
            return self.fma_gflops_all
        return self.fma_gflops_1 * max(1, threads)

    def bandwidth(self, threads: int) -> float:
        return self.copy_gbs_all if threads >= self.cores else min(
            self.copy_gbs_all, self.copy_gbs_1 * max(1, threads))

    def roof(self, intensity: float, threads: int, int8: bool = False) -> float:
        """The roofline bound in GFLOP/s (GOP/s for an int8 kernel, against the vpdpbusd roof
        where measured) at `intensity` FLOP/byte."""
        top = self.int8(threads) if int8 and self.int8_gops_1 > 0 else self.fma(threads)
        return min(top, intensity * self.bandwidth(threads))


def _chains_module(name: str, vt: ir.VectorType, step: str, triple: str, layout: str) -> str:
    """void name(i64 n, T* io): chains() independent accumulators, each acc = step(acc, a, b) n
    times (a, b, then the accumulators' starting values read from io; their sum written back,
    so nothing is optimized away)."""
    m = ir.Module(name=name)
    m.triple, m.data_layout = triple, layout
    el = vt.element
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [I64, el.as_pointer()]), name)
    intr = ir.Function(m, ir.FunctionType(vt, [vt, vt, vt]), step)
    entry = fn.append_basic_block("entry")
    b = ir.IRBuilder(entry)
    n, io = fn.args
    vp = b.bitcast(io, vt.as_pointer())
    a = b.load(b.gep(vp, [ir.Constant(I64, 0)]), align=4)     # numpy arrays: 16-byte aligned
    c = b.load(b.gep(vp, [ir.Constant(I64, 1)]), align=4)
    init = [b.load(b.gep(vp, [ir.Constant(I64, 2 + k)]), align=4) for k in range(chains())]
    loop, done = fn.append_basic_block("loop"), fn.append_basic_block("done")
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    accs = []
    for k in range(chains()):
        acc = b.phi(vt)
        acc.add_incoming(init[k], entry)
        accs.append(acc)
    new = [b.call(intr, [acc, a, c]) for acc in accs]
    for acc, x in zip(accs, new):
        acc.add_incoming(x, loop)
    nxt = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed("<", nxt, n), loop, done)
    b.position_at_end(done)
    total = new[0]
    for x in new[1:]:
        total = b.fadd(total, x) if el == F32 else b.add(total, x)
    b.store(total, b.gep(vp, [ir.Constant(I64, 2)]), align=4)
    b.ret_void()
    return str(m)


def _fma_module(lanes: int, triple: str, layout: str) -> str:
    """fma_peak: acc = fma(acc, a, b) on f32 vectors of the host's width."""
    return _chains_module("fma_peak", ir.VectorType(F32, lanes), f"llvm.fma.v{lanes}f32",
                          triple, layout)


def _dot_module(lanes: int, triple: str, layout: str) -> str:
    """dot_peak: acc = vpdpbusd(acc, a, b) on i32 vectors (AVX-512 VNNI: 4 u8 x s8
    multiply-adds per lane)."""
    return _chains_module("dot_peak", ir.VectorType(I32, lanes),
                          f"llvm.x86.avx512.vpdpbusd.{32 * lanes}", triple, layout)


def _copy_module(lanes: int, triple: str, layout: str) -> str:
    """void stream_copy(float* src, float* dst, i64 n): dst[0..n) = src[0..n), n % lanes == 0."""
    m = ir.Module(name="stream")
    m.triple, m.data_layout = triple, layout
    vt = ir.VectorType(F32, lanes)
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [F32.as_pointer(), F32.as_pointer(),
                                                        I64]), "stream_copy")
    for a in fn.args[:2]:
        a.add_attribute("noalias")
    entry = fn.append_basic_block("entry")
    b = ir.IRBuilder(entry)
    src, dst, n = fn.args
    s, d = b.bitcast(src, vt.as_pointer()), b.bitcast(dst, vt.as_pointer())
    nv = b.udiv(n, ir.Constant(I64, lanes))
    loop, done = fn.append_basic_block("loop"), fn.append_basic_block("done")
    b.cbranch(b.icmp_signed(">", nv, ir.Constant(I64, 0)), loop, done)
    b.position_at_end(loop)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    b.store(b.load(b.gep(s, [i]), align=4), b.gep(d, [i]), align=4)
    nxt = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed("<", nxt, nv), loop, done)
    b.position_at_end(done)
    b.ret_void()
    return str(m)


class _Jit:
    """The two kernels, compiled for this host and kept alive with their engine."""

    def __init__(self, lanes: int, vnni: bool = False):
        init_llvm()
        tm = new_target_machine()
        layout = str(tm.target_data)
        mod = llvm.parse_assembly(_fma_module(lanes, tm.triple, layout))
        mod.link_in(llvm.parse_assembly(_copy_module(lanes, tm.triple, layout)))
        if vnni:
            mod.link_in(llvm.parse_assembly(_dot_module(lanes, tm.triple, layout)))
        mod.verify()
        self.engine = llvm.create_mcjit_compiler(mod, tm)
        self.engine.finalize_object()
        self.fma = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(
            self.engine.get_function_address("fma_peak"))
        self.copy = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
            self.engine.get_function_address("stream_copy"))
        self.dot = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(
            self.engine.get_function_address("dot_peak")) if vnni else None


def _concurrently(threads: int, work: Callable[[int], None]) -> float:
    """Seconds for `threads` threads to run work(k) each, started together (ctypes calls
    release the GIL, so they run on separate cores)."""
    start = threading.Barrier(threads + 1)
    ts = [threading.Thread(target=lambda k=k: (start.wait(), work(k))) for k in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def measure_fma(jit: _Jit, lanes: int, threads: int, seconds: float = 0.3,
                dot: bool = False) -> float:
    """GFLOP/s of the FMA loop on `threads` threads (best of 3); with `dot`, GOP/s of the
    vpdpbusd loop (8 ops per lane: four multiply-adds)."""
    fn = jit.dot if dot else jit.fma
    assert fn is not None
    bufs = [np.ones(lanes * (chains() + 2), np.int32 if dot else np.float32)
            for _ in range(threads)]
    n = 1 << 16
    while True:                                    # calibrate n to ~`seconds` on one thread
        t = _concurrently(1, lambda k: fn(n, bufs[0].ctypes.data))
        if t > seconds / 4 or n > 1 << 34:
            break
        n *= 4
    n = max(1, int(n * seconds / max(t, 1e-6)))
    best = min(_concurrently(threads, lambda k: fn(n, bufs[k].ctypes.data)) for _ in range(3))
    return threads * n * chains() * lanes * (8 if dot else 2) / best / 1e9


def measure_copy(jit: _Jit, threads: int, nbytes: int = COPY_BYTES) -> float:
    """GB/s (bytes read + written) of a streaming copy of `nbytes`, shared by `threads`."""
    n = nbytes // 4 // threads // 64 * 64
    src = [np.ones(n, np.float32) for _ in range(threads)]
    dst = [np.zeros(n, np.float32) for _ in range(threads)]
    for k in range(threads):                       # touch the pages first
        jit.copy(src[k].ctypes.data, dst[k].ctypes.data, n)
    best = min(_concurrently(threads, lambda k: jit.copy(src[k].ctypes.data, dst[k].ctypes.data,
                                                         n)) for _ in range(3))
    return 2 * threads * n * 4 / best / 1e9


def measure(cores: int | None = None, seconds: float = 0.3,
            copy_bytes: int = COPY_BYTES) -> Peaks:
    """Measure now: the FMA loop for about `seconds` per try, copies of `copy_bytes`."""
    t = cpu_target("native")
    lanes, cores = t.lanes, cores or default_threads()
    vnni = "avx512vnni" in t.features and t.vector_bits == 512
    jit = _Jit(lanes, vnni)
    dots = (round(measure_fma(jit, lanes, 1, seconds, dot=True), 1),
            round(measure_fma(jit, lanes, cores, seconds, dot=True), 1)) if vnni else (0.0, 0.0)
    return Peaks(t.cpu, t.vector_bits, cores, round(measure_fma(jit, lanes, 1, seconds), 1),
                 round(measure_fma(jit, lanes, cores, seconds), 1),
                 round(measure_copy(jit, 1, copy_bytes), 1),
                 round(measure_copy(jit, cores, copy_bytes), 1),
                 time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), *dots)


def _cache_file(cores: int) -> Path:
    cpu, feats = host_features()
    h = hashlib.sha256(f"{FORMAT}|{cpu}|{feats}|{cores}".encode()).hexdigest()[:16]
    return default_cache_dir() / f"peaks-{cpu}-{h}.json"


def machine_peaks(refresh: bool = False, cores: int | None = None) -> Peaks:
    """This host's peaks, from the cache unless `refresh` or none is there (measuring takes a
    few seconds)."""
    cores = cores or default_threads()
    p = _cache_file(cores)
    if not refresh and p.exists():
        try:
            return Peaks(**json.loads(p.read_text()))
        except (ValueError, TypeError, OSError):
            pass                                   # a damaged entry is measured again
    peaks = measure(cores)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(peaks), indent=1))
        os.replace(tmp, p)
    except OSError:
        pass                                       # a read-only cache only costs measuring
    return peaks
