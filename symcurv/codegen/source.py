"""A tiny indented-source builder for the emitters."""

from __future__ import annotations

import contextlib


class Source:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._indent = 0

    def __call__(self, line: str = "") -> None:
        self.lines.append(("    " * self._indent + line) if line else "")

    def extend(self, lines: list[str]) -> None:
        for ln in lines:
            self(ln)

    @contextlib.contextmanager
    def block(self, header: str):
        self(header)
        self._indent += 1
        try:
            yield
        finally:
            self._indent -= 1

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"
