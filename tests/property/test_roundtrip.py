"""Property: printing a module, parsing it and printing again gives the same text, an equal
structure, and the same results."""

from __future__ import annotations

import numpy as np
from hypothesis import given

from minicc.ir.graph import Module
from minicc.ir.interpret import interpret
from minicc.ir.parser import parse
from minicc.ir.printer import print_module
from tests.property.strategies import inputs_for, modules


def structurally_equal(a: Module, b: Module) -> bool:
    """Same ops, attributes, types and dataflow, with values matched by position."""
    fa, fb = a.main, b.main
    if len(fa.ops) != len(fb.ops) or fa.input_names != fb.input_names \
            or fa.output_names != fb.output_names:
        return False
    m = {}
    for u, v in zip(fa.inputs, fb.inputs):
        if u.type != v.type:
            return False
        m[u] = v
    for oa, ob in zip(fa.ops, fb.ops):
        if oa.kind != ob.kind or oa.attrs != ob.attrs or len(oa.outputs) != len(ob.outputs):
            return False
        if [m.get(v) for v in oa.inputs] != list(ob.inputs):
            return False
        for u, v in zip(oa.outputs, ob.outputs):
            if u.type != v.type:
                return False
            m[u] = v
    return [m[v] for v in fa.outputs] == list(fb.outputs)


@given(modules())
def test_print_parse_print_is_a_fixed_point(m: Module) -> None:
    text = print_module(m)
    m2 = parse(text, weights=m.weights())
    assert print_module(m2) == text
    assert structurally_equal(m, m2)


@given(modules(max_ops=8))
def test_parsed_module_computes_the_same(m: Module) -> None:
    m2 = parse(print_module(m), weights=m.weights())
    x = inputs_for(m)
    a, b = interpret(m, x), interpret(m2, x)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
