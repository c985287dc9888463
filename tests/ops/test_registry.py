"""Every registered op: inference agrees with the numpy reference, the compute definition agrees
with the reference, cost is sane. A new op is covered as soon as it has a sample."""

from __future__ import annotations

import numpy as np
import pytest

from minicc.ir import OPS, ConstData, TensorType
from minicc.ir.compute import evaluate
from minicc.ir.registry import canonical_attrs, full_attrs, infer_types
from tests.ops.samples import SAMPLES, f32

CASES = [(name, i) for name in sorted(OPS) for i in range(len(SAMPLES.get(name, [None])))]


def _materialize(name: str, args: list, attrs: dict) -> tuple[list, dict]:
    attrs = dict(attrs)
    if attrs.get("value") == "ARRAY":
        attrs["value"] = ConstData(f32(2, 3))
    return [np.asarray(a) for a in args], attrs


def test_every_op_has_a_sample() -> None:
    missing = sorted(set(OPS) - set(SAMPLES))
    assert not missing, f"ops without samples in tests/ops/samples.py: {missing}"


@pytest.mark.parametrize("name,i", CASES)
def test_infer_matches_reference(name: str, i: int) -> None:
    args, attrs = _materialize(name, *SAMPLES[name][i])
    d = OPS[name]
    at = canonical_attrs(name, attrs)
    types = infer_types(name, [TensorType.of(a) for a in args], at)
    outs = d.reference(args, full_attrs(name, at))
    assert len(outs) == len(types)
    for t, o in zip(types, outs):
        assert TensorType.of(np.asarray(o)) == t
    cost = d.cost([TensorType.of(a) for a in args], types, full_attrs(name, at))
    assert cost.flops >= 0 and cost.bytes >= 0


@pytest.mark.parametrize("name,i", CASES)
def test_compute_matches_reference(name: str, i: int) -> None:
    args, attrs = _materialize(name, *SAMPLES[name][i])
    d = OPS[name]
    at = full_attrs(name, canonical_attrs(name, attrs))
    ins = [TensorType.of(a) for a in args]
    types = infer_types(name, ins, at)
    comps = d.compute(ins, types, at)
    if comps is None:
        pytest.skip(f"{name} is opaque (no compute definition)")
    refs = d.reference(args, at)
    for c, t, r in zip(comps, types, refs):
        got = evaluate(c, t, args)
        tol = 1e-5 if t.dtype.is_float else 0
        np.testing.assert_allclose(got, r, rtol=tol, atol=tol, err_msg=repr(c))
