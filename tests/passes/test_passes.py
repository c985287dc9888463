"""Graph passes: every pass keeps the semantics of random modules (hypothesis), and each rewrite
does what it promises on a small IR text (before -> after)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Module, Value
from minicc.ir.interpret import interpret
from minicc.ir.parser import parse
from minicc.ir.passes.pipeline import PASSES, PIPELINES, run_passes
from minicc.ir.printer import print_module
from minicc.ir.verify import verify_module
from tests.property.strategies import inputs_for, modules

# ---------------------------------------------------------------------------------------------
# Property: every pass preserves semantics and leaves a verifiable module


def assert_same_results(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{what}: {k}"
        # passes only remove identities, reuse values and fold constants with the same numpy
        # reference the interpreter uses; a reassociation would be the only source of rounding
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6, err_msg=f"{what}: {k}")


@st.composite
def safe_modules(draw: st.DrawFn, max_ops: int) -> Module:
    """`modules()`, skipping the draws where it asks for a reduction axis of a rank-0 value
    (tests/property/strategies.py draws st.integers(0, rank - 1) after a keepdims=False
    reduction made a scalar, which hypothesis rejects as an invalid argument)."""
    try:
        return draw(modules(max_ops=max_ops))
    except InvalidArgument:
        assume(False)
        raise


@pytest.mark.parametrize("pass_name", sorted(PASSES))
@given(m=safe_modules(max_ops=10))
def test_pass_preserves_semantics(pass_name: str, m: Module) -> None:
    after = Module((PASSES[pass_name](m.main),))
    verify_module(after)
    x = inputs_for(m)
    assert_same_results(interpret(after, x), interpret(m, x), pass_name)


@given(m=safe_modules(max_ops=10))
def test_full_pipeline_preserves_semantics(m: Module) -> None:
    after = run_passes(m, PIPELINES[3], verify_each=True)
    x = inputs_for(m, batch=3)
    assert_same_results(interpret(after, x), interpret(m, x), "pipeline O3")


@st.composite
def redundant_modules(draw: st.DrawFn) -> Module:
    """A random module (tests/property/strategies.py) extended with what the passes rewrite:
    x*1, 0+x, identity reshapes, transpose pairs, duplicated ops, transposed constants,
    batch_norm (alone or after a 1x1 conv with constant weights) and per-channel mul/add."""
    m = draw(safe_modules(max_ops=6))
    f = m.main
    b = GraphBuilder("main")
    b.inputs, b.input_names = list(f.inputs), list(f.input_names)
    for op in f.ops:
        b.add(op)
    vals: list[Value] = list(f.outputs)
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    for _ in range(draw(st.integers(1, 6))):
        v = draw(st.sampled_from(vals))
        shape = v.type.shape
        cshape = tuple(d if isinstance(d, int) else 1 for d in shape)
        k = draw(st.integers(0, 7))
        if k == 0:
            r = b.op1("mul", [v, b.const(np.ones(cshape, np.float32))])
        elif k == 1:
            r = b.op1("add", [b.const(np.float32(0.0)), v])
        elif k == 2 and v.type.is_static:
            r = b.op1("reshape", [v], {"shape": list(shape)})
        elif k == 3 and v.type.rank >= 2:
            p = draw(st.permutations(list(range(v.type.rank))))
            q = draw(st.permutations(list(range(v.type.rank))))
            r = b.op1("transpose", [b.op1("transpose", [v], {"perm": list(p)})],
                      {"perm": list(q)})
        elif k == 4:
            r = b.op1("add", [b.op1("tanh", [v]), b.op1("tanh", [v])])
        elif k == 5 and v.type.rank >= 2:
            p = list(draw(st.permutations(list(range(v.type.rank)))))
            inv = [p.index(i) for i in range(len(p))]
            c = b.const(rng.standard_normal([cshape[i] for i in p]).astype(np.float32))
            r = b.op1("mul", [v, b.op1("transpose", [c], {"perm": inv})])
        elif k in (6, 7) and v.type.rank >= 2 and isinstance(shape[1], int):
            x = v
            ch = shape[1]
            if k == 7 and v.type.rank == 4:
                ch = draw(st.integers(1, 4))
                w = b.const(rng.standard_normal((ch, shape[1], 1, 1)).astype(np.float32))
                x = b.op1("conv", [v, w])
            vec = [rng.uniform(0.5, 1.5, ch).astype(np.float32) for _ in range(4)]
            if draw(st.booleans()):
                r = b.op1("batch_norm", [x] + [b.const(a) for a in vec])
            else:
                cs = (1, ch) + (1,) * (x.type.rank - 2)
                r = b.op1("add", [b.op1("mul", [x, b.const(vec[0].reshape(cs))]),
                                  b.const(vec[1].reshape(cs))])
        else:
            continue
        vals.append(r)
    outs = vals[-draw(st.integers(1, min(2, len(vals)))):]
    return Module((b.finish(outs, [f"out{i}" for i in range(len(outs))]),))


@pytest.mark.parametrize("pass_name", sorted(PASSES))
@given(m=redundant_modules())
def test_pass_preserves_semantics_with_redundancy(pass_name: str, m: Module) -> None:
    verify_module(m)
    after = Module((PASSES[pass_name](m.main),))
    verify_module(after)
    x = inputs_for(m)
    a, b = interpret(after, x), interpret(m, x)
    assert a.keys() == b.keys()
    for k in a:
        # folding BN into conv weights rounds differently: relative to the output's scale
        scale = max(1.0, float(np.nanmax(np.abs(b[k]), initial=0.0)))
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5 * scale,
                                   err_msg=f"{pass_name}: {k}")


# ---------------------------------------------------------------------------------------------
# Before/after unit tests


def run(names: str | list[str], text: str) -> Module:
    m = parse(text)
    verify_module(m)
    out = run_passes(m, [names] if isinstance(names, str) else names, verify_each=True)
    return out


def canon(text: str) -> str:
    """IR text as the printer writes it (so expected texts can be written loosely)."""
    return print_module(parse(text))


def assert_ir(m: Module, expected: str) -> None:
    assert print_module(m) == canon(expected), print_module(m)


def check_semantics(before: str, after: Module, seed: int = 0, tol: float = 1e-6) -> None:
    m = parse(before)
    x = inputs_for(m, seed=seed)
    a, b = interpret(m, x), interpret(after, x)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=tol, atol=tol, err_msg=k)


FOLD_TRANSPOSE = """
func @main(%x: f32[2,3]) -> (f32[3,2]) {
  %w = const dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]> : f32[2,3]
  %t = transpose(%w) {perm=[1, 0]} : f32[3,2]
  %a = transpose(%x) {perm=[1, 0]} : f32[3,2]
  %y = add(%a, %t) : f32[3,2]
  return %y
}"""


def test_fold_constants_transpose_of_constant_disappears() -> None:
    m = run(["fold_constants", "dce"], FOLD_TRANSPOSE)
    assert_ir(m, """
func @main(%x: f32[2,3]) -> (f32[3,2]) {
  %t = const dense<[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]> : f32[3,2]
  %a = transpose(%x) {perm=[1, 0]} : f32[3,2]
  %y = add(%a, %t) : f32[3,2]
  return %y
}""")
    check_semantics(FOLD_TRANSPOSE, m)


def test_fold_constants_big_weight_and_chain() -> None:
    """A blob weight (not inlined) transposed then scaled folds to one new blob."""
    w = np.arange(40, dtype=np.float32).reshape(5, 8)
    text = """
func @main(%x: f32[4,8]) -> (f32[4,5]) {
  %w = const blob<"W"> : f32[5,8]
  %t = transpose(%w) {perm=[1, 0]} : f32[8,5]
  %two = const dense<2.0> : f32[]
  %s = mul(%t, %two) : f32[8,5]
  %y = matmul(%x, %s) : f32[4,5]
  return %y
}"""
    from minicc.ir.graph import ConstData

    digest = ConstData(w).digest
    text = text.replace('"W"', f'"{digest}"')
    m = parse(text, weights={digest: w})
    out = run_passes(m, ["fold_constants", "dce"], verify_each=True)
    kinds = [op.kind for op in out.main.ops]
    assert kinds == ["const", "matmul"], print_module(out)
    folded = out.main.ops[0].attrs["value"].array
    np.testing.assert_array_equal(folded, w.T * 2)
    x = inputs_for(m)
    np.testing.assert_allclose(interpret(out, x)["y"], interpret(m, x)["y"], rtol=1e-6)


DCE = """
func @main(%x: f32[4]) -> (f32[4]) {
  %a = exp(%x) : f32[4]
  %c = const dense<[1.0, 2.0, 3.0, 4.0]> : f32[4]
  %d = mul(%a, %c) : f32[4]
  %b = relu(%x) : f32[4]
  return %b
}"""


def test_dce_removes_unused_ops_and_constants() -> None:
    m = run("dce", DCE)
    assert_ir(m, """
func @main(%x: f32[4]) -> (f32[4]) {
  %b = relu(%x) : f32[4]
  return %b
}""")
    check_semantics(DCE, m)


def test_dce_keeps_everything_live() -> None:
    text = """
func @main(%x: f32[4]) -> (f32[4], f32[4]) {
  %a = exp(%x) : f32[4]
  %b = relu(%a) : f32[4]
  return %a, %b
}"""
    m = parse(text)
    assert PASSES["dce"](m.main) is m.main   # nothing to do: the same function comes back


CSE = """
func @main(%x: f32[4]) -> (f32[4]) {
  %a = exp(%x) : f32[4]
  %b = exp(%x) : f32[4]
  %c = add(%a, %b) : f32[4]
  return %c
}"""


def test_cse_two_identical_exps_become_one() -> None:
    m = run("cse", CSE)
    assert_ir(m, """
func @main(%x: f32[4]) -> (f32[4]) {
  %a = exp(%x) : f32[4]
  %c = add(%a, %a) : f32[4]
  return %c
}""")
    check_semantics(CSE, m)


def test_cse_respects_attributes_and_merges_equal_constants() -> None:
    text = """
func @main(%x: f32[2,3]) -> (f32[2,3], f32[2,3]) {
  %k1 = const dense<[1.0, 2.0, 3.0]> : f32[3]
  %k2 = const dense<[1.0, 2.0, 3.0]> : f32[3]
  %a = leaky_relu(%x) {alpha=0.1} : f32[2,3]
  %b = leaky_relu(%x) {alpha=0.2} : f32[2,3]
  %c = mul(%a, %k1) : f32[2,3]
  %d = mul(%a, %k2) : f32[2,3]
  %e = add(%c, %b) : f32[2,3]
  %f = add(%d, %b) : f32[2,3]
  return %e, %f
}"""
    m = run(["cse", "dce"], text)
    assert_ir(m, """
func @main(%x: f32[2,3]) -> (f32[2,3] {name="e"}, f32[2,3] {name="f"}) {
  %k1 = const dense<[1.0, 2.0, 3.0]> : f32[3]
  %a = leaky_relu(%x) {alpha=0.1} : f32[2,3]
  %b = leaky_relu(%x) {alpha=0.2} : f32[2,3]
  %c = mul(%a, %k1) : f32[2,3]
  %e = add(%c, %b) : f32[2,3]
  return %e, %e
}""")
    check_semantics(text, m)


SIMPLIFY_IDENTITIES = """
func @main(%x: f32[2,3,4]) -> (f32[2,3,4], f32[2,3,4], f32[4,2,3], f32[2,3,4], f32[2,3,4]) {
  %r = reshape(%x) {shape=[2, 3, 4]} : f32[2,3,4]
  %t1 = transpose(%x) {perm=[1, 2, 0]} : f32[3,4,2]
  %t2 = transpose(%t1) {perm=[2, 0, 1]} : f32[2,3,4]
  %t3 = transpose(%t1) {perm=[1, 2, 0]} : f32[4,2,3]
  %one = const splat<1.0> : f32[2,3,4]
  %m = mul(%x, %one) : f32[2,3,4]
  %z = const dense<0.0> : f32[]
  %s = add(%z, %x) : f32[2,3,4]
  return %r, %t2, %t3, %m, %s
}"""


def test_simplify_identities() -> None:
    """reshape to the same shape, transpose o transpose (identity and not), x*1, 0+x."""
    m = run(["simplify", "dce"], SIMPLIFY_IDENTITIES)
    assert_ir(m, """
func @main(%x: f32[2,3,4]) -> (f32[2,3,4] {name="r"}, f32[2,3,4] {name="t2"}, f32[4,2,3],
                               f32[2,3,4] {name="m"}, f32[2,3,4] {name="s"}) {
  %t3 = transpose(%x) {perm=[2, 0, 1]} : f32[4,2,3]
  return %x, %x, %t3, %x, %x
}""")
    check_semantics(SIMPLIFY_IDENTITIES, m)


def test_simplify_keeps_non_identities() -> None:
    text = """
func @main(%x: f32[2,3]) -> (f32[3,2], f32[2,3]) {
  %r = reshape(%x) {shape=[3, 2]} : f32[3,2]
  %two = const splat<2.0> : f32[2,3]
  %m = mul(%x, %two) : f32[2,3]
  return %r, %m
}"""
    m = run("simplify", text)
    assert print_module(m) == canon(text)


def test_simplify_reshape_of_reshape() -> None:
    text = """
func @main(%x: f32[2,3,4]) -> (f32[4,6]) {
  %a = reshape(%x) {shape=[6, 4]} : f32[6,4]
  %b = reshape(%a) {shape=[4, 6]} : f32[4,6]
  return %b
}"""
    m = run(["simplify", "dce"], text)
    assert_ir(m, """
func @main(%x: f32[2,3,4]) -> (f32[4,6]) {
  %b = reshape(%x) {shape=[4, 6]} : f32[4,6]
  return %b
}""")
    check_semantics(text, m)


CONV_PAD = """
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,7,5]) {
  %p = pad(%x) {pads=[0, 0, 1, 0, 0, 0, 1, 0]} : f32[1,2,7,5]
  %w = const splat<0.5> : f32[3,2,3,3]
  %c = conv(%p, %w) {pads=[1, 1, 1, 1]} : f32[1,3,7,5]
  return %c
}"""


def test_simplify_conv_of_zero_pad_takes_the_pads() -> None:
    m = run(["simplify", "dce"], CONV_PAD)
    assert_ir(m, """
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,7,5]) {
  %w = const splat<0.5> : f32[3,2,3,3]
  %c = conv(%x, %w) {pads=[2, 1, 2, 1]} : f32[1,3,7,5]
  return %c
}""")
    check_semantics(CONV_PAD, m, tol=1e-5)


def test_simplify_keeps_nonzero_or_reflect_pad_before_conv() -> None:
    for attrs in ('{pads=[0, 0, 1, 1, 0, 0, 1, 1], value=1.0}',
                  '{mode="reflect", pads=[0, 0, 1, 1, 0, 0, 1, 1]}'):
        text = f"""
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,5,5]) {{
  %p = pad(%x) {attrs} : f32[1,2,7,7]
  %w = const splat<0.5> : f32[3,2,3,3]
  %c = conv(%p, %w) : f32[1,3,5,5]
  return %c
}}"""
        m = run("simplify", text)
        assert [op.kind for op in m.main.ops] == ["pad", "const", "conv"], attrs


# fold_batch_norm ------------------------------------------------------------------------------

MASK = re.compile(r"const (dense|splat|blob)<[^>]*>")


def structure(m: Module) -> str:
    """The IR text with constant data masked (the folded weights are checked numerically)."""
    return MASK.sub("const <data>", print_module(m))


CONV_BN = """
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,5,5]) {
  %w = const dense<[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]> : f32[3,2,1,1]
  %b = const dense<[0.5, -0.5, 1.0]> : f32[3]
  %s = const dense<[1.5, 0.5, 2.0]> : f32[3]
  %t = const dense<[0.1, 0.2, 0.3]> : f32[3]
  %mu = const dense<[0.0, 1.0, -1.0]> : f32[3]
  %var = const dense<[1.0, 0.5, 2.0]> : f32[3]
  %c = conv(%x, %w, %b) : f32[1,3,5,5]
  %y = batch_norm(%c, %s, %t, %mu, %var) {epsilon=0.001} : f32[1,3,5,5]
  return %y
}"""


def test_fold_batch_norm_into_conv() -> None:
    m = run(["fold_batch_norm", "dce"], CONV_BN)
    assert structure(m) == MASK.sub("const <data>", canon("""
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,5,5]) {
  %w_folded = const dense<[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]> : f32[3,2,1,1]
  %w_bias = const dense<[0.0, 0.0, 0.0]> : f32[3]
  %y = conv(%x, %w_folded, %w_bias) : f32[1,3,5,5]
  return %y
}""")), print_module(m)
    # the new weights are the closed form w * s / sqrt(v + eps), (b - mu) * s / sqrt(v + eps) + t
    w = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).reshape(3, 2, 1, 1)
    b, s, t = np.array([0.5, -0.5, 1.0]), np.array([1.5, 0.5, 2.0]), np.array([0.1, 0.2, 0.3])
    mu, var = np.array([0.0, 1.0, -1.0]), np.array([1.0, 0.5, 2.0])
    scale = s / np.sqrt(var + 1e-3)
    consts = [op.attrs["value"].array for op in m.main.ops if op.kind == "const"]
    np.testing.assert_allclose(consts[0], w * scale.reshape(3, 1, 1, 1), rtol=1e-6)
    np.testing.assert_allclose(consts[1], (b - mu) * scale + t, rtol=1e-6)
    check_semantics(CONV_BN, m, tol=1e-5)


def test_fold_batch_norm_into_3x3_conv_blob_weights() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    from minicc.ir.graph import ConstData

    d = ConstData(w).digest
    text = f"""
func @main(%x: f32[2,3,6,6]) -> (f32[2,4,6,6]) {{
  %w = const blob<"{d}"> : f32[4,3,3,3]
  %s = const dense<[1.5, 0.5, 2.0, -1.0]> : f32[4]
  %t = const dense<[0.1, 0.2, 0.3, 0.4]> : f32[4]
  %mu = const dense<[0.0, 1.0, -1.0, 0.5]> : f32[4]
  %var = const dense<[1.0, 0.5, 2.0, 0.25]> : f32[4]
  %c = conv(%x, %w) {{pads=[1, 1, 1, 1]}} : f32[2,4,6,6]
  %y = batch_norm(%c, %s, %t, %mu, %var) : f32[2,4,6,6]
  return %y
}}"""
    m = parse(text, weights={d: w})
    out = run_passes(m, ["fold_batch_norm", "dce"], verify_each=True)
    assert [op.kind for op in out.main.ops] == ["const", "const", "conv"], print_module(out)
    x = inputs_for(m, seed=1)
    np.testing.assert_allclose(interpret(out, x)["y"], interpret(m, x)["y"], rtol=1e-5,
                               atol=1e-5)


BN_ALONE = """
func @main(%x: f32[1,3,4]) -> (f32[1,3,4]) {
  %s = const dense<[1.5, 0.5, 2.0]> : f32[3]
  %t = const dense<[0.1, 0.2, 0.3]> : f32[3]
  %mu = const dense<[0.0, 1.0, -1.0]> : f32[3]
  %var = const dense<[1.0, 0.5, 2.0]> : f32[3]
  %y = batch_norm(%x, %s, %t, %mu, %var) : f32[1,3,4]
  return %y
}"""


def test_fold_batch_norm_without_conv_becomes_mul_add() -> None:
    m = run(["fold_batch_norm", "dce"], BN_ALONE)
    assert structure(m) == MASK.sub("const <data>", canon("""
func @main(%x: f32[1,3,4]) -> (f32[1,3,4]) {
  %y_s = const dense<[0.0, 0.0, 0.0]> : f32[3,1]
  %y_t = const dense<[0.0, 0.0, 0.0]> : f32[3,1]
  %0 = mul(%x, %y_s) : f32[1,3,4]
  %y = add(%0, %y_t) : f32[1,3,4]
  return %y
}""")), print_module(m)
    check_semantics(BN_ALONE, m, tol=1e-5)


CONV_MUL_ADD = """
func @main(%x: f32[1,2,5,5]) -> (f32[1,3,5,5]) {
  %w = const dense<[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]> : f32[3,2,1,1]
  %s = const dense<[1.5, 0.5, 2.0]> : f32[1,3,1,1]
  %t = const dense<[0.1, 0.2, 0.3]> : f32[3,1,1]
  %c = conv(%x, %w) : f32[1,3,5,5]
  %m = mul(%c, %s) : f32[1,3,5,5]
  %y = add(%t, %m) : f32[1,3,5,5]
  return %y
}"""


def test_fold_per_channel_mul_and_add_into_conv() -> None:
    m = run(["fold_batch_norm", "dce"], CONV_MUL_ADD)
    assert [op.kind for op in m.main.ops] == ["const", "const", "conv"], print_module(m)
    consts = [op.attrs["value"].array for op in m.main.ops if op.kind == "const"]
    w = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).reshape(3, 2, 1, 1)
    np.testing.assert_allclose(consts[0], w * np.array([1.5, 0.5, 2.0]).reshape(3, 1, 1, 1),
                               rtol=1e-6)
    np.testing.assert_allclose(consts[1], [0.1, 0.2, 0.3], rtol=1e-6)
    check_semantics(CONV_MUL_ADD, m, tol=1e-5)


def test_fold_batch_norm_leaves_conv_with_two_users() -> None:
    """The conv's output is also returned: folding would change that output."""
    text = CONV_BN.replace("-> (f32[1,3,5,5])", "-> (f32[1,3,5,5], f32[1,3,5,5])").replace(
        "return %y", "return %y, %c")
    m = run("fold_batch_norm", text)
    kinds = [op.kind for op in m.main.ops]
    assert kinds.count("conv") == 1 and "batch_norm" not in kinds
    assert "mul" in kinds and "add" in kinds, print_module(m)
    check_semantics(text, m, tol=1e-5)


def test_fold_batch_norm_ignores_non_channel_constants() -> None:
    """A mul by a constant varying along the spatial axes is not a per-channel scale."""
    text = """
func @main(%x: f32[1,2,3,3]) -> (f32[1,3,3,3]) {
  %w = const dense<[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]> : f32[3,2,1,1]
  %s = const dense<[1.0, 2.0, 3.0]> : f32[3]
  %c = conv(%x, %w) : f32[1,3,3,3]
  %m = mul(%c, %s) : f32[1,3,3,3]
  return %m
}"""
    m = run("fold_batch_norm", text)
    assert [op.kind for op in m.main.ops if op.kind != "const"] == ["conv", "mul"]
    check_semantics(text, m)


def test_the_suite_verifies_after_every_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile() runs the verifier between passes in tests (conftest sets MINICC_VERIFY_EACH):
    a pass that breaks the IR is caught at once and named."""
    import os

    from minicc import compile
    from minicc.errors import VerificationError
    from minicc.ir.graph import Function

    assert os.environ.get("MINICC_VERIFY_EACH") == "1"
    m = parse("func @main(%x: f32[4]) -> (f32[4]) {\n  %y = exp(%x) : f32[4]\n  return %y\n}")

    def broken(f: Function) -> Function:   # forgets the op that defines the output
        return Function(f.name, f.inputs, (), f.outputs, f.input_names, f.output_names)
    monkeypatch.setitem(PASSES, "cse", broken)
    with pytest.raises(VerificationError, match="after pass 'cse'"):
        compile(m, cache=False)
