"""INT8 post-training quantization: the calibrators on known distributions, the rewrite on a
small CNN (integer kernels, requantization fused, close to float), real accuracy on the
scikit-learn digits, mixed precision, the CLI, QDQ export run by onnxruntime, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import minicc
from minicc.calibration import BINS, Observer, QParams, calibration_batches, tensor_range
from minicc.cli import main
from minicc.errors import MiniccError
from minicc.quantization import quantize
from minicc.runtime.llvm_host import host_features
from tests.test_tune import small_model

# onnxruntime's fused u8 x s8 kernels on a CPU without AVX-512 VNNI go through vpmaddubsw, which
# saturates 16-bit pair sums (what its reduce_range works around): there its output is off by
# several quantization steps (Zen 3: 5 steps on the QDQ cnn below, while minicc's int8 kernels
# equal the unfused QDQ graph exactly), so the reference runs the QDQ graph unfused
VNNI = "+avx512vnni" in host_features()[1].split(",")


def ort_reference(path: Path | str):  # type: ignore[no-untyped-def]
    """onnxruntime as the reference for a QDQ model: fused where the CPU has VNNI, else the
    graph as written (DequantizeLinear, float ops, QuantizeLinear: the exact semantics)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not VNNI:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ---- calibrators ------------------------------------------------------------------------------

def observed(*arrays: np.ndarray) -> Observer:
    o = Observer()
    for a in arrays:
        o.update(a)
    return o


def test_minmax_is_the_observed_range_and_memory_is_bounded() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, 1 + k, 10_000).astype(np.float32) for k in range(5)]
    o = observed(*batches)
    allv = np.concatenate(batches)
    assert tensor_range(o, "minmax") == (float(allv.min()), float(allv.max()))
    assert o.hist.shape == (BINS,) and o.hist.sum() == allv.size     # re-binned, none lost
    assert o.edge >= np.abs(allv).max()


def test_percentile_and_entropy_clip_outliers_that_minmax_keeps() -> None:
    rng = np.random.default_rng(1)
    x = np.abs(rng.laplace(0, 1, 200_000)).astype(np.float32)
    x[:20] = 60.0                                         # a few far outliers
    o = observed(x)
    mm = tensor_range(o, "minmax")[1]
    pc = tensor_range(o, "percentile", 99.99)[1]
    en = tensor_range(o, "entropy")[1]
    assert mm == 60.0
    assert pc == pytest.approx(np.percentile(x, 99.99), rel=0.05)
    assert 3 < en < 30 and en != pytest.approx(pc, rel=0.01)  # a third answer, not min/max


def test_zeros_do_not_drag_the_entropy_threshold() -> None:
    rng = np.random.default_rng(2)
    relu = np.maximum(rng.normal(0, 1, 100_000), 0).astype(np.float32)   # half exact zeros
    t = tensor_range(observed(relu), "entropy")[1]
    assert t > 0.6 * relu.max()


def test_qparams() -> None:
    p = QParams.of(0.0, 2.55, False)
    assert p.zero_point == 0 and p.scale == pytest.approx(0.01)
    p = QParams.of(-1.0, 3.0, False)
    assert p.zero_point == 64 and p.scale == pytest.approx(4 / 255)
    p = QParams.of(-1.0, 2.54, True)
    assert p.zero_point == 128 and p.scale == pytest.approx(0.02)


# ---- the rewrite ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_model(tmp_path_factory.mktemp("q") / "small.onnx")


@pytest.fixture(scope="module")
def q(model: Path):  # type: ignore[no-untyped-def]
    return quantize(str(model), "random:16", "minmax", progress=False)


def test_quantized_model_runs_integer_kernels_close_to_float(q) -> None:  # type: ignore
    cm = minicc.compile(q.module, threads=1)
    kinds = [k["ops"] for k in cm.artifact.summary["kernels"]]
    assert kinds[0] == ["mul", "round", "clip", "cast"]          # the input, quantized
    # scale, activation and the next layer's quantize in the epilogue: the conv writes u8, the
    # max pool moves u8 (quantizing commutes with it), the matmul reads u8
    assert kinds[1] == ["conv_integer", "cast", "mul", "relu", "mul", "round", "clip", "cast"]
    assert kinds[2] == ["max_pool"] and cm.artifact.summary["kernels"][2]["output"].startswith(
        "u8")
    assert kinds[3] == ["matmul_integer", "cast", "mul"]
    err, _ = q.error()
    assert 0 < err < 0.02


def test_compiled_int8_matches_the_interpreter(q) -> None:  # type: ignore[no-untyped-def]
    cm = minicc.compile(q.module, threads=1)
    for fd in q.feeds[:4]:
        ref = minicc.interpret(q.module, fd)["y"]
        np.testing.assert_allclose(cm.run(fd)["y"], ref, rtol=1e-5, atol=1e-5)


def test_keep_float_is_mixed_precision(model: Path) -> None:
    q = quantize(str(model), "random:4", "minmax", keep_float=["y"], progress=False)
    ops = [op.kind for op in q.module.main.ops]
    assert "conv_integer" in ops and "matmul_integer" not in ops and q.kept_float == ["y"]


def test_sensitivity_and_the_proposal(q) -> None:  # type: ignore[no-untyped-def]
    table = q.sensitivity(progress=False)
    assert {r.name for r in table} == set(q.layers) and table[0].rel_l2 >= table[-1].rel_l2
    keep, err = q.propose_float(q.error()[0] / 10, table, progress=False)
    assert keep and err <= q.error()[0]


# ---- bad input ----------------------------------------------------------------------------

def test_bad_calibration_data_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    sig = [("x", minicc.import_onnx(str(model)).main.inputs[0].type)]
    with pytest.raises(MiniccError, match=r"input 'x' has shape \[1, 3, 4, 4\], the model "
                                          r"wants \[1, 3, 8, 8\]"):
        calibration_batches([{"x": np.zeros((1, 3, 4, 4), np.float32)}], sig)
    with pytest.raises(MiniccError, match="input 'x' is float64, the model wants f32"):
        calibration_batches([{"x": np.zeros((1, 3, 8, 8))}], sig)
    with pytest.raises(MiniccError, match="empty"):
        calibration_batches([], sig)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MiniccError, match="empty"):
        calibration_batches(tmp_path / "empty", sig)
    with pytest.raises(MiniccError, match="no such file"):
        calibration_batches(tmp_path / "nope.npz", sig)
    np.save(tmp_path / "a.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert len(calibration_batches(tmp_path / "a.npy", sig)) == 1
    with pytest.raises(MiniccError, match=r"no quantizable node named 'yy' \(did you mean y"):
        quantize(str(model), "random:2", keep_float=["yy"], progress=False)
    with pytest.raises(MiniccError, match="unknown calibration method 'kl'"):
        quantize(str(model), "random:2", "kl", progress=False)


# ---- CLI and QDQ export -----------------------------------------------------------------------

def test_cli_quantize_writes_ir_and_a_qdq_model_onnxruntime_runs(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ort = pytest.importorskip("onnxruntime")
    np.savez(tmp_path / "c0.npz", x=np.random.default_rng(0).random((1, 3, 8, 8), np.float32))
    np.savez(tmp_path / "c1.npz", x=np.random.default_rng(1).random((1, 3, 8, 8), np.float32))
    mir, qdq = tmp_path / "m.int8.mir", tmp_path / "m.qdq.onnx"
    assert main(["quantize", str(model), "--calib", str(tmp_path), "--method", "percentile",
                 "-o", str(mir), "--export-qdq", str(qdq), "--analyze",
                 "--target-error", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert "sensitivity" in out and "keep" in out and "relative L2" in out
    qm = minicc.compile(str(mir), threads=1)
    m = onnx.load(str(qdq))
    onnx.checker.check_model(m)
    assert {n.op_type for n in m.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv"}
    x = np.random.default_rng(5).random((1, 3, 8, 8), np.float32)
    s = ort_reference(qdq)
    y_ort = s.run(None, {"x": x})[0]
    y = qm.run({"x": x})["y"]
    ref = minicc.compile(str(model), threads=1).run({"x": x})["y"]
    step = np.abs(ref).max() / 127                 # about one output quantization step
    assert np.abs(y_ort - y).max() < 4 * step
    assert main(["quantize", str(model)]) == 2
    assert "needs --calib" in capsys.readouterr().err


def test_a_residual_skip_reads_the_quantized_activation(tmp_path: Path) -> None:
    """conv1's output feeds conv1b (quantized) and the residual Add: the Add reads it
    dequantized from u8, as a QDQ graph's skip connection does, so conv1's kernel writes only
    u8 (no f32 copy and no kernel of its own quantizing it); the QDQ export computes the same,
    and onnxruntime running it agrees within a quantization step."""
    src = cnn(tmp_path / "res.onnx", residual=True)
    q = quantize(str(src), "random:8", "minmax", progress=False)
    cm = minicc.compile(q.module, threads=1)
    ks = cm.artifact.summary["kernels"]
    assert ks[0]["ops"] == ["mul", "round", "clip", "cast"]        # the input, quantized
    assert ks[1]["ops"][0] == "conv_integer" and ks[1]["output"].startswith("u8")
    assert sum(k["ops"][0] == "mul" for k in ks) == 1              # no other quantize kernel
    residual = next(k for k in ks if k["ops"].count("add") >= 2)
    assert residual["ops"][0] == "conv_integer"
    fd = q.feeds[0]
    np.testing.assert_allclose(cm.run(fd)["y"], minicc.interpret(q.module, fd)["y"],
                               rtol=1e-5, atol=1e-5)
    pytest.importorskip("onnxruntime")
    from minicc.onnx_export import export_qdq

    qdq = export_qdq(q, tmp_path / "res.qdq.onnx")
    add = next(n for n in onnx.load(str(qdq)).graph.node if n.op_type == "Add")
    assert all(i.endswith("_dq") for i in add.input if not i.startswith("c1b"))
    y_ort = ort_reference(qdq).run(None, fd)[0]
    step = np.abs(cm.run(fd)["y"]).max() / 127
    assert np.abs(y_ort - cm.run(fd)["y"]).max() < 2 * step


def _stem_block(path: Path) -> Path:
    """conv-relu-maxpool (a ResNet stem), whose pooled output feeds a conv and the block's
    residual add."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w0 = (rng.standard_normal((8, 3, 3, 3)) * 0.4).astype(np.float32)
    w1 = (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("MaxPool", ["r0"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["p", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Add", ["r1", "p"], ["y"])]
    g = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 16, 16])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_pooled_skip_is_pooled_in_u8(tmp_path: Path) -> None:
    """The stem's max pool feeds the next conv and the residual add: the quantize moves above
    the pool all the same (the add reads the pooled u8 dequantized), so the stem conv writes
    u8 and the pool moves u8; the compiled model matches the interpreter exactly, and the
    float model within a few quantization steps."""
    src = _stem_block(tmp_path / "stem.onnx")
    q = quantize(str(src), "random:8", "minmax", progress=False)
    cm = minicc.compile(q.module, threads=1, cache=False)
    ks = cm.artifact.summary["kernels"]
    stem = next(k for k in ks if k["ops"][0] == "conv_integer")
    assert stem["output"].startswith("u8")
    pool = next(k for k in ks if k["ops"] == ["max_pool"])
    assert pool["output"].startswith("u8")
    fd = q.feeds[0]
    got = cm.run(fd)["y"]
    np.testing.assert_allclose(got, minicc.interpret(q.module, fd)["y"], rtol=1e-5, atol=1e-5)
    ref = minicc.compile(str(src), threads=1, cache=False).run(fd)["y"]
    assert np.abs(got - ref).max() < 4 * np.abs(ref).max() / 127


# ---- real data ------------------------------------------------------------------------------

def test_digits_int8_accuracy_within_one_point(tmp_path: Path) -> None:
    """A CNN trained on scikit-learn's handwritten digits: INT8 top-1 on the held-out split
    within one point of FP32, for every calibrator."""
    pytest.importorskip("sklearn")
    from tests.e2e.examples import example_module

    dc = example_module("digits_cnn")
    onnx_path, npz = dc.export(tmp_path, epochs=8)
    d = np.load(npz)
    xtr, xte, yte = d["x_train"], d["x_test"], d["y_test"]

    def top1(cm: minicc.CompiledModel) -> float:
        return float(np.mean([np.argmax(cm.run({"x": xte[i:i + 1]})["logits"]) == yte[i]
                              for i in range(len(xte))]))
    fp32 = top1(minicc.compile(str(onnx_path), threads=1))
    assert fp32 > 0.9
    calib = [{"x": xtr[i:i + 1]} for i in range(0, len(xtr), 8)]
    for method in ("minmax", "entropy", "percentile"):
        q = quantize(str(onnx_path), calib, method, progress=False)
        assert top1(minicc.compile(q.module, threads=1)) >= fp32 - 0.01, method


# ---- quantized models from onnxruntime --------------------------------------------------------

def cnn(path: Path, qoperator_friendly: bool = False, residual: bool = False) -> Path:
    """conv3x3-relu, conv3x3 (stride 2)-relu, global pool, gemm: a small classifier. With
    `qoperator_friendly`, a flatten and a MatMul instead of the pool and the Gemm (onnxruntime's
    QOperator format writes those two as com.microsoft contrib ops). With `residual`, a
    residual block after the first conv: conv3x3, add, relu (QLinearAdd in QOperator)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)

    def t(name: str, *shape: int) -> onnx.TensorProto:
        fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        a = rng.standard_normal(shape) * np.sqrt(2 / fan) if len(shape) > 1 else \
            rng.standard_normal(shape) * 0.1
        return helper.make_tensor(name, TensorProto.FLOAT, shape, a.astype(np.float32).ravel())

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1],
                              strides=[2, 2], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc")]
    fc = t("wf", 32, 10)
    if qoperator_friendly:
        nodes = nodes[:4] + [helper.make_node("Flatten", ["r2"], ["f"]),
                             helper.make_node("MatMul", ["f", "wf"], ["y"], name="fc")]
        fc = t("wf", 32 * 8 * 8, 10)
    extra = []
    if residual:
        nodes = nodes[:2] + [
            helper.make_node("Conv", ["r1", "w1b", "b1b"], ["c1b"], pads=[1, 1, 1, 1],
                             name="conv1b"),
            helper.make_node("Add", ["r1", "c1b"], ["s1"], name="residual"),
            helper.make_node("Relu", ["s1"], ["r1s"])] + nodes[2:]
        nodes[5].input[0] = "r1s"
        extra = [t("w1b", 16, 16, 3, 3), t("b1b", 16)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 16, 16])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 10])],
        [t("w1", 16, 3, 3, 3), t("b1", 16), t("w2", 32, 16, 3, 3), t("b2", 32), fc]
        + ([] if qoperator_friendly else [t("bf", 10)]) + extra)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def ort_quantize_static(src: Path, dst: Path, act: str, fmt: str) -> None:
    """onnxruntime's quantize_static on 8 seeded random inputs: per-channel s8 weights,
    activations `act` (QInt8 or QUInt8), format `fmt` (QDQ or QOperator)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": rng.random((1, 3, 16, 16), np.float32)} for _ in range(8)])

        def get_next(self) -> dict | None:
            return next(self.it, None)
    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=True, activation_type=getattr(QuantType, act),
                    weight_type=QuantType.QInt8)


def _matches_onnxruntime(cm: object, path: Path, seed0: int, act: str) -> None:
    """The compiled QOperator model against onnxruntime on three seeded inputs (QLinearConv
    is onnxruntime's own u8 x s8 kernel: without VNNI it saturates, see VNNI above)."""
    import onnxruntime as ort

    if act == "QUInt8" and not VNNI:
        pytest.skip("onnxruntime's u8 x s8 QLinearConv saturates without AVX-512 VNNI")
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in range(3):
        x = np.random.default_rng(seed + seed0).random((1, 3, 16, 16), np.float32)
        np.testing.assert_allclose(cm.run({"x": x})["y"], s.run(None, {"x": x})[0],  # type: ignore
                                   atol=1e-6)


@pytest.mark.parametrize("act", ["QInt8", "QUInt8"])
def test_a_qoperator_model_qlinearconv_qlinearmatmul_matches_onnxruntime(tmp_path: Path,
                                                                        act: str) -> None:
    """quantize_static(quant_format=QOperator): QLinearConv and QLinearMatMul, s8 or u8
    activations, onto conv_integer / matmul_integer with the requantization fused."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    src, dst = cnn(tmp_path / "cnn.onnx", True), tmp_path / "cnn.qop.onnx"
    ort_quantize_static(src, dst, act, "QOperator")
    kinds = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QLinearConv", "QLinearMatMul"} <= kinds
    cm = minicc.compile(str(dst), threads=1)
    ops = [op for k in cm.artifact.summary["kernels"] for op in k["ops"]]
    assert ops.count("conv_integer") == 2 and ops.count("matmul_integer") == 1
    _matches_onnxruntime(cm, dst, 20, act)


@pytest.mark.parametrize("act", ["QInt8", "QUInt8"])
def test_a_qoperator_residual_block_qlinearadd_matches_onnxruntime(tmp_path: Path,
                                                                   act: str) -> None:
    """The residual add of a QOperator model is onnxruntime's com.microsoft QLinearAdd."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    src, dst = cnn(tmp_path / "cnn.onnx", True, residual=True), tmp_path / "cnn.qop.onnx"
    ort_quantize_static(src, dst, act, "QOperator")
    assert "QLinearAdd" in {n.op_type for n in onnx.load(str(dst)).graph.node}
    cm = minicc.compile(str(dst), threads=1)
    _matches_onnxruntime(cm, dst, 30, act)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dt", ["uint8", "int8"])
def test_qlinear_add_and_mul_match_onnxruntime_exactly(op: str, dt: str) -> None:
    """Broadcasting, zero points on every side, both integer types: bit-exact."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    npdt = np.dtype(dt)
    et = helper.np_dtype_to_tensor_dtype(npdt)
    signed = npdt == np.int8
    consts = {"as": np.float32(0.05), "az": npdt.type(-3 if signed else 3),
              "bs": np.float32(0.02), "bz": npdt.type(5 if signed else 128),
              "cs": np.float32(0.07 if op == "QLinearAdd" else 0.3),
              "cz": npdt.type(0 if signed else 10)}
    node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "cs", "cz"], ["c"],
                            domain="com.microsoft")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", et, [2, 3, 4, 5]),
                                        helper.make_tensor_value_info("b", et, [1, 3, 1, 5])],
                          [helper.make_tensor_value_info("c", et, [2, 3, 4, 5])],
                          [numpy_helper.from_array(np.array(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    rng, info = np.random.default_rng(0), np.iinfo(npdt)
    feeds = {"a": rng.integers(info.min, info.max + 1, (2, 3, 4, 5)).astype(npdt),
             "b": rng.integers(info.min, info.max + 1, (1, 3, 1, 5)).astype(npdt)}
    ref = ort.InferenceSession(m.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = minicc.compile(m, threads=1).run(feeds)["c"]
    assert got.dtype == npdt
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("act", ["QInt8", "QUInt8"])
def test_a_quantize_static_model_runs_on_the_int8_kernels(tmp_path: Path, act: str) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    src, dst = cnn(tmp_path / "cnn.onnx"), tmp_path / "cnn.qdq.onnx"
    ort_quantize_static(src, dst, act, "QDQ")
    cm = minicc.compile(str(dst), threads=1)
    ops = [k["ops"][0] for k in cm.artifact.summary["kernels"]]
    assert ops.count("conv_integer") == 2 and "matmul_integer" in ops
    s = ort_reference(dst)
    m = onnx.load(str(dst))
    out_scale = [numpy_helper_scale(m, n) for n in m.graph.node
                 if n.op_type == "DequantizeLinear" and n.output[0] == "y"]
    assert out_scale, "the QDQ model dequantizes its output"
    step = out_scale[0]
    for seed in range(3):
        x = np.random.default_rng(seed + 10).random((1, 3, 16, 16), np.float32)
        diff = np.abs(cm.run({"x": x})["y"] - s.run(None, {"x": x})[0]).max()
        assert diff <= 1.01 * step, (diff, step)


def numpy_helper_scale(m: onnx.ModelProto, n: onnx.NodeProto) -> float:
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return float(inits[n.input[1]].reshape(-1)[0])


def test_a_qdq_model_with_a_zero_scale_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant_x"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "zero", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                      [4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("z", TensorProto.UINT8, [], [0])])
    p = tmp_path / "zero.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    with pytest.raises(MiniccError, match=r"QuantizeLinear node 'quant_x': scale 's' holds "
                                          r"0\.0: a quantization scale must be positive"):
        minicc.compile(str(p))


def test_compile_precision_int8_and_mixed(model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.mcc"
    assert main(["compile", str(model), "--precision", "int8", "--calib", "random:4",
                 "--threads", "1", "-o", str(out)]) == 0
    assert "conv_integer" in capsys.readouterr().out
    assert "conv_integer" in str(minicc.load(str(out)).artifact.summary)
    assert main(["compile", str(model), "--precision", "mixed", "--calib", "random:4",
                 "--keep-float", "c", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "matmul_integer" in text and "conv_integer" not in text
    assert main(["compile", str(model), "--precision", "int8"]) == 2
    assert "needs --calib" in capsys.readouterr().err


def test_an_int8_model_compiles_for_cuda(q) -> None:  # type: ignore[no-untyped-def]
    """NVRTC compiles the integer kernels (generic GPU loop nests; no GPU needed)."""
    from minicc.codegen.cuda.nvrtc import nvrtc_available

    why = nvrtc_available()
    if why is not None:
        pytest.skip(f"no NVRTC: {why}")
    cm = minicc.compile(q.module, target="cuda", dump=("cuda",), cache=False)
    assert "__global__" in cm.report.dumps["cuda"]
    assert [k["ops"][0] for k in cm.artifact.summary["kernels"]].count("conv_integer") == 1


def crnn(path: Path) -> Path:
    """An OCR-style recognizer: two conv-relu layers over a 4x32 strip, the columns as a
    sequence through a bidirectional LSTM, a linear layer per step."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    H = 16

    def t(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape, (rng.standard_normal(
            shape) * 0.2).astype(np.float32).ravel())

    def i64(name: str, *v: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.INT64, [len(v)], list(v))
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Reshape", ["r2", "shape"], ["s"]),
             helper.make_node("Transpose", ["s"], ["seq"], perm=[2, 0, 1]),
             helper.make_node("LSTM", ["seq", "W", "R", "B"], ["Y"], hidden_size=H,
                              direction="bidirectional"),
             helper.make_node("Reshape", ["Y", "shape2"], ["Yr"]),
             helper.make_node("MatMul", ["Yr", "wf"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "crnn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 1, 4, 32])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [32, 11])],
        [t("w1", 8, 1, 3, 3), t("b1", 8), t("w2", 8, 8, 3, 3), t("b2", 8),
         t("W", 2, 4 * H, 32), t("R", 2, 4 * H, H), t("B", 2, 8 * H), i64("shape", 1, 32, 32),
         i64("shape2", 32, 2 * H), t("wf", 2 * H, 11)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_quantize_dynamic_crnn_runs_on_the_int8_kernels(tmp_path: Path) -> None:
    """ConvInteger, MatMulInteger and DynamicQuantizeLinear (scale and zero point computed at
    run time) from onnxruntime's quantize_dynamic; the LSTM stays float (op_types_to_quantize
    leaves it out: its dynamic form is a com.microsoft contrib op)."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = crnn(tmp_path / "crnn.onnx"), tmp_path / "crnn.dyn.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["Conv", "MatMul"])
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} <= {
        n.op_type for n in onnx.load(str(dst)).graph.node}
    cm = minicc.compile(str(dst), threads=1)
    ops = [op for k in cm.artifact.summary["kernels"] for op in k["ops"]]
    assert ops.count("conv_integer") == 2 and ops.count("matmul_integer") == 1
    s = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    for seed in range(3):
        x = np.random.default_rng(seed).random((1, 1, 4, 32), np.float32)
        r = s.run(None, {"x": x})[0]
        np.testing.assert_allclose(cm.run({"x": x})["y"], r, rtol=1e-5,
                                   atol=1e-5 * np.abs(r).max())


def separable(path: Path) -> Path:
    """conv 1x1 (3 -> 16)-relu, depthwise 3x3 (16 ch)-relu, conv 1x1 (16 -> 8): a MobileNet
    block's shape on a 10x10 map."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, s).astype(np.float32), n)
             for n, s in (("w1", (16, 3, 1, 1)), ("w2", (16, 1, 3, 3)), ("w3", (8, 16, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="expand"),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "w2"], ["b"], name="dw", group=16, pads=[1] * 4),
             helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("Conv", ["br", "w3"], ["y"], name="project")]
    g = helper.make_graph(nodes, "sep", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 10, 10])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, 10, 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_depthwise_convs_are_quantized_unless_kept_float(tmp_path: Path) -> None:
    """By default the depthwise conv runs int8 too (its own template, exact against the
    interpreter); --float-depthwise / depthwise=False leaves it float; both near float."""
    from minicc.tools import load_mir

    src = separable(tmp_path / "sep.onnx")
    x = np.random.default_rng(6).random((1, 3, 10, 10), np.float32)
    ref = minicc.compile(str(src), threads=1).run({"x": x})["y"]
    for kw, dw_int8 in (({}, True), ({"depthwise": False}, False)):
        q = quantize(str(src), "random:8", "minmax", progress=False, **kw)
        assert ("dw" in q.layers) == dw_int8 and len(q.layers) == 2 + dw_int8
        cm = minicc.compile(q.module, threads=1)
        convs = [k for k in cm.artifact.summary["kernels"] if k["ops"][0] in ("conv",
                                                                               "conv_integer")]
        assert [k["ops"][0] for k in convs][1] == ("conv_integer" if dw_int8 else "conv")
        y = cm.run({"x": x})["y"]
        np.testing.assert_allclose(y, minicc.interpret(q.module, {"x": x})["y"], rtol=1e-5,
                                   atol=1e-5)
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.05
    out = tmp_path / "f.int8.mir"
    assert main(["quantize", str(src), "--calib", "random:4", "--float-depthwise",
                 "-o", str(out)]) == 0
    kinds = [op.kind for op in load_mir(out).main.ops]
    assert kinds.count("conv_integer") == 2 and kinds.count("conv") == 1
