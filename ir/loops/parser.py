"""Parse loop IR text (what ir/loops/printer.py prints) back into Kernels.

Grammar (`NAME` may hold dots: `i0.o`, `block.x`; `%NAME` is a buffer; lines starting with `//`
or `#` are comments):

    module   := kernel*
    kernel   := 'kernel' NAME '(' [param (',' param)*] ')' ['flops' '=' INT] block
                ['schedule' RULE ':' STEPS-TO-END-OF-LINE]              (see ir/loops/trace.py)
    param    := BUF ':' type ('in' | 'weight' | 'out' | 'scratch' | 'shared')
    type     := DTYPE '[' [INT (',' INT)*] ']'
    block    := '{' stmt* '}'
    stmt     := 'for' NAME 'in' '0' '..' expr [kind] block
              | 'if' expr block ['else' block]
              | 'alloc' BUF ':' type ('local' | 'shared' | 'scratch' | 'global') block
              | 'barrier'
              | 'prefetch' BUF '[' [expr (',' expr)*] ']'
              | BUF '[' 0 ']' '=' 'block_all_reduce.'OP '(' BUF '[' 0 ']' ')' 'via' BUF
              | BUF '[' [expr (',' expr)*] ']' '=' expr
    kind     := 'parallel' | 'unroll' | 'vector' '(' INT ')' | 'block.x' | 'thread.x' | ...
    expr     := '(' expr BINOP expr ')' | NUMBER [':' DTYPE] | 'true' | 'false' | NAME
              | BUF '[' [expr (',' expr)*] ']' | NAME '(' [expr (',' expr)*] ')'
              | REDUCER [':' DTYPE] '[' NAME '<' INT (',' NAME '<' INT)* ']' '(' expr ')'

A Call's dtype follows from its operands (ir/scalar.py), a load's from its buffer; errors are
ParseErrors with line, column and a caret.
"""

from __future__ import annotations

import re
from minicc.errors import ParseError
from minicc.ir.compute import REDUCERS, Call, Cast, Const, Expr, Reduce, Select, Var
from minicc.ir.loops.nodes import (MMA_SHAPES, ROLE_SCOPES, Allocate, AsyncCommit, AsyncCopy,
                                   AsyncWait, Barrier, BlockAllReduce, BufLoad, Buffer, For,
                                   IfThen, Kernel, LoopKind, Prefetch, Scope, Stmt, Store,
                                   WarpLdmatrix, WarpMma, seq)
from minicc.ir.loops.printer import INFIX, reduce_dtype
from minicc.ir.loops.trace import parse_schedule
from minicc.ir.scalar import SCALARS
from minicc.ir.types import DType

_TOKEN = re.compile(r"""
    (?P<comment>(?m:^[ \t]*(//|\#).*$))
  | (?P<schedule>(?m:^schedule[ \t].*$))
  | (?P<ws>[ \t\r]+|\n)
  | (?P<buf>%[A-Za-z0-9_.]+)
  | (?P<float>-?(\d+\.\d*(e[+-]?\d+)?|\d+e[+-]?\d+|inf)\b|nan\b)
  | (?P<int>-?\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op>\.\.|==|!=|<=|>=|&&|\|\||//|[()\[\]{},=<>+\-*/%:])
""", re.X)
_BINOPS = {v: k for k, v in INFIX.items()}
_KINDS = {k.value: k for k in LoopKind if k not in (LoopKind.SERIAL, LoopKind.VECTOR)}
_ROLES = ("in", "weight", "out", "scratch", "shared")


class _Tokens:
    def __init__(self, text: str, path: str):
        self.text, self.path = text, path
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                self.fail("unexpected character", pos)
            kind = m.lastgroup or ""
            if kind not in ("ws", "comment"):
                self.toks.append((kind, m.group(kind), m.start()))
            pos = m.end()
        self.i = 0

    def fail(self, msg: str, pos: int | None = None) -> None:
        if pos is None:
            pos = self.toks[self.i][2] if self.i < len(self.toks) else len(self.text)
        line = self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        src = self.text[start:end if end >= 0 else len(self.text)]
        raise ParseError(msg, self.path, line, pos - start + 1,
                         f"  {src}\n  {' ' * (pos - start)}^")

    def peek(self, k: int = 0) -> tuple[str, str, int]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("end", "", len(self.text))

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        k, v, _ = self.peek()
        if (kind is not None and k != kind) or (value is not None and v != value):
            want = repr(value) if value is not None else kind
            self.fail(f"expected {want}, got {v!r}" if v else f"expected {want}, got the end")
        self.i += 1
        return v

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] in ("op", "name"):
            self.i += 1
            return True
        return False


class _Parser:
    def __init__(self, text: str, path: str):
        self.t = _Tokens(text, path)
        self.scope: list[dict[str, Buffer]] = []

    def dtype(self) -> DType:
        name = self.t.take("name")
        try:
            return DType.parse(name)
        except Exception:  # noqa: BLE001  (DType.parse raises for unknown names)
            self.t.i -= 1
            self.t.fail(f"unknown dtype {name!r}")
            raise

    def type_(self) -> tuple[DType, tuple[int, ...]]:
        dt = self.dtype()
        self.t.take("op", "[")
        dims: list[int] = []
        while not self.t.accept("]"):
            dims.append(int(self.t.take("int")))
            self.t.accept(",")
        return dt, tuple(dims)

    def buffer(self) -> Buffer:
        name = self.t.take("buf")[1:]
        for frame in reversed(self.scope):
            if name in frame:
                return frame[name]
        self.t.i -= 1
        self.t.fail(f"unknown buffer %{name}")
        raise AssertionError

    def declare(self, b: Buffer) -> None:
        if any(b.name in f for f in self.scope):
            self.t.i -= 1
            self.t.fail(f"buffer %{b.name} declared twice")
        self.scope[-1][b.name] = b

    # -- kernels --
    def kernel(self) -> Kernel:
        self.t.take("name", "kernel")
        name = self.t.take("name")
        self.t.take("op", "(")
        params, roles = [], []
        self.scope.append({})
        while not self.t.accept(")"):
            bname = self.t.take("buf")[1:]
            self.t.take("op", ":")
            dt, shape = self.type_()
            role = self.t.take("name")
            if role not in _ROLES:
                self.t.i -= 1
                self.t.fail(f"parameter role must be one of {', '.join(_ROLES)}")
            b = Buffer(bname, dt, shape, ROLE_SCOPES.get(role, Scope.GLOBAL))
            self.declare(b)
            params.append(b)
            roles.append(role)
            self.t.accept(",")
        flops = 0
        if self.t.accept("flops"):
            self.t.take("op", "=")
            flops = int(self.t.take("int"))
        body = self.block()
        self.scope.pop()
        rule, steps = "", ()
        if self.t.peek()[0] == "schedule":     # the rest of the line: ir/loops/trace.py
            rule, steps = parse_schedule(self.t.take()[len("schedule"):].strip())
        return Kernel(name, tuple(params), tuple(roles), body, tuple(steps), {}, flops, rule)

    def block(self) -> Stmt:
        self.t.take("op", "{")
        stmts = []
        while not self.t.accept("}"):
            stmts.append(self.stmt())
        return seq(*stmts)

    # -- statements --
    def stmt(self) -> Stmt:
        kind, tok, _ = self.t.peek()
        if kind == "name" and tok in ("for", "if", "alloc", "barrier", "prefetch", "async_commit",
                                      "async_wait"):
            return {"for": self.for_, "if": self.if_, "alloc": self.alloc,
                    "barrier": self.barrier, "prefetch": self.prefetch,
                    "async_commit": self.async_commit, "async_wait": self.async_wait}[tok]()
        if kind != "buf":
            self.t.fail(f"expected a statement, got {tok!r}")
        buf = self.buffer()
        index = self.indices()
        self.t.take("op", "=")
        nk, nt, _ = self.t.peek()
        if nk == "name" and nt.startswith("block_all_reduce."):
            return self.all_reduce(buf)
        if nk == "name" and nt.startswith("mma."):
            return self.mma(buf, index)
        if nk == "name" and nt.startswith("ldmatrix."):
            parts = self.t.take("name").split(".")
            if len(parts) not in (2, 3) or parts[1] not in ("x1", "x2", "x4") or \
                    (len(parts) == 3 and parts[2] != "trans"):
                self.t.i -= 1
                self.t.fail(f"unknown ldmatrix form {'.'.join(parts)!r} (ldmatrix.x1|x2|x4"
                            "[.trans])")
            self.t.take("op", "(")
            src = self.buffer()
            src_index = self.indices()
            self.t.take("op", ")")
            return WarpLdmatrix(int(parts[1][1:]), len(parts) == 3, buf, index, src, src_index)
        if nk == "name" and nt == "async_copy":
            self.t.take("name")
            self.t.take("op", "(")
            src = self.buffer()
            src_index = self.indices()
            cond = self.expr() if self.t.accept(",") else None
            self.t.take("op", ")")
            return AsyncCopy(buf, index, src, src_index, cond)
        return Store(buf, index, self.expr())

    def async_commit(self) -> Stmt:
        self.t.take("name", "async_commit")
        return AsyncCommit()

    def async_wait(self) -> Stmt:
        self.t.take("name", "async_wait")
        return AsyncWait(int(self.t.take("int")))

    def mma(self, acc: Buffer, at: tuple[Expr, ...]) -> Stmt:
        shape = self.t.take("name").split(".", 1)[1]
        if shape not in MMA_SHAPES:
            self.t.i -= 1
            self.t.fail(f"unknown mma shape {shape!r} ({', '.join(MMA_SHAPES)})")
        self.t.take("op", "(")
        refs = []
        for k in range(3):
            refs.append((self.buffer(), self.indices()))
            if k < 2:
                self.t.take("op", ",")
        self.t.take("op", ")")
        if refs[0] != (acc, at):
            self.t.fail("a warp mma accumulates into the registers it reads")
        return WarpMma(shape, acc, at, refs[1][0], refs[1][1], refs[2][0], refs[2][1])

    def for_(self) -> Stmt:
        self.t.take("name", "for")
        var = Var(self.t.take("name"))
        self.t.take("name", "in")
        if self.t.take("int") != "0":
            self.t.i -= 1
            self.t.fail("loops start at 0")
        self.t.take("op", "..")
        extent = self.expr()
        kind, lanes = LoopKind.SERIAL, 0
        if self.t.peek()[0] == "name":
            word = self.t.take("name")
            if word == "vector":
                self.t.take("op", "(")
                kind, lanes = LoopKind.VECTOR, int(self.t.take("int"))
                self.t.take("op", ")")
            elif word in _KINDS:
                kind = _KINDS[word]
            else:
                self.t.i -= 1
                self.t.fail(f"unknown loop kind {word!r}")
        return For(var, extent, self.block(), kind, lanes)

    def if_(self) -> Stmt:
        self.t.take("name", "if")
        cond = self.expr()
        then = self.block()
        other = self.block() if self.t.accept("else") else None
        return IfThen(cond, then, other)

    def alloc(self) -> Stmt:
        self.t.take("name", "alloc")
        name = self.t.take("buf")[1:]
        self.t.take("op", ":")
        dt, shape = self.type_()
        scope = self.t.take("name")
        scopes = {s.value: s for s in Scope}
        if scope not in scopes:
            self.t.i -= 1
            self.t.fail(f"unknown memory scope {scope!r} ({', '.join(scopes)})")
        buf = Buffer(name, dt, shape, scopes[scope])
        self.scope.append({})
        self.declare(buf)
        body = self.block()
        self.scope.pop()
        return Allocate(buf, body)

    def prefetch(self) -> Stmt:
        self.t.take("name", "prefetch")
        buf = self.buffer()
        return Prefetch(buf, self.indices())

    def barrier(self) -> Stmt:
        self.t.take("name", "barrier")
        return Barrier()

    def all_reduce(self, acc: Buffer) -> Stmt:
        op = self.t.take("name").split(".", 1)[1]
        self.t.take("op", "(")
        if self.buffer() is not acc:
            self.t.i -= 1
            self.t.fail("a block all-reduce reads the buffer it writes")
        self.indices()
        self.t.take("op", ")")
        self.t.take("name", "via")
        return BlockAllReduce(op, acc, self.buffer())

    # -- expressions --
    def indices(self) -> tuple[Expr, ...]:
        self.t.take("op", "[")
        out = []
        while not self.t.accept("]"):
            out.append(self.expr())
            self.t.accept(",")
        return tuple(out)

    def args(self) -> list[Expr]:
        self.t.take("op", "(")
        out = []
        while not self.t.accept(")"):
            out.append(self.expr())
            self.t.accept(",")
        return out

    def expr(self) -> Expr:
        kind, tok, _ = self.t.peek()
        if tok == "(" and kind == "op":
            self.t.take()
            a = self.expr()
            op = self.t.take("op")
            if op not in _BINOPS:
                self.t.i -= 1
                self.t.fail(f"unknown operator {op!r}")
            b = self.expr()
            self.t.take("op", ")")
            return self.call(_BINOPS[op], [a, b])
        if kind in ("int", "float"):
            return self.number()
        if kind == "buf":
            buf = self.buffer()
            return BufLoad(buf, self.indices(), buf.dtype)
        if kind == "name":
            return self.named()
        self.t.fail(f"expected an expression, got {tok!r}" if tok else
                    "expected an expression, got the end")
        raise AssertionError

    def number(self) -> Expr:
        kind, tok, _ = self.t.peek()
        self.t.take()
        dt = DType.F32 if kind == "float" else DType.I64
        if self.t.peek()[1] == ":" and self.t.peek(1)[0] == "name":
            self.t.take()
            dt = self.dtype()
        if dt.is_float:
            return Const(float(tok), dt)
        if dt == DType.BOOL:
            return Const(bool(int(tok)), dt)
        return Const(int(tok), dt)

    def named(self) -> Expr:
        name = self.t.take("name")
        nxt = self.t.peek()[1]
        if name in ("true", "false"):
            return Const(name == "true", DType.BOOL)
        if name in REDUCERS and nxt in ("[", ":"):
            return self.reduce(name)
        if nxt != "(":
            return Var(name)
        args = self.args()
        if name == "select" and len(args) == 3:
            return Select(args[0], args[1], args[2], args[1].dtype)
        if name in DType._value2member_map_ and len(args) == 1:
            return Cast(args[0], DType(name))
        return self.call(name, args)

    def reduce(self, op: str) -> Expr:
        dt = None
        if self.t.accept(":"):
            dt = self.dtype()
        self.t.take("op", "[")
        axes = []
        while not self.t.accept("]"):
            v = Var(self.t.take("name"))
            self.t.take("op", "<")
            axes.append((v, int(self.t.take("int"))))
            self.t.accept(",")
        self.t.take("op", "(")
        body = self.expr()
        self.t.take("op", ")")
        return Reduce(op, tuple(axes), body, dt or reduce_dtype(op, body.dtype))

    def call(self, fn: str, args: list[Expr]) -> Expr:
        s = SCALARS.get(fn)
        if s is None or s.arity != len(args):
            self.t.i -= 1
            self.t.fail(f"unknown function {fn!r} with {len(args)} operands")
            raise AssertionError
        return Call(fn, tuple(args), s.result_dtype(*(a.dtype for a in args)))


def parse_kernels(text: str, path: str = "<loops>") -> list[Kernel]:
    """Every kernel in `text`."""
    p = _Parser(text, path)
    out = []
    while p.t.peek()[0] != "end":
        out.append(p.kernel())
    return out


def parse_kernel(text: str, path: str = "<loops>") -> Kernel:
    ks = parse_kernels(text, path)
    if len(ks) != 1:
        raise ParseError(f"expected one kernel, found {len(ks)}", path)
    return ks[0]



def check_roundtrip(k: Kernel, where: str) -> None:
    """MINICC_VERIFY_ROUNDTRIP=1: a kernel's text must parse back and print identically."""
    from minicc.errors import InternalError
    from minicc.ir.loops.printer import print_kernel

    text = print_kernel(k)
    try:
        again = print_kernel(parse_kernel(text))
    except ParseError as e:
        raise InternalError(f"loop IR round trip failed {where}: {e} (please report)") from e
    if again != text:
        raise InternalError(f"loop IR round trip failed {where}: kernel {k.name} prints "
                            "differently after parsing (please report)")
