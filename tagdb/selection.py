"""The TAG selection language: parse, type-check, normalise, compile to SQL, evaluate.

A selection is a condition over event attributes::

    n_muon >= 2 && (met > 40 || trigger_isomu24) && run in [1, 3..7]
    !trigger_isomu24
    abs(lead_muon_eta) < 2.4 and met > 2*lead_jet_pt

Grammar (lowest to highest precedence)::

    or      :=  and ( ('||' | 'or') and )*
    and     :=  not ( ('&&' | 'and') not )*
    not     :=  ('!' | 'not') not  |  compare
    compare :=  sum [ ('<'|'<='|'>'|'>='|'=='|'!=') sum  |  ['not'] 'in' '[' item (',' item)* ']' ]
    sum     :=  product ( ('+'|'-') product )*
    product :=  unary ( ('*'|'/') unary )*
    unary   :=  '-' unary  |  primary
    primary :=  number | 'true' | 'false' | name | name '(' args ')' | '(' or ')'
    item    :=  number | number '..' number          (inclusive range)

``!`` and ``not`` bind looser than comparisons, so ``!met > 40`` means ``!(met > 40)``.
Keywords are case-insensitive. Comparisons do not chain (``1 < x < 3`` is an error).

Missing values and three-valued logic, shared by :func:`evaluate` (numpy) and
:func:`to_sql` (any database). An attribute may have no value in an event (the leading
muon's pT of an event without muons): masked or NaN in numpy, NULL in SQL. Arithmetic
and functions of a missing value give a missing value, and so do ``x / 0``, ``sqrt``
of a negative number and ``min``/``max`` with any missing argument. A comparison with
a missing value, ``x in [..]`` of one, and ``==``/``!=`` between conditions one of
which is unknown are *unknown*; the logic is SQL's (Kleene's): ``!unknown`` is unknown,
``unknown && false`` is false, ``unknown || true`` is true, and otherwise ``&&``/``||``
with an unknown operand are unknown. A selection keeps an event only where it is true:
``lead_muon_pt < 20`` and ``!(lead_muon_pt >= 20)`` both skip events without muons.
``has(x)`` and ``missing(x)`` take one attribute name and are never unknown.

The parser is a small hand-written Pratt parser: it gives precise columns in errors and
bounds its own recursion, so hostile input ends in :class:`SelectionError`, never in a
``RecursionError``. The same parser reads TAG schema expressions (see ``tagdb.schema``),
which differ only in their names and function library.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from dss.errors import InvalidInput
from tagdb.numbering import (
    INT64_MAX,
    UINT64_MAX,
    WholeNumber,
    compare_unsigned,
    flipped,
    is_unsigned,
    unsigned_value,
)

MAX_LENGTH = 4000
MAX_DEPTH = 50

INT, FLOAT, BOOL = "int", "float", "bool"
NUMERIC = (INT, FLOAT)

# name -> (min args, max args); None means any number.
SELECTION_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1),
    "sqrt": (1, 1),
    "hypot": (2, 2),
    "min": (2, None),
    "max": (2, None),
    "has": (1, 1),
    "missing": (1, 1),
}
# Functions of an attribute's presence: their argument is a name, never an expression.
PRESENCE_FUNCTIONS = frozenset({"has", "missing"})

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})
COMPARISONS = frozenset({"<", "<=", ">", ">=", "==", "!="})
ARITHMETIC = frozenset({"+", "-", "*", "/"})
# Integer literals up to this stay whole numbers (run and event numbers are unsigned
# 64-bit); larger ones become floats.
_INTEGER_MAX = UINT64_MAX


class SelectionError(InvalidInput):
    """A selection (or schema expression) is malformed; ``column`` is 1-based."""

    code = "bad_selection"

    def __init__(self, message: str, column: int):
        super().__init__(message, where=f"column {column}")
        self.column = column


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Node:
    """Base of the expression tree. ``column`` and ``type`` do not take part in equality,
    so two spellings of the same selection give equal trees."""

    column: int = field(default=1, compare=False, kw_only=True)
    # "" until check() has typed the node; then "int", "float" or "bool".
    type: str = field(default="", compare=False, kw_only=True)
    depth: int = field(default=1, compare=False, kw_only=True, repr=False)

    def children(self) -> tuple[Node, ...]:
        """The node's operands, left to right."""
        return ()


@dataclass(frozen=True)
class Number(Node):
    value: int | float


@dataclass(frozen=True)
class Boolean(Node):
    value: bool


@dataclass(frozen=True)
class Name(Node):
    """An attribute in a selection, or a branch in a schema expression."""

    name: str


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-" or "!"
    operand: Node

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Binary(Node):
    op: str  # arithmetic or comparison
    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class Logical(Node):
    """``&&`` or ``||`` over two or more operands (chains are kept flat, not nested)."""

    op: str
    operands: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True)
class Call(Node):
    function: str
    args: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(frozen=True)
class InList(Node):
    """``operand in [..]``: each item is an inclusive range ``(lo, hi)``; a value is ``(v, v)``."""

    operand: Node
    ranges: tuple[tuple[int | float, int | float], ...]

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


def _replace(node: Node, **changes: Any) -> Node:
    return dataclasses.replace(node, **changes)


def walk(tree: Node) -> Iterator[Node]:
    """Every node of ``tree``, parents before children."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children()))


def names_in(tree: Node) -> set[str]:
    """The attribute (or branch) names that ``tree`` refers to."""
    return {n.name for n in walk(tree) if isinstance(n, Name)}


# --------------------------------------------------------------------------- lexing

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.(?!\.)\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|\.\.|[<>!+\-*/(),\[\]])
    """,
    re.VERBOSE,
)
_LOOKALIKES = {"&": "&&", "|": "||", "=": "==", "^": "**"}


@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "name", "keyword", "op", "end"
    text: str
    column: int

    @property
    def value(self) -> str:
        return self.text.lower() if self.kind == "keyword" else self.text


def _tokens(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = f"; did you mean '{_LOOKALIKES[ch]}'?" if ch in _LOOKALIKES else ""
            raise SelectionError(f"unexpected character {ch!r} at column {pos + 1}{hint}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "ws":
            word = m.group()
            if kind == "name" and word.lower() in KEYWORDS:
                kind = "keyword"
            tokens.append(_Token(kind, word, pos + 1))
        pos = m.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


# --------------------------------------------------------------------------- parsing

# Binding powers of infix operators; prefix '!'/'not' parses its operand at _NOT_BP.
_INFIX_BP = {
    "||": 10,
    "or": 10,
    "&&": 20,
    "and": 20,
    **dict.fromkeys(COMPARISONS, 40),
    "in": 40,
    "not": 40,  # 'x not in [..]'
    "+": 50,
    "-": 50,
    "*": 60,
    "/": 60,
}
_NOT_BP = 30
_UNARY_MINUS_BP = 70
_CANONICAL = {"or": "||", "and": "&&", "not": "!"}


def _describe(token: _Token) -> str:
    return "the end of the selection" if token.kind == "end" else f"'{token.text}'"


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.nesting = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at(self, *values: str) -> bool:
        return self.token.kind in ("op", "keyword") and self.token.value in values

    def make(self, cls: type[Node], column: int, *args: Any) -> Node:
        """Build a node, refusing trees deeper than MAX_DEPTH so every later recursive
        pass (check, evaluate, SQL compilation) stays far from Python's recursion limit."""
        children = [a for a in args if isinstance(a, Node)]
        for a in args:
            if isinstance(a, tuple):
                children.extend(x for x in a if isinstance(x, Node))
        depth = 1 + max((c.depth for c in children), default=0)
        if depth > MAX_DEPTH:
            raise SelectionError(
                f"selection is nested too deeply at column {column} (the limit is {MAX_DEPTH} levels)",
                column,
            )
        return cls(*args, column=column, depth=depth)

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise SelectionError("empty selection", 1)
        tree = self.expression(0)
        if self.token.kind != "end":
            if self.at(")"):
                raise SelectionError(
                    f"unbalanced parenthesis at column {self.token.column}", self.token.column
                )
            raise SelectionError(
                f"unexpected {_describe(self.token)} at column {self.token.column}; "
                "expected an operator such as '&&', '||', '>' or '+'",
                self.token.column,
            )
        return tree

    def expression(self, min_bp: int, after: _Token | None = None) -> Node:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise SelectionError(
                f"selection is nested too deeply at column {self.token.column} "
                f"(the limit is {MAX_DEPTH} levels)",
                self.token.column,
            )
        try:
            left = self.prefix(after)
            chained_comparison = False
            while True:
                tok = self.token
                if tok.kind not in ("op", "keyword"):
                    if tok.kind != "end":
                        raise SelectionError(
                            f"unexpected {_describe(tok)} at column {tok.column}; "
                            "expected an operator such as '&&', '||', '>' or '+'",
                            tok.column,
                        )
                    break
                bp = _INFIX_BP.get(tok.value)
                if bp is None or bp <= min_bp:
                    break
                if bp == 40:
                    if chained_comparison:
                        raise SelectionError(
                            f"comparisons cannot be chained at column {tok.column}; "
                            "join them with '&&'",
                            tok.column,
                        )
                    chained_comparison = True
                left = self.infix(left, bp)
            return left
        finally:
            self.nesting -= 1

    def operand_error(self, after: _Token | None) -> SelectionError:
        tok = self.token
        if tok.kind == "op" and tok.text == ")":
            return SelectionError(f"unbalanced parenthesis at column {tok.column}", tok.column)
        if after is None:
            what = "a condition or a number"
            prefix = ""
        else:
            op = after.value
            logical = op in ("&&", "||", "!", "and", "or", "not")
            what = "a condition" if logical else "a number"
            prefix = f" after '{after.text}'"
        return SelectionError(
            f"expected {what}{prefix} at column {tok.column}, found {_describe(tok)}",
            tok.column,
        )

    def prefix(self, after: _Token | None) -> Node:
        tok = self.token
        if tok.kind == "number":
            self.advance()
            return self.make(Number, tok.column, _number(tok))
        if tok.kind == "name":
            self.advance()
            if self.at("("):
                return self.call(tok)
            return self.make(Name, tok.column, tok.text)
        if tok.kind == "keyword" and tok.value in ("true", "false"):
            self.advance()
            return self.make(Boolean, tok.column, tok.value == "true")
        if self.at("!", "not"):
            self.advance()
            operand = self.expression(_NOT_BP, after=tok)
            return self.make(Unary, tok.column, "!", operand)
        if self.at("-"):
            self.advance()
            operand = self.expression(_UNARY_MINUS_BP, after=tok)
            if isinstance(operand, Number):
                # Fold '-3' into a literal so that normalised text and SQL stay simple.
                return self.make(Number, tok.column, -operand.value)
            return self.make(Unary, tok.column, "-", operand)
        if self.at("("):
            self.advance()
            inner = self.expression(0)
            if not self.at(")"):
                if self.token.kind == "end":
                    raise SelectionError(
                        f"unbalanced parenthesis at column {tok.column}", tok.column
                    )
                raise SelectionError(
                    f"unexpected {_describe(self.token)} at column {self.token.column}; "
                    f"expected ')' to close the '(' at column {tok.column}",
                    self.token.column,
                )
            self.advance()
            return inner
        raise self.operand_error(after)

    def call(self, name: _Token) -> Node:
        open_paren = self.advance()
        args: list[Node] = []
        if not self.at(")"):
            while True:
                args.append(self.expression(0, after=open_paren))
                if self.at(","):
                    comma = self.advance()
                    open_paren = comma
                    continue
                break
        if not self.at(")"):
            if self.token.kind == "end":
                raise SelectionError(
                    f"unbalanced parenthesis at column {name.column + len(name.text)}",
                    name.column + len(name.text),
                )
            raise SelectionError(
                f"unexpected {_describe(self.token)} at column {self.token.column}; "
                f"expected ',' or ')' in the call of {name.text}()",
                self.token.column,
            )
        self.advance()
        return self.make(Call, name.column, name.text.lower(), tuple(args))

    def infix(self, left: Node, bp: int) -> Node:
        tok = self.advance()
        op = tok.value
        if op == "not":
            if not self.at("in"):
                raise SelectionError(
                    f"unexpected 'not' at column {tok.column}; did you mean 'not in'?", tok.column
                )
            self.advance()
            return self.make(Unary, tok.column, "!", self.in_list(left, tok))
        if op == "in":
            return self.in_list(left, tok)
        op = _CANONICAL.get(op, op)
        right = self.expression(bp, after=tok)
        if op in ("&&", "||"):
            operands: list[Node] = []
            for side in (left, right):
                # Flatten chains so 'a || b || c ...' stays shallow however long it is.
                if isinstance(side, Logical) and side.op == op:
                    operands.extend(side.operands)
                else:
                    operands.append(side)
            column = left.column if isinstance(left, Logical) and left.op == op else tok.column
            return self.make(Logical, column, op, tuple(operands))
        return self.make(Binary, tok.column, op, left, right)

    def in_list(self, operand: Node, in_token: _Token) -> Node:
        if not self.at("["):
            raise SelectionError(
                f"expected '[' after '{in_token.text}' at column {self.token.column}, "
                f"found {_describe(self.token)}",
                self.token.column,
            )
        open_bracket = self.advance()
        ranges = []
        if self.at("]"):
            raise SelectionError(
                f"empty list after 'in' at column {open_bracket.column}", open_bracket.column
            )
        while True:
            lo_col = self.token.column
            lo = self.signed_number(open_bracket if not ranges else None)
            hi = lo
            if self.at(".."):
                dots = self.advance()
                hi = self.signed_number(dots)
                if hi < lo:
                    raise SelectionError(f"empty range {lo}..{hi} at column {lo_col}", lo_col)
            ranges.append((lo, hi))
            if self.at(","):
                self.advance()
                continue
            if self.at("]"):
                self.advance()
                break
            if self.token.kind == "end":
                raise SelectionError(
                    f"unbalanced bracket at column {open_bracket.column}", open_bracket.column
                )
            raise SelectionError(
                f"unexpected {_describe(self.token)} at column {self.token.column}; "
                "expected ',' or ']' in the list",
                self.token.column,
            )
        return self.make(InList, in_token.column, operand, tuple(ranges))

    def signed_number(self, after: _Token | None) -> int | float:
        sign = 1
        if self.at("-"):
            self.advance()
            sign = -1
        tok = self.token
        if tok.kind != "number":
            where = f" after '{after.text}'" if after is not None else ""
            raise SelectionError(
                f"expected a number{where} at column {tok.column}, found {_describe(tok)}",
                tok.column,
            )
        self.advance()
        return sign * _number(tok)


def _number(tok: _Token) -> int | float:
    text = tok.text
    if re.fullmatch(r"\d+", text):
        value = int(text)
        return value if value <= _INTEGER_MAX else float(value)
    value = float(text)
    if math.isinf(value):
        raise SelectionError(f"number {text} at column {tok.column} is too large", tok.column)
    return value


def parse(text: str) -> Node:
    """Parse a selection (or schema expression) into an immutable expression tree.

    Raises :class:`SelectionError` naming the column of the first bad token.
    """
    if not isinstance(text, str):
        raise SelectionError("a selection must be text", 1)
    if len(text) > MAX_LENGTH:
        raise SelectionError(
            f"selection is too long ({len(text):,} characters; the limit is {MAX_LENGTH:,})",
            MAX_LENGTH + 1,
        )
    return _Parser(text).parse()


# --------------------------------------------------------------------------- checking


def _kind(type_: str) -> str:
    return "a condition (true/false)" if type_ == BOOL else "a number"


def _label(node: Node) -> str:
    if isinstance(node, Name):
        return f"'{node.name}'"
    if isinstance(node, Boolean):
        return f"'{'true' if node.value else 'false'}'"
    if isinstance(node, Number):
        return f"'{_format_number(node.value)}'"
    if isinstance(node, Call):
        return f"'{node.function}(…)'"
    return "the expression"


def suggest(name: str, known: Sequence[str]) -> str:
    """'; did you mean 'x'?' for the closest of ``known`` to ``name``, or ''."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean '{lowered[close[0]]}'?" if close else ""


def check_arity(
    node: Call, functions: Mapping[str, tuple[int, int | None]], what: str = "function"
) -> None:
    """Raise SelectionError unless ``node`` calls a known function with a valid arity."""
    if node.function not in functions:
        raise SelectionError(
            f"unknown {what} '{node.function}' at column {node.column}"
            f"{suggest(node.function, sorted(functions))}",
            node.column,
        )
    lo, hi = functions[node.function]
    n = len(node.args)
    if n < lo or (hi is not None and n > hi):
        if hi == lo:
            expected = f"{lo} argument{'s' if lo != 1 else ''}"
        elif hi is None:
            expected = f"at least {lo} arguments"
        else:
            expected = f"{lo} to {hi} arguments"
        raise SelectionError(
            f"{node.function}() takes {expected}, got {n} at column {node.column}", node.column
        )


class _Checker:
    def __init__(self, attributes: Mapping[str, str]):
        for name, type_ in attributes.items():
            if type_ not in (INT, FLOAT, BOOL):
                raise ValueError(f"attribute {name!r} has unknown type {type_!r}")
        self.attributes = attributes

    def need(self, node: Node, kinds: tuple[str, ...], context: str) -> None:
        if node.type not in kinds:
            raise SelectionError(
                f"{context}, but {_label(node)} at column {node.column} is {_kind(node.type)}",
                node.column,
            )

    def visit(self, node: Node) -> Node:
        if isinstance(node, Number):
            return _replace(node, type=INT if isinstance(node.value, int) else FLOAT)
        if isinstance(node, Boolean):
            return _replace(node, type=BOOL)
        if isinstance(node, Name):
            if node.name not in self.attributes:
                raise SelectionError(
                    f"unknown attribute '{node.name}' at column {node.column}"
                    f"{suggest(node.name, sorted(self.attributes))}",
                    node.column,
                )
            return _replace(node, type=self.attributes[node.name])
        if isinstance(node, Unary):
            operand = self.visit(node.operand)
            if node.op == "!":
                self.need(operand, (BOOL,), "'!' negates a condition")
                return _replace(node, operand=operand, type=BOOL)
            self.need(operand, NUMERIC, "'-' needs a number")
            return _replace(node, operand=operand, type=operand.type)
        if isinstance(node, Logical):
            operands = tuple(self.visit(o) for o in node.operands)
            for o in operands:
                self.need(o, (BOOL,), f"'{node.op}' joins conditions")
            return _replace(node, operands=operands, type=BOOL)
        if isinstance(node, Binary):
            left, right = self.visit(node.left), self.visit(node.right)
            if node.op in ARITHMETIC:
                for side in (left, right):
                    self.need(side, NUMERIC, f"'{node.op}' needs numbers")
                if node.op == "/" or FLOAT in (left.type, right.type):
                    type_ = FLOAT
                else:
                    type_ = INT
                return _replace(node, left=left, right=right, type=type_)
            if node.op in ("==", "!=") and left.type == BOOL:
                self.need(right, (BOOL,), f"'{node.op}' compares {_label(left)} with a condition")
            elif node.op in ("==", "!="):
                self.need(right, NUMERIC, f"'{node.op}' compares {_label(left)} with a number")
            else:
                for side in (left, right):
                    self.need(side, NUMERIC, f"'{node.op}' compares numbers")
            return _replace(node, left=left, right=right, type=BOOL)
        if isinstance(node, InList):
            operand = self.visit(node.operand)
            self.need(operand, NUMERIC, "'in' tests a number")
            return _replace(node, operand=operand, type=BOOL)
        if isinstance(node, Call):
            check_arity(node, SELECTION_FUNCTIONS)
            if node.function in PRESENCE_FUNCTIONS:
                (arg,) = node.args
                if not isinstance(arg, Name):
                    start = min(n.column for n in walk(arg))  # not the operator's column
                    raise SelectionError(
                        f"{node.function}() takes an attribute name, e.g. "
                        f"{node.function}(lead_muon_pt); {_label(arg)} at column "
                        f"{start} is not one",
                        start,
                    )
                return _replace(node, args=(self.visit(arg),), type=BOOL)
            args = tuple(self.visit(a) for a in node.args)
            for a in args:
                self.need(a, NUMERIC, f"{node.function}() needs numbers")
            if node.function in ("sqrt", "hypot"):
                type_ = FLOAT
            elif node.function == "abs":
                type_ = args[0].type
            else:
                type_ = FLOAT if any(a.type == FLOAT for a in args) else INT
            return _replace(node, args=args, type=type_)
        raise TypeError(f"not a selection node: {node!r}")


def check(tree: Node, attributes: Mapping[str, str]) -> Node:
    """Type-check ``tree`` against ``attributes`` (name -> "int" | "float" | "bool").

    Returns the same tree with every node's ``type`` filled in. The whole selection must
    be a condition. Raises :class:`SelectionError` naming the column of the bad token.
    """
    typed = _Checker(attributes).visit(tree)
    if typed.type != BOOL:
        raise SelectionError(
            f"the selection must be a condition (true/false), but {_label(typed)} at column "
            f"{typed.column} is a number; compare it, e.g. '> 0'",
            typed.column,
        )
    return typed


def _require_checked(tree: Node) -> None:
    if not tree.type:
        raise TypeError("the selection tree must be type-checked with check() first")


# --------------------------------------------------------------------------- normal form

_PRECEDENCE = {"||": 1, "&&": 2, "!": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7}


def _format_number(value: int | float) -> str:
    # 40 and 40.0 select the same events, so they print the same.
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _canonical_ranges(
    ranges: Sequence[tuple[int | float, int | float]],
) -> list[tuple[int | float, int | float]]:
    merged: list[tuple[int | float, int | float]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


_PRESENCE_RE = re.compile(r"(has|missing)\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _normal(node: Node) -> tuple[str, int]:
    """Canonical text of ``node`` and the precedence of its outermost operator."""
    if isinstance(node, Number):
        text = _format_number(node.value)
        return text, (_PRECEDENCE["neg"] if text.startswith("-") else 9)
    if isinstance(node, Boolean):
        return ("true" if node.value else "false"), 9
    if isinstance(node, Name):
        return node.name, 9
    if isinstance(node, Call):
        return f"{node.function}({', '.join(_normal(a)[0] for a in node.args)})", 9
    if isinstance(node, Unary):
        prec = _PRECEDENCE["!" if node.op == "!" else "neg"]
        inner, inner_prec = _normal(node.operand)
        presence = _PRESENCE_RE.fullmatch(inner) if node.op == "!" else None
        if presence:
            # has() and missing() are never unknown, so each is the other's negation.
            other = "missing" if presence[1] == "has" else "has"
            return f"{other}({presence[2]})", 9
        # '!' binds looser than comparisons, so '!x > 3' already means '!(x > 3)'.
        if inner_prec < prec or (node.op == "-" and inner_prec == prec):
            inner = f"({inner})"
        return f"{node.op}{inner}", prec
    if isinstance(node, Logical):
        prec = _PRECEDENCE[node.op]
        # && and || commute: order and repetition do not change which events pass.
        parts = dict(_normal(o) for o in node.operands)
        if len(parts) == 1:
            return next(iter(parts.items()))
        texts = (f"({text})" if p <= prec else text for text, p in parts.items())
        return f" {node.op} ".join(sorted(texts)), prec
    if isinstance(node, InList):
        prec = _PRECEDENCE["cmp"]
        inner, p = _normal(node.operand)
        if p <= prec:
            inner = f"({inner})"
        items = [
            _format_number(lo) if lo == hi else f"{_format_number(lo)}..{_format_number(hi)}"
            for lo, hi in _canonical_ranges(node.ranges)
        ]
        return f"{inner} in [{', '.join(items)}]", prec
    if isinstance(node, Binary):
        prec = _PRECEDENCE["cmp" if node.op in COMPARISONS else node.op]
        left, lp = _normal(node.left)
        right, rp = _normal(node.right)
        if lp < prec or (prec == _PRECEDENCE["cmp"] and lp == prec):
            left = f"({left})"
        # Right operands of the same precedence need parentheses: a - (b - c).
        if rp <= prec:
            right = f"({right})"
        return f"{left} {node.op} {right}", prec
    raise TypeError(f"not a selection node: {node!r}")


def normalise(tree: Node) -> str:
    """Canonical text of a selection: the same for any spelling of the same tree.

    Whitespace, keyword spelling (``and``/``&&``), redundant parentheses, the order of
    ``&&``/``||`` operands and of ``in`` list items, ``40`` vs ``40.0``, and ``!has(x)``
    vs ``missing(x)`` (and ``!missing(x)`` vs ``has(x)``) do not matter. Parsing the
    result gives back an equivalent tree.
    """
    return _normal(tree)[0]


def tree_to_json(tree: Node) -> dict[str, Any]:
    """A JSON-serialisable description of ``tree`` for provenance records."""
    if isinstance(tree, Number):
        return {"number": tree.value}
    if isinstance(tree, Boolean):
        return {"boolean": tree.value}
    if isinstance(tree, Name):
        return {"attribute": tree.name}
    if isinstance(tree, Unary):
        return {"op": tree.op, "args": [tree_to_json(tree.operand)]}
    if isinstance(tree, Binary):
        return {"op": tree.op, "args": [tree_to_json(tree.left), tree_to_json(tree.right)]}
    if isinstance(tree, Logical):
        return {"op": tree.op, "args": [tree_to_json(o) for o in tree.operands]}
    if isinstance(tree, Call):
        return {"call": tree.function, "args": [tree_to_json(a) for a in tree.args]}
    if isinstance(tree, InList):
        return {
            "op": "in",
            "args": [tree_to_json(tree.operand)],
            "ranges": [[lo, hi] for lo, hi in tree.ranges],
        }
    raise TypeError(f"not a selection node: {tree!r}")


# --------------------------------------------------------------------------- SQL


class to_double(FunctionElement):
    """CAST(x AS <double>) spelled for each backend (MySQL/MariaDB need 'DOUBLE')."""

    type = sa.Double()
    inherit_cache = True
    name = "to_double"


@compiles(to_double)
def _to_double_default(element: to_double, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS DOUBLE PRECISION)"


@compiles(to_double, "mysql")
def _to_double_mysql(element: to_double, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS DOUBLE)"


@compiles(to_double, "sqlite")
def _to_double_sqlite(element: to_double, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS REAL)"


class least(FunctionElement):
    """LEAST(a, b, ...); SQLite spells it min(a, b, ...)."""

    inherit_cache = True
    name = "least"

    @property
    def type(self) -> Any:  # the type of the first argument
        return next(iter(self.clauses)).type


class greatest(least):
    """GREATEST(a, b, ...); SQLite spells it max(a, b, ...)."""

    inherit_cache = True
    name = "greatest"


@compiles(least)
@compiles(greatest)
def _least_default(element: least, compiler: Any, **kw: Any) -> str:
    return f"{element.name.upper()}({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
@compiles(greatest, "sqlite")
def _least_sqlite(element: least, compiler: Any, **kw: Any) -> str:
    name = "min" if element.name == "least" else "max"
    return f"{name}({compiler.process(element.clauses, **kw)})"


def _literal(value: int | float) -> sa.ColumnElement:
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        return sa.literal(value, WholeNumber())  # beyond BIGINT: up to 2^64 - 1
    return sa.literal(value, sa.BigInteger() if isinstance(value, int) else sa.Double())


def _whole_number(node: Node) -> int | None:
    """The value of a whole-number literal (``5``, ``-5``); None for anything else."""
    if isinstance(node, Unary) and node.op == "-":
        inner = _whole_number(node.operand)
        return None if inner is None else -inner
    if isinstance(node, Number) and isinstance(node.value, int):
        return node.value
    return None


class _SQLCompiler:
    """Turns a checked tree into SQLAlchemy constructs.

    SQL's own three-valued logic is the language's: a NULL (missing) operand makes a
    comparison "unknown", NOT, AND and OR treat unknown as Kleene's logic does, and a
    WHERE clause keeps only rows where the condition is true. Most of the language
    therefore compiles to the plain SQL operator, which keeps indexes usable. Two
    functions need help so that every backend agrees with numpy:

    - ``sqrt`` is computed as ``sqrt(abs(x))`` (PostgreSQL and DuckDB raise on a
      negative argument, SQLite and MySQL give NULL);
    - ``LEAST``/``GREATEST`` skip NULL arguments on PostgreSQL and DuckDB (not on MySQL,
      SQLite or Oracle).

    A comparison (or ``in`` list) over either is made unknown where a ``sqrt`` argument
    is negative or a ``min``/``max`` argument is NULL: ``CASE WHEN <guards> THEN <cmp>
    END``, whose missing ELSE is NULL. Guards repeat an argument once per comparison,
    never nested in one another, so the SQL grows at most quadratically with the
    selection however its calls are nested.
    """

    def __init__(self, columns: Mapping[str, sa.ColumnElement]):
        self.columns = columns

    def column(self, node: Name) -> sa.ColumnElement:
        try:
            return self.columns[node.name]
        except KeyError:
            raise SelectionError(
                f"unknown attribute '{node.name}' at column {node.column}"
                f"{suggest(node.name, sorted(self.columns))}",
                node.column,
            ) from None

    def guards(self, node: Node) -> list[sa.ColumnElement]:
        """Conditions that must hold for the functions inside the comparison ``node`` to
        have the value numpy gives them (see the class docstring)."""
        result: list[sa.ColumnElement] = []
        seen: set[tuple[str, Node]] = set()
        for n in walk(node):
            if not isinstance(n, Call) or n.function not in ("sqrt", "min", "max"):
                continue
            for arg in n.args:
                key = ("sqrt" if n.function == "sqrt" else "present", arg)
                if key in seen:
                    continue
                seen.add(key)
                if n.function == "sqrt":
                    result.append(self.number(arg) >= _literal(0.0))
                elif not isinstance(arg, Number):  # a literal is never missing
                    result.append(self.visit(arg).is_not(None))
        return result

    def unsigned_comparison(self, node: Binary) -> sa.ColumnElement | None:
        """A run/lumi/event number compared with a whole number (either way round),
        compared exactly on the column itself (see tagdb.numbering); None otherwise."""
        left, right, op = node.left, node.right, node.op
        if not isinstance(left, Name):
            left, right, op = right, left, flipped(op)
        value = _whole_number(right)
        if not isinstance(left, Name) or value is None:
            return None
        col = self.column(left)
        return compare_unsigned(col, op, value) if is_unsigned(col) else None

    def unsigned_in(self, node: InList) -> sa.ColumnElement | None:
        """``number in [a, b..c]`` on a run/lumi/event number with whole-number items."""
        if not isinstance(node.operand, Name):
            return None
        col = self.column(node.operand)
        ranges = _canonical_ranges(node.ranges)
        if not is_unsigned(col) or not all(isinstance(v, int) for r in ranges for v in r):
            return None
        parts = [
            compare_unsigned(col, "==", lo)
            if lo == hi
            else sa.and_(compare_unsigned(col, ">=", lo), compare_unsigned(col, "<=", hi))
            for lo, hi in ranges
        ]
        return sa.or_(*parts) if len(parts) > 1 else parts[0]

    def unknown_unless_guarded(self, node: Node, expr: sa.ColumnElement) -> sa.ColumnElement:
        guards = self.guards(node)
        if not guards:
            return expr
        return sa.case((sa.and_(*guards), expr))

    def number(self, node: Node) -> sa.ColumnElement:
        expr = self.visit(node)
        return to_double(expr) if node.type == INT else expr

    def bool_equality(self, op: str, left: Node, right: Node) -> sa.ColumnElement:
        # A literal side turns '==' into the other side or its negation; otherwise the
        # backends compare two conditions directly, and unknown on either side gives
        # unknown. (SQLAlchemy would compile 'x == true' as 'x IS true', which is false,
        # not unknown, for NULL.)
        negate = op == "!="
        if isinstance(right, Boolean):
            left, right = right, left
        if isinstance(left, Boolean):
            expr = self.visit(right)
            return expr if left.value != negate else sa.not_(expr)
        lhs, rhs = self.visit(left), self.visit(right)
        return (lhs != rhs) if negate else (lhs == rhs)

    def visit(self, node: Node) -> sa.ColumnElement:
        if isinstance(node, Number):
            return _literal(node.value)
        if isinstance(node, Boolean):
            return sa.true() if node.value else sa.false()
        if isinstance(node, Name):
            col = self.column(node)
            return unsigned_value(col) if is_unsigned(col) else col
        if isinstance(node, Unary):
            if node.op == "!":
                return sa.not_(self.visit(node.operand))
            return -self.visit(node.operand)
        if isinstance(node, Logical):
            parts = [self.visit(o) for o in node.operands]
            return sa.and_(*parts) if node.op == "&&" else sa.or_(*parts)
        if isinstance(node, Binary):
            if node.op == "/":
                # Float division as in numpy; x/0 is NULL (missing), not an error.
                divisor = sa.func.nullif(self.number(node.right), _literal(0.0), type_=sa.Double())
                return self.number(node.left) / divisor
            if node.op in ("==", "!=") and node.left.type == BOOL:
                return self.bool_equality(node.op, node.left, node.right)
            if node.op in COMPARISONS and (exact := self.unsigned_comparison(node)) is not None:
                return exact
            left, right = self.visit(node.left), self.visit(node.right)
            expr = {
                "+": operator.add,
                "-": operator.sub,
                "*": operator.mul,
                "<": operator.lt,
                "<=": operator.le,
                ">": operator.gt,
                ">=": operator.ge,
                "==": operator.eq,
                "!=": operator.ne,
            }[node.op](left, right)
            if node.op in COMPARISONS:
                return self.unknown_unless_guarded(node, expr)
            return expr
        if isinstance(node, InList):
            if (exact := self.unsigned_in(node)) is not None:
                return exact
            operand = self.visit(node.operand)
            ranges = _canonical_ranges(node.ranges)
            singles = [_literal(lo) for lo, hi in ranges if lo == hi]
            parts = [operand.between(_literal(lo), _literal(hi)) for lo, hi in ranges if lo != hi]
            if len(singles) == 1:
                parts.insert(0, operand == singles[0])
            elif singles:
                parts.insert(0, operand.in_(singles))
            expr = sa.or_(*parts) if len(parts) > 1 else parts[0]
            return self.unknown_unless_guarded(node, expr)
        if isinstance(node, Call):
            if node.function in PRESENCE_FUNCTIONS:
                col = self.column(node.args[0])  # type: ignore[arg-type]
                return col.is_not(None) if node.function == "has" else col.is_(None)
            if node.function == "abs":
                return sa.func.abs(self.visit(node.args[0]))
            if node.function == "sqrt":
                # abs() keeps the database from raising on a negative argument; the
                # guard 'x >= 0' of the enclosing comparison makes such rows unknown.
                return sa.func.sqrt(sa.func.abs(self.number(node.args[0])))
            if node.function == "hypot":
                x, y = (self.number(a) for a in node.args)
                return sa.func.sqrt(x * x + y * y)
            args = [self.visit(a) for a in node.args]
            return (least if node.function == "min" else greatest)(*args)
        raise TypeError(f"not a selection node: {node!r}")


def to_sql(tree: Node, columns: Mapping[str, sa.ColumnElement]) -> sa.ColumnElement:
    """Compile a checked selection into a SQLAlchemy boolean expression over ``columns``.

    Built from SQLAlchemy constructs only: literals become bound parameters and no part
    of the selection's text reaches the SQL. The condition is true, false or NULL
    (unknown) in exactly the rows where numpy's :func:`truth` is true, false or masked,
    so a WHERE clause keeps the rows :func:`evaluate` keeps.
    """
    _require_checked(tree)
    return _SQLCompiler(columns).visit(tree)


# --------------------------------------------------------------------------- numpy


class ArrayEvaluator:
    """Evaluates a tree column-wise over whole arrays, one numpy call per node.

    Values are numpy masked arrays: a masked entry is a missing number or an unknown
    condition. numpy's ufuncs carry the masks through arithmetic and comparisons, and
    ``np.ma`` masks ``x / 0`` and the square root of a negative number; ``&&`` and
    ``||`` follow Kleene's logic (:meth:`logical_and`, :meth:`logical_or`), written
    with :meth:`fill` and :meth:`known_where` so that tagdb.schema can run the same
    logic over awkward arrays, whose missing values are None.

    ``functions`` maps a function name to a callable over arrays; ``resolve`` maps a name
    to its array.
    """

    def __init__(self, resolve: Callable[[Name], Any], functions: Mapping[str, Callable[..., Any]]):
        self.resolve = resolve
        self.functions = functions

    def visit(self, node: Node) -> Any:
        if isinstance(node, Number | Boolean):
            return node.value
        if isinstance(node, Name):
            return self.resolve(node)
        if isinstance(node, Unary):
            value = self.visit(node.operand)
            # The negation of a missing number or of an unknown condition stays missing.
            if node.op == "-":
                return -_exact_operands([value])[0]
            return np.logical_not(value)
        if isinstance(node, Logical):
            combine = self.logical_and if node.op == "&&" else self.logical_or
            result = self.visit(node.operands[0])
            for operand in node.operands[1:]:
                result = combine(result, self.visit(operand))
            return result
        if isinstance(node, Binary):
            left, right = self.visit(node.left), self.visit(node.right)
            if node.op == "/":
                return self.divide(left, right)
            if node.op in ARITHMETIC:
                left, right = _exact_operands([left, right])
            return {
                "+": np.add,
                "-": np.subtract,
                "*": np.multiply,
                "<": np.less,
                "<=": np.less_equal,
                ">": np.greater,
                ">=": np.greater_equal,
                "==": np.equal,
                "!=": np.not_equal,
            }[node.op](left, right)
        if isinstance(node, InList):
            value = self.visit(node.operand)
            result = None
            for lo, hi in _canonical_ranges(node.ranges):
                hit = (value == lo) if lo == hi else ((value >= lo) & (value <= hi))
                result = hit if result is None else self.logical_or(result, hit)
            return result
        if isinstance(node, Call):
            args = _exact_operands([self.visit(a) for a in node.args])
            return self.functions[node.function](*args)
        raise TypeError(f"not a selection node: {node!r}")

    def fill(self, x: Any, value: bool) -> Any:
        """The condition ``x`` as plain booleans, with ``value`` where it is unknown."""
        # np.ma.masked (a condition over constants only, such as 'sqrt(-1) > 0') is a float.
        return np.asarray(np.ma.filled(x, value), dtype=bool)

    def known_where(self, values: Any, known: Any) -> Any:
        """``values`` where ``known``, unknown elsewhere."""
        return np.ma.array(values, mask=np.logical_not(known))

    def logical_and(self, a: Any, b: Any) -> Any:
        """Kleene's AND: false if either side is false, even when the other is unknown."""
        true = self.fill(a, False) & self.fill(b, False)
        false = ~self.fill(a, True) | ~self.fill(b, True)
        return self.known_where(true, true | false)

    def logical_or(self, a: Any, b: Any) -> Any:
        """Kleene's OR: true if either side is true, even when the other is unknown."""
        true = self.fill(a, False) | self.fill(b, False)
        false = ~self.fill(a, True) & ~self.fill(b, True)
        return self.known_where(true, true | false)

    def divide(self, left: Any, right: Any) -> Any:
        """Floating-point ``left / right``; dividing by zero gives a missing value."""
        left = np.ma.asarray(left, dtype=np.float64)
        right = np.ma.asarray(right, dtype=np.float64)
        return np.ma.divide(left, right)  # masks x/0, as NULLIF(x, 0) gives NULL in SQL


def _exact_operands(values: list[Any]) -> list[Any]:
    """Operands of arithmetic, made safe from wrap-around and overflow: unsigned 64-bit
    numbers (run and event numbers) become int64 where every value fits; where a value or
    a literal does not fit int64, integers are computed exactly as Python integers, as the
    database servers compute them (in DECIMAL). Comparisons use the values as they are."""

    def beyond_int64(v: Any) -> bool:
        if isinstance(v, np.ndarray):
            return v.dtype == object or (v.dtype.kind == "u" and v.size and v.max() > INT64_MAX)
        return (
            isinstance(v, int) and not isinstance(v, bool) and not -INT64_MAX - 1 <= v <= INT64_MAX
        )

    if any(beyond_int64(v) for v in values):
        return [
            v.astype(object) if isinstance(v, np.ndarray) and v.dtype.kind in "iu" else v
            for v in values
        ]
    return [
        v.astype(np.int64) if isinstance(v, np.ndarray) and v.dtype.kind == "u" else v
        for v in values
    ]


def _hypot(x: Any, y: Any) -> Any:
    return np.hypot(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def _sqrt(x: Any) -> Any:
    return np.ma.sqrt(np.ma.asarray(x, dtype=np.float64))  # masked where x < 0


def _reduce(ufunc: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def apply(*args: Any) -> Any:
        result = np.ma.asarray(args[0])
        for a in args[1:]:
            result = ufunc(result, np.ma.asarray(a))  # masked if either argument is
        return result

    return apply


def _hypot(x: Any, y: Any) -> Any:
    # Spelled as the databases compute it (np.hypot rounds differently in the last bit),
    # so that a scan of the event files keeps exactly the events the TAG DB keeps.
    x = np.ma.asarray(x, dtype=np.float64)
    y = np.ma.asarray(y, dtype=np.float64)
    return np.ma.sqrt(x * x + y * y)


def _has(x: Any) -> np.ndarray:
    return ~np.ma.getmaskarray(x)


def _missing(x: Any) -> np.ndarray:
    return np.ma.getmaskarray(x).copy()


_NUMPY_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": np.abs,
    "sqrt": _sqrt,
    "hypot": _hypot,
    "min": _reduce(np.ma.minimum),
    "max": _reduce(np.ma.maximum),
    "has": _has,
    "missing": _missing,
}


def type_of_dtype(dtype: np.dtype) -> str:
    """The selection type ("int", "float", "bool") of a numpy dtype."""
    if dtype.kind == "b":
        return BOOL
    if dtype.kind in "iu":
        return INT
    if dtype.kind == "f":
        return FLOAT
    raise TypeError(f"no selection type for dtype {dtype}")


def as_masked(values: Any) -> np.ma.MaskedArray:
    """An attribute's values as a masked array whose mask marks the missing ones: the
    entries masked already, and NaN or infinite floats."""
    data = np.ma.getdata(values)
    mask = np.ma.getmaskarray(values)
    if data.dtype.kind == "f":
        mask = mask | ~np.isfinite(data)
    return np.ma.array(data, mask=mask)


def truth(tree: Node, arrays: Mapping[str, Any]) -> np.ma.MaskedArray:
    """The three-valued answer of a selection over flat arrays (one entry per event),
    without a database: a masked bool array, masked where the selection is unknown.

    ``arrays`` may be plain numpy arrays, where NaN marks a missing float, or masked
    arrays (as :func:`tagdb.schema.compute_tags` returns), whose mask marks missing
    values of any type. True, false and unknown are where :func:`to_sql` gives TRUE,
    FALSE and NULL in the database for the same values.
    """
    usable = {}
    for name, values in arrays.items():
        values = np.ma.asanyarray(values)
        if values.ndim == 1 and values.dtype.kind in "biuf":
            usable[name] = as_masked(values)
    typed = check(tree, {k: type_of_dtype(v.dtype) for k, v in usable.items()})
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result = ArrayEvaluator(lambda n: usable[n.name], _NUMPY_FUNCTIONS).visit(typed)
    lengths = {len(v) for v in usable.values()}
    if len(lengths) > 1:
        raise ValueError(f"arrays have different lengths: {sorted(lengths)}")
    n = lengths.pop() if lengths else 1
    values = np.broadcast_to(np.ma.getdata(result).astype(bool), (n,))
    unknown = np.broadcast_to(np.ma.getmaskarray(result), (n,))
    return np.ma.array(values, mask=unknown, copy=True)


def evaluate(tree: Node, arrays: Mapping[str, Any]) -> np.ndarray:
    """Which events a selection keeps, over flat arrays and without a database: a numpy
    bool array, true where the selection is true (not where it is false or unknown).

    The same events that a WHERE clause with :func:`to_sql` selects in the database;
    see :func:`truth` for what ``arrays`` may hold.
    """
    return np.ma.filled(truth(tree, arrays), False)
