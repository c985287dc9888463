"""Schedules as text on a real model: light_resnet50 (weights randomized), every kernel rebuilt
from its schedule printed as text and parsed back gives the same loop IR and bit-identical
outputs; a different schedule for one conv is honoured and still correct (on squeezenet).

The four whole-model compiles run in a pool of two processes (compiling is single-threaded), as
in test_compiled_models.py."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Iterator

import numpy as np
import onnx
import pytest

from minicc import compile, load
from minicc.api import import_onnx
from minicc.bench import randomize_constants
from minicc.demo import light_model_path
from minicc.driver import lower_program
from minicc.errors import MiniccError
from minicc.ir.interpret import random_inputs
from minicc.ir.loops.printer import print_kernel
from minicc.ir.loops.trace import format_schedule, parse_schedule

# other tiles, two K blocks (partial sums through the output), the weights read in place
OTHER = "cpu.gemm: tile(MR=4, NR=16, KC=16, NC=111); pack(A, at=none); pack(B, at=kc); " \
        "vectorize(l, 16)"


def model(name: str) -> onnx.ModelProto:
    return randomize_constants(onnx.load(light_model_path(name)))


def feeds_for(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {k: np.abs(v) for k, v in random_inputs(import_onnx(proto).main, seed=3).items()}


def conv3x3(prog: Any) -> Any:
    """The first 3x3 convolution's kernel step."""
    return next(st for st in prog.kernel_steps if st.group.anchor is not None
                and st.group.anchor.kind == "conv" and st.group.anchor.inputs[1].type.shape[2:]
                == (3, 3))


def build(name: str, schedules: str, path: str) -> str:
    """Compile `name` (1 thread, no cache) with the schedules `schedules` says: none, every
    kernel's own from text ("all"), or OTHER for the first 3x3 conv ("other"). In a worker."""
    proto = model(name)
    texts: dict[str, str] | None = None
    if schedules == "all":
        texts = {st.kernel.name: format_schedule(st.kernel.schedule, st.kernel.trace)
                 for st in lower_program(proto, threads=1).kernel_steps}
    elif schedules == "other":
        texts = {conv3x3(lower_program(proto, threads=1)).kernel.name: OTHER}
    cm = compile(proto, threads=1, cache=False, schedules=texts)
    return str(cm.save(path))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    out = tmp_path_factory.mktemp("schedules")
    jobs = [("resnet50", "none"), ("resnet50", "all"), ("squeezenet", "none"),
            ("squeezenet", "other")]
    ctx = multiprocessing.get_context("spawn")   # no fork of a process holding OpenMP threads
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        yield {f"{n}/{s}": pool.submit(build, n, s, str(out / f"{n}_{s}.mcc")) for n, s in jobs}


def test_a_conv_kernel_before_and_after_scheduling() -> None:
    # lowered for an AVX-512 CPU whatever this one is: the default tiles follow the registers
    prog = lower_program(model("resnet50"), threads=1, dump=("loops",), cpu="znver4")
    st = conv3x3(prog)
    before, after = print_kernel(st.nest), print_kernel(st.kernel)
    assert "sum[" in before and "schedule" not in before      # the compute definition's nest
    # a 3x3 stride-1 conv of 64 channels at 56x56: F(2x2, 3x3)
    assert "schedule cpu.winograd: tile(" in after and "vector(16)" in after
    assert st.kernel.schedule == "cpu.winograd"
    conv1x1 = next(s for s in prog.kernel_steps if s.group.anchor is not None
                   and s.group.anchor.kind == "conv"
                   and s.group.anchor.inputs[1].type.shape[2:] == (1, 1))
    assert "schedule cpu.gemm: tile(MR=16, NR=16" in print_kernel(conv1x1.kernel)


def test_every_kernel_rebuilt_from_its_schedule_text_is_bit_identical(
        built: dict[str, Future]) -> None:
    proto = model("resnet50")
    a = lower_program(proto, threads=1)
    texts = {st.kernel.name: format_schedule(st.kernel.schedule, st.kernel.trace)
             for st in a.kernel_steps}
    assert len(texts) == 57 and all(parse_schedule(t) for t in texts.values())
    b = lower_program(proto, threads=1, schedules=texts)
    assert [print_kernel(k) for k in a.kernels] == [print_kernel(k) for k in b.kernels]
    ref, again = load(built["resnet50/none"].result()), load(built["resnet50/all"].result())
    assert [k["schedule"] for k in ref.artifact.summary["kernels"]] == list(texts.values())
    feeds = feeds_for(proto)
    out_a, out_b = ref.run(feeds), again.run(feeds)
    for name in out_a:
        np.testing.assert_array_equal(out_a[name], out_b[name])


def test_another_schedule_for_one_conv_is_honoured(built: dict[str, Future]) -> None:
    """The kernel follows the text, and is correct."""
    proto = model("squeezenet")
    st = conv3x3(lower_program(proto, threads=1, cpu="znver4"))
    assert format_schedule(st.kernel.schedule, st.kernel.trace).startswith(
        "cpu.gemm: tile(MR=16, NR=16, KC=27, NC=222)")
    st = conv3x3(lower_program(proto, threads=1))
    k2 = conv3x3(lower_program(proto, threads=1, schedules={st.kernel.name: OTHER})).kernel
    assert print_kernel(k2) != print_kernel(st.kernel)
    assert print_kernel(k2).endswith("schedule " + OTHER + "\n")
    feeds = feeds_for(proto)
    ref = load(built["squeezenet/none"].result()).run(feeds)
    got = load(built["squeezenet/other"].result()).run(feeds)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-6)


def test_a_schedule_for_an_unknown_kernel_is_an_error() -> None:
    with pytest.raises(MiniccError, match="no kernel named 'k999_conv'"):
        lower_program(light_model_path("squeezenet"), threads=1,
                      schedules={"k999_conv": "cpu.gemm: tile(MR=6)"})
