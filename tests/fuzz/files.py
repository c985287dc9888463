"""Byte mutations of the files minicc reads: model files, compiled artifacts and tuning logs.
One to four random bytes of a valid file are overwritten; then

    model     compile and run: a MiniccError, or it runs (and agrees with onnxruntime where
              onnxruntime runs it too: a changed weight changes both)
    artifact  load and run: a MiniccError, or the same outputs as the intact artifact
    log       compile with the log: records that no longer parse or apply are skipped with a
              note, and the outputs equal the untuned model's (any schedule is correct)

and anything else (another exception, a dead worker) is a bug. Workers are subprocesses:

    python -m tests.fuzz.files --kind model|artifact|log --cases 1000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("model", "artifact", "log")
WORK = Path(tempfile.gettempdir()) / "minicc-fuzz-files"


@lru_cache(maxsize=1)
def originals() -> dict[str, Any]:
    """The intact files (built once per worker) and the reference outputs."""
    import minicc
    from minicc.tune import tune
    from tests.test_tune import small_model

    WORK.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(dir=WORK))
    model = small_model(d / "m.onnx")
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    cm = minicc.compile(str(model), threads=1, cache=False)
    ref = cm.run(feeds)["y"]
    art = d / "m.mcc"
    cm.save(str(art))
    log = d / "log.jsonl"
    tune(str(model), str(log), budget_trials=4, threads=1, progress=False)
    return {"dir": d, "model": model.read_bytes(), "artifact": art.read_bytes(),
            "log": log.read_bytes(), "model_path": model, "feeds": feeds, "ref": ref}


def mutate(data: bytes, i: int) -> bytes:
    rng = np.random.default_rng(i)
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        b[int(rng.integers(len(b)))] = int(rng.integers(256))
    return bytes(b)


def run_case(kind: str, i: int) -> dict[str, Any]:
    import minicc
    from minicc.errors import MiniccError

    o = originals()
    data = mutate(o[kind], i)
    path = o["dir"] / f"case{i}.{ {'model': 'onnx', 'artifact': 'mcc', 'log': 'jsonl'}[kind]}"
    path.write_bytes(data)
    out: dict[str, Any] = {"kind": kind, "case": i}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            if kind == "model":
                got = minicc.compile(str(path), threads=1, cache=False).run(o["feeds"])
                out["verdict"] = _against_ort(data, o["feeds"], got)
            elif kind == "artifact":
                got = minicc.load(str(path)).run(o["feeds"])
                out["verdict"] = "ok" if np.array_equal(got["y"], o["ref"]) else "mismatch"
            else:
                got = minicc.compile(str(o["model_path"]), threads=1, cache=False,
                                     tuning_log=str(path)).run(o["feeds"])
                same = np.allclose(got["y"], o["ref"], rtol=1e-5, atol=1e-5)
                out["verdict"] = "ok" if same else "mismatch"
        except MiniccError as e:
            out["verdict"], out["why"] = "refused", str(e).splitlines()[0][:160]
        except Exception as e:      # noqa: BLE001  (what the campaign is looking for)
            out["verdict"], out["why"] = "internal", f"{type(e).__name__}: {e}"[:300]
    path.unlink(missing_ok=True)
    return out


def _against_ort(data: bytes, feeds: dict, got: dict) -> str:
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 4
        ref = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception:               # noqa: BLE001  (onnxruntime refuses what minicc runs)
        return "ok-ort-refused"
    g, r = np.asarray(next(iter(got.values()))), np.asarray(ref[0])
    same = g.shape == r.shape and np.allclose(g, r, rtol=1e-3, atol=1e-4, equal_nan=True)
    return "ok" if same else "mismatch"


def campaign(kind: str, first: int, n: int, chunk: int = 100) -> list[dict[str, Any]]:
    """Cases in worker subprocesses; a worker that dies counts its case as a crash."""
    results: list[dict[str, Any]] = []
    i, stop = first, first + n
    while i < stop:
        end = min(i + chunk, stop)
        p = subprocess.run([sys.executable, "-m", "tests.fuzz.files", "--worker", kind, str(i),
                            str(end)], capture_output=True, text=True)
        done = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        results += done
        i += len(done)
        if p.returncode != 0 and i < end:
            results.append({"kind": kind, "case": i, "verdict": "crash",
                            "why": f"worker exit {p.returncode}: {p.stderr[-300:]}"})
            i += 1
    return results


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=KINDS, default="model")
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, a, b = args.worker
        for i in range(int(a), int(b)):
            print(json.dumps(run_case(kind, i)), flush=True)
        return 0
    res = campaign(args.kind, args.seed, args.cases)
    counts = Counter(r["verdict"] for r in res)
    print(f"{args.kind} cases {args.seed}..{args.seed + args.cases - 1}: " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    bad = [r for r in res if r["verdict"] in ("internal", "crash", "mismatch")]
    for r in bad:
        print(f"  {r['verdict']}: case {r['case']}: {r.get('why', '')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
