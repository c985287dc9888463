"""What compiled code and the runtimes agree on: where each tensor lives and what one run does,
step by step. Defined once, here: ir/ builds these values, codegen/ writes them into artifacts,
and both runtimes read them back. A leaf module (it imports nothing of minicc but the errors).

Every value is fully resolved: a Location is a kind and a real offset, never a placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Union

from minicc.errors import ArtifactError


class LocKind(Enum):
    INPUT = "input"        # offset: index into the call's input arrays
    OUTPUT = "output"      # offset: index into the call's output arrays
    ARENA = "arena"        # offset: bytes into the executable's arena
    WEIGHTS = "weights"    # offset: bytes into the weights blob


@dataclass(frozen=True)
class Location:
    kind: LocKind
    offset: int

    def __post_init__(self) -> None:
        if not isinstance(self.kind, LocKind) or not isinstance(self.offset, int) \
                or self.offset < 0:
            raise ArtifactError(f"bad tensor location {self.kind!r}[{self.offset!r}]")

    def __str__(self) -> str:
        return f"{self.kind.value}[{self.offset}]"

    def to_json(self) -> list[Any]:
        return [self.kind.value, self.offset]

    @staticmethod
    def from_json(v: Any) -> Location:
        try:
            kind, off = v
            return Location(LocKind(kind), int(off))
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"bad tensor location {v!r} ({e})") from None


@dataclass(frozen=True)
class TensorRef:
    """A tensor a host step reads or writes: where it is, its dtype name and shape."""

    loc: Location
    dtype: str
    shape: tuple[int, ...]

    def to_json(self) -> list[Any]:
        return [*self.loc.to_json(), self.dtype, list(self.shape)]

    @staticmethod
    def from_json(v: Any) -> TensorRef:
        try:
            kind, off, dt, shape = v
            return TensorRef(Location.from_json([kind, off]), str(dt),
                             tuple(int(d) for d in shape))
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"bad tensor reference {v!r} ({e})") from None


@dataclass(frozen=True)
class NativeCall:
    """CPU: call the exported entry `symbol`, which runs `kernels` in order."""

    symbol: str
    kernels: tuple[str, ...]


# compiled for profiling, each entry `E` records the cycle counter as it starts and returns in
# the global `E` + TICKS_SUFFIX (two i64), and the object exports TICKS_NOW() -> i64, the counter
TICKS_SUFFIX = "_ticks"
TICKS_NOW = "minicc_ticks_now"


@dataclass(frozen=True)
class Launch:
    """CUDA: launch `kernel` on grid x block threads with `args` as its pointer arguments."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    args: tuple[Location, ...]


@dataclass(frozen=True)
class HostCall:
    """Run op `op` on the host with its numpy reference (ops that cannot be compiled)."""

    op: str
    attrs: dict[str, Any] = field(hash=False, compare=True)
    inputs: tuple[TensorRef, ...] = ()
    outputs: tuple[TensorRef, ...] = ()


Step = Union[NativeCall, Launch, HostCall]


def step_to_json(s: Step) -> dict[str, Any]:
    if isinstance(s, NativeCall):
        return {"native": s.symbol, "kernels": list(s.kernels)}
    if isinstance(s, Launch):
        return {"kernel": s.kernel, "grid": list(s.grid), "block": list(s.block),
                "shared": s.shared, "args": [a.to_json() for a in s.args]}
    return {"host": s.op, "attrs": s.attrs, "inputs": [t.to_json() for t in s.inputs],
            "outputs": [t.to_json() for t in s.outputs]}


def step_from_json(d: Any) -> Step:
    try:
        if "native" in d:
            return NativeCall(str(d["native"]), tuple(str(k) for k in d["kernels"]))
        if "kernel" in d:
            return Launch(str(d["kernel"]), _dim3(d["grid"]), _dim3(d["block"]),
                          int(d["shared"]), tuple(Location.from_json(a) for a in d["args"]))
        if "host" in d:
            return HostCall(str(d["host"]), dict(d["attrs"]),
                            tuple(TensorRef.from_json(t) for t in d["inputs"]),
                            tuple(TensorRef.from_json(t) for t in d["outputs"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"bad step {d!r} ({e})") from None
    raise ArtifactError(f"bad step {d!r}: neither native, kernel nor host")


def _dim3(v: Any) -> tuple[int, int, int]:
    x, y, z = (int(a) for a in v)
    return (x, y, z)
