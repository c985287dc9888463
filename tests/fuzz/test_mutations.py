"""A seeded sample of the mutation campaign (tests/fuzz/mutations.py) in the default run; the
whole campaign behind the slow marker. Every case either runs and agrees with onnxruntime or is
refused with a MiniccError; nothing onnxruntime refuses runs unless it is a listed exception."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fuzz.mutations import ACCEPTED, MUTATIONS, campaign, case

BAD = ("internal", "crash", "mismatch", "accepted-invalid")


def _check(first: int, n: int) -> Counter:
    pytest.importorskip("onnxruntime")
    res = campaign(first, n)
    assert len(res) == n
    bad = [r for r in res if r["verdict"] in BAD]
    assert not bad, "\n".join(f"{r['verdict']}: case {r['case']} {r['what']}: "
                              f"{r.get('why', '')} | ort: {r.get('ort_why', '')}" for r in bad)
    counts = Counter(r["verdict"].split(":")[0] for r in res)
    assert all(r["verdict"].split(":", 1)[1] in ACCEPTED for r in res
               if r["verdict"].startswith("accepted:"))
    return counts


def test_every_mutation_applies() -> None:
    seen = {case(i)[1].split("(")[0] for i in range(300)}
    assert seen == set(MUTATIONS)


def test_a_seeded_sample_of_the_mutation_campaign() -> None:
    counts = _check(0, 150)
    assert counts["both-ok"] > 10 and counts["both-refused"] > 50      # both kinds occur


@pytest.mark.slow
def test_the_mutation_campaign() -> None:
    _check(0, 5000)
