"""A GPU-scheduled Program -> one CUDA C module, compiled to cubin with NVRTC, as an Artifact.

Steps are kernel launches (`minicc.abi.Launch`) and host ops; the runtime (`runtime/cuda.py`)
launches them in order on a stream. Compiling needs no GPU.
"""

from __future__ import annotations

from minicc.abi import Launch, Step
from minicc.codegen.cuda.nvrtc import compile_cuda, nvrtc_version
from minicc.codegen.cuda.render import _cname, render_module
from minicc.codegen.program_info import summary
from minicc.ir.program import KernelStep, Program
from minicc.options import CompileOptions
from minicc.runtime.artifact import Artifact


def cuda_steps(prog: Program, launches: dict) -> list[Step]:
    steps: list[Step] = []
    for st in prog.steps:
        if isinstance(st, KernelStep):
            name = _cname(st.kernel.name)
            ln = launches[name]
            steps.append(Launch(name, ln.grid, ln.block, ln.shared_bytes, st.args))
        else:
            steps.append(st)
    return steps


def build_cuda_artifact(prog: Program, opts: CompileOptions, version: str,
                        compile_cubin: bool = True) -> Artifact:
    arch = prog.target.cpu
    source, launches = render_module(prog.kernels, opts)
    cubin = compile_cuda(source, arch, "minicc_model") if compile_cubin and prog.kernels else b""
    s = summary(prog)
    s.update({"cuda_arch": arch, "cubin_bytes": len(cubin),
              "nvrtc": ".".join(map(str, nvrtc_version())) if cubin else None})
    return Artifact(version=version, target="cuda", triple=prog.target.triple,
                    cpu=arch, features=(), objects=(cubin,),
                    steps=tuple(cuda_steps(prog, launches)), inputs=prog.inputs,
                    outputs=prog.outputs, output_sources=prog.output_sources,
                    arena_bytes=prog.memory.arena_bytes, weights=prog.weights, threads=1,
                    summary=s, source=source)
