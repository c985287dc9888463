"""The rewriting helper every graph pass uses: replay a function's ops through a fresh
GraphBuilder, letting a visitor replace ops. Values are remapped by identity, never by name."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from minicc.ir.builder import GraphBuilder
from minicc.ir.graph import Function, Op, Value

Visitor = Callable[["Rewriter", Op, list[Value]], Sequence[Value] | None]


class Rewriter:
    """`visit(rw, op, new_inputs)` returns replacement values for op's results, or None to keep
    the op (rebuilt on the new inputs, which may fold it when folding is on)."""

    def __init__(self, f: Function, fold: bool = False, fold_limit: int | None = None):
        self.f = f
        self.b = GraphBuilder(f.name, fold=fold)
        if fold_limit is not None:
            self.b.fold_limit = fold_limit
        self.b.inputs = list(f.inputs)
        self.b.input_names = list(f.input_names)
        self.map: dict[Value, Value] = {v: v for v in f.inputs}
        self._producers: dict[Value, Op] = {}
        self._seen = 0
        self._users = {v: len(u) for v, u in f.users.items()}
        self._old: dict[Value, Value] = {}

    def const(self, v: Value) -> np.ndarray | None:
        return self.b.const_value(v)

    def producer(self, v: Value) -> Op | None:
        self._sync()
        return self._producers.get(v)

    def users(self, v: Value) -> int:
        """How many ops of the original function use the value `v` replaced."""
        return self._users.get(self._old.get(v, v), 0) + (
            1 if self._old.get(v, v) in self.f.outputs else 0)

    def _sync(self) -> None:
        for op in self.b.ops[self._seen:]:
            for v in op.outputs:
                self._producers[v] = op
        self._seen = len(self.b.ops)

    def run(self, visit: Visitor) -> Function:
        for op in self.f.ops:
            ins = [self.map[v] for v in op.inputs]
            res = None if op.kind == "const" else visit(self, op, ins)
            if res is None:
                if all(a is b for a, b in zip(ins, op.inputs)) and not (
                        self.b.fold and op.kind != "const"):
                    self.b.add(op)
                    res = op.outputs
                else:
                    res = self.b.op(op.kind, ins, op.attrs, [v.name_hint for v in op.outputs],
                                    op.loc)
            for old, new in zip(op.outputs, res):
                self.map[old] = new
                self._old.setdefault(new, old)
        return self.b.finish([self.map[v] for v in self.f.outputs], self.f.output_names)


def rewrite(f: Function, visit: Visitor, fold: bool = False,
            fold_limit: int | None = None) -> Function:
    return Rewriter(f, fold, fold_limit).run(visit)
