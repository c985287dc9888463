"""`minicc viz` and `minicc report`: the graph as DOT, SVG and HTML; one self-contained HTML
page (nothing fetched from the network); rendered by headless Chromium in a slow test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from minicc.cli import main
from minicc.errors import MiniccError
from minicc.report import graph_dot, html_report, write_graph
from tests.test_tune import small_model

HAS_DOT = shutil.which("dot") is not None


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_model(tmp_path_factory.mktemp("report") / "small.onnx")


def conv_bn_relu(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def t(name: str, shape: list[int]) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  rng.random(int(np.prod(shape))) + 0.5)

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "mu", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    g = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [t("w", [8, 3, 3, 3])] + [t(n, [8]) for n in ("g", "b", "mu", "var")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_graph_at_each_stage(model: Path, tmp_path: Path) -> None:
    bn = str(conv_bn_relu(tmp_path / "bn.onnx"))
    imported = graph_dot(bn, "imported")
    assert "conv (1 weights)" in imported and "batch_norm (4 weights)" in imported
    assert "cluster" not in imported
    passes = graph_dot(bn, "passes")        # batch norm folded into the conv's weight and bias
    assert "batch_norm" not in passes and "conv (2 weights)" in passes
    fused = graph_dot(str(model), "fused")
    assert 'label="k0_relu"' in fused and 'label="k2_matmul"' in fused
    assert re.search(r'cluster_\d+ \{ label="k0_relu".*\n.*conv.*\n.*relu', fused)
    with pytest.raises(MiniccError, match="unknown stage 'lowered'"):
        graph_dot(str(model), "lowered")


def test_viz_writes_dot_svg_and_html(model: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["viz", str(model), "-o", str(tmp_path / "g.dot")]) == 0
    assert (tmp_path / "g.dot").read_text().startswith("digraph minicc {")
    assert main(["viz", str(model), "-o", str(tmp_path / "g.png")]) == 2
    assert "use .dot, .svg or .html" in capsys.readouterr().err
    if HAS_DOT:
        svg = write_graph(str(model), "fused", tmp_path / "g.svg").read_text()
        assert svg.startswith("<svg") and "k0_relu" in svg
    page = write_graph(str(model), "fused", tmp_path / "g.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and ("<svg" in page or "digraph" in page)


@pytest.fixture(scope="module")
def report(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("matplotlib")
    return html_report(str(model), tmp_path_factory.mktemp("r") / "report.html", repeat=3,
                       threads=1)


def test_the_report_is_one_self_contained_page(report: Path) -> None:
    text = report.read_text()
    for section in ("Summary", "Kernels, slowest first", "Roofline", "Fused graph"):
        assert f"<h2>{section}</h2>" in text
    assert "data:image/png;base64," in text and "k0_relu" in text and "compile" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)   # nothing fetched
    if HAS_DOT:
        assert "<svg" in text


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_chromium_renders_the_report(report: Path, tmp_path: Path) -> None:
    """Headless Chromium draws the page to a PNG (MINICC_REPORT_PNG=path keeps it, to look at)."""
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    png = tmp_path / "report.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1300,2400", f"--screenshot={png}", report.as_uri()]
    subprocess.run(cmd, check=False, capture_output=True, timeout=120)
    data = png.read_bytes()
    keep = os.environ.get("MINICC_REPORT_PNG")     # where to keep the picture, to look at it
    if keep:
        shutil.copy(png, keep)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    try:
        from matplotlib.image import imread
    except ImportError:
        return
    img = imread(str(png))
    assert img.shape[0] >= 2000 and img.std() > 0.05       # drawn, not a blank page
