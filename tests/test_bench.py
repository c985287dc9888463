"""`minicc bench`: runtimes alternated on the same inputs, outputs checked, ratios; --batch on a
dynamic-batch model; clear errors for a fixed batch and a missing runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from minicc.bench import alternate, batch_shapes, bench_model
from minicc.cli import main


def mlp(path: Path, batch: int | str = 1) -> Path:
    """x[B,64] -> matmul -> relu -> matmul -> y[B,10]."""
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [64, 32], rng.standard_normal(2048))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [32, 10], rng.standard_normal(320))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       [batch, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
                          [w1, w2])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_alternate_rotates_the_order_and_times_every_runner() -> None:
    calls: list[str] = []
    runners = {n: (lambda feeds, n=n: calls.append(n) or []) for n in ("a", "b", "c")}
    times = alternate(runners, {}, repeat=4, warmup=1, block=2, settle=0.0)
    assert all(len(t) == 4 for t in times.values())
    firsts = [calls[3 + k * 9] for k in range(2)]     # after warm-up, each round's first runner
    assert firsts == ["a", "b"]


def test_bench_against_onnxruntime(tmp_path: Path) -> None:
    rows = bench_model(str(mlp(tmp_path / "m.onnx")), "mlp", [1], repeat=3, randomize=False,
                       log=lambda s: None)
    r = rows[0]
    assert r.ok and r.max_abs_err < 1e-3 and set(r.times) == {"minicc", "onnxruntime"}
    med, lo, hi = r.times["minicc"]
    assert lo <= med <= hi and r.ratio == pytest.approx(r.ratio_to("onnxruntime"))


def test_bench_against_openvino_too(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    rows = bench_model(str(mlp(tmp_path / "m.onnx", "N")), "mlp", [1], repeat=3,
                       randomize=False, log=lambda s: None, vs=("onnxruntime", "openvino"),
                       batch=4)
    assert rows[0].ok and set(rows[0].times) == {"minicc", "onnxruntime", "openvino"}
    assert rows[0].batch == 4


def test_batch_needs_a_dynamic_batch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = onnx.load(str(mlp(tmp_path / "m.onnx")))
    with pytest.raises(Exception, match="fixed batch of 1"):
        batch_shapes(m, 8)
    assert batch_shapes(onnx.load(str(mlp(tmp_path / "d.onnx", "N"))), 8) == {"x": (8, 64)}
    assert main(["bench", str(tmp_path / "m.onnx"), "--batch", "8", "--repeat", "2"]) == 2
    assert "fixed batch of 1" in capsys.readouterr().err


def test_cli_bench(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = mlp(tmp_path / "d.onnx", "N")
    assert main(["bench", str(path), "--threads", "1", "--repeat", "3", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "minicc/onnxruntime" in out and " ok " in out


def test_cli_bench_refuses_a_missing_model_before_running_any(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    path = mlp(tmp_path / "d.onnx")
    assert main(["bench", str(path), str(tmp_path / "nope.onnx"), "--repeat", "2"]) == 2
    cap = capsys.readouterr()
    assert "no such model file" in cap.err and "nope.onnx" in cap.err
    assert "minicc/onnxruntime" not in cap.out


def test_bench_gemm_reports_numpy_onnxruntime_and_the_share_of_the_peak(capsys) -> None:
    """`minicc bench --gemm N`: minicc's matmul against numpy and onnxruntime in one run, each
    as GFLOP/s and as a share of the measured FMA peak, and minicc's error against numpy."""
    pytest.importorskip("onnxruntime")
    assert main(["bench", "--gemm", "96", "--threads", "1", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("gemm 96^3 threads 1:"))
    for part in ("minicc", "numpy", "onnxruntime", "% of peak", "of numpy", "FMA peak"):
        assert part in line, line
    err = float(line.split("rel err ")[1].split(";")[0])
    assert err < 1e-5, line


@pytest.mark.parametrize("n", ["0", "-4"])
def test_bench_gemm_refuses_a_size_below_one(n: str, capsys) -> None:
    assert main(["bench", "--gemm", n]) != 0
    assert f"--gemm {n}: the matmul size N must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("t", ["x", "0", "1,,2"])
def test_bench_refuses_bad_thread_counts(t: str, capsys) -> None:
    assert main(["bench", "--gemm", "32", "--threads", t]) != 0
    assert f"--threads {t}: give thread counts of 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_mkl_is_a_gemm_reference_where_it_is_installed(threads: int, capsys) -> None:
    """With the `mkl` wheel installed, `bench --gemm` times MKL's sgemm too (at the thread count
    asked, after another count in the same process); elsewhere the line leaves it out."""
    from minicc.bench import _mkl_sgemm

    sgemm = _mkl_sgemm(threads)
    if sgemm is None:
        pytest.skip("Intel MKL (pip install mkl) is not installed")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((70, 70)).astype(np.float32) for _ in range(2))
    c = np.empty_like(a)
    sgemm(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)
    assert main(["bench", "--gemm", "64", "--threads", f"{3 - threads},{threads}",
                 "--repeat", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("gemm 64^3")]
    assert len(lines) == 2 and all(", MKL " in ln for ln in lines), lines
