"""The program's four stages, each on its own: place_tensors, lower_groups, plan_arena and
bind_steps; every location they produce is a typed, resolved value."""

from __future__ import annotations

import numpy as np
import pytest

from minicc.abi import HostCall, Location, LocKind
from minicc.codegen.llvm.target import cpu_target
from minicc.errors import ArtifactError
from minicc.ir.loops.cpu import lower_group_cpu
from minicc.ir.memory import check_plan
from minicc.ir.parser import parse
from minicc.ir.passes.fuse import fuse
from minicc.ir.loops.nodes import Store, walk
from minicc.ir.program import (KernelStep, LoweredGroup, WeightsBlob, bind_steps, build_program,
                               lower_groups, place_tensors, plan_arena)
from minicc.options import CompileOptions

# kernels exp, neg, conv+tanh+add (the residual add may write over e, which dies there), a
# reshape view of an input returned as an output, an input returned as it is, a host op (top_k)
TEXT = """func @main(%x: f32[1,4,6,6], %r: f32[1,4,6,6])
    -> (f32[1,4,6,6], f32[1,144], i64[1,2,6,6]) {
  %w = const splat<0.5> : f32[4,4,3,3]
  %e = exp(%r) : f32[1,4,6,6]
  %n = neg(%e) : f32[1,4,6,6]
  %c = conv(%x, %w) {pads=[1,1,1,1]} : f32[1,4,6,6]
  %t = tanh(%c) : f32[1,4,6,6]
  %s = add(%t, %e) : f32[1,4,6,6]
  %v = reshape(%x) {shape=[1,144]} : f32[1,144]
  %k, %i = top_k(%s) {axis=1, k=2} : f32[1,2,6,6], i64[1,2,6,6]
  return %n, %v, %i
}"""


@pytest.fixture
def places():  # type: ignore[no-untyped-def]
    f = parse(TEXT).main
    return place_tensors(f, fuse(f))


def _stage2(places):  # type: ignore[no-untyped-def]
    return lower_groups(places, lower_group_cpu, cpu_target(), CompileOptions(threads=2))


def test_place_tensors(places) -> None:  # type: ignore[no-untyped-def]
    f = places.function
    x, r = f.inputs
    n, v, i = f.outputs
    assert places.fixed[x] == Location(LocKind.INPUT, 0)
    assert places.storage(v) is x                  # a view: its source owns the storage
    assert places.fixed[n] == Location(LocKind.OUTPUT, 0)
    assert places.fixed[i] == Location(LocKind.OUTPUT, 2)
    assert x not in places.arena and all(a not in places.fixed for a in places.arena)
    for a in places.arena:
        assert places.first[a] <= places.last[a]


def test_lower_groups_binds_every_parameter(places) -> None:  # type: ignore[no-untyped-def]
    steps = _stage2(places)
    kernels = [s for s in steps if isinstance(s, LoweredGroup)]
    assert len(kernels) + sum(1 for s in steps if not isinstance(s, LoweredGroup)) == \
        len(places.order)
    for st in kernels:
        assert len(st.binds) == len(st.kernel.params)
        for b, bind in zip(st.kernel.params, st.binds):
            assert bind is None or isinstance(bind, np.ndarray) or bind in places.root \
                or bind in st.group.inputs() or bind is st.group.output, b.name


def test_plan_arena_puts_the_residual_add_in_place(places) -> None:  # type: ignore
    steps = _stage2(places)
    arena = plan_arena(places, steps, 2, 64)
    check_plan(arena.plan)
    add = next(s for s in steps if isinstance(s, LoweredGroup) and s.group.root.kind == "add")
    e = next(v for v in add.group.inputs() if v.name_hint == "e")
    assert arena.offset[add.group.output] == arena.offset[e]     # in place: e dies here
    assert all(off % 64 == 0 for off in arena.offset.values())


def test_bind_steps_resolves_every_location(places) -> None:  # type: ignore[no-untyped-def]
    steps = _stage2(places)
    arena = plan_arena(places, steps, 2, 64)
    blob = WeightsBlob(64)
    out, sources = bind_steps(places, steps, arena, blob)
    assert [type(s) for s in out].count(HostCall) == 1
    host = next(s for s in out if isinstance(s, HostCall))
    assert host.op == "top_k" and [t.dtype for t in host.outputs] == ["f32", "i64"]
    for st in out:
        locs = st.args if isinstance(st, KernelStep) else [t.loc for t in st.inputs + st.outputs]
        for loc in locs:
            assert isinstance(loc, Location) and isinstance(loc.kind, LocKind)
            if loc.kind == LocKind.ARENA:
                assert loc.offset < arena.plan.arena_bytes
            if loc.kind == LocKind.WEIGHTS:
                assert loc.offset < blob.size == len(blob.data())
    assert sources == (Location(LocKind.OUTPUT, 0), Location(LocKind.INPUT, 0),   # v: copied
                       Location(LocKind.OUTPUT, 2))


def test_weights_are_stored_once_and_aligned() -> None:
    blob = WeightsBlob(64)
    f = parse(TEXT).main
    a, b = f.inputs
    la = blob.add(a, np.ones(3, np.float32))
    lb = blob.add(b, np.ones(5, np.float32))
    assert blob.add(a, np.ones(3, np.float32)) == la
    assert la.offset == 0 and lb.offset == 64 and blob.size == 64 + 20
    assert blob.data() == np.ones(3, np.float32).tobytes() + bytes(52) + np.ones(5, np.float32).tobytes()


def test_packed_panels_are_stored_once_by_content() -> None:
    from minicc.ir.loops.nodes import Buffer
    from minicc.ir.types import DType

    blob = WeightsBlob(64)
    w = np.arange(40, dtype=np.float32).reshape(2, 20)
    p1, p2, p3 = (Buffer(f"w{i}", DType.F32, (2, 20)) for i in range(3))
    l1 = blob.add(p1, w)
    assert blob.add(p2, w.copy()) == l1                     # equal content: one copy
    l3 = blob.add(p3, w + 1)
    assert l3.offset == 192 and blob.size == 192 + 160      # 160 bytes, then aligned to 64
    data = blob.data()
    assert data[:160] == w.tobytes() and data[192:] == (w + 1).tobytes()


def test_a_location_is_never_a_placeholder() -> None:
    with pytest.raises(ArtifactError):
        Location(LocKind.ARENA, -1)
    with pytest.raises(ArtifactError):
        Location("arena", 0)  # type: ignore[arg-type]
    assert Location.from_json(Location(LocKind.WEIGHTS, 128).to_json()) == \
        Location(LocKind.WEIGHTS, 128)


def test_build_program_runs_the_four_stages() -> None:
    f = parse(TEXT).main
    prog = build_program(f, lower_group_cpu, cpu_target(), CompileOptions(threads=1))
    assert [k.name for k in prog.kernels] == ["k0_exp", "k1_neg", "k2_add"]
    assert prog.host_ops == ["top_k"]
    assert all(k.schedule for k in prog.kernels)
    check_plan(prog.memory)


def test_the_program_runs_as_the_interpreter_says() -> None:
    from minicc import compile
    from minicc.ir.interpret import interpret

    m = parse(TEXT)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32),
             "r": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)}
    ref = interpret(m, feeds)
    got = compile(m, threads=2, cache=False).run(feeds)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_a_residual_add_after_k_blocks_is_not_in_place() -> None:
    """A conv whose K (96 x 3 x 3) spans several K blocks stores partial sums to its output
    before the epilogue reads the residual: writing over the residual would corrupt it. (A
    10x10 map: over 64 pixels or fewer, or with K up to ONE_K_BLOCK, the default takes the
    whole K in one block.)"""
    from minicc.ir.loops.gemm import ONE_K_BLOCK

    assert 96 * 9 > ONE_K_BLOCK
    text = """func @main(%x: f32[1,96,10,10], %r: f32[1,4,10,10]) -> (f32[1,4,10,10], i64[1,2,10,10]) {
  %w = const splat<0.5> : f32[4,96,3,3]
  %e = exp(%r) : f32[1,4,10,10]
  %n = neg(%e) : f32[1,4,10,10]
  %c = conv(%x, %w) {pads=[1,1,1,1]} : f32[1,4,10,10]
  %s = add(%c, %e) : f32[1,4,10,10]
  %k, %i = top_k(%s) {axis=1, k=2} : f32[1,2,10,10], i64[1,2,10,10]
  return %n, %i
}"""
    f = parse(text).main
    pl = place_tensors(f, fuse(f))
    steps = lower_groups(pl, lower_group_cpu, cpu_target(), CompileOptions(threads=1))
    add = next(s for s in steps if isinstance(s, LoweredGroup) and s.group.anchor is not None)
    out = add.kernel.params[[r for r in add.kernel.roles].index("out")]
    assert add.group.anchor.kind == "conv" and sum(
        1 for st in walk(add.kernel.body) if isinstance(st, Store) and st.buf is out) > 1
    arena = plan_arena(pl, steps, 1, 64)
    e = next(v for v in add.group.inputs() if v.name_hint == "e")
    assert arena.offset[add.group.output] != arena.offset[e]


# convs (each its own kernel) feeding a concat read by a conv (a fire module's shape); `c`
# is also read by an add, so it keeps its own storage and its concat its kernel
CONCAT = """func @main(%x: f32[B,4,6,6]) -> (f32[B,4,6,6], f32[B,4,6,6], f32[B,4,6,6]) {
  %w1 = const splat<0.25> : f32[4,4,3,3]
  %w2 = const splat<-0.5> : f32[4,4,1,1]
  %w3 = const splat<0.125> : f32[4,4,1,1]
  %w4 = const splat<0.0625> : f32[4,8,1,1]
  %a = conv(%x, %w1) {pads=[1,1,1,1]} : f32[B,4,6,6]
  %b = conv(%x, %w2) : f32[B,4,6,6]
  %c = conv(%x, %w3) : f32[B,4,6,6]
  %ab = concat(%a, %b) {axis=1} : f32[B,8,6,6]
  %bc = concat(%b, %c) {axis=1} : f32[B,8,6,6]
  %r = conv(%ab, %w4) : f32[B,4,6,6]
  %t = conv(%bc, %w4) : f32[B,4,6,6]
  %z = add(%c, %x) : f32[B,4,6,6]
  return %r, %t, %z
}"""


def _concat_places(text: str, align: int = 64):  # type: ignore[no-untyped-def]
    f = parse(text).main
    return f, place_tensors(f, fuse(f), align)


def _cats(text: str, align: int = 64) -> int:
    return sum(1 for g in _concat_places(text, align)[1].order if g.root.kind == "concat")


def test_concat_inputs_are_computed_into_their_slices() -> None:
    """Each input of a concat along channels (batch 1) that only the concat reads is written
    by its producer straight into its slice of the output: that concat runs no kernel, the
    slices are at the inputs' byte offsets, and the results equal the interpreter's."""
    import minicc

    text = CONCAT.replace("B,", "1,").replace("concat(%b, %c)", "concat(%c, %c)")
    f, pl = _concat_places(text)
    v = {x.name_hint: x for op in f.ops for x in op.outputs}
    assert pl.sub_offset(v["a"]) == (v["ab"], 0)
    assert pl.sub_offset(v["b"]) == (v["ab"], 4 * 36 * 4)
    assert v["c"] not in pl.sub and v["ab"] in pl.arena
    assert _cats(text) == 1                      # concat(%c, %c): c twice, read by the add
    m = parse(text)
    x = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32)
    got, ref = minicc.compile(m, threads=1, cache=False).run({"x": x}), minicc.interpret(
        m, {"x": x})
    for k in ("r", "t", "z"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5)


def test_concats_that_keep_their_kernel() -> None:
    """An input read by another op too (b by both concats, c by the add), a concat not along
    one run of the output (batch 2), a slice at an unaligned offset, a concat that is a
    function output: each keeps its kernel."""
    one = CONCAT.replace("B,", "1,")
    assert _cats(one) == 2 and _cats(CONCAT.replace("B,", "2,")) == 2
    only = one.replace("concat(%b, %c)", "concat(%c, %c)")
    assert _cats(only) == 1
    assert _cats(CONCAT.replace("B,", "2,").replace("concat(%b, %c)", "concat(%c, %c)")) == 2
    assert _cats(only, align=1 << 20) == 2                         # b's slice at 576 bytes
    out = only.replace("-> (f32[1,4,6,6],", "-> (f32[1,8,6,6],").replace("return %r,",
                                                                           "return %ab,")
    assert _cats(out) == 2
