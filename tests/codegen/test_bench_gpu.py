"""examples/bench_gpu.py, which has only run where a GPU is, rehearsed on tests/host_cupy.py's
device (this CPU) at small sizes: the GEMM comparison (FP32: minicc against CuPy's matmul),
the end-to-end comparison with PyTorch (eager on the CPU here) and the pipelined run_many. The
numbers mean nothing here; the code paths, the output checks and the rows do."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from minicc.codegen.cuda.host import host_compiler
from tests import host_cupy
from tests.codegen.test_cuda import needs_nvrtc

pytestmark = [needs_nvrtc, pytest.mark.skipif(host_compiler() is None,
                                              reason="no C++ compiler")]
EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")


@pytest.fixture
def bench_gpu(monkeypatch):  # type: ignore[no-untyped-def]
    for name, mod in host_cupy.modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.syspath_prepend(EXAMPLES)
    import bench_gpu

    return bench_gpu


def test_gemm_rows_on_the_host_device(bench_gpu) -> None:  # type: ignore[no-untyped-def]
    for sched in (None, bench_gpu.FP32_VEC4):
        row = bench_gpu.gemm(128, 1, "fp32", sched)
        assert row["minicc_rel_err"] < 1e-5 and row["minicc_gflops"] > 0
        assert row["schedule"].startswith("gpu.gemm")
        assert ("vec=4" in row["schedule"]) == (sched is not None)


def test_run_many_rows_on_the_host_device(bench_gpu) -> None:  # type: ignore[no-untyped-def]
    row = bench_gpu.pipelined(4, "squeezenet")
    assert row["streams_2_outputs_equal"] and row["streams_3_outputs_equal"]
    assert row["loop_runs_per_s"] > 0 and row["streams_3_runs_per_s"] > 0


@pytest.mark.torch
def test_end_to_end_rows_on_the_host_device(bench_gpu) -> None:  # type: ignore
    pytest.importorskip("torch")
    rows = bench_gpu.end_to_end(1, ("bert_like",), (1, 2), torch_device="cpu")
    assert [(r["model"], r["batch"]) for r in rows] == [("bert_like", 1), ("bert_like", 2)]
    assert all(r["matches_onnxruntime"] and r["graph_ms"] > 0 for r in rows)
