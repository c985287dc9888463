"""Parse graph IR text back into a Module (the inverse of `ir/printer.py`).

Grammar (comments start with `//`):

    module   := func*
    func     := 'func' '@'NAME '(' [arg (',' arg)*] ')' '->' '(' [res (',' res)*] ')'
                '{' stmt* 'return' [value (',' value)*] '}'
    arg      := value ':' type [attrs]            // attrs may hold {name="public name"}
    res      := type [attrs]
    stmt     := value (',' value)* '=' ( 'const' const | NAME '(' [value (',' value)*] ')' [attrs] )
                ':' type (',' type)* ['loc' '(' STRING ')']
    const    := 'dense' '<' (scalar | '[' scalar (',' scalar)* ']') '>'   // str: STRING scalars
              | 'splat' '<' scalar '>' | 'blob' '<' STRING '>'
    attrs    := '{' [NAME '=' attr (',' NAME '=' attr)*] '}'
    attr     := INT | FLOAT | STRING | 'true' | 'false' | NAME | '[' [attr (',' attr)*] ']'
              | func       // a region of if / loop / scan: its own scope, captures as inputs
    type     := DTYPE '[' [dim (',' dim)*] ']'           // f32[1,3,224,224], f32[], f32[N,?]
    dim      := INT | NAME | '?'
    value    := '%' [A-Za-z0-9_.]+

A `blob<"digest">` constant takes its data from `weights[digest]` when given; without it the
constant keeps its type and digest but cannot be executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from minicc.errors import MiniccError, ParseError
from minicc.ir.graph import ConstData, Function, Module, Op, SourceLoc, Value
from minicc.ir.registry import canonical_attrs, get_op
from minicc.ir.types import DType, TensorType
from minicc.ir.verify import verify_module

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<sym>@[A-Za-z0-9_.]+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<float>-?(?:\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)|-inf\b)
  | (?P<int>-?\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<arrow>->)
  | (?P<punct>[()\[\]{}<>,:=?])
""", re.VERBOSE)


@dataclass
class Tok:
    kind: str
    text: str
    line: int
    col: int


def tokenize(text: str, path: str) -> list[Tok]:
    toks: list[Tok] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            col = pos - line_start + 1
            raise ParseError(f"unexpected character {text[pos]!r}", path, line, col,
                             _snippet(text, line, col))
        kind = m.lastgroup or ""
        s = m.group()
        if kind != "ws":
            toks.append(Tok(kind, s, line, pos - line_start + 1))
        nl = s.count("\n")
        if nl:
            line += nl
            line_start = pos + s.rindex("\n") + 1
        pos = m.end()
    toks.append(Tok("eof", "", line, pos - line_start + 1))
    return toks


def _snippet(text: str, line: int, col: int) -> str:
    lines = text.splitlines() + [""]
    if not 1 <= line <= len(lines):
        return ""
    return f"  {lines[line - 1]}\n  {' ' * (col - 1)}^"


class Parser:
    def __init__(self, text: str, path: str = "<text>",
                 weights: Mapping[str, np.ndarray] | None = None):
        self.text, self.path = text, path
        self.toks = tokenize(text, path)
        self.i = 0
        self.weights = weights or {}
        self.scope: dict[str, Value] = {}
        self.printed: dict[Value, str] = {}

    # -- token helpers --
    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def error(self, msg: str, tok: Tok | None = None) -> ParseError:
        t = tok or self.tok
        return ParseError(msg, self.path, t.line, t.col, _snippet(self.text, t.line, t.col))

    def take(self, kind: str | None = None, text: str | None = None) -> Tok:
        t = self.tok
        if (kind and t.kind != kind) or (text is not None and t.text != text):
            want = repr(text) if text is not None else kind
            got = repr(t.text) if t.kind != "eof" else "end of input"
            raise self.error(f"expected {want}, got {got}")
        self.i += 1
        return t

    def at(self, text: str) -> bool:
        return self.tok.text == text and self.tok.kind in ("punct", "ident", "arrow")

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    # -- grammar --
    def module(self) -> Module:
        funcs = []
        while self.tok.kind != "eof":
            funcs.append(self.function())
        if not funcs:
            raise self.error("expected 'func'")
        return Module(tuple(funcs))

    def function(self) -> Function:
        self.take("ident", "func")
        name = self.take("sym").text[1:]
        self.scope = {}
        self.take("punct", "(")
        inputs, in_names = [], []
        while not self.at(")"):
            vt = self.take("value")
            self.take("punct", ":")
            ty = self.type_()
            extra = self.attr_dict() if self.at("{") else {}
            v = self.define(vt, ty)
            inputs.append(v)
            in_names.append(str(extra.get("name", vt.text[1:])))
            if not self.accept(","):
                break
        self.take("punct", ")")
        self.take("arrow")
        self.take("punct", "(")
        res_types, res_names = [], []
        while not self.at(")"):
            res_types.append(self.type_())
            extra = self.attr_dict() if self.at("{") else {}
            res_names.append(extra.get("name"))
            if not self.accept(","):
                break
        self.take("punct", ")")
        self.take("punct", "{")
        ops: list[Op] = []
        while not (self.tok.kind == "ident" and self.tok.text == "return"):
            ops.append(self.statement())
        ret_tok = self.take("ident", "return")
        outs = []
        if self.tok.kind == "value":
            outs.append(self.use(self.take("value")))
            while self.accept(","):
                outs.append(self.use(self.take("value")))
        self.take("punct", "}")
        if len(outs) != len(res_types):
            raise self.error(f"@{name} declares {len(res_types)} results but returns "
                             f"{len(outs)}", ret_tok)
        for k, (v, t) in enumerate(zip(outs, res_types)):
            if v.type != t:
                raise self.error(f"@{name} result {k} is declared {t} but %{v.name_hint} is "
                                 f"{v.type}", ret_tok)
        out_names = [n if n is not None else self.printed[v] for n, v in zip(res_names, outs)]
        return Function(name, tuple(inputs), tuple(ops), tuple(outs), tuple(in_names),
                        tuple(str(n) for n in out_names))

    def define(self, tok: Tok, ty: TensorType) -> Value:
        nm = tok.text[1:]
        if nm in self.scope:
            raise self.error(f"%{nm} is defined twice", tok)
        v = Value(ty, None if nm.isdigit() else nm)
        self.scope[nm] = v
        self.printed[v] = nm
        return v

    def use(self, tok: Tok) -> Value:
        nm = tok.text[1:]
        if nm not in self.scope:
            raise self.error(f"use of undefined value %{nm}", tok)
        return self.scope[nm]

    def statement(self) -> Op:
        res_toks = [self.take("value")]
        while self.accept(","):
            res_toks.append(self.take("value"))
        self.take("punct", "=")
        kind_tok = self.take("ident")
        kind = kind_tok.text
        operands: list[Value] = []
        attrs: dict[str, Any] = {}
        const_lit = None
        if kind == "const":
            const_lit = self.const_literal()
        else:
            try:
                get_op(kind)
            except MiniccError:
                raise self.error(f"unknown op '{kind}'", kind_tok) from None
            self.take("punct", "(")
            while not self.at(")"):
                operands.append(self.use(self.take("value")))
                if not self.accept(","):
                    break
            self.take("punct", ")")
            if self.at("{"):
                attrs = self.attr_dict()
        self.take("punct", ":")
        types = [self.type_()]
        while self.accept(","):
            types.append(self.type_())
        loc = None
        if self.tok.kind == "ident" and self.tok.text == "loc":
            self.take()
            self.take("punct", "(")
            loc = SourceLoc(self._string(self.take("string")))
            self.take("punct", ")")
        if len(types) != len(res_toks):
            raise self.error(f"'{kind}' names {len(res_toks)} results but gives {len(types)} "
                             "types", kind_tok)
        if const_lit is not None:
            if len(types) != 1:
                raise self.error("const has exactly one result", kind_tok)
            attrs = {"value": self.make_const(const_lit, types[0], kind_tok)}
        try:
            at = canonical_attrs(kind, attrs)
        except MiniccError as e:
            raise self.error(str(e), kind_tok) from None
        outs = tuple(self.define(t, ty) for t, ty in zip(res_toks, types))
        return Op(kind, tuple(operands), outs, at, loc)

    def const_literal(self) -> tuple[str, Any, Tok]:
        t = self.take("ident")
        if t.text not in ("dense", "splat", "blob"):
            raise self.error("expected dense<...>, splat<...> or blob<\"digest\">", t)
        self.take("punct", "<")
        if t.text == "blob":
            val: Any = self._string(self.take("string"))
        elif t.text == "dense" and self.at("["):
            self.take()
            val = []
            while not self.at("]"):
                val.append(self.scalar())
                if not self.accept(","):
                    break
            self.take("punct", "]")
        else:
            val = self.scalar()
        self.take("punct", ">")
        return t.text, val, t

    def make_const(self, lit: tuple[str, Any, Tok], ty: TensorType, at: Tok) -> ConstData:
        form, val, tok = lit
        if not ty.is_static:
            raise self.error(f"a constant needs a static type, got {ty}", at)
        if form == "blob":
            arr = self.weights.get(val)
            if arr is None:
                return ConstData(None, ty, val)
            arr = np.asarray(arr)
            if TensorType.of(arr) != ty:
                raise self.error(f"weights for blob \"{val}\" are {TensorType.of(arr)}, the text "
                                 f"says {ty}", tok)
            return ConstData(arr, copy=False)
        try:
            if form == "splat":
                return ConstData.splat(val, ty)
            flat = np.array(val if isinstance(val, list) else [val], dtype=ty.dtype.np)
            if flat.size != ty.numel:
                raise self.error(f"dense literal has {flat.size} elements, type {ty} needs "
                                 f"{ty.numel}", tok)
            return ConstData(flat.reshape(ty.shape))  # type: ignore[arg-type]
        except (ValueError, OverflowError, TypeError) as e:
            raise self.error(f"bad {form} literal for {ty}: {e}", tok) from None

    def scalar(self) -> Any:
        t = self.tok
        if t.kind == "int":
            self.i += 1
            return int(t.text)
        if t.kind == "float":
            self.i += 1
            return float(t.text)
        if t.kind == "ident" and t.text in ("true", "false", "inf", "nan"):
            self.i += 1
            return {"true": True, "false": False, "inf": float("inf"),
                    "nan": float("nan")}[t.text]
        if t.kind == "string":                      # an element of a str constant
            self.i += 1
            return self._string(t)
        raise self.error(f"expected a number, got {t.text!r}")

    def attr_dict(self) -> dict[str, Any]:
        self.take("punct", "{")
        out: dict[str, Any] = {}
        while not self.at("}"):
            k = self.take("ident")
            if k.text in out:
                raise self.error(f"attribute '{k.text}' given twice", k)
            self.take("punct", "=")
            out[k.text] = self.attr_value()
            if not self.accept(","):
                break
        self.take("punct", "}")
        return out

    def attr_value(self) -> Any:
        t = self.tok
        if t.kind == "ident" and t.text == "func":   # a region: a function of its own scope
            scope, printed = self.scope, self.printed
            try:
                self.printed = {}
                return self.function()
            finally:
                self.scope, self.printed = scope, printed
        if t.kind in ("int", "float"):
            return self.scalar()
        if t.kind == "string":
            self.i += 1
            return self._string(t)
        if t.kind == "ident":
            self.i += 1
            return {"true": True, "false": False, "inf": float("inf"),
                    "nan": float("nan")}.get(t.text, t.text)
        if self.accept("["):
            items = []
            while not self.at("]"):
                items.append(self.attr_value())
                if not self.accept(","):
                    break
            self.take("punct", "]")
            return items
        raise self.error(f"expected an attribute value, got {t.text!r}")

    def type_(self) -> TensorType:
        t = self.take("ident")
        try:
            dt = DType.parse(t.text)
        except MiniccError:
            raise self.error(f"unknown element type '{t.text}'", t) from None
        self.take("punct", "[")
        dims: list[Any] = []
        while not self.at("]"):
            d = self.tok
            if d.kind == "int":
                if int(d.text) < 0:
                    raise self.error(f"negative dimension {d.text}", d)
                dims.append(int(d.text))
            elif d.kind == "ident" or d.text == "?":
                dims.append(d.text)
            else:
                raise self.error(f"expected a dimension, got {d.text!r}", d)
            self.i += 1
            if not self.accept(","):
                break
        self.take("punct", "]")
        return TensorType(dt, tuple(dims))

    @staticmethod
    def _string(t: Tok) -> str:
        s = t.text[1:-1]
        return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), s)


def parse(text: str, *, weights: Mapping[str, np.ndarray] | None = None, path: str = "<text>",
          verify: bool = True) -> Module:
    """Parse IR text into a Module and verify it (errors carry line:col and a caret)."""
    m = Parser(text, path, weights).module()
    if verify:
        verify_module(m)
    return m
