"""Operator fusion (`minicc.ir.passes.fuse.fuse`): which ops share a kernel, which do not and
why, and the group count on a real model."""

from __future__ import annotations

import os

import onnx
import pytest

from minicc.frontend.onnx_import import import_onnx
from minicc.ir.parser import parse
from minicc.ir.passes.fuse import Partition, format_partition, fuse
from minicc.ir.passes.pipeline import run_pipeline

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def partition(text: str) -> Partition:
    return fuse(parse(text).main)


def kinds(p: Partition) -> list[list[str]]:
    return [[op.kind for op in g.ops] for g in p.groups]


def test_conv_bias_residual_relu_is_one_group() -> None:
    p = partition("""
func @main(%x: f32[1,2,5,5], %r: f32[1,3,5,5]) -> (f32[1,3,5,5]) {
  %w = const splat<0.5> : f32[3,2,3,3]
  %b = const dense<[0.1, 0.2, 0.3]> : f32[1,3,1,1]
  %c = conv(%x, %w) {pads=[1, 1, 1, 1]} : f32[1,3,5,5]
  %cb = add(%c, %b) : f32[1,3,5,5]
  %s = add(%cb, %r) : f32[1,3,5,5]
  %y = relu(%s) : f32[1,3,5,5]
  return %y
}""")
    assert kinds(p) == [["conv", "add", "add", "relu"]], format_partition(p, True)
    g = p.groups[0]
    assert g.anchor is not None and g.anchor.kind == "conv"
    assert g.output is p.function.outputs[0]
    assert not p.refusals


def test_matmul_bias_gelu_is_one_group() -> None:
    p = partition("""
func @main(%x: f32[4,8]) -> (f32[4,5]) {
  %w = const splat<0.5> : f32[8,5]
  %b = const dense<[0.1, 0.2, 0.3, 0.4, 0.5]> : f32[5]
  %m = matmul(%x, %w) : f32[4,5]
  %a = add(%m, %b) : f32[4,5]
  %y = gelu(%a) : f32[4,5]
  return %y
}""")
    assert kinds(p) == [["matmul", "add", "gelu"]], format_partition(p, True)


def test_elementwise_chain_fuses() -> None:
    p = partition("""
func @main(%x: f32[4,8], %z: f32[8]) -> (f32[4,8]) {
  %a = exp(%x) : f32[4,8]
  %b = neg(%a) : f32[4,8]
  %c = mul(%b, %x) : f32[4,8]
  %d = add(%c, %z) : f32[4,8]
  %e = tanh(%d) : f32[4,8]
  return %e
}""")
    assert kinds(p) == [["exp", "neg", "mul", "add", "tanh"]], format_partition(p, True)
    assert [v.name_hint for v in p.groups[0].inputs()] == ["x", "z"]


def test_value_with_two_users_is_not_fused_and_the_reason_is_recorded() -> None:
    p = partition("""
func @main(%x: f32[4,8]) -> (f32[4,8], f32[4,8]) {
  %a = exp(%x) : f32[4,8]
  %b = neg(%a) : f32[4,8]
  %c = tanh(%a) : f32[4,8]
  return %b, %c
}""")
    assert kinds(p) == [["exp"], ["neg"], ["tanh"]], format_partition(p, True)
    refused = {(r.producer, r.consumer): r.reason for r in p.refusals}
    assert refused == {("exp %a", "neg %b"): "the value has several users",
                       ("exp %a", "tanh %c"): "the value has several users"}
    text = format_partition(p, explain=True)
    assert "not fused: exp %a -> neg %b: the value has several users" in text


def test_function_output_used_again_is_not_fused() -> None:
    """A value that is a function result must reach memory even with one user."""
    p = partition("""
func @main(%x: f32[4,8]) -> (f32[4,8], f32[4,8]) {
  %a = exp(%x) : f32[4,8]
  %b = neg(%a) : f32[4,8]
  return %a, %b
}""")
    assert kinds(p) == [["exp"], ["neg"]]
    assert [r.reason for r in p.refusals] == ["the value has several users"]


def test_conv_output_used_twice_inside_its_epilogue_fuses() -> None:
    """A diamond (SiLU's x * sigmoid(x)): every user of the conv's output joins one kernel."""
    p = partition("""
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,5,5]) {
  %w = const splat<0.5> : f32[3,2,3,3]
  %c = conv(%x, %w) {pads=[1, 1, 1, 1]} : f32[1,3,5,5]
  %r = relu(%c) : f32[1,3,5,5]
  %s = add(%r, %c) : f32[1,3,5,5]
  return %s
}""")
    assert kinds(p) == [["conv", "relu", "add"]], format_partition(p, True)
    assert not p.refusals


def test_conv_output_used_outside_the_epilogue_keeps_its_own_kernel() -> None:
    p = partition("""
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,5,5], f32[1,3,5,5]) {
  %w = const splat<0.5> : f32[3,2,3,3]
  %c = conv(%x, %w) {pads=[1, 1, 1, 1]} : f32[1,3,5,5]
  %r = relu(%c) : f32[1,3,5,5]
  %s = add(%r, %c) : f32[1,3,5,5]
  %t = neg(%c) : f32[1,3,5,5]
  return %s, %t
}""")
    assert kinds(p) == [["conv"], ["relu", "add"], ["neg"]], format_partition(p, True)
    assert {r.reason for r in p.refusals} == {"the value has several users"}


def test_a_diamond_computes_what_the_interpreter_does() -> None:
    import numpy as np

    import minicc
    from minicc.ir.parser import parse

    m = parse("""
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,5,5]) {
  %w = const splat<0.5> : f32[3,2,3,3]
  %c = conv(%x, %w) {pads=[1, 1, 1, 1]} : f32[1,3,5,5]
  %g = sigmoid(%c) : f32[1,3,5,5]
  %s = mul(%c, %g) : f32[1,3,5,5]
  return %s
}""")
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    cm = minicc.compile(m, threads=1)
    assert [k["ops"] for k in cm.artifact.summary["kernels"]] == [["conv", "sigmoid", "mul"]]
    np.testing.assert_allclose(list(cm.run({"x": x}).values())[0],
                               list(minicc.interpret(m, {"x": x}).values())[0], rtol=1e-5,
                               atol=1e-6)


def test_two_complex_ops_are_separate_and_refusal_says_why() -> None:
    p = partition("""
func @main(%x: f32[4,8]) -> (f32[4,2]) {
  %w1 = const splat<0.5> : f32[8,6]
  %w2 = const splat<0.25> : f32[6,2]
  %a = matmul(%x, %w1) : f32[4,6]
  %b = matmul(%a, %w2) : f32[4,2]
  return %b
}""")
    assert kinds(p) == [["matmul"], ["matmul"]]
    assert [r.reason for r in p.refusals] == ["only elementwise epilogues fuse into a complex op"]


def test_softmax_and_layer_norm_are_one_group_each() -> None:
    p = partition("""
func @main(%x: f32[4,8], %g: f32[8], %h: f32[8], %r: f32[4,8]) -> (f32[4,8], f32[4,8]) {
  %k = const splat<0.125> : f32[4,8]
  %q = mul(%x, %k) : f32[4,8]
  %s = softmax(%q) {axis=-1} : f32[4,8]
  %z = add(%x, %r) : f32[4,8]
  %l = layer_norm(%z, %g, %h) {axis=-1} : f32[4,8]
  %o = relu(%l) : f32[4,8]
  return %s, %o
}""")
    # a reduction absorbs its elementwise producers and takes an elementwise epilogue
    assert kinds(p) == [["mul", "softmax"], ["add", "layer_norm", "relu"]], \
        format_partition(p, True)


def test_two_reductions_do_not_share_a_group() -> None:
    p = partition("""
func @main(%x: f32[4,8]) -> (f32[4,8]) {
  %s = softmax(%x) {axis=-1} : f32[4,8]
  %t = softmax(%s) {axis=0} : f32[4,8]
  return %t
}""")
    assert kinds(p) == [["softmax"], ["softmax"]]
    assert [r.reason for r in p.refusals] == ["one reduction per kernel"]


def test_every_op_is_in_exactly_one_group() -> None:
    p = partition("""
func @main(%x: f32[1,2,5,5], %r: f32[1,3,5,5]) -> (f32[1,3,5,5], f32[1,3]) {
  %w = const splat<0.5> : f32[3,2,3,3]
  %c = conv(%x, %w) {pads=[1, 1, 1, 1]} : f32[1,3,5,5]
  %y = relu(%c) : f32[1,3,5,5]
  %e = exp(%y) : f32[1,3,5,5]
  %m = reduce_mean(%e) {axes=[2, 3], keepdims=false} : f32[1,3]
  %s = add(%y, %r) : f32[1,3,5,5]
  return %s, %m
}""")
    seen = [op for g in p.groups for op in g.ops]
    non_const = [op for op in p.function.ops if op.kind != "const"]
    assert len(seen) == len(non_const) and set(map(id, seen)) == set(map(id, non_const))


@pytest.fixture(scope="module")
def resnet50_partition() -> Partition:
    path = os.path.join(LIGHT, "light_resnet50.onnx")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not shipped with this onnx")
    return fuse(run_pipeline(import_onnx(path), 3).main)


def test_light_resnet50_group_count(resnet50_partition: Partition) -> None:
    p = resnet50_partition
    groups = [g for g in p.groups if not g.is_view]
    anchors = [g.anchor.kind for g in groups if g.anchor is not None]
    assert 53 <= len(groups) <= 60, (f"{len(groups)} non-view groups (expected 53..60: one per "
                                     f"conv plus pool/gemm/softmax)\n"
                                     + format_partition(p))
    assert anchors.count("conv") == 53, anchors
    # every batch_norm was folded into its conv and every residual add/relu fused as epilogue
    fused_kinds = {op.kind for g in groups for op in g.ops}
    assert "batch_norm" not in fused_kinds
    assert all(g.anchor is not None or g.root.kind in ("max_pool", "avg_pool", "softmax",
                                                       "reduce_mean", "relu", "add")
               for g in groups), format_partition(p)
