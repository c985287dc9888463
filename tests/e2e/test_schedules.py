"""Schedules as text on a real model: light_resnet50 (weights randomized), every kernel rebuilt
from its schedule printed as text and parsed back gives the same loop IR and bit-identical
outputs; a different schedule for one conv is honoured and still correct."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from minicc import compile
from minicc.bench import randomize_constants
from minicc.demo import light_model_path
from minicc.driver import lower_program
from minicc.ir.interpret import random_inputs
from minicc.ir.loops.printer import print_kernel
from minicc.ir.loops.trace import format_schedule, parse_schedule
from minicc.api import import_onnx


@pytest.fixture(scope="module")
def resnet() -> tuple[onnx.ModelProto, dict]:
    proto = randomize_constants(onnx.load(light_model_path("resnet50")))
    feeds = random_inputs(import_onnx(proto).main, seed=3)
    return proto, {k: np.abs(v) for k, v in feeds.items()}


@pytest.fixture(scope="module")
def compiled(resnet):  # type: ignore[no-untyped-def]
    return compile(resnet[0], threads=1, cache=False)


def conv3x3(prog) -> object:  # type: ignore[no-untyped-def]
    """The first 3x3 convolution's kernel step."""
    return next(st for st in prog.kernel_steps if st.group.anchor is not None
                and st.group.anchor.kind == "conv" and st.group.anchor.inputs[1].type.shape[2:]
                == (3, 3))


def test_a_conv_kernel_before_and_after_scheduling(resnet) -> None:  # type: ignore
    proto, _ = resnet
    st = conv3x3(lower_program(proto, threads=1, dump=("loops",)))
    before, after = print_kernel(st.nest), print_kernel(st.kernel)
    assert "sum[" in before and "schedule" not in before      # the compute definition's nest
    assert "schedule cpu.gemm: tile(MR=6, NR=32" in after and "vector(16)" in after
    assert st.kernel.schedule == "cpu.gemm"


def test_every_kernel_rebuilt_from_its_schedule_text_is_bit_identical(resnet,  # type: ignore
                                                                     compiled) -> None:
    proto, feeds = resnet
    ref = compiled
    texts = {k["name"]: k["schedule"] for k in ref.artifact.summary["kernels"]}
    assert len(texts) == 57 and all(parse_schedule(t) for t in texts.values())
    again = compile(proto, threads=1, cache=False, schedules=texts)
    a = lower_program(proto, threads=1)
    b = lower_program(proto, threads=1, schedules=texts)
    assert [print_kernel(k) for k in a.kernels] == [print_kernel(k) for k in b.kernels]
    out_a, out_b = ref.run(feeds), again.run(feeds)
    for name in out_a:
        np.testing.assert_array_equal(out_a[name], out_b[name])


def test_another_schedule_for_one_conv_is_honoured(resnet, compiled) -> None:  # type: ignore
    proto, feeds = resnet
    prog = lower_program(proto, threads=1)
    st = conv3x3(prog)
    text = format_schedule(st.kernel.schedule, st.kernel.trace)
    assert text.startswith("cpu.gemm: tile(MR=6, NR=32, KC=256")
    other = "cpu.gemm: tile(MR=4, NR=16, KC=128, NC=56); pack(A, at=compile); " \
            "pack(B, at=kc); vectorize(l, 16)"
    prog2 = lower_program(proto, threads=1, schedules={st.kernel.name: other})
    k2 = conv3x3(prog2).kernel
    assert print_kernel(k2) != print_kernel(st.kernel)
    assert "schedule " + other in print_kernel(k2)
    ref = compiled.run(feeds)
    got = compile(proto, threads=1, cache=False, schedules={st.kernel.name: other}).run(feeds)
    for name in ref:
        scale = float(np.std(ref[name])) or 1.0
        assert float(np.max(np.abs(got[name] - ref[name]))) <= 1e-3 * scale


def test_a_schedule_for_an_unknown_kernel_is_an_error() -> None:
    from minicc.errors import MiniccError

    with pytest.raises(MiniccError, match="no kernel named 'k999_conv'"):
        lower_program(light_model_path("squeezenet"), threads=1,
                      schedules={"k999_conv": "cpu.gemm: tile(MR=6)"})
