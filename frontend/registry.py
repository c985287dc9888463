"""The ONNX converter table: one converter per (domain, op type, first opset it handles).

A converter registered `since=N` handles opsets N up to the next registration of the same op.
Lookup never falls back silently: a model older than every registration is reported as
unsupported, naming the opsets that are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from minicc.frontend.context import NodeContext
    from minicc.ir.graph import Value

ConverterFn = Callable[["NodeContext"], Sequence["Value | None"]]


@dataclass(frozen=True)
class Converter:
    op_type: str
    domain: str
    since: int
    fn: ConverterFn


CONVERTERS: dict[tuple[str, str], list[Converter]] = {}


def converter(op_type: str | Sequence[str], since: int = 1, domain: str = "") -> Callable[
        [ConverterFn], ConverterFn]:
    """Register `fn` for one or more ONNX op types from opset `since` on."""
    names = [op_type] if isinstance(op_type, str) else list(op_type)

    def deco(fn: ConverterFn) -> ConverterFn:
        for n in names:
            lst = CONVERTERS.setdefault((domain, n), [])
            if any(c.since == since for c in lst):
                raise ValueError(f"converter for {domain or 'ai.onnx'}::{n} since {since} "
                                 "registered twice")
            lst.append(Converter(n, domain, since, fn))
            lst.sort(key=lambda c: c.since)
        return fn
    return deco


def lookup(domain: str, op_type: str, opset: int) -> Converter | None:
    """The converter for `op_type` at `opset`, or None."""
    best = None
    for c in CONVERTERS.get((_canon(domain), op_type), []):
        if c.since <= opset:
            best = c
    return best


def available(domain: str, op_type: str) -> list[int]:
    return [c.since for c in CONVERTERS.get((_canon(domain), op_type), [])]


def _canon(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain
