"""End to end: realistic PyTorch-exported models (examples/torch_models.py) through the ONNX
frontend and the reference interpreter, checked against onnxruntime and PyTorch itself.

Every model is exported once per test module into a temporary folder (nothing binary is kept in
the repository). Dynamic-batch variants check that shape arithmetic (Shape/Gather/Concat) either
stays symbolic or, with static input shapes, folds away completely.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.examples import torch_models

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

import minicc  # noqa: E402
from minicc.ir.parser import parse  # noqa: E402
from minicc.ir.printer import print_module  # noqa: E402
from minicc.ir.verify import verify_module  # noqa: E402
from minicc.tools import onnxruntime_outputs  # noqa: E402

pytestmark = pytest.mark.torch

RTOL, ATOL = 1e-3, 1e-4


def _load_examples() -> Any:
    return torch_models()


tm = _load_examples()
MODELS = list(tm.TEST_MODELS)
# Dynamic-batch models whose exported graph must contain run-time shape arithmetic.
SHAPE_ARITHMETIC = {"resnet18_like", "bert_like", "lstm", "lstm_bidirectional"}



def _export(name: str, path: Path, dynamic: bool) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and LSTM batch notes
        return tm.export(name, path, dynamic=dynamic)


def assert_outputs_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                         what: str) -> None:
    assert set(got) == set(ref), f"{what}: outputs {sorted(got)} vs {sorted(ref)}"
    for k, r in ref.items():
        g = got[k]
        assert g.dtype == r.dtype, f"{what}: output {k} dtype {g.dtype} vs {r.dtype}"
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL, err_msg=f"{what}: output {k}")


# ---------------------------------------------------------------------------------------------
# Static-shape export


class Exported:
    def __init__(self, name: str, path: Path, feeds: dict[str, np.ndarray]):
        self.name, self.path, self.feeds = name, path, feeds
        self.module = minicc.import_onnx(path)
        self.ours = minicc.interpret(self.module, feeds)
        self.ort = onnxruntime_outputs(str(path), feeds)


@pytest.fixture(scope="module", params=MODELS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Exported:
    name = request.param
    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    feeds = _export(name, path, dynamic=False)
    return Exported(name, path, feeds)


def test_imports_and_verifies(exported: Exported) -> None:
    m = exported.module
    verify_module(m)
    f = m.main
    assert list(f.input_names) == list(exported.feeds)
    for v, (n, a) in zip(f.inputs, exported.feeds.items()):
        assert v.type.shape == a.shape, n
    assert list(f.output_names) == tm.MODELS[exported.name].outputs


def test_matches_onnxruntime(exported: Exported) -> None:
    assert_outputs_close(exported.ours, exported.ort, f"{exported.name} vs onnxruntime")


def test_matches_torch(exported: Exported) -> None:
    ref = tm.torch_outputs(exported.name, exported.feeds)
    assert_outputs_close(exported.ours, ref, f"{exported.name} vs torch")


def test_outputs_are_not_trivial(exported: Exported) -> None:
    """Guard against a comparison that passes because everything is zero or constant."""
    for k, a in exported.ort.items():
        assert np.all(np.isfinite(a)), k
        assert float(np.std(a)) > 1e-3, k


def test_print_parse_round_trip(exported: Exported) -> None:
    m = exported.module
    text = print_module(m)
    m2 = parse(text, weights=m.weights())
    assert print_module(m2) == text
    out2 = minicc.interpret(m2, exported.feeds)
    for k, a in exported.ours.items():
        np.testing.assert_array_equal(out2[k], a, err_msg=f"{exported.name}: output {k}")


# ---------------------------------------------------------------------------------------------
# Dynamic-batch export


@pytest.fixture(scope="module", params=MODELS)
def dynamic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[str, Path]:
    name = request.param
    path = tmp_path_factory.mktemp(f"{name}_dynamic") / f"{name}_dynamic.onnx"
    _export(name, path, dynamic=True)
    return name, path


def test_dynamic_export_has_shape_arithmetic(dynamic: tuple[str, Path]) -> None:
    name, path = dynamic
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    if name in SHAPE_ARITHMETIC:
        assert {"Shape", "Gather", "Concat"} <= ops, sorted(ops)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[tm.MODELS[name].batch_axis[
        proto.graph.input[0].name]]
    assert batch_dim.dim_param == "batch"


def test_dynamic_symbolic_batch(dynamic: tuple[str, Path]) -> None:
    name, path = dynamic
    m = minicc.import_onnx(path)
    f = m.main
    assert isinstance(f.inputs[0].type.shape[tm.MODELS[name].batch_axis[f.input_names[0]]], str)
    for v, n in zip(f.inputs, f.input_names):
        dim = v.type.shape[tm.MODELS[name].batch_axis[n]]
        assert isinstance(dim, str), f"{n}: batch dim {dim!r} is not symbolic"
    text = print_module(m)
    m2 = parse(text, weights=m.weights())
    assert print_module(m2) == text
    for batch in (1, 3):
        feeds = tm.inputs(name, batch)
        ours = minicc.interpret(m, feeds)
        assert_outputs_close(ours, onnxruntime_outputs(str(path), feeds),
                             f"{name} (symbolic batch, run with {batch}) vs onnxruntime")
        assert_outputs_close(minicc.interpret(m2, feeds), ours,
                             f"{name} (symbolic batch, re-parsed, batch {batch})")


def test_dynamic_compiles_once_and_runs_every_batch(dynamic: tuple[str, Path]) -> None:
    """Compiled without shapes (a DynamicModel), run at three batch sizes against onnxruntime."""
    name, path = dynamic
    dm = minicc.compile(str(path), threads=1)
    assert type(dm).__name__ == "DynamicModel"
    for batch in (1, 3, 2):
        feeds = tm.inputs(name, batch)
        assert_outputs_close(dm.run(feeds), onnxruntime_outputs(str(path), feeds),
                             f"{name} (dynamic, compiled, batch {batch}) vs onnxruntime")
    assert len(dm.specializations) == 3


def test_dynamic_with_static_shapes(dynamic: tuple[str, Path]) -> None:
    name, path = dynamic
    feeds = tm.inputs(name, 2)
    m = minicc.import_onnx(path, input_shapes={k: a.shape for k, a in feeds.items()})
    f = m.main
    for v in f.inputs:
        assert all(isinstance(d, int) for d in v.type.shape), v.type
    for op in f.ops:
        assert op.kind != "shape", f"shape op left in a static graph: {op}"
        for o in op.outputs:
            assert all(isinstance(d, int) for d in o.type.shape), f"{op.kind}: {o.type}"
    ours = minicc.interpret(m, feeds)
    assert_outputs_close(ours, onnxruntime_outputs(str(path), feeds),
                         f"{name} (static batch 2) vs onnxruntime")
    assert_outputs_close(ours, tm.torch_outputs(name, feeds), f"{name} (batch 2) vs torch")
    text = print_module(m)
    assert print_module(parse(text, weights=m.weights())) == text
