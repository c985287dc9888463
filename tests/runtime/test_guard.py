"""Guard pages (MINICC_GUARD=1, runtime/guard.py): an out-of-bounds access in generated code
faults; the test models and the fuzz sample run under them without a fault."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minicc.runtime.guard import PAGE, Guarded


def _python(code: str, guard: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINICC_GUARD="1" if guard else "0")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_guarded_buffer_ends_at_an_inaccessible_page() -> None:
    g = Guarded(1000)
    assert g.array.nbytes == 1000 and g.array.ctypes.data % 64 == 0
    end = g.array.ctypes.data + 1000
    assert 0 <= (-end) % PAGE < 64         # the guard page starts within 63 bytes of the end
    g.array[:] = 7                          # the buffer itself is writable


def test_an_out_of_bounds_write_in_native_code_faults() -> None:
    """An artifact whose arena is declared too small: its kernels write past the end."""
    p = _python("""
        import dataclasses, numpy as np, onnx
        from onnx import TensorProto, helper, numpy_helper
        import minicc
        from minicc.runtime.cpu import Executable
        w = numpy_helper.from_array(np.ones((16, 3, 3, 3), np.float32), "w")
        g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
                               helper.make_node("Relu", ["c"], ["r"]),
                               helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                  [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        cm = minicc.compile(m, threads=1, cache=False)
        art = cm.artifact
        assert art.arena_bytes > 100000, art.arena_bytes
        exe = Executable(dataclasses.replace(art, arena_bytes=4096), minicc.__version__)
        print("running", flush=True)
        exe.run({"x": np.ones((1, 3, 64, 64), np.float32)})
        print("no fault")
    """)
    assert "running" in p.stdout, p.stderr[-2000:]
    assert p.returncode == -signal.SIGSEGV, (p.returncode, p.stdout, p.stderr[-2000:])


def test_test_models_run_under_guard_pages() -> None:
    pytest.importorskip("onnxruntime")
    p = _python("""
        import numpy as np, onnx, os
        import minicc
        from minicc.demo import light_model_path
        from minicc.bench import randomize_constants
        import onnxruntime as ort
        assert os.environ["MINICC_GUARD"] == "1"
        for name in ("squeezenet", "shufflenet", "inception_v1"):
            m = randomize_constants(onnx.load(light_model_path(name)))
            for threads in (1, 2):
                cm = minicc.compile(m, threads=threads, cache=False)
                feeds = {n: np.random.default_rng(0).standard_normal(s).astype(np.float32)
                         for n, _, s in cm.artifact.inputs}
                got = cm.run(feeds)
                ref = ort.InferenceSession(m.SerializeToString(),
                                           providers=["CPUExecutionProvider"]).run(None, feeds)
                for g, r in zip(got.values(), ref):
                    np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4)
            print(name, "ok", flush=True)
    """)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr[-3000:])


def test_the_mutation_sample_runs_under_guard_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from tests.fuzz.mutations import campaign

    monkeypatch.setenv("MINICC_GUARD", "1")          # the workers inherit it
    res = campaign(0, 100)
    bad = [r for r in res if r["verdict"] in ("internal", "crash", "mismatch")]
    assert not bad, bad
    assert sum(r["verdict"] == "both-ok" for r in res) > 10
