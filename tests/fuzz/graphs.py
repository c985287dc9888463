"""The differential campaign: random valid ONNX graphs (convs with groups, strides, dilations and
asymmetric pads; pools with ceil mode; matmul and gemm; batch, instance and layer norms;
softmax; reductions; elementwise chains with broadcasting; concat, slice, resize, pad,
transpose, reshape), compiled by minicc at opt level `case % 4` (or, with --all-levels, at
each of 0-3) and run against onnxruntime.
Where the two disagree beyond rtol 1e-3 / atol 1e-4, the graph in float64 (onnx's reference
evaluator) decides: minicc at least as near to it as onnxruntime is "ok-nearer-than-ort" (the
norm of a nearly constant row, where every float32 answer is off); otherwise it is a mismatch,
shrunk (the shortest prefix of the graph that still disagrees) and saved under
tests/fuzz/regressions/ as a model and its input, which test_graphs.py replays.

    python -m tests.fuzz.graphs --cases 10000 --seed 0 [--jobs 2] [--all-levels]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
RTOL, ATOL = 1e-3, 1e-4


class G:
    """A graph under construction: tensors with known shapes, nodes, initializers."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, list[int]] = {}
        self.n = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def const(self, a: np.ndarray, p: str = "c") -> str:
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(a, n))
        return n

    def rand(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def add(self, op: str, ins: list[str], shape: list[int], **attrs: Any) -> str:
        out = self.name(op.lower()[:4])
        self.nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        self.shapes[out] = shape
        return out

    def i(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))


def _out(n: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool = False) -> int:
    span = n + pb + pe - d * (k - 1) - 1
    if span < 0:
        return 0
    q = -(-span // s) if ceil else span // s
    o = q + 1
    if ceil and (o - 1) * s >= n + pb:      # the last window must start inside (onnx, ort)
        o -= 1
    return o


# ---- ops, each applicable to a tensor of some rank; returns the new tensor or None ------

def conv(g: G, x: str) -> str | None:
    n, c, h, w = g.shapes[x]
    groups = [d for d in range(1, c + 1) if c % d == 0]
    grp = int(g.rng.choice(groups))
    m = grp * g.i(1, max(1, 8 // grp))
    k, s, d = g.i(1, 3), g.i(1, 3), g.i(1, 2)
    pads = [g.i(0, k - 1) for _ in range(4)]
    oh, ow = _out(h, k, s, d, pads[0], pads[2]), _out(w, k, s, d, pads[1], pads[3])
    if oh < 1 or ow < 1:
        return None
    ins = [x, g.const(g.rand(m, c // grp, k, k, scale=0.5), "w")]
    if g.rng.random() < 0.7:
        ins.append(g.const(g.rand(m), "b"))
    return g.add("Conv", ins, [n, m, oh, ow], group=grp, kernel_shape=[k, k], strides=[s, s],
                 dilations=[d, d], pads=pads)


def pool(g: G, x: str) -> str | None:
    n, c, h, w = g.shapes[x]
    k, s = g.i(1, 3), g.i(1, 3)
    pads = [g.i(0, k - 1) for _ in range(4)]
    ceil = bool(g.rng.random() < 0.5)
    oh, ow = _out(h, k, s, 1, pads[0], pads[2], ceil), _out(w, k, s, 1, pads[1], pads[3], ceil)
    if oh < 1 or ow < 1:
        return None
    if g.rng.random() < 0.5:
        return g.add("MaxPool", [x], [n, c, oh, ow], kernel_shape=[k, k], strides=[s, s],
                     pads=pads, ceil_mode=int(ceil))
    return g.add("AveragePool", [x], [n, c, oh, ow], kernel_shape=[k, k], strides=[s, s],
                 pads=pads, ceil_mode=int(ceil), count_include_pad=g.i(0, 1))


def batchnorm(g: G, x: str) -> str | None:
    c = g.shapes[x][1]
    return g.add("BatchNormalization", [x, g.const(g.rand(c)), g.const(g.rand(c)),
                                        g.const(g.rand(c)),
                                        g.const(np.abs(g.rand(c)) + 0.5)],
                 list(g.shapes[x]), epsilon=1e-5)


def instnorm(g: G, x: str) -> str | None:
    c = g.shapes[x][1]
    if g.shapes[x][2] * g.shapes[x][3] < 2:
        return None
    return g.add("InstanceNormalization", [x, g.const(g.rand(c)), g.const(g.rand(c))],
                 list(g.shapes[x]), epsilon=1e-5)


def layernorm(g: G, x: str) -> str | None:
    w = g.shapes[x][-1]
    return g.add("LayerNormalization", [x, g.const(g.rand(w)), g.const(g.rand(w))],
                 list(g.shapes[x]), axis=-1, epsilon=1e-5)


def softmax(g: G, x: str) -> str | None:
    r = len(g.shapes[x])
    return g.add("Softmax", [x], list(g.shapes[x]), axis=g.i(-r, r - 1))


def reduce(g: G, x: str) -> str | None:
    sh = g.shapes[x]
    ax = sorted({g.i(0, len(sh) - 1) for _ in range(g.i(1, 2))})
    kd = g.i(0, 1)
    out = [1 if k in ax else d for k, d in enumerate(sh)] if kd else \
        [d for k, d in enumerate(sh) if k not in ax]
    if not out:
        return None
    op = str(g.rng.choice(["ReduceSum", "ReduceMean", "ReduceMax"]))
    return g.add(op, [x, g.const(np.array(ax, np.int64), "ax")], out, keepdims=kd)


def unary(g: G, x: str) -> str | None:
    op = str(g.rng.choice(["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "LeakyRelu", "Elu",
                           "HardSigmoid", "HardSwish", "Softplus", "Erf"]))
    return g.add(op, [x], list(g.shapes[x]))


def binary(g: G, x: str) -> str | None:
    sh = g.shapes[x]
    other = [d if g.rng.random() < 0.5 else 1 for d in sh]
    other = other[g.i(0, len(other) - 1):] if g.rng.random() < 0.3 else other
    op = str(g.rng.choice(["Add", "Mul", "Sub", "Max", "Min"]))
    ins = [x, g.const(g.rand(*other), "k")]
    if g.rng.random() < 0.5:
        ins.reverse()
    return g.add(op, ins, list(sh))


def concat(g: G, x: str) -> str | None:
    sh = g.shapes[x]
    ax = g.i(0, len(sh) - 1)
    extra = list(sh)
    extra[ax] = g.i(1, 3)
    out = list(sh)
    out[ax] += extra[ax]
    return g.add("Concat", [x, g.const(g.rand(*extra), "k")], out, axis=ax)


def slice_(g: G, x: str) -> str | None:
    sh = g.shapes[x]
    ax = g.i(0, len(sh) - 1)
    d = sh[ax]
    if d < 2:
        return None
    step = int(g.rng.choice([1, 1, 2, -1]))
    if step > 0:
        a, b = g.i(0, d - 1), None
        b = g.i(a + 1, d)
        size = len(range(a, b, step))
    else:
        a, b = g.i(1, d - 1), -d - 1
        size = len(range(a, -1, step))
    out = list(sh)
    out[ax] = size
    ins = [x] + [g.const(np.array([v], np.int64), "s") for v in (a, b, ax, step)]
    return g.add("Slice", ins, out)


def resize(g: G, x: str) -> str | None:
    n, c, h, w = g.shapes[x]
    mode = str(g.rng.choice(["nearest", "linear"]))
    sc = np.array([1, 1, 2, 2], np.float32)
    return g.add("Resize", [x, "", g.const(sc, "sc")], [n, c, 2 * h, 2 * w], mode=mode)


def pad(g: G, x: str) -> str | None:
    sh = g.shapes[x]
    mode = str(g.rng.choice(["constant", "reflect", "edge"]))
    r = len(sh)
    ps = [g.i(0, min(2, d - 1) if mode == "reflect" else 2) for d in sh + sh]
    if mode == "reflect" and any(d < 2 for d in sh):
        ps = [0] * (2 * r)
    out = [d + ps[k] + ps[k + r] for k, d in enumerate(sh)]
    return g.add("Pad", [x, g.const(np.array(ps, np.int64), "p")], out, mode=mode)


def transpose(g: G, x: str) -> str | None:
    sh = g.shapes[x]
    perm = [int(p) for p in g.rng.permutation(len(sh))]
    return g.add("Transpose", [x], [sh[p] for p in perm], perm=perm)


def reshape(g: G, x: str) -> str | None:
    sh = g.shapes[x]
    out = [sh[0], int(np.prod(sh[1:]))]
    return g.add("Reshape", [x, g.const(np.array([sh[0], -1], np.int64), "shape")], out)


def matmul(g: G, x: str) -> str | None:
    sh = g.shapes[x]
    m = g.i(1, 9)
    if len(sh) == 2 and g.rng.random() < 0.5:
        return g.add("Gemm", [x, g.const(g.rand(m, sh[-1], scale=0.3), "w"),
                              g.const(g.rand(m), "b")], [sh[0], m], transB=1,
                     alpha=float(g.rng.choice([1.0, 0.5])))
    return g.add("MatMul", [x, g.const(g.rand(sh[-1], m, scale=0.3), "w")], sh[:-1] + [m])


OPS_4D = [conv, conv, pool, batchnorm, instnorm, resize]
OPS_ANY = [layernorm, softmax, reduce, unary, unary, binary, binary, concat, slice_, pad,
           transpose, matmul]


def make(i: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Graph i (reproducible from i alone) and its input."""
    g = G(np.random.default_rng(i))
    shape = [g.i(1, 2), g.i(1, 6), g.i(3, 12), g.i(3, 12)]
    if g.rng.random() < 0.2:
        shape = [g.i(1, 3), g.i(2, 8), g.i(2, 16)]
    g.shapes["x"] = shape
    cur = "x"
    for _ in range(g.i(1, 6)):
        sh = g.shapes[cur]
        if int(np.prod(sh)) > 20000:
            break
        ops = OPS_ANY + (OPS_4D if len(sh) == 4 else [])
        for _ in range(10):
            y = ops[g.i(0, len(ops) - 1)](g, cur)
            if y is not None:
                cur = y
                break
        if len(g.shapes[cur]) == 0:
            break
    if not g.nodes:
        cur = unary(g, cur) or cur
    gr = helper.make_graph(g.nodes, f"fuzz{i}", [helper.make_tensor_value_info("x", F, shape)],
                           [helper.make_tensor_value_info(cur, F, None)], g.inits)
    m = helper.make_model(gr, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    x = np.random.default_rng(i + 1).standard_normal(shape).astype(np.float32)
    return m, {"x": x}


# ---- one case -------------------------------------------------------------------------------

def compare(m: onnx.ModelProto, feeds: dict[str, np.ndarray], opt_level: int) -> dict[str, Any]:
    import minicc
    import onnxruntime as ort
    from minicc.errors import MiniccError

    out: dict[str, Any] = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 4
            ref = ort.InferenceSession(m.SerializeToString(), so,
                                       providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        except Exception as e:      # noqa: BLE001
            return {"verdict": "ort-refused", "why": str(e).splitlines()[0][:200]}
        try:
            got = minicc.compile(m, threads=1, cache=False, opt_level=opt_level).run(feeds)
            y = next(iter(got.values()))
        except MiniccError as e:
            return {"verdict": "refused", "why": str(e).splitlines()[0][:200]}
        except Exception as e:      # noqa: BLE001
            return {"verdict": "internal", "why": f"{type(e).__name__}: {e}"[:300]}
    if y.shape != ref.shape:
        return {"verdict": "mismatch", "why": f"shape {y.shape} vs {ref.shape}"}
    bad, err = _outside(y, ref)
    if not bad:
        return {"verdict": "ok"}
    # an ill-conditioned graph (the norm of a nearly constant row): who is nearer the truth,
    # the same graph in float64?
    truth = float64_truth(m, feeds)
    if truth is not None and np.nanmax(np.abs(y - truth), initial=0) <= \
            max(np.nanmax(np.abs(ref - truth), initial=0), ATOL):
        return {"verdict": "ok-nearer-than-ort",
                "why": f"{err:.3g} from onnxruntime, which is further from float64"}
    return {"verdict": "mismatch", "why": f"max error {err:.3g}"}


def _outside(y: np.ndarray, ref: np.ndarray) -> tuple[bool, float]:
    y64, r64 = y.astype(np.float64), ref.astype(np.float64)
    err = np.abs(y64 - r64)
    bad = ~((err <= ATOL + RTOL * np.abs(r64)) | (np.isnan(y64) & np.isnan(r64)))
    return bool(bad.any()), float(np.nanmax(err, initial=0))


def float64_truth(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """The graph in float64 (onnx's reference evaluator; Resize scales stay float32)."""
    from onnx.reference import ReferenceEvaluator

    d = onnx.ModelProto()
    d.CopyFrom(m)
    keep = {n.input[2] for n in d.graph.node if n.op_type == "Resize" and len(n.input) > 2}
    for k, t in enumerate(d.graph.initializer):
        if t.data_type == F and t.name not in keep:
            d.graph.initializer[k].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in list(d.graph.input) + list(d.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    try:
        return np.asarray(ReferenceEvaluator(d).run(
            None, {k: v.astype(np.float64) for k, v in feeds.items()})[0])
    except Exception:               # noqa: BLE001  (an op the evaluator lacks in float64)
        return None


def shrink(m: onnx.ModelProto, feeds: dict, opt_level: int) -> onnx.ModelProto:
    """The shortest prefix of the graph whose last node still disagrees."""
    for k in range(1, len(m.graph.node) + 1):
        p = onnx.ModelProto()
        p.CopyFrom(m)
        del p.graph.node[k:]
        last = p.graph.node[-1].output[0]
        del p.graph.output[:]
        p.graph.output.append(helper.make_tensor_value_info(last, F, None))
        used = {i for n in p.graph.node for i in n.input}
        keep = [t for t in p.graph.initializer if t.name in used]
        del p.graph.initializer[:]
        p.graph.initializer.extend(keep)
        if compare(p, feeds, opt_level)["verdict"] == "mismatch":
            return p
    return m


def run_case(i: int, all_levels: bool = False) -> dict[str, Any]:
    """Graph i at opt level i % 4, or with `all_levels` at 0, 1, 2 and 3 (the first level
    that does not give "ok" is reported)."""
    m, feeds = make(i)
    levels = [0, 1, 2, 3] if all_levels else [i % 4]
    r: dict[str, Any] = {"case": i, "nodes": [n.op_type for n in m.graph.node]}
    for lvl in levels:
        r["opt_level"] = lvl
        r.update(compare(m, feeds, lvl))
        if r["verdict"] != "ok":
            break
    lvl = r["opt_level"]
    if r["verdict"] == "mismatch":
        small = shrink(m, feeds, lvl)
        REGRESSIONS.mkdir(exist_ok=True)
        onnx.save(small, str(REGRESSIONS / f"case{i}_O{lvl}.onnx"))
        np.save(REGRESSIONS / f"case{i}_O{lvl}.npy", feeds["x"])
        r["shrunk"] = [n.op_type for n in small.graph.node]
    return r


# ---- the campaign ----------------------------------------------------------------------------

def _chunk(start: int, stop: int, all_levels: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    i = start
    while i < stop:
        p = subprocess.run([sys.executable, "-m", "tests.fuzz.graphs", "--worker", str(i),
                            str(stop)] + (["--all-levels"] if all_levels else []),
                           capture_output=True, text=True)
        done = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        out += done
        i += len(done)
        if p.returncode != 0 and i < stop:
            out.append({"case": i, "verdict": "crash",
                        "why": f"worker exit {p.returncode}: {p.stderr[-300:]}"})
            i += 1
    return out


def campaign(first: int, n: int, jobs: int = 1, chunk: int = 100,
             all_levels: bool = False) -> list[dict[str, Any]]:
    """Cases in worker subprocesses (a dead worker counts its case as a crash), `jobs` at once."""
    bounds = [(a, min(a + chunk, first + n)) for a in range(first, first + n, chunk)]
    with ThreadPoolExecutor(jobs) as ex:
        parts = list(ex.map(lambda b: _chunk(*b, all_levels), bounds))
    return [r for p in parts for r in p]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0, help="the first case number")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--all-levels", action="store_true",
                    help="compile every graph at opt levels 0-3 (else level = case %% 4)")
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        for i in range(*args.worker):
            print(json.dumps(run_case(i, args.all_levels)), flush=True)
        return 0
    res = campaign(args.seed, args.cases, args.jobs, all_levels=args.all_levels)
    counts = Counter(r["verdict"] for r in res)
    ops = Counter(op for r in res for op in r.get("nodes", []))
    print(f"cases {args.seed}..{args.seed + args.cases - 1}: " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("ops: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))
    bad = [r for r in res if r["verdict"] in ("internal", "crash", "mismatch")]
    for r in bad:
        print(f"  {r['verdict']}: case {r['case']} O{r.get('opt_level')} {r.get('nodes')}: "
              f"{r.get('why', '')} shrunk to {r.get('shrunk')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
