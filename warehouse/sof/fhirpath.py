"""A parser for the FHIRPath subset SQL-on-FHIR views use, producing a small immutable AST.

Parsing is separate from SQL generation so a ViewDefinition is rejected (with the JSON path of the bad
expression) before any SQL exists, and so both dialects compile the same tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from warehouse.sof.errors import ViewDefinitionError

__all__ = ["Binary", "Call", "Const", "Index", "Literal", "Member", "Node", "This", "parse_fhirpath"]


@dataclass(frozen=True)
class Literal:
    """A string, number or boolean literal; ``value`` None is the empty collection ``{}``."""

    value: str | int | float | bool | None


@dataclass(frozen=True)
class Const:
    """``%name``: a ViewDefinition constant, substituted at compile time."""

    name: str


@dataclass(frozen=True)
class This:
    """``$this``: the current focus."""


@dataclass(frozen=True)
class Member:
    """``base.name`` (``base`` None: a member of the focus)."""

    base: Node | None
    name: str


@dataclass(frozen=True)
class Index:
    base: Node
    index: Node


@dataclass(frozen=True)
class Call:
    """``base.name(args)`` (``base`` None: a function of the focus)."""

    base: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Literal | Const | This | Member | Index | Call | Binary

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<date>@[0-9T:.+\-Z]+)|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)|(?P<var>\$this|\$index|\$total|%[A-Za-z_][A-Za-z0-9_]*|%`[^`]+`)"
    r"|(?P<op><=|>=|!=|!~|[-+*/&|=~<>()\[\].,{}]))"
)
# Binding power of each binary operator (higher binds tighter), as in the FHIRPath grammar.
_BINARY = {
    "implies": 1,
    "or": 2,
    "xor": 2,
    "and": 3,
    "in": 4,
    "contains": 4,
    "=": 5,
    "!=": 5,
    "~": 5,
    "!~": 5,
    "<": 6,
    "<=": 6,
    ">": 6,
    ">=": 6,
    "|": 7,
    "+": 8,
    "-": 8,
    "&": 8,
    "*": 9,
    "/": 9,
    "div": 9,
    "mod": 9,
}
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "n": "\n", "r": "\r", "t": "\t", "f": "\f"}


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:
            raise ViewDefinitionError(f"FHIRPath syntax error at character {pos + 1}", where)
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text[1:-1])


class _Parser:
    def __init__(self, text: str, where: str) -> None:
        self.toks = _tokens(text, where)
        self.pos = 0
        self.where = where

    def fail(self, problem: str) -> ViewDefinitionError:
        return ViewDefinitionError(f"FHIRPath: {problem}", self.where)

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise self.fail(f"expected {value!r}" if value else "unexpected end of expression")
        self.pos += 1
        return tok

    def expression(self, min_power: int = 0) -> Node:
        left = self.postfix(self.term())
        while (tok := self.peek()) is not None and tok[0] in ("op", "id") and tok[1] in _BINARY:
            power = _BINARY[tok[1]]
            if power <= min_power:
                break
            self.take()
            left = Binary(tok[1], left, self.expression(power))
        return left

    def term(self) -> Node:
        kind, text = self.take()
        if kind == "str":
            return Literal(_unquote(text))
        if kind == "num":
            return Literal(float(text) if "." in text else int(text))
        if kind == "date":
            return Literal(text[1:])
        if kind == "var":
            return This() if text == "$this" else Const(text[1:].strip("`")) if text[0] == "%" else self._bad(text)
        if text == "(":
            inner = self.expression()
            self.take(")")
            return inner
        if text == "{":
            self.take("}")
            return Literal(None)
        if text == "-" and (nxt := self.peek()) is not None and nxt[0] == "num":
            value = self.term()
            assert isinstance(value, Literal) and isinstance(value.value, int | float)
            return Literal(-value.value)
        if kind == "id":
            if text in ("true", "false"):
                return Literal(text == "true")
            return self.invocation(None, text.strip("`"))
        raise self.fail(f"unexpected {text!r}")

    def _bad(self, text: str) -> Node:
        raise self.fail(f"{text} is not supported")

    def invocation(self, base: Node | None, name: str) -> Node:
        if (tok := self.peek()) is not None and tok[1] == "(":
            self.take("(")
            args: list[Node] = []
            while (tok := self.peek()) is not None and tok[1] != ")":
                args.append(self.expression())
                if (tok := self.peek()) is not None and tok[1] == ",":
                    self.take(",")
            self.take(")")
            return Call(base, name, tuple(args))
        return Member(base, name)

    def postfix(self, node: Node) -> Node:
        while (tok := self.peek()) is not None and tok[1] in (".", "["):
            self.take()
            if tok[1] == "[":
                node = Index(node, self.expression())
                self.take("]")
                continue
            kind, name = self.take()
            if kind != "id":
                raise self.fail(f"expected a name after '.', got {name!r}")
            node = self.invocation(node, name.strip("`"))
        return node


def parse_fhirpath(text: str, where: str = "$") -> Node:
    """Parse ``text``; ``where`` is the JSON path of the expression, used in every error."""
    if not isinstance(text, str) or not text.strip():
        raise ViewDefinitionError("FHIRPath must be a non-empty string", where)
    parser = _Parser(text, where)
    node = parser.expression()
    if parser.peek() is not None:
        raise parser.fail(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return node
