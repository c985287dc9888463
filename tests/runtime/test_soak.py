"""Soak and concurrency: one compiled model called thousands of times keeps its resident memory
flat; threads calling one CompiledModel get their own correct results (calls are serialized on
its arena); processes compiling one model into one cache agree, and a cache entry damaged on
disk is detected by its checksum, rebuilt, and never loaded."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

import minicc
from tests.test_tune import small_model


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _soak(runs: int, tmp_path: Path) -> tuple[int, int]:
    cm = minicc.compile(str(small_model(tmp_path / "m.onnx")), threads=1, cache=False)
    x = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    ref = cm.run(x)["y"]
    for _ in range(runs // 10):
        cm.run(x)
    before = _rss()
    for i in range(runs):
        y = cm.run(x)["y"]
        if i % 997 == 0:
            np.testing.assert_array_equal(y, ref)
    return before, _rss()


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_resident_memory_stays_flat_over_2000_runs(tmp_path: Path) -> None:
    before, after = _soak(2000, tmp_path)
    assert after - before < 4 << 20, (before, after)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_resident_memory_stays_flat_over_10000_runs(tmp_path: Path) -> None:
    before, after = _soak(10000, tmp_path)
    assert after - before < 4 << 20, (before, after)


def test_threads_calling_one_model_get_their_own_results(tmp_path: Path) -> None:
    cm = minicc.compile(str(small_model(tmp_path / "m.onnx")), threads=1, cache=False)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    refs = [cm.run({"x": x})["y"] for x in xs]
    errors: list[str] = []

    def worker(k: int) -> None:
        for _ in range(100):
            y = cm.run({"x": xs[k]})["y"]
            if not np.array_equal(y, refs[k]):
                errors.append(f"thread {k}: wrong result")
                return
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def test_processes_share_a_cache_and_a_damaged_entry_is_rebuilt(tmp_path: Path) -> None:
    model = small_model(tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    code = ("import minicc, numpy as np; cm = minicc.compile(%r, threads=1); "
            "print(cm.report.cache_hit, float(cm.run({'x': np.ones((1, 3, 8, 8), "
            "np.float32)})['y'].sum()))" % str(model))
    env = dict(os.environ, MINICC_CACHE_DIR=str(cache))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    sums = {o[0].split()[1] for o in outs}
    assert len(sums) == 1                                       # all computed the same
    entries = list(cache.glob("*.mcc"))
    assert len(entries) == 1 and not list(cache.glob("*.tmp"))   # one complete entry
    data = bytearray(entries[0].read_bytes())
    data[len(data) // 2] ^= 0xFF                                 # damaged on disk
    entries[0].write_bytes(bytes(data))
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.split() == ["False", sums.pop()], again
    third = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=300)
    assert third.stdout.split()[0] == "True"                     # the rebuilt entry is good
    assert onnx.load(str(model))                                 # (the model is untouched)


def test_concurrent_calls_take_arenas_of_their_own(tmp_path: Path) -> None:
    """Two calls in flight hold two arenas; a finished call returns its arena for reuse."""
    cm = minicc.compile(str(small_model(tmp_path / "m.onnx")), threads=1, cache=False)
    exe = cm.exe
    with exe._arena() as a, exe._arena() as b:
        assert a.ctypes.data != b.ctypes.data
    with exe._arena() as c:
        assert c.ctypes.data in (a.ctypes.data, b.ctypes.data)


def test_a_process_with_spinning_omp_threads_exits_cleanly(tmp_path: Path) -> None:
    """With OMP_WAIT_POLICY=active, libgomp's threads spin in its code until the process ends;
    LLVM's library registry dlcloses what it loaded at exit, so minicc keeps a handle of its
    own (runtime/llvm_host.load_gomp): the process used to segfault after its last output."""
    import textwrap

    code = textwrap.dedent(f"""
        import numpy as np, minicc
        from minicc.ir.parser import parse
        m = parse("func @main(%a: f32[256,256], %b: f32[256,256]) -> (f32[256,256]) {{\\n"
                  "  %c = matmul(%a, %b) : f32[256,256]\\n  return %c\\n}}\\n")
        cm = minicc.compile(m, threads=2, profile=True, cache_dir={str(tmp_path)!r})
        a = np.ones((256, 256), np.float32)
        for _ in range(20):
            c = cm(a=a, b=a)["c"]
        assert float(c[0, 0]) == 256.0
        print("done", flush=True)
    """)
    env = dict(os.environ, OMP_WAIT_POLICY="active")
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0 and "done" in r.stdout, (r.returncode, r.stderr[-2000:])
