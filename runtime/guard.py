"""Guard pages (MINICC_GUARD=1): buffers whose last byte sits against an inaccessible page, so
generated code that reads or writes past the end of the arena, the weights, an input or an
output faults at once instead of corrupting memory silently. A test mode: every buffer costs a
page or more, and inputs are copied.

Each buffer is an anonymous mmap of its size rounded up to pages, plus one page made PROT_NONE
with mprotect; the array is the tail of the mapping that ends at that page (its start keeps the
64-byte alignment the code expects: at most 63 bytes past the end go unguarded).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap

import numpy as np

from minicc import env

PAGE = mmap.PAGESIZE
_PROT_NONE = 0
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def enabled() -> bool:
    return env.flag("MINICC_GUARD")


class Guarded:
    """One guarded buffer; keep it alive while native code may touch `array`."""

    def __init__(self, nbytes: int, align: int = 64):
        size = -(-max(nbytes, 1) // align) * align
        data_pages = -(-size // PAGE) * PAGE
        self.map = mmap.mmap(-1, data_pages + PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        if _libc.mprotect(ctypes.c_void_p(base + data_pages), PAGE, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        self.array = np.frombuffer(self.map, dtype=np.uint8, count=nbytes,
                                   offset=data_pages - size)


def buffer(nbytes: int, keep: list) -> np.ndarray:
    """`nbytes` of guarded memory (the mapping appended to `keep`)."""
    g = Guarded(nbytes)
    keep.append(g)
    return g.array


def array_like(shape: tuple, dtype: np.dtype, keep: list, src: np.ndarray | None = None
               ) -> np.ndarray:
    """A guarded array of `shape` and `dtype` (a copy of `src` if given)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    a = buffer(n, keep).view(dt).reshape(shape)
    if src is not None:
        a[...] = src
    return a
