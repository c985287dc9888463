"""Bad input gives one clear MiniccError (Python API) and exit code 2 with a one-line
`minicc: error: ...` (CLI), never a traceback or a crash.

Every model is built with onnx.helper inside the test, into tmp_path.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import minicc
from minicc.cli import main
from minicc.errors import (FrontendError, MiniccError, ParseError, RuntimeInputError,
                           UnsupportedOpError)
from minicc.ir import parse

# -- helpers ---------------------------------------------------------------------------------------


def vi(name: str, shape, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(nodes, inputs, outputs, inits=(), opsets=(("", 17),)) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def save(model: onnx.ModelProto, path: Path) -> str:
    path.write_bytes(model.SerializeToString())
    return str(path)


W = np.arange(6, dtype=np.float32).reshape(2, 3)


def add_relu() -> onnx.ModelProto:
    """y = relu(x + w), x: f32[2,3], w an initializer."""
    return make_model([helper.make_node("Add", ["x", "w"], ["t"], name="add0"),
                       helper.make_node("Relu", ["t"], ["y"], name="relu0")],
                      [vi("x", [2, 3])], [vi("y", [2, 3])], [numpy_helper.from_array(W, "w")])


def cli_error(capsys, argv, *needles: str) -> str:
    """Run the CLI; assert exit code 2 and a short `minicc: error:` message holding needles."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    assert err.startswith("minicc: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(err.splitlines()) <= 6 and len(err) < 1500, err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    return err


def raises(exc: type[MiniccError], fn, *args, **kwargs) -> str:
    """Call fn; assert it raises exactly `exc` (or a subclass); return the message."""
    with pytest.raises(exc) as ei:
        fn(*args, **kwargs)
    msg = str(ei.value)
    assert msg and "Traceback" not in msg
    return msg


def has_all(msg: str, *needles: str) -> None:
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


# -- unreadable model files ------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["half", "ten"])
def test_truncated_model(tmp_path, capsys, cut):
    data = add_relu().SerializeToString()
    p = tmp_path / "model.onnx"
    p.write_bytes(data[:len(data) // 2] if cut == "half" else data[:10])
    msg = raises(FrontendError, minicc.import_onnx, str(p))
    has_all(msg, str(p), "not a valid ONNX model", "truncated")
    cli_error(capsys, ["import", p], str(p), "not a valid ONNX model")
    cli_error(capsys, ["run", p, "--random-inputs"], str(p), "not a valid ONNX model")


def _not_onnx(kind: str, tmp_path: Path) -> tuple[Path, str]:
    p = tmp_path / "model.onnx"
    if kind == "text":
        p.write_text("ir_version: 8\nthis is a text file, not a protobuf\n")
        return p, "not a valid ONNX model"
    if kind.startswith("random"):
        p.write_bytes(np.random.default_rng(int(kind[-1])).bytes(300))
        return p, "not a valid ONNX model"
    if kind == "tensor":  # an (unnamed) TensorProto .pb decodes as a ModelProto with no graph
        p.write_bytes(numpy_helper.from_array(W).SerializeToString())
        return p, "no graph"
    if kind == "empty":
        p.write_bytes(b"")
        return p, "empty"
    if kind == "directory":
        p.mkdir()
        return p, "directory"
    assert kind == "missing"
    return p, "no such file"


@pytest.mark.parametrize("kind", ["text", "random0", "random1", "random2", "tensor", "empty",
                                  "directory", "missing"])
def test_not_an_onnx_file(tmp_path, capsys, kind):
    p, why = _not_onnx(kind, tmp_path)
    msg = raises(FrontendError, minicc.import_onnx, str(p))
    has_all(msg, str(p), why)
    cli_error(capsys, ["import", p], str(p), why)
    cli_error(capsys, ["run", p, "--random-inputs"], str(p), why)


def test_bad_bytes_and_path_objects():
    has_all(raises(FrontendError, minicc.import_onnx, b"\x00\x01garbage"), "<bytes>")
    has_all(raises(FrontendError, minicc.import_onnx, b""), "empty")
    has_all(raises(FrontendError, minicc.import_onnx, "bad\x00name.onnx"), "bad\\x00name.onnx")
    no_graph = onnx.ModelProto(ir_version=8).SerializeToString()
    has_all(raises(FrontendError, minicc.import_onnx, no_graph), "no graph")


# -- bad graphs ------------------------------------------------------------------------------------


def test_cycle(tmp_path, capsys):
    m = make_model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                    helper.make_node("Relu", ["a"], ["b"], name="n2")],
                   [vi("x", [2, 3])], [vi("b", [2, 3])])
    p = save(m, tmp_path / "cycle.onnx")
    msg = raises(FrontendError, minicc.import_onnx, p)
    has_all(msg, p, "cycle", "n1", "n2")
    cli_error(capsys, ["import", p], "cycle", "n1", "n2")


def test_self_cycle_without_names(tmp_path):
    m = make_model([helper.make_node("Add", ["x", "a"], ["a"])], [vi("x", [2])], [vi("a", [2])])
    has_all(raises(FrontendError, minicc.import_onnx, m), "cycle", "nodes a")


def test_missing_initializer(tmp_path, capsys):
    m = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add0")],
                   [vi("x", [2, 3])], [vi("y", [2, 3])])
    p = save(m, tmp_path / "noinit.onnx")
    msg = raises(FrontendError, minicc.import_onnx, p)
    has_all(msg, p, "Add node 'add0'", "tensor 'w'", "initializer")
    cli_error(capsys, ["import", p], "add0", "'w'", "initializer")
    cli_error(capsys, ["run", p, "--random-inputs"], "add0", "'w'")


def test_tensor_produced_twice(tmp_path):
    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="r1"),
                    helper.make_node("Relu", ["x"], ["y"], name="r2")],
                   [vi("x", [2])], [vi("y", [2])])
    has_all(raises(FrontendError, minicc.import_onnx, m), "'y'", "produced twice", "r2")


def unsupported_model() -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Detect", ["boxes", "scores"], ["sel"], name="nms0",
                          domain="com.other"),
         helper.make_node("Detect", ["boxes", "scores"], ["sel2"], name="nms1",
                          domain="com.other"),
         helper.make_node("FancyOp", ["boxes"], ["z"], name="custom0", domain="com.example"),
         helper.make_node("Relu", ["boxes"], ["r"], name="relu0")],
        [vi("boxes", [1, 4, 4]), vi("scores", [1, 1, 4])],
        [vi("sel", [None, 3], TensorProto.INT64), vi("sel2", [None, 3], TensorProto.INT64),
         vi("z", [1, 4, 4]), vi("r", [1, 4, 4])],
        opsets=(("", 17), ("com.example", 1), ("com.other", 1)))


def test_unsupported_ops_listed_in_one_error(tmp_path, capsys):
    p = save(unsupported_model(), tmp_path / "unsup.onnx")
    with pytest.raises(UnsupportedOpError) as ei:
        minicc.import_onnx(p)
    msg = str(ei.value)
    assert isinstance(ei.value, FrontendError)
    has_all(msg, p, "2 ONNX op types", "com.other::Detect", "nms0", "nms1",
            "com.example::FancyOp", "custom0")
    assert "Relu" not in msg and "relu0" not in msg
    assert msg.count("Detect") == 1  # one line per op type, listing its nodes
    cli_error(capsys, ["import", p], "Detect", "nms0", "FancyOp", "custom0")


def test_unsupported_ops_reported_before_graph_errors(tmp_path):
    """The op check runs first: a model with unknown ops *and* a dangling tensor lists the ops."""
    m = make_model([helper.make_node("Detect", ["x", "nowhere"], ["y"], name="nms0",
                                     domain="com.other")],
                   [vi("x", [1, 4, 4])], [vi("y", [None, 3], TensorProto.INT64)],
                   opsets=(("", 17), ("com.other", 1)))
    has_all(raises(UnsupportedOpError, minicc.import_onnx, m), "Detect", "nms0")


# -- run-time inputs -------------------------------------------------------------------------------


@pytest.fixture
def module():
    return minicc.import_onnx(add_relu())


X = np.ones((2, 3), np.float32)

RUNTIME_CASES = {
    "dtype": ({"x": X.astype(np.float64)}, ["input 'x'", "f64", "f32"]),
    "int dtype": ({"x": X.astype(np.int32)}, ["input 'x'", "i32", "f32"]),
    "shape": ({"x": np.ones((2, 4), np.float32)}, ["input 'x'", "[2, 4]", "f32[2,3]"]),
    "rank": ({"x": np.ones((2, 3, 1), np.float32)}, ["input 'x'", "rank 3", "rank 2"]),
    "scalar": ({"x": np.float32(1)}, ["input 'x'", "rank 0", "f32[2,3]"]),
    "missing": ({}, ["missing 'x'", "f32[2,3]"]),
    "extra": ({"x": X, "bogus": X}, ["unknown 'bogus'", "Expected: x"]),
    "string": ({"x": "hello"}, ["input 'x'", "numpy array", "f32[2,3]", "str"]),
    "None": ({"x": None}, ["input 'x'", "numpy array", "f32[2,3]", "NoneType"]),
    "dict": ({"x": {"a": 1}}, ["input 'x'", "numpy array", "f32[2,3]", "dict"]),
    "ragged list": ({"x": [[1.0, 2.0, 3.0], [4.0]]}, ["input 'x'", "numpy array", "ragged"]),
    "object array": ({"x": np.array([[1, 2, 3], [4, 5, 6]], dtype=object)},
                     ["input 'x'", "object", "f32"]),
}


@pytest.mark.parametrize("case", list(RUNTIME_CASES))
def test_interpret_bad_inputs(module, case):
    inputs, needles = RUNTIME_CASES[case]
    has_all(raises(RuntimeInputError, minicc.interpret, module, inputs), *needles)


@pytest.mark.parametrize("inputs", [[X], None, X], ids=["list", "None", "array"])
def test_interpret_inputs_not_a_mapping(module, inputs):
    msg = raises(RuntimeInputError, minicc.interpret, module, inputs)
    has_all(msg, "dict", "x")


def test_interpret_symbolic_dim_mismatch():
    m = make_model([helper.make_node("Add", ["a", "b"], ["y"], name="add0")],
                   [vi("a", ["N", 3]), vi("b", ["N", 3])], [vi("y", ["N", 3])])
    mod = minicc.import_onnx(m)
    assert minicc.interpret(mod, {"a": X, "b": X})["y"].shape == (2, 3)
    msg = raises(RuntimeInputError, minicc.interpret, mod,
                 {"a": np.ones((5, 3), np.float32), "b": np.ones((4, 3), np.float32)})
    has_all(msg, "input 'b'", "N")


def test_runtime_input_error_is_a_value_error(module):
    with pytest.raises(ValueError):
        minicc.interpret(module, {"x": X.astype(np.float64)})


@pytest.mark.parametrize("case,needles", [
    ("dtype", ["input 'x'", "f64", "f32"]),
    ("shape", ["input 'x'", "[2, 4]", "f32[2,3]"]),
    ("rank", ["input 'x'", "rank 3"]),
    ("garbage", ["input 'x'", "bad.npy"]),
    ("object", ["input 'x'", "bad.npy"]),
    ("missing file", ["input 'x'", "no such file", "bad.npy"]),
])
def test_cli_run_bad_input_file(tmp_path, capsys, case, needles):
    p = save(add_relu(), tmp_path / "m.onnx")
    bad = tmp_path / "bad.npy"
    if case == "dtype":
        np.save(bad, X.astype(np.float64))
    elif case == "shape":
        np.save(bad, np.ones((2, 4), np.float32))
    elif case == "rank":
        np.save(bad, np.ones((2, 3, 4), np.float32))
    elif case == "garbage":
        bad.write_text("not an npy file")
    elif case == "object":
        np.save(bad, np.array([{}], dtype=object), allow_pickle=True)
    cli_error(capsys, ["run", p, "--input", f"x={bad}"], *needles)


def test_cli_run_input_args(tmp_path, capsys):
    p = save(add_relu(), tmp_path / "m.onnx")
    ok = tmp_path / "ok.npy"
    np.save(ok, X)
    cli_error(capsys, ["run", p], "missing inputs", "x (f32[2,3])", "--random-inputs")
    cli_error(capsys, ["run", p, "--input", str(ok)], "bad --input", "NAME=FILE.npy")
    cli_error(capsys, ["run", p, "--input", f"x={tmp_path}"], "input 'x'")
    capsys.readouterr()
    assert main(["run", p, "--input", f"x={ok}"]) == 0
    assert "y: float32[2, 3]" in capsys.readouterr().out


# -- external data ---------------------------------------------------------------------------------

BIG = np.arange(2 * 300, dtype=np.float32).reshape(2, 300)


def external_model(folder: Path) -> Path:
    """y = x + w with w (2400 bytes) in folder/weights.bin."""
    m = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add0")],
                   [vi("x", [2, 300])], [vi("y", [2, 300])], [numpy_helper.from_array(BIG, "w")])
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "model.onnx"
    onnx.save_model(m, str(p), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    assert (folder / "weights.bin").stat().st_size == BIG.nbytes
    return p


def with_external(p: Path, name: str, **fields: str) -> str:
    """A copy of the model at p beside it, with the initializer's external_data fields changed."""
    proto = onnx.load(str(p), load_external_data=False)
    info = {e.key: e.value for e in proto.graph.initializer[0].external_data}
    info.update(fields)
    del proto.graph.initializer[0].external_data[:]
    for k, v in info.items():
        e = proto.graph.initializer[0].external_data.add()
        e.key, e.value = k, v
    out = p.parent / name
    out.write_bytes(proto.SerializeToString())
    return str(out)


def test_external_data_loads_from_its_folder(tmp_path, capsys, monkeypatch):
    p = external_model(tmp_path / "model")
    monkeypatch.chdir(tmp_path)  # the data is found relative to the model, not the cwd
    m = minicc.import_onnx(str(p))
    x = np.ones((2, 300), np.float32)
    np.testing.assert_array_equal(minicc.interpret(m, {"x": x})["y"], x + BIG)
    capsys.readouterr()
    assert main(["run", "model/model.onnx", "--random-inputs"]) == 0
    assert "y: float32[2, 300]" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused(tmp_path, capsys, where):
    p = external_model(tmp_path / "model")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(BIG.tobytes())  # a real file: refusal is not just "file missing"
    if where == "dotdot":
        loc = "../outside.bin"
    elif where == "absolute":
        loc = str(outside)
    else:
        link = tmp_path / "model" / "link.bin"
        try:
            link.symlink_to(outside)
        except (OSError, NotImplementedError):
            pytest.skip("symlinks not available")
        loc = "link.bin"
    bad = with_external(p, "bad.onnx", location=loc)
    msg = raises(FrontendError, minicc.import_onnx, bad)
    has_all(msg, bad, "outside", "tensor 'w'", loc)
    cli_error(capsys, ["import", bad], "outside", "'w'")
    cli_error(capsys, ["run", bad, "--random-inputs"], "outside", "'w'")


def test_external_data_missing_file(tmp_path, capsys):
    p = external_model(tmp_path / "model")
    (tmp_path / "model" / "weights.bin").unlink()
    msg = raises(FrontendError, minicc.import_onnx, str(p))
    has_all(msg, str(p), "weights.bin", "tensor 'w'", "No such file")
    cli_error(capsys, ["import", p], "weights.bin", "'w'")


def test_external_data_truncated_file(tmp_path, capsys):
    p = external_model(tmp_path / "model")
    with open(tmp_path / "model" / "weights.bin", "r+b") as fh:
        fh.truncate(100)
    msg = raises(FrontendError, minicc.import_onnx, str(p))
    has_all(msg, str(p), "weights.bin", "tensor 'w'", "truncated", "100 of 2400")
    cli_error(capsys, ["import", p], "truncated", "'w'")


def test_external_data_truncated_without_length(tmp_path):
    p = external_model(tmp_path / "model")
    with open(tmp_path / "model" / "weights.bin", "r+b") as fh:
        fh.truncate(100)
    proto = onnx.load(str(p), load_external_data=False)
    ext = proto.graph.initializer[0].external_data
    keep = [(e.key, e.value) for e in ext if e.key != "length"]
    del ext[:]
    for k, v in keep:
        e = ext.add()
        e.key, e.value = k, v
    q = tmp_path / "model" / "nolen.onnx"
    q.write_bytes(proto.SerializeToString())
    has_all(raises(FrontendError, minicc.import_onnx, str(q)), "'w'")


@pytest.mark.parametrize("fields,needles", [
    ({"offset": "abc"}, ["offset 'abc'", "non-negative integer"]),
    ({"offset": "-10"}, ["offset '-10'"]),
    ({"length": "lots"}, ["length 'lots'"]),
    ({"offset": "5000"}, ["truncated", "0 of 2400"]),
    ({"location": ""}, ["location ''"]),
    ({"location": "a\x00b"}, ["location"]),
    ({"location": "."}, ["cannot read external data"]),
])
def test_external_data_bad_fields(tmp_path, fields, needles):
    p = external_model(tmp_path / "model")
    bad = with_external(p, "bad.onnx", **fields)
    has_all(raises(FrontendError, minicc.import_onnx, bad), "tensor 'w'", *needles)


def test_external_data_needs_a_path(tmp_path):
    p = external_model(tmp_path / "model")
    proto = onnx.load(str(p), load_external_data=False)
    for model in (proto, proto.SerializeToString()):
        has_all(raises(FrontendError, minicc.import_onnx, model), "tensor 'w'", "weights.bin",
                "from its path")


# -- IR text ---------------------------------------------------------------------------------------

GOOD_MIR = "func @main(%x: f32[2,3]) -> (f32[2,3]) {\n  %y = relu(%x) : f32[2,3]\n  return %y\n}\n"


@pytest.mark.parametrize("text,where,why", [
    (GOOD_MIR.replace(": f32[2,3]\n  return", ": f32[2,3\n  return"), "3:3", "expected ']'"),
    (GOOD_MIR.replace("relu(", "nosuchop("), "2:8", "unknown op 'nosuchop'"),
    (GOOD_MIR.replace("relu(%x)", "relu(%z)"), "2:13", "undefined value %z"),
    (GOOD_MIR.replace("%y = relu", "%y = relu $"), "2:13", "unexpected character"),
])
def test_mir_syntax_error(tmp_path, capsys, text, where, why):
    p = tmp_path / "bad.mir"
    p.write_text(text)
    line, col = map(int, where.split(":"))
    with pytest.raises(ParseError) as ei:
        parse(text, path=str(p))
    assert (ei.value.line, ei.value.col) == (line, col)
    has_all(str(ei.value), f"{p}:{where}:", why)
    err = cli_error(capsys, ["run", p, "--random-inputs"], f"{p}:{where}:", why)
    assert re.search(r"bad\.mir:\d+:\d+: ", err)


def test_mir_unreadable(tmp_path, capsys):
    p = tmp_path / "bin.mir"
    p.write_bytes(b"\xff\xfe\x00 not utf-8")
    cli_error(capsys, ["run", p, "--random-inputs"], str(p), "cannot read")
    cli_error(capsys, ["run", tmp_path / "nope.mir", "--random-inputs"], "nope.mir",
              "no such file")
    cli_error(capsys, ["run", p.with_name("x.mir"), "--compare", "onnxruntime"], "x.mir")


# -- --input-shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,needles", [
    ("x", ["bad --input-shape 'x'", "NAME=D0,D1"]),
    ("x=1,,3", ["bad dimension ''", "'x=1,,3'"]),
    ("x=1,-3", ["bad dimension '-3'"]),
    ("x=1.5,3", ["bad dimension '1.5'"]),
    ("x=N M,3", ["bad dimension 'N M'"]),
    ("nope=2,3", ["no graph input named 'nope'", "inputs: x"]),
])
@pytest.mark.parametrize("cmd", ["import", "run"])
def test_malformed_input_shape(tmp_path, capsys, spec, needles, cmd):
    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu0")],
                   [vi("x", ["N", 3])], [vi("y", ["N", 3])])
    p = save(m, tmp_path / "sym.onnx")
    extra = ["--random-inputs"] if cmd == "run" else []
    cli_error(capsys, [cmd, p, "--input-shape", spec, *extra], *needles)


def test_symbolic_input_shape_ok(tmp_path, capsys):
    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu0")],
                   [vi("x", ["N", 3])], [vi("y", ["N", 3])])
    p = save(m, tmp_path / "sym.onnx")
    for spec, sig in (("x=batch,3", "f32[batch,3]"), ("x=4,3", "f32[4,3]")):
        capsys.readouterr()
        assert main(["import", p, "--input-shape", spec]) == 0
        assert f"%x: {sig}" in capsys.readouterr().out


# -- corrupted protobufs (regressions found by fuzzing) --------------------------------------------


def test_non_utf8_node_name(tmp_path, capsys):
    data = bytearray(add_relu().SerializeToString())
    i = data.index(b"relu0")
    data[i] = 0xFF
    p = tmp_path / "m.onnx"
    p.write_bytes(bytes(data))
    has_all(raises(FrontendError, minicc.import_onnx, str(p)), str(p), "UTF-8")
    cli_error(capsys, ["import", p], "UTF-8")


def test_nodes_without_name_or_outputs(tmp_path):
    m = make_model([helper.make_node("NonMaxSuppression", ["x"], [])], [vi("x", [2])],
                   [vi("x", [2])])
    has_all(raises(FrontendError, minicc.import_onnx, m), "NonMaxSuppression", "input size 1")
    m = make_model([helper.make_node("Relu", ["nowhere"], [])], [vi("x", [2])], [vi("x", [2])])
    has_all(raises(FrontendError, minicc.import_onnx, m), "Relu", "output size 0")


@pytest.mark.parametrize("attr_type", [onnx.AttributeProto.UNDEFINED, onnx.AttributeProto.FLOAT])
def test_attribute_of_the_wrong_type(tmp_path, capsys, attr_type):
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool0", kernel_shape=[2, 2])
    node.attribute[0].type = attr_type
    m = make_model([node], [vi("x", [1, 1, 4, 4])], [vi("y", [1, 1, 2, 2])])
    p = save(m, tmp_path / "m.onnx")
    name = onnx.AttributeProto.AttributeType.Name(attr_type)
    msg = raises(FrontendError, minicc.import_onnx, p)
    has_all(msg, "MaxPool node 'pool0'", "kernel_shape", name, "INTS")
    cli_error(capsys, ["import", p], "pool0", "kernel_shape")


def test_random_corruption_never_crashes():
    """Byte-level mutations of a small CNN: every failure is a MiniccError."""
    rng = np.random.default_rng(1234)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    shp = numpy_helper.from_array(np.array([1, -1], np.int64), "shp")
    m = make_model([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0",
                                     pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["r"], name="relu0"),
                    helper.make_node("MaxPool", ["r"], ["p"], name="pool0", kernel_shape=[2, 2],
                                     strides=[2, 2]),
                    helper.make_node("Reshape", ["p", "shp"], ["f"], name="flat0"),
                    helper.make_node("Softmax", ["f"], ["y"], name="sm0", axis=1)],
                   [vi("x", ["N", 3, 8, 8])], [vi("y", ["N", 64])], [w, b, shp])
    data = m.SerializeToString()
    from minicc.ir.interpret import random_inputs

    ok = 0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for _ in range(300):
            d = bytearray(data)
            for _ in range(int(rng.integers(1, 4))):
                d[int(rng.integers(len(d)))] = int(rng.integers(256))
            try:
                mod = minicc.import_onnx(bytes(d))
                minicc.interpret(mod, random_inputs(mod.main, 0))
                ok += 1
            except MiniccError:
                pass
    assert ok > 0  # some mutations are harmless (weights); the rest fail cleanly


def test_cli_debug_shows_traceback(tmp_path, capsys):
    p = tmp_path / "missing.onnx"
    assert main(["--debug", "import", str(p)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "minicc: error: " in err


def test_paths_in_messages_are_the_ones_given(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("rel.onnx").write_bytes(b"junk junk junk")
    err = cli_error(capsys, ["import", "rel.onnx"], "'rel.onnx'")
    assert os.fspath(tmp_path) not in err
