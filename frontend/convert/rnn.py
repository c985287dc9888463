"""Converters for LSTM, GRU and RNN: unrolled over the (static) sequence length into matmuls and
elementwise ops, so the compiler fuses and schedules them like any other graph."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from minicc.frontend.context import NodeContext
from minicc.frontend.registry import converter
from minicc.ir.graph import Value


def _activation(ctx: NodeContext, name: str, alpha: float | None, beta: float | None
                ) -> Callable[[Value], Value]:
    n = name.lower()
    simple = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "softsign": "softsign",
              "softplus": "softplus"}
    if n in simple:
        return lambda v: ctx.op(simple[n], [v], out=None)
    if n == "leakyrelu":
        return lambda v: ctx.op("leaky_relu", [v], {"alpha": alpha if alpha is not None
                                                    else 0.01}, out=None)
    if n == "hardsigmoid":
        return lambda v: ctx.op("hard_sigmoid", [v], {
            "alpha": alpha if alpha is not None else 0.2,
            "beta": beta if beta is not None else 0.5}, out=None)
    if n == "elu":
        return lambda v: ctx.op("elu", [v], {"alpha": alpha if alpha is not None else 1.0},
                                out=None)
    if n == "thresholdedrelu":
        return lambda v: ctx.op("thresholded_relu", [v], {"alpha": alpha if alpha is not None
                                                          else 1.0}, out=None)
    raise ctx.error(f"activation '{name}' is not supported")


def _activations(ctx: NodeContext, defaults: list[str], ndir: int) -> list[list[Callable]]:
    names = ctx.attr("activations") or defaults * ndir
    alphas = list(ctx.attr("activation_alpha") or [])
    betas = list(ctx.attr("activation_beta") or [])
    per = len(defaults)
    if len(names) != per * ndir:
        raise ctx.error(f"needs {per * ndir} activations, got {len(names)}")
    fns = [_activation(ctx, nm, alphas[k] if k < len(alphas) else None,
                       betas[k] if k < len(betas) else None) for k, nm in enumerate(names)]
    return [fns[d * per:(d + 1) * per] for d in range(ndir)]


class _Rnn:
    """Shared set-up: layout, directions, weights per direction, initial states."""

    def __init__(self, ctx: NodeContext, gates: int, default_acts: list[str]):
        self.ctx = ctx
        x = ctx.input(0)
        self.layout = ctx.attr("layout", 0)
        if self.layout:
            x = ctx.op("transpose", [x], {"perm": [1, 0, 2]}, out=None)
        self.x = x
        seq, batch, _ = x.type.shape
        if not isinstance(seq, int):
            raise ctx.error(f"needs a static sequence length, got {x.type}")
        self.seq, self.batch = seq, batch
        direction = ctx.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ctx.error(f"unknown direction '{direction}'")
        self.dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        self.hidden = ctx.req_attr("hidden_size")
        self.clip = ctx.attr("clip")
        self.acts = _activations(ctx, default_acts, len(self.dirs))
        if ctx.has(4):
            lens = ctx.const(4)
            if lens is None or not np.all(np.asarray(lens) == seq):
                raise ctx.unsupported("sequence_lens shorter than the sequence are not supported")
        self.gates = gates

    def weight(self, i: int, d: int) -> Value:
        """Input `i` for direction d, as a 2-D matrix transposed for x @ W^T."""
        ctx = self.ctx
        w = ctx.input(i)
        wd = ctx.op("slice", [w], {"starts": [d], "ends": [d + 1], "axes": [0]}, out=None)
        wd = ctx.op("reshape", [wd], {"shape": list(w.type.shape[1:])}, out=None)
        return ctx.op("transpose", [wd], {"perm": [1, 0]}, out=None)

    def vec(self, i: int, d: int, start: int, n: int) -> Value | None:
        """Slice [start, start+n) of per-direction vector input i (bias, peephole)."""
        ctx = self.ctx
        if not ctx.has(i):
            return None
        b = ctx.input(i)
        v = ctx.op("slice", [b], {"starts": [d, start], "ends": [d + 1, start + n],
                                  "axes": [0, 1]}, out=None)
        return ctx.op("reshape", [v], {"shape": [n]}, out=None)

    def state(self, i: int, d: int) -> Value:
        ctx = self.ctx
        h = self.hidden
        if ctx.has(i):
            s = ctx.input(i)
            if self.layout:
                s = ctx.op("transpose", [s], {"perm": [1, 0, 2]}, out=None)
            s = ctx.op("slice", [s], {"starts": [d], "ends": [d + 1], "axes": [0]}, out=None)
            return ctx.op("reshape", [s], {"shape": [self.batch, h]}, out=None)
        if not isinstance(self.batch, int):
            raise ctx.error("a symbolic batch needs initial states")
        return ctx.s.b.const(np.zeros((self.batch, h), dtype=self.x.type.dtype.np))

    def step_input(self, xw: Value, t: int) -> Value:
        """Row t of the precomputed X @ W^T (+ biases): [batch, gates * hidden]."""
        ctx = self.ctx
        s = ctx.op("slice", [xw], {"starts": [t], "ends": [t + 1], "axes": [0]}, out=None)
        return ctx.op("reshape", [s], {"shape": [self.batch, self.gates * self.hidden]}, out=None)

    def gate(self, v: Value, k: int) -> Value:
        h = self.hidden
        return self.ctx.op("slice", [v], {"starts": [k * h], "ends": [(k + 1) * h], "axes": [1]},
                           out=None)

    def clipped(self, v: Value) -> Value:
        if self.clip is None:
            return v
        return self.ctx.op("clip", [v], {"min": -self.clip, "max": self.clip}, out=None)

    def precompute(self, d: int, bias: Value | None) -> Value:
        ctx = self.ctx
        xw = ctx.op("matmul", [self.x, self.weight(1, d)], out=None)
        return ctx.op("add", [xw, bias], out=None) if bias is not None else xw

    def outputs(self, hs: list[list[Value]], finals: list[list[Value]]) -> list[Value | None]:
        """Y, then each final state (Y_h, Y_c...), in ONNX layout."""
        ctx = self.ctx
        h, b = self.hidden, self.batch
        per_dir = []
        for d, seq_h in enumerate(hs):
            parts = [ctx.op("reshape", [v], {"shape": [1, 1, b, h]}, out=None) for v in seq_h]
            per_dir.append(parts[0] if len(parts) == 1 else
                           ctx.op("concat", parts, {"axis": 0}, out=None))
        y = per_dir[0] if len(per_dir) == 1 else ctx.op("concat", per_dir, {"axis": 1}, out=None)
        if self.layout:
            y = ctx.op("transpose", [y], {"perm": [2, 0, 1, 3]}, out=None)
        outs: list[Value | None] = [y]
        for k in range(len(finals[0])):
            parts = [ctx.op("reshape", [f[k]], {"shape": [1, b, h]}, out=None) for f in finals]
            s = parts[0] if len(parts) == 1 else ctx.op("concat", parts, {"axis": 0}, out=None)
            if self.layout:
                s = ctx.op("transpose", [s], {"perm": [1, 0, 2]}, out=None)
            outs.append(s)
        return outs

    def times(self, d: int) -> range:
        return range(self.seq) if self.dirs[d] == "forward" else range(self.seq - 1, -1, -1)


def _add(ctx: NodeContext, *vs: Value | None) -> Value:
    xs = [v for v in vs if v is not None]
    acc = xs[0]
    for v in xs[1:]:
        acc = ctx.op("add", [acc, v], out=None)
    return acc


def _mul(ctx: NodeContext, a: Value, b: Value) -> Value:
    return ctx.op("mul", [a, b], out=None)


@converter("LSTM", since=7)
def lstm_v7(ctx: NodeContext) -> Sequence[Value | None]:
    r = _Rnn(ctx, 4, ["Sigmoid", "Tanh", "Tanh"])
    h = r.hidden
    if ctx.attr("input_forget", 0):
        raise ctx.unsupported("input_forget=1 is not supported")
    hs, finals = [], []
    for d in range(len(r.dirs)):
        f_act, g_act, h_act = r.acts[d]
        wb, rb = r.vec(3, d, 0, 4 * h), r.vec(3, d, 4 * h, 4 * h)
        bias = _add(ctx, wb, rb) if wb is not None else None
        xw = r.precompute(d, bias)
        rt = r.weight(2, d)
        p = [r.vec(7, d, k * h, h) for k in range(3)]  # peepholes i, o, f
        ht, ct = r.state(5, d), r.state(6, d)
        seq_h: list[Value] = [None] * r.seq  # type: ignore[list-item]
        for t in r.times(d):
            g = _add(ctx, r.step_input(xw, t), ctx.op("matmul", [ht, rt], out=None))
            i_, o_, f_, c_ = (r.gate(g, k) for k in range(4))
            if p[0] is not None:
                i_ = _add(ctx, i_, _mul(ctx, p[0], ct))
                f_ = _add(ctx, f_, _mul(ctx, p[2], ct))  # type: ignore[arg-type]
            i_ = f_act(r.clipped(i_))
            f_ = f_act(r.clipped(f_))
            c_ = g_act(r.clipped(c_))
            ct = _add(ctx, _mul(ctx, f_, ct), _mul(ctx, i_, c_))
            if p[1] is not None:
                o_ = _add(ctx, o_, _mul(ctx, p[1], ct))
            o_ = f_act(r.clipped(o_))
            ht = _mul(ctx, o_, h_act(ct))
            seq_h[t] = ht
        hs.append(seq_h)
        finals.append([ht, ct])
    return r.outputs(hs, finals)


@converter("GRU", since=7)
def gru_v7(ctx: NodeContext) -> Sequence[Value | None]:
    r = _Rnn(ctx, 3, ["Sigmoid", "Tanh"])
    h = r.hidden
    lbr = ctx.attr("linear_before_reset", 0)
    hs, finals = [], []
    for d in range(len(r.dirs)):
        f_act, g_act = r.acts[d]
        wb = [r.vec(3, d, k * h, h) for k in range(3)]
        rb = [r.vec(3, d, (3 + k) * h, h) for k in range(3)]
        xw = r.precompute(d, None)
        rt = r.weight(2, d)
        rz_rr = ctx.op("slice", [rt], {"starts": [0], "ends": [2 * h], "axes": [1]}, out=None)
        rh = ctx.op("slice", [rt], {"starts": [2 * h], "ends": [3 * h], "axes": [1]}, out=None)
        ht = r.state(5, d)
        seq_h: list[Value] = [None] * r.seq  # type: ignore[list-item]
        for t in r.times(d):
            xt = r.step_input(xw, t)
            hr = ctx.op("matmul", [ht, rz_rr], out=None)
            z = f_act(r.clipped(_add(ctx, r.gate(xt, 0), r.gate(hr, 0), wb[0], rb[0])))
            rr = f_act(r.clipped(_add(ctx, r.gate(xt, 1), r.gate(hr, 1), wb[1], rb[1])))
            if lbr:
                hh = _add(ctx, ctx.op("matmul", [ht, rh], out=None), rb[2])
                cand = _add(ctx, r.gate(xt, 2), _mul(ctx, rr, hh), wb[2])
            else:
                hh = ctx.op("matmul", [_mul(ctx, rr, ht), rh], out=None)
                cand = _add(ctx, r.gate(xt, 2), hh, rb[2], wb[2])
            cand = g_act(r.clipped(cand))
            one = ctx.scalar(1.0, z.type.dtype)
            ht = _add(ctx, _mul(ctx, ctx.op("sub", [one, z], out=None), cand), _mul(ctx, z, ht))
            seq_h[t] = ht
        hs.append(seq_h)
        finals.append([ht])
    return r.outputs(hs, finals)


@converter("RNN", since=7)
def rnn_v7(ctx: NodeContext) -> Sequence[Value | None]:
    r = _Rnn(ctx, 1, ["Tanh"])
    h = r.hidden
    hs, finals = [], []
    for d in range(len(r.dirs)):
        (f_act,) = r.acts[d]
        wb, rb = r.vec(3, d, 0, h), r.vec(3, d, h, h)
        xw = r.precompute(d, _add(ctx, wb, rb) if wb is not None else None)
        rt = r.weight(2, d)
        ht = r.state(5, d)
        seq_h: list[Value] = [None] * r.seq  # type: ignore[list-item]
        for t in r.times(d):
            ht = f_act(r.clipped(_add(ctx, r.step_input(xw, t),
                                      ctx.op("matmul", [ht, rt], out=None))))
            seq_h[t] = ht
        hs.append(seq_h)
        finals.append([ht])
    return r.outputs(hs, finals)
