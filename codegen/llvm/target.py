"""The CPU `Target`: this host's (from llvmlite) or a named LLVM CPU's, and the LLVM target
machine that generates code for it.

`cpu_target("native")` reads the host's CPU name and features. Any other name (a psABI level such
as `x86-64-v3`, or an LLVM CPU such as `znver4`) is checked and measured in a child process first:
LLVM aborts the whole process on a CPU name it does not know, so it never sees one in this one.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import llvmlite.binding as llvm

from minicc.errors import MiniccError
from minicc.options import Target
from minicc.codegen.llvm.worker import machine
from minicc.runtime.llvm_host import host_features, init_llvm, vector_bits

# the ISA features generated code may rely on (what a machine loading an artifact must have)
SIMD_FEATURES = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vnni", "avx512vbmi",
                 "avx2", "avx", "fma", "f16c", "sse4.2")
# a named CPU is assumed to have the features of its vector width's psABI level
_BY_WIDTH = {512: ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "avx", "fma", "f16c",
                   "sse4.2"),
             256: ("avx2", "avx", "fma", "f16c", "sse4.2"), 128: ()}
_PROBE = r"""
import sys
import llvmlite.binding as llvm
llvm.initialize_native_target(); llvm.initialize_native_asmprinter()
src = '''define void @f(<16 x float>* %p) {
  %a = load <16 x float>, <16 x float>* %p
  %b = fadd <16 x float> %a, %a
  store <16 x float> %b, <16 x float>* %p
  ret void
}'''
tm = llvm.Target.from_default_triple().create_target_machine(cpu=sys.argv[1], features="")
asm = tm.emit_assembly(llvm.parse_assembly(src))
print(512 if "zmm" in asm else 256 if "ymm" in asm else 128)
"""


@functools.lru_cache(maxsize=None)
def _probe_width(cpu: str) -> int:
    """Vector bits LLVM uses for `cpu`; MiniccError if LLVM does not know the name."""
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE, cpu], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MiniccError(f"cpu '{cpu}': could not ask LLVM about it ({e})") from None
    if r.returncode != 0 or "not a recognized processor" in r.stderr:
        raise MiniccError(f"cpu '{cpu}' is not a CPU LLVM knows; use 'native' (this machine), "
                          "a psABI level (x86-64, x86-64-v2, x86-64-v3, x86-64-v4) or an LLVM "
                          "CPU name such as skylake-avx512 or znver4")
    return int(r.stdout.strip())


def cpu_target(cpu: str = "native") -> Target:
    """The Target for LLVM CPU `cpu` ('native': this machine, with all its features)."""
    init_llvm()
    triple = llvm.get_process_triple()
    if cpu in ("native", "", None):
        name, feats = host_features()
        have = {f[1:] for f in feats.split(",") if f.startswith("+")}
        return Target("llvm", triple, name, tuple(f for f in SIMD_FEATURES if f in have),
                      vector_bits(), 64, llvm_features=feats)
    bits = _probe_width(cpu)
    return Target("llvm", triple, cpu, _BY_WIDTH[bits], bits, 64)


def machine_for(target: Target) -> llvm.TargetMachine:
    """The (shared) target machine that generates code for a Target; never hand it to an
    execution engine, which would take ownership of it."""
    return machine(target.cpu, target.llvm_features)
