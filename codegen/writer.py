"""CodeWriter: indented text with `block(header)` for braces (Inductor's IndentedBuffer), the one
way text targets (CUDA C) are written."""

from __future__ import annotations

import contextlib
from typing import Iterator


class CodeWriter:
    def __init__(self, indent: str = "  "):
        self.lines: list[str] = []
        self.depth = 0
        self.indent = indent

    def line(self, text: str = "") -> None:
        self.lines.append(f"{self.indent * self.depth}{text}" if text else "")

    @contextlib.contextmanager
    def block(self, header: str) -> Iterator[None]:
        self.line(f"{header} {{")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            self.line("}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
