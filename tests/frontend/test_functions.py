"""ONNX functions inlined at import (frontend/functions.py): a model's local functions, and the
bodies ONNX defines for ops without a converter (Attention, RotaryEmbedding), compiled and
compared with onnx's reference evaluator."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import minicc
from minicc.errors import UnsupportedOpError


def _run_both(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    want = ReferenceEvaluator(m).run(None, feeds)
    got = minicc.compile(m, threads=1, cache=False).run(feeds)
    for vi, w in zip(m.graph.output, want):
        np.testing.assert_allclose(got[vi.name], w, rtol=1e-5, atol=1e-6, err_msg=vi.name)


def test_a_local_function_is_inlined() -> None:
    fn = helper.make_function("my.ops", "ScaledTanh", ["x", "s"], ["y"], [
        helper.make_node("Mul", ["x", "s"], ["xs"]),
        helper.make_node("Tanh", ["xs"], ["y"])], [helper.make_opsetid("", 20)])
    g = helper.make_graph([helper.make_node("ScaledTanh", ["x", "s"], ["y"], domain="my.ops")],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
                                helper.make_tensor_value_info("s", TensorProto.FLOAT, [8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    m = helper.make_model(g, functions=[fn], opset_imports=[
        helper.make_opsetid("", 20), helper.make_opsetid("my.ops", 1)])
    rng = np.random.default_rng(0)
    _run_both(m, {"x": rng.standard_normal((2, 8)).astype(np.float32),
                  "s": rng.standard_normal(8).astype(np.float32)})


@pytest.mark.parametrize("kind", ["causal_gqa_4d", "mask_3d_scaled", "past_and_present"])
def test_attention_expands_to_its_onnx_body_and_matches_the_reference(kind: str) -> None:
    """The opset-23 Attention op: grouped-query heads and causal masking, a float mask on 3-D
    inputs with an explicit scale, and a KV cache (past in, present out)."""
    rng = np.random.default_rng(1)
    b, s, kv = 2, 5, 7
    if kind == "causal_gqa_4d":
        shapes = {"q": (b, 4, s, 8), "k": (b, 2, s, 8), "v": (b, 2, s, 8)}
        node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)
        outs = ["y"]
    elif kind == "mask_3d_scaled":
        shapes = {"q": (b, s, 24), "k": (b, kv, 24), "v": (b, kv, 24), "mask": (s, kv)}
        node = helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"], q_num_heads=3,
                                kv_num_heads=3, scale=0.2)
        outs = ["y"]
    else:
        shapes = {"q": (b, 2, s, 8), "k": (b, 2, s, 8), "v": (b, 2, s, 8),
                  "pk": (b, 2, 3, 8), "pv": (b, 2, 3, 8)}
        node = helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv"],
                                ["y", "present_k", "present_v"])
        outs = ["y", "present_k", "present_v"]
    feeds = {n: rng.standard_normal(sh).astype(np.float32) for n, sh in shapes.items()}
    g = helper.make_graph([node], "att", [helper.make_tensor_value_info(n, TensorProto.FLOAT, sh)
                                          for n, sh in shapes.items()],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                           for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    m = onnx.shape_inference.infer_shapes(m)
    _run_both(m, feeds)


def test_rotary_embedding_expands_and_matches_the_reference() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)         # [b, heads, seq, dim]
    cos = rng.standard_normal((2, 4, 4)).astype(np.float32)          # [b, seq, dim / 2]
    sin = rng.standard_normal((2, 4, 4)).astype(np.float32)
    g = helper.make_graph([helper.make_node("RotaryEmbedding", ["x", "cos", "sin"], ["y"])],
                          "rope", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                                   helper.make_tensor_value_info("cos", TensorProto.FLOAT,
                                                                 cos.shape),
                                   helper.make_tensor_value_info("sin", TensorProto.FLOAT,
                                                                 sin.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    _run_both(m, {"x": x, "cos": cos, "sin": sin})


def test_an_op_with_neither_a_converter_nor_a_function_is_still_named() -> None:
    g = helper.make_graph([helper.make_node("Fancy", ["x"], ["y"], domain="com.example")],
                          "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOpError, match="Fancy"):
        minicc.compile(m, threads=1, cache=False)
