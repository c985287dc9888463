"""A seeded sample of the byte-mutation campaign over model files, artifacts and tuning logs
(tests/fuzz/files.py) in the default run; 1000 cases of each behind the slow marker."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fuzz.files import KINDS, campaign


def _check(kind: str, n: int) -> Counter:
    pytest.importorskip("onnxruntime")
    res = campaign(kind, 0, n)
    assert len(res) == n
    bad = [r for r in res if r["verdict"] in ("internal", "crash", "mismatch")]
    assert not bad, "\n".join(f"{r['verdict']}: {kind} case {r['case']}: {r.get('why', '')}"
                              for r in bad)
    return Counter(r["verdict"] for r in res)


@pytest.mark.parametrize("kind", KINDS)
def test_a_seeded_sample_of_byte_mutations(kind: str) -> None:
    counts = _check(kind, 40)
    if kind == "artifact":       # every byte of an artifact is under a checksum
        assert counts["refused"] == 40


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_byte_mutation_campaign(kind: str) -> None:
    _check(kind, 1000)
