"""A program as several LLVM modules (codegen/llvm/module.py), compiled in a worker process
(codegen/llvm/worker.py) while the renderer goes on: the split, the objects' links to each other
at 1 and 2 threads, the worker's failures, and the renderer's index CSE on unrolled loops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import minicc
from minicc.codegen.llvm import module as llvm_module
from minicc.codegen.llvm import worker
from minicc.errors import ToolchainError


def _chain(convs: int = 4, c: int = 16, stride2_at: int = 1) -> onnx.ModelProto:
    """Convs of different shapes (so each is its own kernel) with a stride-2 one among them
    (strided loads) and a residual add: enough kernels to fill several small modules."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(convs):
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.2
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, w.shape, w.ravel()))
        s = 2 if i == stride2_at else 1
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1],
                                      strides=[s, s]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    nodes.append(helper.make_node("Add", [x, x], ["y"]))
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, c, 20, 20])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def small_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llvm_module, "CHUNK_INSTRUCTIONS", 50)   # about a kernel per module


@pytest.mark.parametrize("threads", [1, 2])
def test_a_program_in_several_modules_runs_like_the_reference(small_modules: None,
                                                              threads: int) -> None:
    """Entries call kernels in other objects (static relocations: with PIC the first parallel
    region hit an illegal instruction, see worker.machine)."""
    from onnx.reference import ReferenceEvaluator

    m = _chain()
    cm = minicc.compile(m, threads=threads, cache=False)
    assert len(cm.artifact.objects) >= 3
    assert cm.artifact.source.count(llvm_module.MODULE_SEPARATOR) == \
        len(cm.artifact.objects) - 1
    x = np.random.default_rng(1).standard_normal((1, 16, 20, 20)).astype(np.float32)
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(cm.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)


def test_several_modules_save_load_and_dump(small_modules: None, tmp_path) -> None:
    m = _chain()
    cm = minicc.compile(m, threads=1, cache=False, dump=("asm",))
    asm = cm.report.dumps["asm"]
    assert asm.count("minicc_entry_0:") == 1 and "k0_" in asm
    x = np.ones((1, 16, 20, 20), np.float32)
    back = minicc.load(cm.save(tmp_path / "m.mcc"))
    assert back.artifact.objects == cm.artifact.objects
    np.testing.assert_array_equal(back.run({"x": x})["y"], cm.run({"x": x})["y"])


def test_the_worker_compiles_what_this_process_does() -> None:
    from minicc.codegen.llvm.target import cpu_target

    t = cpu_target("native")
    text = (f'target triple = "{worker.machine(t.cpu, t.llvm_features).triple}"\n'
            "define i32 @f(i32 %x) {\n  %y = mul i32 %x, 3\n  ret i32 %y\n}\n")
    w = worker.take()
    assert w is not None
    try:
        here = worker.compile_module(text, 3, t.cpu, t.llvm_features)
        there = w.compile(text, 3, t.cpu, t.llvm_features)
        assert there[:4] == b"\x7fELF" and there == here
        with pytest.raises(worker.LLVMFailure, match="expected"):
            w.compile(text + "this is not IR\n", 3, t.cpu, t.llvm_features)
        assert w.alive()                    # a refused module does not end the worker
    finally:
        worker.give(w)


def test_a_worker_that_dies_is_a_toolchain_error(small_modules: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def dead(self: worker.Worker, *a: object) -> bytes:
        self.proc.kill()
        self.proc.wait()
        raise worker.WorkerDied(f"the LLVM worker process ended (exit status "
                                f"{self.proc.returncode})")
    monkeypatch.setattr(worker.Worker, "_ask", dead)
    with pytest.raises(ToolchainError, match="LLVM worker process ended.*module 1 "):
        minicc.compile(_chain(), threads=1, cache=False)


def test_index_values_are_not_reused_across_unrolled_iterations() -> None:
    """The GEMM micro-kernel unrolls its rows in one block: each row's addresses must use its
    own row (the CSE drops what reads a rebound variable). A matmul whose every output row
    differs catches a reused row offset."""
    a = np.arange(7 * 20, dtype=np.float32).reshape(7, 20) / 50
    b = np.random.default_rng(0).standard_normal((20, 40)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [7, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("b", TensorProto.FLOAT, b.shape, b.ravel())])
    cm = minicc.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                        threads=1, cache=False)
    np.testing.assert_allclose(cm.run({"a": a})["y"], a @ b, rtol=1e-5, atol=1e-5)


def test_the_case_that_found_the_relocation_bug() -> None:
    """A stride-2 depthwise conv at 2 threads: kernel and entries in two objects. With PIC its
    parallel region jumped into a misplaced GOT relocation (SIGILL), so it runs in a child
    process: a crash fails this test instead of ending the run."""
    code = ("from tests.codegen.test_cpu import check_built, conv_model\n"
            "check_built(conv_model((1, 19, 15, 13), (19, 1, 3, 3), {'strides': [2, 2], "
            "'pads': [1, 1, 1, 1], 'group': 19}), rule='cpu.depthwise')\nprint('ok')\n")
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "ok" in p.stdout, (p.returncode, p.stderr[-2000:])


def test_code_generated_during_lowering_is_what_a_build_afterwards_makes() -> None:
    """The driver hands each kernel to the code generator as it is lowered; the objects are
    those of a build from the finished program."""
    from minicc.codegen.llvm.module import build_artifact
    from minicc.driver import lower_program

    m = _chain()
    cm = minicc.compile(m, threads=2, cache=False)
    again = build_artifact(lower_program(m, threads=2, cache=False),
                           minicc.CompileOptions(threads=2, cache=False), minicc.__version__)
    assert again.objects == cm.artifact.objects and again.source == cm.artifact.source


def test_a_kernel_changed_after_it_was_handed_over_is_rendered_again(small_modules: None
                                                                     ) -> None:
    """What `finish` renders is the program's kernels: an early one that no longer matches
    (another canonical text under the same name) stays unused, and the program's own takes
    another symbol name."""
    from minicc.codegen.llvm.module import ProgramCodegen
    from minicc.driver import CompiledModel, lower_program

    m = _chain(convs=2)
    o = minicc.CompileOptions(threads=1, cache=False)
    prog = lower_program(m, options=o)
    other = lower_program(m, threads=2, cache=False).kernel_steps[0].kernel   # same name
    first = prog.kernel_steps[0].kernel
    assert other.name == first.name
    cg = ProgramCodegen(prog.target, o)
    cg.kernel(other)
    art = cg.finish(prog, minicc.__version__)
    assert f"@{first.name}_v" in art.source.replace('"', "")
    x = np.random.default_rng(3).standard_normal((1, 16, 20, 20)).astype(np.float32)
    want = minicc.compile(m, threads=1, cache=False).run({"x": x})["y"]
    np.testing.assert_array_equal(CompiledModel(art, 1).run({"x": x})["y"], want)


def _lowered_kernels(m: onnx.ModelProto) -> list:
    from minicc.driver import lower_program

    return [st.kernel for st in lower_program(m, threads=1, cache=False).kernel_steps]


def test_the_worker_renders_kernels_as_this_process_does() -> None:
    """A chunk of kernels goes to the worker as pickled loop IR: the IR text and the object
    that come back are those this process makes from the same kernels."""
    from minicc.codegen.llvm.render import render_module
    from minicc.codegen.llvm.target import cpu_target

    t = cpu_target("native")
    tm = worker.machine(t.cpu, t.llvm_features)
    ks = _lowered_kernels(_chain(convs=2))
    text = render_module(ks, tm.triple, str(tm.target_data), False, t.features)
    w = worker.take()
    assert w is not None
    try:
        got = w.render(ks, False, t.features, 3, t.cpu, t.llvm_features)
        assert got is not None
        assert got[0] == text and got[1] == worker.compile_module(text, 3, t.cpu,
                                                                  t.llvm_features)
        assert all(f"@{k.name}(" in text.replace('"', "") for k in ks)
    finally:
        worker.give(w)


def test_a_chunk_the_worker_cannot_render_raises_the_renderers_own_error() -> None:
    """The worker answers `render: false` and this process renders the chunk itself: the
    error is the renderer's (a CodegenError naming what it could not emit), not a worker's."""
    from dataclasses import replace

    from minicc.codegen.llvm.module import _LLVM
    from minicc.codegen.llvm.target import cpu_target
    from minicc.errors import CodegenError
    from minicc.ir.compute import Call
    from minicc.ir.loops.nodes import Store, walk

    k = _lowered_kernels(_chain(convs=1))[0]
    st = next(s for s in walk(k.body) if isinstance(s, Store))
    bad = replace(k, body=Store(st.buf, st.index, Call("no_such_op", (st.value,), st.value.dtype)))
    llvm = _LLVM(minicc.CompileOptions(threads=1), cpu_target("native"))
    try:
        assert llvm.proc is not None
        assert llvm.proc.render([bad], False, (), *llvm.args) is None
        assert llvm.proc.alive()               # (and it serves the next request)
        with pytest.raises(CodegenError, match="no_such_op"):
            llvm([bad], 0)
    finally:
        llvm.done()


def test_chunks_follow_the_estimated_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels join a chunk until their estimated LLVM size passes CHUNK_INSTRUCTIONS: a
    lower bound makes more modules, and the program runs alike."""
    m = _chain(convs=6)
    x = np.random.default_rng(2).standard_normal((1, 16, 20, 20)).astype(np.float32)
    one = minicc.compile(m, threads=1, cache=False)
    monkeypatch.setattr(llvm_module, "CHUNK_INSTRUCTIONS", 400)
    many = minicc.compile(m, threads=1, cache=False)
    assert len(many.artifact.objects) > len(one.artifact.objects)
    np.testing.assert_array_equal(many.run({"x": x})["y"], one.run({"x": x})["y"])


def test_kernels_pickle_cannot_take_are_rendered_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk that cannot be pickled for the worker is rendered in this process: the program
    compiles and runs all the same."""
    import pickle

    refused = []

    def refuse(*a: object, **k: object) -> bytes:
        refused.append(1)
        raise pickle.PicklingError("no")
    x = np.random.default_rng(4).standard_normal((1, 16, 20, 20)).astype(np.float32)
    want = minicc.compile(_chain(), threads=1, cache=False).run({"x": x})["y"]
    monkeypatch.setattr(worker.pickle, "dumps", refuse)
    got = minicc.compile(_chain(), threads=1, cache=False).run({"x": x})["y"]
    assert refused
    np.testing.assert_array_equal(got, want)
