"""Arithmetic from an expression: a small recursive-descent parser, never ``eval``.

Grammar (Python's precedence; ``^`` is a synonym of ``**``)::

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/" | "//" | "%") unary)*
    unary := ("+" | "-") unary | power
    power := atom (("**" | "^") unary)?
    atom  := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Integers stay exact; results are bounded (integer size, nesting depth, expression length) so
an expression cannot tie up the worker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Final

import msgspec

from orchestrator.tools import tool

__all__ = ["Calculation", "CalculationError", "calculate", "evaluate"]

Number = int | float

MAX_LENGTH: Final = 1_000
MAX_DEPTH: Final = 64
#: Largest integer result, in bits (about 3,000 decimal digits).
MAX_BITS: Final = 10_000

_TOKEN: Final = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_]\w*)|(?P<op>\*\*|//|[-+*/%^(),]))"
)
_CONSTANTS: Final[dict[str, Number]] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _round(x: Number, digits: Number | None = None) -> Number:
    if digits is None:
        return round(x)
    if not isinstance(digits, int):
        raise CalculationError("round(): the number of digits must be an integer")
    return round(x, digits)


def _log(x: Number, base: Number = math.e) -> float:
    return math.log(x, base)


# name → (function, minimum arguments, maximum arguments or None for any)
_FUNCTIONS: Final[dict[str, tuple[Callable[..., Number], int, int | None]]] = {
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (lambda *xs: min(xs), 1, None),
    "max": (lambda *xs: max(xs), 1, None),
    "sqrt": (math.sqrt, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
}


class CalculationError(ValueError):
    """The expression is malformed or its value cannot be computed."""


class Calculation(msgspec.Struct, frozen=True):
    """An expression and its value."""

    expression: str
    result: int | float


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].isspace():
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.lastgroup is None:
                raise CalculationError(f"unexpected character {text[pos:].lstrip()[0]!r}")
            kind = match.lastgroup
            self.tokens.append((kind, match.group(kind), match.start(kind)))
            pos = match.end()
        self.i = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        if self.i >= len(self.tokens):
            raise CalculationError("the expression ended too early")
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect(self, value: str) -> None:
        _, text, pos = self.take()
        if text != value:
            raise CalculationError(f"expected {value!r} at position {pos}, found {text!r}")

    def parse(self) -> Number:
        if not self.tokens:
            raise CalculationError("the expression is empty")
        value = self.expr()
        if self.i < len(self.tokens):
            _, text, pos = self.tokens[self.i]
            raise CalculationError(f"unexpected {text!r} at position {pos}")
        return value

    def expr(self) -> Number:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculationError(f"the expression nests deeper than {MAX_DEPTH} levels")
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            value = _apply(op, value, self.term())
        self.depth -= 1
        return value

    def term(self) -> Number:
        value = self.unary()
        while self.peek() in ("*", "/", "//", "%"):
            op = self.take()[1]
            value = _apply(op, value, self.unary())
        return value

    def unary(self) -> Number:
        if self.peek() in ("+", "-"):
            op = self.take()[1]
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise CalculationError(f"the expression nests deeper than {MAX_DEPTH} levels")
            value = self.unary()
            self.depth -= 1
            return -value if op == "-" else value
        return self.power()

    def power(self) -> Number:
        base = self.atom()
        if self.peek() in ("**", "^"):
            self.take()
            return _apply("**", base, self.unary())
        return base

    def atom(self) -> Number:
        kind, text, pos = self.take()
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if text == "(":
            value = self.expr()
            self.expect(")")
            return value
        if kind == "name":
            if self.peek() == "(":
                return self.call(text, pos)
            if text in _CONSTANTS:
                return _CONSTANTS[text]
            raise CalculationError(f"unknown name {text!r} at position {pos}")
        raise CalculationError(f"unexpected {text!r} at position {pos}")

    def call(self, name: str, pos: int) -> Number:
        if name not in _FUNCTIONS:
            known = ", ".join(sorted(_FUNCTIONS))
            raise CalculationError(f"unknown function {name!r} at position {pos}; known: {known}")
        fn, least, most = _FUNCTIONS[name]
        self.expect("(")
        args = [self.expr()]
        while self.peek() == ",":
            self.take()
            args.append(self.expr())
        self.expect(")")
        if len(args) < least or (most is not None and len(args) > most):
            raise CalculationError(f"{name}() does not take {len(args)} argument(s)")
        try:
            return _checked(fn(*args))
        except CalculationError:
            raise
        except OverflowError:
            raise CalculationError(f"{name}(): the result is too large") from None
        except (ValueError, TypeError) as exc:
            raise CalculationError(f"{name}(): {exc}") from None


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise CalculationError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("the result is too large (or not a number)")
    return value


def _apply(op: str, a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int):
        # refuse before computing: a huge integer power or product would take the CPU with it
        if op == "**" and b > 0 and abs(a) > 1 and (abs(a).bit_length() - 1) * b > MAX_BITS:
            raise CalculationError("the result is too large")
        if op == "*" and a.bit_length() + b.bit_length() > MAX_BITS + 1:
            raise CalculationError("the result is too large")
    try:
        if op == "+":
            return _checked(a + b)
        if op == "-":
            return _checked(a - b)
        if op == "*":
            return _checked(a * b)
        if op == "/":
            return _checked(a / b)
        if op == "//":
            return _checked(a // b)
        if op == "%":
            return _checked(a % b)
        result = a**b
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except OverflowError:
        raise CalculationError("the result is too large") from None
    if isinstance(result, complex):
        raise CalculationError("the result is not a real number")
    return _checked(result)


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; raises CalculationError with the reason."""
    if len(expression) > MAX_LENGTH:
        raise CalculationError(f"the expression is longer than {MAX_LENGTH} characters")
    return _Parser(expression).parse()


@tool
def calculate(
    expression: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LENGTH)],
) -> Calculation:
    """Evaluate an arithmetic expression exactly and return its value.

    Use this for any arithmetic beyond the trivial instead of computing in your head.
    Supports + - * / // (floor division) % (remainder) and ** or ^ (power), parentheses,
    the constants pi, e and tau, and the functions abs, round(x[, digits]), min, max, sqrt,
    floor, ceil, exp, log(x[, base]), log10, sin, cos and tan (radians). Integers are exact;
    write decimals with a dot and no thousands separators.

    Args:
        expression: The expression, e.g. "(1200 * 1.08) / 12" or "round(sqrt(2) * 100, 2)".
    """
    return Calculation(expression=expression, result=evaluate(expression))
