"""Tensor-core fragments: which element of A, B and C each lane of a warp holds for the
`mma.sync.aligned` shapes minicc emits (WarpMma), and what one warp-wide mma computes. One
table serves the GPU templates (the fragment loads and the epilogue's coordinates) and the
loop-IR emulator (which gathers the lanes' registers into matrices and scatters the product
back), so the schedules are tested without a GPU; the GPU check runs them on one.

The layouts are those of the PTX ISA ("Matrix Fragments for mma.m16n8k8" and "... m16n8k16 with
floating point type"), with groupID g = lane >> 2 and threadID_in_group t = lane % 4:
  m16n8k8.tf32   A (16x8)  a0 (g, t)   a1 (g+8, t)   a2 (g, t+4)   a3 (g+8, t+4)
                 B (8x8)   b0 (k=t, n=g)   b1 (k=t+4, n=g)
  m16n8k16.f16   A (16x16) a0,a1 (g, 2t+0/1)  a2,a3 (g+8, 2t+0/1)  a4,a5 (g, 2t+8+0/1)
                           a6,a7 (g+8, 2t+8+0/1)
                 B (16x8)  b0,b1 (k=2t+0/1, n=g)  b2,b3 (k=2t+8+0/1, n=g)
  C and D (16x8, f32, both shapes)  c0,c1 (g, 2t+0/1)  c2,c3 (g+8, 2t+0/1)
"""

from __future__ import annotations

import numpy as np

from minicc.errors import InterpreterError
from minicc.ir.loops.nodes import MMA_SHAPES
from minicc.ir.scalar import round_tf32

# A: (column step per t, [(row offset from g, column offset) per register])
A_LAYOUT = {"m16n8k8.tf32": (1, [(0, 0), (8, 0), (0, 4), (8, 4)]),
            "m16n8k16.f16": (2, [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8),
                                 (8, 9)])}
# B: (k step per t, [k offset per register]); its column n is g
B_LAYOUT = {"m16n8k8.tf32": (1, [0, 4]), "m16n8k16.f16": (2, [0, 1, 8, 9])}
# m16n8k32 int8 in words of four K values: a0 holds row g, values 4t..4t+3 (word t), a1 row
# g+8, a2 and a3 the values 16 on (word t+4); b0 values 4t..4t+3 of column g, b1 16 on: the
# TF32 layout, a word per element
for _s in ("m16n8k32.u8s8", "m16n8k32.s8u8"):
    A_LAYOUT[_s], B_LAYOUT[_s] = A_LAYOUT["m16n8k8.tf32"], B_LAYOUT["m16n8k8.tf32"]
# C and D: row g + offset, column 2t + offset
C_LAYOUT = [(0, 0), (0, 1), (8, 0), (8, 1)]


def is_int8(shape: str) -> bool:
    return shape.startswith("m16n8k32.")


def warp_mma(shape: str, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """One warp's mma: a [32, nA], b [32, nB], c [32, 4] (each lane's registers) -> d [32, 4].
    TF32 operands are rounded as the tensor core reads them; products summed in float32 (the
    hardware's order differs: compare at a tolerance); int8 exactly, wrapping like int32."""
    if shape not in MMA_SHAPES:
        raise InterpreterError(f"loop interpreter: unknown mma shape {shape!r}")
    M, N, K, na, nb, _ = MMA_SHAPES[shape]
    dt = np.int32 if is_int8(shape) else np.float32
    A = np.zeros((M, K), dt)
    B = np.zeros((K, N), dt)
    C = np.zeros((M, N), dt)
    ct, a_regs = A_LAYOUT[shape]
    kt, b_regs = B_LAYOUT[shape]
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for r, (dr, dc) in enumerate(a_regs):
            A[g + dr, ct * t + dc] = a[lane, r]
        for r, dk in enumerate(b_regs):
            B[kt * t + dk, g] = b[lane, r]
        for r, (dr, dc) in enumerate(C_LAYOUT):
            C[g + dr, 2 * t + dc] = c[lane, r]
    if is_int8(shape):       # words of four bytes: u8 x s8 (or s8 x u8) products, int32 sums
        ta, tb = (np.uint8, np.int8) if shape.endswith("u8s8") else (np.int8, np.uint8)
        a8 = A.astype("<i4").view(ta).reshape(M, 4 * K)                  # K values along k
        b8 = B.astype("<i4").view(tb).reshape(K, N, 4).transpose(0, 2, 1).reshape(4 * K, N)
        D64 = C.astype(np.int64) + a8.astype(np.int64) @ b8.astype(np.int64)
        D = ((D64 + 2**31) % 2**32 - 2**31).astype(np.int32)
    else:
        if shape.endswith("tf32"):
            A, B = round_tf32(A), round_tf32(B)
        with np.errstate(all="ignore"):
            D = (C + A.astype(np.float32) @ B.astype(np.float32)).astype(np.float32)
    d = np.zeros((32, 4), dt)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for r, (dr, dc) in enumerate(C_LAYOUT):
            d[lane, r] = D[g + dr, 2 * t + dc]
    return d
