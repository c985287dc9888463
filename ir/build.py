"""The compiler build: a hash of its own source (ir/, codegen/, runtime/ and the shared modules),
so that what depends on how code is generated (the compile cache, tuning records) is dropped when
the code generator changes even though the version number did not."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from minicc import abi, options


@functools.lru_cache(maxsize=None)
def build_id() -> str:
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for pkg in ("codegen", "ir", "runtime"):
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(f.read_bytes())
    for mod in (abi, options):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:16]
