"""The runtime around compiled code: input checks (before any native code runs), saving and
loading artifacts (checksums, version, CPU features), and the on-disk compile cache."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from minicc import CompileOptions, CompiledModel, compile, load
from minicc.errors import ArtifactError, RuntimeInputError
from minicc.runtime.llvm_host import host_features

RNG = np.random.default_rng(7)
X_SHAPE, Y_SHAPE = (2, 3, 8, 8), (2, 4)


def small_model() -> onnx.ModelProto:
    """x -> Conv(3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten; + y -> out."""
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Add", ["f", "y"], ["out"]),
    ]
    g = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X_SHAPE)),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, list(Y_SHAPE))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(Y_SHAPE))],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def expected(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    w = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    b = numpy_helper.to_array(model.graph.initializer[1]).astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    c = np.zeros((2, 4, 8, 8))
    for ky in range(3):
        for kx in range(3):
            c += np.einsum("nchw,mc->nmhw", xp[:, :, ky:ky + 8, kx:kx + 8], w[:, :, ky, kx])
    c += b.reshape(1, 4, 1, 1)
    return (np.maximum(c, 0).mean(axis=(2, 3)) + y).astype(np.float32)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("model") / "small.onnx"
    onnx.save(small_model(), str(p))
    return p


@pytest.fixture(scope="module")
def cm(onnx_path: Path) -> CompiledModel:
    return compile(str(onnx_path), options=CompileOptions(threads=1, cache=False))


@pytest.fixture(scope="module")
def feeds() -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal(X_SHAPE).astype(np.float32),
            "y": RNG.standard_normal(Y_SHAPE).astype(np.float32)}


def test_compiled_model_runs(cm: CompiledModel, onnx_path: Path,
                             feeds: dict[str, np.ndarray]) -> None:
    assert cm.input_names == ["x", "y"] and cm.output_names == ["out"]
    out = cm.run(feeds)
    ref = expected(onnx.load(str(onnx_path)), feeds["x"], feeds["y"])
    np.testing.assert_allclose(out["out"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cm(**feeds)["out"], out["out"])


# ---------------------------------------------------------------------------------------------
# Input checks


@pytest.fixture
def no_native(cm: CompiledModel, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every native entry and the host-op path by a recorder: a check that fails must
    fail before any of them is reached."""
    calls: list[str] = []

    def entry(name: str) -> Callable[..., None]:
        return lambda *a: calls.append(name)

    monkeypatch.setattr(cm.exe, "_calls", [(entry(st.symbol) if fn is not None else None, st)
                                          for fn, st in cm.exe._calls])
    monkeypatch.setattr(cm.exe, "_host", lambda *a: calls.append("host"))
    return calls


def _bad_inputs(feeds: dict[str, np.ndarray]) -> dict[str, tuple[dict[str, Any], str, str]]:
    x, y = feeds["x"], feeds["y"]
    wide = np.zeros((2, 6, 8, 8), np.float32)
    aligned_off = np.frombuffer(bytearray(y.nbytes + 1), dtype=np.uint8)[1:].view(np.float32)
    return {
        # case: (inputs, input named, words in the message)
        "wrong_dtype": ({"x": x.astype(np.float64), "y": y}, "x", "dtype f64 (float64)"),
        "wrong_dtype_int": ({"x": x, "y": y.astype(np.int32)}, "y", "dtype i32 (int32)"),
        "wrong_shape": ({"x": x[:1], "y": y}, "x", "shape [1, 3, 8, 8]"),
        "wrong_rank": ({"x": x, "y": y.reshape(8)}, "y", "shape [8]"),
        "missing": ({"x": x}, "y", "missing"),
        "unknown": ({"x": x, "y": y, "z": y}, "z", "unknown"),
        "non_contiguous_slice": ({"x": wide[:, ::2], "y": y}, "x", "not C-contiguous"),
        "non_contiguous_transpose": ({"x": x, "y": np.ones((4, 2), np.float32).T}, "y",
                                     "not C-contiguous"),
        "list": ({"x": x.tolist(), "y": y}, "x", "got list"),
        "scalar": ({"x": x, "y": 1.0}, "y", "got float"),
        "unaligned": ({"x": x, "y": aligned_off.reshape(Y_SHAPE)}, "y", "not aligned"),
    }


BAD_CASES = list(_bad_inputs({"x": np.zeros(X_SHAPE, np.float32),
                              "y": np.zeros(Y_SHAPE, np.float32)}))


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_refused_before_native_code(case: str, cm: CompiledModel,
                                                 feeds: dict[str, np.ndarray],
                                                 no_native: list[str]) -> None:
    inputs, name, words = _bad_inputs(feeds)[case]
    with pytest.raises(RuntimeInputError) as e:
        cm.run(inputs)
    msg = str(e.value)
    assert f"'{name}'" in msg, msg
    assert words in msg, msg
    assert no_native == [], f"native code ran before the check: {no_native}"


def test_recorder_sees_a_good_run(cm: CompiledModel, feeds: dict[str, np.ndarray],
                                  no_native: list[str]) -> None:
    """The recorder fixture is not vacuous: a valid call does reach native code."""
    cm.run(feeds)
    assert no_native, "no native entry was called"


def test_runtime_input_error_is_a_value_error(cm: CompiledModel,
                                              feeds: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        cm.run({"x": feeds["x"]})


def test_outputs_are_fresh_arrays(cm: CompiledModel, feeds: dict[str, np.ndarray]) -> None:
    a = cm.run(feeds)["out"]
    b = cm.run(feeds)["out"]
    assert a is not b and not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, b)


def test_any_mapping_of_inputs_runs_as_a_dict_does(cm: CompiledModel,
                                                    feeds: dict[str, np.ndarray]) -> None:
    """A dict of exactly right arrays takes the fast check; anything else (a Mapping that is
    not a dict, an ndarray subclass) the full one, with the same result."""
    import types

    want = cm.run(feeds)["out"]
    proxy = types.MappingProxyType(feeds)
    sub = {k: v.view(np.matrix) if v.ndim == 2 else v for k, v in feeds.items()}
    assert cm.exe._fast_inputs(feeds) is not None
    assert cm.exe._fast_inputs(proxy) is None
    for inputs in (proxy, sub):
        np.testing.assert_array_equal(cm.run(inputs)["out"], want)


def test_read_only_and_offset_inputs_run_as_any_array_does(cm: CompiledModel,
                                                            feeds: dict[str, np.ndarray]) -> None:
    """The call path takes addresses through ctypes' buffer protocol, which refuses read-only
    arrays: they (and views that start inside a bigger array) give the same outputs."""
    from minicc.runtime.cpu import _address

    want = cm.run(feeds)["out"]
    ro = {k: v.copy() for k, v in feeds.items()}
    for v in ro.values():
        v.flags.writeable = False
    inner = {}
    for k, v in feeds.items():
        big = np.zeros((3,) + v.shape, v.dtype)
        big[1] = v
        inner[k] = big[1]
        assert _address(big[1]) == big[1].ctypes.data != big.ctypes.data
    for k, v in ro.items():
        assert _address(v) == v.ctypes.data
    for inputs in (ro, inner):
        np.testing.assert_array_equal(cm.run(inputs)["out"], want)


# ---------------------------------------------------------------------------------------------
# Artifacts


@pytest.fixture(scope="module")
def saved(cm: CompiledModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cm.save(tmp_path_factory.mktemp("art") / "small.mcc")


def test_save_then_load_gives_identical_outputs(cm: CompiledModel, saved: Path,
                                                feeds: dict[str, np.ndarray]) -> None:
    cm2 = load(saved)
    assert cm2.input_names == cm.input_names and cm2.output_names == cm.output_names
    for k, v in cm.run(feeds).items():
        np.testing.assert_array_equal(cm2.run(feeds)[k], v)
    names = zipfile.ZipFile(saved).namelist()
    n = len(cm.artifact.objects)
    assert names == ["manifest.json"] + [f"object-{k}.o" for k in range(n)] + ["weights.bin"]
    assert not list(saved.parent.glob("*.tmp"))


def rewrite_zip(src: Path, dst: Path, member: str, change: Callable[[bytes], bytes]) -> Path:
    """Copy the artifact zip, passing one member's bytes through `change`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info.filename, change(data) if info.filename == member else data)
    dst.write_bytes(buf.getvalue())
    return dst


def flip_middle_byte(data: bytes) -> bytes:
    assert data, "nothing to tamper with"
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


def edit_manifest(edit: Callable[[dict], None], resign: bool = True
                  ) -> Callable[[bytes], bytes]:
    """The manifest edited; re-signed, it stands for an artifact really built elsewhere (another
    version, CPU, triple); not re-signed, for a damaged or forged one."""
    from minicc.runtime.artifact import _manifest_sum

    def change(data: bytes) -> bytes:
        m = json.loads(data)
        edit(m)
        if resign:
            m["sha256"]["manifest"] = _manifest_sum(m)
        return json.dumps(m).encode()
    return change


def test_an_edited_manifest_is_refused(saved: Path, tmp_path: Path) -> None:
    """Arena offsets and sizes are in the manifest: a changed number never reaches native code."""
    bad = rewrite_zip(saved, tmp_path / "arena.mcc", "manifest.json",
                      edit_manifest(lambda m: m.update(arena_bytes=8), resign=False))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load(bad)


@pytest.mark.parametrize("member", ["object-0.o", "weights.bin"])
def test_tampered_artifact_is_refused(member: str, saved: Path, tmp_path: Path) -> None:
    bad = rewrite_zip(saved, tmp_path / "bad.mcc", member, flip_middle_byte)
    with pytest.raises(ArtifactError, match="checksum"):
        load(bad)


def test_untampered_copy_loads(saved: Path, tmp_path: Path, feeds: dict[str, np.ndarray]
                               ) -> None:
    """The zip rewriting itself keeps an artifact valid (so the refusals above are real)."""
    same = rewrite_zip(saved, tmp_path / "same.mcc", "object-0.o", lambda d: d)
    load(same).run(feeds)


def test_artifact_from_another_version_is_refused(saved: Path, tmp_path: Path) -> None:
    import minicc

    bad = rewrite_zip(saved, tmp_path / "old.mcc", "manifest.json",
                      edit_manifest(lambda m: m.update(version="0.0.0-other")))
    with pytest.raises(ArtifactError) as e:
        load(bad)
    msg = str(e.value)
    assert "0.0.0-other" in msg and minicc.__version__ in msg and "recompile" in msg, msg


def _host_has(feature: str) -> bool:
    return f"+{feature}" in host_features()[1].split(",")


@pytest.mark.parametrize("feature", ["avx512fp16", "minicc-imaginary-feature"])
def test_artifact_needing_a_missing_cpu_feature_is_refused(feature: str, saved: Path,
                                                          tmp_path: Path) -> None:
    if _host_has(feature):
        pytest.skip(f"this CPU has {feature}")
    bad = rewrite_zip(saved, tmp_path / "feat.mcc", "manifest.json",
                      edit_manifest(lambda m: m.update(features=list(m["features"]) +
                                                       [feature])))
    with pytest.raises(ArtifactError) as e:
        load(bad)
    assert feature in str(e.value), str(e.value)


def test_artifact_for_another_triple_is_refused(saved: Path, tmp_path: Path) -> None:
    bad = rewrite_zip(saved, tmp_path / "triple.mcc", "manifest.json",
                      edit_manifest(lambda m: m.update(triple="riscv64-unknown-linux-gnu")))
    with pytest.raises(ArtifactError, match="riscv64"):
        load(bad)


def test_artifact_with_another_format_is_refused(saved: Path, tmp_path: Path) -> None:
    bad = rewrite_zip(saved, tmp_path / "fmt.mcc", "manifest.json",
                      edit_manifest(lambda m: m.update(format="minicc-artifact/999")))
    with pytest.raises(ArtifactError, match="format"):
        load(bad)


def test_artifact_missing_a_member_is_refused(saved: Path, tmp_path: Path) -> None:
    bad = tmp_path / "partial.mcc"
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in ("manifest.json", "object-0.o"):
            zout.writestr(name, zin.read(name))
    with pytest.raises(ArtifactError, match="incomplete or corrupt"):
        load(bad)


def test_non_zip_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "not_a_zip.mcc"
    p.write_text("this is not an artifact\n")
    with pytest.raises(ArtifactError, match="not a minicc artifact"):
        load(p)


def test_truncated_artifact_is_refused(saved: Path, tmp_path: Path) -> None:
    p = tmp_path / "truncated.mcc"
    p.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ArtifactError):
        load(p)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such file"):
        load(tmp_path / "nope.mcc")


# ---------------------------------------------------------------------------------------------
# The compile cache


def test_cache_hit_on_second_compile(onnx_path: Path, tmp_path: Path,
                                     feeds: dict[str, np.ndarray]) -> None:
    d = tmp_path / "cache"
    opts = CompileOptions(threads=1, cache_dir=str(d))
    a = compile(str(onnx_path), options=opts)
    assert not a.report.cache_hit
    assert len(list(d.glob("*.mcc"))) == 1
    b = compile(str(onnx_path), options=opts)
    assert b.report.cache_hit
    assert len(list(d.glob("*.mcc"))) == 1
    np.testing.assert_array_equal(a.run(feeds)["out"], b.run(feeds)["out"])


def test_saving_a_cached_model_links_its_entry_rather_than_writing_it_again(
        onnx_path: Path, tmp_path: Path, feeds: dict[str, np.ndarray],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o` of a model the cache holds is a hard link to the entry (one write of the weights,
    not two); a copy where no link can be made (the entry gone, another file system)."""
    import minicc.runtime.artifact as artifact

    d = tmp_path / "cache"
    opts = CompileOptions(threads=1, cache_dir=str(d))
    for k in range(2):                                   # built, then a warm compile
        cm = compile(str(onnx_path), options=opts)
        assert cm.report.cache_hit == (k == 1)
        (entry,) = d.glob("*.mcc")
        out = cm.save(tmp_path / f"out{k}.mcc")
        assert os.path.samefile(out, entry)
        np.testing.assert_array_equal(load(out).run(feeds)["out"], cm.run(feeds)["out"])
    cm.save(tmp_path / "out1.mcc")                       # saved over itself: still the entry
    assert os.path.samefile(tmp_path / "out1.mcc", entry)

    def no_link(src: Any, dst: Any) -> None:
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(artifact.os, "link", no_link)
    out = cm.save(tmp_path / "copy.mcc")
    assert not os.path.samefile(out, entry)
    np.testing.assert_array_equal(load(out).run(feeds)["out"], cm.run(feeds)["out"])
    entry.unlink()
    monkeypatch.undo()
    out = cm.save(tmp_path / "gone.mcc")                 # the entry is gone: written
    np.testing.assert_array_equal(load(out).run(feeds)["out"], cm.run(feeds)["out"])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    from minicc.runtime.artifact import write_atomic

    p = write_atomic(tmp_path / "a.mcc", b"old")

    def fail(fh: Any) -> None:
        fh.write(b"partial")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        write_atomic(p, fail)
    assert p.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [p]


def test_the_cache_is_kept_under_its_size_least_recently_used_first(
        onnx_path: Path, tmp_path: Path, feeds: dict[str, np.ndarray],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past $MINICC_CACHE_SIZE the least recently used entries go (a hit counts as a use)
    until the rest fit in three quarters of it; what is left still hits."""
    from minicc.runtime.cache import CompileCache

    d = tmp_path / "cache"
    variants = [dict(threads=1), dict(threads=2), dict(threads=1, opt_level=2),
                dict(threads=2, opt_level=2)]
    opts = [CompileOptions(cache_dir=str(d), **v) for v in variants]   # type: ignore[arg-type]
    first = compile(str(onnx_path), options=opts[0])
    size = next(d.glob("*.mcc")).stat().st_size
    monkeypatch.setenv("MINICC_CACHE_SIZE", str(int(size * 3.5)))
    keys = [first.artifact.cache_key] + [compile(str(onnx_path), options=o).artifact.cache_key
                                         for o in opts[1:3]]
    assert len(list(d.glob("*.mcc"))) == 3                  # 3 entries fit in 3.5
    assert compile(str(onnx_path), options=opts[0]).report.cache_hit   # the first: used again
    last = compile(str(onnx_path), options=opts[3])         # a fourth: two must go
    left = {p.stem for p in d.glob("*.mcc")}
    assert left == {keys[0], last.artifact.cache_key}, (left, keys)
    again = compile(str(onnx_path), options=opts[0])
    assert again.report.cache_hit
    np.testing.assert_array_equal(again.run(feeds)["out"], first.run(feeds)["out"])
    assert not compile(str(onnx_path), options=opts[1]).report.cache_hit
    assert CompileCache(d).trim(limit=1) > 0 and len(list(d.glob("*.mcc"))) <= 1


def test_the_cache_command_shows_trims_and_clears_it(onnx_path: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    from minicc.cli import main

    d = tmp_path / "cache"
    monkeypatch.setenv("MINICC_CACHE_DIR", str(d))
    compile(str(onnx_path), options=CompileOptions(threads=1))
    assert main(["cache"]) == 0
    assert "1 artifacts" in capsys.readouterr().out
    assert main(["cache", "--trim", "1G"]) == 0 and "freed 0 B" in capsys.readouterr().out
    assert main(["cache", "--clear"]) == 0
    assert "0 artifacts" in capsys.readouterr().out and not list(d.glob("*.mcc"))
    assert main(["cache", "--trim", "much"]) != 0
    assert "--trim 'much' is not a size" in capsys.readouterr().err
    monkeypatch.setenv("MINICC_CACHE_SIZE", "lots")
    assert main(["cache"]) != 0
    assert "$MINICC_CACHE_SIZE='lots' is not a size" in capsys.readouterr().err


def test_damaged_cache_entry_is_rebuilt(onnx_path: Path, tmp_path: Path,
                                        feeds: dict[str, np.ndarray]) -> None:
    d = tmp_path / "cache"
    opts = CompileOptions(threads=1, cache_dir=str(d))
    a = compile(str(onnx_path), options=opts)
    (entry,) = d.glob("*.mcc")
    entry.write_bytes(b"garbage")
    b = compile(str(onnx_path), options=opts)
    assert not b.report.cache_hit
    load(entry)  # rewritten with a valid artifact
    np.testing.assert_array_equal(a.run(feeds)["out"], b.run(feeds)["out"])


def test_a_warm_compile_skips_import_passes_and_lowering(onnx_path: Path, tmp_path: Path,
                                                         feeds: dict[str, np.ndarray],
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The model entry (the hash of the model's bytes and every option) leads straight to the
    artifact: no stage before codegen runs."""
    import minicc.driver as driver

    monkeypatch.delenv("MINICC_VERIFY_EACH", raising=False)   # (verifying runs the passes)
    d = tmp_path / "cache"
    opts = CompileOptions(threads=1, cache_dir=str(d))
    a = compile(str(onnx_path), options=opts)
    assert "passes" in a.report.timings
    monkeypatch.setattr(driver, "_front", lambda *a, **k: pytest.fail("the front end ran"))
    b = compile(str(onnx_path), options=opts)
    assert b.report.cache_hit and list(b.report.timings) == ["cache"]
    assert b.artifact.cache_key == a.artifact.cache_key
    np.testing.assert_array_equal(a.run(feeds)["out"], b.run(feeds)["out"])
    compile(onnx_path.read_bytes(), options=opts)               # bytes hash the same


def test_what_the_model_entry_depends_on(onnx_path: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from minicc.codegen.llvm.target import cpu_target
    from minicc.driver import model_key

    monkeypatch.delenv("MINICC_VERIFY_EACH", raising=False)
    t = cpu_target("native")
    o = CompileOptions(threads=1)
    base = model_key(str(onnx_path), o, t, "v")
    assert base is not None and model_key(onnx_path.read_bytes(), o, t, "v") == base
    assert model_key(str(onnx_path), CompileOptions(threads=1, cache_dir="/elsewhere"), t,
                     "v") == base                         # where the cache is: not the code
    changed = {
        "version": model_key(str(onnx_path), o, t, "w"),
        "opt level": model_key(str(onnx_path), CompileOptions(threads=1, opt_level=2), t, "v"),
        "input shapes": model_key(str(onnx_path), CompileOptions(
            threads=1, input_shapes={"x": [2, 2, 4, 4]}), t, "v"),
        "model bytes": model_key(onnx_path.read_bytes() + b"\x00", o, t, "v"),
    }
    monkeypatch.setenv("MINICC_MEMORY_BUDGET", "1G")
    changed["memory budget"] = model_key(str(onnx_path), o, t, "v")
    monkeypatch.delenv("MINICC_MEMORY_BUDGET")
    log = tmp_path / "tune.jsonl"
    log.write_text("")
    lo = CompileOptions(threads=1, tuning_log=str(log))
    first = model_key(str(onnx_path), lo, t, "v")
    log.write_text('{"a": 1}\n')
    changed["tuning log contents"] = model_key(str(onnx_path), lo, t, "v")
    for what, k in changed.items():
        assert k is not None and k != base, what
    assert changed["tuning log contents"] != first
    # no entry where the bytes do not say everything, or a stage must run
    assert model_key(str(onnx_path), CompileOptions(threads=1, dump=("loops",)), t, "v") is None
    assert model_key(str(onnx_path), CompileOptions(threads=1, verify_each=True), t,
                     "v") is None
    assert model_key(onnx_path.read_bytes() + b"location", o, t, "v") is None
    assert model_key(str(tmp_path / "m.mir"), o, t, "v") is None


def test_cache_key_depends_on_threads(onnx_path: Path, tmp_path: Path) -> None:
    d = tmp_path / "cache"
    compile(str(onnx_path), options=CompileOptions(threads=1, cache_dir=str(d)))
    b = compile(str(onnx_path), options=CompileOptions(threads=2, cache_dir=str(d)))
    assert not b.report.cache_hit
    assert len(list(d.glob("*.mcc"))) == 2


CHILD = """
import sys
import numpy as np
from minicc import CompileOptions, compile
cm = compile(sys.argv[1], options=CompileOptions(threads=1, cache_dir=sys.argv[2]))
x = np.load(sys.argv[3])
out = cm.run({"x": x["x"], "y": x["y"]})["out"]
np.save(sys.argv[4], out)
print("cache_hit" if cm.report.cache_hit else "compiled")
"""


def test_two_processes_compiling_into_one_cache(onnx_path: Path, tmp_path: Path,
                                                feeds: dict[str, np.ndarray]) -> None:
    d = tmp_path / "shared_cache"
    d.mkdir()
    np.savez(tmp_path / "in.npz", **feeds)
    env = dict(os.environ, MINICC_CACHE_DIR=str(tmp_path / "unused"))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(onnx_path), str(d),
                               str(tmp_path / "in.npz"), str(tmp_path / f"out{i}.npy")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for i in range(2)]
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"process {i} failed:\n{err.decode()[-3000:]}"
    assert not list(d.glob("*.tmp")), list(d.iterdir())     # no temp files left behind
    entries = sorted(d.glob("*.mcc"))
    assert len(entries) == 1, list(d.iterdir())
    ref = compile(str(onnx_path), options=CompileOptions(threads=1, cache=False)).run(feeds)
    np.testing.assert_array_equal(load(entries[0]).run(feeds)["out"], ref["out"])
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), ref["out"])
    # a third process finds the entry (a fresh process, like the two writers: the cache key
    # hashes the compiler's source once per process)
    third = subprocess.run([sys.executable, "-c", CHILD, str(onnx_path), str(d),
                            str(tmp_path / "in.npz"), str(tmp_path / "out2.npy")],
                           capture_output=True, env=env, timeout=120)
    assert third.returncode == 0, third.stderr.decode()[-3000:]
    assert third.stdout.decode().split() == ["cache_hit"], third.stdout.decode()
    assert sorted(d.iterdir()) == entries


def test_weights_packed_alike_for_several_kernels_are_stored_once(tmp_path: Path) -> None:
    """Three matmuls by one constant (an unrolled RNN's recurrent weight) each pack it at
    compile time for their own kernel: the blob holds those panels once, and every kernel
    still reads the right ones."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h0"])]
    for i in range(1, 3):
        nodes.append(helper.make_node("Tanh", [f"h{i - 1}"], [f"t{i}"]))
        nodes.append(helper.make_node("Slice", [f"t{i}", "s0", "s1", "ax"], [f"u{i}"]))
        nodes.append(helper.make_node("MatMul", [f"u{i}", "w"], [f"h{i}"]))
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0]), "s0"),
             numpy_helper.from_array(np.array([64]), "s1"),
             numpy_helper.from_array(np.array([1]), "ax")]
    g = helper.make_graph(nodes, "rnn_like", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 64])], [helper.make_tensor_value_info(
            "h2", TensorProto.FLOAT, [1, 96])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cm = compile(m, options=CompileOptions(threads=1, cache=False))
    packs = [k for k in cm.artifact.summary["kernels"] if "pack(B, at=compile)" in
             k.get("schedule", "")]
    assert len(packs) == 3
    assert len(cm.artifact.weights) < 2 * w.nbytes + 4096
    x = rng.standard_normal((1, 64)).astype(np.float32)
    h = x @ w
    for _ in range(2):
        h = np.tanh(h)[:, :64] @ w
    np.testing.assert_allclose(cm.run({"x": x})["h2"], h, rtol=1e-4, atol=1e-4)
