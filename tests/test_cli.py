"""The `minicc` command line: help texts, import / run / demo / ops on a real model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from minicc import __version__
from minicc.cli import main

SQUEEZENET = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                          "light_squeezenet.onnx")


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def help_text(capsys, *argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as ei:
        main([*argv, "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: minicc")
    return out


# -- help and usage --------------------------------------------------------------------------------


def test_help(capsys):
    out = help_text(capsys)
    for s in ("import", "run", "demo", "ops", "--debug", "--version"):
        assert s in out


@pytest.mark.parametrize("cmd,options", [
    ("import", ["MODEL.onnx", "-o", "--output", "--input-shape", "--input-value", "--locs"]),
    ("run", ["MODEL", "--input", "--random-inputs", "--seed", "--output-dir", "--compare",
             "onnxruntime", "--rtol", "--atol", "--input-shape"]),
    ("demo", ["--model", "resnet50", "squeezenet"]),
    ("ops", ["--format", "text", "md"]),
])
def test_subcommand_help(capsys, cmd, options):
    out = help_text(capsys, cmd)
    assert out.startswith(f"usage: minicc {cmd}")
    for s in options:
        assert s in out, f"{s!r} missing from `minicc {cmd} --help`"


def test_version(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    assert capsys.readouterr().out.strip() == f"minicc {__version__}"


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["import"],
                                  ["run", "m.onnx", "--seed", "x"], ["ops", "--format", "html"],
                                  ["run", "m.onnx", "--compare", "tf"]])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "usage: minicc" in err and "Traceback" not in err


# -- import ----------------------------------------------------------------------------------------


def test_import_prints_ir(capsys):
    rc, out, err = run(capsys, "import", SQUEEZENET)
    assert rc == 0, err
    assert out.startswith("func @main(")
    assert "conv(" in out and out.rstrip().endswith("}")


def test_import_locs(capsys):
    rc, out, _ = run(capsys, "import", SQUEEZENET, "--locs")
    assert rc == 0 and out.startswith("func @main(") and "loc(" in out


def test_import_to_file_and_run_it(tmp_path, capsys):
    mir, npz = tmp_path / "out.mir", tmp_path / "out.npz"
    rc, out, err = run(capsys, "import", SQUEEZENET, "-o", mir)
    assert rc == 0, err
    assert out == ""
    text = mir.read_text()
    assert text.startswith("func @main(")
    assert ("blob<" in text) == npz.exists()  # weights beside the IR only when it refers to them
    assert f"wrote {mir}" in err

    rc, out, err = run(capsys, "run", mir, "--random-inputs", "--output-dir", tmp_path / "a")
    assert rc == 0, err
    assert "softmaxout_1: float32[1, 1000, 1, 1]" in out
    # the .mir runs like the .onnx it came from
    rc, _, err = run(capsys, "run", SQUEEZENET, "--random-inputs", "--output-dir", tmp_path / "b")
    assert rc == 0, err
    for f in (tmp_path / "b").iterdir():
        np.testing.assert_array_equal(np.load(tmp_path / "a" / f.name), np.load(f))


def test_import_without_weights_writes_no_npz(tmp_path, capsys):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    mir, npz = tmp_path / "out.mir", tmp_path / "out.npz"
    npz.write_bytes(b"stale")  # left over from an earlier import with weights
    rc, _, err = run(capsys, "import", model, "-o", mir)
    assert rc == 0, err
    assert "blob<" not in mir.read_text() and not npz.exists()
    rc, out, err = run(capsys, "run", mir, "--random-inputs")
    assert rc == 0, err
    assert "y: float32[2, 3]" in out


# -- run -------------------------------------------------------------------------------------------


def test_run_compare_onnxruntime(capsys):
    pytest.importorskip("onnxruntime")
    rc, out, err = run(capsys, "run", SQUEEZENET, "--random-inputs", "--compare", "onnxruntime")
    assert rc == 0, out + err
    assert "compiled code" in out
    assert "max abs error" in out and "MISMATCH" not in out
    # light_squeezenet's constant weights give logits near 6e4 on random inputs, so its
    # softmax follows the last bits of each conv's summation order: numpy's (the
    # interpreter's) and onnxruntime's differ by up to 1e-3 on AVX2 machines (Zen 3)
    rc, out, err = run(capsys, "run", SQUEEZENET, "--interp", "--random-inputs", "--compare",
                       "onnxruntime", "--atol", "3e-3")
    assert rc == 0 and "reference interpreter" in out and "MISMATCH" not in out, out


def test_run_compare_needs_onnx(tmp_path, capsys):
    mir = tmp_path / "m.mir"
    assert run(capsys, "import", SQUEEZENET, "-o", mir)[0] == 0
    rc, _, err = run(capsys, "run", mir, "--random-inputs", "--compare", "onnxruntime")
    assert rc == 2 and "minicc: error: " in err and ".onnx" in err


# -- demo, ops -------------------------------------------------------------------------------------


def test_demo_squeezenet(capsys):
    rc, out, err = run(capsys, "demo", "--model", "squeezenet")
    assert rc == 0, out + err
    assert "light_squeezenet.onnx" in out and "PASS" in out


def test_ops_markdown(capsys):
    rc, out, _ = run(capsys, "ops", "--format", "md")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("| op |") and lines[1].startswith("|---|")
    assert any(line.startswith("| conv |") for line in lines)
    assert "ONNX op types have converters" in out and "Conv (opsets" in out


def test_ops_text(capsys):
    rc, out, _ = run(capsys, "ops")
    assert rc == 0
    assert any(line.split()[:1] == ["conv"] for line in out.splitlines())
    assert "|" not in out.splitlines()[0]


def test_verify_roundtrip_flag(capsys, monkeypatch):
    monkeypatch.setenv("MINICC_VERIFY_ROUNDTRIP", "1")
    rc, out, err = run(capsys, "compile", SQUEEZENET, "--threads", "1")
    assert rc == 0, err
