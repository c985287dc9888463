"""CUDA streams as deployments use them: `CompiledModel.run_async` on a given stream and the
pipelined `run_many`. Their checks run anywhere (before any device call); the runs themselves
where a GPU is."""

from __future__ import annotations

import numpy as np
import pytest

import minicc
from minicc.codegen.cuda.nvrtc import nvrtc_available
from minicc.errors import ArtifactError, MiniccError
from minicc.ir.parser import parse
from minicc.runtime.cuda import cuda_device_available

NVRTC = nvrtc_available()
GPU = cuda_device_available()
SRC = ("func @main(%a: f32[19,20], %b: f32[20,35]) -> (f32[19,35]) {\n"
       "  %c = matmul(%a, %b) : f32[19,35]\n  %r = relu(%c) : f32[19,35]\n  return %r\n}")


def feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((19, 20)).astype(np.float32),
            "b": rng.standard_normal((20, 35)).astype(np.float32)}


def test_streams_need_the_cuda_target() -> None:
    cm = minicc.compile(parse(SRC), threads=1)
    for call in (lambda: cm.run_async(feeds(0)), lambda: cm.run_many([feeds(0)])):
        with pytest.raises(MiniccError, match="compile with target='cuda'"):
            call()


@pytest.mark.skipif(NVRTC is not None, reason=f"NVRTC unavailable: {NVRTC}")
def test_run_many_checks_its_batch_before_the_device(tmp_path) -> None:  # type: ignore
    cm = minicc.compile(parse(SRC), target="cuda", cache_dir=str(tmp_path))
    with pytest.raises(MiniccError, match="the batch of inputs is empty"):
        cm.run_many([])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(MiniccError, match="streams must be a positive integer"):
            cm.run_many([feeds(0)], streams=bad)
    wrong = feeds(1)
    wrong["b"] = wrong["b"][:, :30].copy()
    with pytest.raises(MiniccError, match=r"item 1 of the batch: .*'b'"):
        cm.run_many([feeds(0), wrong])
    with pytest.raises(MiniccError, match="item 0 of the batch is a list"):
        cm.run_many([[1, 2]])                                  # type: ignore[list-item]
    if GPU is not None:                                        # all good, but no device here
        with pytest.raises(ArtifactError, match="needs a CUDA device"):
            cm.run_many([feeds(0), feeds(1)])


@pytest.mark.cuda
@pytest.mark.skipif(GPU is not None, reason=f"no CUDA device: {GPU}")
def test_run_async_and_run_many_give_what_run_gives() -> None:
    import cupy as cp

    cm = minicc.compile(parse(SRC), target="cuda")
    batch = [feeds(i) for i in range(9)]
    want = [cm.run(x)["r"] for x in batch]
    s1, s2 = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    pending = [cm.run_async(x, s1 if i % 2 else s2) for i, x in enumerate(batch)]
    for p, w in zip(pending, want):
        np.testing.assert_array_equal(p.result()["r"], w)
    dev = {k: cp.asarray(v) for k, v in batch[0].items()}      # device in, device out
    np.testing.assert_array_equal(cp.asnumpy(cm.run_async(dev).result()["r"]), want[0])
    for streams in (1, 2, 3):
        outs, timing = cm.run_many(batch, streams)
        assert len(outs) == len(batch) and timing["runs_per_s"] > 0
        for o, w in zip(outs, want):
            np.testing.assert_array_equal(o["r"], w)
