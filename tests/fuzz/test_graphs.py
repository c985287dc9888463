"""The differential campaign (tests/fuzz/graphs.py): a seeded sample of random valid graphs in
the default run against onnxruntime, the whole campaign behind slow, and every shrunk mismatch
ever found replayed as a regression test."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.fuzz.graphs import REGRESSIONS, campaign, compare

BAD = ("internal", "crash", "mismatch")


def _check(first: int, n: int, jobs: int = 1, all_levels: bool = False) -> Counter:
    pytest.importorskip("onnxruntime")
    res = campaign(first, n, jobs, all_levels=all_levels)
    assert len(res) == n
    bad = [r for r in res if r["verdict"] in BAD]
    assert not bad, "\n".join(f"{r['verdict']}: case {r['case']} O{r.get('opt_level')} "
                              f"{r.get('nodes')}: {r.get('why', '')}" for r in bad)
    return Counter(r["verdict"] for r in res)


def test_a_seeded_sample_of_random_graphs_matches_onnxruntime() -> None:
    counts = _check(0, 120)
    assert counts["ok"] + counts["ok-nearer-than-ort"] >= 110


def test_a_sample_at_every_opt_level() -> None:
    _check(5000, 30, all_levels=True)


@pytest.mark.slow
def test_the_differential_campaign() -> None:
    _check(0, 10000, jobs=2)
    _check(0, 2500, jobs=2, all_levels=True)


REGRESSION_CASES = sorted(REGRESSIONS.glob("*.onnx")) if REGRESSIONS.exists() else []


@pytest.mark.parametrize("path", REGRESSION_CASES, ids=[p.stem for p in REGRESSION_CASES])
def test_a_shrunk_mismatch_stays_fixed(path: Path) -> None:
    pytest.importorskip("onnxruntime")
    m = onnx.load(str(path))
    x = np.load(path.with_suffix(".npy"))
    level = int(path.stem.rsplit("_O", 1)[1])
    assert compare(m, {"x": x}, level)["verdict"] in ("ok", "ok-nearer-than-ort")
