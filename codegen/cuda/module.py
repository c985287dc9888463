"""A GPU-scheduled Program -> one CUDA C module, compiled to cubin with NVRTC, as an Artifact.

Steps are kernel launches ({"kernel", "grid", "block", "shared", "args"}) and host ops; the
runtime (`runtime/cuda.py`) launches them in order on a stream. Compiling needs no GPU.
"""

from __future__ import annotations

from minicc.codegen.cuda.nvrtc import DEFAULT_ARCH, compile_cuda, nvrtc_version
from minicc.codegen.cuda.render import _cname, render_module
from minicc.codegen.program_info import cache_key, host_step, summary
from minicc.ir.program import HostStep, KernelStep, Program
from minicc.runtime.artifact import Artifact


def cuda_steps(prog: Program, launches: dict) -> list[dict]:
    steps = []
    for st in prog.steps:
        if isinstance(st, KernelStep):
            name = _cname(st.kernel.name)
            ln = launches[name]
            steps.append({"kernel": name, "grid": list(ln.grid), "block": list(ln.block),
                          "shared": ln.shared_bytes,
                          "args": [[a.kind, a.offset] for a in st.args]})
        else:
            assert isinstance(st, HostStep)
            steps.append(host_step(st))
    return steps


def cuda_cache_key(prog: Program, arch: str, fastmath: bool, version: str) -> str:
    return cache_key(prog, version, "cuda", arch, fastmath)


def build_cuda_artifact(prog: Program, version: str, arch: str = DEFAULT_ARCH,
                        fastmath: bool = False, compile_cubin: bool = True) -> Artifact:
    source, launches = render_module(prog.kernels, fastmath)
    cubin = compile_cuda(source, arch, "minicc_model") if compile_cubin and prog.kernels else b""
    s = summary(prog)
    s.update({"cuda_arch": arch, "cubin_bytes": len(cubin),
              "nvrtc": ".".join(map(str, nvrtc_version())) if cubin else None})
    return Artifact(version=version, target="cuda", triple=f"nvptx64-nvidia-cuda-{arch}",
                    cpu=arch, features=(), object_code=cubin,
                    steps=tuple(cuda_steps(prog, launches)), inputs=tuple(prog.inputs),
                    outputs=tuple(prog.outputs),
                    output_sources=tuple((s_.kind, s_.offset) for s_ in prog.output_sources),
                    arena_bytes=prog.memory.arena_bytes, weights=prog.weights, threads=1,
                    cache_key=cuda_cache_key(prog, arch, fastmath, version), summary=s,
                    source=source)
