"""Loop IR: buffers, loops, loads and stores. One `Kernel` per fused group.

Expressions reuse `ir.compute` nodes (Var, Const, Call, Select, Cast) plus `BufLoad`. A loop
nest straight from lowering (before scheduling) may hold `Reduce` expressions; the `compute_at`
step turns them into accumulator loops, and code generators never see one. Loops start at 0. A
VECTOR loop runs its body once for `lanes` consecutive values (fewer at a tail: its extent may be
an expression, and the lanes past it are masked off); loops nested in it keep that vector context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Iterator

from minicc.ir.compute import Expr, Var, cached_hash
from minicc.ir.loops.trace import Step
from minicc.ir.types import DType


class Scope(Enum):
    GLOBAL = "global"     # a kernel parameter: input, output or weight
    LOCAL = "local"       # per-thread registers/stack (accumulators)
    SCRATCH = "scratch"   # per-thread workspace in the arena (packing panels)
    SHARED = "shared"     # GPU: one copy per thread block (tiles staged for reuse); CPU: a
                          # kernel parameter, one workspace in the arena for all its threads


# a kernel parameter's role and the scope of its buffer ('in', 'weight', 'out': GLOBAL)
ROLE_SCOPES = {"scratch": Scope.SCRATCH, "shared": Scope.SHARED}


SLICE_ALIGN = 4096  # bytes: each thread's slice of a scratch buffer starts on such a boundary


@dataclass(frozen=True, eq=False)
class Buffer:
    """A named n-d array. Identity is by object (two buffers may share a name hint)."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    scope: Scope = Scope.GLOBAL

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def workspace(self) -> bool:
        """Arena space a kernel has to itself while it runs (SCRATCH: a slice per thread;
        SHARED: one for all its threads), bound to no tensor."""
        return self.scope in (Scope.SCRATCH, Scope.SHARED)

    @property
    def slice_numel(self) -> int:
        """Elements per thread of a SCRATCH buffer: numel rounded up to whole SLICE_ALIGN
        blocks (a page), so no two threads write one cache line, and the prefetchers, which
        stop at a page's end, do not pull lines of the other thread's slice into this core
        while it writes them. 128-byte slices at 2 threads on a Xeon: a depthwise conv, 384
        ch 3x3 at 14x14 in bands of 7 rows, 39 -> 30 us; MobileNetV2 at 224 2.5% faster,
        SqueezeNet 2.5%, MobileNetV3 1.5%, the others even."""
        per = max(1, SLICE_ALIGN // self.dtype.itemsize)
        return -(-self.numel // per) * per

    @property
    def slice_nbytes(self) -> int:
        return self.slice_numel * self.dtype.itemsize

    def strides(self) -> tuple[int, ...]:
        out, s = [], 1
        for d in reversed(self.shape):
            out.append(s)
            s *= d
        return tuple(reversed(out))

    def __repr__(self) -> str:
        return f"Buffer({self.name}: {self.dtype.value}{list(self.shape)} {self.scope.value})"


@cached_hash
@dataclass(frozen=True, eq=True)
class BufLoad(Expr):
    buf: Buffer
    index: tuple[Expr, ...]
    dtype: DType

    def __hash__(self) -> int:
        return hash((id(self.buf), self.index))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BufLoad) and other.buf is self.buf and other.index == self.index

    def __repr__(self) -> str:
        return f"{self.buf.name}[{', '.join(map(repr, self.index))}]"


def bload(buf: Buffer, index: tuple[Expr, ...] | list[Expr]) -> BufLoad:
    return BufLoad(buf, tuple(index), buf.dtype)


class LoopKind(Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"   # split across threads (static chunks by thread id)
    VECTOR = "vector"
    UNROLL = "unroll"
    BLOCK_X = "block.x"     # GPU: one iteration per thread block (blockIdx)
    BLOCK_Y = "block.y"
    BLOCK_Z = "block.z"
    THREAD_X = "thread.x"   # GPU: one iteration per thread of a block (threadIdx)
    THREAD_Y = "thread.y"
    THREAD_Z = "thread.z"

    @property
    def is_block(self) -> bool:
        return self.value.startswith("block.")

    @property
    def is_thread(self) -> bool:
        return self.value.startswith("thread.")


class Stmt:
    """Base of statements."""


@dataclass(frozen=True)
class For(Stmt):
    var: Var
    extent: Expr
    body: Stmt
    kind: LoopKind = LoopKind.SERIAL
    lanes: int = 0          # VECTOR loops: the vector width; extent <= lanes


@dataclass(frozen=True)
class Store(Stmt):
    buf: Buffer
    index: tuple[Expr, ...]
    value: Expr

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Store) and other.buf is self.buf and other.index == self.index
                and other.value == self.value)

    def __hash__(self) -> int:
        return hash((id(self.buf), self.index, self.value))


@dataclass(frozen=True)
class Seq(Stmt):
    stmts: tuple[Stmt, ...]


@dataclass(frozen=True)
class IfThen(Stmt):
    cond: Expr
    then: Stmt
    else_: Stmt | None = None


@dataclass(frozen=True)
class Allocate(Stmt):
    """A LOCAL buffer live for `body` (accumulators; promoted to registers by LLVM)."""

    buf: Buffer
    body: Stmt

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Allocate) and other.buf is self.buf and other.body == self.body

    def __hash__(self) -> int:
        return hash((id(self.buf), self.body))


@dataclass(frozen=True)
class Prefetch(Stmt):
    """A hint that `buf[index]` will be read soon: its cache line is fetched ahead (x86
    prefetcht0; nothing on CUDA). Reads and writes nothing, so the index may run past the
    buffer (the next row tile's weights); the flat offset is what counts."""

    buf: Buffer
    index: tuple[Expr, ...]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prefetch) and other.buf is self.buf and other.index == self.index

    def __hash__(self) -> int:
        return hash((id(self.buf), self.index))


@dataclass(frozen=True)
class Barrier(Stmt):
    """A phase boundary: every thread waits here for the others. GPU: the threads of a block
    (__syncthreads); CPU: the kernel's threads (GOMP_barrier), where it lies outside any
    parallel loop so every thread reaches it (split-K partial sums, then their sum)."""


@dataclass(frozen=True)
class BlockAllReduce(Stmt):
    """GPU: every thread of the block ends with `op` over all threads' `acc[0]` (in place).

    Rendered with warp shuffles (__shfl_xor_sync) and a shared array of one value per warp;
    `scratch` is that SHARED buffer. Acts as a barrier."""

    op: str
    acc: Buffer
    scratch: Buffer

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BlockAllReduce) and other.op == self.op
                and other.acc is self.acc and other.scratch is self.scratch)

    def __hash__(self) -> int:
        return hash((self.op, id(self.acc), id(self.scratch)))


@dataclass(frozen=True)
class AsyncCopy(Stmt):
    """GPU (sm_80+): `dst[dst_index] = src[src_index]`, one 4-byte element copied from global
    to shared memory by `cp.async` (not through registers), or 0 where `cond` is false (the
    zero-fill form: nothing is read). It lands only when an AsyncWait of this thread retires
    its group (AsyncCommit closes a group); a barrier after that wait makes it visible to the
    block. The emulator keeps each copy pending until then, so a missing wait reads stale
    shared memory there as it would on a GPU."""

    dst: Buffer
    dst_index: tuple[Expr, ...]
    src: Buffer
    src_index: tuple[Expr, ...]
    cond: Expr | None = None

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, AsyncCopy) and other.dst is self.dst and other.src is self.src
                and (other.dst_index, other.src_index, other.cond) == (self.dst_index,
                                                                       self.src_index,
                                                                       self.cond))

    def __hash__(self) -> int:
        return hash((id(self.dst), id(self.src), self.dst_index, self.src_index, self.cond))


@dataclass(frozen=True)
class AsyncCommit(Stmt):
    """GPU: `cp.async.commit_group`: this thread's async copies since the last commit form a
    group."""


@dataclass(frozen=True)
class AsyncWait(Stmt):
    """GPU: `cp.async.wait_group pending`: this thread waits until at most `pending` of its
    most recent groups are still in flight (the older ones have landed)."""

    pending: int


@dataclass(frozen=True)
class WarpLdmatrix(Stmt):
    """GPU (sm_75+): `ldmatrix.sync.aligned.m8n8.x<count>[.trans].shared.b16`: the warp loads
    `count` 8 x 8 matrices of 16-bit elements from shared memory, lane 8i + r giving the
    address of row r of matrix i (`src[src_index]`, 8 contiguous elements, 16-byte aligned),
    and each lane receiving in its register i the two elements (g, 2t) and (g, 2t+1) of
    matrix i, g = lane / 4, t = lane % 4 (with `trans`, of its transpose). The registers'
    halves land in `dst[dst_at..., 0 : 2*count]`, lower element first: an f16 mma's A (x4)
    or B (x2, trans) fragment in one instruction instead of 8 or 4 loads."""

    count: int
    trans: bool
    dst: Buffer
    dst_at: tuple[Expr, ...]
    src: Buffer
    src_index: tuple[Expr, ...]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, WarpLdmatrix) and other.dst is self.dst and other.src is
                self.src and (other.count, other.trans, other.dst_at, other.src_index) ==
                (self.count, self.trans, self.dst_at, self.src_index))

    def __hash__(self) -> int:
        return hash((self.count, self.trans, id(self.dst), id(self.src), self.dst_at,
                     self.src_index))


# the tensor-core shapes WarpMma knows: (M, N, K, registers per lane of A, B and C); the int8
# ones (A's type, then B's: u8 x s8 or s8 x u8, int32 accumulators) hold four K values per
# register, words as the int8 GEMM templates pack them, so their K is 8 words (32 values)
MMA_SHAPES = {"m16n8k8.tf32": (16, 8, 8, 4, 2, 4), "m16n8k16.f16": (16, 8, 16, 8, 4, 4),
              "m16n8k32.u8s8": (16, 8, 8, 4, 2, 4), "m16n8k32.s8u8": (16, 8, 8, 4, 2, 4)}


@dataclass(frozen=True)
class WarpMma(Stmt):
    """GPU: one warp-wide tensor-core multiply-accumulate (`mma.sync.aligned.<shape>.row.col`,
    f32 accumulators, int32 for int8): C += A @ B for a 16 x 8 C whose A and B fragments are
    spread over the warp's 32 lanes. Each lane holds its registers along the last axis of
    LOCAL buffers: `acc[acc_at..., 0:4]` (C), `a[a_at..., 0:nA]`, `b[b_at..., 0:nB]`, in the
    PTX ISA's fragment layout for the shape (ir/loops/mma.py). Every lane of the warp must
    reach it together (no divergence), as mma.sync requires; the emulator checks that."""

    shape: str
    acc: Buffer
    acc_at: tuple[Expr, ...]
    a: Buffer
    a_at: tuple[Expr, ...]
    b: Buffer
    b_at: tuple[Expr, ...]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, WarpMma) and other.shape == self.shape
                and other.acc is self.acc and other.a is self.a and other.b is self.b
                and (other.acc_at, other.a_at, other.b_at) == (self.acc_at, self.a_at,
                                                               self.b_at))

    def __hash__(self) -> int:
        return hash((self.shape, id(self.acc), id(self.a), id(self.b), self.acc_at, self.a_at,
                     self.b_at))


@dataclass(frozen=True, eq=False)
class Kernel:
    """A kernel: parameters in call order (inputs, weights, outputs, then scratch) and a body.

    `roles[i]` is 'in', 'weight', 'out', 'scratch' (a workspace per thread) or 'shared' (one
    workspace that all the kernel's threads write and read, between barriers). `schedule`
    names the rule that scheduled the nest and `trace` its steps (ir/loops/trace.py):
    replaying them on the unscheduled nest gives this kernel again. `knobs` are the knob
    values the steps came from, where known.
    """

    name: str
    params: tuple[Buffer, ...]
    roles: tuple[str, ...]
    body: Stmt
    trace: tuple[Step, ...] = ()
    knobs: dict = field(default_factory=dict)
    flops: int = 0
    schedule: str = ""

    def buffers(self, role: str) -> list[Buffer]:
        return [b for b, r in zip(self.params, self.roles) if r == role]


def seq(*stmts: Stmt | None) -> Stmt:
    flat: list[Stmt] = []
    for s in stmts:
        if s is None:
            continue
        if isinstance(s, Seq):
            flat.extend(s.stmts)
        else:
            flat.append(s)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def walk(s: Stmt) -> Iterator[Stmt]:
    yield s
    if isinstance(s, For):
        yield from walk(s.body)
    elif isinstance(s, Seq):
        for x in s.stmts:
            yield from walk(x)
    elif isinstance(s, IfThen):
        yield from walk(s.then)
        if s.else_ is not None:
            yield from walk(s.else_)
    elif isinstance(s, Allocate):
        yield from walk(s.body)
    # Store, Prefetch, Barrier, BlockAllReduce, WarpMma and the async copies have no
    # statements inside


def band(s: Stmt) -> tuple[list[tuple[str, int]], Stmt]:
    """The perfectly nested loops of constant extent at the top of `s` (name, extent), and the
    statement they hold."""
    out: list[tuple[str, int]] = []
    while isinstance(s, For) and isinstance(getattr(s.extent, "value", None), int):
        out.append((s.var.name, int(s.extent.value)))  # type: ignore[attr-defined]
        s = s.body
    return out, s
