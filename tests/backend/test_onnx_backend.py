"""The official ONNX backend test suite through minicc's adapter (`minicc.backend`).

`expected_pass.txt` lists the tests that must pass: one of them failing is a failure. Any other
test runs too; if it passes it is reported at the end (so the list can grow, with
`pytest tests/backend --update-expected`); if it fails it is an expected failure.
"""

from __future__ import annotations

import unittest
import warnings
from pathlib import Path

import pytest

from tests.backend.suite import backend_tests

EXPECTED_FILE = Path(__file__).with_name("expected_pass.txt")
EXPECTED = {ln.strip() for ln in EXPECTED_FILE.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")}
TESTS = backend_tests()
RESULTS: dict[str, str] = {}   # name -> "pass" | "fail" | "skip", read by conftest's summary


def test_expected_list_names_real_tests() -> None:
    unknown = sorted(EXPECTED - set(TESTS))
    assert not unknown, f"expected_pass.txt names tests the suite does not have: {unknown[:10]}"


@pytest.mark.parametrize("name", sorted(TESTS))
def test_onnx_backend(name: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TESTS[name]()
    except unittest.SkipTest as e:
        RESULTS[name] = "skip"
        pytest.skip(str(e))
    except Exception as e:  # noqa: BLE001  (any failure of a test outside the list is expected)
        RESULTS[name] = "fail"
        if name in EXPECTED:
            raise
        pytest.xfail(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    RESULTS[name] = "pass"
