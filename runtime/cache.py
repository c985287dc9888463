"""The on-disk compile cache: artifacts keyed by a hash of the scheduled Loop IR, target, options
and minicc version; and, in front of it, model entries: the hash of a model's bytes and every
option -> the artifact's key, so a warm compile skips import, passes and lowering. Writes are
atomic (temp file + rename), so two processes compiling the same model at once both end up with
a complete file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from minicc.errors import ArtifactError
from minicc.runtime.artifact import Artifact, read_artifact, save_artifact


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
            return read_artifact(p)
        except ArtifactError:
            return None  # a damaged entry is rebuilt

    def put(self, key: str, a: Artifact) -> Path | None:
        """Store `a`; the entry's path, or None where it could not be written."""
        try:
            return save_artifact(a, self.path(key))
        except OSError:
            return None  # a read-only or full cache directory only costs recompiling

    def get_model(self, key: str) -> dict | None:
        """A model entry: {"artifact": key, "notes": [...]}, or None."""
        try:
            entry = json.loads((self.dir / f"model-{key}.json").read_text())
        except (OSError, ValueError):
            return None
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
