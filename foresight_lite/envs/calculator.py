"""A sandboxed calculator: the math world's only tool.

What: `calculate("12 * (7 - 3) / 5") -> "9.6"`. Why: the agent must do arithmetic through a tool
it can trust, and a model's output is untrusted text, so this never calls `eval`. How: the
expression is parsed with `ast`, only numbers, + - * / // % ** and parentheses are allowed, and
it is evaluated exactly with `Fraction` under limits on length, depth, number size and time.
Every problem comes back as an ``Error: ...`` string; `calculate` never raises.
"""

from __future__ import annotations

import ast
import operator
import time
from fractions import Fraction

MAX_CHARS = 200  # longer input is refused before parsing
MAX_DEPTH = 20  # nesting of the expression tree
MAX_BITS = 256  # size of any intermediate numerator or denominator (about 77 digits)
MAX_EXPONENT = 64  # ** with a larger (or non-integer) exponent is refused
MAX_SECONDS = 0.05  # wall-time budget per expression

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    """A reason the expression was refused; its text becomes the observation."""


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression; return the result, or ``Error: <reason>``. Never raises."""
    try:
        value = evaluate(expression)
    except CalculatorError as err:
        return f"Error: {err}"
    except Exception as err:  # the contract is "never raises": report anything unforeseen
        return f"Error: could not evaluate the expression ({type(err).__name__})."
    return format_number(value)


def evaluate(expression: str) -> Fraction:
    """The exact value of `expression`; raises CalculatorError with a readable reason."""
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be text, e.g. '12 * 7'.")
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    text = text.replace(",", "")  # thousands separators: "1,200" -> "1200"
    if not text:
        raise CalculatorError("empty expression; write arithmetic such as '12 * 7'.")
    if len(text) > MAX_CHARS:
        raise CalculatorError(f"expression too long ({len(text)} characters; the limit is {MAX_CHARS}).")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalculatorError("not an arithmetic expression; use numbers, + - * / // % ** and parentheses.")
    deadline = time.perf_counter() + MAX_SECONDS
    return _eval(tree.body, depth=0, deadline=deadline)


def _eval(node: ast.AST, *, depth: int, deadline: float) -> Fraction:
    if depth > MAX_DEPTH:
        raise CalculatorError(f"expression nested too deeply (limit {MAX_DEPTH} levels).")
    if time.perf_counter() > deadline:
        raise CalculatorError("expression took too long to evaluate.")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if node.value != node.value or node.value in (float("inf"), float("-inf")):
            raise CalculatorError("numbers must be finite.")
        return _check(Fraction(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth=depth + 1, deadline=deadline))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _eval(node.left, depth=depth + 1, deadline=deadline)
        right = _eval(node.right, depth=depth + 1, deadline=deadline)
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalculatorError("division by zero.")
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1 or abs(right) > MAX_EXPONENT:
                raise CalculatorError(f"exponents must be whole numbers between -{MAX_EXPONENT} and {MAX_EXPONENT}.")
            if left == 0 and right < 0:
                raise CalculatorError("division by zero.")
            # bound the result's size before computing it
            if max(left.numerator.bit_length(), left.denominator.bit_length()) * abs(int(right)) > MAX_BITS:
                raise CalculatorError("number too large.")
        return _check(Fraction(_BINARY[type(node.op)](left, right)))
    raise CalculatorError(
        f"'{_describe(node)}' is not allowed; use numbers, + - * / // % ** and parentheses."
    )


def _check(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise CalculatorError("number too large.")
    return value


def _describe(node: ast.AST) -> str:
    try:
        return ast.unparse(node)[:40]
    except Exception:
        return type(node).__name__


def format_number(value: Fraction) -> str:
    """Integers exactly; other values rounded to 6 decimal places without trailing zeros."""
    if value.denominator == 1:
        return str(value.numerator)
    rounded = round(value, 6)
    if abs(rounded) >= 10**15:  # beyond float's exact digits: scientific notation, as Python prints it
        return repr(float(rounded))
    text = f"{float(rounded):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
