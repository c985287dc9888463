"""The host's LLVM target machine, created once: codegen takes its triple and data layout, the CPU
runtime JITs and links with it. Also loads libgomp so generated code can call GOMP_parallel."""

from __future__ import annotations

import ctypes.util
import functools
import os

import llvmlite.binding as llvm


@functools.lru_cache(maxsize=None)
def init_llvm() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@functools.lru_cache(maxsize=None)
def host_features() -> tuple[str, str]:
    """(cpu name, feature string) of this machine."""
    init_llvm()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def host_has(feature: str) -> bool:
    return f"+{feature}" in host_features()[1].split(",")


@functools.lru_cache(maxsize=None)
def target_machine(opt: int = 3) -> llvm.TargetMachine:
    """The shared target machine (for codegen; never hand it to an execution engine)."""
    return new_target_machine(opt)


def new_target_machine(opt: int = 3) -> llvm.TargetMachine:
    """A fresh target machine: an MCJIT engine takes ownership of (and frees) the one it gets."""
    init_llvm()
    cpu, feats = host_features()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=feats, opt=opt, reloc="pic",
                                        codemodel="jitdefault")


def vector_bits() -> int:
    """The widest SIMD register the host has (512 with AVX-512, 256 with AVX2, else 128)."""
    if host_has("avx512f"):
        return 512
    if host_has("avx2") or host_has("avx"):
        return 256
    return 128


@functools.lru_cache(maxsize=None)
def load_gomp() -> bool:
    """Make libgomp's symbols visible to JIT-compiled code; False if it is not installed."""
    init_llvm()
    candidates = [os.environ.get("MINICC_LIBGOMP"), ctypes.util.find_library("gomp"),
                  "libgomp.so.1"]
    for c in candidates:
        if not c:
            continue
        try:
            llvm.load_library_permanently(c)
        except RuntimeError:
            continue
        # and a handle of our own that nothing closes: at exit LLVM's registry dlcloses the
        # libraries it loaded, and with OMP_WAIT_POLICY=active libgomp's threads are still
        # spinning in its code when it would be unmapped (a segfault after the last output)
        _KEPT.append(ctypes.CDLL(c, mode=ctypes.RTLD_GLOBAL))
        return True
    return False


_KEPT: list[ctypes.CDLL] = []
