"""The on-disk compile cache: artifacts keyed by a hash of the scheduled Loop IR, target, options
and minicc version; and, in front of it, model entries: the hash of a model's bytes and every
option -> the artifact's key, so a warm compile skips import, passes and lowering. Writes are
atomic (temp file + rename), so two processes compiling the same model at once both end up with
a complete file.

The cache is kept under $MINICC_CACHE_SIZE (default DEFAULT_SIZE): after each new entry, if the
entries outgrew it, the least recently used go (a hit refreshes an entry's time) until they
fill three quarters of it. (Unbounded, a development machine's cache held 61 GB in 55,000
entries after a few days of tests and benchmarks.)"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from minicc.errors import ArtifactError, MiniccError
from minicc.resources import format_bytes, parse_size
from minicc.runtime.artifact import Artifact, read_artifact, save_artifact

SIZE_ENV = "MINICC_CACHE_SIZE"
DEFAULT_SIZE = 4 << 30


def cache_limit() -> int:
    """The size the cache is kept under (bytes): $MINICC_CACHE_SIZE, else DEFAULT_SIZE."""
    env = os.environ.get(SIZE_ENV)
    if not env:
        return DEFAULT_SIZE
    try:
        return parse_size(env)
    except MiniccError:
        raise MiniccError(f"${SIZE_ENV}={env!r} is not a size: give bytes or a number with K, "
                          "M, G or T (e.g. 2G)") from None


def _touch(p: Path) -> None:
    try:
        os.utime(p)
    except OSError:
        pass


def default_cache_dir() -> Path:
    env = os.environ.get("MINICC_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minicc"


class CompileCache:
    def __init__(self, directory: str | os.PathLike | None = None):
        self.dir = Path(directory) if directory is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.mcc"

    def get(self, key: str) -> Artifact | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            art = read_artifact(p)
        except ArtifactError:
            return None  # a damaged entry is rebuilt
        _touch(p)         # recently used: the last to go (see trim)
        return art

    def put(self, key: str, a: Artifact) -> Path | None:
        """Store `a` (then trim the cache); the entry's path, or None where it could not be
        written."""
        try:
            p = save_artifact(a, self.path(key))
        except OSError:
            return None  # a read-only or full cache directory only costs recompiling
        self.trim(keep=p)
        return p

    def entries(self) -> list[tuple[float, int, str]]:
        """(time last used, bytes, path) of every artifact and model entry."""
        out = []
        try:
            with os.scandir(self.dir) as it:
                for e in it:
                    if e.name.endswith(".mcc") or (e.name.startswith("model-") and
                                                   e.name.endswith(".json")):
                        try:
                            st = e.stat()
                        except OSError:       # removed meanwhile (another process trimming)
                            continue
                        out.append((st.st_mtime, st.st_size, e.path))
        except OSError:
            return []
        return out

    def trim(self, limit: int | None = None, keep: Path | None = None) -> int:
        """If the entries take more than `limit` (default: cache_limit()), delete the least
        recently used until they take at most three quarters of it (never `keep`, the entry
        just written); the bytes freed. A scan of 55,000 entries takes 0.12 s."""
        limit = cache_limit() if limit is None else limit
        found = self.entries()
        total = sum(size for _, size, _ in found)
        if total <= limit:
            return 0
        freed = 0
        for _, size, path in sorted(found):
            if total - freed <= limit * 3 // 4:
                break
            if keep is not None and path == str(keep):
                continue
            try:
                os.unlink(path)
                freed += size
            except OSError:
                pass
        return freed

    def describe(self) -> str:
        found = self.entries()
        return (f"{self.dir}: {sum(1 for *_, p in found if p.endswith('.mcc'))} artifacts, "
                f"{format_bytes(sum(s for _, s, _ in found))} (kept under "
                f"{format_bytes(cache_limit())}, ${SIZE_ENV})")

    def get_model(self, key: str) -> dict | None:
        """A model entry: {"artifact": key, "notes": [...]}, or None."""
        p = self.dir / f"model-{key}.json"
        try:
            entry = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        _touch(p)
        ok = isinstance(entry, dict) and isinstance(entry.get("artifact"), str) and \
            isinstance(entry.get("notes"), list)
        return entry if ok else None

    def put_model(self, key: str, artifact_key: str, notes: list[str]) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.dir, delete=False,
                                             suffix=".tmp") as fh:
                json.dump({"artifact": artifact_key, "notes": notes}, fh)
            os.replace(fh.name, self.dir / f"model-{key}.json")
        except OSError:
            pass

    def clear(self) -> None:
        if self.dir.exists():
            for p in [*self.dir.glob("*.mcc"), *self.dir.glob("model-*.json")]:
                p.unlink(missing_ok=True)
