"""Hypothesis strategies: random well-typed modules built through the GraphBuilder."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Module, Value
from minicc.ir.types import DType, TensorType

NAMES = ["x", "x_1", "y", "conv1.weight", "a_2", "t", None, None]
UNARY = ["exp", "relu", "tanh", "neg", "abs", "sigmoid", "floor", "sqrt", "erf"]
BINARY = ["add", "sub", "mul", "max", "min", "div"]


@st.composite
def modules(draw: st.DrawFn, max_ops: int = 12, symbolic: bool = True) -> Module:
    """A random function over f32 tensors mixing elementwise, broadcast, shape and reduce ops."""
    b = GraphBuilder("main")
    rank = draw(st.integers(1, 4))
    dims = [draw(st.sampled_from([1, 2, 3, 4, 8])) for _ in range(rank)]
    if symbolic and draw(st.booleans()):
        dims[0] = "N"
    vals: list[Value] = []
    n_in = draw(st.integers(1, 2))
    for i in range(n_in):
        vals.append(b.input(TensorType(DType.F32, tuple(dims)), draw(st.sampled_from(
            ["x", "input.1", "gpu_0/data_0", f"in{i}"])) + (str(i) if i else "")))
    for _ in range(draw(st.integers(1, max_ops))):
        v = draw(st.sampled_from(vals))
        name = draw(st.sampled_from(NAMES))
        choice = draw(st.integers(0, 11))
        static = v.type.is_static
        if choice <= 2:
            vals.append(b.op1(draw(st.sampled_from(UNARY)), [v], name=name))
        elif choice <= 4:
            w = draw(st.sampled_from([u for u in vals if u.type.shape == v.type.shape] or [v]))
            vals.append(b.op1(draw(st.sampled_from(BINARY)), [v, w], name=name))
        elif choice in (5, 10, 11):
            form = draw(st.sampled_from(["random", "splat"]))  # prints dense, splat or blob
            shape = tuple(d if isinstance(d, int) else 1 for d in v.type.shape)
            if form == "splat":
                arr = np.broadcast_to(np.float32(draw(st.floats(-3, 3, width=32))), shape)
            else:
                seed = draw(st.integers(0, 100))
                arr = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
            c = b.const(arr, name)
            vals.append(b.op1("mul", [v, c], name=name))
        elif choice == 6 and v.type.rank >= 2:
            perm = draw(st.permutations(list(range(v.type.rank))))
            vals.append(b.op1("transpose", [v], {"perm": list(perm)}, name=name))
        elif choice == 7 and v.type.rank >= 1:
            ax = draw(st.integers(0, v.type.rank - 1))
            kd = draw(st.booleans())
            kind = draw(st.sampled_from(["reduce_sum", "reduce_max", "reduce_mean"]))
            vals.append(b.op1(kind, [v], {"axes": [ax], "keepdims": kd}, name=name))
        elif choice == 8 and static:
            vals.append(b.op1("reshape", [v], {"shape": [-1]}, name=name))
        elif choice == 9:
            vals.append(b.op1("softmax", [v], {"axis": -1}, name=name))
        else:
            vals.append(b.op1("leaky_relu", [v], {"alpha": draw(st.sampled_from([0.1, 0.25]))},
                              name=name))
    n_out = draw(st.integers(1, min(2, len(vals))))
    outs = vals[-n_out:]
    return Module((b.finish(outs, [f"out{i}" for i in range(n_out)]),))


def inputs_for(m: Module, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = m.main
    return {n: rng.uniform(0.1, 2.0, [d if isinstance(d, int) else batch
                                      for d in v.type.shape]).astype(np.float32)
            for n, v in zip(f.input_names, f.inputs)}
