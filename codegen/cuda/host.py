"""CUDA C for the CPU: an artifact's CUDA source turned into a shared library that runs its
kernels thread by thread (runtime/cuda_host.py loads and launches it), so that the renderer,
the launch configurations and the arena plan are checked on a machine without a GPU.

The kernels' own text is compiled unchanged by the host C++ compiler; only the prelude's PTX
part (f16 conversion, mma.sync, ldmatrix, cp.async) is replaced by host versions, the mma ones
built from the same fragment tables as the loop-IR emulator (ir/loops/mma.py). Each block's
threads run as fibers that switch at `__syncthreads()` and at the warp-wide operations
(shuffles, mma, ldmatrix); kernels without any run as a plain loop over the threads.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from minicc.errors import ArtifactError, ToolchainError

# (-U_FORTIFY_SOURCE: a fortified longjmp refuses to jump between stacks; -march=native: F16C
# converts FP16 in one instruction, 3x faster FP16 models)
CXX_FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-w", "-fno-strict-aliasing", "-fwrapv",
             "-U_FORTIFY_SOURCE", "-march=native")
# statements that make a thread wait for others: a kernel with any runs its threads as fibers
_SYNC = re.compile(r"__syncthreads|__shfl_xor_sync|minicc_mma_|minicc_ldmatrix_")
_SIGNATURE = re.compile(r'^extern "C" __global__ void __launch_bounds__\(\d+\) (\w+)\((.*)\)$',
                        re.M)

HOST_BUILTINS = r"""
// minicc: CUDA C on the CPU (codegen/cuda/host.py): the CUDA built-ins it uses
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <ucontext.h>
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct minicc_dim3 { unsigned x, y, z; };
static minicc_dim3 threadIdx, blockIdx, blockDim, gridDim;
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
template <typename A, typename B> inline auto min(A a, B b) -> decltype(a + b) {
  return a < b ? a : b; }
template <typename A, typename B> inline auto max(A a, B b) -> decltype(a + b) {
  return a < b ? b : a; }
template <typename T, typename F> inline T minicc_bits(F f) {
  T t; memcpy(&t, &f, sizeof t); return t; }
inline float __int_as_float(int x) { return minicc_bits<float>(x); }
inline float __uint_as_float(unsigned x) { return minicc_bits<float>(x); }
inline int __float_as_int(float x) { return minicc_bits<int>(x); }
inline unsigned __float_as_uint(float x) { return minicc_bits<unsigned>(x); }
inline double __longlong_as_double(long long x) { return minicc_bits<double>(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline int __dp4a(int a, int b, int c) {           // signed bytes, int32 wrapping like the GPU
  unsigned s = (unsigned)c;
  for (int i = 0; i < 4; ++i)
    s += (unsigned)((int)(int8_t)(a >> 8 * i) * (int)(int8_t)(b >> 8 * i));
  return (int)s; }

// the threads of one block: fibers that switch where a thread waits for others
namespace minicc_host {
enum { READY, AT_BLOCK, AT_WARP, DONE };
// a fiber starts once through its ucontext, then switches by _setjmp/_longjmp (no signal-mask
// system call per switch, as swapcontext makes: 3x faster on the mma kernels)
struct Fiber { ucontext_t ctx; jmp_buf jb; int state, line, started; minicc_dim3 tid; };
static jmp_buf sched;
static Fiber* fib;
static int nthr, cur;
static bool fibered;
static void (*kfn)(void**);
static void** kargs;
static char fault[512];
// the warp exchange: each thread posts into its slot, the warp waits, each reads the others';
// two banks, alternated, so that one wait per exchange suffices (a lane can only post into a
// bank again after the whole warp passed the next exchange, so after all read this one)
static unsigned char slot[2][1024][64] __attribute__((aligned(16)));
static unsigned char bank[1024];
static void entry() { kfn(kargs); fib[cur].state = DONE; _longjmp(sched, 1); }
static void wait(int st) {
  if (!fibered) {
    if (!fault[0]) snprintf(fault, sizeof fault, "a thread waited for others in a kernel run "
                            "without fibers");
    return; }
  fib[cur].state = st;
  if (!_setjmp(fib[cur].jb)) _longjmp(sched, 1); }
inline void warp_sync() { wait(AT_WARP); }
inline void sync_block(int line) { if (fibered) fib[cur].line = line; wait(AT_BLOCK); }
inline unsigned char* my_slot() { return slot[bank[cur]][cur]; }
inline unsigned char* lane_slot(int lane) { return slot[bank[cur]][(cur & ~31) + lane]; }
inline void exchanged() { bank[cur] ^= 1; }
inline float round_tf32(float x) {                   // cvt.rna.tf32.f32
  unsigned u = __float_as_uint(x);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return __uint_as_float(u); }
inline float h2f(unsigned short h) { _Float16 f; memcpy(&f, &h, 2); return (float)f; }
inline unsigned short f2h(float x) {
  _Float16 f = (_Float16)x; unsigned short h; memcpy(&h, &f, 2); return h; }
// one lane's part of a warp's mma: every lane posts its A and B registers, then computes its own
// C registers from the warp's (asrc[m*K+k], bsrc[k*8+n]: lane*8 + the register holding A[m][k],
// B[k][n])
template <typename T, int NA, int NB, int K, typename Acc, typename Sum, typename Prod>
inline void mma(Acc* c, const T* a, const T* b, const unsigned char* asrc,
                const unsigned char* bsrc, const unsigned char* crow, const unsigned char* ccol,
                Prod prod) {
  memcpy(my_slot(), a, NA * sizeof(T));
  memcpy(my_slot() + NA * sizeof(T), b, NB * sizeof(T));
  warp_sync();
  const int lane = cur & 31, g = lane >> 2, t = lane & 3;
  Acc d[4];
  for (int r = 0; r < 4; ++r) {
    const int m = g + crow[r], n = 2 * t + ccol[r];
    Sum s = 0;
    for (int k = 0; k < K; ++k) {
      const int ia = asrc[m * K + k], ib = bsrc[k * 8 + n];
      T av, bv;
      memcpy(&av, lane_slot(ia >> 3) + (ia & 7) * sizeof(T), sizeof(T));
      memcpy(&bv, lane_slot(ib >> 3) + NA * sizeof(T) + (ib & 7) * sizeof(T), sizeof(T));
      s += prod(av, bv);
    }
    d[r] = (Acc)((Sum)c[r] + s);
  }
  exchanged();
  for (int r = 0; r < 4; ++r) c[r] = d[r]; }
inline long long bytes_dot(int a, int b, bool a_unsigned) {
  long long s = 0;
  for (int i = 0; i < 4; ++i) {
    const int x = a_unsigned ? (int)(uint8_t)(a >> 8 * i) : (int)(int8_t)(a >> 8 * i);
    const int y = a_unsigned ? (int)(int8_t)(b >> 8 * i) : (int)(uint8_t)(b >> 8 * i);
    s += (long long)x * y; }
  return s; }
template <int N, bool TRANS> inline void ldmatrix(unsigned short* d, const void* smem) {
  memcpy(my_slot(), &smem, sizeof smem);
  warp_sync();
  const int lane = cur & 31, g = lane >> 2, t = lane & 3;
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < 2; ++j) {
      const unsigned short* row;
      memcpy(&row, lane_slot(8 * i + (TRANS ? 2 * t + j : g)), sizeof row);
      d[2 * i + j] = row[TRANS ? g : 2 * t + j]; }
  exchanged(); }
}  // namespace minicc_host

#define __syncthreads() minicc_host::sync_block(__LINE__)
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int d) {
  using namespace minicc_host;
  memcpy(my_slot(), &v, sizeof(T));
  warp_sync();
  T r = v;
  const int src = (cur & 31) ^ d;
  if ((cur & ~31) + src < nthr) memcpy(&r, lane_slot(src), sizeof(T));
  exchanged();
  return r; }
"""

HOST_LAUNCHER = r"""
// minicc: the launcher: every block in turn, its threads as a loop or as fibers
extern "C" int minicc_host_launch(void (*fn)(void**), void** args, const unsigned* grid,
                                  const unsigned* block, int use_fibers, int stack_bytes,
                                  char* err, int errlen) {
  using namespace minicc_host;
  gridDim = {grid[0], grid[1], grid[2]};
  blockDim = {block[0], block[1], block[2]};
  nthr = (int)(block[0] * block[1] * block[2]);
  kfn = fn; kargs = args; fibered = use_fibers != 0; fault[0] = 0;
  char* stacks = 0;
  if (fibered) {
    fib = (Fiber*)calloc(nthr, sizeof(Fiber));
    stacks = (char*)malloc((size_t)nthr * stack_bytes);
    if (!fib || !stacks) {
      free(fib); free(stacks);
      snprintf(err, errlen, "out of memory for %d fibers", nthr);
      return 1; }
  }
  for (unsigned bz = 0; bz < grid[2] && !fault[0]; ++bz)
  for (unsigned by = 0; by < grid[1] && !fault[0]; ++by)
  for (unsigned bx = 0; bx < grid[0] && !fault[0]; ++bx) {
    blockIdx = {bx, by, bz};
    if (!fibered) {
      cur = 0;
      for (unsigned z = 0; z < block[2]; ++z)
        for (unsigned y = 0; y < block[1]; ++y)
          for (unsigned x = 0; x < block[0]; ++x, ++cur) { threadIdx = {x, y, z}; fn(args); }
      continue;
    }
    int k = 0;
    for (unsigned z = 0; z < block[2]; ++z)
      for (unsigned y = 0; y < block[1]; ++y)
        for (unsigned x = 0; x < block[0]; ++x, ++k) {
          Fiber& f = fib[k];
          f.tid = {x, y, z};
          f.state = READY;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = stacks + (size_t)k * stack_bytes;
          f.ctx.uc_stack.ss_size = stack_bytes;
          f.ctx.uc_link = 0;
          f.started = 0;
          bank[k] = 0;
          makecontext(&f.ctx, entry, 0);
        }
    for (;;) {
      for (int i = 0; i < nthr; ++i)
        if (fib[i].state == READY) {
          cur = i; threadIdx = fib[i].tid;
          if (!_setjmp(sched)) {
            if (fib[i].started) _longjmp(fib[i].jb, 1);
            fib[i].started = 1;
            setcontext(&fib[i].ctx); }
        }
      int done = 0, at_block = 0, line0 = -1, line1 = -1;
      bool released = false;
      for (int i = 0; i < nthr; ++i) {
        done += fib[i].state == DONE;
        if (fib[i].state != AT_BLOCK) continue;
        ++at_block;
        if (line0 < 0) line0 = fib[i].line;
        else if (fib[i].line != line0) line1 = fib[i].line; }
      if (done == nthr) break;
      for (int w = 0; w < nthr; w += 32) {      // a warp whose live lanes all wait at a warp op
        int live = 0, at = 0;
        for (int i = w; i < nthr && i < w + 32; ++i) {
          live += fib[i].state != DONE; at += fib[i].state == AT_WARP; }
        if (at > 0 && at == live) {
          for (int i = w; i < nthr && i < w + 32; ++i)
            if (fib[i].state == AT_WARP) fib[i].state = READY;
          released = true; }
      }
      if (!released && done + at_block == nthr && line1 >= 0) {
        snprintf(fault, sizeof fault, "block (%u, %u, %u): threads wait at different "
                 "__syncthreads (lines %d and %d of the host source)", bx, by, bz, line0, line1);
        break; }
      if (!released && done + at_block == nthr) {
        for (int i = 0; i < nthr; ++i) if (fib[i].state == AT_BLOCK) fib[i].state = READY;
        released = true; }
      if (!released) {
        snprintf(fault, sizeof fault, "block (%u, %u, %u): threads wait at different barriers "
                 "(%d finished, %d at __syncthreads, %d at a warp operation): a deadlock on a GPU",
                 bx, by, bz, done, at_block, nthr - done - at_block);
        break; }
    }
  }
  free(fib); fib = 0; free(stacks);
  if (fault[0]) { snprintf(err, errlen, "%s", fault); return 1; }
  return 0; }
"""


def _ptx_twins() -> str:
    """Host versions of the prelude's PTX part, with the mma fragment tables of
    ir/loops/mma.py as C arrays."""
    from minicc.ir.loops.mma import A_LAYOUT, B_LAYOUT, C_LAYOUT
    from minicc.ir.loops.nodes import MMA_SHAPES

    out = ["// the prelude's PTX part, on the host\n",
           "inline float minicc_h2f(unsigned short h) { return minicc_host::h2f(h); }\n",
           "inline unsigned short minicc_f2h(float f) { return minicc_host::f2h(f); }\n",
           "inline float minicc_tf32(float x) { return minicc_host::round_tf32(x); }\n",
           "static const unsigned char minicc_crow[4] = {"
           + ", ".join(str(r) for r, _ in C_LAYOUT) + "}, minicc_ccol[4] = {"
           + ", ".join(str(c) for _, c in C_LAYOUT) + "};\n"]
    for shape, (M, N, K, na, nb, _) in MMA_SHAPES.items():
        asrc, bsrc = [0] * (M * K), [0] * (K * N)
        ct, a_regs = A_LAYOUT[shape]
        kt, b_regs = B_LAYOUT[shape]
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            for r, (dr, dc) in enumerate(a_regs):
                asrc[(g + dr) * K + ct * t + dc] = lane * 8 + r
            for r, dk in enumerate(b_regs):
                bsrc[(kt * t + dk) * N + g] = lane * 8 + r
        tag = shape.replace(".", "_")
        out.append(f"static const unsigned char minicc_a_{tag}[{M * K}] = {{"
                   f"{', '.join(map(str, asrc))}}};\n")
        out.append(f"static const unsigned char minicc_b_{tag}[{K * N}] = {{"
                   f"{', '.join(map(str, bsrc))}}};\n")
    out.append("""\
inline void minicc_mma_tf32(float* c, const float* a, const float* b) {
  minicc_host::mma<float, 4, 2, 8, float, float>(c, a, b, minicc_a_m16n8k8_tf32,
      minicc_b_m16n8k8_tf32, minicc_crow, minicc_ccol, [](float x, float y) {
        return minicc_host::round_tf32(x) * minicc_host::round_tf32(y); }); }
inline void minicc_mma_f16(float* c, const unsigned short* a, const unsigned short* b) {
  minicc_host::mma<unsigned short, 8, 4, 16, float, float>(c, a, b, minicc_a_m16n8k16_f16,
      minicc_b_m16n8k16_f16, minicc_crow, minicc_ccol, [](unsigned short x, unsigned short y) {
        return minicc_host::h2f(x) * minicc_host::h2f(y); }); }
inline void minicc_mma_u8s8(int* c, const int* a, const int* b) {
  minicc_host::mma<int, 4, 2, 8, int, long long>(c, a, b, minicc_a_m16n8k32_u8s8,
      minicc_b_m16n8k32_u8s8, minicc_crow, minicc_ccol, [](int x, int y) {
        return minicc_host::bytes_dot(x, y, true); }); }
inline void minicc_mma_s8u8(int* c, const int* a, const int* b) {
  minicc_host::mma<int, 4, 2, 8, int, long long>(c, a, b, minicc_a_m16n8k32_s8u8,
      minicc_b_m16n8k32_s8u8, minicc_crow, minicc_ccol, [](int x, int y) {
        return minicc_host::bytes_dot(x, y, false); }); }
""")
    for n in (1, 2, 4):
        for t in (False, True):
            out.append(f"inline void minicc_ldmatrix_x{n}{'_t' if t else ''}(unsigned short* d, "
                       f"const void* s) {{ minicc_host::ldmatrix<{n}, {str(t).lower()}>(d, s); "
                       "}\n")
    for n in (4, 8, 16):      # cp.async: the copy done at once (0 bytes read: zero fill)
        out.append(f"inline void minicc_cp_async{n}(void* s, const void* g, bool ok) {{ "
                   f"if (ok) memcpy(s, g, {n}); else memset(s, 0, {n}); }}\n")
    out.append("inline void minicc_cp_async_commit() {}\n"
               "template <int N> inline void minicc_cp_async_wait() {}\n")
    return "".join(out)


def host_source(cuda_source: str) -> tuple[str, dict[str, bool]]:
    """The host C++ for an artifact's CUDA source, and which kernels need fibers. Each kernel
    gets an entry point `minicc_host_<name>(void** args)` that casts its arguments."""
    from minicc.codegen.cuda.render import KERNELS_MARK, PRELUDE_COMMON

    if KERNELS_MARK not in cuda_source:
        raise ArtifactError("this CUDA source has no kernels mark (built by an older minicc); "
                            "recompile the model")
    kernels = cuda_source.split(KERNELS_MARK, 1)[1]
    sigs = list(_SIGNATURE.finditer(kernels))
    fibers, entries = {}, []
    for i, m in enumerate(sigs):
        name, params = m.group(1), m.group(2)
        end = sigs[i + 1].start() if i + 1 < len(sigs) else len(kernels)
        fibers[name] = bool(_SYNC.search(kernels, m.end(), end))
        types = [p.split("__restrict__")[0].strip() for p in params.split(", ")] if params else []
        casts = ", ".join(f"({t})a[{j}]" for j, t in enumerate(types))
        entries.append(f'extern "C" void minicc_host_{name}(void** a) {{ {name}({casts}); }}\n')
    text = (HOST_BUILTINS + PRELUDE_COMMON + _ptx_twins() + "// minicc: kernels\n" + kernels
            + "\n" + "".join(entries) + HOST_LAUNCHER)
    return text, fibers


def host_compiler() -> str | None:
    """The C++ compiler used (c++ / g++ / clang++, or $CXX), or None."""
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if c and shutil.which(c):
            return c
    return None


def _compile(text: str) -> Path:
    """Compile the host C++ into a shared library, cached by its hash."""
    cxx = host_compiler()
    if cxx is None:
        raise ToolchainError("cuda host emulation needs a C++ compiler (g++ or clang++, or set "
                             "$CXX)")
    key = hashlib.sha256((text + cxx + " ".join(CXX_FLAGS)).encode()).hexdigest()[:24]
    d = Path(tempfile.gettempdir()) / "minicc-cuda-host"
    d.mkdir(parents=True, exist_ok=True)
    lib = d / f"{key}.so"
    if lib.exists():
        return lib
    src = d / f"{key}.cpp"
    src.write_text(text)
    tmp = d / f"{key}.{os.getpid()}.so"
    r = subprocess.run([cxx, *CXX_FLAGS, str(src), "-o", str(tmp)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise ToolchainError(f"cuda host emulation: {cxx} failed on {src}:\n"
                             + "\n".join(r.stderr.splitlines()[:30]))
    os.replace(tmp, lib)
    return lib


def build_host(cuda_source: str) -> tuple[Path, dict[str, bool]]:
    """The shared library of `cuda_source`'s kernels for this CPU (cached by its text), and
    which kernels run their threads as fibers."""
    text, fibers = host_source(cuda_source)
    return _compile(text), fibers
