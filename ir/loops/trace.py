"""Schedules as data: a kernel's schedule is a rule name and a list of steps, each a name with
parameters, printed as one line of text that parses back into the same steps.

    cpu.loops: fuse(i2, i3); split(i2_i3, 16); vectorize(i2_i3.i, 16); parallel(i2_i3.o)
    cpu.gemm: tile(MR=6, NR=32, KC=256, NC=224); pack(A, at=compile); pack(B, at=kc); parallel(nc)

Grammar:  schedule := RULE ':' [step (';' step)*]      step := NAME '(' [arg (',' arg)*] ')'
          arg := value | NAME '=' value                value := INT | NAME | 'true' | 'false'
NAME may contain dots (loop names such as `i0.o`, kinds such as `block.x`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from minicc.errors import ScheduleError

Arg = Union[int, str, bool]


@dataclass(frozen=True)
class Step:
    """One schedule step: `name(*args, **kwargs)`; kwargs are kept in the order given."""

    name: str
    args: tuple[Arg, ...] = ()
    kwargs: tuple[tuple[str, Arg], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return next((v for k, v in self.kwargs if k == key), default)

    def __str__(self) -> str:
        parts = [_fmt(a) for a in self.args] + [f"{k}={_fmt(v)}" for k, v in self.kwargs]
        return f"{self.name}({', '.join(parts)})"


def int_kwargs(st: Step, names: tuple[str, ...]) -> dict[str, int]:
    """A step's keyword arguments as ints, by lower-case name; ScheduleError naming the step
    for an unknown name or a value that is not an integer."""
    out = {}
    for k, v in st.kwargs:
        if k not in names:
            raise ScheduleError(f"{st}: unknown knob {k} (knobs: {', '.join(names)})")
        if isinstance(v, bool) or not isinstance(v, int):
            raise ScheduleError(f"{st}: {k} must be an integer, got {v!r}")
        out[k.lower()] = v
    return out


def step(name: str, *args: Arg, **kwargs: Arg) -> Step:
    return Step(name, tuple(args), tuple(kwargs.items()))


def _fmt(v: Arg) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def format_schedule(rule: str, steps: tuple[Step, ...] | list[Step]) -> str:
    return f"{rule}:" + ("" if not steps else " " + "; ".join(str(s) for s in steps))


_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_TOKEN = re.compile(rf"\s*(?:(?P<int>-?\d+)|(?P<name>{_NAME})|(?P<punct>[(),;=:]))")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ScheduleError(f"bad schedule text at column {pos + 1}: {text[pos:pos + 20]!r}"
                                f" in {text!r}")
        kind = m.lastgroup or "punct"
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def parse_schedule(text: str) -> tuple[str, tuple[Step, ...]]:
    """'rule: step; step' -> (rule, steps); ScheduleError naming the column on bad text."""
    toks = _tokens(text)
    i = 0

    def expect(kind: str, value: str | None = None) -> str:
        nonlocal i
        if i >= len(toks) or toks[i][0] != kind or (value is not None and toks[i][1] != value):
            got = repr(toks[i][1]) if i < len(toks) else "the end"
            col = toks[i][2] + 1 if i < len(toks) else len(text)
            raise ScheduleError(f"bad schedule text at column {col}: expected "
                                f"{value or kind}, got {got} in {text!r}")
        i += 1
        return toks[i - 1][1]

    def value() -> Arg:
        nonlocal i
        kind, tok, _ = toks[i] if i < len(toks) else ("end", "", 0)
        if kind == "int":
            i += 1
            return int(tok)
        if kind == "name":
            i += 1
            return {"true": True, "false": False}.get(tok, tok)
        expect("name")
        return ""

    rule = expect("name")
    expect("punct", ":")
    steps: list[Step] = []
    while i < len(toks):
        name = expect("name")
        expect("punct", "(")
        args: list[Arg] = []
        kwargs: list[tuple[str, Arg]] = []
        while not (i < len(toks) and toks[i][1] == ")"):
            if i + 1 < len(toks) and toks[i][0] == "name" and toks[i + 1][1] == "=":
                key = expect("name")
                expect("punct", "=")
                kwargs.append((key, value()))
            else:
                args.append(value())
            if i < len(toks) and toks[i][1] == ",":
                i += 1
        expect("punct", ")")
        steps.append(Step(name, tuple(args), tuple(kwargs)))
        if i < len(toks):
            expect("punct", ";")
    return rule, tuple(steps)
