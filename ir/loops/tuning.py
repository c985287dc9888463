"""Tuning records: what the autotuner (minicc/tune.py) measured, one JSON object per line, and
how a compile uses them (`CompileOptions.tuning_log`).

A record says which schedule ran how fast for one *workload* (a kernel's unscheduled loop nest,
printed canonically: two kernels that compute the same thing on the same shapes share it) on one
*machine* (target, CPU or GPU architecture, vector width) at one thread count. A compile with a
log schedules every kernel whose workload has a good record on this machine with the fastest
one; records for other machines or from another build of the compiler are ignored (counted in
a note), and a line that is not a record is skipped with a warning, so a damaged or foreign log
never stops a compile.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minicc.ir.build import build_id
from minicc.ir.loops.printer import canonical_text
from minicc.options import Target

FORMAT = 1
STATUSES = ("ok", "slow", "wrong", "failed", "timeout")


def workload_key(nest_text: str, target: Target, threads: int) -> str:
    h = hashlib.sha256(f"{FORMAT}|{target.name}|{threads}|{nest_text}".encode())
    return h.hexdigest()[:20]


def kernel_workload(ctx: Any) -> str:
    """The workload key of a LowerCtx: its nest, its target's kind, its thread count."""
    return workload_key(canonical_text(ctx.nest), ctx.target, ctx.threads)


def machine_key(target: Target) -> str:
    """Records are valid on the machine they were measured on, no other."""
    return f"{target.name}:{target.cpu}:{target.vector_bits}"


@dataclass
class Record:
    workload: str
    machine: str
    threads: int
    rule: str
    schedule: str
    status: str                      # one of STATUSES
    ms: float | None = None          # median milliseconds (None: did not run)
    knobs: dict = field(default_factory=dict)
    kernel: str = ""                 # where it was first seen: kernel name and ops
    ops: str = ""
    error: str = ""
    minicc: str = ""
    time: str = ""
    format: int = FORMAT
    build: str = ""                  # the compiler build that measured it (ir/build.py)

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def parse(text: str) -> Record:
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} record")
        r = Record(**{k: d[k] for k in Record.__dataclass_fields__ if k in d})
        if r.status not in STATUSES or not isinstance(r.schedule, str):
            raise ValueError(f"bad status {r.status!r}")
        return r


class TuningLog:
    """The records of one log file, read once; `append` adds a line (flushed, so an
    interrupted tuning run keeps what it measured)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: list[Record] = []
        self.skipped: list[str] = []         # "line N: why"
        if self.path.exists():
            for n, raw in enumerate(self.path.read_bytes().splitlines(), 1):
                if not raw.strip():
                    continue
                try:        # a damaged line (bad UTF-8 too) is skipped, not fatal
                    self.records.append(Record.parse(raw.decode()))
                except (ValueError, TypeError, KeyError, AttributeError) as e:
                    self.skipped.append(f"line {n}: {e}")

    def best(self, workload: str, machine: str, threads: int) -> Record | None:
        ok = [r for r in self.measured(workload, machine, threads)
              if r.status == "ok" and r.ms is not None]
        return min(ok, key=lambda r: r.ms) if ok else None  # type: ignore[arg-type, return-value]

    def foreign(self, machine: str) -> int:
        return sum(1 for r in self.records if r.machine != machine)

    def stale(self, machine: str) -> int:
        """Records of this machine that another build of the compiler measured: ignored, as
        TensorRT ignores a timing cache from another builder version (the lowering they timed
        may have changed)."""
        return sum(1 for r in self.records if r.machine == machine and r.build != build_id())

    def measured(self, workload: str, machine: str, threads: int) -> list[Record]:
        b = build_id()
        return [r for r in self.records if r.workload == workload and r.machine == machine
                and r.threads == threads and r.build == b]

    def append(self, r: Record) -> None:
        r.time = r.time or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(r.line() + "\n")
            f.flush()
        self.records.append(r)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float, size: int) -> TuningLog:
    return TuningLog(path)


def load_log(path: str | os.PathLike) -> TuningLog:
    """The log at `path`, read again only when the file changed."""
    p = Path(path)
    st = p.stat() if p.exists() else None
    return _load(str(p), st.st_mtime if st else 0.0, st.st_size if st else -1)
