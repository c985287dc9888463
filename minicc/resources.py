"""Memory limits: a compile refuses a model that would need more memory than the budget, before
allocating any of it, with an error naming the tensor and its size.

The budget is `CompileOptions.memory_budget` (bytes), else $MINICC_MEMORY_BUDGET (bytes, or with
a unit: 512M, 8G, 1.5GiB), else three quarters of the machine's physical memory. It bounds each
tensor the graph builder creates (so constant folding never allocates a runaway shape) and the
compiled program's arena plus weights.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import os
import re
from functools import lru_cache
from typing import Iterator

from minicc.errors import MiniccError, ResourceError

ENV = "MINICC_MEMORY_BUDGET"
_CURRENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("budget", default=None)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'8G', '512MiB', '1.5g', '1000000' -> bytes; MiniccError for anything else."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if m is None or float(m.group(1)) <= 0:
        raise MiniccError(f"bad memory size {text!r}: give bytes or a number with K, M, G or T "
                          "(e.g. 8G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@lru_cache(maxsize=1)
def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):      # not POSIX: assume 16 GiB
        return 16 << 30


@contextlib.contextmanager
def limit(nbytes: int | None) -> Iterator[None]:
    """The budget for everything inside (a compile sets its options' memory_budget)."""
    tok = _CURRENT.set(nbytes)
    try:
        yield
    finally:
        _CURRENT.reset(tok)


def budget(explicit: int | None = None) -> int:
    """The budget in bytes (see the module docstring)."""
    if explicit is None:
        explicit = _CURRENT.get()
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV)
    if env:
        return parse_size(env)
    return physical_memory() * 3 // 4


def check(nbytes: int, what: str, explicit: int | None = None) -> None:
    """ResourceError when `what` needs more than the budget."""
    limit = budget(explicit)
    if nbytes > limit:
        raise ResourceError(f"{what} needs {format_bytes(nbytes)}, more than the memory budget "
                            f"of {format_bytes(limit)} (set memory_budget= or ${ENV} to allow "
                            "more)")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a compile builds its IR: llvmlite's instruction
    objects (a few hundred thousand for a large model) make each full collection walk the whole
    growing heap, and those collections were 3 of light_densenet121's 10.7 s (resnet50: 1.2 of
    6.3 s), for 2% more peak memory without them. Reentrant; restores the state it found."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
