"""What a compile is asked to do (`CompileOptions`) and what it generates code for (`Target`).

A leaf module: the driver, ir/, codegen/ and runtime/ all import it, and it imports nothing of
minicc but the errors. Both values are frozen and travel whole to every stage that needs them;
the driver resolves a `Target` once, from the host (llvmlite) or from `cpu` / `cuda_arch`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Sequence

from minicc.errors import MiniccError

# stages `dump` may name, in pipeline order (`--dump-ir`)
STAGES = ("imported", "passes", "fusion", "compute", "loops", "memory", "llvm", "asm", "cuda")


def default_threads() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Target:
    """The machine code is generated for. `vector_bits` and `features` come from the host or
    from the CPU / GPU architecture the user named, never from constants in the compiler."""

    name: str                       # the entry of the target table: "llvm" or "cuda"
    triple: str                     # LLVM target triple (nvptx64-nvidia-cuda for GPUs)
    cpu: str                        # LLVM CPU name, or the GPU architecture (sm_90)
    features: tuple[str, ...]       # ISA features the code may use (avx512f, fma, ...)
    vector_bits: int                # widest SIMD register: 512 with AVX-512; 32 on a GPU thread
    align: int                      # bytes: tensors in the arena and the weights blob
    gpu: bool = False
    llvm_features: str = ""         # the feature string LLVM's target machine is made with

    @property
    def vector_registers(self) -> int:
        """SIMD registers the generated code may keep values in (x86: 32 with AVX-512)."""
        return 32 if "avx512f" in self.features else 16

    @property
    def split_zmm(self) -> bool:
        """The core runs a 512-bit FMA as two 256-bit halves, one per cycle (AMD Zen 4), where
        Intel's AVX-512 cores (and Zen 5) run two full ones: register tiles that suit one
        (see ir/loops/gemm.py `_tall_tiles`) starve the other's load ports."""
        return not self.gpu and self.cpu.startswith("znver4")

    @property
    def fast_gather(self) -> bool:
        """Vector gathers cost about a load per lane or less (Intel's AVX-512 cores), where
        AMD's Zen cores microcode them (Zen 4: a 16-lane gather about every 13 cycles), so a
        kernel that transposes through gathers (the depthwise template with channels in the
        lanes) loses there to one that wastes lanes instead."""
        return not self.gpu and not self.cpu.startswith("znver")

    @property
    def lanes(self) -> int:
        """f32 lanes of one vector register (16 with AVX-512, 8 with AVX2, 1 on a GPU)."""
        return 1 if self.gpu else max(1, self.vector_bits // 32)

    def describe(self) -> str:
        simd = f"{self.vector_bits}-bit vectors" if not self.gpu else "GPU"
        feats = f" ({', '.join(self.features)})" if self.features else ""
        return f"{self.name} {self.cpu}, {simd}{feats}"


class _Unset:
    """A keyword not given (so `options=` or the default decides)."""

    def __repr__(self) -> str:
        return "<default>"


UNSET: Any = _Unset()
# precisions of a compile (int8 is a graph rewrite): fp16 stores f32 tensors as f16 (and, on the
# CUDA target from sm_80, runs GEMMs on FP16 tensor cores); tf32 runs the CUDA target's GEMMs on
# TF32 tensor cores (sm_80 and later), everything else in f32
PRECISIONS = ("fp32", "fp16", "tf32")
# fields kept out of the cache key: they change how a compile or a run goes, never the code, or
# their whole effect is in the program the key hashes (shapes, kernels' schedules)
NOT_IN_KEY = frozenset({"cache", "cache_dir", "dump", "cuda_graph", "verify_each", "memory_budget",
                        "input_shapes", "schedules", "tuning_log"})


@dataclass(frozen=True)
class CompileOptions:
    """Everything a compile may be asked. Give it as `options=` to `minicc.compile`, or give
    its fields as keywords; the two combine (a keyword that contradicts `options` is an error).
    """

    target: str = "llvm"            # "llvm" (this CPU, or `cpu`) or "cuda" (NVIDIA GPUs)
    opt_level: int = 3              # 0: no graph passes or templates ... 3: everything
    threads: int | None = None      # None: every core this process may use
    cpu: str = "native"             # LLVM CPU to compile for: native, x86-64-v3, znver4, ...
    cuda_arch: str = "sm_90"        # target "cuda": the GPU architecture
    fastmath: bool = False
    input_shapes: Mapping[str, Sequence[Any]] | None = None
    profile: bool = False           # one native entry per kernel, so each can be timed
    schedules: Mapping[str, str] | None = None   # kernel name -> schedule text to use instead
    tuning_log: str | None = None   # a `minicc tune` log: its best records schedule kernels
    cuda_graph: bool = False        # target "cuda": replay the launches as a CUDA graph
    cache: bool = True
    cache_dir: str | None = None
    dump: tuple[str, ...] = ()      # stages to keep as text (STAGES)
    verify_each: bool = False       # verify the graph IR after every pass
    precision: str = "fp32"         # "fp16": f32 tensors stored as f16 between kernels and as
    #                                 weights, computed in f32 (ir/loops/storage.py); on CUDA
    #                                 sm_80+ also FP16 tensor-core GEMMs; "tf32": CUDA only,
    #                                 TF32 tensor-core GEMMs (ir/loops/gpu_mma.py)
    memory_budget: int | None = None  # bytes a compile may plan (None: minicc/resources.py)

    def __post_init__(self) -> None:
        if self.memory_budget is not None and (not isinstance(self.memory_budget, int) or
                                               self.memory_budget < 1):
            raise MiniccError(f"memory_budget must be a positive number of bytes, got "
                              f"{self.memory_budget!r}")
        if not isinstance(self.opt_level, int) or not 0 <= self.opt_level <= 3:
            raise MiniccError(f"opt_level must be 0, 1, 2 or 3, got {self.opt_level!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise MiniccError(f"threads must be a positive integer or None, got "
                              f"{self.threads!r}")
        if self.precision not in PRECISIONS:
            raise MiniccError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                              f"{self.precision!r} (int8: minicc.quantize, or `minicc compile "
                              "--precision int8 --calib DATA`)")
        if self.precision == "tf32" and self.target != "cuda":
            raise MiniccError("precision tf32 is the GPU's tensor-core math (target cuda, "
                              "sm_80 or later); on the CPU use fp32 or fp16")
        bad = [s for s in self.dump if s not in STAGES]
        if bad:
            raise MiniccError(f"unknown dump stage {', '.join(map(repr, bad))} (stages: "
                              f"{', '.join(STAGES)})")

    def code_key(self) -> str:
        """The fields that change the generated code beyond the program, as text for the
        cache key (every field but NOT_IN_KEY: a new field is in the key unless it says so)."""
        return repr(sorted((f.name, _plain(getattr(self, f.name))) for f in fields(self)
                           if f.name not in NOT_IN_KEY))


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return sorted((k, _plain(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


FIELDS = tuple(f.name for f in fields(CompileOptions))


def merge_options(options: CompileOptions | None, given: Mapping[str, Any]) -> CompileOptions:
    """`options` (or the defaults) with the keyword fields in `given` applied. A keyword that
    names no field, or that contradicts a value `options` sets, raises MiniccError."""
    unknown = sorted(k for k in given if k not in FIELDS)
    if unknown:
        raise MiniccError(f"unknown compile option {', '.join(map(repr, unknown))} (options: "
                          f"{', '.join(FIELDS)})")
    set_ = {k: v for k, v in given.items() if v is not UNSET}
    if options is None:
        return CompileOptions(**set_)
    if not isinstance(options, CompileOptions):
        raise MiniccError(f"options must be a CompileOptions, got {type(options).__name__}")
    default = CompileOptions()
    clash = [k for k, v in set_.items() if getattr(options, k) != getattr(default, k)
             and getattr(options, k) != v]
    if clash:
        raise MiniccError("compile options given twice with different values: " + "; ".join(
            f"{k}={set_[k]!r} as a keyword but {k}={getattr(options, k)!r} in options="
            for k in clash) + ". Give each option once")
    return replace(options, **set_) if set_ else options

