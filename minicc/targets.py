"""The target table: one entry per code generator, saying how its Target is resolved, how it
lowers and schedules groups, how a Program becomes an Artifact, which dumps it adds, and what
runs its artifacts. `minicc.compile` has one path for every entry.

Imports of the heavy parts (llvmlite, NVRTC, CuPy) happen inside the entries, when used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from minicc.errors import MiniccError
from minicc.options import CompileOptions, Target


@dataclass(frozen=True)
class TargetEntry:
    name: str
    summary: str
    resolve: Callable[[CompileOptions], Target]       # the Target description for these options
    lower: Callable[[Any], Any]                       # ir.loops: LowerCtx -> Lowered
    build: Callable[[Any, CompileOptions, str], Any]  # codegen: (Program, options, version)
    dumps: tuple[str, ...]                            # the stages only this target has
    dump: Callable[[str, Any, CompileOptions, Target], str]   # (stage, artifact, ...) -> text
    executable: Callable[[Any, str, Any, int | None, bool], Any]  # runtime: loads an Artifact
    rules: Callable[[], Any]                          # ir.loops: the schedule rules (the tuner)
    # an incremental code generator, (Target, options) -> object with kernel(k) as kernels are
    # lowered, finish(Program, version) -> Artifact, cancel(); None: `build` does it all
    codegen: Callable[[Target, CompileOptions], Any] | None = None


# ---- llvm: this CPU (or the LLVM CPU `cpu` names) -------------------------------------------

def _llvm_target(o: CompileOptions) -> Target:
    from minicc.codegen.llvm.target import cpu_target

    return cpu_target(o.cpu)


def _llvm_lower(ctx: Any) -> Any:
    from minicc.ir.loops.cpu import lower_group_cpu

    return lower_group_cpu(ctx)


def _llvm_build(prog: Any, o: CompileOptions, version: str) -> Any:
    from minicc.codegen.llvm.module import build_artifact

    return build_artifact(prog, o, version)


def _llvm_codegen(t: Target, o: CompileOptions) -> Any:
    from minicc.codegen.llvm.module import ProgramCodegen

    return ProgramCodegen(t, o)


def _llvm_dump(stage: str, art: Any, o: CompileOptions, t: Target) -> str:
    if stage == "llvm":
        return str(art.source)
    from minicc.codegen.llvm.module import assembly

    return assembly(art, o, t)


def _llvm_exe(art: Any, version: str, host_op: Any, threads: int | None, graph: bool) -> Any:
    from minicc.runtime.cpu import Executable

    return Executable(art, version, host_op, threads)


def _llvm_rules() -> Any:
    from minicc.ir.loops.cpu import CPU_RULES

    return CPU_RULES


# ---- cuda: NVIDIA GPUs through NVRTC --------------------------------------------------------

def _cuda_target(o: CompileOptions) -> Target:
    arch = o.cuda_arch
    if not (arch.startswith("sm_") and arch[3:].isdigit()):
        raise MiniccError(f"cuda_arch '{arch}' is not a GPU architecture like sm_80 or sm_90")
    return Target("cuda", "nvptx64-nvidia-cuda", arch, (), 32, 256, gpu=True)


def _cuda_lower(ctx: Any) -> Any:
    from minicc.ir.loops.gpu import lower_gpu

    return lower_gpu(ctx)


def _cuda_build(prog: Any, o: CompileOptions, version: str) -> Any:
    from minicc.codegen.cuda.module import build_cuda_artifact

    return build_cuda_artifact(prog, o, version)


def _cuda_dump(stage: str, art: Any, o: CompileOptions, t: Target) -> str:
    return str(art.source)


def _cuda_exe(art: Any, version: str, host_op: Any, threads: int | None, graph: bool) -> Any:
    from minicc.runtime.cuda import CudaExecutable

    return CudaExecutable(art, version, host_op, graph)


def _cuda_rules() -> Any:
    from minicc.ir.loops.gpu import GPU_RULES

    return GPU_RULES


TARGETS: dict[str, TargetEntry] = {
    "llvm": TargetEntry("llvm", "this CPU through LLVM (AVX-512 where the host has it)",
                        _llvm_target, _llvm_lower, _llvm_build, ("llvm", "asm"), _llvm_dump,
                        _llvm_exe, _llvm_rules, _llvm_codegen),
    "cuda": TargetEntry("cuda", "NVIDIA GPUs: CUDA C compiled with NVRTC (running needs a GPU)",
                        _cuda_target, _cuda_lower, _cuda_build, ("cuda",), _cuda_dump,
                        _cuda_exe, _cuda_rules),
}
ALIASES = {"cpu": "llvm"}


def get_target(name: str) -> TargetEntry:
    entry = TARGETS.get(ALIASES.get(name, name))
    if entry is None:
        raise MiniccError(f"unknown target '{name}' (targets: {', '.join(TARGETS)}; "
                          f"aliases: {', '.join(f'{a}={t}' for a, t in ALIASES.items())})")
    return entry
