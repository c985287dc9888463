"""The codegen/runtime boundary: an Artifact holds everything needed to run a compiled model
(object code, weights, tensor placement, steps) and nothing of the IR. Saved as one zip file
with a manifest; loading checks the minicc version, the CPU and the checksums."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO, Callable

from minicc.abi import Location, Step, step_from_json, step_to_json
from minicc.errors import ArtifactError

FORMAT = "minicc-artifact/4"       # 3: the manifest carries its own checksum; 4: objects
Signature = tuple[tuple[str, str, tuple[int, ...]], ...]     # (name, dtype, shape) per tensor


@dataclass(frozen=True)
class Artifact:
    version: str                      # minicc version that built it
    target: str                       # the target table's name: "llvm" or "cuda"
    triple: str
    cpu: str                          # the LLVM CPU, or the GPU architecture (sm_90)
    features: tuple[str, ...]         # CPU features the code needs (e.g. avx512f)
    objects: tuple[bytes, ...]        # object files (LLVM: one per module) or the cubin
    steps: tuple[Step, ...]           # what one run does, in order (minicc.abi)
    inputs: Signature
    outputs: Signature
    output_sources: tuple[Location, ...]     # where each output is after the steps ran
    arena_bytes: int
    weights: bytes
    threads: int                      # the most threads scratch space was sized for
    cache_key: str = ""
    summary: dict = field(default_factory=dict)
    source: str = ""                  # the generated code as text (LLVM IR or CUDA C)

    def manifest(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("objects", "weights", "source")}
        d["steps"] = [step_to_json(s) for s in self.steps]
        d["output_sources"] = [loc.to_json() for loc in self.output_sources]
        d["format"] = FORMAT
        d["objects"] = len(self.objects)
        d["sha256"] = {"objects": [hashlib.sha256(o).hexdigest() for o in self.objects],
                       "weights": hashlib.sha256(self.weights).hexdigest(),
                       "source": hashlib.sha256(self.source.encode()).hexdigest()}
        d["sha256"]["manifest"] = _manifest_sum(d)
        return d


def _manifest_sum(m: dict[str, Any]) -> str:
    """The manifest's own checksum (over everything but itself): the steps name arena offsets
    and sizes that native code writes through, so a damaged number must never load."""
    body = {k: v for k, v in m.items() if k != "sha256"}
    body["sha256"] = {k: v for k, v in m.get("sha256", {}).items() if k != "manifest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_artifact(a: Artifact, path: str | os.PathLike,
                  same_as: str | os.PathLike | None = None) -> Path:
    """Write `a` to `path`. `same_as`: a file that holds this very artifact (its cache entry),
    hard-linked instead where the file system allows: `minicc compile -o` wrote
    light_resnet50's 55 MB twice, and on a disk that throttles writes each took 0.3-0.5 s."""
    if same_as is not None:
        try:
            return link_atomic(same_as, path)
        except OSError:
            pass                      # another file system, or the entry is gone: write it
    return write_atomic(path, lambda fh: _write_zip(a, fh))


def artifact_bytes(a: Artifact) -> bytes:
    """The artifact as the bytes of its zip file."""
    buf = io.BytesIO()
    _write_zip(a, buf)
    return buf.getvalue()


def _write_zip(a: Artifact, fh: BinaryIO) -> None:
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as z:
        z.writestr("manifest.json", json.dumps(a.manifest(), indent=1))
        for k, obj in enumerate(a.objects):
            z.writestr(f"object-{k}.o", obj)
        z.writestr("weights.bin", a.weights)
        if a.target == "cuda":  # kept so a GPU of another architecture can JIT it again
            z.writestr("source.cu", a.source)


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """Write atomically (a temp file in the same folder, then rename): `data`, or what the
    function writes into the open file (straight to it: no copy of the whole in memory)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=p.parent, delete=False, suffix=".tmp") as fh:
        try:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
        except BaseException:
            fh.close()
            os.unlink(fh.name)
            raise
    os.replace(fh.name, p)
    return p


def link_atomic(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path` becomes a hard link to `src` (a temp name in its folder, then rename, so a
    reader never sees a partial file); OSError where that cannot be done."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() and os.path.samefile(src, p):
        return p
    tmp = p.parent / f".{p.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    os.link(src, tmp)
    try:
        os.replace(tmp, p)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return p


def read_artifact(path: str | os.PathLike | io.BytesIO, shown: str | None = None) -> Artifact:
    """An artifact from its file (or its bytes, as a dynamic model's archive holds them);
    `shown`: the name errors give."""
    p = shown or (str(path) if not isinstance(path, io.BytesIO) else "<artifact>")
    try:
        z = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ArtifactError(f"cannot load '{p}': no such file") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise ArtifactError(f"cannot load '{p}': not a minicc artifact ({e})") from None
    with z:
        try:
            m = json.loads(z.read("manifest.json"))
            n = m.get("objects") if isinstance(m, dict) else None
            objs = tuple(z.read(f"object-{k}.o") for k in range(n)) \
                if isinstance(n, int) and 0 < n <= 4096 else None
            weights = z.read("weights.bin")
            source = z.read("source.cu").decode() if "source.cu" in z.namelist() else ""
        except (KeyError, ValueError, OSError, EOFError, NotImplementedError, RuntimeError,
                zipfile.BadZipFile, zlib.error) as e:   # any damage to the zip structure
            raise ArtifactError(f"cannot load '{p}': incomplete or corrupt artifact ({e})"
                                ) from None
    if not isinstance(m, dict):
        raise ArtifactError(f"cannot load '{p}': malformed manifest")
    if m.get("format") != FORMAT:
        raise ArtifactError(f"cannot load '{p}': format {m.get('format')!r}, expected {FORMAT}")
    if objs is None:
        raise ArtifactError(f"cannot load '{p}': malformed manifest (objects: "
                            f"{m.get('objects')!r})")
    sums = m.get("sha256", {})
    if not isinstance(sums, dict) or _manifest_sum(m) != sums.get("manifest") or \
            [hashlib.sha256(o).hexdigest() for o in objs] != sums.get("objects") or \
            hashlib.sha256(weights).hexdigest() != sums.get("weights") or \
            (m.get("target") == "cuda" and
             hashlib.sha256(source.encode()).hexdigest() != sums.get("source")):
        raise ArtifactError(f"cannot load '{p}': checksum mismatch; the file was modified or "
                            "damaged. Recompile the model")
    try:
        return Artifact(
            version=m["version"], target=m["target"], triple=m["triple"], cpu=m["cpu"],
            features=tuple(m["features"]), objects=objs,
            steps=tuple(step_from_json(s) for s in m["steps"]),
            inputs=tuple((n, d, tuple(s)) for n, d, s in m["inputs"]),
            outputs=tuple((n, d, tuple(s)) for n, d, s in m["outputs"]),
            output_sources=tuple(Location.from_json(x) for x in m["output_sources"]),
            arena_bytes=int(m["arena_bytes"]), weights=weights, threads=int(m["threads"]),
            cache_key=m.get("cache_key", ""), summary=m.get("summary", {}), source=source)
    except (KeyError, TypeError, ValueError, ArtifactError) as e:
        raise ArtifactError(f"cannot load '{p}': malformed manifest ({e})") from None
