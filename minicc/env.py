"""Debug environment variables, read in this one module (`minicc --help-env` lists them).

They change diagnostics only, never results; the ones that change the generated code
(MINICC_SPLIT_KERNELS) are folded into the compile options, so the cache key covers them."""

from __future__ import annotations

import os

FLAGS = {
    "MINICC_DEBUG": "1: print each native segment before it runs (find a crashing kernel)",
    "MINICC_SPLIT_KERNELS": "1: one native entry per kernel (with MINICC_DEBUG, names each)",
    "MINICC_GUARD": "1: arena, weights, inputs and outputs end at an inaccessible page, so an "
                    "out-of-bounds access in generated code faults (a test mode)",
    "MINICC_CACHE_DIR": "directory of the compile cache (default ~/.cache/minicc)",
    "MINICC_CACHE_SIZE": "size the compile cache is kept under, least recently used entries "
                         "going first (2G, 500M; default 4G)",
    "MINICC_MEMORY_BUDGET": "bytes a compile may plan (8G, 512M; default 3/4 of the machine's "
                            "memory)",
    "MINICC_LIBGOMP": "path of libgomp.so to load for multi-threaded code",
    "MINICC_VERIFY_ROUNDTRIP": "1: check that the graph IR and every kernel's loop IR parse "
                               "back identically",
    "MINICC_VERIFY_EACH": "1: verify the graph IR after every pass (what --verify-each does)",
}


def flag(name: str) -> bool:
    if name not in FLAGS:
        raise KeyError(f"unknown minicc env flag {name}")
    return os.environ.get(name, "") not in ("", "0")


def value(name: str) -> str | None:
    if name not in FLAGS:
        raise KeyError(f"unknown minicc env flag {name}")
    return os.environ.get(name) or None
