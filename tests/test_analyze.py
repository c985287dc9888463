"""`minicc analyze`: FLOPs from the op registry against an independent count made here from the
ONNX graph itself (onnx shape inference and the textbook formulas), on light_resnet50 (the
published figure is ~4.1 GMACs at 224x224) and the BERT-style encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, shape_inference

import minicc
from minicc.cli import main
from minicc.demo import light_model_path
from tests.e2e.examples import example_module, torch_models


def onnx_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-adds of Conv, Gemm and MatMul nodes, from the ONNX graph and inferred shapes."""
    m = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    for n in m.graph.node:
        if n.op_type == "Constant":
            shapes[n.output[0]] = list(numpy_helper.to_array(n.attribute[0].t).shape)
    out = {"conv": 0, "matmul": 0}
    for n in m.graph.node:
        if n.op_type == "Conv":
            w, y = shapes[n.input[1]], shapes[n.output[0]]
            out["conv"] += int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            a, y = shapes[n.input[0]], shapes[n.output[0]]
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            out["matmul"] += int(np.prod(y)) * (a[0] if trans_a else a[1])
        elif n.op_type == "MatMul":
            a, y = shapes[n.input[0]], shapes[n.output[0]]
            out["matmul"] += int(np.prod(y)) * a[-1]
    return out


def test_resnet50_flops_match_the_onnx_graph_and_the_published_count() -> None:
    path = light_model_path("resnet50")
    a = minicc.analyze(path)
    kinds = a.flops_by_kind()
    ref = onnx_macs(onnx.load(path))
    assert kinds["conv"] == 2 * ref["conv"]          # BatchNorm folded: the same convs
    assert kinds["matmul"] == 2 * ref["matmul"]
    assert 4.0e9 < a.total.flops / 2 < 4.2e9          # ~4.1 GMACs
    assert a.total.params == pytest.approx(25.5e6, rel=0.01)
    # kernels cover every op; fused intermediates are not counted as memory traffic
    assert sum(r.cost.flops for r in a.kernels + a.host) == a.total.flops
    assert sum(r.cost.bytes for r in a.kernels) < a.total.bytes


def test_bert_encoder_flops_match_the_onnx_graph(tmp_path: Path) -> None:
    tm = torch_models()
    path = tmp_path / "bert.onnx"
    tm.export("bert_like", path)
    a = minicc.analyze(str(path))
    assert a.flops_by_kind()["matmul"] == 2 * onnx_macs(onnx.load(str(path)))["matmul"]


def test_minilm_encoder_flops_match_the_onnx_graph_and_the_formula(tmp_path: Path) -> None:
    """MiniLM-style, 3 layers, hidden 384, FFN 1536, sequence 64: per layer 4 s h^2 (Q, K, V,
    output projections) + 2 s h f (FFN) + 2 s^2 h (scores and context) multiply-adds."""
    path = tmp_path / "minilm.onnx"
    example_module("deploy_models").export("minilm_like", path)
    a = minicc.analyze(str(path))
    s, h, f, layers = 64, 384, 1536, 3
    macs = layers * (4 * s * h * h + 2 * s * h * f + 2 * s * s * h)
    assert onnx_macs(onnx.load(str(path)))["matmul"] == macs
    assert a.flops_by_kind()["matmul"] == 2 * macs


def test_cli_analyze_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", light_model_path("squeezenet"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total"]["flops"] == sum(k["flops"] for k in d["kernels"] + d["host"])
    k = d["kernels"][0]
    assert set(k) >= {"name", "ops", "flops", "params", "bytes_read", "bytes_written",
                      "intensity"}
    assert main(["analyze", light_model_path("squeezenet")]) == 0
    text = capsys.readouterr().out
    assert "kernels (31):" in text and "GMAC-equivalent" in text   # six concats run none


def test_analyze_needs_static_shapes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tm = torch_models()
    path = tmp_path / "dyn.onnx"
    tm.export("resnet18_like", path, dynamic=True)
    assert main(["analyze", str(path)]) == 2
    assert "analyzing needs static shapes" in capsys.readouterr().err
    assert main(["analyze", str(path), "--input-shape", "x=2,3,64,64"]) == 0
