"""End to end through the compiled path: onnx's light_* models and the PyTorch example models,
compiled to native code (2 threads), against onnxruntime.

The light models' weights are ConstantOfShape splats, which make every channel identical and
hide indexing bugs; `randomize_constants` turns them into random tensors of the same scale. The
final Softmax is removed so the comparison is on logits: after a softmax over 1000 classes most
probabilities are ~1e-3 or far smaller, and an error in them would fall below any absolute
tolerance.

Tolerances: rtol 1e-3 (f32 through up to ~120 layers, with minicc and onnxruntime summing each
conv in a different order and using different exp/tanh approximations) and
atol = 1e-4 * max(1, max|ref|): the randomized weights keep the splat's sign, so activations grow
through the network (logits of 1e9 for squeezenet, 1e20 for resnet50/inception_v1, 1e31 for
vgg19) and rounding errors grow with them; a fixed atol would be meaningless across those
scales, one relative to the output's magnitude is not. Because those logits are nearly equal,
the light models are also checked against the spread of their logits (see the test).
The PyTorch models have realistic weights and O(1) outputs: plain rtol 1e-3, atol 1e-4.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import pytest

from tests.e2e.examples import torch_models
from onnx import TensorProto, helper

from minicc.bench import randomize_constants
from minicc import CompileOptions, compile, load

ort = pytest.importorskip("onnxruntime")

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
SLOW = {"light_vgg19", "light_densenet121", "light_inception_v2"}
LIGHT_MODELS = sorted(p.stem for p in LIGHT.glob("light_*.onnx"))
THREADS = 2


def strip_final_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its last node removed when that node is the Softmax producing the (only)
    output; the Softmax's input becomes the graph output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    assert len(g.output) == 1
    last = g.node[-1]
    if last.op_type != "Softmax" or list(last.output) != [g.output[0].name]:
        return m
    logits = last.input[0]
    del g.node[-1]
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, None))
    return m


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = THREADS
            ) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def graph_inputs(model: onnx.ModelProto) -> list[tuple[str, list[int]]]:
    inits = {t.name for t in model.graph.initializer}
    return [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in model.graph.input if i.name not in inits]


def assert_close_scaled(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], what: str,
                        rtol: float = 1e-3) -> None:
    assert set(got) == set(ref), f"{what}: outputs {sorted(got)} vs {sorted(ref)}"
    for k, r in ref.items():
        g = got[k]
        assert g.dtype == r.dtype and g.shape == r.shape, f"{what}: {k} {g.dtype}{g.shape} " \
                                                          f"vs {r.dtype}{r.shape}"
        assert np.all(np.isfinite(r)), f"{what}: onnxruntime output {k} is not finite"
        atol = 1e-4 * max(1.0, float(np.max(np.abs(r))))
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=f"{what}: output {k}")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in LIGHT_MODELS])
def test_light_model_matches_onnxruntime(name: str, prepared: dict[str, Future]) -> None:
    feeds, ref, artifact = prepared[name].result()
    got = load(artifact).run(feeds)
    assert_close_scaled(got, ref, name)
    for k, r in ref.items():
        # The randomized weights keep the splat's sign, so the logits are all about the same
        # value (their spread is ~1% of their size) and rtol alone would allow errors of 10%
        # of that spread. The errors seen are < 1e-3 of the spread (f32 rounding amplified
        # through the network); 1e-2 leaves 10x headroom and catches a wrong channel or class.
        r64 = r.astype(np.float64)
        spread = float(np.std(r64))
        assert spread > 0, f"{name}: output {k} is constant"
        err = float(np.max(np.abs(got[k].astype(np.float64) - r64)))
        assert err <= 1e-2 * spread, f"{name}: {k} error {err:.3g} vs spread {spread:.3g}"


def test_strip_final_softmax() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["h"]),
                           helper.make_node("Softmax", ["h"], ["y"])], "g", [x], [y])
    m = strip_final_softmax(helper.make_model(g))
    assert [n.op_type for n in m.graph.node] == ["Relu"]
    assert [o.name for o in m.graph.output] == ["h"]
    kept = strip_final_softmax(m)   # no softmax at the end: unchanged
    assert [n.op_type for n in kept.graph.node] == ["Relu"]


# ---------------------------------------------------------------------------------------------
# PyTorch example models (examples/torch_models.py)

TORCH_MODELS = ["resnet18_like", "mobilenetv2_like", "bert_like", "lstm"]


def _examples() -> Any:
    return torch_models()


@pytest.mark.torch
@pytest.mark.parametrize("name", TORCH_MODELS)
def test_torch_model_compiled_matches_onnxruntime(name: str, prepared: dict[str, Future]
                                                  ) -> None:
    pytest.importorskip("torch")
    feeds, ref, artifact = prepared[name].result()
    got = load(artifact).run(feeds)
    assert set(got) == set(ref)
    for k, r in ref.items():
        assert got[k].dtype == r.dtype and got[k].shape == r.shape, k
        np.testing.assert_allclose(got[k], r, rtol=1e-3, atol=1e-4, err_msg=f"{name}: {k}")


# ---------------------------------------------------------------------------------------------
# Preparation in worker processes
#
# Compiling a model is single-threaded (LLVM's optimizer and code generator take most of the
# time), so the models selected for this session are prepared by a pool of two processes, each
# doing: build the model, onnxruntime reference, `compile(threads=2)`, `save`. The tests then
# `load` each artifact and run it here (2 threads), which halves the wall time on 2 cores and
# covers save/load of real models on the way.

# rough compile cost (seconds on one core), biggest first so the pool packs well
COST = {"light_densenet121": 21, "light_vgg19": 20, "light_inception_v2": 13,
        "light_inception_v1": 11, "light_resnet50": 10, "light_zfnet512": 9,
        "light_bvlc_alexnet": 7, "light_shufflenet": 6, "resnet18_like": 4,
        "light_squeezenet": 4, "mobilenetv2_like": 3, "bert_like": 2, "lstm": 2}


def prepare(name: str, outdir: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """(inputs, onnxruntime outputs, artifact path) for one model; runs in a worker process."""
    if name.startswith("light_"):
        model = strip_final_softmax(randomize_constants(onnx.load(str(LIGHT / f"{name}.onnx"))))
        rng = np.random.default_rng(0)
        feeds = {n: rng.uniform(-1, 1, shape).astype(np.float32)
                 for n, shape in graph_inputs(model)}
        source: Any = model
    else:
        tm = _examples()
        path = Path(outdir) / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            feeds = tm.export(name, path, dynamic=False)
        model = onnx.load(str(path))
        source = str(path)
    ref = ort_run(model, feeds, threads=1)
    cm = compile(source, options=CompileOptions(threads=THREADS, cache=False))
    return feeds, ref, str(cm.save(Path(outdir) / f"{name}.mcc"))


@pytest.fixture(scope="module")
def prepared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Future]]:
    wanted = {item.callspec.params["name"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")
              and "prepared" in getattr(item, "fixturenames", ())}
    if importlib.util.find_spec("torch") is None:
        wanted -= set(TORCH_MODELS)
    outdir = str(tmp_path_factory.mktemp("compiled"))
    ctx = multiprocessing.get_context("spawn")   # no fork of a process holding OpenMP threads
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = {n: pool.submit(prepare, n, outdir)
                   for n in sorted(wanted, key=lambda n: -COST.get(n, 5))}
        yield futures
        for f in futures.values():
            f.cancel()
