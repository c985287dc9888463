"""The public API as a user meets it: `minicc.compile`, `minicc.load`, `minicc.CompiledModel` and
`minicc.CompileOptions` from the top-level package; keywords and `options=` combine; the target
table; the cache key covers every option and flag that changes the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import minicc
from minicc.errors import MiniccError


def small_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 40])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 40])
    g = helper.make_graph([helper.make_node("Tanh", ["x"], ["t"]),
                           helper.make_node("Relu", ["t"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return small_model(tmp_path / "m.onnx")


def test_compile_save_load_from_the_top_level(model: Path, tmp_path: Path) -> None:
    cm = minicc.compile(str(model), target="llvm", threads=1, cache=False)
    assert isinstance(cm, minicc.CompiledModel)
    cm.save(tmp_path / "m.mcc")
    again = minicc.load(tmp_path / "m.mcc")
    x = np.linspace(-2, 2, 80, dtype=np.float32).reshape(2, 40)
    np.testing.assert_allclose(again(x=x)["y"], np.maximum(np.tanh(x), 0), rtol=2e-6,
                               atol=1e-7)
    np.testing.assert_array_equal(again(x=x)["y"], cm(x=x)["y"])


def test_no_module_shares_a_name_with_a_function() -> None:
    import inspect

    for name in ("compile", "load", "CompiledModel", "CompileOptions"):
        obj = getattr(minicc, name)
        assert not inspect.ismodule(obj), f"minicc.{name} is a module"
    assert not (Path(minicc.__file__).parent / "compile.py").exists()


def test_keywords_and_options_combine(model: Path) -> None:
    o = minicc.CompileOptions(threads=1, cache=False)
    cm = minicc.compile(str(model), opt_level=2, options=o, fastmath=True)
    assert cm.threads == 1


def test_a_keyword_that_contradicts_options_is_an_error(model: Path) -> None:
    o = minicc.CompileOptions(threads=2, cache=False)
    with pytest.raises(MiniccError, match=r"threads=1 as a keyword but threads=2 in options"):
        minicc.compile(str(model), threads=1, options=o)
    with pytest.raises(MiniccError, match="target='llvm' as a keyword"):
        minicc.compile(str(model), target="llvm", options=minicc.CompileOptions(target="cuda"))
    # a field `options` leaves at its default is the keyword's to set
    cm = minicc.compile(str(model), opt_level=1, options=minicc.CompileOptions(cache=False))
    assert cm.output_names == ["y"]


def test_bad_options_are_refused_by_name(model: Path) -> None:
    with pytest.raises(MiniccError, match="unknown compile option 'thread'"):
        minicc.compile(str(model), thread=1)
    with pytest.raises(MiniccError, match="unknown target 'gpu'"):
        minicc.compile(str(model), target="gpu")
    with pytest.raises(MiniccError, match="opt_level must be"):
        minicc.CompileOptions(opt_level=7)
    with pytest.raises(MiniccError, match="unknown dump stage 'loop'"):
        minicc.CompileOptions(dump=("loop",))
    with pytest.raises(MiniccError, match="needs another target"):
        minicc.compile(str(model), dump=("cuda",), cache=False)


def test_vector_width_comes_from_the_named_cpu(model: Path) -> None:
    """x86-64-v3 is AVX2: 8 lanes, ymm registers; the code runs here and gives the same result."""
    cm = minicc.compile(str(model), cpu="x86-64-v3", threads=1, cache=False,
                        dump=("loops", "asm"))
    assert "vector(8)" in cm.report.dumps["loops"]
    assert "zmm" not in cm.report.dumps["asm"] and "ymm" in cm.report.dumps["asm"]
    assert cm.artifact.cpu == "x86-64-v3" and "avx2" in cm.artifact.features
    x = np.linspace(-2, 2, 80, dtype=np.float32).reshape(2, 40)
    np.testing.assert_allclose(cm(x=x)["y"], np.maximum(np.tanh(x), 0), rtol=2e-6, atol=1e-7)


def test_an_unknown_cpu_is_a_clear_error_not_a_crash(model: Path) -> None:
    with pytest.raises(MiniccError, match="'bogus9' is not a CPU LLVM knows"):
        minicc.compile(str(model), cpu="bogus9", cache=False)


def test_split_kernels_flag_is_in_the_cache_key(model: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    a = minicc.compile(str(model), threads=1, cache_dir=str(tmp_path))
    monkeypatch.setenv("MINICC_SPLIT_KERNELS", "1")
    b = minicc.compile(str(model), threads=1, cache_dir=str(tmp_path))
    assert not b.report.cache_hit and a.artifact.cache_key != b.artifact.cache_key
    assert len(b.artifact.steps) >= len(a.artifact.steps)


def test_import_minicc_is_enough_for_a_user(model: Path, tmp_path: Path) -> None:
    code = ("import minicc; cm = minicc.compile(%r, target='llvm', threads=1); "
            "cm.save(%r); print(minicc.load(%r).output_names)"
            % (str(model), str(tmp_path / "m.mcc"), str(tmp_path / "m.mcc")))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"MINICC_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin"})
    assert r.returncode == 0, r.stderr
    assert "['y']" in r.stdout


def test_every_option_that_changes_code_is_in_the_cache_key() -> None:
    """A field changes the key unless it is run-time only or already in the program the key
    hashes (input shapes, kernels' schedules): a new option is covered by default."""
    from dataclasses import fields, replace

    from minicc.options import NOT_IN_KEY

    other = {"target": "cuda", "opt_level": 1, "threads": 3, "cpu": "x86-64-v3",
             "cuda_arch": "sm_80", "fastmath": True, "profile": True, "precision": "fp16"}
    base = minicc.CompileOptions()
    for f in fields(minicc.CompileOptions):
        if f.name in NOT_IN_KEY:
            continue
        assert f.name in other, f"give test_every_option... a value for the new option {f.name}"
        assert replace(base, **{f.name: other[f.name]}).code_key() != base.code_key(), f.name
    assert minicc.CompileOptions(input_shapes={}).code_key() == base.code_key()
