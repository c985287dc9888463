"""The mutation campaign: small valid models, each given one semantic defect (an attribute
changed, added, removed or retyped; a dimension, opset or dtype changed; an input left dangling,
made to reference its own node, or swapped; an initializer's dims changed), run through minicc
(compile and run) and onnxruntime, and classified:

    both-ok           both ran; the outputs must agree (else: mismatch)
    both-refused      both refused it
    minicc-stricter   minicc refused what onnxruntime ran
    accepted-invalid  minicc ran what onnxruntime refused (each must be a listed exception)
    internal          minicc raised something other than a MiniccError (a bug)
    crash             the worker process died (a bug)

Workers are subprocesses, so a segfault is counted, not lost:

    python -m tests.fuzz.mutations --cases 5000 --seed 0 [--jobs 2]

The default test run takes a seeded sample (tests/fuzz/test_mutations.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from collections import Counter
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT

# onnxruntime refuses these, minicc runs them, and minicc is right (see the reasons)
ACCEPTED = {
    "old-opset": "opset 1-6 models are valid ONNX; onnxruntime has no kernels for many of their "
                 "ops. minicc computes them with the semantics of that opset",
}


def _t(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(a, name)


def seeds() -> list[onnx.ModelProto]:
    """The valid models every mutation starts from."""
    rng = np.random.default_rng(7)

    def r(*s: int) -> np.ndarray:
        return rng.standard_normal(s).astype(np.float32)

    def model(nodes: list, x: list, inits: list, opset: int = 17) -> onnx.ModelProto:
        g = helper.make_graph(nodes, "seed", [helper.make_tensor_value_info("x", F, x)],
                              [helper.make_tensor_value_info("y", F, None)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return m
    return [
        model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                                strides=[1, 1], kernel_shape=[3, 3], name="conv"),
               helper.make_node("Relu", ["c"], ["r"], name="relu"),
               helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                                name="pool")],
              [1, 3, 8, 8], [_t("w", r(4, 3, 3, 3)), _t("b", r(4))]),
        model([helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
               helper.make_node("Add", ["m", "b"], ["a"], name="add"),
               helper.make_node("Softmax", ["a"], ["y"], axis=-1, name="softmax")],
              [2, 5, 6], [_t("w", r(6, 7)), _t("b", r(7))]),
        model([helper.make_node("Conv", ["x", "w"], ["c"], group=4, kernel_shape=[3, 3],
                                pads=[1, 1, 1, 1], dilations=[1, 1], name="dw"),
               helper.make_node("BatchNormalization", ["c", "s", "o", "mu", "var"], ["n"],
                                epsilon=1e-5, name="bn"),
               helper.make_node("AveragePool", ["n"], ["y"], kernel_shape=[3, 3],
                                strides=[2, 2], pads=[1, 1, 1, 1], name="avg")],
              [1, 4, 9, 9], [_t("w", r(4, 1, 3, 3)), _t("s", r(4)), _t("o", r(4)),
                             _t("mu", r(4)), _t("var", np.abs(r(4)) + 0.5)]),
        model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1], name="tr"),
               helper.make_node("Reshape", ["t", "shape"], ["rs"], name="reshape"),
               helper.make_node("Concat", ["rs", "rs"], ["cc"], axis=1, name="concat"),
               helper.make_node("ReduceMean", ["cc"], ["y"], keepdims=1, axes=[1],
                                name="mean")],
              [2, 3, 4], [_t("shape", np.array([2, -1], np.int64))], opset=17),
        model([helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1, alpha=0.5,
                                name="gemm"),
               helper.make_node("LeakyRelu", ["g"], ["l"], alpha=0.1, name="leaky"),
               helper.make_node("Pad", ["l", "pads"], ["y"], mode="reflect", name="pad")],
              [3, 8], [_t("w", r(5, 8)), _t("b", r(5)),
                       _t("pads", np.array([0, 1, 0, 1], np.int64))]),
        model([helper.make_node("Resize", ["x", "", "scales"], ["rz"], mode="nearest",
                                name="resize"),
               helper.make_node("Slice", ["rz", "st", "en", "ax"], ["sl"], name="slice"),
               helper.make_node("Sigmoid", ["sl"], ["y"], name="sigmoid")],
              [1, 2, 4, 4], [_t("scales", np.array([1, 1, 2, 2], np.float32)),
                             _t("st", np.array([1, 1], np.int64)),
                             _t("en", np.array([7, 6], np.int64)),
                             _t("ax", np.array([2, 3], np.int64))]),
    ]


# ---- the mutations ---------------------------------------------------------------------------

def _node(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.NodeProto:
    return m.graph.node[int(rng.integers(len(m.graph.node)))]


def attr_value(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    nodes = [n for n in m.graph.node if any(a.type in (onnx.AttributeProto.INT,
                                                       onnx.AttributeProto.INTS,
                                                       onnx.AttributeProto.FLOAT)
                                            for a in n.attribute)]
    if not nodes:
        return "none"
    n = nodes[int(rng.integers(len(nodes)))]
    a = n.attribute[int(rng.integers(len(n.attribute)))]
    v = int(rng.choice([-3, -1, 0, 1, 2, 5, 10 ** 9]))
    if a.type == onnx.AttributeProto.INTS and a.ints:
        a.ints[int(rng.integers(len(a.ints)))] = v
    elif a.type == onnx.AttributeProto.INT:
        a.i = v
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = float(rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30]))
    return f"{n.name}.{a.name}"


def attr_unknown(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    n = _node(m, rng)
    n.attribute.append(helper.make_attribute("bogus_" + str(int(rng.integers(100))), 3))
    return n.name


def attr_remove(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    nodes = [n for n in m.graph.node if n.attribute]
    n = nodes[int(rng.integers(len(nodes)))]
    del n.attribute[int(rng.integers(len(n.attribute)))]
    return n.name


def attr_type(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    nodes = [n for n in m.graph.node if n.attribute]
    n = nodes[int(rng.integers(len(nodes)))]
    a = n.attribute[int(rng.integers(len(n.attribute)))]
    a.type = int(rng.choice([onnx.AttributeProto.FLOAT, onnx.AttributeProto.INTS,
                             onnx.AttributeProto.STRING, onnx.AttributeProto.UNDEFINED]))
    return f"{n.name}.{a.name}"


def dim(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    d = m.graph.input[0].type.tensor_type.shape.dim
    k = int(rng.integers(len(d)))
    d[k].dim_value = int(rng.choice([0, 1, 2, 5, 17]))
    return f"x dim {k}"


def opset(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    v = int(rng.choice([1, 3, 6, 7, 9, 11, 13, 18, 21, 99]))
    m.opset_import[0].version = v
    return f"opset {v}"


def dtype(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    t = int(rng.choice([TensorProto.INT64, TensorProto.DOUBLE, TensorProto.FLOAT16,
                        TensorProto.INT8, TensorProto.BOOL, TensorProto.STRING]))
    m.graph.input[0].type.tensor_type.elem_type = t
    return TensorProto.DataType.Name(t)


def dangle(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    n = _node(m, rng)
    n.input[int(rng.integers(len(n.input)))] = "nowhere"
    return n.name


def self_reference(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    n = _node(m, rng)
    n.input[0] = n.output[0]
    return n.name


def swap_inputs(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    nodes = [n for n in m.graph.node if len(n.input) >= 2]
    n = nodes[int(rng.integers(len(nodes)))]
    a, b = n.input[0], n.input[1]
    n.input[0], n.input[1] = b, a
    return n.name


def initializer_dims(m: onnx.ModelProto, rng: np.random.Generator) -> str:
    if not m.graph.initializer:
        return "none"
    t = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
    if t.dims:
        t.dims[int(rng.integers(len(t.dims)))] += int(rng.choice([-1, 1, 2]))
    return t.name


MUTATIONS: dict[str, Callable[[onnx.ModelProto, np.random.Generator], str]] = {
    f.__name__: f for f in (attr_value, attr_unknown, attr_remove, attr_type, dim, opset, dtype,
                            dangle, self_reference, swap_inputs, initializer_dims)}


def case(i: int) -> tuple[onnx.ModelProto, str]:
    """Case i: a seed model and one mutation, both chosen from i (reproducible)."""
    rng = np.random.default_rng(i)
    ss = seeds()
    m = onnx.ModelProto()
    m.CopyFrom(ss[int(rng.integers(len(ss)))])
    name = list(MUTATIONS)[int(rng.integers(len(MUTATIONS)))]
    where = MUTATIONS[name](m, rng)
    return m, f"{name}({where}) on {m.graph.node[0].name}-model"


# ---- running one case ----------------------------------------------------------------------

def _feeds(m: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    vi = m.graph.input[0]
    tt = vi.type.tensor_type
    np_t = helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type not in (
        0, TensorProto.STRING) else None
    if np_t is None:
        return None
    shape = [d.dim_value for d in tt.shape.dim]
    x = np.random.default_rng(0).standard_normal(shape).astype(np_t)
    return {vi.name: x}


def run_case(i: int) -> dict[str, Any]:
    """Outcome of case i in this process."""
    import minicc
    from minicc.errors import MiniccError

    m, what = case(i)
    feeds = _feeds(m)
    out: dict[str, Any] = {"case": i, "what": what}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            cm = minicc.compile(m, threads=1, cache=False)
            if feeds is None:
                raise MiniccError("no inputs can be made for this dtype")
            got = cm.run(feeds)
            out["minicc"] = "ok"
        except MiniccError as e:
            out["minicc"], got = "refused", None
            out["why"] = str(e).splitlines()[0][:200]
        except Exception as e:      # noqa: BLE001  (what the campaign is looking for)
            out["minicc"], got = "internal", None
            out["why"] = f"{type(e).__name__}: {e}"[:300]
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.log_severity_level = 4
            s = ort.InferenceSession(m.SerializeToString(), so,
                                     providers=["CPUExecutionProvider"])
            ref = s.run(None, feeds or {})
            out["ort"] = "ok"
        except Exception as e:      # noqa: BLE001
            out["ort"], ref = "refused", None
            out["ort_why"] = str(e).splitlines()[0][:200]
    out["verdict"] = verdict(out, got, ref, m)
    return out


def verdict(out: dict, got: dict | None, ref: list | None, m: onnx.ModelProto) -> str:
    a, b = out["minicc"], out["ort"]
    if a == "internal":
        return "internal"
    if a == "ok" and b == "ok":
        assert got is not None and ref is not None
        for g, r in zip(got.values(), ref):
            g, r = np.asarray(g), np.asarray(r)
            if g.shape != r.shape or not np.allclose(g.astype(np.float64), r.astype(np.float64),
                                                     rtol=1e-3, atol=1e-4, equal_nan=True):
                return "mismatch"
        return "both-ok"
    if a == "refused":
        return "both-refused" if b == "refused" else "minicc-stricter"
    if m.opset_import[0].version < 7:
        return "accepted:old-opset"
    return "accepted-invalid"


# ---- the campaign ----------------------------------------------------------------------------

def _worker(start: int, stop: int) -> None:
    for i in range(start, stop):
        print(json.dumps(run_case(i)), flush=True)


def campaign(first: int, n: int, chunk: int = 50,
             progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Cases first..first+n-1 in worker subprocesses of `chunk` cases; a worker that dies is
    restarted after the case it died on, which is recorded as a crash."""
    results: list[dict[str, Any]] = []
    i, stop = first, first + n
    while i < stop:
        end = min(i + chunk, stop)
        p = subprocess.run([sys.executable, "-m", "tests.fuzz.mutations", "--worker", str(i),
                            str(end)], capture_output=True, text=True)
        done = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        results += done
        i += len(done)
        if p.returncode != 0 and i < end:
            results.append({"case": i, "what": case(i)[1], "verdict": "crash",
                            "why": f"worker exit {p.returncode}: {p.stderr[-300:]}"})
            i += 1
        if progress:
            progress(i - first)
    return results


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0, help="the first case number")
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(*args.worker)
        return 0
    from tqdm import tqdm

    bar = tqdm(total=args.cases, unit="case")
    last = [0]

    def step(k: int) -> None:
        bar.update(k - last[0])
        last[0] = k
    res = campaign(args.seed, args.cases, progress=step)
    bar.close()
    counts = Counter(r["verdict"] for r in res)
    print(f"cases {args.seed}..{args.seed + args.cases - 1}: " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for r in res:
        if r["verdict"] in ("internal", "crash", "mismatch", "accepted-invalid"):
            print(f"  {r['verdict']}: case {r['case']} {r['what']}: {r.get('why', '')} "
                  f"| ort: {r.get('ort_why', '')}")
    bad = sum(counts[k] for k in ("internal", "crash", "mismatch", "accepted-invalid"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
