"""Memory planning: one arena for every tensor that crosses kernels, with offsets reused once a
tensor's lifetime has ended.

`plan_memory` is a pure function of buffers with [first, last] step lifetimes. Offsets come from
greedy placement by decreasing size (each buffer takes the lowest aligned offset that does not
overlap a placed buffer whose lifetime intersects its own), the heuristic TFLite's arena planner
uses. The plan reports the arena size beside the naive sum and the lower bound (the most bytes
live at any one step).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """A buffer to place: `nbytes`, live from step `first` to step `last` inclusive."""

    name: str
    nbytes: int
    first: int
    last: int


@dataclass
class MemoryPlan:
    offsets: dict[str, int]
    arena_bytes: int
    naive_bytes: int
    lower_bound: int
    requests: list[Request] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"// memory plan: arena {self.arena_bytes} bytes, naive sum {self.naive_bytes}, "
                 f"lower bound {self.lower_bound}"]
        for r in sorted(self.requests, key=lambda r: self.offsets[r.name]):
            lines.append(f"//   {r.name}: [{self.offsets[r.name]}, "
                         f"{self.offsets[r.name] + r.nbytes}) live {r.first}..{r.last}")
        return "\n".join(lines) + "\n"


COLOR_STEP, COLORS = 320, 12


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


ORDERS = {
    "size": lambda r: (-r.nbytes, r.first, r.name),
    "first_use": lambda r: (r.first, -r.nbytes, r.name),
    "lifetime": lambda r: (-(r.last - r.first), -r.nbytes, r.name),
    "area": lambda r: (-(r.last - r.first + 1) * r.nbytes, r.name),
}


def _place(requests: list[Request], align: int, key, best_fit: bool  # type: ignore[no-untyped-def]
           ) -> tuple[dict[str, int], int]:
    placed: list[tuple[int, int, Request]] = []   # (offset, end, request)
    offsets: dict[str, int] = {}
    for n, r in enumerate(sorted(requests, key=key)):
        size = _align(max(r.nbytes, 1), align)
        # NOTE: buffers whose addresses agree modulo 4 KiB make a kernel's loads wait on its
        # own stores to the other buffer (4K aliasing); a per-buffer skew of a few cache lines
        # avoids that for big buffers, at a cost of < 4 KiB each.
        # (the skew is taken only where the space allows: it never costs a whole slot)
        skew = COLOR_STEP * (n % COLORS) if size >= 1 << 16 else 0
        busy = sorted((o, e) for o, e, q in placed if not (q.last < r.first or r.last < q.first))
        gaps = []
        cur = 0
        for o, e in busy:
            if o - cur >= size:
                gaps.append((o - cur, cur))
            cur = max(cur, e)
        if gaps:
            glen, start = min(gaps) if best_fit else gaps[0]
            off = start + (skew if glen >= size + skew else 0)
        else:
            off = cur + skew
        offsets[r.name] = off
        placed.append((off, off + size, r))
    return offsets, max((e for _, e, _ in placed), default=0)


def plan_memory(requests: list[Request], align: int = 64) -> MemoryPlan:
    """Assign arena offsets so that buffers alive at the same step never overlap: try a few
    placement orders (by size, first use, lifetime, size x lifetime; best and first fit) and
    keep the smallest arena."""
    best: tuple[dict[str, int], int] | None = None
    for key in ORDERS.values():
        for best_fit in (True, False):
            offsets, arena = _place(requests, align, key, best_fit)
            if best is None or arena < best[1]:
                best = (offsets, arena)
    offsets, arena = best if best is not None else ({}, 0)
    naive = sum(_align(max(r.nbytes, 1), align) for r in requests)
    steps = sorted({s for r in requests for s in (r.first, r.last)})
    lower = 0
    for s in steps:
        lower = max(lower, sum(_align(max(r.nbytes, 1), align) for r in requests
                               if r.first <= s <= r.last))
    return MemoryPlan(offsets, arena, naive, lower, list(requests))


def check_plan(plan: MemoryPlan) -> None:
    """Raise AssertionError if two buffers alive at the same step overlap (used by tests)."""
    rs = plan.requests
    for i, a in enumerate(rs):
        for b in rs[i + 1:]:
            if a.last < b.first or b.last < a.first:
                continue
            oa, ob = plan.offsets[a.name], plan.offsets[b.name]
            assert oa + a.nbytes <= ob or ob + b.nbytes <= oa, f"{a} and {b} overlap"
