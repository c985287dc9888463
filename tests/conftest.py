"""Shared pytest configuration: hypothesis profiles, the backend-suite report and list update."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings

# the suite runs the graph verifier after every pass (what --verify-each does)
os.environ.setdefault("MINICC_VERIFY_EACH", "1")

# MINICC_HOST_GPU=1: `import cupy` gives tests/host_cupy.py, a device that is this CPU, so the
# GPU tests and runtime/cuda.py run here (tests/runtime/test_host_gpu.py does so in CI)
if os.environ.get("MINICC_HOST_GPU") == "1":
    from tests import host_cupy

    host_cupy.install()

settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-expected", action="store_true",
                     help="rewrite tests/backend/expected_pass.txt with the tests that passed")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore
    cuda = sys.modules.get("tests.codegen.test_cuda")
    if cuda is not None and cuda.COMPILED:
        tr = terminalreporter
        tr.section("CUDA kernels compiled with NVRTC (no GPU needed)")
        total = sum(cuda.COMPILED.values())
        tr.write_line(f"{total} kernels of {len(cuda.COMPILED)} models compiled to cubin, all "
                      f"without error: " + ", ".join(f"{k} {v}" for k, v in
                                                     sorted(cuda.COMPILED.items())))
    mma = sys.modules.get("tests.codegen.test_mma")
    if mma is not None and mma.TENSOR_CORE:
        tr = terminalreporter
        tr.section("Tensor-core (mma.sync) kernels compiled with NVRTC")
        tr.write_line(", ".join(f"{k}: {n} of {total} kernels on tensor cores" for k, (n, total)
                                in sorted(mma.TENSOR_CORE.items())) + ", all without error")
    suite = sys.modules.get("tests.backend.test_onnx_backend")
    if suite is None or not suite.RESULTS:
        return
    passed = sorted(n for n, r in suite.RESULTS.items() if r == "pass")
    new = [n for n in passed if n not in suite.EXPECTED]
    tr = terminalreporter
    tr.section("ONNX backend conformance (minicc)")
    tr.write_line(f"{len(passed)} of {len(suite.RESULTS)} backend tests run pass "
                  f"({len(suite.TESTS)} in the suite, {len(suite.EXPECTED)} expected to pass)")
    if new:
        tr.write_line(f"{len(new)} newly passing (add with --update-expected): "
                      + ", ".join(new[:20]) + (" ..." if len(new) > 20 else ""))
    if config.getoption("--update-expected"):
        header = ("# ONNX backend tests expected to pass through minicc (CPU). One per line.\n"
                  "# Regenerate: pytest tests/backend --update-expected\n")
        keep = sorted(set(passed) | (suite.EXPECTED & set(n for n, r in suite.RESULTS.items()
                                                          if r != "fail")))
        suite.EXPECTED_FILE.write_text(header + "\n".join(keep) + "\n")
        tr.write_line(f"wrote {len(keep)} names to {suite.EXPECTED_FILE}")
