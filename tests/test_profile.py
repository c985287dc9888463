"""`minicc peaks` and `minicc profile`: the generated peak kernels are what they claim, the peaks
are cached per host, the profile accounts for every step (shares, FLOPs from the registry, the
roofline bound), the Chrome trace follows the trace-event format, the roofline is drawn."""

from __future__ import annotations

import json
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import pytest

from minicc.cli import main
from minicc.codegen.llvm import peaks as P
from minicc.demo import light_model_path
from minicc.runtime.llvm_host import init_llvm, target_machine


def test_the_fma_kernel_is_independent_fma_chains_at_the_host_width() -> None:
    init_llvm()
    tm = target_machine()
    lanes = P.cpu_target().lanes
    asm = tm.emit_assembly(llvm.parse_assembly(P._fma_module(lanes, tm.triple,
                                                             str(tm.target_data))))
    loop = asm[asm.index("fma_peak"):]
    assert loop.count("vfmadd") >= P.chains()
    if lanes == 16:
        assert "zmm" in loop


def test_peaks_are_measured_once_and_cached(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINICC_CACHE_DIR", str(tmp_path))
    calls = []
    fake = P.Peaks("cpu", 512, 2, 100.0, 190.0, 20.0, 25.0, "now")
    monkeypatch.setattr(P, "measure", lambda cores=None: calls.append(1) or fake)
    assert P.machine_peaks() == fake and P.machine_peaks() == fake and len(calls) == 1
    f = next(tmp_path.glob("peaks-*.json"))
    f.write_text("{not json")                      # a damaged entry is measured again
    assert P.machine_peaks() == fake and len(calls) == 2
    assert P.machine_peaks(refresh=True) == fake and len(calls) == 3
    assert fake.roof(1.0, 1) == 20.0 and fake.roof(100.0, 2) == 190.0


def test_measured_peaks_are_real_numbers() -> None:
    p = P.measure(cores=1, seconds=0.02, copy_bytes=16 << 20)
    assert p.fma_gflops_1 > 1 and p.copy_gbs_1 > 0.1 and p.vector_bits in (128, 256, 512)
    from minicc.codegen.llvm.target import cpu_target

    t = cpu_target("native")
    if "avx512vnni" in t.features and t.vector_bits == 512:
        # vpdpbusd does four multiply-adds per lane where an FMA does one
        assert p.int8_gops_1 > 2 * p.fma_gflops_1
    else:
        assert p.int8_gops_1 == 0.0


def test_int8_kernels_sit_on_the_int8_roof(tmp_path: Path) -> None:
    from minicc.profile import profile
    from minicc.quantization import quantize
    from tests.test_tune import small_model

    q = quantize(str(small_model(tmp_path / "m.onnx")), "random:2", "minmax", progress=False)
    fake = P.Peaks("cpu", 512, 2, 100.0, 190.0, 20.0, 25.0, "now", 400.0, 760.0)
    prof = profile(q.module, repeat=2, threads=1, peaks=fake)
    for k in prof.kernels:
        int8 = any(op in k.ops.split("+") for op in ("conv_integer", "matmul_integer"))
        want = fake.roof(k.intensity, 1, int8=int8)
        assert k.bound_gflops == pytest.approx(want)
    assert any(k.bound_gflops > 100.0 for k in prof.kernels)     # above the FP32 roof


@pytest.fixture(scope="module")
def prof():  # type: ignore[no-untyped-def]
    from minicc.profile import profile

    fake = P.Peaks("cpu", 512, 2, 100.0, 190.0, 20.0, 25.0, "now")
    return profile(light_model_path("squeezenet"), repeat=3, threads=1, peaks=fake)


def test_the_profile_accounts_for_every_kernel(prof) -> None:  # type: ignore[no-untyped-def]
    import minicc

    a = minicc.analyze(light_model_path("squeezenet"))
    assert len(prof.kernels) == len(a.kernels) + len(a.host)
    assert sum(k.share for k in prof.kernels) == pytest.approx(100.0)
    assert sum(k.flops for k in prof.kernels) == a.total.flops
    by_name = {r.name: r for r in a.kernels}
    for k in prof.kernels:
        assert k.ms > 0 and k.ms_min <= k.ms
        assert k.bytes == by_name[k.name].cost.bytes
        assert k.bound_gflops == pytest.approx(min(100.0, k.intensity * 20.0))
    assert [k.ms for k in prof.sorted()] == sorted((k.ms for k in prof.kernels), reverse=True)


def test_kernels_are_timed_by_their_own_cycle_counts() -> None:
    """A model compiled for profiling records the cycle counter around each kernel, so a
    kernel of a few microseconds is timed without the Python call around it (3-5 us here
    before): a tiny ReLU's measured time is under the perf_counter time around its call, and
    an artifact compiled without it falls back to that clock."""
    import time

    import minicc
    from minicc.ir.parser import parse

    m = parse("func @main(%x: f32[1,64]) -> (f32[1,64]) {\n  %y = relu(%x) : f32[1,64]\n"
              "  return %y\n}\n")
    x = {"x": np.ones((1, 64), np.float32)}
    timed = minicc.compile(m, threads=1, profile=True)
    ticks, rate = timed.exe._step_clocks()
    assert rate > 1e6 and all(t is not None for t in ticks)
    plain = minicc.compile(m, threads=1)
    assert plain.exe._step_clocks()[0] == [None]
    t0 = time.perf_counter()
    runs = timed.exe.time_steps(x, repeat=200)
    wall = (time.perf_counter() - t0) / 201
    native = float(np.median([e - b for (b, e), in runs]))
    assert 0 < native < wall
    assert float(np.median([e - b for (b, e), in plain.exe.time_steps(x, repeat=200)])) > native


def test_the_chrome_trace_is_well_formed(prof, tmp_path: Path) -> None:  # type: ignore
    from minicc.profile import write_trace

    t = json.loads(write_trace(prof, tmp_path / "t.json").read_text())
    xs = [e for e in t["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == prof.repeat * len(prof.kernels)
    for e in xs:
        assert {"name", "ts", "dur", "pid", "tid", "args"} <= set(e) and e["dur"] >= 0
    run0 = [e for e in xs if e["args"]["run"] == 0]
    assert all(a["ts"] + a["dur"] <= b["ts"] + 1e-3 for a, b in zip(run0, run0[1:]))
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in t["traceEvents"])


def test_the_roofline_is_drawn(prof, tmp_path: Path) -> None:  # type: ignore
    pytest.importorskip("matplotlib")
    from minicc.profile import plot_roofline

    png = plot_roofline(prof, tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_profile(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["profile", light_model_path("squeezenet"), "--threads", "1", "--repeat", "2",
               "--top", "5", "--trace", str(tmp_path / "t.json")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "%bound" in out and "26 more" in out and "roofs: FMA" in out   # 31 kernels, top 5
    assert (tmp_path / "t.json").exists() and "perfetto" in err
    rc = main(["profile", light_model_path("squeezenet"), "--threads", "1", "--repeat", "2",
               "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(d["kernels"]) == 31 and d["kernels"][0]["ms"] >= d["kernels"][1]["ms"]


def test_profiling_a_model_without_shapes_says_so(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    from tests.e2e.examples import torch_models

    path = tmp_path / "dyn.onnx"
    torch_models().export("resnet18_like", path, dynamic=True)
    assert main(["profile", str(path), "--repeat", "1"]) == 2
    assert "needs static shapes" in capsys.readouterr().err


def test_peaks_cli(capsys: pytest.CaptureFixture) -> None:
    assert main(["peaks", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fma_gflops_1"] > 0 and np.isfinite(d["copy_gbs_all"])
